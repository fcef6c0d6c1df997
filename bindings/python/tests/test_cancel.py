"""Per-call control: a call's own deadline, fuel and cancel token."""

from __future__ import annotations

import threading
import time

import pytest

import astrid


def test_a_token_ends_its_call_and_not_a_concurrent_one(capsules) -> None:
    with astrid.Runtime(timeout_ms=20_000, fuel=1 << 50) as rt, rt.load(capsules / "hostile") as hostile:
        other: dict = {}

        def sleeper() -> None:
            started = time.monotonic()
            try:
                hostile.call("sleep", timeout=1.5)
                other["outcome"] = "returned"
            except astrid.AstridError as e:
                other["outcome"] = type(e).__name__
            other["took"] = time.monotonic() - started

        t = threading.Thread(target=sleeper)
        t.start()
        with astrid.Cancel() as cancel:
            threading.Timer(0.2, cancel.fire).start()
            started = time.monotonic()
            with pytest.raises(astrid.CancelledError):
                hostile.call("loop", cancel=cancel)
            assert time.monotonic() - started < 1.0
            assert cancel.fired
            # A fired token keeps later calls from running at all.
            with pytest.raises(astrid.CancelledError, match="before it started"):
                hostile.call("ok", cancel=cancel)
        t.join()
        assert other["took"] >= 1.4, other
        assert other["outcome"] != "CancelledError", other
        assert hostile.call("ok").data == "harmless"


def test_deadline_and_fuel_per_call(capsules) -> None:
    with astrid.Runtime(timeout_ms=30_000, fuel=1 << 50) as rt, rt.load(capsules / "hostile") as hostile:
        started = time.monotonic()
        with pytest.raises(astrid.DeadlineExceededError, match="200 ms"):
            hostile.call("loop", timeout=0.2)
        assert time.monotonic() - started < 0.7
        with pytest.raises(astrid.OutOfFuelError, match="2000000 units"):
            hostile.call("loop", fuel=2_000_000)
        with pytest.raises(ValueError):
            hostile.call("ok", timeout=0)
        with pytest.raises(ValueError):
            hostile.call("ok", fuel=-1)
        assert hostile.call("ok", timeout=5, fuel=10_000_000).data == "harmless"


def test_a_closed_token_is_refused(capsules) -> None:
    with astrid.Runtime() as rt, rt.load(capsules / "hostile") as hostile:
        cancel = astrid.Cancel()
        cancel.close()
        cancel.close()
        assert not cancel.fired
        with pytest.raises(astrid.ClosedError):
            cancel.fire()
        with pytest.raises(astrid.ClosedError):
            hostile.call("ok", cancel=cancel)
        assert "closed" in repr(cancel)


def test_call_ids_tie_results_logs_audit_and_errors(capsules) -> None:
    logs: list = []
    events: list = []
    rt = astrid.Runtime(timeout_ms=5000)
    rt.set_log_callback(logs.append)
    rt.set_audit_callback(events.append)
    seen_in_callback: list = []
    rt.set_gate(lambda request: seen_in_callback.append((request.call_id, astrid.callback_call_id())) or True)
    with rt.load(capsules / "hello", principal="alice") as hello, rt.load(capsules / "hostile") as hostile:
        first = hello.call("greet", b'{"name":"one"}')
        second = hello.call("greet", b'{"name":"two"}')
        assert first.action and second.action
        assert first.call_id != 0 and second.call_id != 0 and first.call_id != second.call_id
        with pytest.raises(astrid.TrapError) as failed:
            hostile.call("trap")
        assert failed.value.call_id not in (0, first.call_id, second.call_id)
    rt.close()  # flushes the audit queue
    by_id = {r.call_id for r in logs if "greeting" in r.message}
    assert by_id == {first.call_id, second.call_id}
    assert {e.call_id for e in events if e.call == "sys.get-config"} == {first.call_id, second.call_id}
    assert astrid.callback_call_id() == 0


def test_a_dispatched_deny_is_audited_with_its_reason(capsules) -> None:
    events: list = []
    rt = astrid.Runtime()
    rt.set_audit_callback(events.append)
    with rt.load(capsules / "ipcprobe"):
        rt.publish("deny.in", '"d"')
        rt.publish("chain.stop", '"s"')
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not (
            any(e.call == "guest.deny" for e in events) and any(e.call == "guest.final" for e in events)
        ):
            time.sleep(0.01)
    rt.close()
    deny = next(e for e in events if e.call == "guest.deny")
    assert deny.outcome is astrid.AuditOutcome.DENIED and deny.reason == "nope" and deny.call_id != 0
    assert next(e for e in events if e.call == "guest.final").outcome is astrid.AuditOutcome.FINAL


def test_load_policy_per_capsule(capsules) -> None:
    from memfs import MemFs

    first, second = MemFs(), MemFs()
    first.files["ws/who.txt"] = bytearray(b"first")
    second.files["ws/who.txt"] = bytearray(b"second")
    with astrid.Runtime() as rt:
        a = rt.load(capsules / "fsprobe", cwd_vfs=first)
        b = rt.load(capsules / "fsprobe", cwd_vfs=second)
        assert a.call("read-file", b"ws/who.txt").data == "first"
        assert b.call("read-file", b"ws/who.txt").data == "second"
        base = astrid.live_callbacks()
        with pytest.raises(astrid.InvalidArgumentError):
            rt.load(capsules / "fsprobe", cwd_vfs=MemFs(), workspace_root=capsules)
        with pytest.raises(astrid.InvalidArgumentError):
            rt.load(capsules / "fsprobe", net_flags=astrid.RuntimeFlags.INLINE_CALLBACKS)
        # A refused load keeps no provider alive.
        assert astrid.live_callbacks() == base
        c = rt.load(capsules / "netprobe", net_flags=astrid.RuntimeFlags.ALLOW_LOOPBACK)
        c.close()
        a.close()
        b.close()
