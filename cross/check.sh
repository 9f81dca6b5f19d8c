#!/usr/bin/env bash
# Proves a cross build from cross/build.sh: the binaries are ARM executables for glibc ≤ 2.36
# (Raspberry Pi OS bookworm), they run under qemu-user against the sysroot's libraries
# (`--version`, `--help`, the device's `--check-config` with good and bad settings), and the
# .deb packages are for the right architecture and carry those binaries.
#
#   cross/check.sh aarch64      (after cross/build.sh aarch64; `make pi-check` runs both)
#   cross/check.sh armv7
set -euo pipefail
arch=${1:-aarch64}
root=$(cd "$(dirname "$0")/.." && pwd)
case "$arch" in
  aarch64) triple=aarch64-unknown-linux-gnu; debarch=arm64; qemu="qemu-aarch64-static"; machine="ARM aarch64" ;;
  armv7) triple=armv7-unknown-linux-gnueabihf; debarch=armhf; qemu="qemu-arm-static"; machine="ARM, EABI5" ;;
  *) echo "unknown target $arch (aarch64 or armv7)" >&2; exit 2 ;;
esac
sysroot="$root/target/sysroot-$debarch"
bindir="$root/target/$triple/release"
max_glibc=2.36

fail() { echo "pi-check FAILED: $*" >&2; exit 1; }
pass() { echo "pi-check ok: $*"; }
command -v "$qemu" >/dev/null || fail "$qemu is missing (apt-get install qemu-user-static)"
[[ -f "$sysroot/.complete" ]] || fail "no sysroot at $sysroot (run cross/build.sh $arch)"

# GStreamer forks a helper to scan plugins; under qemu-user that helper would be a host binary.
export GST_REGISTRY_FORK=no
run() { "$qemu" -L "$sysroot" "$@"; }

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

version=$(cd "$root" && cargo pkgid -p ferrocam-device | sed 's/.*[#@]//')
for bin in ferrocam-device ferrocam-gateway; do
  exe="$bindir/$bin"
  [[ -x "$exe" ]] || fail "$exe is missing (run cross/build.sh $arch)"
  desc=$(file -b "$exe")
  [[ $desc == *"$machine"* && $desc == *"dynamically linked"* ]] || fail "$bin: file says: $desc"
  pass "$bin: $desc"

  # The newest glibc symbol version the binary needs must exist in bookworm's glibc.
  newest=$(readelf --dyn-syms -W "$exe" | grep -o 'GLIBC_[0-9.]*' | sed 's/GLIBC_//' | sort -uV | tail -n 1)
  [[ $(printf '%s\n%s\n' "$newest" "$max_glibc" | sort -V | tail -n 1) == "$max_glibc" ]] \
    || fail "$bin needs glibc $newest (> $max_glibc)"
  pass "$bin needs glibc ≥ $newest (bookworm has $max_glibc)"

  out=$(run "$exe" --version)
  [[ $out == "$bin $version" ]] || fail "$bin --version printed: $out"
  pass "$bin --version under $qemu: $out"
  run "$exe" --help > "$work/help"
  grep -q -- '--broker' "$work/help" || fail "$bin --help does not list --broker"
  pass "$bin --help under $qemu"
done

# The device's configuration check: good settings pass, broken ones are refused with a reason.
device="$bindir/ferrocam-device"
head -c 32 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=\n' > "$work/grant.pub"
# The device's own signing key, as enrollment writes it (a 32-byte seed, base64url).
signing_key=$(head -c 32 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=\n')
out=$(env -i GST_REGISTRY_FORK=no FERROCAM_DEVICE_ID=pi-check \
  FERROCAM_BROKER="mqtts://pi-check:secret@broker.example.org:8883,mqtt://10.0.0.2" \
  FERROCAM_SIGNING_KEY="$signing_key" \
  FERROCAM_GRANT_KEY="$work/grant.pub" "$qemu" -L "$sysroot" "$device" --check-config 2>&1) \
  || fail "device --check-config refused good settings: $out"
[[ $out == *"configuration OK"*"pi-check"* ]] || fail "device --check-config printed: $out"
pass "device --check-config under $qemu: $out"
if out=$(env -i GST_REGISTRY_FORK=no FERROCAM_BROKER=mqtt://broker.example.org \
  FERROCAM_GRANT_KEY="$work/grant.pub" "$qemu" -L "$sysroot" "$device" --check-config 2>&1); then
  fail "device --check-config accepted a configuration without a signing key: $out"
fi
[[ $out == *"device add"* ]] || fail "device --check-config without a signing key said: $out"
pass "device --check-config refuses a missing signing key"
if out=$(env -i GST_REGISTRY_FORK=no FERROCAM_BROKER=mqtt://broker.example.org \
  "$qemu" -L "$sysroot" "$device" --check-config 2>&1); then
  fail "device --check-config accepted a configuration without a grant key: $out"
fi
[[ $out == *grant* ]] || fail "device --check-config without a grant key said: $out"
pass "device --check-config refuses a missing grant key"
if out=$(env -i GST_REGISTRY_FORK=no FERROCAM_BROKER=http://broker.example.org \
  FERROCAM_GRANT_KEY="$work/grant.pub" "$qemu" -L "$sysroot" "$device" --check-config 2>&1); then
  fail "device --check-config accepted an http:// broker: $out"
fi
[[ $out == *mqtt://* ]] || fail "device --check-config with an http:// broker said: $out"
pass "device --check-config refuses a bad broker URL"

# The packages: right architecture, the ARM binary inside, the unit and the conffile.
for pkg in ferrocam-device ferrocam-gateway; do
  deb="$root/target/debian/${pkg}_${version}-1_${debarch}.deb"
  [[ -f $deb ]] || fail "$deb is missing (run cross/build.sh $arch)"
  [[ $(dpkg-deb -f "$deb" Architecture) == "$debarch" ]] || fail "$deb is not $debarch"
  rm -rf "$work/x" && dpkg-deb -x "$deb" "$work/x"
  cmp -s "$work/x/usr/bin/$pkg" "$bindir/$pkg" || fail "$deb does not carry $bindir/$pkg"
  [[ -f "$work/x/usr/lib/systemd/system/$pkg.service" ]] || fail "$deb has no $pkg.service"
  dpkg-deb --ctrl-tarfile "$deb" | tar -xO ./conffiles | grep -qx "/etc/ferrocam/${pkg#ferrocam-}.env" \
    || fail "$deb has no /etc/ferrocam/${pkg#ferrocam-}.env conffile"
  pass "$(basename "$deb"): $debarch, binary, unit, conffile"
done
echo "pi-check: $arch build verified"
