"""Benchmarks B10 and B11 of the Python binding (performance.md method).

Every row of a table runs in this one process, interleaved round-robin
(A B C A B C ...), each batch calibrated to a few tens of milliseconds, for at
least 11 rounds; the table gives min and median ns/op and the median of the
per-round ratios against the named comparator.

B10  Python -> Capsule.call("noop", 64 B) of the `hello` capsule, against the
     ctypes call floor (libc labs through ctypes), a raw ctypes call of
     astrid_capsule_call + astrid_result_free, and extism-py's Plugin.call of
     the extism-noop plugin's `noop`.
B11  a Python VFS serving a 4 KiB guest read (fsprobe `read-loop`, N reads in
     one call, through a Python provider; default and INLINE callbacks) against
     an extism-py host function returning 4 KiB (extism-noop's
     `host_read_loop`, N host calls in one plugin call; built with
     `--cfg extism_host_read` by bench.sh).

    usage: python bench.py [--rounds N] [--batch-ms MS]
    env:   ASTRID_LIB (or ASTRID_LIB_DIR), ASTRID_CAPSULES, EXTISM_NOOP_WASM
"""

from __future__ import annotations

import argparse
import ctypes
import os
import pathlib
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from ctypes import byref, c_char_p, c_int32, c_long, c_size_t, c_void_p
from typing import Callable, Dict, List, Sequence, Tuple

ROOT = pathlib.Path(__file__).resolve().parents[3]
if not os.environ.get("ASTRID_LIB"):
    lib_dir = os.environ.get("ASTRID_LIB_DIR") or os.path.join(
        os.environ.get("CARGO_TARGET_DIR") or str(ROOT / "target"), "release"
    )
    os.environ["ASTRID_LIB"] = os.path.join(lib_dir, "libastrid.so")

import astrid  # noqa: E402
import extism  # noqa: E402

CAPSULES = pathlib.Path(os.environ.get("ASTRID_CAPSULES") or ROOT / "build" / "capsules")
EXTISM_WASM = pathlib.Path(
    os.environ.get("EXTISM_NOOP_WASM")
    or ROOT / "examples/capsules/target/extism-host-read/wasm32-unknown-unknown/release/extism_noop.wasm"
)

Row = Tuple[str, Callable[[int], int]]  # name, run(n) -> operations done


def calibrate(run: Callable[[int], int], batch_s: float) -> int:
    """The iteration count making one batch of `run` last about `batch_s`."""
    n = 1
    while True:
        t = time.perf_counter()
        run(n)
        dt = time.perf_counter() - t
        if dt >= batch_s / 4 or n >= 1 << 24:
            return max(1, int(n * batch_s / max(dt, 1e-9)))
        n *= 4


Ratio = Tuple[str, str, str]  # (row, comparator row, "slower" | "faster")


def measure(title: str, rows: Sequence[Row], ratios: Sequence[Ratio], rounds: int, batch_s: float) -> Dict[str, List[float]]:
    """Runs `rows` interleaved round-robin and prints a table: min and median
    ns/op per row, then each requested ratio as the median of the per-round
    ratios. Returns the per-round ns/op of every row."""
    counts = [calibrate(run, batch_s) for _, run in rows]
    times: Dict[str, List[float]] = {name: [] for name, _ in rows}
    for _ in range(rounds):
        for (name, run), n in zip(rows, counts):
            t = time.perf_counter_ns()
            ops = run(n)
            times[name].append((time.perf_counter_ns() - t) / ops)
    print(f"\n{title}\n({rounds} rounds, batches of ~{batch_s * 1000:.0f} ms, rows interleaved round-robin)")
    print(f"  {'row':<62} {'min ns/op':>10} {'median':>10}")
    for name, _ in rows:
        print(f"  {name:<62} {min(times[name]):>10.0f} {statistics.median(times[name]):>10.0f}")
    print("  ratios (median of per-round ratios):")
    for row, against, how in ratios:
        per_round = [a / b for a, b in zip(times[row], times[against])]
        r = statistics.median(per_round)
        if how == "faster":
            verdict = f"{1 / r:.2f}x faster" if r <= 1 else f"{r:.2f}x SLOWER"
            print(f"    {against}  /  {row}  =  {1 / r:6.2f}   ({row}: {verdict})")
        else:
            print(f"    {row}  /  {against}  =  {r:6.2f}x")
    sys.stdout.flush()
    return times


