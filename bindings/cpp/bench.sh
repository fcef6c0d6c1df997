#!/usr/bin/env bash
# Benchmarks the C++ binding (performance.md method: comparators in one
# process, interleaved round-robin, calibrated batches, >= 11 rounds):
#   - astrid::Capsule::call of hello's `noop` with 64 bytes vs the raw C
#     astrid_capsule_call + astrid_result_free (target: <= 1.1x);
#   - a gate callback through the std::function trampoline vs a plain C
#     function (fsprobe's deny-loop, inline callbacks).
# Environment as for test.sh (ASTRID_LIB_DIR, ASTRID_INCLUDE_DIR,
# ASTRID_CAPSULES); ASTRID_BENCH_ROUNDS sets the rounds (default 15).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
export ASTRID_LIB_DIR=${ASTRID_LIB_DIR:-${CARGO_TARGET_DIR:-$root/target}/release}
export ASTRID_INCLUDE_DIR=${ASTRID_INCLUDE_DIR:-$root/include}
export ASTRID_CAPSULES=${ASTRID_CAPSULES:-$root/build/capsules}
build=${ASTRID_CPP_BENCH_BUILD_DIR:-$here/build-bench}

generator=()
command -v ninja >/dev/null && generator=(-G Ninja)
cmake -S "$here" -B "$build" "${generator[@]}" -DCMAKE_BUILD_TYPE=Release -DASTRID_CPP_BUILD_TESTS=OFF -DASTRID_CPP_BUILD_BENCH=ON \
    -DASTRID_LIB_DIR="$ASTRID_LIB_DIR" -DASTRID_INCLUDE_DIR="$ASTRID_INCLUDE_DIR" \
    -DASTRID_CAPSULES="$ASTRID_CAPSULES" >/dev/null
cmake --build "$build" --target astrid_cpp_bench -j 2 >/dev/null
"$build/bench/astrid_cpp_bench" "$ASTRID_CAPSULES" "${ASTRID_BENCH_ROUNDS:-15}"
