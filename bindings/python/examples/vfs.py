"""An embedder that supplies the filesystem a capsule sees and decides what it
may change (what examples/c/vfs.c does): the workspace (`cwd`) mount is served
from this program's own in-memory files by a Python class, and the gate logs
every request and refuses writes outside `cwd://ws/public`.

    usage: python vfs.py [CAPSULE_DIR]   (default: build/capsules/fsprobe)
"""

from __future__ import annotations

import sys
import threading
from typing import Dict, Iterator, Set, Tuple

import astrid
from astrid import FileKind, OpenFlags, Stat


class MemoryFs(astrid.Vfs):
    """A tiny in-memory filesystem: files and directories keyed by their
    mount-relative path. Callbacks may run concurrently, hence the lock.
    Methods it does not define (rename, remove_dir, ...) are "not supported"."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._files: Dict[str, bytearray] = {}
        self._dirs: Set[str] = {""}  # "" is the mount root
        self._handles: Dict[int, Tuple[str, bool]] = {}  # handle -> (path, append)
        self._next = 1

    def _parent_ok(self, path: str) -> bool:
        return (path.rsplit("/", 1)[0] if "/" in path else "") in self._dirs

    def stat(self, path: str, follow: bool) -> Stat:  # no symlinks here
        with self._lock:
            if path in self._dirs:
                return Stat(FileKind.DIRECTORY)
            if path in self._files:
                return Stat(FileKind.REGULAR, size=len(self._files[path]))
        raise FileNotFoundError(path)

    def open(self, path: str, flags: OpenFlags) -> int:
        with self._lock:
            if path in self._dirs:
                raise IsADirectoryError(path)
            if path not in self._files:
                if not flags & OpenFlags.CREATE or not self._parent_ok(path):
                    raise FileNotFoundError(path)
                self._files[path] = bytearray()
            if flags & OpenFlags.TRUNCATE:
                del self._files[path][:]
            handle, self._next = self._next, self._next + 1
            self._handles[handle] = (path, bool(flags & OpenFlags.APPEND))
            return handle

    def _file(self, handle: int) -> Tuple[bytearray, bool]:
        try:
            path, append = self._handles[handle]
        except KeyError:
            raise astrid.VfsError(astrid.VfsStatus.CLOSED) from None
        return self._files[path], append

    def read_at(self, handle: int, offset: int, size: int) -> bytes:
        with self._lock:
            data, _ = self._file(handle)
            return bytes(data[offset : offset + size])

    def write_at(self, handle: int, offset: int, data: bytes) -> int:
        with self._lock:
            buf, append = self._file(handle)
            if append:
                offset = len(buf)
            if offset > len(buf):
                buf.extend(bytes(offset - len(buf)))
            buf[offset : offset + len(data)] = data
            return len(data)

    def close(self, handle: int) -> None:
        with self._lock:
            self._handles.pop(handle, None)

    def fstat(self, handle: int) -> Stat:
        with self._lock:
            data, _ = self._file(handle)
            return Stat(FileKind.REGULAR, size=len(data))

    def read_dir(self, path: str) -> Iterator[Tuple[str, FileKind]]:
        with self._lock:
            if path not in self._dirs:
                raise FileNotFoundError(path)
            entries = [(p, FileKind.DIRECTORY) for p in self._dirs if p]
            entries += [(p, FileKind.REGULAR) for p in self._files]
        prefix = f"{path}/" if path else ""
        for p, kind in sorted(entries):
            name = p[len(prefix) :]
            if p.startswith(prefix) and "/" not in name:
                yield name, kind

    def mkdir(self, path: str) -> None:
        with self._lock:
            if path in self._dirs or path in self._files:
                raise FileExistsError(path)
            if not self._parent_ok(path):
                raise FileNotFoundError(path)
            self._dirs.add(path)


ALLOWED = "cwd://ws/public"


def gate(request: astrid.GateRequest):
    """Logs everything; refuses writes outside cwd://ws/public."""
    writing = request.kind == astrid.GateKind.FILE_WRITE
    path = request.path or ""
    inside = path == ALLOWED or path.startswith(ALLOWED + "/")
    allow = not writing or inside
    verb = "write" if writing else "read"
    print(f"  gate: {request.capsule} asks to {verb} {path} -> {'allow' if allow else 'deny'}")
    return True if allow else request.deny("writes only under ws/public")


def on_audit(event: astrid.AuditEvent) -> None:
    if event.outcome == astrid.AuditOutcome.DENIED:
        print(f"  audit: {event.call} {event.target} denied ({event.reason})")


def call(capsule: astrid.Capsule, action: str, args: str) -> bool:
    try:
        result = capsule.call(action, args)
    except astrid.AstridError as e:
        print(f"call {action} failed: {e.message}", file=sys.stderr)
        return False
    print(f"{action}({args}) -> {result.action} {result.data or ''}")
    return True


def main(argv: list) -> int:
    directory = argv[1] if len(argv) > 1 else "build/capsules/fsprobe"
    fs = MemoryFs()
    fs.mkdir("ws")
    fs.mkdir("ws/public")
    ok = True
    with astrid.Runtime() as rt:
        rt.mount_vfs("cwd", fs)
        rt.set_gate(gate)
        rt.set_audit_callback(on_audit)
        with rt.load(directory) as capsule:
            ok &= call(capsule, "write-file", "ws/public/hello.txt\nhello from the capsule")
            ok &= call(capsule, "read-file", "ws/public/hello.txt")
            ok &= call(capsule, "write-file", "ws/secret.txt\nnot allowed")
            ok &= call(capsule, "readdir", "ws")
    # Leaving the runtime flushed the audit queue and released the provider.
    errors = rt.callback_errors
    for e in errors:
        print(f"callback error: {e!r}", file=sys.stderr)
    return 0 if ok and not errors else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
