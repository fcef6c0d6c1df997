"""Errors map to AstridError subclasses carrying the right code."""

from __future__ import annotations

import astrid
import pytest

MANIFEST = '[package]\nname = "b"\nversion = "1.0.0"\n'


def test_bad_manifest_is_manifest_error(rt: astrid.Runtime) -> None:
    with pytest.raises(astrid.ManifestError) as info:
        rt.load_bytes(b"definitely not wasm", "[package")
    err = info.value
    assert isinstance(err, astrid.AstridError)
    assert err.code == -3 == astrid.ManifestError.CODE
    assert err.message and "status -3" in str(err)


def test_garbage_wasm_is_compile_error(rt: astrid.Runtime) -> None:
    with pytest.raises(astrid.CompileError) as info:
        rt.load_bytes(b"definitely not wasm", MANIFEST)
    assert info.value.code == -4
    assert info.value.message


def test_missing_directory_is_not_found(rt: astrid.Runtime, tmp_path) -> None:
    with pytest.raises(astrid.NotFoundError) as info:
        rt.load(tmp_path / "nothing-here")
    assert info.value.code == -6


def test_manifest_file_error(rt: astrid.Runtime, tmp_path) -> None:
    (tmp_path / "Capsule.toml").write_text("[package]\nname = 'x'\nbogus_field = 1\n")
    with pytest.raises(astrid.ManifestError):
        rt.load(tmp_path)


def test_bad_import_is_link_error(rt: astrid.Runtime, capsules) -> None:
    with pytest.raises(astrid.LinkError) as info:
        rt.load(capsules / "bad-import")
    assert info.value.code == -5


def test_invalid_utf8_and_arguments(rt: astrid.Runtime) -> None:
    with pytest.raises(astrid.Utf8Error) as info:
        rt.load_bytes(b"x", b'[package]\nname="\xff"')
    assert info.value.code == -2
    with pytest.raises(astrid.InvalidArgumentError):
        astrid.Runtime(flags=0x80)


def test_guest_failures(capsules) -> None:
    with astrid.Runtime(timeout_ms=400, fuel=1 << 50) as rt, rt.load(capsules / "hostile") as hostile:
        with pytest.raises(astrid.TrapError) as trap:
            hostile.call("trap")
        assert trap.value.code == -12
        with pytest.raises(astrid.TrapError):
            hostile.call("panic")
        with pytest.raises(astrid.DeadlineExceededError) as slow:
            hostile.call("loop")
        assert isinstance(slow.value, TimeoutError) and slow.value.code == -8
        with pytest.raises(astrid.ResourceLimitError):
            hostile.call("membomb")
        assert hostile.call("ok").data == "harmless"  # the capsule survives all of it


def test_out_of_fuel(capsules) -> None:
    with astrid.Runtime(timeout_ms=10_000, fuel=100_000) as rt, rt.load(capsules / "hostile") as hostile:
        with pytest.raises(astrid.OutOfFuelError) as info:
            hostile.call("loop")
        assert info.value.code == -10


def test_error_class_table() -> None:
    expected = {
        -1: astrid.InvalidArgumentError,
        -2: astrid.Utf8Error,
        -3: astrid.ManifestError,
        -4: astrid.CompileError,
        -5: astrid.LinkError,
        -6: astrid.NotFoundError,
        -7: astrid.DeniedError,
        -8: astrid.DeadlineExceededError,
        -9: astrid.CancelledError,
        -10: astrid.OutOfFuelError,
        -11: astrid.ResourceLimitError,
        -12: astrid.TrapError,
        -13: astrid.ClosedError,
        -14: astrid.ReentrantError,
        -15: astrid.IoError,
        -16: astrid.PanicError,
        -17: astrid.InternalError,
    }
    for code, cls in expected.items():
        assert astrid.error_class(code) is cls and cls.CODE == code
        assert issubclass(cls, astrid.AstridError)
    assert astrid.error_class(-99) is astrid.AstridError
