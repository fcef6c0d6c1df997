"""ctypes mirror of ``astrid.h``: struct layouts, callback prototypes, function
signatures and the code that finds, loads and checks the shared library.

Private: the public API lives in :mod:`astrid`. Every struct here must match the
header byte for byte (``tests/test_layout.py`` compiles a C program against the
header and compares sizes and offsets).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys
import threading
from ctypes import (
    CFUNCTYPE,
    POINTER,
    Structure,
    c_bool,
    c_char_p,
    c_int32,
    c_int64,
    c_size_t,
    c_uint16,
    c_uint32,
    c_uint64,
    c_void_p,
)
from typing import Any, List, NoReturn, Optional, Union

from .errors import AbiMismatchError, LibraryNotFoundError, make_error

#: The ABI version this binding implements (``ASTRID_ABI_VERSION`` of the header).
ABI_VERSION = 2
#: ``ASTRID_NTS``: "NUL-terminated, measure it".
NTS = (1 << (8 * ctypes.sizeof(c_size_t))) - 1

# ---------------------------------------------------------------- structs


class ConfigEntry(Structure):
    _fields_ = [
        ("key", c_char_p),
        ("key_len", c_size_t),
        ("value", c_char_p),
        ("value_len", c_size_t),
    ]


class LoadVfs(Structure):
    """``astrid_load_vfs_t``: a provider for one mount of one capsule (the
    table and finalizer are set as addresses)."""

    _fields_ = [
        ("ops", c_void_p),
        ("user_data", c_void_p),
        ("finalizer", c_void_p),
    ]


class LoadOptions(Structure):
    _fields_ = [
        ("size", c_size_t),
        ("principal", c_char_p),
        ("principal_len", c_size_t),
        ("workspace_root", c_char_p),
        ("workspace_root_len", c_size_t),
        ("home_root", c_char_p),
        ("home_root_len", c_size_t),
        ("memory_limit_bytes", c_uint64),
        ("timeout_ms", c_uint64),
        ("fuel", c_uint64),
        ("config", POINTER(ConfigEntry)),
        ("config_len", c_size_t),
        ("fs_write_budget", c_uint64),
        ("watchdog_ms", c_uint64),
        ("net_flags", c_uint32),
        ("cwd", LoadVfs),
        ("home", LoadVfs),
        ("tmp", LoadVfs),
    ]


class CallOptions(Structure):
    _fields_ = [
        ("size", c_size_t),
        ("principal", c_char_p),
        ("principal_len", c_size_t),
        ("config", POINTER(ConfigEntry)),
        ("config_len", c_size_t),
        ("timeout_ms", c_uint64),
        ("fuel", c_uint64),
        ("cancel", c_void_p),
    ]


class GateRequestInfo(Structure):
    """``astrid_gate_request_info_t``, filled by ``astrid_gate_request_info``
    (the request itself is an opaque handle). String fields are declared
    c_void_p: they are NOT NUL-terminated."""

    _fields_ = [
        ("size", c_size_t),
        ("kind", c_uint32),
        ("port", c_uint16),
        ("capsule", c_void_p),
        ("capsule_len", c_size_t),
        ("principal", c_void_p),
        ("principal_len", c_size_t),
        ("path", c_void_p),
        ("path_len", c_size_t),
        ("host_path", c_void_p),
        ("host_path_len", c_size_t),
        ("method", c_void_p),
        ("method_len", c_size_t),
        ("url", c_void_p),
        ("url_len", c_size_t),
        ("host", c_void_p),
        ("host_len", c_size_t),
        ("transport", c_void_p),
        ("transport_len", c_size_t),
        ("call_id", c_uint64),
    ]


class AcceptRequestInfo(Structure):
    """``astrid_accept_request_info_t``, filled by ``astrid_accept_request_info``
    (the capsule name is NOT NUL-terminated)."""

    _fields_ = [
        ("size", c_size_t),
        ("capsule", c_void_p),
        ("capsule_len", c_size_t),
        ("pid", c_int64),
        ("uid", c_uint32),
        ("gid", c_uint32),
        ("call_id", c_uint64),
    ]


class RuntimeConfig(Structure):
    """``astrid_runtime_config_t``."""

    _fields_ = [
        ("size", c_size_t),
        ("worker_threads", c_uint32),
        ("pool_size", c_uint32),
        ("memory_limit_bytes", c_uint64),
        ("timeout_ms", c_uint64),
        ("fuel", c_uint64),
        ("cache_dir", c_char_p),
        ("cache_dir_len", c_size_t),
        ("flags", c_uint32),
        ("unload_grace_ms", c_uint64),
        ("gate_timeout_ms", c_uint64),
        ("vfs_timeout_ms", c_uint64),
        ("ipc_queue_messages", c_uint32),
        ("ipc_queue_bytes", c_uint64),
        ("kv_quota_bytes", c_uint64),
        ("ipc_publish_bytes_per_sec", c_uint64),
        ("memfs_quota_bytes", c_uint64),
        ("memfs_max_entries", c_uint64),
        ("max_instances", c_uint32),
    ]


class LogRecordStruct(Structure):
    _fields_ = [
        ("size", c_size_t),
        ("level", c_uint32),
        ("capsule", c_void_p),
        ("capsule_len", c_size_t),
        ("principal", c_void_p),
        ("principal_len", c_size_t),
        ("message", c_void_p),
        ("message_len", c_size_t),
        ("call_id", c_uint64),
    ]


class AuditEventStruct(Structure):
    _fields_ = [
        ("size", c_size_t),
        ("capsule", c_void_p),
        ("capsule_len", c_size_t),
        ("capsule_id", c_void_p),
        ("capsule_id_len", c_size_t),
        ("principal", c_void_p),
        ("principal_len", c_size_t),
        ("call", c_void_p),
        ("call_len", c_size_t),
        ("target", c_void_p),
        ("target_len", c_size_t),
        ("bytes", c_uint64),
        ("outcome", c_uint32),
        ("reason", c_void_p),
        ("reason_len", c_size_t),
        ("elapsed_us", c_uint64),
        ("call_id", c_uint64),
    ]


class SecretRequestInfo(Structure):
    """``astrid_secret_request_info_t``, filled by ``astrid_secret_request_info``."""

    _fields_ = [
        ("size", c_size_t),
        ("capsule", c_void_p),
        ("capsule_len", c_size_t),
        ("capsule_id", c_void_p),
        ("capsule_id_len", c_size_t),
        ("principal", c_void_p),
        ("principal_len", c_size_t),
        ("key", c_void_p),
        ("key_len", c_size_t),
        ("call_id", c_uint64),
    ]


class VfsStatStruct(Structure):
    _fields_ = [
        ("size", c_uint64),
        ("kind", c_uint32),
        ("mode", c_uint32),
        ("has_times", c_uint32),
        ("modified_nsec", c_uint32),
        ("modified_sec", c_int64),
        ("created_sec", c_int64),
        ("accessed_sec", c_int64),
        ("created_nsec", c_uint32),
        ("accessed_nsec", c_uint32),
    ]


class MessageStruct(Structure):
    _fields_ = [
        ("size", c_size_t),
        ("topic", c_void_p),
        ("topic_len", c_size_t),
        ("payload", c_void_p),
        ("payload_len", c_size_t),
        ("source_id", c_void_p),
        ("source_id_len", c_size_t),
        ("attribution", c_uint32),
        ("principal", c_void_p),
        ("principal_len", c_size_t),
        ("sequence", c_uint64),
        ("timestamp_ms", c_uint64),
        ("depth", c_uint32),
        ("dropped", c_uint64),
        ("lagged", c_uint64),
    ]


class UsageStruct(Structure):
    """``astrid_usage_t``: the counters of the stats structs."""

    _fields_ = [
        ("calls", c_uint64 * 8),
        ("fuel_consumed", c_uint64),
        ("guest_ns", c_uint64),
        ("host_calls", c_uint64 * 16),
        ("host_ns", c_uint64 * 16),
        ("gate_asks", c_uint64),
        ("gate_denials", c_uint64),
        ("read_bytes", c_uint64 * 4),
        ("written_bytes", c_uint64 * 4),
        ("bus_published", c_uint64),
        ("bus_delivered", c_uint64),
        ("bus_dropped", c_uint64),
        ("bus_lagged", c_uint64),
        ("dispatch_dropped", c_uint64),
    ]


class CapsuleStatsStruct(Structure):
    _fields_ = [
        ("size", c_size_t),
        ("usage", UsageStruct),
        ("instances_live", c_uint64),
        ("instances_idle", c_uint64),
        ("memory_bytes", c_uint64),
        ("memory_peak_bytes", c_uint64),
        ("kv_bytes", c_uint64),
    ]


class RuntimeStatsStruct(Structure):
    _fields_ = [
        ("size", c_size_t),
        ("usage", UsageStruct),
        ("capsules_loaded", c_uint64),
        ("instances_live", c_uint64),
        ("instances_idle", c_uint64),
        ("memory_bytes", c_uint64),
    ]


class KvNamespaceStruct(Structure):
    _fields_ = [
        ("size", c_size_t),
        ("scope", c_void_p),
        ("scope_len", c_size_t),
        ("capsule_id", c_void_p),
        ("capsule_id_len", c_size_t),
        ("call_id", c_uint64),
    ]


# ------------------------------------------------------- callback prototypes
# Pointers to borrowed structs and strings are taken as c_void_p (plain ints in
# Python): cheaper than POINTER(...) objects and never mistaken for
# NUL-terminated strings.

GATE_FN = CFUNCTYPE(c_uint32, c_void_p, c_void_p)
FINALIZER_FN = CFUNCTYPE(None, c_void_p)
LOG_FN = CFUNCTYPE(None, c_void_p, c_void_p)
AUDIT_FN = CFUNCTYPE(None, c_void_p, c_void_p)
SECRET_FN = CFUNCTYPE(c_int32, c_void_p, c_void_p)
MESSAGE_FN = CFUNCTYPE(None, c_void_p, c_void_p)
ACCEPT_VERIFIER_FN = CFUNCTYPE(c_uint32, c_void_p, c_void_p)

VFS_DIR_SINK_FN = CFUNCTYPE(c_int32, c_void_p, c_char_p, c_size_t, c_uint32)
VFS_STAT_FN = CFUNCTYPE(c_int32, c_void_p, c_void_p, c_size_t, c_uint32, c_void_p)
VFS_OPEN_FN = CFUNCTYPE(c_int32, c_void_p, c_void_p, c_size_t, c_uint32, c_void_p)
VFS_READ_AT_FN = CFUNCTYPE(c_int32, c_void_p, c_uint64, c_uint64, c_void_p, c_size_t, c_void_p)
VFS_WRITE_AT_FN = CFUNCTYPE(c_int32, c_void_p, c_uint64, c_uint64, c_void_p, c_size_t, c_void_p)
VFS_CLOSE_FN = CFUNCTYPE(c_int32, c_void_p, c_uint64)
VFS_SYNC_FN = CFUNCTYPE(c_int32, c_void_p, c_uint64, c_uint32)
VFS_SET_LEN_FN = CFUNCTYPE(c_int32, c_void_p, c_uint64, c_uint64)
VFS_FSTAT_FN = CFUNCTYPE(c_int32, c_void_p, c_uint64, c_void_p)
VFS_READ_DIR_FN = CFUNCTYPE(c_int32, c_void_p, c_void_p, c_size_t, c_void_p, c_void_p)
VFS_PATH_FN = CFUNCTYPE(c_int32, c_void_p, c_void_p, c_size_t)
VFS_TWO_PATHS_FN = CFUNCTYPE(c_int32, c_void_p, c_void_p, c_size_t, c_void_p, c_size_t)
VFS_READ_LINK_FN = CFUNCTYPE(c_int32, c_void_p, c_void_p, c_size_t, c_void_p, c_size_t, c_void_p)

KV_VALUE_SINK_FN = CFUNCTYPE(None, c_void_p, c_char_p, c_size_t)
KV_KEY_SINK_FN = CFUNCTYPE(c_int32, c_void_p, c_char_p, c_size_t)
KV_GET_FN = CFUNCTYPE(c_int32, c_void_p, c_void_p, c_void_p, c_size_t, c_void_p, c_void_p)
KV_SET_FN = CFUNCTYPE(c_int32, c_void_p, c_void_p, c_void_p, c_size_t, c_void_p, c_size_t)
KV_REMOVE_FN = CFUNCTYPE(c_int32, c_void_p, c_void_p, c_void_p, c_size_t)
KV_LIST_FN = CFUNCTYPE(
    c_int32, c_void_p, c_void_p, c_void_p, c_size_t, c_void_p, c_size_t, c_uint32, c_void_p, c_void_p
)
KV_CLEAR_PREFIX_FN = CFUNCTYPE(c_int32, c_void_p, c_void_p, c_void_p, c_size_t, c_void_p)
KV_CAS_FN = CFUNCTYPE(
    c_int32, c_void_p, c_void_p, c_void_p, c_size_t, c_uint32, c_void_p, c_size_t, c_void_p, c_size_t
)


class VfsOps(Structure):
    _fields_ = [
        ("size", c_size_t),
        ("stat", VFS_STAT_FN),
        ("open", VFS_OPEN_FN),
        ("read_at", VFS_READ_AT_FN),
        ("write_at", VFS_WRITE_AT_FN),
        ("close", VFS_CLOSE_FN),
        ("sync", VFS_SYNC_FN),
        ("set_len", VFS_SET_LEN_FN),
        ("fstat", VFS_FSTAT_FN),
        ("read_dir", VFS_READ_DIR_FN),
        ("mkdir", VFS_PATH_FN),
        ("remove_file", VFS_PATH_FN),
        ("remove_dir", VFS_PATH_FN),
        ("rename", VFS_TWO_PATHS_FN),
        ("hard_link", VFS_TWO_PATHS_FN),
        ("read_link", VFS_READ_LINK_FN),
    ]


class KvOps(Structure):
    _fields_ = [
        ("size", c_size_t),
        ("get", KV_GET_FN),
        ("set", KV_SET_FN),
        ("remove", KV_REMOVE_FN),
        ("list", KV_LIST_FN),
        ("clear_prefix", KV_CLEAR_PREFIX_FN),
        ("cas", KV_CAS_FN),
    ]


# ------------------------------------------------------------- functions

_VP = c_void_p
_P_VP = POINTER(c_void_p)
_P_SIZE = POINTER(c_size_t)

# name: (restype, argtypes).
_SIGNATURES = {
    "astrid_abi_version": (c_uint32, []),
    "astrid_version": (c_char_p, []),
    "astrid_runtime_config_init": (c_int32, [POINTER(RuntimeConfig), _P_VP]),
    "astrid_runtime_new": (c_int32, [POINTER(RuntimeConfig), _P_VP, _P_VP]),
    "astrid_runtime_free": (None, [_VP]),
    "astrid_load_options_init": (c_int32, [POINTER(LoadOptions), _P_VP]),
    "astrid_call_options_init": (c_int32, [POINTER(CallOptions), _P_VP]),
    "astrid_capsule_load": (c_int32, [_VP, c_char_p, c_size_t, POINTER(LoadOptions), _P_VP, _P_VP]),
    "astrid_capsule_load_bytes": (
        c_int32,
        [_VP, c_char_p, c_size_t, c_char_p, c_size_t, POINTER(LoadOptions), _P_VP, _P_VP],
    ),
    "astrid_capsule_call": (c_int32, [_VP, c_char_p, c_size_t, c_char_p, c_size_t, _P_VP, _P_VP]),
    "astrid_capsule_call_with": (
        c_int32,
        [_VP, POINTER(CallOptions), c_char_p, c_size_t, c_char_p, c_size_t, _P_VP, _P_VP],
    ),
    "astrid_result_action": (c_char_p, [_VP, _P_SIZE]),
    "astrid_result_data": (c_bool, [_VP, _P_VP, _P_SIZE]),
    "astrid_result_free": (None, [_VP]),
    "astrid_capsule_cancel": (c_int32, [_VP, _P_VP]),
    "astrid_cancel_new": (c_int32, [_P_VP, _P_VP]),
    "astrid_cancel_fire": (c_int32, [_VP, _P_VP]),
    "astrid_cancel_is_fired": (c_bool, [_VP]),
    "astrid_cancel_free": (None, [_VP]),
    "astrid_result_call_id": (c_uint64, [_VP]),
    "astrid_error_call_id": (c_uint64, [_VP]),
    "astrid_callback_call_id": (c_uint64, []),
    "astrid_capsule_stats": (c_int32, [_VP, POINTER(CapsuleStatsStruct), _P_VP]),
    "astrid_runtime_stats": (c_int32, [_VP, POINTER(RuntimeStatsStruct), _P_VP]),
    "astrid_runtime_metrics_text": (c_int32, [_VP, _P_VP, _P_SIZE, _P_VP]),
    "astrid_text_free": (None, [_VP]),
    "astrid_capsule_unload": (c_int32, [_VP, _P_VP]),
    "astrid_capsule_name": (c_char_p, [_VP, _P_SIZE]),
    "astrid_capsule_id": (c_char_p, [_VP, _P_SIZE]),
    "astrid_capsule_has_capability": (c_bool, [_VP, c_char_p, c_size_t]),
    "astrid_capsule_wait_ready": (c_int32, [_VP, c_uint64, _P_VP]),
    "astrid_capsule_runs_loop": (c_bool, [_VP]),
    "astrid_error_code": (c_int32, [_VP]),
    "astrid_error_message": (c_char_p, [_VP]),
    "astrid_error_free": (None, [_VP]),
    "astrid_runtime_set_gate": (c_int32, [_VP, GATE_FN, _VP, FINALIZER_FN, _P_VP]),
    "astrid_gate_request_info": (c_int32, [_VP, POINTER(GateRequestInfo), _P_VP]),
    "astrid_gate_request_set_reason": (c_int32, [_VP, c_char_p, c_size_t, _P_VP]),
    "astrid_gate_request_defer": (c_int32, [_VP, _P_VP, _P_VP]),
    "astrid_gate_ticket_resolve": (c_int32, [_VP, c_uint32, c_char_p, c_size_t, _P_VP]),
    "astrid_gate_ticket_free": (None, [_VP]),
    "astrid_runtime_set_log_callback": (c_int32, [_VP, LOG_FN, _VP, FINALIZER_FN, _P_VP]),
    "astrid_runtime_set_audit_callback": (c_int32, [_VP, AUDIT_FN, _VP, FINALIZER_FN, _P_VP]),
    "astrid_runtime_set_secret_callback": (c_int32, [_VP, SECRET_FN, _VP, FINALIZER_FN, _P_VP]),
    "astrid_secret_request_info": (c_int32, [_VP, POINTER(SecretRequestInfo), _P_VP]),
    "astrid_secret_request_set_value": (c_int32, [_VP, c_char_p, c_size_t, _P_VP]),
    "astrid_runtime_mount_vfs": (
        c_int32,
        [_VP, c_char_p, c_size_t, POINTER(VfsOps), _VP, FINALIZER_FN, _P_VP],
    ),
    "astrid_runtime_set_kv": (c_int32, [_VP, POINTER(KvOps), _VP, FINALIZER_FN, _P_VP]),
    "astrid_ipc_publish": (c_int32, [_VP, c_char_p, c_size_t, c_char_p, c_size_t, _P_VP]),
    "astrid_ipc_publish_as": (
        c_int32,
        [_VP, c_char_p, c_size_t, c_char_p, c_size_t, c_char_p, c_size_t, _P_VP],
    ),
    "astrid_ipc_subscribe": (
        c_int32,
        [_VP, c_char_p, c_size_t, MESSAGE_FN, _VP, FINALIZER_FN, _P_VP, _P_VP],
    ),
    "astrid_subscription_free": (None, [_VP]),
    "astrid_runtime_set_accept_verifier": (c_int32, [_VP, ACCEPT_VERIFIER_FN, _VP, FINALIZER_FN, _P_VP]),
    "astrid_accept_request_info": (c_int32, [_VP, POINTER(AcceptRequestInfo), _P_VP]),
    "astrid_accept_request_set_principal": (c_int32, [_VP, c_char_p, c_size_t, _P_VP]),
    "astrid_runtime_assign_unix_socket": (c_int32, [_VP, c_char_p, c_size_t, c_char_p, c_size_t, _P_VP]),
}


class Library:
    """One loaded, ABI-checked astrid shared library with its functions bound
    (``lib.astrid_capsule_call`` etc., argument and result types set once)."""

    path: str

    def __init__(self, path: str) -> None:
        try:
            dll = ctypes.CDLL(path)
        except OSError as e:
            raise LibraryNotFoundError(f"cannot load the astrid library {path!r}: {e}") from e
        try:
            abi = dll.astrid_abi_version
        except AttributeError as e:
            raise LibraryNotFoundError(f"{path!r} is not an astrid library (no astrid_abi_version)") from e
        abi.argtypes = []
        abi.restype = c_uint32
        found = int(abi())
        if found != ABI_VERSION:
            raise AbiMismatchError(path, found, ABI_VERSION)
        self.path = path
        self.dll = dll
        for name, (restype, argtypes) in _SIGNATURES.items():
            try:
                fn = getattr(dll, name)
            except AttributeError as e:
                raise LibraryNotFoundError(f"{path!r} lacks {name}: not a library of this binding's astrid.h") from e
            fn.restype = restype
            fn.argtypes = argtypes
            setattr(self, name, fn)
        # The hot path's functions, without argtypes: ctypes' per-argument
        # conversion costs ~60 ns an argument, so the callers pass only
        # ready-made ctypes objects (c_void_p, c_size_t, byref) and bytes,
        # whose C types are then exact.
        self.fast_capsule_call = self._unprototyped(dll, "astrid_capsule_call", c_int32)
        self.fast_capsule_call_with = self._unprototyped(dll, "astrid_capsule_call_with", c_int32)
        # The result accessors never block nor call back: they may keep the
        # GIL (PyDLL), which saves its release and reacquisition.
        keep_gil = ctypes.PyDLL(path)
        self.fast_result_free = self._unprototyped(keep_gil, "astrid_result_free", None)
        self.fast_result_action = self._unprototyped(keep_gil, "astrid_result_action", c_char_p)
        self.fast_result_data = self._unprototyped(keep_gil, "astrid_result_data", c_bool)
        self.fast_result_call_id = self._unprototyped(keep_gil, "astrid_result_call_id", c_uint64)

    @staticmethod
    def _unprototyped(dll: ctypes.CDLL, name: str, restype: Any) -> Any:
        fn = dll[name]  # a new function object, apart from the prototyped one
        fn.restype = restype
        return fn

    def __getattr__(self, name: str) -> Any:
        # Only reached for names not bound in __init__ (declared for type
        # checkers, which cannot see the functions bound with setattr).
        raise AttributeError(f"the astrid library binding has no {name}")

    def version(self) -> str:
        """The library's version string (``astrid_version()``)."""
        raw: bytes = self.astrid_version()
        return raw.decode()

    def abi_version(self) -> int:
        """``astrid_abi_version()`` of this library."""
        return int(self.astrid_abi_version())


