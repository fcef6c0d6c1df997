"""Usage figures of capsules and runtimes (``astrid_capsule_stats``,
``astrid_runtime_stats``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, Optional

#: How calls ended, as ``Usage.calls`` keys them (``ASTRID_CALLS_*`` order).
CALL_OUTCOMES = ("ok", "trap", "timeout", "out_of_fuel", "cancelled", "resource_limit", "other")
#: Interfaces, as ``Usage.host_calls`` keys them (``ASTRID_IFACE_*`` order).
INTERFACES = ("sys", "fs", "kv", "io", "ipc", "net", "http", "wasi")
#: Byte channels, as ``Usage.read_bytes`` keys them (``ASTRID_CHANNEL_*`` order).
CHANNELS = ("fs", "net", "http")


@dataclass(frozen=True)
class Usage:
    """Monotonic counters of what calls cost and did."""

    #: Calls by how they ended (``CALL_OUTCOMES``), refused ones included.
    calls: Dict[str, int] = field(default_factory=dict)
    fuel_consumed: int = 0
    #: Wall time in guest calls, on the runtime's 100 ms tick (right in sum).
    guest_seconds: float = 0.0
    #: Host calls and the seconds spent in them, by interface (``INTERFACES``).
    host_calls: Dict[str, int] = field(default_factory=dict)
    host_seconds: Dict[str, float] = field(default_factory=dict)
    gate_asks: int = 0
    gate_denials: int = 0
    #: Bytes the guest read and wrote, by channel (``CHANNELS``).
    read_bytes: Dict[str, int] = field(default_factory=dict)
    written_bytes: Dict[str, int] = field(default_factory=dict)
    bus_published: int = 0
    bus_delivered: int = 0
    bus_dropped: int = 0
    bus_lagged: int = 0
    dispatch_dropped: int = 0

    @classmethod
    def _from(cls, u: Any) -> "Usage":
        return cls(
            calls={name: int(u.calls[i]) for i, name in enumerate(CALL_OUTCOMES)},
            fuel_consumed=int(u.fuel_consumed),
            guest_seconds=u.guest_ns / 1e9,
            host_calls={name: int(u.host_calls[i]) for i, name in enumerate(INTERFACES)},
            host_seconds={name: u.host_ns[i] / 1e9 for i, name in enumerate(INTERFACES)},
            gate_asks=int(u.gate_asks),
            gate_denials=int(u.gate_denials),
            read_bytes={name: int(u.read_bytes[i]) for i, name in enumerate(CHANNELS)},
            written_bytes={name: int(u.written_bytes[i]) for i, name in enumerate(CHANNELS)},
            bus_published=int(u.bus_published),
            bus_delivered=int(u.bus_delivered),
            bus_dropped=int(u.bus_dropped),
            bus_lagged=int(u.bus_lagged),
            dispatch_dropped=int(u.dispatch_dropped),
        )


@dataclass(frozen=True)
class CapsuleStats:
    """A capsule's figures since it was loaded (:meth:`Capsule.stats`)."""

    usage: Usage
    instances_live: int
    instances_idle: int
    memory_bytes: int
    memory_peak_bytes: int
    #: Bytes its KV namespaces hold in the built-in store; ``None`` with a
    #: KV backend of the embedder's.
    kv_bytes: Optional[int]

    @classmethod
    def _from(cls, s: Any) -> "CapsuleStats":
        return cls(
            usage=Usage._from(s.usage),
            instances_live=int(s.instances_live),
            instances_idle=int(s.instances_idle),
            memory_bytes=int(s.memory_bytes),
            memory_peak_bytes=int(s.memory_peak_bytes),
            kv_bytes=None if s.kv_bytes == 2**64 - 1 else int(s.kv_bytes),
        )


@dataclass(frozen=True)
class RuntimeStats:
    """A runtime's figures over every capsule it loaded (:meth:`Runtime.stats`)."""

    usage: Usage
    capsules_loaded: int
    instances_live: int
    instances_idle: int
    memory_bytes: int

    @classmethod
    def _from(cls, s: Any) -> "RuntimeStats":
        return cls(
            usage=Usage._from(s.usage),
            capsules_loaded=int(s.capsules_loaded),
            instances_live=int(s.instances_live),
            instances_idle=int(s.instances_idle),
            memory_bytes=int(s.memory_bytes),
        )