# ------------------------------------------------------------ native helper


def native_helper() -> ctypes.CDLL:
    """Compiles and loads native.c (the C reference rows)."""
    include = os.environ.get("ASTRID_INCLUDE_DIR") or str(ROOT / "include")
    out_dir = pathlib.Path(tempfile.mkdtemp(prefix="astrid-pybench-"))
    so = out_dir / "libastrid_pybench.so"
    cc = os.environ.get("CC", "cc")
    src = pathlib.Path(__file__).with_name("native.c")
    subprocess.run([cc, "-O2", "-shared", "-fPIC", "-I", include, "-o", str(so), str(src)], check=True)
    helper = ctypes.CDLL(str(so))
    helper.bench_call_loop.argtypes = [c_void_p, c_void_p, c_void_p, c_char_p, c_size_t, ctypes.c_uint64]
    helper.bench_call_loop.restype = ctypes.c_int
    helper.bench_fill_vfs.argtypes = [c_void_p]
    helper.bench_fill_vfs.restype = None
    return helper


def address(fn: object) -> int:
    return ctypes.cast(fn, c_void_p).value or 0


# --------------------------------------------------------------------- B10

FLOOR = "ctypes call floor (libc labs)"
NATIVE = "C loop: astrid_capsule_call + result_free (no Python)"
RAW = "raw ctypes astrid_capsule_call + result_free"
BINDING = "astrid Capsule.call('noop', 64 B)"
BINDING_READ = "astrid Capsule.call + read .action and .data"
EXTISM = "extism-py Plugin.call('noop', 64 B)"


def b10(rounds: int, batch_s: float, helper: ctypes.CDLL) -> None:
    payload = b'{"pad":"' + b"x" * 54 + b'"}'
    assert len(payload) == 64

    libc = ctypes.CDLL(None)
    labs = libc.labs
    labs.argtypes = [c_long]
    labs.restype = c_long

    def floor(n: int) -> int:
        f = labs
        for _ in range(n):
            f(-5)
        return n

    rt = astrid.Runtime()
    hello = rt.load(CAPSULES / "hello")
    assert hello.call("noop", payload).action == "continue"
    handle = hello._h

    # The raw comparator: the same two C calls as plain ctypes code would
    # make them (argument types declared), no binding in between.
    dll = ctypes.CDLL(astrid.library().path)
    raw_call = dll.astrid_capsule_call
    raw_call.argtypes = [c_void_p, c_char_p, c_size_t, c_char_p, c_size_t, ctypes.POINTER(c_void_p),
                         ctypes.POINTER(c_void_p)]
    raw_call.restype = c_int32
    raw_free = dll.astrid_result_free
    raw_free.argtypes = [c_void_p]
    raw_free.restype = None

    def raw(n: int) -> int:
        call, free, h, p = raw_call, raw_free, handle, payload
        res, err = c_void_p(), c_void_p()
        r, e = byref(res), byref(err)
        for _ in range(n):
            if call(h, b"noop", 4, p, 64, r, e):
                raise RuntimeError("raw call failed")
            free(res)
        return n

    call_addr, free_addr = address(raw_call), address(raw_free)

    def native(n: int) -> int:
        if helper.bench_call_loop(call_addr, free_addr, handle, payload, 64, n):
            raise RuntimeError("native call loop failed")
        return n

    def binding(n: int) -> int:
        call, p = hello.call, payload
        for _ in range(n):
            call("noop", p)
        return n

    def binding_read(n: int) -> int:
        call, p = hello.call, payload
        for _ in range(n):
            r = call("noop", p)
            r.action, r.data
        return n

    # The plugin also exports B11's host_read_loop, so its import must be
    # satisfied; `noop` never calls it.
    @extism.host_fn()
    def host_read(path: str) -> bytes:
        return b""

    plugin = extism.Plugin(EXTISM_WASM.read_bytes(), wasi=False, functions=[host_read])
    assert plugin.call("noop", payload) == b""

    def extism_noop(n: int) -> int:
        call, p = plugin.call, payload
        for _ in range(n):
            call("noop", p)
        return n

    rows: List[Row] = [
        (FLOOR, floor),
        (NATIVE, native),
        (RAW, raw),
        (BINDING, binding),
        (BINDING_READ, binding_read),
        (EXTISM, extism_noop),
    ]
    times = measure(
        "B10  Python -> call of a no-op with a 64 B payload",
        rows,
        [
            (BINDING, FLOOR, "slower"),
            (RAW, FLOOR, "slower"),
            (BINDING, RAW, "slower"),
            (BINDING_READ, BINDING, "slower"),
            (BINDING, EXTISM, "faster"),
        ],
        rounds,
        batch_s,
    )
    overhead = [b - n for b, n in zip(times[BINDING], times[NATIVE])]
    per_round = statistics.median([(b - n) / f for b, n, f in zip(times[BINDING], times[NATIVE], times[FLOOR])])
    print(f"    binding overhead = Capsule.call - C loop: median {statistics.median(overhead):.0f} ns "
          f"= {per_round:.2f}x the ctypes floor")
    print("  targets: Capsule.call <= 3x the ctypes floor; >= 10x faster than extism-py")
    hello.close()
    rt.close()


