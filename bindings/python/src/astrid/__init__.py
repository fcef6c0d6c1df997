"""astrid — Python binding (pure ctypes) of the astrid capsule runtime.

Three lines::

    import astrid
    with astrid.Runtime() as rt, rt.load("build/capsules/hello") as capsule:
        print(capsule.call("greet", b'{"name":"py"}').data)

The shared library is found, in this order: the path given to
:func:`load_library` (or ``Runtime(library=...)``); the ``ASTRID_LIB``
environment variable (path of ``libastrid.so``); ``libastrid.so`` next to this
package; the system loader's search path. With ``ASTRID_LIB`` set or a library
next to the package, it is loaded and ABI-checked at import, so ``import
astrid`` fails with :class:`AbiMismatchError` on a mismatched library.
"""

from __future__ import annotations

from . import _native
from ._native import ABI_VERSION, Library, candidate_paths, load_library
from .callbacks import AcceptRequest, GateRequest, GateTicket, SecretRequest, live_callbacks
from .errors import (
    AbiMismatchError,
    AstridError,
    CallbackError,
    CancelledError,
    ClosedError,
    CompileError,
    DeadlineExceededError,
    DeniedError,
    InternalError,
    InvalidArgumentError,
    IoError,
    LibraryError,
    LibraryNotFoundError,
    LinkError,
    ManifestError,
    NotFoundError,
    OutOfFuelError,
    PanicError,
    ReentrantError,
    ResourceLimitError,
    TrapError,
    Utf8Error,
    error_class,
)
from .cancel import Cancel, callback_call_id
from .stats import CapsuleStats, RuntimeStats, Usage
from .kv import KvBackend, KvError, KvNamespace, KvStatus
from .runtime import WATCHDOG_OFF, Capsule, Result, Runtime, Subscription
from .types import (
    Attribution,
    AuditEvent,
    AuditOutcome,
    GateKind,
    LogLevel,
    LogRecord,
    Message,
    RuntimeFlags,
    Verdict,
)
from .vfs import FileKind, OpenFlags, Stat, Vfs, VfsError, VfsStatus

__version__ = "0.1.0"


def library() -> Library:
    """The shared library in use (loading it by the default search if needed)."""
    return _native.library()


def version() -> str:
    """The library's version string, e.g. ``"0.1.0"``."""
    return _native.library().version()


def abi_version() -> int:
    """``astrid_abi_version()`` of the library in use."""
    return _native.library().abi_version()


__all__ = [
    "ABI_VERSION",
    "AcceptRequest",
    "AbiMismatchError",
    "AstridError",
    "Attribution",
    "AuditEvent",
    "AuditOutcome",
    "CallbackError",
    "Cancel",
    "CapsuleStats",
    "RuntimeStats",
    "Usage",
    "callback_call_id",
    "CancelledError",
    "Capsule",
    "ClosedError",
    "CompileError",
    "DeadlineExceededError",
    "DeniedError",
    "FileKind",
    "GateKind",
    "GateRequest",
    "GateTicket",
    "InternalError",
    "InvalidArgumentError",
    "IoError",
    "KvBackend",
    "KvError",
    "KvNamespace",
    "KvStatus",
    "Library",
    "LibraryError",
    "LibraryNotFoundError",
    "LinkError",
    "LogLevel",
    "LogRecord",
    "ManifestError",
    "Message",
    "NotFoundError",
    "OpenFlags",
    "OutOfFuelError",
    "PanicError",
    "ReentrantError",
    "ResourceLimitError",
    "Result",
    "Runtime",
    "RuntimeFlags",
    "SecretRequest",
    "Stat",
    "Subscription",
    "TrapError",
    "Utf8Error",
    "Verdict",
    "Vfs",
    "VfsError",
    "VfsStatus",
    "WATCHDOG_OFF",
    "abi_version",
    "candidate_paths",
    "error_class",
    "library",
    "live_callbacks",
    "load_library",
    "version",
]

# Fail `import astrid` on a mismatched library when one is configured.
_native.load_at_import()
