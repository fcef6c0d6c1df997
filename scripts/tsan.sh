#!/usr/bin/env bash
# The C API tests and a short soak under ThreadSanitizer, with the Rust side
# instrumented too: the library and its standard library are rebuilt with
# -Zsanitizer=thread (nightly, -Zbuild-std) into their own target directory,
# and the C programs are compiled with -fsanitize=thread, whose runtime the
# whole process then shares. Without the Rust side instrumented, TSan cannot
# see the library's atomics and reports hundreds of false races.
#
#   scripts/tsan.sh            C API tests + a 5 s soak (the test command runs this)
#   scripts/tsan.sh SECONDS    C API tests + a soak of SECONDS
#
# Any report fails the run (halt_on_error); the suppressions file lists the
# few known, explained reports from code outside this repository.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
need_rust
need_c
cd "$root"
soak_seconds=${1:-5}

if ! rustup toolchain list | grep -q '^nightly'; then
    step "installing the nightly toolchain (-Zsanitizer needs it)"
    rustup toolchain install nightly --profile minimal
fi
if ! rustup component list --toolchain nightly --installed | grep -q '^rust-src'; then
    step "installing nightly's rust-src (-Zbuild-std needs it)"
    rustup component add rust-src --toolchain nightly
fi
if [ ! -f build/capsules/hello/Capsule.toml ]; then
    scripts/build-capsules.sh
fi

host=$(rustc -vV | sed -n 's/^host: //p')
tsan_target="$root/target/tsan"
step "building the library with ThreadSanitizer ($host, nightly, build-std)"
# rustix (under wasmtime) maps and unmaps memory with raw system calls,
# which TSan cannot see: a mapping freed by one thread and handed to another
# then looks like a race on the same bytes (seen in wasmtime's compile output
# buffers and code memory). Routing rustix through libc lets TSan see them.
RUSTFLAGS="-Zsanitizer=thread -Cdebuginfo=line-tables-only --cfg=rustix_use_libc" \
    CARGO_TARGET_DIR="$tsan_target" \
    cargo +nightly build --release --lib -Zbuild-std --target "$host"
tsan_lib="$tsan_target/$host/release"

tsan_c() { # tsan_c OUT SRC
    cc -Wall -Wextra -Werror -std=c11 -g -O1 -fsanitize=thread -I"$root/include" "$2" \
        tests/c/tsan_shim.c -L"$tsan_lib" -lastrid -lpthread -Wl,-rpath,"$tsan_lib" -o "$1"
}
mkdir -p build
tsan_c build/test_api_tsan tests/c/test_api.c
tsan_c build/soak_tsan tests/c/soak.c

export TSAN_OPTIONS="halt_on_error=1 second_deadlock_stack=1 suppressions=$root/tests/c/tsan.supp ${TSAN_OPTIONS:-}"
step "C API tests under ThreadSanitizer"
./build/test_api_tsan build/capsules
step "soak under ThreadSanitizer (${soak_seconds}s, 4 threads)"
./build/soak_tsan build/capsules "$soak_seconds" 4
step "ThreadSanitizer: no reports"