class FileServer(astrid.Vfs):
    """A read-only provider serving one 4 KiB file (the minimum a guest
    read-file needs: stat, open, read_at, close)."""

    def __init__(self, name: str, data: bytes) -> None:
        self.name = name
        self.data = data
        self.lock = threading.Lock()
        self.handles: Dict[int, bytes] = {}
        self.next = 1

    def stat(self, path: str, follow: bool) -> astrid.Stat:
        if path == "":
            return astrid.Stat(astrid.FileKind.DIRECTORY)
        if path == self.name:
            return astrid.Stat(astrid.FileKind.REGULAR, len(self.data))
        raise FileNotFoundError(path)

    def open(self, path: str, flags: astrid.OpenFlags) -> int:
        if path != self.name:
            raise FileNotFoundError(path)
        with self.lock:
            h, self.next = self.next, self.next + 1
            self.handles[h] = self.data
        return h

    def read_at(self, handle: int, offset: int, size: int) -> bytes:
        return self.handles[handle][offset : offset + size]

    def fstat(self, handle: int) -> astrid.Stat:
        return astrid.Stat(astrid.FileKind.REGULAR, len(self.handles[handle]))

    def close(self, handle: int) -> None:
        with self.lock:
            self.handles.pop(handle, None)


C_VFS = "astrid guest read-file 4 KiB via C VFS, INLINE (reference)"
C_VFS_DEFAULT = "astrid guest read-file 4 KiB via C VFS, default (reference)"
PY_DEFAULT = "astrid guest read-file 4 KiB via Python VFS, default"
PY_INLINE = "astrid guest read-file 4 KiB via Python VFS, INLINE"
EXTISM_HOST = "extism-py host function returning 4 KiB"


