#!/usr/bin/env bash
# Cross-compiles ferrocam-device and ferrocam-gateway for a Raspberry Pi from a Debian x86-64
# host, against the sysroot from cross/sysroot.sh (bookworm: glibc 2.36, so one binary runs on
# Raspberry Pi OS bookworm and trixie).
#
#   cross/build.sh aarch64      → target/aarch64-unknown-linux-gnu/release/ferrocam-{device,gateway}
set -euo pipefail
arch=${1:-aarch64}
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
  echo "install the cross compiler: apt-get install gcc-$gnu" >&2; exit 1; }

upper=$(echo "$triple" | tr 'a-z-' 'A-Z_')
export "CARGO_TARGET_${upper}_LINKER=$gnu-gcc"
# Link against the sysroot; shared libraries' own dependencies are resolved on the Pi.
export "CARGO_TARGET_${upper}_RUSTFLAGS=-C link-arg=--sysroot=$sysroot -C link-arg=-Wl,-rpath-link,$libdir -C link-arg=-Wl,--allow-shlib-undefined"
export "CC_${triple//-/_}=$gnu-gcc"
export PKG_CONFIG_ALLOW_CROSS=1
export PKG_CONFIG_SYSROOT_DIR="$sysroot"
export PKG_CONFIG_LIBDIR="$libdir/pkgconfig:$sysroot/usr/share/pkgconfig"
# bindgen (v4l's V4L2 headers) parses with the target's headers.
export BINDGEN_EXTRA_CLANG_ARGS="--target=$gnu --sysroot=$sysroot -I$sysroot/usr/include/$gnu"

cd "$root"
cargo build --release --locked --target "$triple" -p ferrocam-device -p ferrocam-gateway
for bin in ferrocam-device ferrocam-gateway; do
  file "target/$triple/release/$bin"
done
