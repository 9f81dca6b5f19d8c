#!/usr/bin/env bash
# Fuzzes ferrocam's parsers of untrusted input with cargo fuzz (libFuzzer) on the stable
# toolchain, one target after another, and prints executions per target.
#
#   scripts/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]     (default: 30 s, every target)
#
# Targets live in fuzz/fuzz_targets/; `cargo fuzz list --fuzz-dir fuzz` names them.
# Environment:
#   FUZZ_SANITIZER   address (default) or none
#   FUZZ_ARGS        extra libFuzzer flags, e.g. "-jobs=2 -workers=2" or "-max_len=65600"
#
# cargo fuzz passes -Z flags to rustc (sanitizer, coverage instrumentation), which stable
# rustc accepts only with RUSTC_BOOTSTRAP=1; it is set here for the fuzz crate's build only
# (its own workspace and target dir, fuzz/target, so the main build is untouched).
#
# The committed seeds in fuzz/corpus/<target>/ are read, never written; what the fuzzer finds
# goes to fuzz/target/corpus/<target>/ (kept between runs on one machine). A crash leaves its
# input in fuzz/artifacts/<target>/; replay it with
#   RUSTC_BOOTSTRAP=1 cargo fuzz run --fuzz-dir fuzz <target> fuzz/artifacts/<target>/<file>
# Exits non-zero if any target crashed.
set -euo pipefail
cd "$(dirname "$0")/.."

secs=${1:-30}
shift || true
sanitizer=${FUZZ_SANITIZER:-address}
CARGO=${CARGO:-cargo}
CARGO_FUZZ_VERSION=0.13.2
export RUSTC_BOOTSTRAP=1

if ! $CARGO fuzz --version >/dev/null 2>&1; then
    echo "fuzz.sh: installing cargo-fuzz $CARGO_FUZZ_VERSION" >&2
    $CARGO install cargo-fuzz --locked --version "$CARGO_FUZZ_VERSION"
fi

if [ $# -gt 0 ]; then
    targets=("$@")
else
    mapfile -t targets < <($CARGO fuzz list --fuzz-dir fuzz)
fi

fuzz=($CARGO fuzz)
opts=(--sanitizer "$sanitizer")
"${fuzz[@]}" build --fuzz-dir fuzz "${opts[@]}"

mkdir -p fuzz/target/logs
failed=()
summary=()
for t in "${targets[@]}"; do
    mkdir -p "fuzz/target/corpus/$t" "fuzz/corpus/$t"
    log="fuzz/target/logs/$t.log"
    echo "== $t: ${secs}s (sanitizer: $sanitizer, log: $log)"
    status=ok
    # shellcheck disable=SC2086 # FUZZ_ARGS is a list of flags
    if ! "${fuzz[@]}" run --fuzz-dir fuzz "${opts[@]}" "$t" "fuzz/target/corpus/$t" "fuzz/corpus/$t" -- \
        -max_total_time="$secs" -timeout=10 -print_final_stats=1 ${FUZZ_ARGS:-} \
        >"$log" 2>&1; then
        status="CRASH (see $log and fuzz/artifacts/$t/)"
        failed+=("$t")
    fi
    execs=$(awk '/stat::number_of_executed_units/ {n += $2} END {print n + 0}' "$log")
    cov=$(grep -o 'cov: [0-9]*' "$log" | tail -1 | cut -d' ' -f2)
    summary+=("$(printf '%-18s %12s execs  cov %-6s %s' "$t" "$execs" "${cov:-?}" "$status")")
    tail -n 3 "$log"
done

echo
echo "== fuzz summary (${secs}s per target, sanitizer $sanitizer)"
printf '%s\n' "${summary[@]}"
if [ ${#failed[@]} -gt 0 ]; then
    echo "fuzz.sh: crashes in: ${failed[*]}" >&2
    exit 1
fi
