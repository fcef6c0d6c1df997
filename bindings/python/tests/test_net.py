"""Networking: the bind flags, unix socket paths assigned to capsules, and the
accept verifier written in Python (refusing, allowing with a principal, raising)."""

from __future__ import annotations

import concurrent.futures
import os
import pathlib
import socket
import tempfile
import threading
import time
from typing import Any, Iterator, List, Optional, Tuple, Union

import astrid
import pytest


@pytest.fixture
def net_rt() -> Iterator[astrid.Runtime]:
    """A runtime that lets capsules reach loopback, closed after the test."""
    with astrid.Runtime(timeout_ms=10_000, unload_grace_ms=2000, allow_loopback=True) as runtime:
        yield runtime


@pytest.fixture
def sock_path() -> Iterator[pathlib.Path]:
    """A socket path in a fresh short directory (a unix socket path has at most 107 bytes)."""
    with tempfile.TemporaryDirectory(prefix="astrid-py-", dir="/tmp") as d:
        yield pathlib.Path(d) / "netprobe.sock"


def _connect(path: pathlib.Path) -> socket.socket:
    """Connects over AF_UNIX, retrying while the capsule has not bound the path yet."""
    deadline = time.monotonic() + 5
    while True:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(10)  # a broken runtime must not hang the test
        try:
            s.connect(str(path))
            return s
        except (FileNotFoundError, ConnectionRefusedError):
            s.close()
            if time.monotonic() > deadline:
                raise
            time.sleep(0.01)


def _read_to_end(s: socket.socket) -> bytes:
    out = b""
    while True:
        try:
            chunk = s.recv(64)
        except ConnectionResetError:  # closed by the peer, like EOF
            return out
        if not chunk:
            return out
        out += chunk


def _clients(path: pathlib.Path, refusals: int) -> Tuple[List[bytes], bytes]:
    """Connects ``refusals`` times expecting to be closed unheard, then once
    more sending ``hello``; returns what each connection read."""
    refused: List[bytes] = []
    for _ in range(refusals):
        with _connect(path) as s:
            try:
                s.sendall(b"x")
            except (BrokenPipeError, ConnectionResetError):
                pass  # already closed: the refusal is what is checked
            refused.append(_read_to_end(s))
    with _connect(path) as s:
        s.sendall(b"hello")
        return refused, _read_to_end(s)


def _serve(capsule: astrid.Capsule, path: pathlib.Path, refusals: int) -> Tuple[astrid.Result, List[bytes], bytes]:
    """Calls ``unix-serve`` while the clients connect from another thread."""
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        clients = pool.submit(_clients, path, refusals)
        result = capsule.call("unix-serve", "5000")
        refused, reply = clients.result(timeout=30)
    return result, refused, reply


def test_accept_verifier_refuses_then_allows_with_a_principal(
    net_rt: astrid.Runtime, capsules: pathlib.Path, sock_path: pathlib.Path
) -> None:
    seen: List[astrid.AcceptRequest] = []
    lock = threading.Lock()

    def verify(request: astrid.AcceptRequest) -> Optional[str]:
        with lock:
            seen.append(request)
            return None if len(seen) == 1 else "carol"  # the first peer is refused

    base = astrid.live_callbacks()
    net_rt.set_accept_verifier(verify)
    assert astrid.live_callbacks() == base + 1
    net_rt.assign_unix_socket("netprobe", sock_path)
    with net_rt.load(capsules / "netprobe") as netprobe:
        result, refused, reply = _serve(netprobe, sock_path, 1)
    assert result.action == "ok"
    assert result.data == "got:hello|principal=carol|owner=none"
    assert refused == [b""]  # closed without a byte
    assert reply == b"hi"
    assert len(seen) == 2
    for request in seen:
        assert request.capsule == "netprobe"
        assert request.pid == os.getpid()  # the peer is this process
        assert (request.uid, request.gid) == (os.getuid(), os.getgid())
    assert "netprobe" in repr(seen[0])
    assert net_rt.callback_errors == []

    net_rt.set_accept_verifier(None)  # removed: finalized once no call uses it
    assert astrid.live_callbacks() == base


def test_verifier_answers(net_rt: astrid.Runtime, capsules: pathlib.Path, sock_path: pathlib.Path) -> None:
    """``False`` and ``Verdict.DENY`` refuse; ``True`` / ``Verdict.ALLOW`` accept without a principal."""
    answers: List[Union[bool, astrid.Verdict]] = [False, astrid.Verdict.DENY, True]
    net_rt.set_accept_verifier(lambda request: answers.pop(0))
    net_rt.assign_unix_socket("netprobe", sock_path)
    with net_rt.load(capsules / "netprobe") as netprobe:
        result, refused, reply = _serve(netprobe, sock_path, 2)
        assert (result.action, result.data) == ("ok", "got:hello|principal=none|owner=none")
        assert refused == [b"", b""] and reply == b"hi" and answers == []
        answers.append(astrid.Verdict.ALLOW)
        result, refused, reply = _serve(netprobe, sock_path, 0)
        assert result.data == "got:hello|principal=none|owner=none" and reply == b"hi"
    assert net_rt.callback_errors == []