def raise_status(lib: Library, rc: int, err: c_void_p, what: str) -> NoReturn:
    """Raises the :class:`~astrid.AstridError` subclass for a failed call,
    with the library's message from the error object ``err`` (the
    ``astrid_error_t *`` out-parameter of that call), which it frees."""
    e = err.value
    call_id = 0
    if e:
        try:
            code = int(lib.astrid_error_code(e))
            message = (lib.astrid_error_message(e) or b"").decode("utf-8", "replace")
            call_id = int(lib.astrid_error_call_id(e))
        finally:
            lib.astrid_error_free(e)
    else:
        code, message = rc, f"{what} failed"
    error = make_error(code, message)
    error.call_id = call_id
    raise error


def check(lib: Library, what: str, fn: Any, *args: Any) -> None:
    """Calls ``fn(*args, &err)`` (a library function whose last parameter is
    ``astrid_error_t **err``) and raises with the library's message when it
    fails."""
    err = c_void_p()
    rc = fn(*args, ctypes.byref(err))
    if rc:
        raise_status(lib, rc, err, what)


_LIB_NAME = "libastrid.dylib" if sys.platform == "darwin" else "astrid.dll" if os.name == "nt" else "libastrid.so"
_lock = threading.Lock()
_current: Optional[Library] = None


