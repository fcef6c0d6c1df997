"""The owners: :class:`Runtime`, :class:`Capsule`, :class:`Result` and
:class:`Subscription`.

Ownership: a ``Runtime`` owns what it creates. ``close()`` on any of them is
idempotent; closing a runtime first closes its capsules and subscriptions.
Any use after ``close()`` raises :class:`~astrid.ClosedError`. Objects dropped
without ``close()`` are released when garbage-collected, and runtimes still
open at interpreter exit are closed by an ``atexit`` hook.

Threading: every method is thread-safe. Library calls release the GIL, so
calls from several Python threads run in parallel; callbacks run on library
threads and take the GIL themselves. Blocking methods (load, call, close of a
runtime or capsule) must not be called from inside a callback: they raise
:class:`~astrid.ReentrantError`.
"""

from __future__ import annotations

import atexit
import ctypes
import json as _json
import math
import os
import threading
import weakref
from ctypes import byref, c_char_p, c_size_t, c_void_p, string_at
from typing import Any, ClassVar, Dict, List, Mapping, Optional, Tuple, Union

from . import _native, callbacks
from ._native import CallOptions, ConfigEntry, LoadOptions, RuntimeConfig
from . import interrupts as _interrupts
from .cancel import Cancel
from .stats import CapsuleStats, RuntimeStats
from .callbacks import AcceptVerifierFn, AuditFn, ErrorSink, GateFn, LogFn, MessageFn, SecretFn
from .errors import CallbackError, ClosedError, ReentrantError
from .kv import build_kv_ops
from .types import RuntimeFlags
from .vfs import build_ops

__all__ = ["Runtime", "Capsule", "Result", "Subscription", "WATCHDOG_OFF"]

#: ``watchdog_ms`` value exempting a capsule's run loop from the watchdog
#: (``ASTRID_WATCHDOG_OFF``).
WATCHDOG_OFF = (1 << 64) - 1

Bytes = Union[bytes, bytearray, memoryview, str]
PathLike = Union[str, "os.PathLike[str]"]

_CLOSED = -13
_REENTRANT = -14


#: Raises the exception for a failed call with the library's message,
#: consuming its error object.
_raise_status = _native.raise_status
_get_ident = threading.get_ident
_MAIN_IDENT = _interrupts.MAIN_THREAD_IDENT
_check = _native.check


def _encode(value: Bytes) -> bytes:
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode()
    return bytes(value)


def _config_array(config: Optional[Mapping[str, str]]) -> Tuple[Any, int, List[bytes]]:
    """A C array of ``astrid_config_entry_t`` for ``config`` (and the bytes it
    points into, to keep alive for the call)."""
    if not config:
        return None, 0, []
    keep: List[bytes] = []
    arr = (ConfigEntry * len(config))()
    for i, (k, v) in enumerate(config.items()):
        kb, vb = k.encode(), str(v).encode()
        keep += [kb, vb]
        arr[i].key, arr[i].key_len, arr[i].value, arr[i].value_len = kb, len(kb), vb, len(vb)
    return arr, len(config), keep


def _closed(what: str) -> ClosedError:
    return ClosedError(_CLOSED, f"{what} is closed")


_live_runtimes: "weakref.WeakSet[Runtime]" = weakref.WeakSet()


