"""Constants and the plain data objects callbacks receive.

Everything the library hands a callback is borrowed for the duration of that
callback only; the objects here are Python copies, safe to keep.
"""

from __future__ import annotations

import enum
import json
from ctypes import string_at
from typing import Any, Optional

__all__ = [
    "GateKind",
    "Verdict",
    "LogLevel",
    "AuditOutcome",
    "Attribution",
    "RuntimeFlags",
    "LogRecord",
    "AuditEvent",
    "Message",
]


class GateKind(enum.IntEnum):
    """What a gate request asks about (``ASTRID_GATE_*``)."""

    FILE_READ = 1
    FILE_WRITE = 2
    HTTP_REQUEST = 3
    NET_CONNECT = 4
    NET_BIND = 5
    DNS_LOOKUP = 6


class Verdict(enum.IntEnum):
    """A gate's answer (``ASTRID_ALLOW`` / ``ASTRID_DENY`` / ``ASTRID_PENDING``)."""

    ALLOW = 1
    DENY = 2
    PENDING = 3


class LogLevel(enum.IntEnum):
    """``astrid_log_record_t.level``."""

    TRACE = 0
    DEBUG = 1
    INFO = 2
    WARN = 3
    ERROR = 4


class AuditOutcome(enum.IntEnum):
    """``astrid_audit_event_t.outcome``."""

    ALLOWED = 0
    #: A policy refusal; for a bus-dispatched handler (``guest.<action>``),
    #: its ``deny`` answer (the reason is the answer's data).
    DENIED = 1
    #: The host call failed; for a dispatched handler, the handler failed
    #: (trap, timeout, fuel...: the reason says which).
    FAILED = 2
    #: A bus-dispatched handler answered ``continue``.
    CONTINUE = 3
    #: A bus-dispatched handler answered ``final``.
    FINAL = 4


class Attribution(enum.IntEnum):
    """Who published an IPC message (``ASTRID_ATTRIBUTION_*``)."""

    SYSTEM = 0
    VERIFIED = 1
    CLAIMED = 2


class RuntimeFlags(enum.IntFlag):
    """``astrid_runtime_config_t.flags`` (the keyword arguments of
    :class:`~astrid.Runtime` set them too)."""

    NONE = 0
    ALLOW_LOOPBACK = 1
    DISABLE_CAPABILITY_REGISTRY = 2
    INLINE_CALLBACKS = 4
    #: ``bind-tcp`` and ``udp-bind`` may use addresses other than loopback
    #: (the manifest's ``net_bind`` and the gate still decide which).
    ALLOW_ANY_BIND = 8
    #: Links ``wasi:sockets`` for real, behind the same manifest entries, gate
    #: kinds, airlock and quotas as ``astrid:net``; without it every WASI
    #: socket operation is ``access-denied``.
    WASI_SOCKETS = 16


def text(ptr: Optional[int], length: int) -> str:
    """Decodes a borrowed UTF-8 ``(ptr, len)`` pair; ``(NULL, 0)`` is ``""``."""
    if not length or ptr is None:
        return ""
    return string_at(ptr, length).decode("utf-8", "replace")


def opt_text(ptr: Optional[int], length: int) -> Optional[str]:
    """Like :func:`text`, but a NULL pointer gives ``None``."""
    if not ptr:
        return None
    return string_at(ptr, length).decode("utf-8", "replace") if length else ""


class LogRecord:
    """A log line from a capsule (guest ``astrid:sys`` log, stdout, stderr,
    or a runtime note about the capsule)."""

    __slots__ = ("level", "capsule", "principal", "message", "call_id")

    def __init__(
        self, level: LogLevel, capsule: str, principal: Optional[str], message: str, call_id: int = 0
    ) -> None:
        self.level = level
        self.capsule = capsule
        #: The call's context principal, ``None`` when there is none.
        self.principal = principal
        self.message = message
        #: The call that wrote the line (``Result.call_id``); 0 outside any call.
        self.call_id = call_id

    def __repr__(self) -> str:
        return f"LogRecord({self.level.name}, {self.capsule!r}, {self.message!r})"


class AuditEvent:
    """One host call of a capsule, as the audit callback sees it. Never
    contains payloads, bodies or config values."""

    __slots__ = (
        "capsule",
        "capsule_id",
        "principal",
        "call",
        "target",
        "bytes",
        "outcome",
        "reason",
        "elapsed_us",
        "call_id",
    )

    def __init__(
        self,
        capsule: str,
        capsule_id: str,
        principal: str,
        call: str,
        target: str,
        bytes: int,
        outcome: AuditOutcome,
        reason: str,
        elapsed_us: int,
        call_id: int = 0,
    ) -> None:
        self.capsule = capsule
        self.capsule_id = capsule_id
        #: ``p``, ``system`` or ``claimed(p)``.
        self.principal = principal
        #: ``interface.function``, e.g. ``sys.get-config`` or ``fs.write-file``.
        self.call = call
        #: VFS path, ``host:port``, URL without query, topic or config key.
        self.target = target
        #: Payload bytes in plus out.
        self.bytes = bytes
        self.outcome = outcome
        #: Why it was denied or failed (``""`` otherwise).
        self.reason = reason
        self.elapsed_us = elapsed_us
        #: The call the event belongs to (``Result.call_id``); 0 outside any call.
        self.call_id = call_id

    def __repr__(self) -> str:
        return f"AuditEvent({self.call!r}, {self.target!r}, {self.outcome.name})"


class Message:
    """One IPC bus message delivered to a :class:`~astrid.Subscription`."""

    __slots__ = (
        "topic",
        "payload",
        "source_id",
        "attribution",
        "principal",
        "sequence",
        "timestamp_ms",
        "depth",
        "dropped",
        "lagged",
    )

    def __init__(
        self,
        topic: str,
        payload: str,
        source_id: str,
        attribution: Attribution,
        principal: Optional[str],
        sequence: int,
        timestamp_ms: int,
        depth: int,
        dropped: int,
        lagged: int,
    ) -> None:
        self.topic = topic
        #: The JSON text as published.
        self.payload = payload
        #: The publishing capsule's id, or the embedder's id (the same for
        #: every host publish) for messages published with :meth:`Runtime.publish`.
        self.source_id = source_id
        self.attribution = attribution
        #: ``None`` for system publishes.
        self.principal = principal
        #: Runtime-wide publish sequence number.
        self.sequence = sequence
        self.timestamp_ms = timestamp_ms
        #: 0 for host publishes.
        self.depth = depth
        #: Messages this subscription missed (never queued) since the previous delivery.
        self.dropped = dropped
        #: Messages evicted from this subscription's full queue since the previous delivery.
        self.lagged = lagged

    def json(self) -> Any:
        """The payload parsed as JSON."""
        return json.loads(self.payload)

    def __repr__(self) -> str:
        return f"Message({self.topic!r}, {self.payload!r}, seq={self.sequence})"
