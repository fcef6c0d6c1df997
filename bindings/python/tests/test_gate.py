"""The gate written in Python: allow, deny with a reason, defer, raise."""

from __future__ import annotations

import threading
from typing import List

import astrid
import pytest


def fs(capsule: astrid.Capsule, action: str, payload: str) -> str:
    result = capsule.call(action, payload)
    return f"{result.action}:{result.data}"


@pytest.fixture
def fsprobe(rt: astrid.Runtime, capsules) -> astrid.Capsule:
    return rt.load(capsules / "fsprobe", principal="gatekeeper")


def test_gate_denies_a_write(rt: astrid.Runtime, capsules) -> None:
    seen: List[astrid.GateRequest] = []
    denials: List[astrid.AuditEvent] = []

    def gate(request: astrid.GateRequest):
        seen.append(request)
        if request.kind == astrid.GateKind.FILE_WRITE and not request.path.startswith("cwd://ws/public"):
            return request.deny("writes only under ws/public")
        return True

    rt.set_gate(gate)
    rt.set_audit_callback(lambda e: denials.append(e) if e.outcome == astrid.AuditOutcome.DENIED else None)
    with rt.load(capsules / "fsprobe", principal="gatekeeper") as fsprobe:
        assert fs(fsprobe, "mkdir-all", "ws/public") == "ok:ok"
        assert fs(fsprobe, "write-file", "ws/public/a.txt\nallowed") == "ok:ok"
        assert fs(fsprobe, "write-file", "ws/secret.txt\nrefused") == "err:capability-denied"
        assert fs(fsprobe, "read-file", "ws/public/a.txt") == "ok:allowed"
    rt.close()  # flushes the audit queue

    denied = [r for r in seen if r.path == "cwd://ws/secret.txt"]
    assert denied and denied[0].kind is astrid.GateKind.FILE_WRITE
    assert denied[0].capsule == "fsprobe" and denied[0].principal == "gatekeeper"
    assert denied[0].reason == "writes only under ws/public"
    assert denied[0].url is None and denied[0].port == 0
    assert any(r.kind is astrid.GateKind.FILE_READ for r in seen)
    assert any(e.target == "cwd://ws/secret.txt" and e.reason.endswith("writes only under ws/public") for e in denials)
    assert rt.callback_errors == []


def test_verdict_values(rt: astrid.Runtime, fsprobe: astrid.Capsule) -> None:
    answer: List[object] = [astrid.Verdict.ALLOW]
    rt.set_gate(lambda request: answer[0])
    assert fs(fsprobe, "write-file", "ws\nx") == "ok:ok"
    answer[0] = astrid.Verdict.DENY
    assert fs(fsprobe, "write-file", "ws\nx") == "err:capability-denied"
    answer[0] = False
    assert fs(fsprobe, "write-file", "ws\nx") == "err:capability-denied"
    answer[0] = None
    assert fs(fsprobe, "write-file", "ws\nx") == "err:capability-denied"
    rt.set_gate(None)  # the manifest alone decides again
    assert fs(fsprobe, "write-file", "ws\nx") == "ok:ok"
    assert rt.callback_errors == []


def test_deferred_verdict_resolved_from_another_thread(rt: astrid.Runtime, fsprobe: astrid.Capsule) -> None:
    tickets: List[astrid.GateTicket] = []
    verdict = [True]

    def gate(request: astrid.GateRequest):
        ticket = request.defer()
        tickets.append(ticket)
        threading.Timer(0.05, ticket.resolve, (verdict[0], "decided later")).start()
        return astrid.Verdict.PENDING

    rt.set_gate(gate)
    assert fs(fsprobe, "write-file", "ws\nlater") == "ok:ok"
    verdict[0] = False
    assert fs(fsprobe, "write-file", "ws\nlater") == "err:capability-denied"
    assert all(t.resolved for t in tickets)
    with pytest.raises(astrid.ClosedError):
        tickets[0].resolve(True)


