#!/usr/bin/env bash
# Prints every benchmark table: B02, B03, B08, B16 (benches/call.rs), B05-B07
# (benches/fs.rs), the bus (benches/bus.rs), the network (benches/net.rs), then the bindings' B10-B13 and
# the C++ wrapper's overhead. Builds the capsules and the Extism comparator
# plugin, and installs Extism's C library from PyPI (`extism` → the
# `extism-sys` wheel) first.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
need_rust
"$root/scripts/build-capsules.sh"
if ! rustup target list --installed | grep -qx wasm32-unknown-unknown; then
    rustup target add wasm32-unknown-unknown
fi
(cd "$root/benches/extism-noop" && cargo build -q --release --target wasm32-unknown-unknown --target-dir "$CAPSULE_TARGET_DIR")
export EXTISM_PLUGIN="$CAPSULE_TARGET_DIR/wasm32-unknown-unknown/release/extism_noop.wasm"
if ! python3 -c 'import extism_sys' 2>/dev/null; then
    python3 -m pip install -q extism
fi
export EXTISM_LIB=$(python3 -c 'import extism_sys, os; print(os.path.join(os.path.dirname(extism_sys.__file__), "libextism_sys.so"))')
cd "$root"
cargo bench --bench call
cargo bench --bench fs
cargo bench --bench bus
cargo bench --bench net
export ASTRID_LIB_DIR="$lib_dir" ASTRID_INCLUDE_DIR="$root/include" ASTRID_CAPSULES="$root/build/capsules"
bindings/cpp/bench.sh
bindings/python/bench.sh
bindings/go/bench.sh
