# Sourced by test.sh and bench.sh: finds the Go toolchain and points cgo at
# the astrid library, header and capsules.
#
#   ASTRID_LIB_DIR      directory holding libastrid.so
#                       (default: ${CARGO_TARGET_DIR:-<repo>/target}/release)
#   ASTRID_INCLUDE_DIR  directory holding astrid.h (default: <repo>/include)
#   ASTRID_CAPSULES     the built capsules (default: <repo>/build/capsules)

go_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$go_dir/../.." && pwd)"

export ASTRID_LIB_DIR="${ASTRID_LIB_DIR:-${CARGO_TARGET_DIR:-$root/target}/release}"
export ASTRID_INCLUDE_DIR="${ASTRID_INCLUDE_DIR:-$root/include}"
export ASTRID_CAPSULES="${ASTRID_CAPSULES:-$root/build/capsules}"

if ! command -v go >/dev/null 2>&1; then
    if [ -x /usr/local/go/bin/go ]; then
        export PATH="/usr/local/go/bin:$PATH"
    else
        echo "go: no Go toolchain on PATH; installing Debian's golang-go" >&2
        apt-get update -qq && apt-get install -y -qq golang-go >/dev/null
    fi
fi
if ! command -v cc >/dev/null 2>&1 && ! command -v gcc >/dev/null 2>&1; then
    apt-get update -qq && apt-get install -y -qq gcc libc6-dev >/dev/null
fi

for f in "$ASTRID_LIB_DIR/libastrid.so" "$ASTRID_INCLUDE_DIR/astrid.h" "$ASTRID_CAPSULES/hello/Capsule.toml"; do
    if [ ! -e "$f" ]; then
        echo "go: missing $f (build the library and capsules first, or set ASTRID_LIB_DIR / ASTRID_INCLUDE_DIR / ASTRID_CAPSULES)" >&2
        exit 2
    fi
done

export CGO_ENABLED=1
export CGO_CFLAGS="-I$ASTRID_INCLUDE_DIR ${CGO_CFLAGS:--O2 -g}"
export CGO_LDFLAGS="-L$ASTRID_LIB_DIR -Wl,-rpath,$ASTRID_LIB_DIR ${CGO_LDFLAGS:-}"
