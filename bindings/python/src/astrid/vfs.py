"""Filesystems written in Python: a provider object whose methods serve a mount.

Write a class with any of the methods below (subclassing :class:`Vfs` is
optional; it only documents them) and mount an instance with
:meth:`Runtime.mount_vfs`. A method the object does not have is "not
supported" (a NULL entry in ``astrid_vfs_ops_t``)::

    stat(path: str, follow: bool) -> Stat
    open(path: str, flags: OpenFlags) -> int              # a handle of your own
    read_at(handle: int, offset: int, size: int) -> bytes  # shorter only at EOF
    write_at(handle: int, offset: int, data: bytes) -> int # bytes written (> 0)
    close(handle: int) -> None
    sync(handle: int, data_only: bool) -> None
    set_len(handle: int, length: int) -> None
    fstat(handle: int) -> Stat
    read_dir(path: str) -> Iterable[str | tuple[str, FileKind]]
    mkdir(path: str) -> None
    remove_file(path: str) -> None
    remove_dir(path: str) -> None
    rename(src: str, dst: str) -> None
    hard_link(src: str, dst: str) -> None
    read_link(path: str) -> str

Paths are relative to the mount root, ``/``-separated, already checked against
the manifest and the gate; the root is ``""``. Methods run on library worker
threads (or the guest's thread with ``inline_callbacks=True``), possibly
concurrently: protect shared state with a lock.

Failures are exceptions: raise :class:`VfsError` with a :class:`VfsStatus`, or
the matching builtin (``FileNotFoundError`` -> NOT_FOUND, ``FileExistsError`` ->
ALREADY_EXISTS, ``IsADirectoryError``, ``NotADirectoryError``,
``PermissionError`` -> ACCESS, other ``OSError`` by errno,
``NotImplementedError`` -> NOT_SUPPORTED). Any other exception answers
``VfsStatus.IO`` and is reported like every callback exception.
"""

from __future__ import annotations

import enum
import errno
import os
from ctypes import c_char, c_size_t, c_ubyte, c_uint64, memmove, sizeof
from typing import Any, Dict, Iterable, List, Optional, Tuple, Union

from ._native import (
    VFS_CLOSE_FN,
    VFS_DIR_SINK_FN,
    VFS_FSTAT_FN,
    VFS_OPEN_FN,
    VFS_PATH_FN,
    VFS_READ_AT_FN,
    VFS_READ_DIR_FN,
    VFS_READ_LINK_FN,
    VFS_SET_LEN_FN,
    VFS_STAT_FN,
    VFS_SYNC_FN,
    VFS_TWO_PATHS_FN,
    VFS_WRITE_AT_FN,
    VfsOps,
    VfsStatStruct,
)
from .callbacks import ErrorSink, trampoline

__all__ = ["Vfs", "VfsError", "VfsStatus", "OpenFlags", "FileKind", "Stat", "DirEntry"]


class VfsStatus(enum.IntEnum):
    """Provider result codes (``ASTRID_VFS_*``) and what the guest sees."""

    OK = 0
    NOT_FOUND = 1
    ACCESS = 2
    ALREADY_EXISTS = 3
    NOT_DIRECTORY = 4
    IS_DIRECTORY = 5
    NOT_EMPTY = 6
    BOUNDARY_ESCAPE = 7
    INVALID_PATH = 8
    QUOTA = 9
    WOULD_BLOCK = 10
    CROSS_VFS = 11
    TOO_LARGE = 12
    CLOSED = 13
    NOT_SUPPORTED = 14
    IO = 15


class OpenFlags(enum.IntFlag):
    """``ASTRID_VFS_OPEN_*`` flags given to ``open``."""

    NONE = 0
    READ = 1
    WRITE = 2
    CREATE = 4
    TRUNCATE = 8
    APPEND = 16
    EXCLUSIVE = 32


class FileKind(enum.IntEnum):
    """Entry kinds (``ASTRID_VFS_KIND_*``)."""

    UNKNOWN = 0
    REGULAR = 1
    DIRECTORY = 2
    SYMLINK = 3
    BLOCK_DEVICE = 4
    CHARACTER_DEVICE = 5
    FIFO = 6
    SOCKET = 7


class VfsError(Exception):
    """Raise from a provider method to answer with a specific status."""

    def __init__(self, status: Union[VfsStatus, int], message: str = "") -> None:
        super().__init__(status, message)
        self.status = int(status)
        self.message = message

    def __str__(self) -> str:
        try:
            name = VfsStatus(self.status).name
        except ValueError:
            name = str(self.status)
        return f"{name}: {self.message}" if self.message else name