class Runtime:
    """An astrid runtime: engine, worker threads, callbacks, loaded capsules.

    Keyword arguments mirror ``astrid_runtime_config_t``; 0 / ``None`` means the
    library's default. ``kv_quota_bytes`` is the byte budget (keys plus values plus 96 bytes
    per entry)
    of each namespace of the built-in KV store (64 MiB; a backend installed
    with :meth:`set_kv` enforces its own); ``ipc_publish_bytes_per_sec`` the
    bus payload bytes each (capsule, principal) may publish per second
    (10 MiB/s; beyond it the guest's publish fails with ``rate-limited``).
    ``memfs_quota_bytes`` and ``memfs_max_entries`` bound each built-in
    in-memory mount (``tmp://`` per data scope, ``cwd://`` without a
    workspace root): bytes committed, counting 128 bytes plus the name per
    entry (64 MiB), and directory entries (65 536); past them, ``quota``.
    ``max_instances`` bounds the live instances over all capsules and sizes
    the runtime's address-space reservation (max(128, 4 x pool size)).
    ``allow_any_bind=True`` lets ``bind-tcp`` / ``udp-bind`` use addresses
    other than loopback (the manifest and the gate still decide which);
    ``wasi_sockets=True`` links ``wasi:sockets`` for real, behind the same
    manifest entries, gate and airlock as ``astrid:net``.
    ``inline_callbacks=True`` runs gate and VFS callbacks
    on the thread executing the guest (faster; a blocking callback then holds
    its call). ``library`` selects the shared library (a path or a
    :class:`~astrid._native.Library`); by default the one loaded at import or
    found by the search documented in the README.

    Use as a context manager::

        with astrid.Runtime() as rt:
            with rt.load("build/capsules/hello") as capsule:
                print(capsule.call("greet", b'{"name":"py"}').data)
    """

    def __init__(
        self,
        *,
        worker_threads: int = 0,
        pool_size: int = 0,
        memory_limit_bytes: int = 0,
        timeout_ms: int = 0,
        fuel: int = 0,
        cache_dir: Optional[PathLike] = None,
        flags: Union[RuntimeFlags, int] = RuntimeFlags.NONE,
        allow_loopback: bool = False,
        disable_capability_registry: bool = False,
        inline_callbacks: bool = False,
        allow_any_bind: bool = False,
        wasi_sockets: bool = False,
        unload_grace_ms: int = 0,
        gate_timeout_ms: int = 0,
        vfs_timeout_ms: int = 0,
        ipc_queue_messages: int = 0,
        ipc_queue_bytes: int = 0,
        kv_quota_bytes: int = 0,
        ipc_publish_bytes_per_sec: int = 0,
        memfs_quota_bytes: int = 0,
        memfs_max_entries: int = 0,
        max_instances: int = 0,
        library: Union[None, str, "os.PathLike[str]", "_native.Library"] = None,
    ) -> None:
        self._h: Optional[int] = None
        self._lock = threading.Lock()
        self._children: "weakref.WeakSet[Any]" = weakref.WeakSet()
        self._sink = ErrorSink()
        if isinstance(library, _native.Library):
            lib = library
        elif library is not None:
            lib = _native.Library(os.fspath(library))
        else:
            lib = _native.library()
        self._lib = lib
        cfg = RuntimeConfig()
        cfg.size = _ctypes_sizeof(RuntimeConfig)
        cfg.worker_threads = worker_threads
        cfg.pool_size = pool_size
        cfg.memory_limit_bytes = memory_limit_bytes
        cfg.timeout_ms = timeout_ms
        cfg.fuel = fuel
        cache = os.fsencode(cache_dir) if cache_dir is not None else None
        cfg.cache_dir = cache
        cfg.cache_dir_len = len(cache) if cache is not None else 0
        all_flags = int(flags)
        if allow_loopback:
            all_flags |= RuntimeFlags.ALLOW_LOOPBACK
        if disable_capability_registry:
            all_flags |= RuntimeFlags.DISABLE_CAPABILITY_REGISTRY
        if inline_callbacks:
            all_flags |= RuntimeFlags.INLINE_CALLBACKS
        if allow_any_bind:
            all_flags |= RuntimeFlags.ALLOW_ANY_BIND
        if wasi_sockets:
            all_flags |= RuntimeFlags.WASI_SOCKETS
        cfg.flags = all_flags
        cfg.unload_grace_ms = unload_grace_ms
        cfg.gate_timeout_ms = gate_timeout_ms
        cfg.vfs_timeout_ms = vfs_timeout_ms
        cfg.ipc_queue_messages = ipc_queue_messages
        cfg.ipc_queue_bytes = ipc_queue_bytes
        cfg.kv_quota_bytes = kv_quota_bytes
        cfg.ipc_publish_bytes_per_sec = ipc_publish_bytes_per_sec
        cfg.memfs_quota_bytes = memfs_quota_bytes
        cfg.memfs_max_entries = memfs_max_entries
        cfg.max_instances = max_instances
        out, err = c_void_p(), c_void_p()
        rc = lib.astrid_runtime_new(byref(cfg), byref(out), byref(err))
        if rc:
            _raise_status(lib, rc, err, "astrid_runtime_new")
        self._h = out.value
        _live_runtimes.add(self)

    # ------------------------------------------------------------- lifetime

    def _handle(self) -> int:
        h = self._h
        if h is None:
            raise _closed("runtime")
        return h

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called."""
        return self._h is None

    @property
    def library(self) -> "_native.Library":
        """The shared library this runtime runs on."""
        return self._lib

    def close(self) -> None:
        """Closes the capsules and subscriptions made from this runtime, then
        shuts it down (waiting, bounded by the unload grace, for calls in
        flight) and runs every callback finalizer. Idempotent. Raises
        ``ReentrantError`` from inside a callback."""
        if callbacks.in_callback():
            raise ReentrantError(_REENTRANT, "a runtime cannot be closed from inside one of its callbacks")
        with self._lock:
            h, self._h = self._h, None
            children = list(self._children)
        if h is None:
            return
        for child in children:
            try:
                child.close()
            except Exception:  # pragma: no cover - closing is best effort here
                pass
        self._lib.astrid_runtime_free(h)
        _live_runtimes.discard(self)

    def __enter__(self) -> "Runtime":
        self._handle()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            if self._h is not None and not callbacks.in_callback():
                self.close()
        except Exception:  # pragma: no cover - interpreter shutdown
            pass

    def __repr__(self) -> str:
        return f"<astrid.Runtime {'closed' if self._h is None else 'open'}>"

    # ----------------------------------------------------------- callbacks

    @property
    def callback_errors(self) -> List[BaseException]:
        """Exceptions raised inside this runtime's callbacks so far (a copy)."""
        return self._sink.snapshot()

    def take_callback_errors(self) -> List[BaseException]:
        """Returns and forgets the collected callback exceptions."""
        return self._sink.take()

    def raise_callback_errors(self) -> None:
        """Raises :class:`~astrid.CallbackError` holding the collected callback
        exceptions (and forgets them); does nothing when there are none."""
        errors = self._sink.take()
        if errors:
            raise CallbackError(errors)

    def set_gate(self, gate: Optional[GateFn]) -> None:
        """Installs the security gate (``None`` removes it: the manifest alone
        decides). ``gate(request)`` returns ``True`` / ``False`` or a
        :class:`~astrid.Verdict`; it is asked only about what the manifest
        allows. A gate that raises denies."""
        lib = self._lib
        h = self._handle()
        if gate is None:
            _check(lib, "astrid_runtime_set_gate", lib.astrid_runtime_set_gate, h, _native.GATE_FN(), None,
                   _native.FINALIZER_FN())
            return
        cfn = callbacks.make_gate(gate, self._sink, lib)
        callbacks.install(lib, lib.astrid_runtime_set_gate, h, cfn, (cfn, gate), "astrid_runtime_set_gate")

    def set_accept_verifier(self, verifier: Optional[AcceptVerifierFn]) -> None:
        """Installs ``verifier(request: AcceptRequest)``, asked about every
        local peer connecting to a capsule's unix listener (``None`` removes
        it: peers of the same OS user are then accepted without a principal).
        It returns ``True`` to accept the connection, a ``str`` to accept it
        with that verified principal (1 to 128 bytes of UTF-8 without control
        characters; the capsule reads it with ``connection-principal``), or
        ``False`` / ``None`` to refuse it: the connection is closed before the
        guest sees it. A verifier that raises (or names an invalid principal)
        refuses, and the exception is collected like every callback
        exception. It runs on the thread of the guest call that accepts:
        answer quickly."""
        lib = self._lib
        h = self._handle()
        if verifier is None:
            _check(
                lib,
                "astrid_runtime_set_accept_verifier",
                lib.astrid_runtime_set_accept_verifier,
                h,
                _native.ACCEPT_VERIFIER_FN(),
                None,
                _native.FINALIZER_FN(),
            )
            return
        cfn = callbacks.make_accept_verifier(verifier, self._sink, lib)
        callbacks.install(
            lib, lib.astrid_runtime_set_accept_verifier, h, cfn, (cfn, verifier), "astrid_runtime_set_accept_verifier"
        )

    def assign_unix_socket(self, name: str, path: Optional[PathLike]) -> None:
        """Assigns the socket ``path`` that ``bind-unix`` binds for capsules
        named ``name`` loaded afterwards; ``None`` removes the assignment
        (``bind-unix`` then fails with ``address-not-available``). The guest
        never sees the path. A stale socket file there is replaced when the
        capsule binds; any other file makes the bind fail with
        ``address-in-use``. Raises ``InvalidArgumentError`` (empty name, a path
        longer than 107 bytes)."""
        lib = self._lib
        h = self._handle()
        n = name.encode()
        p = os.fsencode(path) if path is not None else None
        err = c_void_p()
        rc = lib.astrid_runtime_assign_unix_socket(h, n, len(n), p, len(p) if p is not None else 0, byref(err))
        if rc:
            _raise_status(lib, rc, err, "astrid_runtime_assign_unix_socket")

    def set_log_callback(self, log: Optional[LogFn]) -> None:
        """Installs ``log(record: LogRecord)`` for capsule log lines (``None``
        removes it). Runs on the thread executing the guest."""
        lib = self._lib
        h = self._handle()
        if log is None:
            _check(lib, "astrid_runtime_set_log_callback", lib.astrid_runtime_set_log_callback, h, _native.LOG_FN(),
                   None, _native.FINALIZER_FN())
            return
        cfn = callbacks.make_log(log, self._sink)
        callbacks.install(
            lib, lib.astrid_runtime_set_log_callback, h, cfn, (cfn, log), "astrid_runtime_set_log_callback"
        )

    def stats(self) -> RuntimeStats:
        """The runtime's usage figures over every capsule it has loaded
        (unloaded ones included: counters never go down)."""
        lib = self._lib
        out = _native.RuntimeStatsStruct()
        out.size = _ctypes_sizeof(_native.RuntimeStatsStruct)
        _check(lib, "astrid_runtime_stats", lib.astrid_runtime_stats, self._handle(), byref(out))
        return RuntimeStats._from(out)

    def metrics_text(self) -> str:
        """The runtime's and each loaded capsule's figures in the Prometheus
        text exposition format (labels ``capsule``, ``capsule_id``), ready to
        serve as ``/metrics``."""
        lib = self._lib
        text, n = c_void_p(), c_size_t()
        _check(lib, "astrid_runtime_metrics_text", lib.astrid_runtime_metrics_text, self._handle(), byref(text),
               byref(n))
        try:
            return string_at(text.value, n.value).decode()
        finally:
            lib.astrid_text_free(text)

    def set_audit_callback(self, audit: Optional[AuditFn]) -> None:
        """Installs ``audit(event: AuditEvent)`` (``None`` removes it). Runs on
        the runtime's audit thread, one event at a time, in order."""
        lib = self._lib
        h = self._handle()
        if audit is None:
            _check(lib, "astrid_runtime_set_audit_callback", lib.astrid_runtime_set_audit_callback, h,
                   _native.AUDIT_FN(), None, _native.FINALIZER_FN())
            return
        cfn = callbacks.make_audit(audit, self._sink)
        callbacks.install(
            lib, lib.astrid_runtime_set_audit_callback, h, cfn, (cfn, audit), "astrid_runtime_set_audit_callback"
        )

    def set_secret_provider(self, provider: Optional[SecretFn]) -> None:
        """Installs ``provider(request: SecretRequest) -> str | None`` answering
        the ``get-config`` of secret keys (``None`` removes it; secrets then
        read as absent). A raising provider fails that ``get-config``."""
        lib = self._lib
        h = self._handle()
        if provider is None:
            _check(lib, "astrid_runtime_set_secret_callback", lib.astrid_runtime_set_secret_callback, h,
                   _native.SECRET_FN(), None, _native.FINALIZER_FN())
            return
        cfn = callbacks.make_secret(provider, self._sink, lib)
        callbacks.install(
            lib, lib.astrid_runtime_set_secret_callback, h, cfn, (cfn, provider), "astrid_runtime_set_secret_callback"
        )

    def mount_vfs(self, mount: str, provider: Any) -> None:
        """Serves ``mount`` (``"cwd"``, ``"home"`` or ``"tmp"``) from the Python
        object ``provider`` for capsules loaded afterwards (see
        :mod:`astrid.vfs` for its methods); ``None`` unmounts."""
        lib = self._lib
        h = self._handle()
        name = mount.encode()
        if provider is None:
            _check(lib, "astrid_runtime_mount_vfs", lib.astrid_runtime_mount_vfs, h, name, len(name), None, None,
                   _native.FINALIZER_FN())
            return
        ops, keep = build_ops(provider, self._sink)
        ident = callbacks.keep((ops, keep))
        err = c_void_p()
        rc = lib.astrid_runtime_mount_vfs(h, name, len(name), byref(ops), ident, callbacks.FINALIZER, byref(err))
        if rc:
            callbacks.release(ident)  # on failure the library does not run the finalizer
            _raise_status(lib, rc, err, f"astrid_runtime_mount_vfs({mount!r})")

    def set_kv(self, backend: Any) -> None:
        """Serves ``astrid:kv`` for every capsule of this runtime from the
        Python object ``backend`` (see :class:`~astrid.KvBackend` for its
        methods), from the next KV call on. ``None`` goes back to a fresh,
        empty built-in in-memory store. The previous backend is released once
        no call uses it any more; the last one when the runtime closes."""
        lib = self._lib
        h = self._handle()
        if backend is None:
            _check(lib, "astrid_runtime_set_kv", lib.astrid_runtime_set_kv, h, None, None, _native.FINALIZER_FN())
            return
        ops, keep = build_kv_ops(backend, self._sink)
        ident = callbacks.keep((ops, keep))
        err = c_void_p()
        rc = lib.astrid_runtime_set_kv(h, byref(ops), ident, callbacks.FINALIZER, byref(err))
        if rc:
            callbacks.release(ident)  # on failure the library does not run the finalizer
            _raise_status(lib, rc, err, "astrid_runtime_set_kv")

    # ------------------------------------------------------------- capsules

    def _load_options(
        self,
        principal: Optional[str],
        workspace_root: Optional[PathLike],
        home_root: Optional[PathLike],
        memory_limit_bytes: int,
        timeout_ms: int,
        fuel: int,
        config: Optional[Mapping[str, str]],
        fs_write_budget: int,
        watchdog_ms: int,
        net_flags: int = 0,
        providers: Optional[Mapping[str, Any]] = None,
    ) -> Tuple[Any, List[Any], List[int]]:
        opts = LoadOptions()
        opts.size = _ctypes_sizeof(LoadOptions)
        keep: List[Any] = []
        idents: List[int] = []
        if principal is not None:
            p = principal.encode()
            keep.append(p)
            opts.principal, opts.principal_len = p, len(p)
        if workspace_root is not None:
            w = os.fsencode(workspace_root)
            keep.append(w)
            opts.workspace_root, opts.workspace_root_len = w, len(w)
        if home_root is not None:
            r = os.fsencode(home_root)
            keep.append(r)
            opts.home_root, opts.home_root_len = r, len(r)
        opts.memory_limit_bytes = memory_limit_bytes
        opts.timeout_ms = timeout_ms
        opts.fuel = fuel
        arr, n, kept = _config_array(config)
        keep += [arr, kept]
        if arr is not None:
            opts.config, opts.config_len = arr, n
        opts.fs_write_budget = fs_write_budget
        opts.watchdog_ms = watchdog_ms
        opts.net_flags = int(net_flags)
        for mount, provider in (providers or {}).items():
            if provider is None:
                continue
            ops, held = build_ops(provider, self._sink)
            ident = callbacks.keep((ops, held))
            idents.append(ident)
            slot = getattr(opts, mount)
            slot.ops = ctypes.addressof(ops)
            slot.user_data = ident
            slot.finalizer = ctypes.cast(callbacks.FINALIZER, c_void_p).value
        return opts, keep, idents

    def _loaded(self, rc: int, err: c_void_p, out: c_void_p, idents: List[int], what: str) -> "Capsule":
        if rc:
            for ident in idents:  # a failed load runs no finalizer
                callbacks.release(ident)
            _raise_status(self._lib, rc, err, what)
        return Capsule._adopt(self, out.value or 0)

    def load(
        self,
        directory: PathLike,
        *,
        principal: Optional[str] = None,
        workspace_root: Optional[PathLike] = None,
        home_root: Optional[PathLike] = None,
        memory_limit_bytes: int = 0,
        timeout_ms: int = 0,
        fuel: int = 0,
        config: Optional[Mapping[str, str]] = None,
        fs_write_budget: int = 0,
        watchdog_ms: int = 0,
        net_flags: Union[RuntimeFlags, int] = 0,
        cwd_vfs: Any = None,
        home_vfs: Any = None,
        tmp_vfs: Any = None,
    ) -> "Capsule":
        """Loads the capsule in ``directory`` (``Capsule.toml`` plus its
        component). ``principal`` is the capsule's owner; ``workspace_root`` /
        ``home_root`` serve host directories as ``cwd://`` / ``home://``;
        ``config`` gives ``[env]`` values; ``fs_write_budget`` caps the bytes
        it may ever write through ``astrid:fs`` (0: unlimited).
        ``watchdog_ms`` is the run-loop watchdog window: a ``run`` loop that
        goes three windows without a waiting host call is interrupted and
        failed (0: 5000; :data:`WATCHDOG_OFF` exempts the capsule).
        ``net_flags`` gives this capsule alone ``RuntimeFlags.ALLOW_LOOPBACK``,
        ``ALLOW_ANY_BIND`` or ``WASI_SOCKETS``; ``cwd_vfs`` / ``home_vfs`` /
        ``tmp_vfs`` serve its mounts from Python providers (see
        :mod:`astrid.vfs`), in place of the runtime's. Raises
        ``NotFoundError``,
        ``ManifestError``, ``CompileError``, ``LinkError``, ..."""
        if callbacks.in_callback():
            raise ReentrantError(_REENTRANT, "capsules cannot be loaded from inside a callback")
        h = self._handle()
        opts, keep, idents = self._load_options(
            principal,
            workspace_root,
            home_root,
            memory_limit_bytes,
            timeout_ms,
            fuel,
            config,
            fs_write_budget,
            watchdog_ms,
            net_flags,
            {"cwd": cwd_vfs, "home": home_vfs, "tmp": tmp_vfs},
        )
        d = os.fsencode(directory)
        out, err = c_void_p(), c_void_p()
        rc = self._lib.astrid_capsule_load(h, d, len(d), byref(opts), byref(out), byref(err))
        del keep
        return self._loaded(rc, err, out, idents, "astrid_capsule_load")

    def load_bytes(
        self,
        wasm: Bytes,
        manifest: Bytes,
        *,
        principal: Optional[str] = None,
        workspace_root: Optional[PathLike] = None,
        home_root: Optional[PathLike] = None,
        memory_limit_bytes: int = 0,
        timeout_ms: int = 0,
        fuel: int = 0,
        config: Optional[Mapping[str, str]] = None,
        fs_write_budget: int = 0,
        watchdog_ms: int = 0,
    ) -> "Capsule":
        """Loads a capsule from memory: component bytes and ``Capsule.toml``
        text (``[[component]]`` may be omitted). Errors as for :meth:`load`."""
        if callbacks.in_callback():
            raise ReentrantError(_REENTRANT, "capsules cannot be loaded from inside a callback")
        h = self._handle()
        opts, keep, idents = self._load_options(
            principal,
            workspace_root,
            home_root,
            memory_limit_bytes,
            timeout_ms,
            fuel,
            config,
            fs_write_budget,
            watchdog_ms,
        )
        w, m = _encode(wasm), _encode(manifest)
        out, err = c_void_p(), c_void_p()
        rc = self._lib.astrid_capsule_load_bytes(h, w, len(w), m, len(m), byref(opts), byref(out), byref(err))
        del keep
        return self._loaded(rc, err, out, idents, "astrid_capsule_load_bytes")

    # ------------------------------------------------------------------ IPC

    def publish(self, topic: str, payload: Any, *, principal: Optional[str] = None) -> None:
        """Publishes on the IPC bus as the embedder (attribution ``SYSTEM``, or
        ``VERIFIED`` with ``principal``). ``payload`` is JSON text when it is a
        ``str`` / ``bytes``; anything else is serialized with ``json.dumps``.
        Returns once the message is enqueued. Raises ``InvalidArgumentError``
        for a bad topic or non-JSON payload."""
        h = self._handle()
        t = topic.encode()
        body = payload if isinstance(payload, (bytes, str)) else _json.dumps(payload)
        j = _encode(body)
        err = c_void_p()
        if principal is None:
            rc = self._lib.astrid_ipc_publish(h, t, len(t), j, len(j), byref(err))
        else:
            p = principal.encode()
            rc = self._lib.astrid_ipc_publish_as(h, t, len(t), j, len(j), p, len(p), byref(err))
        if rc:
            _raise_status(self._lib, rc, err, "astrid_ipc_publish")

    def subscribe(self, pattern: str, callback: MessageFn) -> "Subscription":
        """Calls ``callback(message)`` for every bus message whose topic
        matches ``pattern`` (``a.*``, ``*``, ``a.*.c``), on the subscription's
        own thread, one at a time, in publish order."""
        h = self._handle()
        lib = self._lib
        p = pattern.encode()
        cfn = callbacks.make_message(callback, self._sink)
        ident = callbacks.keep((cfn, callback))
        out, err = c_void_p(), c_void_p()
        rc = lib.astrid_ipc_subscribe(h, p, len(p), cfn, ident, callbacks.FINALIZER, byref(out), byref(err))
        if rc:
            callbacks.release(ident)  # the library did not take it
            _raise_status(lib, rc, err, "astrid_ipc_subscribe")
        sub = Subscription(self, out.value or 0, pattern)
        self._children.add(sub)
        return sub


