"""Capsules with a ``run`` loop: wait_ready, runs_loop, failed loops, the
watchdog load option, and the runloop service answering host publishes."""

from __future__ import annotations

import time
from typing import List

import astrid
import pytest


def wait_for(predicate, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.005)
    return predicate()


def test_service_is_ready_and_answers_host_publishes(rt: astrid.Runtime, capsules) -> None:
    service = rt.load(capsules / "runloop")
    assert service.runs_loop is True
    service.wait_ready(5000)
    service.wait_ready(0)  # ready stays ready
    replies: List[object] = []
    with rt.subscribe("svc.out", lambda m: replies.append(m.json())):
        rt.publish("svc.in", {"n": 1})
        assert wait_for(lambda: len(replies) == 1)
        rt.publish("svc.in", 2, principal="alice")
        assert wait_for(lambda: len(replies) == 2)
    assert replies == [{"echo": {"n": 1}, "as": "-"}, {"echo": 2, "as": "alice"}]  # runs as the message's principal


def test_capsule_without_a_loop_is_ready_at_once(hello: astrid.Capsule) -> None:
    assert hello.runs_loop is False
    started = time.monotonic()
    hello.wait_ready(0)
    hello.wait_ready(10_000)
    assert time.monotonic() - started < 1.0


def test_a_loop_that_returns_fails_wait_ready_with_a_trap(rt: astrid.Runtime, capsules) -> None:
    broken = rt.load(capsules / "runloop", config={"MODE": "return"})
    assert broken.runs_loop
    with pytest.raises(astrid.TrapError) as info:
        broken.wait_ready(5000)
    assert info.value.code == -12 and "run loop" in info.value.message
    with pytest.raises(astrid.TrapError):
        broken.wait_ready(0)  # not restarted
    assert broken.call("anything").action == "ok"  # direct calls still work


def test_wait_ready_times_out_and_closed_capsules_say_closed(rt: astrid.Runtime, capsules) -> None:
    late = rt.load(capsules / "runloop", config={"MODE": "late-ready"})
    with pytest.raises(astrid.DeadlineExceededError):
        late.wait_ready(100)
    late.close()
    with pytest.raises(astrid.ClosedError):
        late.wait_ready(0)


def test_watchdog_option_stops_a_spinning_loop_unless_off(rt: astrid.Runtime, capsules) -> None:
    spinning = rt.load(capsules / "runloop", config={"MODE": "spin"}, watchdog_ms=100)
    spinning.wait_ready(5000)

    def failed() -> bool:
        try:
            spinning.wait_ready(0)
        except astrid.DeadlineExceededError:
            return True
        return False

    assert wait_for(failed, 5.0)  # three 100 ms windows without waiting: interrupted
    spinning.close()

    exempt = rt.load(capsules / "runloop", config={"MODE": "spin"}, watchdog_ms=astrid.WATCHDOG_OFF)
    exempt.wait_ready(5000)
    time.sleep(0.6)  # twice what stopped the loop above
    exempt.wait_ready(0)  # still running
    started = time.monotonic()
    exempt.close()
    assert time.monotonic() - started < 2.0  # unload still stops it
