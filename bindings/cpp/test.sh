#!/usr/bin/env bash
# Builds and tests the C++ binding: configures the CMake project with
# -Wall -Wextra -Werror, runs the GoogleTest suites through ctest, runs the
# two examples and checks their output, installs the package to a temporary
# prefix and builds a find_package consumer and a pkg-config consumer
# against it. Ends with "cpp: N passed, M failed" (gtest cases plus the
# example / package checks); exits non-zero on any failure.
#
# Environment: ASTRID_LIB_DIR (libastrid.so), ASTRID_INCLUDE_DIR (astrid.h),
# ASTRID_CAPSULES (built capsules); defaults are the repository's
# ${CARGO_TARGET_DIR:-target}/release, include/ and build/capsules.
# ASTRID_CPP_BUILD_DIR overrides the build directory (bindings/cpp/build);
# ASTRID_CPP_SANITIZE=1 builds everything with AddressSanitizer and
# UndefinedBehaviorSanitizer (leak checks included) in build-asan/.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
export ASTRID_LIB_DIR=${ASTRID_LIB_DIR:-${CARGO_TARGET_DIR:-$root/target}/release}
export ASTRID_INCLUDE_DIR=${ASTRID_INCLUDE_DIR:-$root/include}
export ASTRID_CAPSULES=${ASTRID_CAPSULES:-$root/build/capsules}
cxx_flags="-Wall -Wextra -Werror"
if [ "${ASTRID_CPP_SANITIZE:-0}" = 1 ]; then
    cxx_flags="$cxx_flags -fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer"
    build=${ASTRID_CPP_BUILD_DIR:-$here/build-asan}
else
    build=${ASTRID_CPP_BUILD_DIR:-$here/build}
fi

step() { printf '\n== cpp: %s\n' "$*"; }

