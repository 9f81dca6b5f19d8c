#!/usr/bin/env bash
# Installs the system packages ferrocam needs, skipping what is already installed.
#
#   scripts/setup-system.sh          build + run (GStreamer, V4L2 headers, libclang)
#   scripts/setup-system.sh test     also what the tests use (Chromium, ChromeDriver, Firefox ESR,
#                                    geckodriver, brokers, image and package tools, cargo-deb)
#   scripts/setup-system.sh pi       also the ARM cross toolchains, qemu and cargo-deb for `make pi`
#   scripts/setup-system.sh deb      build + cargo-deb, for `make deb`
#   scripts/setup-system.sh bench    test, plus the peers `make bench-peers` compares against
#                                    (Janus's streaming plugin; python3-venv for aiortc)
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
test_packages=(chromium chromium-driver mosquitto coturn gstreamer1.0-libav iptables iproute2
  firefox-esr             # tests/tests/browsers.rs: Debian's Firefox, default prefs (VP8, no H.264)
  python3                 # scripts/check-structure.py (make lint): import cycles, file and function sizes
  nats-server             # tests/tests/cluster.rs: a 3-node NATS cluster as the clustered MQTT broker
  # tests/tests/packaging.rs (.deb contents, systemd-analyze verify/security on the units) and
  # tests/tests/pi_image.rs (a synthetic Raspberry Pi OS image edited without mounting it)
  systemd fdisk dosfstools mtools e2fsprogs xz-utils)

pi_packages=(gcc-aarch64-linux-gnu gcc-arm-linux-gnueabihf qemu-user-static file binutils
  # cross/pi-image
  fdisk dosfstools mtools e2fsprogs xz-utils)

# make bench-peers: reference WebRTC peers; aiortc itself goes into a venv the harness makes
bench_packages=(janus python3-venv)

# geckodriver drives Firefox in tests/tests/browsers.rs; Debian does not package it. Pinned for
# the same reason as cargo-deb.
GECKODRIVER_VERSION=0.37.1

# cargo-deb makes the .deb packages (make pi, make deb, tests/tests/packaging.rs). Pinned: its
# output format and options are part of what the tests check.
CARGO_DEB_VERSION=3.8.0

wanted=("${build_packages[@]}")
case "${1:-}" in
  test) wanted+=("${test_packages[@]}") ;;
  pi) wanted+=("${pi_packages[@]}") ;;
  bench) wanted+=("${test_packages[@]}" "${bench_packages[@]}") ;;
esac

missing=()
for pkg in "${wanted[@]}"; do
  if [[ $(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null || true) != *"install ok installed"* ]]; then
    missing+=("$pkg")
  fi
done

install_cargo_deb() {
  if [[ $(cargo deb --version 2>/dev/null) == "cargo-deb $CARGO_DEB_VERSION" ]]; then
    return
  fi
  echo "setup: installing cargo-deb $CARGO_DEB_VERSION"
  nice -n 10 cargo install cargo-deb --version "$CARGO_DEB_VERSION" --locked --quiet
}

install_geckodriver() {
  if [[ $(geckodriver --version 2>/dev/null | head -1) == "geckodriver $GECKODRIVER_VERSION"* ]]; then
    return
  fi
  echo "setup: installing geckodriver $GECKODRIVER_VERSION"
  nice -n 10 cargo install geckodriver --version "$GECKODRIVER_VERSION" --locked --quiet
}

install_cargo_tools() {
  case "${1:-}" in
    test | bench) install_cargo_deb; install_geckodriver ;;
    pi | deb) install_cargo_deb ;;
  esac
}

if [[ ${#missing[@]} -eq 0 ]]; then
  install_cargo_tools "${1:-}"
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
# One stale index (a mirror mid-sync, often a foreign architecture's that `make pi` added) must
# not stop the install; apt-get install fails loudly if something it needs is really missing.
"${sudo[@]}" apt-get update -qq || echo "setup: apt-get update reported errors; installing anyway" >&2
# Ubuntu ships Firefox as a snap and has no firefox-esr package: the Firefox tests then say
# they were skipped for that reason (tests/tests/browsers.rs); Debian and Raspberry Pi OS have it.
# The policy is read whole before it is searched: with pipefail, `apt-cache … | grep -q` fails
# whenever grep stops reading early and apt-cache dies of SIGPIPE, which once dropped Firefox
# from a fresh machine that had it.
firefox_policy=$(apt-cache policy firefox-esr 2>/dev/null || true)
if [[ " ${missing[*]} " == *" firefox-esr "* ]] && [[ $firefox_policy != *"Candidate: "[0-9]* ]]; then
  echo "setup: no firefox-esr package on this distribution; the Firefox tests will be skipped" >&2
  kept=()
  for pkg in "${missing[@]}"; do
    [[ $pkg == firefox-esr ]] || kept+=("$pkg")
  done
  missing=(${kept[@]+"${kept[@]}"})
fi
DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends ${missing[@]+"${missing[@]}"}
install_cargo_tools "${1:-}"