def test_raising_verifier_refuses_and_is_reported(
    net_rt: astrid.Runtime, capsules: pathlib.Path, sock_path: pathlib.Path
) -> None:
    # A raise, an invalid principal and a nonsense answer each refuse one peer.
    answers: List[object] = [RuntimeError("verifier exploded"), "bad\ncontrol", 42, "dave"]

    def verify(request: astrid.AcceptRequest) -> Any:
        answer = answers.pop(0)
        if isinstance(answer, BaseException):
            raise answer
        return answer

    net_rt.set_accept_verifier(verify)
    net_rt.assign_unix_socket("netprobe", sock_path)
    with net_rt.load(capsules / "netprobe") as netprobe:
        result, refused, reply = _serve(netprobe, sock_path, 3)
    assert (result.action, result.data) == ("ok", "got:hello|principal=dave|owner=none")
    assert refused == [b"", b"", b""] and reply == b"hi"
    errors = net_rt.take_callback_errors()
    assert [type(e) for e in errors] == [RuntimeError, astrid.InvalidArgumentError, TypeError]
    assert str(errors[0]) == "verifier exploded"
    assert "'bad\\ncontrol'" in str(errors[1]) and errors[1].code == -1
    assert "int" in str(errors[2])


def test_without_an_assigned_path_bind_unix_is_not_available(
    net_rt: astrid.Runtime, capsules: pathlib.Path, sock_path: pathlib.Path
) -> None:
    with net_rt.load(capsules / "netprobe") as netprobe:
        result = netprobe.call("unix-serve", "10")
        assert (result.action, result.data) == ("err", "address-not-available")
    # Assigned, then removed again: capsules loaded afterwards have no path.
    net_rt.assign_unix_socket("netprobe", sock_path)
    net_rt.assign_unix_socket("netprobe", None)
    with net_rt.load(capsules / "netprobe") as netprobe:
        result = netprobe.call("unix-serve", "10")
        assert (result.action, result.data) == ("err", "address-not-available")


def test_assign_unix_socket_rejects_bad_arguments(net_rt: astrid.Runtime) -> None:
    with pytest.raises(astrid.InvalidArgumentError):
        net_rt.assign_unix_socket("netprobe", "/tmp/" + "x" * 200)
    with pytest.raises(astrid.InvalidArgumentError):
        net_rt.assign_unix_socket("", "/tmp/astrid-py.sock")
    net_rt.close()
    with pytest.raises(astrid.ClosedError):
        net_rt.assign_unix_socket("netprobe", "/tmp/astrid-py.sock")
    with pytest.raises(astrid.ClosedError):
        net_rt.set_accept_verifier(lambda request: True)


def test_allow_any_bind_flag(capsules: pathlib.Path) -> None:
    assert int(astrid.RuntimeFlags.ALLOW_ANY_BIND) == 8
    with astrid.Runtime(allow_loopback=True) as rt, rt.load(capsules / "netprobe") as netprobe:
        result = netprobe.call("bind", "0.0.0.0\n0")
        assert (result.action, result.data) == ("err", "airlock-rejected")
        assert netprobe.call("bind", "127.0.0.1\n0").data == "ok"
    for rt in (
        astrid.Runtime(allow_loopback=True, allow_any_bind=True),
        astrid.Runtime(flags=astrid.RuntimeFlags.ALLOW_LOOPBACK | astrid.RuntimeFlags.ALLOW_ANY_BIND),
    ):
        with rt, rt.load(capsules / "netprobe") as netprobe:
            result = netprobe.call("bind", "0.0.0.0\n0")
            assert (result.action, result.data) == ("ok", "ok")


def test_wasi_sockets_flag(capsules: pathlib.Path) -> None:
    assert int(astrid.RuntimeFlags.WASI_SOCKETS) == 16
    with astrid.Runtime(allow_loopback=True) as rt, rt.load(capsules / "wasisock") as wasisock:
        # Without the flag every WASI socket operation is refused.
        assert wasisock.call("bind", "127.0.0.1:0").action == "err"
    with astrid.Runtime(allow_loopback=True, wasi_sockets=True) as rt, rt.load(capsules / "wasisock") as wasisock:
        result = wasisock.call("bind", "127.0.0.1:0")
        assert result.action == "ok", result.data
        assert result.data is not None and result.data.startswith("127.0.0.1:"), result.data