class Stat:
    """Metadata a provider returns from ``stat`` / ``fstat``. Times are
    nanoseconds since the Unix epoch (like ``os.stat_result.st_mtime_ns``),
    ``None`` when unknown."""

    __slots__ = ("kind", "size", "mode", "modified_ns", "created_ns", "accessed_ns")

    def __init__(
        self,
        kind: FileKind = FileKind.REGULAR,
        size: int = 0,
        mode: int = 0,
        modified_ns: Optional[int] = None,
        created_ns: Optional[int] = None,
        accessed_ns: Optional[int] = None,
    ) -> None:
        self.kind = kind
        self.size = size
        self.mode = mode
        self.modified_ns = modified_ns
        self.created_ns = created_ns
        self.accessed_ns = accessed_ns

    @classmethod
    def from_os(cls, st: os.stat_result) -> "Stat":
        """Converts an ``os.stat`` / ``os.lstat`` result."""
        import stat as st_mod

        m = st.st_mode
        if st_mod.S_ISREG(m):
            kind = FileKind.REGULAR
        elif st_mod.S_ISDIR(m):
            kind = FileKind.DIRECTORY
        elif st_mod.S_ISLNK(m):
            kind = FileKind.SYMLINK
        elif st_mod.S_ISBLK(m):
            kind = FileKind.BLOCK_DEVICE
        elif st_mod.S_ISCHR(m):
            kind = FileKind.CHARACTER_DEVICE
        elif st_mod.S_ISFIFO(m):
            kind = FileKind.FIFO
        elif st_mod.S_ISSOCK(m):
            kind = FileKind.SOCKET
        else:
            kind = FileKind.UNKNOWN
        return cls(kind, st.st_size, st_mod.S_IMODE(m), st.st_mtime_ns, None, st.st_atime_ns)

    def __repr__(self) -> str:
        return f"Stat({FileKind(self.kind).name}, size={self.size})"


DirEntry = Union[str, Tuple[str, Union[FileKind, int]]]


class Vfs:
    """Optional base class documenting the provider methods (see the module
    docs). It defines none of them, so a subclass supports exactly what it
    implements."""


_ERRNO: Dict[int, VfsStatus] = {
    errno.ENOENT: VfsStatus.NOT_FOUND,
    errno.EACCES: VfsStatus.ACCESS,
    errno.EPERM: VfsStatus.ACCESS,
    errno.EROFS: VfsStatus.ACCESS,
    errno.EEXIST: VfsStatus.ALREADY_EXISTS,
    errno.ENOTDIR: VfsStatus.NOT_DIRECTORY,
    errno.EISDIR: VfsStatus.IS_DIRECTORY,
    errno.ENOTEMPTY: VfsStatus.NOT_EMPTY,
    errno.EINVAL: VfsStatus.INVALID_PATH,
    errno.ENAMETOOLONG: VfsStatus.INVALID_PATH,
    errno.ENOSPC: VfsStatus.QUOTA,
    errno.EDQUOT: VfsStatus.QUOTA,
    errno.EAGAIN: VfsStatus.WOULD_BLOCK,
    errno.EXDEV: VfsStatus.CROSS_VFS,
    errno.EFBIG: VfsStatus.TOO_LARGE,
    errno.EBADF: VfsStatus.CLOSED,
    errno.ENOTSUP: VfsStatus.NOT_SUPPORTED,
    errno.ENOSYS: VfsStatus.NOT_SUPPORTED,
}

# Builtin OSError subclasses raised without an errno (``FileNotFoundError(path)``).
_OS_CLASSES = (
    (FileNotFoundError, VfsStatus.NOT_FOUND),
    (FileExistsError, VfsStatus.ALREADY_EXISTS),
    (IsADirectoryError, VfsStatus.IS_DIRECTORY),
    (NotADirectoryError, VfsStatus.NOT_DIRECTORY),
    (PermissionError, VfsStatus.ACCESS),
    (BlockingIOError, VfsStatus.WOULD_BLOCK),
)

_IO = int(VfsStatus.IO)


def _status_of(exc: BaseException, sink: ErrorSink, method: str) -> int:
    """The status an exception answers with; unexpected ones are reported."""
    if isinstance(exc, VfsError):
        return exc.status
    if isinstance(exc, OSError):
        if exc.errno is not None:
            return int(_ERRNO.get(exc.errno, VfsStatus.IO))
        for cls, status in _OS_CLASSES:
            if isinstance(exc, cls):
                return int(status)
        return _IO
    if isinstance(exc, NotImplementedError):
        return int(VfsStatus.NOT_SUPPORTED)
    sink.report(f"vfs {method}", exc)
    return _IO


