"""Close twice, use after close, context managers, garbage collection."""

from __future__ import annotations

import gc
import subprocess
import sys
import textwrap

import astrid
import pytest


def test_close_twice_and_use_after_close(capsules) -> None:
    rt = astrid.Runtime()
    capsule = rt.load(capsules / "hello")
    capsule.close()
    capsule.close()  # harmless
    assert capsule.closed
    with pytest.raises(astrid.ClosedError) as info:
        capsule.call("noop")
    assert info.value.code == -13 and "capsule is closed" in str(info.value)
    with pytest.raises(astrid.ClosedError):
        capsule.has_capability("net")
    with pytest.raises(astrid.ClosedError):
        capsule.cancel()
    with pytest.raises(astrid.ClosedError):
        with capsule:
            pass
    rt.close()
    rt.close()  # harmless
    assert rt.closed
    with pytest.raises(astrid.ClosedError):
        rt.load(capsules / "hello")
    with pytest.raises(astrid.ClosedError):
        rt.set_gate(lambda r: True)
    with pytest.raises(astrid.ClosedError):
        rt.mount_vfs("cwd", object())
    with pytest.raises(astrid.ClosedError):
        with rt:
            pass


def test_closing_the_runtime_closes_its_capsules(capsules) -> None:
    with astrid.Runtime() as rt:
        a = rt.load(capsules / "hello")
        b = rt.load(capsules / "hello")
        assert a.call("noop").action == "continue"
    assert rt.closed and a.closed and b.closed
    with pytest.raises(astrid.ClosedError):
        a.call("noop")
    a.close()


def test_context_managers_close_on_exceptions(capsules) -> None:
    with pytest.raises(ZeroDivisionError):
        with astrid.Runtime() as rt, rt.load(capsules / "hello") as capsule:
            1 / 0
    assert rt.closed and capsule.closed


def test_library_side_closed_handles(capsules) -> None:
    # A stale handle reaching the library (not the binding's own check) is
    # also a ClosedError: handles are registry ids, never dereferenced.
    rt = astrid.Runtime()
    capsule = rt.load(capsules / "hello")
    handle = capsule._h
    assert rt._lib.astrid_capsule_unload(handle, None) == 0
    with pytest.raises(astrid.ClosedError):
        capsule.call("noop")
    # Formerly without an error object: now raised with the library's message.
    with pytest.raises(astrid.ClosedError) as info:
        capsule.cancel()
    assert "capsule" in info.value.message and info.value.code == -13
    capsule.close()  # already unloaded by the library: still idempotent
    rt.close()


def test_dropped_objects_are_released(capsules) -> None:
    base = astrid.live_callbacks()
    rt = astrid.Runtime()
    rt.set_log_callback(lambda r: None)
    capsule = rt.load(capsules / "hello")
    capsule.call("greet", b"{}")
    del capsule, rt
    gc.collect()
    assert astrid.live_callbacks() == base


def test_open_runtime_at_exit_is_closed_cleanly(capsules) -> None:
    # A runtime left open with Python callbacks must not crash the interpreter at exit.
    script = textwrap.dedent(
        f"""
        import astrid
        rt = astrid.Runtime()
        rt.set_log_callback(lambda r: None)
        rt.set_audit_callback(lambda e: None)
        capsule = rt.load({str(capsules / "hello")!r})
        capsule.call("greet", b"{{}}")
        keep = (rt, capsule)
        print("done")
        """
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "done"