def candidate_paths() -> List[str]:
    """Where :func:`library` looks when no explicit path was given, in order:
    ``$ASTRID_LIB``, then the library file next to this package, then the
    system loader's search (``LD_LIBRARY_PATH``, ``ldconfig``)."""
    paths: List[str] = []
    env = os.environ.get("ASTRID_LIB")
    if env:
        paths.append(env)
        return paths  # an explicit setting is never silently overridden
    here = os.path.dirname(os.path.abspath(__file__))
    beside = os.path.join(here, _LIB_NAME)
    if os.path.exists(beside):
        paths.append(beside)
    found = ctypes.util.find_library("astrid")
    paths.append(found or _LIB_NAME)
    return paths


def load_library(path: Union[str, "os.PathLike[str]", None] = None) -> Library:
    """Loads and ABI-checks the astrid library and makes it the one every
    later :class:`~astrid.Runtime` uses.

    ``path`` (explicit) wins; without it the search of :func:`candidate_paths`
    applies. Raises :class:`~astrid.LibraryNotFoundError` or
    :class:`~astrid.AbiMismatchError`; on failure the previously loaded
    library (if any) stays in use."""
    global _current
    lib: Optional[Library] = None
    if path is not None:
        lib = Library(os.fspath(path))
    else:
        errors: List[str] = []
        for candidate in candidate_paths():
            try:
                lib = Library(candidate)
                break
            except AbiMismatchError:
                raise
            except LibraryNotFoundError as e:
                errors.append(str(e))
        if lib is None:
            raise LibraryNotFoundError(
                "no astrid library found; pass a path to astrid.load_library(), set ASTRID_LIB to the "
                f"libastrid shared object, or put {_LIB_NAME} next to the astrid package ({'; '.join(errors)})"
            )
    with _lock:
        _current = lib
    return lib


def library() -> Library:
    """The library in use, loading it by the default search on first use."""
    lib = _current
    if lib is not None:
        return lib
    with _lock:
        current = _current
    return current if current is not None else load_library()


def load_at_import() -> None:
    """Import-time check: with ``ASTRID_LIB`` set, or a library next to the
    package, load and ABI-check it now so a mismatch fails ``import astrid``.
    Otherwise loading waits for first use (or :func:`load_library`)."""
    here = os.path.dirname(os.path.abspath(__file__))
    if os.environ.get("ASTRID_LIB") or os.path.exists(os.path.join(here, _LIB_NAME)):
        load_library()
