#!/usr/bin/env bash
# Benchmarks B10 and B11 of the Python binding (performance.md method: rows
# interleaved round-robin in one process, >= 11 rounds, min / median ns/op and
# the median of per-round ratios). Separate from the tests.
#
# Builds the Extism comparator plugin (benches/extism-noop, with its B11 export
# enabled by `--cfg extism_host_read`, in its own target directory so the
# default plugin other benchmarks use is untouched), installs extism-py from
# PyPI into a virtualenv together with this package, then runs bench/bench.py.
#
#   env: ASTRID_LIB_DIR, ASTRID_INCLUDE_DIR, ASTRID_CAPSULES (as for test.sh),
#        CAPSULE_TARGET_DIR (default <root>/examples/capsules/target),
#        PYTHON (default python3); arguments go to bench.py (--rounds N, --batch-ms MS, --only b10|b11)
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
export ASTRID_LIB_DIR="${ASTRID_LIB_DIR:-${CARGO_TARGET_DIR:-$root/target}/release}"
export ASTRID_INCLUDE_DIR="${ASTRID_INCLUDE_DIR:-$root/include}"
export ASTRID_CAPSULES="${ASTRID_CAPSULES:-$root/build/capsules}"
export ASTRID_LIB="$ASTRID_LIB_DIR/libastrid.so"
PYTHON="${PYTHON:-python3}"
capsule_target="${CAPSULE_TARGET_DIR:-$root/examples/capsules/target}"

for need in "$ASTRID_LIB" "$ASTRID_INCLUDE_DIR/astrid.h" "$ASTRID_CAPSULES/hello/Capsule.toml"; do
    [ -e "$need" ] || { echo "$need is missing: build the library and capsules first (scripts/demo.sh)" >&2; exit 1; }
done
command -v cc >/dev/null || { echo "a C compiler (cc) is required" >&2; exit 1; }
command -v cargo >/dev/null || { echo "cargo is required to build the Extism plugin" >&2; exit 1; }

if ! rustup target list --installed | grep -qx wasm32-unknown-unknown; then
    rustup target add wasm32-unknown-unknown
fi
plugin_target="$capsule_target/extism-host-read"
(cd "$root/benches/extism-noop" &&
    RUSTFLAGS="--cfg extism_host_read" cargo build -q --release --target wasm32-unknown-unknown \
        --target-dir "$plugin_target")
export EXTISM_NOOP_WASM="$plugin_target/wasm32-unknown-unknown/release/extism_noop.wasm"

work="$(mktemp -d "${TMPDIR:-/tmp}/astrid-python-bench.XXXXXX")"
trap 'rm -rf "$work"' EXIT
"$PYTHON" -m venv "$work/venv"
mkdir "$work/pkg"
cp -r "$here/pyproject.toml" "$here/README.md" "$here/src" "$work/pkg/"
"$work/venv/bin/python" -m pip install -q --disable-pip-version-check "extism>=1" "$work/pkg"

cd "$here"
PYTHONDONTWRITEBYTECODE=1 "$work/venv/bin/python" bench/bench.py "$@"
