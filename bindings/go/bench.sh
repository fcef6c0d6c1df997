#!/usr/bin/env bash
# Benchmarks of the Go binding (B12, B13): see bench/main.go. Not tests:
# nothing here asserts a timing. Extra arguments go to the bench program
# (-rounds N, -batch-ms MS, -only B12|B13).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
cd "$go_dir"
bin="$(mktemp -d)"
trap 'rm -rf "$bin"' EXIT
go build -o "$bin/bench" ./bench
"$bin/bench" "$@" "$ASTRID_CAPSULES"
