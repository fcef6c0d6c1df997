#!/usr/bin/env bash
# Tests of the Go binding: go vet, go test (plain and -race), both examples
# with their output checked, and a build through pkg-config. Ends with
# "go: N passed, M failed" (N and M count the go test cases of both runs,
# subtests included, plus one per other check) and fails if M > 0.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
cd "$go_dir"

out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT
passed=0
failed=0

check() { # check NAME COMMAND...: one pass or one failure
    local name="$1"
    shift
    if "$@"; then
        passed=$((passed + 1))
    else
        failed=$((failed + 1))
        echo "go: FAIL $name" >&2
    fi
}

# Counts one `go test -v` run; a run that failed without a failing test
# (build error, crash) counts as one failure.
count_run() {
    local log="$1" status="$2" p f
    p=$(grep -cE '^\s*--- PASS' "$log" || true)
    f=$(grep -cE '^\s*--- FAIL' "$log" || true)
    if [ "$status" -ne 0 ] && [ "$f" -eq 0 ]; then f=1; fi
    passed=$((passed + p))
    failed=$((failed + f))
    if grep -qE '^\s*--- SKIP' "$log"; then
        echo "go: skipped:" && grep -E '^\s*--- SKIP' -A1 "$log" || true
    fi
}

echo "== gofmt, go vet"
gofmt_clean() { [ -z "$(gofmt -l .)" ] || { gofmt -l . >&2; false; }; }
check "gofmt" gofmt_clean
check "go vet" go vet ./...

echo "== go test"
set +e
go test -count=1 -v ./... 2>&1 | tee "$out/test.log" | grep -E '^\s*--- |^(ok|FAIL|PASS)|^\s*\S+\.go:[0-9]+: '
status=${PIPESTATUS[0]}
set -e
count_run "$out/test.log" "$status"

echo "== go test -race"
set +e
go test -race -count=1 -v ./... 2>&1 | tee "$out/race.log" | grep -E '^\s*--- |^(ok|FAIL|PASS)|^\s*\S+\.go:[0-9]+: |DATA RACE'
status=${PIPESTATUS[0]}
set -e
count_run "$out/race.log" "$status"

echo "== examples"
go build -o "$out/hello" ./examples/hello
go build -o "$out/vfs" ./examples/vfs
hello_ok() {
    "$out/hello" "$ASTRID_CAPSULES/hello" Gopher | tee "$out/hello.out" &&
        grep -q '^astrid .* (ABI 2)$' "$out/hello.out" &&
        grep -q '^loaded capsule hello (id ' "$out/hello.out" &&
        grep -qF '  [info] hello: greeting Gopher on behalf of alice' "$out/hello.out" &&
        grep -qF 'result: action=final data={"message":"Hello, Gopher!","principal":"alice"' "$out/hello.out"
}
vfs_ok() {
    "$out/vfs" "$ASTRID_CAPSULES/fsprobe" | tee "$out/vfs.out" &&
        grep -qF 'write-file(ws/public/hello.txt, hello from the capsule) -> ok ok' "$out/vfs.out" &&
        grep -qF 'read-file(ws/public/hello.txt) -> ok hello from the capsule' "$out/vfs.out" &&
        grep -qF 'write-file(ws/secret.txt, not allowed) -> err capability-denied' "$out/vfs.out" &&
        grep -qF '  audit: fs.write-file cwd://ws/secret.txt denied (gate: writes only under ws/public)' "$out/vfs.out" &&
        grep -qF 'readdir(ws) -> ok public' "$out/vfs.out" &&
        grep -qF 'memfs released' "$out/vfs.out"
}
check "example hello" hello_ok
check "example vfs" vfs_ok

echo "== build with -tags astrid_pkgconfig"
if ! command -v pkg-config >/dev/null 2>&1; then
    (apt-get update -qq && apt-get install -y -qq pkg-config >/dev/null) || true
fi
pkgconfig_ok() {
    mkdir -p "$out/pc"
    cat >"$out/pc/astrid.pc" <<PC
Name: astrid
Description: embeddable runtime for Astrid capsules
Version: $("$out/hello" /nonexistent 2>/dev/null | sed -n 's/^astrid \([^ ]*\) .*/\1/p')
Cflags: -I$ASTRID_INCLUDE_DIR
Libs: -L$ASTRID_LIB_DIR -Wl,-rpath,$ASTRID_LIB_DIR -lastrid
PC
    CGO_CFLAGS="" CGO_LDFLAGS="" PKG_CONFIG_PATH="$out/pc" \
        go build -tags astrid_pkgconfig -o "$out/hello-pc" ./examples/hello &&
        "$out/hello-pc" "$ASTRID_CAPSULES/hello" pc | grep -qF '"Hello, pc!"'
}
if command -v pkg-config >/dev/null 2>&1; then
    check "pkg-config build" pkgconfig_ok
else
    echo "go: pkg-config unavailable; the astrid_pkgconfig build was not checked"
fi

echo "go: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
