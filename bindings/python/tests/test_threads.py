"""Callbacks invoked from library threads, 8 calls at once."""

from __future__ import annotations

import threading
from typing import List, Set

import astrid
import pytest
from memfs import MemFs

THREADS = 8
ROUNDS = 10


@pytest.mark.parametrize("inline", [False, True], ids=["default", "inline"])
def test_eight_concurrent_calls_with_python_callbacks(capsules, inline: bool) -> None:
    gate_threads: Set[int] = set()
    lock = threading.Lock()
    gate_calls = [0]
    # Thread idents are reused once a thread ends (a worker that finished its
    # rounds may hand its ident to a new library thread), so "ran on a
    # caller" is decided while the callback runs, against the callers alive.
    active: Set[int] = set()
    on_callers = [0]

    def note_thread() -> None:
        with lock:
            on_callers[0] += threading.get_ident() in active

    def gate(request: astrid.GateRequest) -> bool:
        note_thread()
        with lock:
            gate_calls[0] += 1
            gate_threads.add(threading.get_ident())
        return not request.path.endswith("forbidden")

    class NotingFs(MemFs):
        def _note(self, what: str) -> None:
            note_thread()
            super()._note(what)

    memfs = NotingFs()
    log_count = [0]

    def log(record: astrid.LogRecord) -> None:
        with lock:
            log_count[0] += 1

    with astrid.Runtime(inline_callbacks=inline, pool_size=THREADS) as rt:
        rt.set_gate(gate)
        rt.set_log_callback(log)
        rt.mount_vfs("cwd", memfs)
        fsprobe = rt.load(capsules / "fsprobe")
        hello = rt.load(capsules / "hello")
        barrier = threading.Barrier(THREADS)
        failures: List[str] = []
        callers: Set[int] = set()

        def worker(i: int) -> None:
            with lock:
                callers.add(threading.get_ident())
                active.add(threading.get_ident())
            barrier.wait()
            for r in range(ROUNDS):
                path = f"ws/t{i}-{r}.txt"
                text = f"thread {i} round {r}"
                checks = [
                    (fsprobe.call("write-file", f"{path}\n{text}"), "ok", "ok"),
                    (fsprobe.call("read-file", path), "ok", text),
                    (fsprobe.call("write-file", "ws/forbidden\nx"), "err", "capability-denied"),
                    (hello.call("greet", f'{{"name":"t{i}"}}'), "final", None),
                ]
                for result, action, data in checks:
                    if result.action != action or (data is not None and result.data != data):
                        failures.append(f"{i}/{r}: {result!r}")
            with lock:
                active.discard(threading.get_ident())

        threads = [threading.Thread(target=worker, args=(i,)) for i in range(THREADS)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert failures == []
        assert rt.callback_errors == []

    calls = THREADS * ROUNDS
    assert len(memfs.files) == calls
    assert memfs.content("ws/t3-7.txt") == b"thread 3 round 7"
    assert gate_calls[0] >= 3 * calls  # write + read + refused write per round
    assert log_count[0] == 2 * calls
    vfs_calls = sum(memfs.calls.values())
    if inline:
        # Callbacks ran on the threads executing the guests: the callers' own.
        assert on_callers[0] == gate_calls[0] + vfs_calls
        assert gate_threads <= callers and len(gate_threads) > 1
    else:
        # Callbacks ran on library worker threads, none of them a caller.
        assert on_callers[0] == 0 and vfs_calls > 0


@pytest.mark.parametrize("inline", [False, True], ids=["default", "inline"])
def test_concurrent_raising_callbacks_all_reported(capsules, inline: bool) -> None:
    def gate(request: astrid.GateRequest) -> bool:
        raise LookupError(request.path)

    with astrid.Runtime(inline_callbacks=inline, pool_size=THREADS) as rt:
        rt.set_gate(gate)
        fsprobe = rt.load(capsules / "fsprobe")
        barrier = threading.Barrier(THREADS)
        answers: List[str] = []

        def worker(i: int) -> None:
            barrier.wait()
            result = fsprobe.call("write-file", f"ws\n{i}")
            answers.append(f"{result.action}:{result.data}")

        threads = [threading.Thread(target=worker, args=(i,)) for i in range(THREADS)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert answers == ["err:capability-denied"] * THREADS
        errors = rt.take_callback_errors()
        assert len(errors) == THREADS and all(isinstance(e, LookupError) for e in errors)
        rt.set_gate(None)
        assert fsprobe.call("write-file", "ws\nafter").action == "ok"
