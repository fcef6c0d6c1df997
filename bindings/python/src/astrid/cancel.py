"""Per-call cancel tokens (``astrid_cancel_t``)."""

from __future__ import annotations

from ctypes import byref, c_void_p
from typing import Any, Optional

from . import _native
from .errors import ClosedError


def callback_call_id() -> int:
    """The id of the guest call the calling thread serves: inside any
    callback (gate, VFS, KV, secret, accept verifier, log), the call whose
    host call it answers; 0 elsewhere. VFS and KV methods have no request
    object: this is how they learn the call."""
    return int(_native.library().astrid_callback_call_id())


class Cancel:
    """A token that ends the calls it governs when fired: pass it as
    ``Capsule.call(..., cancel=token)``. ``fire()`` may be called from any
    thread (a signal handler's thread, a timer, another request), any number
    of times, and never waits for a call; a call started with a fired token
    raises ``CancelledError`` without running the guest. One token may govern
    many calls on any capsules; other calls are untouched. ``close()`` frees
    it (also on garbage collection); calls it governs run on."""

    __slots__ = ("_h", "_lib", "__weakref__")

    def __init__(self, *, library: Optional[_native.Library] = None) -> None:
        self._h: Optional[int] = None
        lib = library if library is not None else _native.library()
        self._lib = lib
        out = c_void_p()
        _native.check(lib, "astrid_cancel_new", lib.astrid_cancel_new, byref(out))
        self._h = out.value

    def _handle(self) -> int:
        h = self._h
        if h is None:
            raise ClosedError(ClosedError.CODE, "the cancel token is closed")
        return h

    def fire(self) -> None:
        """Fires the token (idempotent). Raises ``ClosedError`` after ``close()``."""
        lib = self._lib
        _native.check(lib, "astrid_cancel_fire", lib.astrid_cancel_fire, self._handle())

    @property
    def fired(self) -> bool:
        """Whether the token has been fired (``False`` once closed)."""
        h = self._h
        return h is not None and bool(self._lib.astrid_cancel_is_fired(h))

    def close(self) -> None:
        """Frees the token; idempotent."""
        h, self._h = self._h, None
        if h is not None:
            self._lib.astrid_cancel_free(h)

    def __enter__(self) -> "Cancel":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # interpreter shutdown: the library may be gone
            pass

    def __repr__(self) -> str:
        state = "closed" if self._h is None else "fired" if self.fired else "armed"
        return f"<astrid.Cancel {state}>"