# Views of borrowed C memory: `_CHARS.from_address(p)[:n]` copies n bytes out
# and `memoryview(_BYTES.from_address(p)).cast("B")[:n] = data` copies in,
# both cheaper than ctypes.string_at / memmove (foreign calls themselves).
# The huge length is only a bound; nothing of that size is allocated.
_CHARS: Any = c_char * (1 << 31)
_BYTES: Any = c_ubyte * (1 << 31)

# OpenFlags by value, so a callback does not pay for an Enum call.
_OPEN_FLAGS: Dict[int, OpenFlags] = {i: OpenFlags(i) for i in range(64)}


def _path(ptr: Optional[int], length: int) -> str:
    return _CHARS.from_address(ptr)[:length].decode() if length else ""


def _flags(value: int) -> OpenFlags:
    try:
        return _OPEN_FLAGS[value]
    except KeyError:
        return OpenFlags(value)


def _fill_stat(out: int, st: Any) -> None:
    # The library zeroed *out: only non-zero fields are written.
    if type(st) is not Stat and not isinstance(st, Stat):
        raise TypeError(f"stat/fstat must return astrid.Stat, not {type(st).__name__}")
    s = VfsStatStruct.from_address(out)
    s.kind = st.kind
    if st.size:
        s.size = st.size
    if st.mode:
        s.mode = st.mode
    has = 0
    if st.modified_ns is not None:
        s.modified_sec, s.modified_nsec = divmod(st.modified_ns, 1_000_000_000)
        has |= 1
    if st.created_ns is not None:
        s.created_sec, s.created_nsec = divmod(st.created_ns, 1_000_000_000)
        has |= 2
    if st.accessed_ns is not None:
        s.accessed_sec, s.accessed_nsec = divmod(st.accessed_ns, 1_000_000_000)
        has |= 4
    if has:
        s.has_times = has


