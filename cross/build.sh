#!/usr/bin/env bash
# Cross-compiles ferrocam-device and ferrocam-gateway for a Raspberry Pi from a Debian x86-64
# host, against the sysroot from cross/sysroot.sh (bookworm: glibc 2.36, so one binary runs on
# Raspberry Pi OS bookworm and trixie), then packages both with cargo-deb.
#
#   cross/build.sh aarch64 [--no-deb]   64-bit Raspberry Pi OS (arm64)
#   cross/build.sh armv7   [--no-deb]   32-bit Raspberry Pi OS (armhf) on a Pi 2 or later
#
#   → target/<triple>/release/ferrocam-{device,gateway}
#   → target/debian/ferrocam-{device,gateway}_<version>-1_<arm64|armhf>.deb
set -euo pipefail
arch=${1:-aarch64}
deb=1
[[ ${2:-} == --no-deb ]] && deb=0
root=$(cd "$(dirname "$0")/.." && pwd)
case "$arch" in
  aarch64) triple=aarch64-unknown-linux-gnu; gnu=aarch64-linux-gnu; debarch=arm64 ;;
  armv7) triple=armv7-unknown-linux-gnueabihf; gnu=arm-linux-gnueabihf; debarch=armhf ;;
  *) echo "unknown target $arch (aarch64 or armv7)" >&2; exit 2 ;;
esac
sysroot=$("$root/cross/sysroot.sh" "$debarch" | tail -n 1)
libdir="$sysroot/usr/lib/$gnu"

rustup target list --installed | grep -qx "$triple" || rustup target add "$triple"
command -v "$gnu-gcc" >/dev/null || {
  echo "install the cross compiler: apt-get install gcc-$gnu (scripts/setup-system.sh pi)" >&2; exit 1; }
if [[ $deb == 1 ]] && ! cargo deb --version >/dev/null 2>&1; then
  echo "install cargo-deb (scripts/setup-system.sh pi does), or pass --no-deb" >&2; exit 1
fi

upper=$(echo "$triple" | tr 'a-z-' 'A-Z_')
export "CARGO_TARGET_${upper}_LINKER=$gnu-gcc"
# Link against the sysroot; shared libraries' own dependencies are resolved on the Pi.
export "CARGO_TARGET_${upper}_RUSTFLAGS=-C link-arg=--sysroot=$sysroot -C link-arg=-Wl,-rpath-link,$libdir -C link-arg=-Wl,--allow-shlib-undefined"
export "CC_${triple//-/_}=$gnu-gcc"
# C code (ring) compiles against the sysroot's headers too, so the host needs no libc6-dev-*-cross.
export "CFLAGS_${triple//-/_}=--sysroot=$sysroot"
export PKG_CONFIG_ALLOW_CROSS=1
export PKG_CONFIG_SYSROOT_DIR="$sysroot"
export PKG_CONFIG_LIBDIR="$libdir/pkgconfig:$sysroot/usr/share/pkgconfig"
# bindgen (v4l's V4L2 headers) parses with the target's headers.
export BINDGEN_EXTRA_CLANG_ARGS="--target=$gnu --sysroot=$sysroot -I$sysroot/usr/include/$gnu"

cd "$root"
cargo build --release --locked --target "$triple" \
  -p ferrocam-device -p ferrocam-gateway
for bin in ferrocam-device ferrocam-gateway; do
  file "target/$triple/release/$bin"
done
if [[ $deb == 1 ]]; then
  # The binaries are built above (with the sysroot settings); cargo-deb only packages them.
  # --no-strip: the release profile already strips debug info, and the host's strip cannot
  # handle ARM binaries.
  for pkg in ferrocam-device ferrocam-gateway; do
    cargo deb --no-build --no-strip --locked --target "$triple" -p "$pkg"
  done
fi
