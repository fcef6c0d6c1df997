"""Ctrl-C during a call on the main thread.

CPython runs a Python signal handler only between bytecodes of the main
thread; while that thread sits inside a foreign call (``Capsule.call``
releases the GIL but stays in C) the handler waits, so a long guest call
would hold Ctrl-C back until its deadline. Here a watcher thread learns of
the signal through :func:`signal.set_wakeup_fd` (the C-level handler
writes the signal number there at once) and fires the cancel token of the
main thread's call; the call returns cancelled and the pending handler
runs, so the default one raises :class:`KeyboardInterrupt` promptly. Calls
on other threads are untouched.

It arms itself on the first call made on the main thread while SIGINT has
a Python handler (``SIG_IGN`` / ``SIG_DFL`` leave everything alone). Bytes
for another wakeup fd already set (asyncio's, say) are passed on to it. A
library that replaces the wakeup fd afterwards disables this;
:func:`install` arms it again.
"""

from __future__ import annotations

import ctypes
import os
import signal
import socket
import threading
from ctypes import byref, sizeof
from typing import Any, List, Optional, Tuple

from . import _native
from .cancel import Cancel

MAIN_THREAD_IDENT = threading.main_thread().ident

_lock = threading.Lock()
_installed = False
#: The main thread's call state of the library in use, while a call runs.
_current: List[Optional["MainCall"]] = [None]
#: The one socket pair the C handler writes to (kept for the process's
#: life: its descriptors must never be reused while a handler may write),
#: and the wakeup fd found set before ours, which gets every byte too.
_pair: List[Optional[Tuple[socket.socket, socket.socket]]] = [None]
_previous = [-1]


class MainCall:
    """The options a main-thread call passes: a cancel token the watcher
    fires on SIGINT, renewed after each fire."""

    __slots__ = ("_lib", "token", "opts", "ref", "active", "fired", "lock")

    def __init__(self, lib: "_native.Library") -> None:
        self._lib = lib
        self.opts = _native.CallOptions()
        self.opts.size = sizeof(_native.CallOptions)
        self.ref = byref(self.opts)
        self.active = False
        self.fired = False
        # Orders the watcher's check-and-fire against the end of a call, so
        # a late signal never fires the token of the next call.
        self.lock = threading.Lock()
        self.token = Cancel(library=lib)
        self.opts.cancel = self.token._handle()

    def begin(self) -> None:
        if self.fired:
            self.renew()
        self.active = True

    def end(self) -> bool:
        """Ends the call; whether SIGINT fired its token (then renewed)."""
        with self.lock:
            self.active = False
            fired = self.fired
        if fired:
            self.renew()
        return fired

    def renew(self) -> None:
        """A fired token cannot govern the next call: take a fresh one."""
        old = self.token
        self.token = Cancel(library=self._lib)
        self.opts.cancel = self.token._handle()
        self.fired = False
        old.close()


def _watch(sock: socket.socket) -> None:
    while True:
        try:
            data = sock.recv(64)
        except OSError:
            return
        if not data:
            return
        previous = _previous[0]
        if previous != -1:
            try:
                os.write(previous, data)
            except OSError:
                pass
        if signal.SIGINT in data:
            call = _current[0]
            if call is None:
                continue
            with call.lock:
                if call.active and not call.fired:
                    call.fired = True
                    try:
                        call.token.fire()
                    except Exception:  # the token was closed meanwhile: nothing runs
                        pass


def install() -> bool:
    """Arms the watcher (main thread only; again after another library
    replaced the wakeup fd). Returns whether Ctrl-C will reach calls: not
    when SIGINT is ignored or left to the default action."""
    global _installed
    if threading.get_ident() != MAIN_THREAD_IDENT:
        return False
    if not callable(signal.getsignal(signal.SIGINT)):
        return False
    with _lock:
        first = _pair[0] is None
        if first:
            reader, writer = socket.socketpair()
            writer.setblocking(False)
            _pair[0] = (reader, writer)
        reader, writer = _pair[0]  # type: ignore[misc]
        try:
            previous = signal.set_wakeup_fd(writer.fileno(), warn_on_full_buffer=False)
        except (ValueError, OSError):
            return False
        if previous != writer.fileno():
            # Another library's fd (asyncio's, say): it keeps getting every byte.
            _previous[0] = previous
        if first:
            threading.Thread(target=_watch, args=(reader,), name="astrid-sigint", daemon=True).start()
        _installed = True
    return True


def main_call(lib: "_native.Library") -> Optional[MainCall]:
    """The state of a call about to run on the main thread, or ``None``
    when Ctrl-C cannot be caught (the caller then calls plainly)."""
    if not _installed and not install():
        return None
    call = lib.__dict__.get("main_call")
    if call is None:
        call = lib.__dict__["main_call"] = MainCall(lib)
    _current[0] = call
    return call


def check_signals() -> None:
    """Runs the pending signal handlers now (the default SIGINT one raises
    ``KeyboardInterrupt`` here)."""
    check: Any = ctypes.pythonapi.PyErr_CheckSignals
    check()


def after_interrupted(lib: "_native.Library", err: Optional[int]) -> None:
    """A main-thread call that SIGINT ended: runs the pending handler, and
    frees the call's error object when the handler raises (the caller
    raises its own error from it otherwise)."""
    try:
        check_signals()  # KeyboardInterrupt, with the default handler
    except BaseException:
        lib.astrid_error_free(err)
        raise
