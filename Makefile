# ferrocam — the two commands a user needs are `make demo` and `make test`.
SHELL := /bin/bash
CARGO ?= cargo

.PHONY: demo test setup setup-test build release lint unit e2e all-tests bench bench-peers bench-network bench-gateway bench-gateway-runs screenshots pi pi-armv7 pi-check deb clean fuzz-smoke fuzz

## demo: install system packages, build, run gateway + embedded broker + a `demo` device
demo: setup release
	scripts/demo.sh

## test: formatting, lints, unit tests and end-to-end tests (real processes, real Chromium)
test: setup-test lint build all-tests

setup:
	scripts/setup-system.sh

setup-test:
	scripts/setup-system.sh test

build:
	$(CARGO) build --workspace --locked

release:
	$(CARGO) build --release --locked -p ferrocam-gateway -p ferrocam-device -p ferrocam-client

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets --locked -- -D warnings
	python3 scripts/check-structure.py

unit:
	$(CARGO) test --workspace --locked --exclude ferrocam-tests

# End-to-end suites start their own processes and a browser each; one at a time keeps them
# from competing for the two cores and skewing timing-sensitive paths like ICE.
e2e: build
	$(CARGO) test -p ferrocam-tests --locked -- --test-threads=1

# Everything in one cargo invocation over the whole workspace: the same feature set as
# `build`, so nothing is compiled twice (selecting one package re-resolves features and
# rebuilds shared dependencies).
all-tests: build
	$(CARGO) test --workspace --locked --no-fail-fast -- --test-threads=1

clean:
	$(CARGO) clean

## fuzz-smoke: 30 s of libFuzzer on each parser of untrusted input (signaling envelope, control
## requests, SDP checks); cargo fuzz on stable via RUSTC_BOOTSTRAP=1, own target dir fuzz/target
fuzz-smoke:
	scripts/fuzz.sh 30

## fuzz: the same, FUZZ_SECONDS per target (default 600); FUZZ_SANITIZER=none runs ~3x faster
## without AddressSanitizer; FUZZ_ARGS="-jobs=2 -workers=2" uses both cores
FUZZ_SECONDS ?= 600
fuzz:
	scripts/fuzz.sh $(FUZZ_SECONDS)

## bench: everything BENCHMARKS.md reports, in one run on a release build: glass to glass and
## time to first frame in Chromium and a WHEP player (bench-latency), device cost at 1/4/8/16
## viewers (bench-viewers), the VP8 fallback's cost (bench-codecs), the same stamped source
## through Janus and aiortc (bench-peers), gateway scale with 1k/10k simulated devices
## (bench-gateway), mouth-to-speaker latency of talkback beside a Chromium ↔ Chromium loopback
## and the device's CPU while someone talks (bench-talk), data-channel file transfer beside a
## Chromium ↔ Chromium channel and the device's CPU while recording (bench-files), a narrow
## uplink's steps beside libwebrtc's own adaptation and Janus (bench-network), then
## docs/bench/*.png.
## Results: target/bench/*.json and the tables printed on the way. About 20 minutes.
bench:
	scripts/setup-system.sh bench
	$(CARGO) build --release --locked --workspace --bins
	FERROCAM_BIN_DIR=target/release target/release/bench-latency
	FERROCAM_BIN_DIR=target/release target/release/bench-viewers
	FERROCAM_BIN_DIR=target/release target/release/bench-codecs
	FERROCAM_BIN_DIR=target/release target/release/bench-talk
	FERROCAM_BIN_DIR=target/release target/release/bench-files
	target/release/bench-peers
	FERROCAM_BIN_DIR=target/release target/release/bench-network
	$(MAKE) --no-print-directory bench-gateway-runs
	target/bench/venv/bin/pip install --quiet matplotlib==3.9.2
	target/bench/venv/bin/python scripts/plot-bench.py

## bench-peers: the same stamped 720p30 source through Janus's streaming plugin (Debian
## `janus`, fed RTP by stamp-source) and aiortc (PyPI, in target/bench/venv): glass-to-glass,
## time to first frame and CPU per viewer, measured as ferrocam is; target/bench/peers.json
bench-peers:
	scripts/setup-system.sh bench
	$(CARGO) build --release --locked -p ferrocam-tests --bins
	target/release/bench-peers

## bench-network: the uplink steps 3000 → 1000 → 500 → 3000 kbit/s (tc tbf in a network
## namespace, 20 s each) under ferrocam, a Chromium → Chromium call (libwebrtc's own
## adaptation: the anchor) and Janus relaying a fixed 2 Mbit/s, one viewer each in headless
## Chromium: time to adapt, freezes, rate, width and glass to glass per step;
## target/bench/network.json and docs/bench/network.png. Needs root. About 6 minutes.
bench-network:
	scripts/setup-system.sh bench
	$(CARGO) build --release --locked --workspace --bins
	FERROCAM_BIN_DIR=target/release target/release/bench-network
	test -x target/bench/venv/bin/python || python3 -m venv target/bench/venv
	target/bench/venv/bin/pip install --quiet matplotlib==3.9.2
	target/bench/venv/bin/python scripts/plot-bench.py

## bench-gateway: one gateway with 1k and 10k simulated devices (MQTT clients answering with a
## canned SDP) on the embedded broker and on Mosquitto: time to all online, RSS, WHEP sessions/s,
## POST and relay latency; a Markdown table, and JSON in target/bench-gateway/
bench-gateway: setup-test
	$(CARGO) build --release --locked -p ferrocam-gateway -p ferrocam-tests --bins
	$(MAKE) --no-print-directory bench-gateway-runs

bench-gateway-runs:
	@header=; for n in 1000 10000; do for broker in embedded mosquitto; do \
	  FERROCAM_BIN_DIR=target/release target/release/bench-gateway --devices $$n --broker $$broker \
	    --json target/bench-gateway/$$n-$$broker.json $$header || exit 1; header=--no-header; \
	done; done

## screenshots: regenerate docs/screenshots/*.png of the web viewer
screenshots: setup-test build
	$(CARGO) run --locked -p ferrocam-tests --bin screenshots

## pi: cross-build ferrocam-device and ferrocam-gateway for 64-bit Raspberry Pi OS (aarch64)
## and package them: target/debian/ferrocam-{device,gateway}_<version>-1_arm64.deb
pi:
	scripts/setup-system.sh pi
	cross/build.sh aarch64

## pi-armv7: the same for 32-bit Raspberry Pi OS (armhf, Pi 2 and later)
pi-armv7:
	scripts/setup-system.sh pi
	cross/build.sh armv7

## pi-check: `make pi`, then prove the result: ARM aarch64 ELF for glibc ≤ 2.36, runs under
## qemu-aarch64-static (--version, --help, the device's --check-config), arm64 packages
pi-check: pi
	cross/check.sh aarch64

## deb: .deb packages for this machine (amd64): target/debian/ferrocam-{device,gateway}_*.deb
deb:
	scripts/setup-system.sh deb
	$(CARGO) build --release --locked -p ferrocam-gateway -p ferrocam-device
	$(CARGO) deb --no-build --locked -p ferrocam-device
	$(CARGO) deb --no-build --locked -p ferrocam-gateway