def test_dropped_ticket_denies(rt: astrid.Runtime, fsprobe: astrid.Capsule) -> None:
    def gate(request: astrid.GateRequest):
        request.defer()  # dropped at once: garbage collection frees it, a denial
        return None  # None after a defer means PENDING

    rt.set_gate(gate)
    assert fs(fsprobe, "write-file", "ws\nx") == "err:capability-denied"


def test_raising_gate_denies_and_runtime_keeps_serving(rt: astrid.Runtime, fsprobe: astrid.Capsule) -> None:
    calls = [0]
    reasons: List[str] = []

    def gate(request: astrid.GateRequest) -> bool:
        calls[0] += 1
        if calls[0] == 1:
            raise RuntimeError("gate blew up")
        return True

    rt.set_gate(gate)
    rt.set_audit_callback(lambda e: reasons.append(e.reason) if e.outcome == astrid.AuditOutcome.DENIED else None)
    assert fs(fsprobe, "write-file", "ws\nx") == "err:capability-denied"
    assert fs(fsprobe, "write-file", "ws\ny") == "ok:ok"
    errors = rt.callback_errors
    assert len(errors) == 1 and isinstance(errors[0], RuntimeError) and str(errors[0]) == "gate blew up"
    with pytest.raises(astrid.CallbackError) as info:
        rt.raise_callback_errors()
    assert info.value.errors == errors and info.value.__cause__ is errors[0]
    assert rt.callback_errors == []
    rt.raise_callback_errors()  # nothing left: no exception
    fsprobe.close()
    rt.close()
    assert any("gate blew up" in r for r in reasons)


def test_gate_returning_nonsense_denies_and_is_reported(rt: astrid.Runtime, fsprobe: astrid.Capsule) -> None:
    rt.set_gate(lambda request: "yes please")
    assert fs(fsprobe, "write-file", "ws\nx") == "err:capability-denied"
    errors = rt.take_callback_errors()
    assert len(errors) == 1 and isinstance(errors[0], TypeError)


def test_request_is_refused_on_another_thread(rt: astrid.Runtime, fsprobe: astrid.Capsule) -> None:
    """The request handle lives only on the thread running the gate callback:
    another thread's answer, even while the callback runs, is refused by the
    library (ClosedError with the library's message) and changes nothing."""
    refused: List[BaseException] = []

    def gate(request: astrid.GateRequest):
        def elsewhere() -> None:
            try:
                request.reason = "from another thread"
            except BaseException as e:
                refused.append(e)
            try:
                request.defer()
            except BaseException as e:
                refused.append(e)

        t = threading.Thread(target=elsewhere)
        t.start()
        t.join()
        request.reason = "on the callback's thread"  # still works here
        return True

    rt.set_gate(gate)
    assert fs(fsprobe, "write-file", "ws\nx") == "ok:ok"
    assert refused and len(refused) % 2 == 0
    assert all(isinstance(e, astrid.ClosedError) and e.code == -13 for e in refused)
    assert all("not a live request on this thread" in e.message for e in refused)
    assert rt.callback_errors == []


def test_ticket_errors_carry_the_library_message(rt: astrid.Runtime) -> None:
    # A ticket handle the library never issued: refused by the library, and
    # the exception carries its message (the call used to report a bare code).
    ticket = astrid.GateTicket(0x12340, rt.library)
    with pytest.raises(astrid.ClosedError) as info:
        ticket.resolve(True)
    assert "already resolved or freed" in info.value.message


def test_reason_outside_the_callback_is_refused(rt: astrid.Runtime, fsprobe: astrid.Capsule) -> None:
    kept: List[astrid.GateRequest] = []
    rt.set_gate(lambda request: kept.append(request) or True)
    assert fs(fsprobe, "write-file", "ws\nx") == "ok:ok"
    with pytest.raises(astrid.ClosedError):
        kept[0].reason = "too late"
    with pytest.raises(astrid.ClosedError):
        kept[0].defer()
