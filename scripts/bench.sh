#!/usr/bin/env bash
# Prints the benchmark tables (B02, B03, B08, B16): builds the capsules and
# the Extism comparator plugin, installs Extism's C library from PyPI
# (`extism` → `extism-sys` wheel), then runs `cargo bench --bench call`.
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
