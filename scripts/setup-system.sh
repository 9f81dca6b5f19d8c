#!/usr/bin/env bash
# Installs the system packages ferrocam needs, skipping what is already installed.
#
#   scripts/setup-system.sh          build + run (GStreamer, V4L2 headers, libclang)
#   scripts/setup-system.sh test     also what the tests use (Chromium, ChromeDriver, brokers…)
#   scripts/setup-system.sh pi       also the aarch64 cross toolchain for `make pi`
#
# Works on Debian 12+, Ubuntu 22.04+ and Raspberry Pi OS (bookworm). Uses sudo when not root.
set -euo pipefail

build_packages=(
  pkg-config libclang-dev
  libgstreamer1.0-dev libgstreamer-plugins-base1.0-dev
  gstreamer1.0-plugins-base gstreamer1.0-plugins-good
  gstreamer1.0-plugins-bad gstreamer1.0-plugins-ugly
  gstreamer1.0-x          # timeoverlay: the running clock on the test pattern
  gstreamer1.0-alsa       # alsasrc: microphones
  gstreamer1.0-tools      # gst-inspect-1.0, handy when a camera misbehaves
)
test_packages=(chromium chromium-driver mosquitto coturn gstreamer1.0-libav iptables iproute2)

pi_packages=(gcc-aarch64-linux-gnu qemu-user-static file)

wanted=("${build_packages[@]}")
case "${1:-}" in
  test) wanted+=("${test_packages[@]}") ;;
  pi) wanted+=("${pi_packages[@]}") ;;
esac

missing=()
for pkg in "${wanted[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$pkg")
  fi
done

if [[ ${#missing[@]} -eq 0 ]]; then
  exit 0
fi

if ! command -v apt-get >/dev/null; then
  echo "setup: missing packages (${missing[*]}) and no apt-get here; install them by hand." >&2
  exit 1
fi

sudo=()
if [[ $(id -u) -ne 0 ]]; then
  sudo=(sudo)
fi
echo "setup: installing ${missing[*]}"
"${sudo[@]}" apt-get update -qq
DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}"
