"""Host subscriptions to the IPC bus."""

from __future__ import annotations

import threading
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


def test_subscription_receives_host_publishes_in_order(rt: astrid.Runtime) -> None:
    got: List[astrid.Message] = []
    threads = set()

    def on_message(message: astrid.Message) -> None:
        threads.add(threading.get_ident())
        got.append(message)

    with rt.subscribe("orders.*", on_message) as sub:
        assert sub.pattern == "orders.*" and not sub.closed
        for i in range(100):
            rt.publish("orders.created", {"n": i})
        rt.publish("other.topic", {"n": -1})  # not matched
        rt.publish("orders.eu.paid", '{"raw": true}')
        assert wait_for(lambda: len(got) == 101)
    assert [m.json()["n"] for m in got[:100]] == list(range(100))
    assert got[100].topic == "orders.eu.paid" and got[100].json() == {"raw": True}
    seqs = [m.sequence for m in got]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    first = got[0]
    assert first.topic == "orders.created"
    assert first.attribution is astrid.Attribution.SYSTEM and first.principal is None
    assert first.depth == 0 and first.dropped == 0 and first.lagged == 0
    assert first.source_id and first.timestamp_ms > 1_600_000_000_000
    assert threading.get_ident() not in threads  # delivered on the subscription's own thread
    assert rt.callback_errors == []


def test_publish_as_principal_and_close_stops_delivery(rt: astrid.Runtime) -> None:
    got: List[astrid.Message] = []
    sub = rt.subscribe("*", got.append)
    rt.publish("a.b", [1, 2], principal="alice")
    assert wait_for(lambda: len(got) == 1)
    assert got[0].attribution is astrid.Attribution.VERIFIED and got[0].principal == "alice"
    assert got[0].json() == [1, 2]
    base = astrid.live_callbacks()
    sub.close()
    sub.close()  # harmless
    assert sub.closed and astrid.live_callbacks() == base - 1
    rt.publish("a.b", 1)
    time.sleep(0.1)
    assert len(got) == 1


def test_bad_topic_pattern_and_payload(rt: astrid.Runtime) -> None:
    with pytest.raises(astrid.InvalidArgumentError):
        rt.publish("has space", 1)
    with pytest.raises(astrid.InvalidArgumentError):
        rt.publish("a.*", 1)
    with pytest.raises(astrid.InvalidArgumentError):
        rt.publish("a.b", "not json")
    base = astrid.live_callbacks()
    with pytest.raises(astrid.InvalidArgumentError):
        rt.subscribe("bad pattern", lambda m: None)
    assert astrid.live_callbacks() == base


def test_raising_subscriber_keeps_receiving(rt: astrid.Runtime) -> None:
    got: List[int] = []

    def on_message(message: astrid.Message) -> None:
        n = message.json()
        got.append(n)
        if n % 2:
            raise ValueError(n)

    with rt.subscribe("nums", on_message):
        for i in range(6):
            rt.publish("nums", i)
        assert wait_for(lambda: len(got) == 6)
    assert got == list(range(6))
    assert sorted(e.args[0] for e in rt.take_callback_errors()) == [1, 3, 5]


def test_subscription_closed_with_its_runtime() -> None:
    rt = astrid.Runtime()
    sub = rt.subscribe("x", lambda m: None)
    rt.close()
    assert sub.closed
    with pytest.raises(astrid.ClosedError):
        rt.publish("x", 1)
    with pytest.raises(astrid.ClosedError):
        rt.subscribe("x", lambda m: None)


def test_capsule_publishes_and_interceptors_reach_the_host(rt: astrid.Runtime, capsules) -> None:
    got: List[astrid.Message] = []
    with rt.subscribe("out.*", got.append):
        probe = rt.load(capsules / "ipcprobe")
        # A capsule's own publish, from a call.
        assert probe.call("publish", 'out.direct\n{"from":"call"}').action == "ok"
        assert wait_for(lambda: len(got) == 1)
        # A host publish on echo.in runs the capsule's interceptor, which republishes on out.echo.
        rt.publish("echo.in", {"n": 1})
        assert wait_for(lambda: len(got) == 2)
        # The interceptor runs as the message's verified principal.
        rt.publish("who.x", 0, principal="dave")
        assert wait_for(lambda: len(got) == 3)
    direct, echo, who = got
    assert (direct.topic, direct.json(), direct.source_id) == ("out.direct", {"from": "call"}, probe.id)
    assert (echo.topic, echo.json(), echo.source_id) == ("out.echo", {"n": 1}, probe.id)
    assert echo.depth == 1  # one more than the host message it handled
    assert (who.topic, who.json(), who.principal) == ("out.who", "dave", "dave")
    assert rt.callback_errors == []


def test_publish_rate_is_configurable(capsules) -> None:
    # 1000 bytes per second, one second deep: 200-byte publishes run out after about five.
    with astrid.Runtime(ipc_publish_bytes_per_sec=1000) as rt, rt.load(capsules / "ipcprobe") as probe:
        result = probe.call("storm", "out.storm\n20\n200")
        assert result.action == "ok"
        sent, _, error = (result.data or "").partition(" then ")
        assert 4 <= int(sent) <= 6 and error == "rate-limited", result.data
    with astrid.Runtime() as rt, rt.load(capsules / "ipcprobe") as probe:
        assert probe.call("storm", "out.storm\n20\n200").data == "20"  # default: 10 MiB/s
