#!/usr/bin/env bash
# Builds and runs the cargo-fuzz targets in fuzz/ for a bounded time each,
# failing on the first crash or broken invariant.
#
#   scripts/fuzz.sh                  every target, 60 s each
#   scripts/fuzz.sh TARGET [SECONDS] one target
#   scripts/fuzz.sh --smoke          every target, ~5 s each (for the test command)
#   scripts/fuzz.sh --list           the targets
#
# Inputs libFuzzer finds go to fuzz/corpus-work/TARGET (gitignored, seeded
# from the committed fuzz/corpus/TARGET); crashes to fuzz/artifacts/TARGET/.
# Environment: FUZZ_SANITIZER (default none; `address` for ASan),
# FUZZ_JOBS (parallel jobs per target, default 1), FUZZ_ARGS (extra libFuzzer
# flags), CARGO_FUZZ_TARGET_DIR (default fuzz/target).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

targets=(topic vfs_path host_url manifest http_decode c_api)
seconds=60
selected=()
case ${1:-} in
    --smoke) seconds=5 ;;
    --list) printf '%s\n' "${targets[@]}"; exit 0 ;;
    -h|--help) sed -n '2,16p' "$0"; exit 0 ;;
    "") ;;
    *) selected=("$1"); seconds=${2:-60} ;;
esac
[ ${#selected[@]} -gt 0 ] || selected=("${targets[@]}")
for t in "${selected[@]}"; do
    printf '%s\n' "${targets[@]}" | grep -qx "$t" || { echo "unknown target: $t (try --list)" >&2; exit 2; }
done

need_rust
if ! rustup toolchain list | grep -q '^nightly'; then
    step "installing the nightly toolchain (cargo-fuzz needs it)"
    rustup toolchain install nightly --profile minimal
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
    step "installing cargo-fuzz"
    cargo +nightly install cargo-fuzz --locked
fi

sanitizer=${FUZZ_SANITIZER:-none}
jobs=${FUZZ_JOBS:-1}
parallel=()
# More than one job runs libFuzzer's fork mode (per-job logs: ./fuzz-N.log).
[ "$jobs" -gt 1 ] && parallel=(-jobs="$jobs" -workers="$jobs")
export CARGO_TARGET_DIR=${CARGO_FUZZ_TARGET_DIR:-$root/fuzz/target}
cd "$root"

if printf '%s\n' "${selected[@]}" | grep -qx c_api && [ ! -f build/capsules/hello/Capsule.toml ]; then
    step "building the test capsules (c_api loads hello and probe)"
    scripts/build-capsules.sh
fi

step "building ${selected[*]} (sanitizer: $sanitizer)"
for t in "${selected[@]}"; do
    cargo +nightly fuzz build -s "$sanitizer" "$t"
done

failed=()
for t in "${selected[@]}"; do
    step "fuzzing $t for ${seconds}s"
    work="fuzz/corpus-work/$t"
    log="fuzz/artifacts/$t/last-run.log"
    mkdir -p "$work" "fuzz/artifacts/$t"
    # New inputs go to the first directory (gitignored); the committed seeds
    # are only read. -rss_limit_mb bounds memory (a decompression bomb that
    # got through would show here); -timeout flags an input slower than 10 s.
    rc=0
    cargo +nightly fuzz run -s "$sanitizer" "$t" "$work" "fuzz/corpus/$t" -- \
        -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -max_len=65536 \
        -print_final_stats=1 "${parallel[@]}" ${FUZZ_ARGS:-} >"$log" 2>&1 || rc=$?
    grep -E '^#[0-9]+[[:space:]]+(INITED|DONE)|^stat::number_of_executed_units|^stat::average_exec_per_sec|ERROR|panicked at|SUMMARY|Test unit written' "$log" || true
    if [ "$rc" != 0 ] || grep -qE 'panicked at|==[0-9]+== ERROR|deadly signal|Test unit written' "$log"; then
        echo "!! $t failed (exit $rc): see $log and fuzz/artifacts/$t/" >&2
        failed+=("$t")
    fi
done

if [ ${#failed[@]} -gt 0 ]; then
    echo "fuzzing failed: ${failed[*]}" >&2
    exit 1
fi
step "all fuzz targets ran clean"
