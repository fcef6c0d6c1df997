"""Log and audit callbacks receive events; raising ones lose only that event."""

from __future__ import annotations

import logging
from typing import List

import astrid


def test_log_and_audit_callbacks_receive_events(capsules) -> None:
    logs: List[astrid.LogRecord] = []
    events: List[astrid.AuditEvent] = []
    rt = astrid.Runtime()
    rt.set_log_callback(logs.append)
    rt.set_audit_callback(events.append)
    with rt.load(capsules / "hello", principal="alice") as hello:
        hello.call("greet", b'{"name":"logs"}')
    rt.close()  # flushes the audit queue

    messages = [(r.level, r.capsule, r.message) for r in logs]
    assert (astrid.LogLevel.INFO, "hello", "greeting logs on behalf of alice") in messages
    assert (astrid.LogLevel.INFO, "hello", "hello capsule wrote this line to stdout") in messages
    assert all(r.principal == "alice" for r in logs)
    config = [e for e in events if e.call == "sys.get-config"]
    assert len(config) == 1
    assert config[0].target == "GREETING" and config[0].outcome is astrid.AuditOutcome.ALLOWED
    assert config[0].capsule == "hello" and len(config[0].capsule_id) == 36
    assert config[0].principal == "alice"
    assert any(e.call == "sys.log" for e in events)
    assert rt.callback_errors == []


def test_replacing_callbacks_releases_the_old_ones(rt: astrid.Runtime, hello: astrid.Capsule) -> None:
    base = astrid.live_callbacks()
    first: List[str] = []
    second: List[str] = []
    rt.set_log_callback(lambda r: first.append(r.message))
    assert astrid.live_callbacks() == base + 1
    hello.call("greet", b"{}")
    rt.set_log_callback(lambda r: second.append(r.message))
    assert astrid.live_callbacks() == base + 1  # the first one was finalized
    hello.call("greet", b"{}")
    rt.set_log_callback(None)
    assert astrid.live_callbacks() == base
    hello.call("greet", b"{}")
    assert len(first) == 2 and len(second) == 2


def test_raising_log_callback_is_reported_and_logged(rt: astrid.Runtime, hello: astrid.Capsule, caplog) -> None:
    seen: List[str] = []

    def log(record: astrid.LogRecord) -> None:
        seen.append(record.message)
        raise ValueError(f"cannot handle {record.message!r}")

    rt.set_log_callback(log)
    with caplog.at_level(logging.ERROR, logger="astrid"):
        result = hello.call("greet", b'{"name":"x"}')
    assert result.json()["message"] == "Hello, x!"  # the call is unaffected
    assert len(seen) == 2
    errors = rt.take_callback_errors()
    assert [type(e) for e in errors] == [ValueError, ValueError]
    assert any("log callback" in r.getMessage() for r in caplog.records)


def test_blocking_calls_inside_a_callback_are_reentrant_errors(rt: astrid.Runtime, hello: astrid.Capsule) -> None:
    caught: List[BaseException] = []

    def log(record: astrid.LogRecord) -> None:
        for attempt in (lambda: hello.call("noop"), rt.close, hello.close, lambda: rt.load("x")):
            try:
                attempt()
            except astrid.ReentrantError as e:
                caught.append(e)

    rt.set_log_callback(log)
    hello.call("greet", b"{}")
    assert len(caught) == 8 and all(e.code == -14 for e in caught)
    assert not rt.closed and not hello.closed
    rt.set_log_callback(None)
    assert hello.call("echo", b"alive").data == "alive"
