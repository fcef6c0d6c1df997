"""An in-memory filesystem provider for the tests: a dict of paths, handles
as small integers, a lock for concurrent callbacks, call counters and the
threads the callbacks ran on."""

from __future__ import annotations

import threading
from collections import Counter
from typing import Dict, Iterator, Optional, Set, Tuple

import astrid
from astrid import FileKind, OpenFlags, Stat, VfsError, VfsStatus


class MemFs(astrid.Vfs):
    def __init__(self, dirs: Tuple[str, ...] = ("ws",)) -> None:
        self.lock = threading.Lock()
        self.files: Dict[str, bytearray] = {}
        self.dirs: Set[str] = {""} | set(dirs)
        self.handles: Dict[int, str] = {}
        self.appending: Set[int] = set()
        self.next_handle = 1
        self.calls: Counter = Counter()
        self.threads: Set[int] = set()

    def _note(self, what: str) -> None:
        self.calls[what] += 1
        self.threads.add(threading.get_ident())

    @staticmethod
    def _parent(path: str) -> str:
        return path.rsplit("/", 1)[0] if "/" in path else ""

    def stat(self, path: str, follow: bool) -> Stat:
        with self.lock:
            self._note("stat")
            if path in self.dirs:
                return Stat(FileKind.DIRECTORY)
            if path in self.files:
                return Stat(FileKind.REGULAR, len(self.files[path]), 0o644, modified_ns=1_700_000_000_123_456_789)
            raise FileNotFoundError(path)

    def open(self, path: str, flags: OpenFlags) -> int:
        with self.lock:
            self._note("open")
            if path in self.dirs:
                raise IsADirectoryError(path)
            if path not in self.files:
                if not flags & OpenFlags.CREATE:
                    raise VfsError(VfsStatus.NOT_FOUND)
                if self._parent(path) not in self.dirs:
                    raise FileNotFoundError(path)
                self.files[path] = bytearray()
            elif flags & OpenFlags.CREATE and flags & OpenFlags.EXCLUSIVE:
                raise FileExistsError(path)
            if flags & OpenFlags.TRUNCATE:
                self.files[path] = bytearray()
            h = self.next_handle
            self.next_handle += 1
            self.handles[h] = path
            if flags & OpenFlags.APPEND:
                self.appending.add(h)
            return h

    def _file(self, handle: int) -> bytearray:
        try:
            return self.files[self.handles[handle]]
        except KeyError:
            raise VfsError(VfsStatus.CLOSED) from None

    def read_at(self, handle: int, offset: int, size: int) -> bytes:
        with self.lock:
            self._note("read_at")
            return bytes(self._file(handle)[offset : offset + size])

    def write_at(self, handle: int, offset: int, data: bytes) -> int:
        with self.lock:
            self._note("write_at")
            f = self._file(handle)
            if handle in self.appending:
                offset = len(f)
            if offset > len(f):
                f.extend(b"\0" * (offset - len(f)))
            f[offset : offset + len(data)] = data
            return len(data)

    def close(self, handle: int) -> None:
        with self.lock:
            self._note("close")
            self.handles.pop(handle, None)
            self.appending.discard(handle)

    def fstat(self, handle: int) -> Stat:
        with self.lock:
            self._note("fstat")
            return Stat(FileKind.REGULAR, len(self._file(handle)))

    def read_dir(self, path: str) -> Iterator[Tuple[str, FileKind]]:
        with self.lock:
            self._note("read_dir")
            if path not in self.dirs:
                raise FileNotFoundError(path)
            prefix = f"{path}/" if path else ""
            entries = [(p, FileKind.DIRECTORY) for p in self.dirs if p] + [
                (p, FileKind.REGULAR) for p in self.files
            ]
        for p, kind in sorted(entries):
            if p.startswith(prefix) and "/" not in p[len(prefix) :]:
                yield p[len(prefix) :], kind

    def mkdir(self, path: str) -> None:
        with self.lock:
            self._note("mkdir")
            if path in self.dirs or path in self.files:
                raise FileExistsError(path)
            if self._parent(path) not in self.dirs:
                raise FileNotFoundError(path)
            self.dirs.add(path)

    def remove_file(self, path: str) -> None:
        with self.lock:
            self._note("remove_file")
            if path in self.dirs:
                raise IsADirectoryError(path)
            if self.files.pop(path, None) is None:
                raise FileNotFoundError(path)

    def content(self, path: str) -> Optional[bytes]:
        with self.lock:
            f = self.files.get(path)
            return bytes(f) if f is not None else None
