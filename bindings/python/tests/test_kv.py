"""A KV backend written in Python serving the kvprobe capsule."""

from __future__ import annotations

import bisect
import gc
import threading
import weakref
from typing import Dict, Iterator, List, Optional

import astrid
import pytest


class DictKv(astrid.KvBackend):
    """One sorted dict per namespace under one lock: linearizable, keys in
    bytewise (UTF-8) order."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.spaces: Dict[astrid.KvNamespace, Dict[str, bytes]] = {}
        self.fail: Optional[BaseException] = None
        self.calls = 0

    def _space(self, ns: astrid.KvNamespace) -> Dict[str, bytes]:
        self.calls += 1
        if self.fail is not None:
            raise self.fail
        return self.spaces.setdefault(ns, {})

    def get(self, ns: astrid.KvNamespace, key: str) -> Optional[bytes]:
        with self.lock:
            return self._space(ns).get(key)

    def set(self, ns: astrid.KvNamespace, key: str, value: bytes) -> None:
        with self.lock:
            self._space(ns)[key] = value

    def remove(self, ns: astrid.KvNamespace, key: str) -> None:
        with self.lock:
            self._space(ns).pop(key, None)

    def list(self, ns: astrid.KvNamespace, prefix: str, after: str, limit: int) -> Iterator[str]:
        with self.lock:
            keys = sorted(self._space(ns), key=str.encode)
        start = bisect.bisect_right([k.encode() for k in keys], after.encode()) if after else 0
        return (k for k in keys[start:] if k.startswith(prefix))

    def clear_prefix(self, ns: astrid.KvNamespace, prefix: str) -> int:
        with self.lock:
            space = self._space(ns)
            doomed = [k for k in space if k.startswith(prefix)]
            for k in doomed:
                del space[k]
            return len(doomed)

    def cas(self, ns: astrid.KvNamespace, key: str, expected: Optional[bytes], value: bytes) -> bool:
        with self.lock:
            space = self._space(ns)
            if space.get(key) != expected:
                return False
            space[key] = value
            return True


def kv(capsule: astrid.Capsule, action: str, payload: str, **kw: str) -> str:
    result = capsule.call(action, payload, **kw)
    return f"{result.action}:{result.data}"


@pytest.mark.parametrize("inline", [False, True], ids=["default", "inline"])
def test_python_backend_serves_kvprobe(capsules, inline: bool) -> None:
    backend = DictKv()
    with astrid.Runtime(inline_callbacks=inline, unload_grace_ms=2000) as rt:
        rt.set_kv(backend)
        with rt.load(capsules / "kvprobe", principal="alice") as probe:
            alice = astrid.KvNamespace("alice", probe.id)
            assert kv(probe, "get", "color") == "ok:none"
            assert kv(probe, "set", "color\nblue") == "ok:ok"
            assert backend.spaces[alice] == {"color": b"blue"}
            assert kv(probe, "get", "color") == "ok:some:blue"
            assert kv(probe, "fill", "k\n5") == "ok:ok"
            assert kv(probe, "list", "k") == "ok:k0000,k0001,k0002,k0003,k0004"
            assert kv(probe, "page", "k\n-\n2") == "ok:k0000,k0001|k0001"
            assert kv(probe, "page", "k\nk0001\n2") == "ok:k0002,k0003|k0003"
            assert kv(probe, "clear", "k") == "ok:5"
            assert kv(probe, "list", "") == "ok:color"
            assert kv(probe, "cas", "color\nred\ngreen") == "err:cas-mismatch"
            assert kv(probe, "cas", "color\nblue\ngreen") == "ok:ok"
            assert kv(probe, "cas", "fresh\n-\nnew") == "ok:ok"
            assert kv(probe, "cas", "fresh\n-\nagain") == "err:cas-mismatch"
            assert kv(probe, "delete", "color") == "ok:ok"
            assert kv(probe, "get", "color") == "ok:none"
            # Another principal's calls use another namespace.
            assert kv(probe, "get", "fresh", principal="bob") == "ok:none"
            assert kv(probe, "set", "fresh\nbob's", principal="bob") == "ok:ok"
            assert backend.spaces[alice] == {"fresh": b"new"}
            assert backend.spaces[astrid.KvNamespace("bob", probe.id)] == {"fresh": b"bob's"}
        assert rt.callback_errors == []  # cas mismatches are answers, not errors


def test_kv_errors_and_a_raising_backend(rt: astrid.Runtime, capsules) -> None:
    class Picky(DictKv):
        def set(self, ns: astrid.KvNamespace, key: str, value: bytes) -> None:
            if key == "big":
                raise astrid.KvError(astrid.KvStatus.TOO_LARGE, "only small values")
            if key == "full":
                raise astrid.KvError(astrid.KvStatus.QUOTA)
            super().set(ns, key, value)

    backend = Picky()
    rt.set_kv(backend)
    probe = rt.load(capsules / "kvprobe")
    assert kv(probe, "set", "big\nx") == "err:too-large"
    assert kv(probe, "set", "full\nx") == "err:quota"
    assert rt.callback_errors == []  # KvError answers are not reported

    backend.fail = ZeroDivisionError("disk on fire")
    assert kv(probe, "set", "a\n1") == "err:unknown(storage failed)"
    assert kv(probe, "get", "a") == "err:unknown(storage failed)"
    errors = rt.take_callback_errors()
    assert [type(e) for e in errors] == [ZeroDivisionError, ZeroDivisionError]
    backend.fail = None
    # The runtime keeps serving from the same backend.
    assert kv(probe, "set", "a\n1") == "ok:ok"
    assert kv(probe, "get", "a") == "ok:some:1"


def test_bad_return_values_are_storage_failures(rt: astrid.Runtime, capsules) -> None:
    class Sloppy(DictKv):
        def get(self, ns: astrid.KvNamespace, key: str) -> Optional[bytes]:
            return 42  # type: ignore[return-value]

        def cas(self, ns: astrid.KvNamespace, key: str, expected: Optional[bytes], value: bytes) -> bool:
            return None  # type: ignore[return-value]

    rt.set_kv(Sloppy())
    probe = rt.load(capsules / "kvprobe")
    assert kv(probe, "get", "a") == "err:unknown(storage failed)"
    assert kv(probe, "cas", "a\n-\nb") == "err:unknown(storage failed)"
    assert all(isinstance(e, TypeError) for e in rt.take_callback_errors())


def test_missing_methods_are_not_supported(rt: astrid.Runtime, capsules) -> None:
    class GetOnly:
        def get(self, ns: astrid.KvNamespace, key: str) -> Optional[bytes]:
            return b"constant"

    with pytest.raises(TypeError):
        type("Partial", (astrid.KvBackend,), {"get": GetOnly.get})()  # abstract methods left
    rt.set_kv(GetOnly())
    probe = rt.load(capsules / "kvprobe")
    assert kv(probe, "get", "anything") == "ok:some:constant"
    assert kv(probe, "set", "a\n1") == "err:unknown(not supported)"


def test_backend_released_on_replace_and_on_runtime_close(capsules) -> None:
    base = astrid.live_callbacks()
    rt = astrid.Runtime()
    first = DictKv()
    rt.set_kv(first)
    assert astrid.live_callbacks() == base + 1
    probe = rt.load(capsules / "kvprobe")
    assert kv(probe, "set", "k\nv") == "ok:ok"
    gone = weakref.ref(first)
    del first
    # Back to the built-in store: empty, and the first backend is released.
    rt.set_kv(None)
    gc.collect()
    assert gone() is None and astrid.live_callbacks() == base
    assert kv(probe, "get", "k") == "ok:none"

    second = DictKv()
    rt.set_kv(second)
    assert kv(probe, "set", "k\nv2") == "ok:ok"
    gone = weakref.ref(second)
    del second
    rt.close()  # runs the backend's finalizer
    gc.collect()
    assert gone() is None and astrid.live_callbacks() == base
    with pytest.raises(astrid.ClosedError):
        rt.set_kv(DictKv())
    assert astrid.live_callbacks() == base  # a failed install keeps nothing


def test_builtin_store_quota_is_configurable(capsules) -> None:
    with astrid.Runtime(kv_quota_bytes=300) as rt, rt.load(capsules / "kvprobe") as probe:
        assert kv(probe, "set-size", "small\n40") == "ok:ok"
        assert kv(probe, "set-size", "big\n80") == "err:quota"  # (45 + 96) + (83 + 96) bytes > 300
    with astrid.Runtime() as rt, rt.load(capsules / "kvprobe") as probe:
        assert kv(probe, "set-size", "big\n80") == "ok:ok"  # the default quota is 64 MiB


def test_cas_from_eight_threads(rt: astrid.Runtime, capsules) -> None:
    rt.set_kv(DictKv())
    probe = rt.load(capsules / "kvprobe", principal="alice")
    results: List[str] = []

    def worker() -> None:
        results.append(probe.call("increment", "counter\n10").action)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == ["ok"] * 8
    assert kv(probe, "get", "counter") == "ok:some:80"
