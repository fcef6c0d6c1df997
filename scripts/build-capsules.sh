#!/usr/bin/env bash
# Builds the sample and test capsules (Rust → wasm32-wasip2 components) and
# assembles each capsule directory (Capsule.toml + component) under
# build/capsules/<name>/. Installs the wasm32-wasip2 target when missing.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root/examples/capsules"

if ! rustup target list --installed | grep -qx wasm32-wasip2; then
    rustup target add wasm32-wasip2
fi

target_dir=${CAPSULE_TARGET_DIR:-$root/examples/capsules/target}
cargo build --release --target wasm32-wasip2 --target-dir "$target_dir" ${CARGO_QUIET:+-q}

out="$root/build/capsules"
for dir in */; do
    name=${dir%/}
    [ -f "$name/Capsule.toml" ] || continue
    mkdir -p "$out/$name"
    cp "$name/Capsule.toml" "$out/$name/"
    wasm="$target_dir/wasm32-wasip2/release/${name//-/_}.wasm"
    cp "$wasm" "$out/$name/"
done
echo "capsules ready in $out: $(ls "$out" | tr '\n' ' ')"