def _ctypes_sizeof(t: Any) -> int:
    from ctypes import sizeof

    return sizeof(t)


class Result(c_void_p):
    """What a call returned: the interceptor's :attr:`action` and optional
    :attr:`data`. Both are read from the library on first access (and the
    native result freed then); a result never read is freed when this object
    is garbage-collected (at once in CPython, when the last reference goes).

    (Internally the object is itself the ``astrid_result_t *`` out-parameter
    of the call — one allocation per call; treat it as opaque.)"""

    #: The library that made it (set on the per-library subclass).
    _lib: "ClassVar[_native.Library]"
    #: (action, data, call id) once read; None before.
    _cache: Optional[Tuple[str, Optional[str], int]] = None

    def _load(self) -> Tuple[str, Optional[str], int]:
        # Under a lock: two threads reading one result must not read it while
        # the other frees it.
        with _RESULT_LOCK:
            cache = self._cache
            if cache is not None:
                return cache
            lib = self._lib
            raw = lib.fast_result_action(self, None)
            action = raw.decode() if raw is not None else ""
            try:
                out = _DATA_SLOTS.pop()
            except IndexError:
                out = _DataSlot()
            data: Optional[str] = None
            if lib.fast_result_data(self, out.ptr_ref, out.len_ref):
                b = out.ptr.value or b""
                if len(b) != out.len.value:  # an embedded NUL: copy by length
                    b = string_at(out.ptr, out.len.value)
                data = b.decode()
            _DATA_SLOTS.append(out)
            cache = self._cache = (action, data, int(lib.fast_result_call_id(self)))
            lib.fast_result_free(self)
            return cache

    @property
    def action(self) -> str:
        """``continue``, ``final``, ``deny``, ... (as the capsule answered)."""
        c = self._cache
        return (c if c is not None else self._load())[0]

    @property
    def data(self) -> Optional[str]:
        """The result's data text, ``None`` when it carries none."""
        c = self._cache
        return (c if c is not None else self._load())[1]

    @property
    def call_id(self) -> int:
        """The id the call ran under, unique within the runtime: the id its
        log records, audit events and callback requests carry."""
        c = self._cache
        return (c if c is not None else self._load())[2]

    @property
    def value(self) -> Any:  # type: ignore[override]  # hide c_void_p.value: the pointer is not API
        raise AttributeError("Result has no 'value'; use .action / .data / .json()")

    def json(self) -> Any:
        """:attr:`data` parsed as JSON (``None`` without data)."""
        d = self.data
        return None if d is None else _json.loads(d)

    def __del__(self) -> None:
        if self._cache is None:
            self._lib.fast_result_free(self)  # NULL (a failed call) is a no-op

    def __repr__(self) -> str:
        return f"Result(action={self.action!r}, data={self.data!r})"

    def __reduce__(self) -> Any:
        raise TypeError("astrid.Result cannot be pickled; copy .action and .data")


