"""Embedder callbacks: the gate's request and ticket objects, the secret
request, and the machinery that turns plain Python callables into C callbacks.

Request handles: the library passes the gate, the accept verifier and the
secret provider an opaque request handle that is valid only on the thread
running the callback, until it returns. The trampolines copy what it asks
(``astrid_*_request_info``) into plain Python objects before calling the
Python function, so those objects may be kept; answering (a gate reason, a
deferral, a principal, a secret value) only works inside the callback, on
its thread: anywhere else the library refuses it and this binding raises
:class:`~astrid.ClosedError` with the library's message.

How a Python callable is kept alive: each installation wraps it in ctypes
``CFUNCTYPE`` objects, stores them in a registry under a fresh integer id and
passes that id to the library as ``user_data``. The library calls the shared
finalizer with the id exactly once, when it will never call those callbacks
again (callback replaced or removed, runtime closed, subscription freed); the
finalizer drops the registry entry, and with it the ctypes objects.

How exceptions are handled: a trampoline never lets an exception unwind into
C. A raising gate denies (the reason says why), a raising accept verifier
refuses the connection, a raising secret provider
fails the guest's ``get-config``, a raising VFS method answers
``ASTRID_VFS_IO``; log, audit and subscription callbacks just lose that one
event. Each such exception is logged on the ``astrid`` logger and collected
on its runtime (:meth:`Runtime.callback_errors`,
:meth:`Runtime.raise_callback_errors`).
"""

from __future__ import annotations

import itertools
import logging
import sys
import threading
from ctypes import byref, c_void_p, sizeof
from typing import Any, Callable, Dict, List, Optional, Set, Tuple, TypeVar, Union

from . import _native
from ._native import (
    ACCEPT_VERIFIER_FN,
    AUDIT_FN,
    FINALIZER_FN,
    GATE_FN,
    LOG_FN,
    MESSAGE_FN,
    SECRET_FN,
    AcceptRequestInfo,
    AuditEventStruct,
    GateRequestInfo,
    LogRecordStruct,
    MessageStruct,
    SecretRequestInfo,
    check,
    raise_status,
)
from .errors import AstridError, ClosedError
from .types import (
    Attribution,
    AuditEvent,
    AuditOutcome,
    GateKind,
    LogLevel,
    LogRecord,
    Message,
    Verdict,
    opt_text,
    text,
)

__all__ = [
    "AcceptRequest",
    "AcceptVerifierFn",
    "GateRequest",
    "GateTicket",
    "SecretRequest",
    "GateFn",
    "LogFn",
    "AuditFn",
    "SecretFn",
    "MessageFn",
]

logger = logging.getLogger("astrid")

_ASTRID_E_INTERNAL = -17


# Code objects of every trampoline (the Python functions the library calls).
# A thread is "inside a callback" when one of them is on its stack; checking
# the stack costs nothing on the callback path, only in the rare blocking
# methods that must refuse to run there.
_TRAMPOLINES: Set[Any] = set()

F = TypeVar("F", bound=Callable[..., Any])


def trampoline(fn: F) -> F:
    """Registers ``fn`` as a function the library calls (see :func:`in_callback`)."""
    _TRAMPOLINES.add(fn.__code__)
    return fn


def in_callback() -> bool:
    """Whether the current thread is running an astrid callback (where blocking
    astrid calls are refused with ``ReentrantError``)."""
    codes = _TRAMPOLINES
    f: Any = sys._getframe(1)
    while f is not None:
        if f.f_code in codes:
            return True
        f = f.f_back
    return False


# ------------------------------------------------------------ keep-alive registry

_boxes: Dict[int, Any] = {}
_ids = itertools.count(1)  # 0 would be NULL user_data


def keep(box: Any) -> int:
    """Stores ``box`` until the library finalizes the returned id."""
    ident = next(_ids)
    _boxes[ident] = box
    return ident


def release(ident: int) -> None:
    """Drops a stored box (the finalizer's job; also used when an install failed)."""
    _boxes.pop(ident, None)


def live_callbacks() -> int:
    """How many installed callback sets the library may still call (for tests
    and leak checks: it returns to 0 once every owner is closed)."""
    return len(_boxes)


