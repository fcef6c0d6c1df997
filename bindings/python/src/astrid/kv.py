"""Key-value stores written in Python: a backend object serving ``astrid:kv``.

Write a class with the methods below (subclassing :class:`KvBackend` checks
that none is missing) and install an instance with :meth:`Runtime.set_kv`.
Every method takes the :class:`KvNamespace` the keys belong to first::

    get(ns, key: str) -> bytes | None                     # None: no value
    set(ns, key: str, value: bytes) -> None               # insert or replace
    remove(ns, key: str) -> None                          # a missing key is fine
    list(ns, prefix: str, after: str, limit: int) -> Iterable[str]
    clear_prefix(ns, prefix: str) -> int                  # how many were removed
    cas(ns, key: str, expected: bytes | None, value: bytes) -> bool

``list`` yields, in bytewise (UTF-8) order, the keys starting with ``prefix``
that sort after ``after`` (``""``: from the first), at most ``limit`` of them
(the binding stops reading the iterable there). ``cas`` stores ``value`` only
if the current value equals ``expected`` (``None``: only if the key is
absent) and returns whether it did; it must be atomic per key.

Backends must keep namespaces apart: that is what isolates capsules and
principals from each other. Keys arrive validated (UTF-8 NFC, 1 to 256 bytes,
no control characters; prefixes may be empty); values are at most 1 MiB.
Methods run on library worker threads (or the guest's thread with
``inline_callbacks=True``), concurrently, each bounded by the runtime's
``vfs_timeout_ms``: protect shared state with a lock. A method the object
lacks makes that operation fail with ``unknown("not supported")``.

Failures are exceptions: raise :class:`KvError` with a :class:`KvStatus`
(``QUOTA``, ``TOO_LARGE``, ...; the guest sees the matching error). Any other
exception answers :attr:`KvStatus.IO` (the guest sees
``unknown("storage failed")``) and is reported like every callback
exception (:attr:`Runtime.callback_errors`).
"""

from __future__ import annotations

import abc
import enum
from ctypes import c_uint64, sizeof
from typing import Any, Iterable, List, NamedTuple, Optional, Tuple, Union

from ._native import (
    KV_CAS_FN,
    KV_CLEAR_PREFIX_FN,
    KV_GET_FN,
    KV_KEY_SINK_FN,
    KV_LIST_FN,
    KV_REMOVE_FN,
    KV_SET_FN,
    KV_VALUE_SINK_FN,
    KvNamespaceStruct,
    KvOps,
)
from .callbacks import ErrorSink, trampoline
from .vfs import _CHARS

__all__ = ["KvBackend", "KvError", "KvNamespace", "KvStatus"]


class KvStatus(enum.IntEnum):
    """Backend result codes (``ASTRID_KV_*``) and what the guest sees."""

    OK = 0
    #: ``get``: the key has no value (the guest reads ``none``).
    NOT_FOUND = 1
    #: ``cas``: the current value is not the expected one (``cas-mismatch``).
    CAS_MISMATCH = 2
    #: The namespace's storage budget is exhausted (``quota``).
    QUOTA = 3
    #: Too large for the backend (``too-large``).
    TOO_LARGE = 4
    #: Any other failure (``unknown("storage failed")``).
    IO = 5


class KvError(Exception):
    """Raise from a backend method to answer with a specific status."""

    def __init__(self, status: Union[KvStatus, int], message: str = "") -> None:
        super().__init__(status, message)
        self.status = int(status)
        self.message = message

    def __str__(self) -> str:
        try:
            name = KvStatus(self.status).name
        except ValueError:
            name = str(self.status)
        return f"{name}: {self.message}" if self.message else name


class KvNamespace(NamedTuple):
    """Whose keys: the data scope (the call's principal, else the capsule's
    owner, else ``"system"``) and the capsule's id. Hashable: use it (or its
    fields) as the key of a namespace's storage."""

    scope: str
    capsule_id: str


class KvBackend(abc.ABC):
    """Base class of KV backends: declares the six methods (see the module
    docs), so that a subclass missing one cannot be instantiated."""

    @abc.abstractmethod
    def get(self, ns: KvNamespace, key: str) -> Optional[bytes]:
        """The value of ``key``, or ``None`` when it has none."""

    @abc.abstractmethod
    def set(self, ns: KvNamespace, key: str, value: bytes) -> None:
        """Stores ``value`` under ``key`` (insert or replace)."""

    @abc.abstractmethod
    def remove(self, ns: KvNamespace, key: str) -> None:
        """Removes ``key``; a missing key is not an error."""

    @abc.abstractmethod
    def list(self, ns: KvNamespace, prefix: str, after: str, limit: int) -> Iterable[str]:
        """The keys starting with ``prefix`` that sort after ``after`` (``""``:
        from the first), in bytewise order, at most ``limit`` of them."""

    @abc.abstractmethod
    def clear_prefix(self, ns: KvNamespace, prefix: str) -> int:
        """Removes every key starting with ``prefix`` (all of the namespace
        for ``""``) and returns how many there were."""

    @abc.abstractmethod
    def cas(self, ns: KvNamespace, key: str, expected: Optional[bytes], value: bytes) -> bool:
        """Atomically: if the value of ``key`` equals ``expected`` (``None``:
        if the key is absent), stores ``value`` and returns ``True``;
        otherwise returns ``False``."""