# ---- tools ----
missing=()
command -v cmake >/dev/null || missing+=(cmake)
command -v c++ >/dev/null || missing+=(g++)
command -v pkg-config >/dev/null || missing+=(pkg-config)
command -v python3 >/dev/null || missing+=(python3)
[ -f /usr/include/gtest/gtest.h ] || missing+=(libgtest-dev)
if [ ${#missing[@]} -gt 0 ]; then
    step "installing ${missing[*]}"
    if [ "$(id -u)" = 0 ]; then
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
    else
        sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
    fi
fi
generator_name="Unix Makefiles"
command -v ninja >/dev/null && generator_name=Ninja
generator=(-G "$generator_name")
for f in "$ASTRID_LIB_DIR/libastrid.so" "$ASTRID_INCLUDE_DIR/astrid.h" "$ASTRID_CAPSULES/hello/Capsule.toml"; do
    [ -e "$f" ] || { echo "cpp: missing $f (build the library and capsules first, or set ASTRID_*)" >&2; exit 1; }
done

# ---- configure and build ----
step "configure and build (-Wall -Wextra -Werror)"
if [ -f "$build/CMakeCache.txt" ] && ! grep -qx "CMAKE_GENERATOR:INTERNAL=$generator_name" "$build/CMakeCache.txt"; then
    rm -rf "$build" # configured with another generator
fi
cmake -S "$here" -B "$build" "${generator[@]}" -DCMAKE_BUILD_TYPE=RelWithDebInfo \
    -DCMAKE_CXX_FLAGS="$cxx_flags" -DASTRID_CPP_BUILD_TESTS=ON \
    -DASTRID_LIB_DIR="$ASTRID_LIB_DIR" -DASTRID_INCLUDE_DIR="$ASTRID_INCLUDE_DIR" \
    -DASTRID_CAPSULES="$ASTRID_CAPSULES" >/dev/null
cmake --build "$build" -j 2

# ---- GoogleTest through ctest ----
step "GoogleTest suites (ctest)"
results="$build/gtest-results"
rm -rf "$results" && mkdir -p "$results"
ctest_status=0
if ! GTEST_OUTPUT="xml:$results/" ctest --test-dir "$build" --output-on-failure 2>&1 | tee "$build/ctest.log"; then
    ctest_status=1
fi
read -r passed failed skipped < <(python3 "$here/tests/count_results.py" "$results" "$build/ctest.log")
echo "gtest: $passed passed, $failed failed, $skipped skipped"
if [ "$ctest_status" != 0 ] && [ "$failed" = 0 ]; then
    failed=1 # ctest failed in a way no gtest report shows
fi

# ---- script checks: examples and the installed package ----
check_pass=0
check_fail=0
check() { # check NAME COMMAND...: runs COMMAND, counts the outcome
    local name=$1; shift
    if "$@"; then
        check_pass=$((check_pass + 1)); echo "ok: $name"
    else
        check_fail=$((check_fail + 1)); echo "FAILED: $name" >&2
    fi
}
contains() { grep -qF -- "$2" "$1" || { echo "  '$2' not in $1:" >&2; sed 's/^/    /' "$1" >&2; return 1; }; }

example_hello() {
    local out="$build/hello.out"
    "$build/examples/hello" "$ASTRID_CAPSULES/hello" tester >"$out" 2>&1 &&
        contains "$out" 'data={"message":"Hello, tester!"' &&
        contains "$out" '[info] hello: greeting tester on behalf of alice' &&
        contains "$out" 'loaded capsule hello (id ' &&
        contains "$out" 'result: action=final'
}
example_vfs() {
    local out="$build/vfs.out"
    "$build/examples/vfs" "$ASTRID_CAPSULES/fsprobe" >"$out" 2>&1 &&
        contains "$out" 'read-file(ws/public/hello.txt) -> ok hello from the capsule' &&
        contains "$out" 'gate: fsprobe asks to write cwd://ws/secret.txt -> deny' &&
        contains "$out" 'err capability-denied' &&
        contains "$out" 'audit: fs.write-file cwd://ws/secret.txt denied (gate: writes only under ws/public)' &&
        contains "$out" 'readdir(ws) -> ok public' &&
        contains "$out" 'memfs finalized'
}

prefix=$(mktemp -d)
trap 'rm -rf "$prefix"' EXIT
install_package() {
    cmake --install "$build" --prefix "$prefix/usr" >/dev/null &&
        [ -f "$prefix/usr/include/astrid.hpp" ] && [ -f "$prefix/usr/include/astrid.h" ] &&
        [ -f "$prefix/usr/lib/libastrid.so" ] && [ -f "$prefix/usr/lib/cmake/astrid/astridConfig.cmake" ] &&
        [ -f "$prefix/usr/lib/pkgconfig/astrid.pc" ]
}
find_package_consumer() {
    # No ASTRID_* in the environment: the installed package must stand alone.
    local out="$prefix/consumer.out"
    env -u ASTRID_LIB_DIR -u ASTRID_INCLUDE_DIR cmake -S "$here/tests/consumer" -B "$prefix/consumer" \
        "${generator[@]}" -DCMAKE_PREFIX_PATH="$prefix/usr" -DCMAKE_CXX_FLAGS="$cxx_flags" >/dev/null &&
        cmake --build "$prefix/consumer" >/dev/null &&
        grep -q "ASTRID_LIBRARY:FILEPATH=$prefix/usr/lib/libastrid.so" "$prefix/consumer/CMakeCache.txt" &&
        "$prefix/consumer/consumer" "$ASTRID_CAPSULES/hello" >"$out" 2>&1 &&
        contains "$out" 'consumer: final {"message":"Hello, consumer!"'
}
pkg_config_consumer() {
    local flags out="$prefix/pc.out"
    flags=$(PKG_CONFIG_PATH="$prefix/usr/lib/pkgconfig" pkg-config --cflags --libs astrid) &&
        PKG_CONFIG_PATH="$prefix/usr/lib/pkgconfig" pkg-config --exact-version="$(
            grep -m1 '^version' "$root/Cargo.toml" | cut -d'"' -f2)" astrid &&
        # shellcheck disable=SC2086 # word splitting of the flags is intended
        c++ -std=c++17 $cxx_flags "$here/examples/hello.cpp" $flags -Wl,-rpath,"$prefix/usr/lib" \
            -o "$prefix/hello-pc" &&
        "$prefix/hello-pc" "$ASTRID_CAPSULES/hello" pkgconfig >"$out" 2>&1 &&
        contains "$out" '"Hello, pkgconfig!"'
}

step "examples"
check "examples/hello.cpp output" example_hello
check "examples/vfs.cpp output" example_vfs
step "installed package"
check "cmake --install" install_package
check "find_package(astrid) consumer" find_package_consumer
check "pkg-config astrid consumer" pkg_config_consumer

total_pass=$((passed + check_pass))
total_fail=$((failed + check_fail))
echo "cpp: gtest $passed passed, $failed failed, $skipped skipped; checks $check_pass passed, $check_fail failed"
echo "cpp: $total_pass passed, $total_fail failed"
[ "$total_fail" -eq 0 ]
