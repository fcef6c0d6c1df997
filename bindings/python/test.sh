#!/usr/bin/env bash
# Tests of the Python binding: installs what it needs (Python 3 with venv, a C
# compiler for the ABI / layout tests, pytest), installs the package with
# `pip install bindings/python` into a fresh virtualenv, and runs every test
# (including the two examples) against the built library.
#
#   env: ASTRID_LIB_DIR      dir holding libastrid.so (default ${CARGO_TARGET_DIR:-<root>/target}/release)
#        ASTRID_INCLUDE_DIR  dir holding astrid.h     (default <root>/include)
#        ASTRID_CAPSULES     the built capsules       (default <root>/build/capsules)
#        PYTHON              the interpreter to use   (default python3)
#
# Ends with the line `python: N passed, M failed[, K skipped]`; exits non-zero
# on any failure.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
export ASTRID_LIB_DIR="${ASTRID_LIB_DIR:-${CARGO_TARGET_DIR:-$root/target}/release}"
export ASTRID_INCLUDE_DIR="${ASTRID_INCLUDE_DIR:-$root/include}"
export ASTRID_CAPSULES="${ASTRID_CAPSULES:-$root/build/capsules}"
export ASTRID_LIB="$ASTRID_LIB_DIR/libastrid.so"
PYTHON="${PYTHON:-python3}"

apt_updated=0
apt_install() {
    if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
        echo "python: missing $*; install it (no apt-get as root here)" >&2
        exit 1
    fi
    if [ "$apt_updated" = 0 ]; then
        apt-get update -qq >/dev/null
        apt_updated=1
    fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

command -v "$PYTHON" >/dev/null || apt_install python3 python3-venv python3-pip
"$PYTHON" -c 'import venv, ensurepip' 2>/dev/null || apt_install python3-venv
command -v cc >/dev/null || apt_install gcc libc6-dev

for need in "$ASTRID_LIB" "$ASTRID_INCLUDE_DIR/astrid.h" "$ASTRID_CAPSULES/hello/Capsule.toml"; do
    if [ ! -e "$need" ]; then
        echo "python: $need is missing (build the library and capsules first: scripts/demo.sh)" >&2
        echo "python: 0 passed, 1 failed"
        exit 1
    fi
done

work="$(mktemp -d "${TMPDIR:-/tmp}/astrid-python-test.XXXXXX")"
trap 'rm -rf "$work"' EXIT
"$PYTHON" -m venv "$work/venv"
venv_py="$work/venv/bin/python"
# prometheus-client parses the metrics text in test_metrics.py.
"$venv_py" -m pip install -q --disable-pip-version-check "pytest>=7" "prometheus-client>=0.20"
# The real install path users take (`pip install bindings/python`), from a
# copy so the build leaves no build/ or *.egg-info in the source tree.
mkdir "$work/pkg"
cp -r "$here/pyproject.toml" "$here/README.md" "$here/src" "$work/pkg/"
"$venv_py" -m pip install -q --disable-pip-version-check "$work/pkg"

cd "$here"
status=0
# -p no:cacheprovider: leave no .pytest_cache in the source tree.
PYTHONDONTWRITEBYTECODE=1 "$venv_py" -m pytest -p no:cacheprovider -q -rs --junitxml="$work/report.xml" tests \
    || status=$?

summary="$("$venv_py" - "$work/report.xml" <<'EOF'
import sys
import xml.etree.ElementTree as ET

try:
    root = ET.parse(sys.argv[1]).getroot()
except (OSError, ET.ParseError):
    print("0 0 0")
    raise SystemExit
suites = [root] if root.tag == "testsuite" else list(root.iter("testsuite"))
total = sum(int(s.get("tests", 0)) for s in suites)
failed = sum(int(s.get("failures", 0)) + int(s.get("errors", 0)) for s in suites)
skipped = sum(int(s.get("skipped", 0)) for s in suites)
print(total - failed - skipped, failed, skipped)
EOF
)"
read -r passed failed skipped <<<"$summary"
if [ "$passed" = 0 ] && [ "$failed" = 0 ]; then
    failed=1 # no test ran: a failure, not a pass
fi
if [ "$status" != 0 ] && [ "$failed" = 0 ]; then
    failed=1 # pytest failed outside any test (collection, usage)
fi
line="python: $passed passed, $failed failed"
[ "$skipped" != 0 ] && line="$line, $skipped skipped"
echo "$line"
[ "$failed" = 0 ]