_IO = int(KvStatus.IO)
_NOT_FOUND = int(KvStatus.NOT_FOUND)
_CAS_MISMATCH = int(KvStatus.CAS_MISMATCH)


def _status_of(exc: BaseException, sink: ErrorSink, method: str) -> int:
    """The status an exception answers with; unexpected ones are reported."""
    if isinstance(exc, KvError):
        return exc.status
    sink.report(f"kv {method}", exc)
    return _IO


def _text(ptr: Optional[int], length: int) -> str:
    return _CHARS.from_address(ptr)[:length].decode() if length else ""


def _raw(ptr: Optional[int], length: int) -> bytes:
    return _CHARS.from_address(ptr)[:length] if length else b""


def _namespace(ptr: int) -> KvNamespace:
    s = KvNamespaceStruct.from_address(ptr)
    return KvNamespace(_text(s.scope, s.scope_len), _text(s.capsule_id, s.capsule_id_len))


def _value_bytes(value: Any, method: str) -> bytes:
    if isinstance(value, bytes):
        return value
    if isinstance(value, (bytearray, memoryview)):
        return bytes(value)
    if isinstance(value, str):
        return value.encode()
    raise TypeError(f"kv {method} must return bytes or None, not {type(value).__name__}")


def build_kv_ops(backend: Any, sink: ErrorSink) -> Tuple[KvOps, List[Any]]:
    """The ``astrid_kv_ops_t`` serving ``backend`` and the ctypes callback
    objects it points to (keep them alive as long as the library may call)."""
    ops = KvOps()
    keep: List[Any] = [backend]

    def bound(name: str) -> Any:
        m = getattr(backend, name, None)
        return m if callable(m) else None

    def put(name: str, cfn: Any) -> None:
        keep.append(cfn)
        setattr(ops, name, cfn)

    m_get = bound("get")
    if m_get is not None:

        @trampoline
        def get(_ud: Optional[int], ns: int, k: Optional[int], kn: int, out: int, ctx: Optional[int]) -> int:
            try:
                value = m_get(_namespace(ns), _text(k, kn))
                if value is None:
                    return _NOT_FOUND
                raw = _value_bytes(value, "get")
                KV_VALUE_SINK_FN(out)(ctx, raw, len(raw))
                return 0
            except BaseException as exc:
                return _status_of(exc, sink, "get")

        put("get", KV_GET_FN(get))

    m_set = bound("set")
    if m_set is not None:

        @trampoline
        def set_(_ud: Optional[int], ns: int, k: Optional[int], kn: int, v: Optional[int], vn: int) -> int:
            try:
                m_set(_namespace(ns), _text(k, kn), _raw(v, vn))
                return 0
            except BaseException as exc:
                return _status_of(exc, sink, "set")

        put("set", KV_SET_FN(set_))

    m_remove = bound("remove")
    if m_remove is not None:

        @trampoline
        def remove(_ud: Optional[int], ns: int, k: Optional[int], kn: int) -> int:
            try:
                m_remove(_namespace(ns), _text(k, kn))
                return 0
            except BaseException as exc:
                return _status_of(exc, sink, "remove")

        put("remove", KV_REMOVE_FN(remove))

    m_list = bound("list")
    if m_list is not None:

        @trampoline
        def list_(
            _ud: Optional[int],
            ns: int,
            p: Optional[int],
            pn: int,
            a: Optional[int],
            an: int,
            limit: int,
            out: int,
            ctx: Optional[int],
        ) -> int:
            try:
                push = KV_KEY_SINK_FN(out)
                sent = 0
                if limit:
                    for key in m_list(_namespace(ns), _text(p, pn), _text(a, an), limit):
                        if not isinstance(key, str):
                            raise TypeError(f"kv list must yield str keys, not {type(key).__name__}")
                        raw = key.encode()
                        sent += 1
                        if push(ctx, raw, len(raw)) != 0 or sent >= limit:
                            break
                return 0
            except BaseException as exc:
                return _status_of(exc, sink, "list")

        put("list", KV_LIST_FN(list_))

    m_clear = bound("clear_prefix")
    if m_clear is not None:

        @trampoline
        def clear_prefix(_ud: Optional[int], ns: int, p: Optional[int], pn: int, out: int) -> int:
            try:
                removed = m_clear(_namespace(ns), _text(p, pn)).__index__()
                if removed < 0:
                    raise ValueError(f"kv clear_prefix returned {removed}")
                c_uint64.from_address(out).value = removed
                return 0
            except BaseException as exc:
                return _status_of(exc, sink, "clear_prefix")

        put("clear_prefix", KV_CLEAR_PREFIX_FN(clear_prefix))

    m_cas = bound("cas")
    if m_cas is not None:

        @trampoline
        def cas(
            _ud: Optional[int],
            ns: int,
            k: Optional[int],
            kn: int,
            has_expected: int,
            e: Optional[int],
            en: int,
            v: Optional[int],
            vn: int,
        ) -> int:
            try:
                expected = _raw(e, en) if has_expected else None
                swapped = m_cas(_namespace(ns), _text(k, kn), expected, _raw(v, vn))
                if swapped is True:
                    return 0
                if swapped is False:
                    return _CAS_MISMATCH
                raise TypeError(f"kv cas must return a bool, not {type(swapped).__name__}")
            except BaseException as exc:
                return _status_of(exc, sink, "cas")

        put("cas", KV_CAS_FN(cas))

    ops.size = sizeof(KvOps)
    return ops, keep
