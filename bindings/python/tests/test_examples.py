"""The examples run and print what examples/c/hello.c and vfs.c print."""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys

EXAMPLES = pathlib.Path(__file__).resolve().parents[1] / "examples"


def run(script: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(EXAMPLES / script), *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=dict(os.environ),
    )


def test_hello_example(capsules) -> None:
    out = run("hello.py", str(capsules / "hello"), "Example")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].startswith("astrid ") and lines[0].endswith("(ABI 2)")
    assert lines[1].startswith("loaded capsule hello (id ")
    assert 'calling greet with {"name":"Example"}' in lines
    assert "  [info] hello: greeting Example on behalf of alice" in lines
    assert "  [info] hello: hello capsule wrote this line to stdout" in lines
    assert lines[-1].startswith('result: action=final data={"message":"Hello, Example!","principal":"alice"')


def test_hello_example_reports_errors(tmp_path: pathlib.Path) -> None:
    out = run("hello.py", str(tmp_path / "missing"))
    assert out.returncode == 1
    assert "failed (-6)" in out.stderr


def test_vfs_example(capsules) -> None:
    out = run("vfs.py", str(capsules / "fsprobe"))
    assert out.returncode == 0, out.stdout + out.stderr
    text = out.stdout
    assert "gate: fsprobe asks to write cwd://ws/public/hello.txt -> allow" in text
    assert "read-file(ws/public/hello.txt) -> ok hello from the capsule" in text
    assert "gate: fsprobe asks to write cwd://ws/secret.txt -> deny" in text
    assert "not allowed) -> err capability-denied" in text
    assert "audit: fs.write-file cwd://ws/secret.txt denied (gate: writes only under ws/public)" in text
    assert "readdir(ws) -> ok public" in text