_RESULT_LOCK = threading.Lock()


class _DataSlot:
    """Reusable out-parameters of ``astrid_result_data`` (pooled)."""

    __slots__ = ("ptr", "len", "ptr_ref", "len_ref")

    def __init__(self) -> None:
        self.ptr = c_char_p()
        self.len = c_size_t()
        self.ptr_ref = byref(self.ptr)
        self.len_ref = byref(self.len)


_DATA_SLOTS: List[_DataSlot] = []


def _result_type(lib: "_native.Library") -> Any:
    """The :class:`Result` subclass bound to ``lib`` (made once per library)."""
    t = lib.__dict__.get("result_type")
    if t is None:
        t = type("Result", (Result,), {"_lib": lib, "__module__": __name__, "__qualname__": "Result"})
        lib.__dict__["result_type"] = t
    return t


_new = object.__new__

# Encoded actions: str -> (bytes, its length as a c_size_t), so the hot path
# neither encodes nor builds the length object. Bounded; cleared when full.
_ACTIONS: Dict[str, Tuple[bytes, c_size_t]] = {}
_ACTIONS_MAX = 512


def _action_entry(action: str) -> Tuple[bytes, c_size_t]:
    a = action.encode()
    entry = (a, c_size_t(len(a)))
    if len(_ACTIONS) >= _ACTIONS_MAX:
        _ACTIONS.clear()
    _ACTIONS[action] = entry
    return entry


