#!/usr/bin/env bash
# Fuzz smoke for CI: installs cargo-fuzz when missing, builds every target, then runs each one for
# a few seconds starting from its seed corpus (fuzz/corpus/<target>) and its saved regressions
# (fuzz/regressions/<target>, every input replayed first). Exits non-zero on any crash, leak,
# timeout or build failure.
#
# Works on a stable toolchain: RUSTC_BOOTSTRAP=1 lets stable rustc take the -Z flags cargo-fuzz
# passes (sanitizer, coverage instrumentation). On nightly it changes nothing.
#
# Usage: fuzz/ci.sh [seconds-per-target]   (default 5; FUZZ_SECONDS works too)
# Time bound: the build is capped at FUZZ_BUILD_TIMEOUT seconds (default 2400; 3–5 minutes
# from scratch on 2 cores), each run at seconds + 120. With CI=true the build directory
# (fuzz/target, ~2 GB) is removed at the end.
set -euo pipefail
cd "$(dirname "$0")"

SECONDS_PER_TARGET="${1:-${FUZZ_SECONDS:-5}}"
BUILD_TIMEOUT="${FUZZ_BUILD_TIMEOUT:-2400}"
CARGO_FUZZ_VERSION="${CARGO_FUZZ_VERSION:-0.13.2}"
TARGETS=(request_head chunked sse_scan chat_translate ws_frame)
export RUSTC_BOOTSTRAP=1

scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"; if [ "${CI:-}" = "true" ]; then rm -rf "$PWD/target"; fi' EXIT
touch "$scratch/start"

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "fuzz: installing cargo-fuzz $CARGO_FUZZ_VERSION"
    timeout 900 cargo install cargo-fuzz --locked --version "$CARGO_FUZZ_VERSION"
fi

echo "fuzz: building ${TARGETS[*]}"
timeout "$BUILD_TIMEOUT" cargo fuzz build

passed=0
failed=0
for t in "${TARGETS[@]}"; do
    # New inputs go to the scratch directory (libFuzzer writes into the first corpus directory
    # only), so the checked-in seeds stay as they are.
    dirs=("$scratch/$t" "corpus/$t")
    if [ -d "regressions/$t" ] && [ -n "$(ls -A "regressions/$t")" ]; then
        dirs+=("regressions/$t")
    fi
    mkdir -p "$scratch/$t"
    log="$scratch/$t.log"
    echo "fuzz: $t for ${SECONDS_PER_TARGET}s (${dirs[*]:1})"
    if timeout "$((SECONDS_PER_TARGET + 120))" cargo fuzz run "$t" "${dirs[@]}" -- \
        -max_total_time="$SECONDS_PER_TARGET" -timeout=10 -rss_limit_mb=4096 \
        -print_final_stats=1 >"$log" 2>&1; then
        passed=$((passed + 1))
        grep -E '^stat::number_of_executed_units|^Done [0-9]+ runs' "$log" | sed "s/^/fuzz: $t: /" || true
    else
        failed=$((failed + 1))
        echo "fuzz: $t FAILED; last lines of its log:"
        tail -n 60 "$log"
        # Inputs written by this run (older artifacts from local runs are left out).
        find "artifacts/$t" -type f -newer "$scratch/start" 2>/dev/null | while read -r a; do
            echo "fuzz: $t input $a (base64):"
            base64 -w0 "$a"
            echo
        done
    fi
done

echo "fuzz: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
