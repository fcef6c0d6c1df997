#!/usr/bin/env bash
# Builds everything (library, header, sample capsules, C demo) and runs the
# demo: a C program loading the `hello` capsule with the built-in defaults.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
need_rust
need_c
step "building the library and include/astrid.h"
cargo build --release --manifest-path "$root/Cargo.toml"
step "building the capsules"
"$root/scripts/build-capsules.sh"
step "building examples/c/hello.c"
mkdir -p "$root/build"
compile_c "$root/build/hello" "$root/examples/c/hello.c"
step "running the demo"
cd "$root"
./build/hello build/capsules/hello "${1:-C}"
