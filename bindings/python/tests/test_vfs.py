"""A VFS written in Python serving the fsprobe capsule."""

from __future__ import annotations

import gc

import astrid
import pytest
from memfs import MemFs


def fs(capsule: astrid.Capsule, action: str, payload: str) -> str:
    result = capsule.call(action, payload)
    return f"{result.action}:{result.data}"


@pytest.mark.parametrize("inline", [False, True], ids=["default", "inline"])
def test_python_vfs_serves_fsprobe(capsules, inline: bool) -> None:
    memfs = MemFs(dirs=("ws", "ws/public"))
    memfs.files["ws/preloaded.txt"] = bytearray(b"from python")
    with astrid.Runtime(inline_callbacks=inline) as rt:
        rt.mount_vfs("cwd", memfs)
        with rt.load(capsules / "fsprobe") as fsprobe:
            assert fs(fsprobe, "read-file", "ws/preloaded.txt") == "ok:from python"
            assert fs(fsprobe, "write-file", "ws/public/hello.txt\nhello from the capsule") == "ok:ok"
            assert memfs.content("ws/public/hello.txt") == b"hello from the capsule"
            assert fs(fsprobe, "read-file", "ws/public/hello.txt") == "ok:hello from the capsule"
            assert fs(fsprobe, "append", "ws/public/hello.txt\n!") == "ok:ok"
            assert memfs.content("ws/public/hello.txt") == b"hello from the capsule!"
            assert fs(fsprobe, "readdir", "ws") == "ok:preloaded.txt,public"
            assert fs(fsprobe, "stat", "ws/preloaded.txt") == "ok:file:11"
            assert fs(fsprobe, "stat", "ws") == "ok:dir:0"
            assert fs(fsprobe, "stat-times", "ws/preloaded.txt") == "ok:true"
            assert fs(fsprobe, "mkdir", "ws/new") == "ok:ok"
            assert "ws/new" in memfs.dirs
            assert fs(fsprobe, "mkdir", "ws/new") == "err:already-exists"
            assert fs(fsprobe, "read-file", "ws/missing.txt") == "err:not-found"
            assert fs(fsprobe, "exists", "ws/missing.txt") == "ok:false"
            assert fs(fsprobe, "unlink", "ws/preloaded.txt") == "ok:ok"
            assert "ws/preloaded.txt" not in memfs.files
            assert fs(fsprobe, "handle", "ws/public/hello.txt\nread\nr:6:4;stat") == "ok:from;file:23"
            # rename is not implemented by MemFs: a NULL entry, "not supported".
            assert fs(fsprobe, "rename", "ws/public/hello.txt\nws/moved.txt").startswith("err:unknown(")
        assert memfs.calls["open"] >= 4 and memfs.calls["read_at"] >= 3 and memfs.calls["close"] >= 4
        assert rt.callback_errors == []  # expected failures (not-found, exists) are answers, not errors


def test_vfs_exception_is_an_io_error_and_reported(rt: astrid.Runtime, capsules) -> None:
    class Flaky(MemFs):
        fail = True

        def read_at(self, handle: int, offset: int, size: int) -> bytes:
            if self.fail:
                self.fail = False
                raise ZeroDivisionError("disk on fire")
            return super().read_at(handle, offset, size)

    memfs = Flaky()
    memfs.files["ws/a.txt"] = bytearray(b"data")
    rt.mount_vfs("cwd", memfs)
    with rt.load(capsules / "fsprobe") as fsprobe:
        answer = fs(fsprobe, "read-file", "ws/a.txt")
        assert answer.startswith("err:unknown(")
        assert fs(fsprobe, "read-file", "ws/a.txt") == "ok:data"  # keeps serving
    errors = rt.take_callback_errors()
    assert len(errors) == 1 and isinstance(errors[0], ZeroDivisionError)


def test_vfs_status_mapping(rt: astrid.Runtime, capsules) -> None:
    class Strict(MemFs):
        def write_at(self, handle: int, offset: int, data: bytes) -> int:
            raise astrid.VfsError(astrid.VfsStatus.QUOTA, "full")

        def mkdir(self, path: str) -> None:
            raise PermissionError(path)

        def remove_file(self, path: str) -> None:
            raise NotImplementedError

    memfs = Strict()
    rt.mount_vfs("cwd", memfs)
    with rt.load(capsules / "fsprobe") as fsprobe:
        assert fs(fsprobe, "write-file", "ws/q.txt\ndata") == "err:quota"
        assert fs(fsprobe, "mkdir", "ws/d") == "err:access"
        assert fs(fsprobe, "unlink", "ws/q.txt").startswith("err:unknown(")
    assert rt.callback_errors == []


def test_vfs_kept_alive_until_finalized(capsules) -> None:
    base = astrid.live_callbacks()
    rt = astrid.Runtime()
    rt.mount_vfs("cwd", MemFs())
    fsprobe = rt.load(capsules / "fsprobe")
    gc.collect()  # the binding, not the caller, keeps the callbacks alive
    assert fs(fsprobe, "write-file", "ws/keep.txt\nstill here") == "ok:ok"
    assert astrid.live_callbacks() == base + 1
    rt.mount_vfs("cwd", None)  # unmounted, but the loaded capsule still uses it
    assert fs(fsprobe, "read-file", "ws/keep.txt") == "ok:still here"
    fsprobe.close()
    rt.close()
    assert astrid.live_callbacks() == base  # the library ran the finalizer


def test_unknown_mount_is_refused(rt: astrid.Runtime) -> None:
    base = astrid.live_callbacks()
    with pytest.raises(astrid.InvalidArgumentError) as info:
        rt.mount_vfs("nope", MemFs())
    assert "unknown mount `nope`" in info.value.message  # the library's own message
    assert astrid.live_callbacks() == base  # released at once: the library never took it