# Payload lengths as ready c_size_t arguments, for the common small sizes.
_SIZES: List[c_size_t] = [c_size_t(i) for i in range(1025)]


class _ErrSlot:
    """A reusable ``astrid_error_t *`` out-parameter (pooled: written only
    when a call fails, and reset before it returns to the pool)."""

    __slots__ = ("ptr", "ref")

    def __init__(self) -> None:
        self.ptr = c_void_p()
        self.ref = byref(self.ptr)


_ERR_SLOTS: List[_ErrSlot] = []


def _raise_slot(lib: "_native.Library", rc: int, slot: _ErrSlot, what: str) -> Any:
    err = c_void_p(slot.ptr.value)
    slot.ptr.value = None
    _ERR_SLOTS.append(slot)
    _raise_status(lib, rc, err, what)


class Capsule:
    """A loaded capsule. Thread-safe: calls may run concurrently (up to the
    runtime's pool size). ``close()`` unloads it (cancelling calls in flight)."""

    __slots__ = ("_h", "_hc", "_rt", "_lib", "_call", "_result", "name", "id", "runs_loop", "__weakref__")

    _h: Optional[int]
    _hc: Optional[c_void_p]
    _rt: Runtime
    _lib: "_native.Library"
    _call: Any
    _result: "type[Result]"
    name: str
    id: str
    runs_loop: bool

    def __init__(self) -> None:  # pragma: no cover - use Runtime.load
        raise TypeError("capsules are made by Runtime.load / Runtime.load_bytes")

    @classmethod
    def _adopt(cls, rt: Runtime, handle: int) -> "Capsule":
        self = _new(cls)
        lib = rt._lib
        self._h = handle
        self._hc = c_void_p(handle)  # the handle as a ready ctypes argument
        self._rt = rt
        self._lib = lib
        self._call = lib.fast_capsule_call
        self._result = _result_type(lib)
        #: The capsule's ``[package] name``.
        self.name = (lib.astrid_capsule_name(handle, None) or b"").decode()
        #: The capsule's id (UUIDv5 of its name and component hash).
        self.id = (lib.astrid_capsule_id(handle, None) or b"").decode()
        #: Whether the capsule runs a ``run`` loop (it exports a real ``run``,
        #: not a guest-SDK placeholder): see :meth:`wait_ready`.
        self.runs_loop = bool(lib.astrid_capsule_runs_loop(handle))
        rt._children.add(self)
        return self

    @property
    def runtime(self) -> Runtime:
        """The runtime this capsule was loaded in."""
        rt: Runtime = self._rt
        return rt

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called (or its runtime closed)."""
        return self._h is None

    def call(
        self,
        action: str,
        payload: Bytes = b"",
        *,
        principal: Optional[str] = None,
        config: Optional[Mapping[str, str]] = None,
        timeout: Optional[float] = None,
        fuel: Optional[int] = None,
        cancel: Optional[Cancel] = None,
    ) -> Result:
        """Calls the capsule's ``astrid-hook-trigger(action, payload)`` and
        blocks until it returns (the GIL is released meanwhile). Runs as the
        capsule's owner unless ``principal`` is given; ``config`` overlays
        ``[env]`` values for this call. ``timeout`` (seconds) is a deadline
        for this call that can only shorten the capsule's; ``fuel`` replaces
        the capsule's fuel for this call; ``cancel`` is a :class:`~astrid.Cancel`
        whose ``fire()`` ends the call (and no other). Raises
        ``DeadlineExceededError``, ``OutOfFuelError``, ``TrapError``,
        ``CancelledError``, ``ClosedError``..."""
        # The hot path: every argument is a ready ctypes object (see
        # Library.fast_capsule_call); nothing is converted twice.
        hc = self._hc
        if hc is None:
            raise _closed("capsule")
        if principal is not None or config is not None or timeout is not None or fuel is not None or cancel is not None:
            return self._call_with(hc, action, payload, principal, config, timeout, fuel, cancel)
        try:
            a, alen = _ACTIONS[action]
        except KeyError:
            if not isinstance(action, str):
                raise TypeError(f"action must be a str, not {type(action).__name__}") from None
            a, alen = _action_entry(action)
        if type(payload) is not bytes:
            payload = _encode(payload)
        res = self._result()
        try:
            slot = _ERR_SLOTS.pop()
        except IndexError:
            slot = _ErrSlot()
        n = len(payload)
        size = _SIZES[n] if n <= 1024 else c_size_t(n)
        main = None
        if _get_ident() == _MAIN_IDENT:
            # On the main thread the call carries a token Ctrl-C fires (see
            # astrid.interrupts); spelled out here, as this is every call's path.
            main = self._lib.__dict__.get("main_call")
            if main is None or _interrupts._current[0] is not main:
                main = _interrupts.main_call(self._lib)
        if main is None:
            rc = self._call(hc, a, alen, payload, size, byref(res), slot.ref)
        else:
            main.active = True
            try:
                rc = self._lib.fast_capsule_call_with(hc, main.ref, a, alen, payload, size, byref(res), slot.ref)
            finally:
                lock = main.lock
                lock.acquire()
                main.active = False
                fired = main.fired
                lock.release()
            if fired:
                main.renew()
            if fired and rc:
                try:
                    _interrupts.after_interrupted(self._lib, slot.ptr.value)
                except BaseException:
                    slot.ptr.value = None
                    _ERR_SLOTS.append(slot)
                    raise
        if rc:
            _raise_slot(self._lib, rc, slot, "astrid_capsule_call")
        _ERR_SLOTS.append(slot)
        return res

    def _call_with(
        self,
        hc: c_void_p,
        action: str,
        payload: Bytes,
        principal: Optional[str],
        config: Optional[Mapping[str, str]],
        timeout: Optional[float] = None,
        fuel: Optional[int] = None,
        cancel: Optional[Cancel] = None,
    ) -> Result:
        lib = self._lib
        opts = CallOptions()
        opts.size = _ctypes_sizeof(CallOptions)
        if timeout is not None:
            if timeout <= 0:
                raise ValueError("timeout must be positive (seconds)")
            # Rounded up: a deadline never comes earlier than asked.
            opts.timeout_ms = max(1, math.ceil(timeout * 1000))
        if fuel is not None:
            if fuel <= 0:
                raise ValueError("fuel must be positive")
            opts.fuel = fuel
        main = None
        if cancel is not None:
            opts.cancel = cancel._handle()
        elif _get_ident() == _MAIN_IDENT:
            main = _interrupts.main_call(lib)  # its token is set below, once renewed
        p = principal.encode() if principal is not None else None
        if p is not None:
            opts.principal, opts.principal_len = p, len(p)
        arr, n, kept = _config_array(config)
        if arr is not None:
            opts.config, opts.config_len = arr, n
        a = action.encode()
        body = _encode(payload)
        res, err = self._result(), c_void_p()
        if main is not None:
            main.begin()
            opts.cancel = main.token._handle()
        fired = False
        try:
            rc = lib.astrid_capsule_call_with(hc, byref(opts), a, len(a), body, len(body), byref(res), byref(err))
        finally:
            if main is not None:
                fired = main.end()
        if fired and rc:
            _interrupts.after_interrupted(lib, err.value)
        if rc:
            _raise_status(lib, rc, err, "astrid_capsule_call_with")
        del kept
        return res

    def has_capability(self, name: str) -> bool:
        """Whether the capsule holds a capability (``net``, ``net_connect``,
        ``net_bind``, ``fs_read``, ``fs_write``, ``uplink``)."""
        h = self._h
        if h is None:
            raise _closed("capsule")
        raw = name.encode()
        return bool(self._lib.astrid_capsule_has_capability(h, raw, len(raw)))

    def wait_ready(self, timeout_ms: int) -> None:
        """Waits up to ``timeout_ms`` until the capsule is ready: a capsule
        with a ``run`` loop once the loop calls ``astrid:sys`` ``signal-ready``,
        any other at once. Raises ``DeadlineExceededError`` when it is not
        ready in time; ``TrapError`` / ``DeadlineExceededError`` /
        ``ResourceLimitError`` when the run loop failed or returned (it is not
        restarted); ``ClosedError``; ``ReentrantError`` inside a callback. The
        GIL is released while waiting."""
        h = self._h
        if h is None:
            raise _closed("capsule")
        if timeout_ms < 0:
            timeout_ms = 0
        err = c_void_p()
        rc = self._lib.astrid_capsule_wait_ready(h, timeout_ms, byref(err))
        if rc:
            _raise_status(self._lib, rc, err, "astrid_capsule_wait_ready")

    def stats(self) -> CapsuleStats:
        """What the capsule's calls cost and did since it was loaded. Raises
        ``ClosedError`` once the capsule is closed."""
        h = self._h
        if h is None:
            raise _closed("capsule")
        lib = self._lib
        out = _native.CapsuleStatsStruct()
        out.size = _ctypes_sizeof(_native.CapsuleStatsStruct)
        _check(lib, "astrid_capsule_stats", lib.astrid_capsule_stats, h, byref(out))
        return CapsuleStats._from(out)

    def cancel(self) -> None:
        """Cancels the calls running on this capsule now (they raise
        ``CancelledError``); later calls are unaffected. Allowed in callbacks."""
        h = self._h
        if h is None:
            raise _closed("capsule")
        _check(self._lib, "astrid_capsule_cancel", self._lib.astrid_capsule_cancel, h)

    def close(self) -> None:
        """Unloads the capsule: cancels its calls, waits for them (bounded by the
        runtime's unload grace) and frees it. Idempotent. Raises
        ``ReentrantError`` from inside a callback (nothing is done then)."""
        h = self._h
        if h is None:
            return
        if callbacks.in_callback():
            raise ReentrantError(_REENTRANT, "a capsule cannot be unloaded from inside a callback")
        self._hc = None  # the hot path checks this one
        self._h = None
        err = c_void_p()
        rc = self._lib.astrid_capsule_unload(h, byref(err))
        try:
            self._rt._children.discard(self)
        except Exception:  # pragma: no cover - interpreter shutdown
            pass
        if rc == _CLOSED:
            # Already unloaded by the library (close stays idempotent).
            self._lib.astrid_error_free(err.value)
        elif rc:
            _raise_status(self._lib, rc, err, "astrid_capsule_unload")

    unload = close

    def __enter__(self) -> "Capsule":
        if self._h is None:
            raise _closed("capsule")
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            if self._h is not None and not callbacks.in_callback():
                self.close()
        except Exception:  # pragma: no cover - interpreter shutdown
            pass

    def __repr__(self) -> str:
        state = "closed" if self._h is None else self.id
        return f"<astrid.Capsule {self.name!r} {state}>"


class Subscription:
    """A host subscription to the IPC bus (from :meth:`Runtime.subscribe`).
    ``close()`` stops delivery and returns once no callback runs (from inside
    its own callback it returns at once; delivery stops after that callback)."""

    def __init__(self, rt: Runtime, handle: int, pattern: str) -> None:
        self._h: Optional[int] = handle
        self._lib = rt._lib
        self._rt = rt
        #: The topic pattern subscribed to.
        self.pattern = pattern

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called (or its runtime closed)."""
        return self._h is None

    def close(self) -> None:
        """Stops delivery and releases the callback. Idempotent."""
        h, self._h = self._h, None
        if h is not None:
            self._lib.astrid_subscription_free(h)
            try:
                self._rt._children.discard(self)
            except Exception:  # pragma: no cover - interpreter shutdown
                pass

    def __enter__(self) -> "Subscription":
        if self._h is None:
            raise _closed("subscription")
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # pragma: no cover - interpreter shutdown
            pass

    def __repr__(self) -> str:
        return f"<astrid.Subscription {self.pattern!r} {'closed' if self._h is None else 'open'}>"


@atexit.register
def _close_all_runtimes() -> None:
    """Closes runtimes still open at exit, so no library thread calls into
    an interpreter that is shutting down."""
    for rt in list(_live_runtimes):
        try:
            rt.close()
        except Exception:  # pragma: no cover
            pass
