"""Shared fixtures. The library comes from ASTRID_LIB, else ASTRID_LIB_DIR, else
the repository's target/release; capsules from ASTRID_CAPSULES, else
build/capsules (see test.sh)."""

from __future__ import annotations

import os
import pathlib
from typing import Iterator

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[3]

if not os.environ.get("ASTRID_LIB"):
    target = os.environ.get("CARGO_TARGET_DIR") or str(ROOT / "target")
    lib_dir = os.environ.get("ASTRID_LIB_DIR") or os.path.join(target, "release")
    os.environ["ASTRID_LIB"] = os.path.join(lib_dir, "libastrid.so")

import astrid  # noqa: E402  (after ASTRID_LIB is settled)

CAPSULES = pathlib.Path(os.environ.get("ASTRID_CAPSULES") or ROOT / "build" / "capsules")
INCLUDE = pathlib.Path(os.environ.get("ASTRID_INCLUDE_DIR") or ROOT / "include")


@pytest.fixture
def capsules() -> pathlib.Path:
    return CAPSULES


@pytest.fixture
def include_dir() -> pathlib.Path:
    return INCLUDE


@pytest.fixture
def rt() -> Iterator[astrid.Runtime]:
    """A runtime with short deadlines, closed after the test."""
    with astrid.Runtime(timeout_ms=10_000, unload_grace_ms=2000) as runtime:
        yield runtime


@pytest.fixture
def hello(rt: astrid.Runtime) -> astrid.Capsule:
    return rt.load(CAPSULES / "hello", principal="alice")
