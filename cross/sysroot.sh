#!/usr/bin/env bash
# Builds a Debian bookworm target sysroot for cross-compiling ferrocam, from the target's own
# packages unpacked into a folder — never by installing target -dev packages on the host (on
# bookworm, libgstreamer-plugins-base1.0-dev:arm64 would replace the amd64 one and break native
# builds). Needs apt with the target architecture added (`dpkg --add-architecture`, done here;
# it only lets apt *download* those packages).
#
#   cross/sysroot.sh arm64     → target/sysroot-arm64
#   cross/sysroot.sh armhf     → target/sysroot-armhf
#   SYSROOT_DIR=/opt/sysroot-arm64 cross/sysroot.sh arm64   (elsewhere; cross/Dockerfile does)
set -euo pipefail
arch=${1:-arm64}
root=$(cd "$(dirname "$0")/.." && pwd)
sysroot=${SYSROOT_DIR:-"$root/target/sysroot-$arch"}
stamp="$sysroot/.complete"
[[ -f "$stamp" ]] && { echo "$sysroot"; exit 0; }

sudo=()
[[ $(id -u) -ne 0 ]] && sudo=(sudo)
if ! dpkg --print-foreign-architectures | grep -qx "$arch"; then
  "${sudo[@]}" dpkg --add-architecture "$arch"
  # A mirror mid-sync can fail one index (often -security's); `apt-get download` below fails
  # loudly if what it needs is missing.
  "${sudo[@]}" apt-get update -qq || echo "sysroot: apt-get update reported errors; trying anyway" >&2
fi

# Headers and link-time libraries for GStreamer (+app, video), GLib, V4L2 (bindgen), libc.
packages=(
  libc6 libc6-dev linux-libc-dev libgcc-s1
  libgstreamer1.0-0 libgstreamer1.0-dev
  libgstreamer-plugins-base1.0-0 libgstreamer-plugins-base1.0-dev
  libglib2.0-0 libglib2.0-dev
  libffi8 libpcre2-8-0 zlib1g libmount1 libselinux1 libblkid1 liborc-0.4-0 libunwind8 libdw1 libelf1
  libzstd1 liblzma5 libbz2-1.0 libsepol2
  # pkg-config follows Requires.private even for dynamic links: their .pc files must be there.
  libpcre2-dev libffi-dev zlib1g-dev libmount-dev libblkid-dev libselinux1-dev libsepol-dev
  liborc-0.4-dev libunwind-dev libdw-dev libelf-dev libzstd-dev liblzma-dev
)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
(cd "$work" && apt-get download -qq "${packages[@]/%/:$arch}")
rm -rf "$sysroot"
mkdir -p "$sysroot"
for deb in "$work"/*.deb; do
  dpkg -x "$deb" "$sysroot"
done
# Debian's -dev symlinks are absolute (/usr/lib/…); make them point inside the sysroot.
find "$sysroot" -type l -lname '/*' | while read -r link; do
  target=$(readlink "$link")
  ln -sfn "$sysroot$target" "$link"
done
touch "$stamp"
echo "$sysroot"
