#!/usr/bin/env bash
# Builds and runs the libFuzzer targets of fuzz/ (see fuzz/README.md).
#
#   scripts/fuzz.sh build                  build every target (instrumented, release)
#   scripts/fuzz.sh run SECONDS [TARGET…]  build, then fuzz each target for SECONDS;
#                                          a table at the end; exit 1 if any crashed
#
# Why no cargo-fuzz: all `cargo fuzz build` adds over plain cargo is a set of RUSTFLAGS
# (the sanitizer-coverage passes that feed libFuzzer) and `--target <host>` (so build
# scripts and proc macros stay uninstrumented). Both work on stable Rust, and
# libfuzzer-sys links libFuzzer itself, so the targets build with the toolchain we have;
# `cargo install cargo-fuzz` would compile ~100 crates first (minutes of CI), and its
# default AddressSanitizer needs nightly (the targets are safe Rust, so ASan finds little
# here; panics, overflows and debug assertions are the findings). The flags below are
# the ones cargo-fuzz 0.12 passes for `--sanitizer none`.
#
# Runs never write into fuzz/corpus/ (the committed seeds): libFuzzer adds what it finds
# to fuzz/target/corpus/<target>/, and crash inputs go to fuzz/target/artifacts/<target>/.
# To keep a crash as a regression seed, copy it into fuzz/corpus/<target>/.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
fuzz="$root/fuzz"
targets=(core_session wire_conversions persona verdict)
triple=$(rustc -vV | sed -n 's/^host: //p')
bin="$fuzz/target/$triple/release"
cargo=${CARGO:-cargo}
# FUZZ_JOBS=N limits the build's parallel jobs (cargo's default: one per core).
jobs=(${FUZZ_JOBS:+-j "$FUZZ_JOBS"})

# fuzz/Cargo.lock started as a copy of the root lock, so that the crates both trees use
# are the same versions. When a dependency of the crates under test changes (the root
# lock moves on), the fuzz lock no longer fits: start it again from the root lock, and
# let cargo add the fuzz-only crates and drop the rest. (Commit the result.)
sync_lock() {
    if ! (cd "$fuzz" && "$cargo" metadata --locked --format-version 1 >/dev/null 2>&1); then
        cp "$root/Cargo.lock" "$fuzz/Cargo.lock"
        echo "fuzz: fuzz/Cargo.lock did not fit the crates under test; re-seeded it from Cargo.lock" >&2
    fi
}

build() {
    sync_lock
    local flags=(
        -Cpasses=sancov-module
        -Cllvm-args=-sanitizer-coverage-level=4
        -Cllvm-args=-sanitizer-coverage-inline-8bit-counters
        -Cllvm-args=-sanitizer-coverage-pc-table
        -Cllvm-args=-sanitizer-coverage-trace-compares
        -Cllvm-args=-sanitizer-coverage-stack-depth
        --cfg fuzzing
    )
    # The fuzz crate is its own workspace with its own lock file and target dir, so
    # this never rebuilds (or invalidates) the main build's artefacts.
    (cd "$fuzz" && RUSTFLAGS="${flags[*]}" CARGO_TARGET_DIR="$fuzz/target" \
        "$cargo" build --release --target "$triple" "${jobs[@]}" --bins)
}

# Dictionaries (tokens libFuzzer splices into inputs), where a target has one.
dict_for() {
    local d="$fuzz/dict/$1.dict"
    [[ -f $d ]] && echo "-dict=$d"
    return 0
}

run() {
    local seconds=$1
    shift
    local chosen=("$@")
    [[ ${#chosen[@]} -gt 0 ]] || chosen=("${targets[@]}")
    build
    local rows=() failed=0
    for t in "${chosen[@]}"; do
        [[ -x "$bin/$t" ]] || { echo "fuzz: no target $t (have: ${targets[*]})" >&2; exit 2; }
        local work="$fuzz/target/corpus/$t" artifacts="$fuzz/target/artifacts/$t"
        local log="$fuzz/target/logs/$t.log"
        mkdir -p "$work" "$artifacts" "$(dirname "$log")" "$fuzz/corpus/$t"
        local start=$SECONDS status=0 before
        before=$(find "$artifacts" -type f | wc -l)
        # shellcheck disable=SC2046
        "$bin/$t" "$work" "$fuzz/corpus/$t" $(dict_for "$t") \
            -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 \
            -print_final_stats=1 -artifact_prefix="$artifacts/" >"$log" 2>&1 || status=$?
        local took=$((SECONDS - start))
        local runs eps cov ft corp crashes
        runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
        eps=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
        cov=$(grep -o 'cov: [0-9]*' "$log" | tail -1 | cut -d' ' -f2)
        ft=$(grep -o 'ft: [0-9]*' "$log" | tail -1 | cut -d' ' -f2)
        corp=$(grep -o 'corp: [0-9]*/[0-9a-zA-Z]*' "$log" | tail -1 | cut -d' ' -f2)
        # Crash, timeout and out-of-memory inputs this run wrote (libFuzzer stops at one).
        crashes=$(($(find "$artifacts" -type f | wc -l) - before))
        if [[ $status -ne 0 ]]; then
            [[ $crashes -gt 0 ]] || crashes=1
            failed=1
            echo "=== $t failed (exit $status); the end of $log:" >&2
            tail -40 "$log" >&2
        fi
        rows+=("$(printf '%-17s %10s %8s %6s %6s %12s %6ss %8s' "$t" "${runs:-?}" "${eps:-?}" \
            "${cov:-?}" "${ft:-?}" "${corp:-?}" "$took" "$crashes")")
    done
    echo
    printf '%-17s %10s %8s %6s %6s %12s %7s %8s\n' target runs exec/s cov ft corpus time crashes
    printf '%s\n' "${rows[@]}"
    if [[ $failed -ne 0 ]]; then
        echo "fuzz: crash inputs are in fuzz/target/artifacts/; replay one with $bin/<target> <file>" >&2
        exit 1
    fi
}

case "${1:-}" in
    build) build ;;
    run)
        shift
        [[ $# -ge 1 ]] || { echo "usage: $0 run SECONDS [TARGET...]" >&2; exit 2; }
        run "$@"
        ;;
    *)
        echo "usage: $0 build | run SECONDS [TARGET...]" >&2
        exit 2
        ;;
esac