def b11(rounds: int, batch_s: float, helper: ctypes.CDLL) -> None:
    data = bytes(range(256)) * 16
    assert len(data) == 4096
    # Which provider methods one guest read-file calls (counted once, outside
    # the measurement, through a counting wrapper).
    counted = _Counting(FileServer("data.bin", data))
    with astrid.Runtime() as rt:
        rt.mount_vfs("cwd", counted)
        with rt.load(CAPSULES / "fsprobe") as probe_capsule:
            assert probe_capsule.call("read-loop", "data.bin\n10").data == str(10 * 4096)
    per_read = {name: n / 10 for name, n in sorted(counted.by_method.items())}

    runtimes = []

    def reader(fsprobe: astrid.Capsule) -> Callable[[int], int]:
        got = fsprobe.call("read-loop", "data.bin\n3")
        assert (got.action, got.data) == ("ok", str(3 * 4096)), got

        def read(n: int) -> int:
            r = fsprobe.call("read-loop", f"data.bin\n{n}")
            if r.action != "ok":
                raise RuntimeError(r)
            return n

        return read

    rows: List[Row] = []
    # The native reference: the same reads served by C callbacks.
    ops = astrid._native.VfsOps()
    helper.bench_fill_vfs(byref(ops))
    for inline, name in ((True, C_VFS), (False, C_VFS_DEFAULT)):
        rt = astrid.Runtime(inline_callbacks=inline, fuel=1 << 50, timeout_ms=600_000)
        no_finalizer = astrid._native.FINALIZER_FN()
        rc = rt.library.astrid_runtime_mount_vfs(rt._h, b"cwd", 3, byref(ops), None, no_finalizer, None)
        assert rc == 0, rc
        fsprobe = rt.load(CAPSULES / "fsprobe")
        runtimes.append((rt, fsprobe))
        rows.append((name, reader(fsprobe)))
    for inline, name in ((False, PY_DEFAULT), (True, PY_INLINE)):
        rt = astrid.Runtime(inline_callbacks=inline, fuel=1 << 50, timeout_ms=600_000)
        rt.mount_vfs("cwd", FileServer("data.bin", data))
        fsprobe = rt.load(CAPSULES / "fsprobe")
        runtimes.append((rt, fsprobe))
        rows.append((name, reader(fsprobe)))

    @extism.host_fn()
    def host_read(path: str) -> bytes:
        return data

    plugin = extism.Plugin(EXTISM_WASM.read_bytes(), wasi=False, functions=[host_read])
    assert plugin.call("host_read_loop", b"data.bin\n3") == str(3 * 4096).encode()

    def extism_read(n: int) -> int:
        plugin.call("host_read_loop", f"data.bin\n{n}".encode())
        return n

    rows.append((EXTISM_HOST, extism_read))
    measure(
        "B11  a Python callback serving a 4 KiB guest read (ns per read, N reads per guest call)",
        rows,
        [
            (PY_INLINE, EXTISM_HOST, "faster"),
            (PY_DEFAULT, EXTISM_HOST, "faster"),
            (PY_INLINE, C_VFS, "slower"),
            (PY_DEFAULT, C_VFS_DEFAULT, "slower"),
            (PY_DEFAULT, PY_INLINE, "slower"),
        ],
        rounds,
        batch_s,
    )
    print("  Python VFS callbacks per guest read-file: "
          + ", ".join(f"{name} {n:g}" for name, n in per_read.items())
          + f" (total {sum(per_read.values()):g}; the extism row makes 1 host call per read)")
    for rt, capsule in runtimes:
        capsule.close()
        rt.close()
    errors = [e for rt, _ in runtimes for e in rt.callback_errors]
    if errors:
        raise astrid.CallbackError(errors)


class _Counting:
    """Wraps a provider, counting the calls of each of its methods."""

    def __init__(self, inner: FileServer) -> None:
        self.inner = inner
        self.by_method: Dict[str, int] = {}
        self.lock = threading.Lock()

    def __getattr__(self, name: str):
        method = getattr(self.inner, name)

        def counted(*args):
            with self.lock:
                self.by_method[name] = self.by_method.get(name, 0) + 1
            return method(*args)

        return counted


def _version(dist: str) -> str:
    try:
        from importlib.metadata import version

        return version(dist)
    except Exception:
        return "?"


def main(argv: Sequence[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--batch-ms", type=float, default=30.0)
    ap.add_argument("--only", choices=["b10", "b11"])
    args = ap.parse_args(argv)
    if args.rounds < 11:
        ap.error("performance.md asks for at least 11 rounds")
    print(f"astrid {astrid.version()} at {astrid.library().path}; python {sys.version.split()[0]}; "
          f"extism-py {_version('extism')}, extism-sys {_version('extism-sys')}")
    helper = native_helper()
    if args.only in (None, "b10"):
        b10(args.rounds, args.batch_ms / 1000, helper)
    if args.only in (None, "b11"):
        b11(args.rounds, args.batch_ms / 1000, helper)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
