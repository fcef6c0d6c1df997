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
