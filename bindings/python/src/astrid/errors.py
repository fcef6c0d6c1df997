"""Exceptions raised by the astrid binding.

Every failing library call raises a subclass of :class:`AstridError` chosen by
the ``ASTRID_E_*`` status code (``.code``) and carrying the library's message
(``.message``, ``"<kind>: <what>: <cause>..."``). Problems finding or loading
the shared library itself raise :class:`LibraryError` (an :class:`ImportError`).
"""

from __future__ import annotations

import builtins
from typing import Dict, List, Optional, Sequence, Type

__all__ = [
    "AstridError",
    "InvalidArgumentError",
    "Utf8Error",
    "ManifestError",
    "CompileError",
    "LinkError",
    "NotFoundError",
    "DeniedError",
    "DeadlineExceededError",
    "CancelledError",
    "OutOfFuelError",
    "ResourceLimitError",
    "TrapError",
    "ClosedError",
    "ReentrantError",
    "IoError",
    "PanicError",
    "InternalError",
    "CallbackError",
    "LibraryError",
    "LibraryNotFoundError",
    "AbiMismatchError",
    "error_class",
]


class AstridError(Exception):
    """A failed astrid call: ``code`` is the ``ASTRID_E_*`` status (negative),
    ``message`` the library's explanation."""

    #: The status code this class stands for (subclasses override it).
    CODE: int = 0

    def __init__(self, code: int, message: str) -> None:
        super().__init__(code, message)
        self.code: int = code
        self.message: str = message
        #: The failed guest call's id (the id its log lines and audit events
        #: carry); 0 for errors of no call and calls that never started.
        self.call_id: int = 0

    def __str__(self) -> str:
        return f"{self.message} (astrid status {self.code})"


class InvalidArgumentError(AstridError):
    """``ASTRID_E_INVALID_ARGUMENT``: NULL where not allowed, bad length or flag."""

    CODE = -1


class Utf8Error(AstridError):
    """``ASTRID_E_UTF8``: a string argument is not valid UTF-8."""

    CODE = -2


class ManifestError(AstridError):
    """``ASTRID_E_MANIFEST``: Capsule.toml missing, unparsable or invalid."""

    CODE = -3


class CompileError(AstridError):
    """``ASTRID_E_COMPILE``: the bytes are not a valid WebAssembly component."""

    CODE = -4


class LinkError(AstridError):
    """``ASTRID_E_LINK``: the component imports something the runtime does not serve."""

    CODE = -5


class NotFoundError(AstridError):
    """``ASTRID_E_NOT_FOUND``: file, capsule or export not found."""

    CODE = -6


class DeniedError(AstridError):
    """``ASTRID_E_DENIED``: refused by policy (manifest or gate)."""

    CODE = -7


class DeadlineExceededError(AstridError, builtins.TimeoutError):
    """``ASTRID_E_TIMEOUT``: a call ran past its wall-clock deadline.
    Also a builtin :class:`TimeoutError`."""

    CODE = -8


class CancelledError(AstridError):
    """``ASTRID_E_CANCELLED``: the call was cancelled or its capsule unloaded."""

    CODE = -9


class OutOfFuelError(AstridError):
    """``ASTRID_E_OUT_OF_FUEL``: the call exhausted its instruction budget."""

    CODE = -10


class ResourceLimitError(AstridError):
    """``ASTRID_E_RESOURCE_LIMIT``: a memory or table ceiling, or a full pool."""

    CODE = -11


class TrapError(AstridError):
    """``ASTRID_E_TRAP``: the guest trapped (the message has the backtrace)."""

    CODE = -12


class ClosedError(AstridError):
    """``ASTRID_E_CLOSED``: the runtime, capsule or subscription is closed.

    Raised by the library for dead handles and by the binding itself for any
    use of an object after its ``close()``."""

    CODE = -13


class ReentrantError(AstridError):
    """``ASTRID_E_REENTRANT``: a blocking call was made from inside a callback."""

    CODE = -14


class IoError(AstridError):
    """``ASTRID_E_IO``: host I/O failure."""

    CODE = -15


class PanicError(AstridError):
    """``ASTRID_E_PANIC``: a Rust panic was caught at the boundary (a library bug)."""

    CODE = -16


class InternalError(AstridError):
    """``ASTRID_E_INTERNAL``: anything else."""

    CODE = -17


_BY_CODE: Dict[int, Type[AstridError]] = {
    cls.CODE: cls
    for cls in (
        InvalidArgumentError,
        Utf8Error,
        ManifestError,
        CompileError,
        LinkError,
        NotFoundError,
        DeniedError,
        DeadlineExceededError,
        CancelledError,
        OutOfFuelError,
        ResourceLimitError,
        TrapError,
        ClosedError,
        ReentrantError,
        IoError,
        PanicError,
        InternalError,
    )
}


def error_class(code: int) -> Type[AstridError]:
    """The exception class for an ``ASTRID_E_*`` code (:class:`AstridError`
    itself for codes this binding does not know)."""
    return _BY_CODE.get(code, AstridError)


def make_error(code: int, message: str) -> AstridError:
    """An exception instance of the right class for ``code``."""
    return _BY_CODE.get(code, AstridError)(code, message)


class CallbackError(Exception):
    """Python exceptions that escaped embedder callbacks (gate, VFS, log, ...).

    The library never sees them (a raising gate denies, a raising VFS method
    answers ``ASTRID_VFS_IO``, ...); they are logged on the ``astrid`` logger
    and collected on the runtime, whose :meth:`Runtime.raise_callback_errors`
    raises this with ``errors`` holding them (the first is also ``__cause__``)."""

    def __init__(self, errors: Sequence[BaseException]) -> None:
        self.errors: List[BaseException] = list(errors)
        first = self.errors[0] if self.errors else None
        what = f"{type(first).__name__}: {first}" if first is not None else "none"
        super().__init__(f"{len(self.errors)} exception(s) raised inside astrid callbacks; first: {what}")
        self.__cause__ = first


class LibraryError(ImportError):
    """The astrid shared library could not be used."""


class LibraryNotFoundError(LibraryError):
    """No astrid shared library was found (or it failed to load)."""


class AbiMismatchError(LibraryError):
    """The library's ``astrid_abi_version()`` differs from the one this binding
    was written for: using it could corrupt memory, so it is refused."""

    def __init__(self, path: Optional[str], found: int, expected: int) -> None:
        super().__init__(
            f"astrid library {path or '<unknown>'} implements ABI version {found}, "
            f"but this binding needs ABI version {expected}"
        )
        self.path: Optional[str] = path
        self.found: int = found
        self.expected: int = expected
