"""The ABI check refuses a mismatched library (a fake one built here with cc)."""

from __future__ import annotations

import os
import pathlib
import shutil
import subprocess
import sys

import astrid
import pytest

FAKE = """
#include <stdint.h>
uint32_t astrid_abi_version(void) { return 999; }
const char *astrid_version(void) { return "9.9.9"; }
"""


@pytest.fixture(scope="module")
def fake_lib(tmp_path_factory) -> pathlib.Path:
    cc = shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
    if cc is None:
        pytest.fail("a C compiler is needed to build the fake library")
    d = tmp_path_factory.mktemp("fake")
    (d / "fake.c").write_text(FAKE)
    out = d / "libastrid.so"
    subprocess.run([cc, "-shared", "-fPIC", "-o", str(out), str(d / "fake.c")], check=True)
    return out


@pytest.fixture(scope="module")
def not_astrid(tmp_path_factory) -> pathlib.Path:
    cc = shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
    d = tmp_path_factory.mktemp("other")
    (d / "other.c").write_text("int something_else(void) { return 1; }\n")
    out = d / "libother.so"
    subprocess.run([cc, "-shared", "-fPIC", "-o", str(out), str(d / "other.c")], check=True)
    return out


def test_load_library_refuses_mismatched_abi(fake_lib: pathlib.Path) -> None:
    before = astrid.library()
    with pytest.raises(astrid.AbiMismatchError) as info:
        astrid.load_library(fake_lib)
    err = info.value
    assert err.found == 999 and err.expected == astrid.ABI_VERSION == 2 and err.path == str(fake_lib)
    assert "ABI version 999" in str(err) and isinstance(err, ImportError)
    assert astrid.library() is before  # the working library stays in use


def test_runtime_refuses_mismatched_library(fake_lib: pathlib.Path) -> None:
    with pytest.raises(astrid.AbiMismatchError):
        astrid.Runtime(library=fake_lib)


def test_import_fails_with_mismatched_astrid_lib(fake_lib: pathlib.Path) -> None:
    env = dict(os.environ, ASTRID_LIB=str(fake_lib))
    code = "import astrid"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode != 0
    assert "AbiMismatchError" in out.stderr and "ABI version 999" in out.stderr


def test_missing_or_foreign_library(tmp_path: pathlib.Path, not_astrid: pathlib.Path) -> None:
    with pytest.raises(astrid.LibraryNotFoundError):
        astrid.load_library(tmp_path / "libnothing.so")
    with pytest.raises(astrid.LibraryNotFoundError) as info:
        astrid.load_library(not_astrid)
    assert "not an astrid library" in str(info.value)


def test_library_without_every_function_of_the_header_is_refused(tmp_path: pathlib.Path) -> None:
    # The right ABI number, but not the functions of this header: refused
    # when loaded, not at the first call of a missing function.
    cc = shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
    assert cc is not None
    (tmp_path / "old.c").write_text(FAKE.replace("999", str(astrid.ABI_VERSION)))
    out = tmp_path / "libastrid.so"
    subprocess.run([cc, "-shared", "-fPIC", "-o", str(out), str(tmp_path / "old.c")], check=True)
    before = astrid.library()
    with pytest.raises(astrid.LibraryNotFoundError) as info:
        astrid.load_library(out)
    assert "lacks astrid_runtime_config_init" in str(info.value)
    assert astrid.library() is before


def test_explicit_path_to_the_real_library() -> None:
    real = astrid.library().path
    lib = astrid.load_library(real)
    assert lib.abi_version() == 2
    with astrid.Runtime(library=lib) as rt:
        assert rt.library is lib


def test_search_order_prefers_astrid_lib(monkeypatch, tmp_path: pathlib.Path) -> None:
    monkeypatch.setenv("ASTRID_LIB", str(tmp_path / "chosen.so"))
    assert astrid.candidate_paths() == [str(tmp_path / "chosen.so")]
    monkeypatch.delenv("ASTRID_LIB")
    paths = astrid.candidate_paths()
    assert paths and paths[-1]  # falls back to the system loader's search


def test_library_next_to_the_package_is_found(tmp_path: pathlib.Path) -> None:
    # A copy of the package with libastrid.so beside it, imported without
    # ASTRID_LIB: the search finds (and ABI-checks at import) the one beside it.
    package = pathlib.Path(astrid.__file__).parent
    shutil.copytree(package, tmp_path / "astrid", ignore=shutil.ignore_patterns("__pycache__", "*.so"))
    os.symlink(astrid.library().path, tmp_path / "astrid" / "libastrid.so")
    env = {k: v for k, v in os.environ.items() if k != "ASTRID_LIB"}
    env["PYTHONPATH"] = str(tmp_path)
    code = "import astrid; print(astrid._native._current.path); print(astrid.Runtime().library.abi_version())"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == [str(tmp_path / "astrid" / "libastrid.so"), "2"]