def build_ops(provider: Any, sink: ErrorSink) -> Tuple[VfsOps, List[Any]]:
    """The ``astrid_vfs_ops_t`` serving ``provider`` and the ctypes callback
    objects it points to (keep them alive as long as the library may call)."""
    ops = VfsOps()
    keep: List[Any] = [provider]

    def bound(name: str) -> Any:
        m = getattr(provider, name, None)
        return m if callable(m) else None

    def put(name: str, cfn: Any) -> None:
        keep.append(cfn)
        setattr(ops, name, cfn)

    m_stat = bound("stat")
    if m_stat is not None:

        @trampoline

        def stat(_ud: Optional[int], p: Optional[int], n: int, follow: int, out: int) -> int:
            try:
                _fill_stat(out, m_stat(_CHARS.from_address(p)[:n].decode() if n else "", follow != 0))
                return 0
            except BaseException as exc:
                return _status_of(exc, sink, "stat")

        put("stat", VFS_STAT_FN(stat))

    m_open = bound("open")
    if m_open is not None:

        @trampoline

        def open_(_ud: Optional[int], p: Optional[int], n: int, flags: int, out: int) -> int:
            try:
                handle = m_open(_CHARS.from_address(p)[:n].decode() if n else "", _flags(flags))
                c_uint64.from_address(out).value = handle.__index__()
                return 0
            except BaseException as exc:
                return _status_of(exc, sink, "open")

        put("open", VFS_OPEN_FN(open_))

    m_read_at = bound("read_at")
    if m_read_at is not None:

        @trampoline

        def read_at(_ud: Optional[int], h: int, off: int, buf: int, size: int, out: int) -> int:
            try:
                data = m_read_at(h, off, size)
                got = len(data)
                if got > size:
                    raise ValueError(f"read_at returned {got} bytes, more than the {size} asked for")
                if got:
                    memoryview(_BYTES.from_address(buf)).cast("B")[:got] = data
                c_size_t.from_address(out).value = got
                return 0
            except BaseException as exc:
                return _status_of(exc, sink, "read_at")

        put("read_at", VFS_READ_AT_FN(read_at))

    m_write_at = bound("write_at")
    if m_write_at is not None:

        @trampoline

        def write_at(_ud: Optional[int], h: int, off: int, data: Optional[int], size: int, out: int) -> int:
            try:
                written = m_write_at(h, off, _CHARS.from_address(data)[:size] if size else b"")
                written = written.__index__()
                if written < 0 or written > size:
                    raise ValueError(f"write_at reported {written} bytes written of {size}")
                c_size_t.from_address(out).value = written
                return 0
            except BaseException as exc:
                return _status_of(exc, sink, "write_at")

        put("write_at", VFS_WRITE_AT_FN(write_at))

    m_close = bound("close")
    if m_close is not None:

        @trampoline

        def close(_ud: Optional[int], h: int) -> int:
            try:
                m_close(h)
                return 0
            except BaseException as exc:
                return _status_of(exc, sink, "close")

        put("close", VFS_CLOSE_FN(close))

    m_sync = bound("sync")
    if m_sync is not None:

        @trampoline

        def sync(_ud: Optional[int], h: int, data_only: int) -> int:
            try:
                m_sync(h, bool(data_only))
                return 0
            except BaseException as exc:
                return _status_of(exc, sink, "sync")

        put("sync", VFS_SYNC_FN(sync))

    m_set_len = bound("set_len")
    if m_set_len is not None:

        @trampoline

        def set_len(_ud: Optional[int], h: int, length: int) -> int:
            try:
                m_set_len(h, length)
                return 0
            except BaseException as exc:
                return _status_of(exc, sink, "set_len")

        put("set_len", VFS_SET_LEN_FN(set_len))

    m_fstat = bound("fstat")
    if m_fstat is not None:

        @trampoline

        def fstat(_ud: Optional[int], h: int, out: int) -> int:
            try:
                _fill_stat(out, m_fstat(h))
                return 0
            except BaseException as exc:
                return _status_of(exc, sink, "fstat")

        put("fstat", VFS_FSTAT_FN(fstat))

    m_read_dir = bound("read_dir")
    if m_read_dir is not None:

        @trampoline

        def read_dir(_ud: Optional[int], p: Optional[int], n: int, sink_fn: int, ctx: Optional[int]) -> int:
            try:
                push = VFS_DIR_SINK_FN(sink_fn)
                for entry in m_read_dir(_path(p, n)):
                    if isinstance(entry, str):
                        name, kind = entry, 0
                    else:
                        name, kind = entry[0], int(entry[1])
                    raw = name.encode()
                    if push(ctx, raw, len(raw), kind) != 0:
                        break
                return 0
            except BaseException as exc:
                return _status_of(exc, sink, "read_dir")

        put("read_dir", VFS_READ_DIR_FN(read_dir))

    for name in ("mkdir", "remove_file", "remove_dir"):
        m_path = bound(name)
        if m_path is not None:
            put(name, VFS_PATH_FN(_path_op(m_path, sink, name)))

    for name in ("rename", "hard_link"):
        m_two = bound(name)
        if m_two is not None:
            put(name, VFS_TWO_PATHS_FN(_two_paths_op(m_two, sink, name)))

    m_read_link = bound("read_link")
    if m_read_link is not None:

        @trampoline

        def read_link(_ud: Optional[int], p: Optional[int], n: int, buf: int, cap: int, out: int) -> int:
            try:
                target = m_read_link(_path(p, n))
                raw = target.encode() if isinstance(target, str) else bytes(target)
                if len(raw) > cap:
                    return int(VfsStatus.TOO_LARGE)
                memmove(buf, raw, len(raw))
                c_size_t.from_address(out).value = len(raw)
                return 0
            except BaseException as exc:
                return _status_of(exc, sink, "read_link")

        put("read_link", VFS_READ_LINK_FN(read_link))

    ops.size = sizeof(VfsOps)
    return ops, keep


def _path_op(method: Any, sink: ErrorSink, name: str) -> Any:
    @trampoline
    def op(_ud: Optional[int], p: Optional[int], n: int) -> int:
        try:
            method(_path(p, n))
            return 0
        except BaseException as exc:
            return _status_of(exc, sink, name)

    return op


def _two_paths_op(method: Any, sink: ErrorSink, name: str) -> Any:
    @trampoline
    def op(_ud: Optional[int], s: Optional[int], sn: int, d: Optional[int], dn: int) -> int:
        try:
            method(_path(s, sn), _path(d, dn))
            return 0
        except BaseException as exc:
            return _status_of(exc, sink, name)

    return op


def provides(provider: Any) -> Iterable[str]:
    """The provider methods ``provider`` implements (for diagnostics)."""
    names = [f[0] for f in VfsOps._fields_[1:]]
    return [n for n in names if callable(getattr(provider, n, None))]