@trampoline
def _finalize(user_data: Optional[int]) -> None:
    if user_data:
        _boxes.pop(user_data, None)


#: The one finalizer every installation passes; lives as long as the module.
FINALIZER = FINALIZER_FN(_finalize)

# ----------------------------------------------------------------- error sink


class ErrorSink:
    """Collects the exceptions raised inside one runtime's callbacks."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._errors: List[BaseException] = []

    def report(self, where: str, exc: BaseException) -> None:
        """Records and logs an exception raised by the ``where`` callback."""
        note = f"raised inside the astrid {where} callback"
        if hasattr(exc, "add_note"):
            exc.add_note(note)
        with self._lock:
            self._errors.append(exc)
        try:
            logger.error("exception %s: %s: %s", note, type(exc).__name__, exc, exc_info=exc)
        except Exception:  # pragma: no cover - a broken logging setup must not escape
            pass

    def snapshot(self) -> List[BaseException]:
        with self._lock:
            return list(self._errors)

    def take(self) -> List[BaseException]:
        with self._lock:
            errors, self._errors = self._errors, []
            return errors


# ---------------------------------------------------------------------- gate


class GateTicket:
    """A deferred gate verdict (from :meth:`GateRequest.defer`). Answer it
    later, from any thread, with :meth:`resolve`; :meth:`free` (or garbage
    collection) denies. The waiting call stays bounded by the gate deadline."""

    __slots__ = ("_h", "_lib", "_lock", "__weakref__")

    def __init__(self, handle: int, lib: "_native.Library") -> None:
        self._h: Optional[int] = handle
        self._lib = lib
        self._lock = threading.Lock()

    def _take(self) -> int:
        with self._lock:
            h, self._h = self._h, None
        if h is None:
            raise ClosedError(-13, "gate ticket already resolved or freed")
        return h

    def resolve(self, verdict: Union[bool, Verdict], reason: Optional[str] = None) -> None:
        """Answers the request: ``True`` / :attr:`Verdict.ALLOW` allows, anything
        else denies. ``reason`` reaches the audit callback, never the guest.
        Resolving after the call gave up is harmless. Raises ``ClosedError``
        when already resolved or freed."""
        h = self._take()
        v = _verdict_value(verdict)
        if v == Verdict.PENDING:
            v = int(Verdict.DENY)
        r = reason.encode() if reason is not None else None
        check(
            self._lib,
            "astrid_gate_ticket_resolve",
            self._lib.astrid_gate_ticket_resolve,
            h,
            v,
            r,
            len(r) if r is not None else 0,
        )

    def free(self) -> None:
        """Drops the ticket unresolved: the waiting request is denied. Idempotent."""
        with self._lock:
            h, self._h = self._h, None
        if h is not None:
            self._lib.astrid_gate_ticket_free(h)

    @property
    def resolved(self) -> bool:
        """Whether the ticket was resolved or freed."""
        return self._h is None

    def __del__(self) -> None:
        try:
            self.free()
        except Exception:  # pragma: no cover - interpreter shutdown
            pass


class GateRequest:
    """One question to the gate. Fields the kind does not use are ``None``.

    ``path`` is the VFS spelling (``cwd://a/b``); ``host_path`` the resolved host
    path (host-directory mounts only). The fields are a copy, valid after the
    callback. Setting :attr:`reason` (or calling :meth:`deny` with one)
    attaches an explanation for the audit log, and :meth:`defer` takes a
    ticket: both only work inside the gate callback, on its thread (the
    library refuses them anywhere else: ``ClosedError``)."""

    __slots__ = (
        "call_id",
        "kind",
        "port",
        "capsule",
        "principal",
        "path",
        "host_path",
        "method",
        "url",
        "host",
        "transport",
        "_ptr",
        "_lib",
        "_reason",
        "_deferred",
    )

    kind: Union[GateKind, int]
    port: int
    capsule: str
    principal: Optional[str]
    path: Optional[str]
    host_path: Optional[str]
    method: Optional[str]
    url: Optional[str]
    host: Optional[str]
    transport: Optional[str]

    def __init__(self, ptr: int, lib: "_native.Library") -> None:
        s = GateRequestInfo()
        s.size = sizeof(GateRequestInfo)
        check(lib, "astrid_gate_request_info", lib.astrid_gate_request_info, ptr, byref(s))
        try:
            self.kind = GateKind(s.kind)
        except ValueError:
            self.kind = s.kind
        self.port = s.port
        self.capsule = text(s.capsule, s.capsule_len)
        self.principal = opt_text(s.principal, s.principal_len)
        self.path = opt_text(s.path, s.path_len)
        self.host_path = opt_text(s.host_path, s.host_path_len)
        self.method = opt_text(s.method, s.method_len)
        self.url = opt_text(s.url, s.url_len)
        self.host = opt_text(s.host, s.host_len)
        self.transport = opt_text(s.transport, s.transport_len)
        #: The guest call asking (``Result.call_id``); 0 outside any call.
        self.call_id: int = s.call_id
        self._ptr: Optional[int] = ptr
        self._lib = lib
        self._reason: Optional[str] = None
        self._deferred = False

    def _live(self) -> int:
        if self._ptr is None:
            raise ClosedError(-13, "a gate request can only be answered inside its gate callback")
        return self._ptr

    @property
    def reason(self) -> Optional[str]:
        """The reason attached so far (``None``). Settable inside the callback."""
        return self._reason

    @reason.setter
    def reason(self, value: str) -> None:
        raw = value.encode()
        lib = self._lib
        check(lib, "astrid_gate_request_set_reason", lib.astrid_gate_request_set_reason, self._live(), raw, len(raw))
        self._reason = value

    def allow(self) -> Verdict:
        """Returns :attr:`Verdict.ALLOW` (for ``return request.allow()``)."""
        return Verdict.ALLOW

    def deny(self, reason: Optional[str] = None) -> Verdict:
        """Sets ``reason`` (when given) and returns :attr:`Verdict.DENY`."""
        if reason is not None:
            self.reason = reason
        return Verdict.DENY

    def defer(self) -> GateTicket:
        """Defers the verdict: returns a :class:`GateTicket` to resolve later
        from any thread. The callback should then return
        :attr:`Verdict.PENDING` (returning ``None`` after a defer means the same)."""
        out = c_void_p()
        lib = self._lib
        check(lib, "astrid_gate_request_defer", lib.astrid_gate_request_defer, self._live(), byref(out))
        self._deferred = True
        return GateTicket(out.value or 0, self._lib)

    def __repr__(self) -> str:
        what = self.path or self.url or self.host or ""
        kind = self.kind.name if isinstance(self.kind, GateKind) else self.kind
        return f"GateRequest({kind}, {self.capsule!r}, {what!r})"


GateFn = Callable[[GateRequest], Union[bool, Verdict, None]]


def _verdict_value(answer: Any) -> int:
    if answer is True:
        return int(Verdict.ALLOW)
    if answer is False or answer is None:
        return int(Verdict.DENY)
    if isinstance(answer, Verdict):
        return int(answer)
    raise TypeError(f"a gate must return a bool or astrid.Verdict, not {type(answer).__name__}")


def make_gate(fn: GateFn, sink: ErrorSink, lib: "_native.Library") -> Any:
    """The C gate callback running ``fn``."""
    set_reason = lib.astrid_gate_request_set_reason

    @trampoline
    def gate(_user_data: Optional[int], ptr: int) -> int:
        request = None
        try:
            request = GateRequest(ptr, lib)
            answer = fn(request)
            if answer is None and request._deferred:
                return int(Verdict.PENDING)
            return _verdict_value(answer)
        except BaseException as exc:  # never unwind into C: a raising gate denies
            sink.report("gate", exc)
            try:
                why = f"python gate raised {type(exc).__name__}: {exc}".encode("utf-8", "replace")
                set_reason(ptr, why, len(why), None)
            except BaseException:  # pragma: no cover
                pass
            return int(Verdict.DENY)
        finally:
            if request is not None:
                request._ptr = None

    return GATE_FN(gate)


# ------------------------------------------------------------ accept verifier


class AcceptRequest:
    """A local peer connecting to a capsule's unix listener (the socket
    :meth:`Runtime.assign_unix_socket` gave it), as the accept verifier sees
    it. The peer already passed the OS check: it runs as this process's user.

    ``capsule`` is the accepting capsule's name; ``pid`` the peer's process id
    (``None`` when the OS did not report it); ``uid`` / ``gid`` its user and
    group ids. A plain copy: it stays valid after the callback."""

    __slots__ = ("capsule", "pid", "uid", "gid", "call_id")

    capsule: str
    pid: Optional[int]
    uid: int
    gid: int
    #: The guest call that accepts.
    call_id: int

    def __init__(self, capsule: str, pid: Optional[int], uid: int, gid: int, call_id: int = 0) -> None:
        self.capsule = capsule
        self.pid = pid
        self.uid = uid
        self.gid = gid
        self.call_id = call_id

    def __repr__(self) -> str:
        return f"AcceptRequest({self.capsule!r}, pid={self.pid}, uid={self.uid}, gid={self.gid})"


#: The verifier's answer: ``True`` (or :attr:`Verdict.ALLOW`) accepts the
#: connection without a principal, a ``str`` accepts it with that verified
#: principal, ``False`` / ``None`` (or any other :class:`Verdict`) refuses it.
AcceptVerifierFn = Callable[[AcceptRequest], Union[bool, str, Verdict, None]]


def _accepts(answer: Any) -> bool:
    if answer is True:
        return True
    if answer is False or answer is None:
        return False
    if isinstance(answer, Verdict):
        return answer is Verdict.ALLOW
    raise TypeError(f"an accept verifier must return a bool, a str principal or None, not {type(answer).__name__}")


def make_accept_verifier(fn: AcceptVerifierFn, sink: ErrorSink, lib: "_native.Library") -> Any:
    """The C accept verifier running ``fn``."""
    request_info = lib.astrid_accept_request_info
    set_principal = lib.astrid_accept_request_set_principal
    allow, refuse = int(Verdict.ALLOW), int(Verdict.DENY)

    @trampoline
    def verify(_user_data: Optional[int], ptr: int) -> int:
        try:
            s = AcceptRequestInfo()
            s.size = sizeof(AcceptRequestInfo)
            check(lib, "astrid_accept_request_info", request_info, ptr, byref(s))
            answer = fn(
                AcceptRequest(text(s.capsule, s.capsule_len), s.pid if s.pid >= 0 else None, s.uid, s.gid, s.call_id)
            )
            if isinstance(answer, str):
                raw = answer.encode()
                err = c_void_p()
                rc = set_principal(ptr, raw, len(raw), byref(err))
                if rc:
                    try:
                        raise_status(lib, rc, err, "astrid_accept_request_set_principal")
                    except AstridError as e:
                        why = f"the accept verifier's principal {answer!r} was refused: {e.message}"
                        raise type(e)(e.code, why) from None
                return allow
            return allow if _accepts(answer) else refuse
        except BaseException as exc:  # never unwind into C: a raising verifier refuses
            sink.report("accept verifier", exc)
            return refuse

    return ACCEPT_VERIFIER_FN(verify)


# ------------------------------------------------------------------ log / audit

LogFn = Callable[[LogRecord], None]
AuditFn = Callable[[AuditEvent], None]


def _level(value: int) -> Union[LogLevel, int]:
    try:
        return LogLevel(value)
    except ValueError:
        return value


def make_log(fn: LogFn, sink: ErrorSink) -> Any:
    """The C log callback running ``fn``."""

    @trampoline
    def log(_user_data: Optional[int], ptr: int) -> None:
        try:
            s = LogRecordStruct.from_address(ptr)
            fn(
                LogRecord(
                    _level(s.level),  # type: ignore[arg-type]
                    text(s.capsule, s.capsule_len),
                    opt_text(s.principal, s.principal_len),
                    text(s.message, s.message_len),
                    s.call_id,
                )
            )
        except BaseException as exc:
            sink.report("log", exc)

    return LOG_FN(log)


def make_audit(fn: AuditFn, sink: ErrorSink) -> Any:
    """The C audit callback running ``fn``."""

    @trampoline
    def audit(_user_data: Optional[int], ptr: int) -> None:
        try:
            s = AuditEventStruct.from_address(ptr)
            try:
                outcome: Any = AuditOutcome(s.outcome)
            except ValueError:
                outcome = s.outcome
            fn(
                AuditEvent(
                    text(s.capsule, s.capsule_len),
                    text(s.capsule_id, s.capsule_id_len),
                    text(s.principal, s.principal_len),
                    text(s.call, s.call_len),
                    text(s.target, s.target_len),
                    s.bytes,
                    outcome,
                    text(s.reason, s.reason_len),
                    s.elapsed_us,
                    s.call_id,
                )
            )
        except BaseException as exc:
            sink.report("audit", exc)

    return AUDIT_FN(audit)


# ---------------------------------------------------------------------- secrets


class SecretRequest:
    """A capsule's ``get-config`` of a secret key. The provider returns the
    value (``str``), or ``None`` for "no value" (the guest reads ``none``)."""

    __slots__ = ("capsule", "capsule_id", "principal", "key", "call_id")

    def __init__(self, capsule: str, capsule_id: str, principal: Optional[str], key: str, call_id: int = 0) -> None:
        self.capsule = capsule
        self.capsule_id = capsule_id
        self.principal = principal
        self.key = key
        #: The guest call asking (``Result.call_id``).
        self.call_id = call_id

    def __repr__(self) -> str:
        return f"SecretRequest({self.capsule!r}, {self.key!r})"


SecretFn = Callable[[SecretRequest], Optional[str]]


def make_secret(fn: SecretFn, sink: ErrorSink, lib: "_native.Library") -> Any:
    """The C secret provider running ``fn``."""
    request_info = lib.astrid_secret_request_info
    set_value = lib.astrid_secret_request_set_value

    @trampoline
    def secret(_user_data: Optional[int], ptr: int) -> int:
        try:
            s = SecretRequestInfo()
            s.size = sizeof(SecretRequestInfo)
            check(lib, "astrid_secret_request_info", request_info, ptr, byref(s))
            value = fn(
                SecretRequest(
                    text(s.capsule, s.capsule_len),
                    text(s.capsule_id, s.capsule_id_len),
                    opt_text(s.principal, s.principal_len),
                    text(s.key, s.key_len),
                    s.call_id,
                )
            )
            if value is None:
                return 0
            raw = value.encode() if isinstance(value, str) else bytes(value)
            # A refused value (not UTF-8, ...) raises with the library's message:
            # reported below, and the guest's get-config fails.
            check(lib, "astrid_secret_request_set_value", set_value, ptr, raw, len(raw))
            return 0
        except BaseException as exc:
            sink.report("secret", exc)
            return _ASTRID_E_INTERNAL

    return SECRET_FN(secret)


# ------------------------------------------------------------------ subscriptions

MessageFn = Callable[[Message], None]


def make_message(fn: MessageFn, sink: ErrorSink) -> Any:
    """The C subscription callback running ``fn``."""

    @trampoline
    def deliver(_user_data: Optional[int], ptr: int) -> None:
        try:
            s = MessageStruct.from_address(ptr)
            try:
                attribution: Any = Attribution(s.attribution)
            except ValueError:
                attribution = s.attribution
            fn(
                Message(
                    text(s.topic, s.topic_len),
                    text(s.payload, s.payload_len),
                    text(s.source_id, s.source_id_len),
                    attribution,
                    opt_text(s.principal, s.principal_len),
                    s.sequence,
                    s.timestamp_ms,
                    s.depth,
                    s.dropped,
                    s.lagged,
                )
            )
        except BaseException as exc:
            sink.report("subscription", exc)

    return MESSAGE_FN(deliver)


def install(
    lib: "_native.Library",
    setter: Callable[..., int],
    handle: int,
    cfn: Any,
    box: Tuple[Any, ...],
    what: str,
) -> None:
    """Calls ``setter(handle, cfn, id, FINALIZER, &err)`` keeping ``box`` alive
    until the library finalizes it; on failure releases it and raises with
    the library's message."""
    ident = keep(box)
    err = c_void_p()
    rc = setter(handle, cfn, ident, FINALIZER, byref(err))
    if rc:
        release(ident)  # on failure the library does not run the finalizer
        raise_status(lib, rc, err, what)
