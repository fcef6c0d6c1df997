//! `astrid:fs` end to end: every function against each provider kind (host
//! directory, in-memory, a C-callback VFS written here), the escape
//! attempts of host ABI §5, the gate (deny, deadline, garbage, deferred),
//! handle lifetime and quotas.

mod common;

use astrid::ffi::vfs::*;
use astrid::gate::{GateAnswer, GateFn};
use astrid::policy::gate::{GateKind, Verdict};
use astrid::policy::paths::Mount;
use astrid::vfs::memory::MemoryFs;
use astrid::vfs::{OpenFlags, Vfs, VfsError};
use astrid::{Capsule, LoadOptions, Outcome, Runtime, RuntimeConfig};
use common::*;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

fn load_fsprobe(rt: &Runtime, workspace: Option<&Path>) -> Capsule {
    let options = LoadOptions {
        workspace_root: workspace.map(Path::to_path_buf),
        ..LoadOptions::default()
    };
    rt.load_dir(&capsule_dir("fsprobe"), &options).unwrap()
}

/// The behaviour every provider must show (host ABI §2.3 table).
fn provider_suite(c: &Capsule) {
    ok(c, "mkdir", &["ws"]);
    assert_eq!(ok(c, "write-file", &["ws/a.txt", "hello"]), "ok");
    assert_eq!(ok(c, "read-file", &["ws/a.txt"]), "hello");
    ok(c, "append", &["cwd://ws/a.txt", "!"]);
    assert_eq!(ok(c, "read-file", &["workspace://ws/a.txt"]), "hello!");
    assert_eq!(ok(c, "exists", &["ws/a.txt"]), "true");
    assert_eq!(ok(c, "exists", &["ws/none"]), "false");
    assert_eq!(err(c, "read-file", &["ws/none"]), "not-found");
    assert_eq!(err(c, "write-file", &["ws/no/such", "x"]), "not-found");

    ok(c, "mkdir", &["ws/d"]);
    assert_eq!(err(c, "mkdir", &["ws/d"]), "already-exists");
    assert_eq!(err(c, "mkdir", &["ws/x/y"]), "not-found");
    assert_eq!(err(c, "mkdir", &["ws/a.txt/z"]), "not-directory");
    ok(c, "mkdir-all", &["ws/p/q/r"]);
    ok(c, "mkdir-all", &["ws/p/q/r"]);
    assert_eq!(err(c, "mkdir-all", &["ws/a.txt/b"]), "not-directory");
    assert_eq!(err(c, "mkdir-all", &["ws/a.txt"]), "already-exists");

    assert_eq!(ok(c, "readdir", &["ws"]), "a.txt,d,p");
    assert_eq!(err(c, "readdir", &["ws/a.txt"]), "not-directory");
    assert_eq!(err(c, "readdir", &["ws/none"]), "not-found");
    assert_eq!(ok(c, "stat", &["ws/a.txt"]), "file:6");
    assert!(ok(c, "stat", &["ws/d"]).starts_with("dir:"));
    assert_eq!(ok(c, "stat-symlink", &["ws/a.txt"]), "file:6");
    assert_eq!(ok(c, "stat-times", &["ws/a.txt"]), "true");
    assert_eq!(err(c, "stat", &["ws/none"]), "not-found");

    assert_eq!(err(c, "unlink", &["ws/d"]), "is-directory");
    assert_eq!(err(c, "unlink", &["ws/none"]), "not-found");

    ok(c, "copy", &["ws/a.txt", "ws/b.txt"]);
    assert_eq!(ok(c, "read-file", &["ws/b.txt"]), "hello!");
    ok(c, "write-file", &["ws/b.txt", "replaced-by-copy"]);
    ok(c, "copy", &["ws/a.txt", "ws/b.txt"]);
    assert_eq!(ok(c, "read-file", &["ws/b.txt"]), "hello!");
    assert_eq!(err(c, "copy", &["ws/d", "ws/e"]), "is-directory");
    ok(c, "copy", &["ws/a.txt", "tmp://a"]);
    assert_eq!(ok(c, "read-file", &["/tmp/a"]), "hello!");

    ok(c, "rename", &["ws/b.txt", "ws/c.txt"]);
    assert_eq!(ok(c, "exists", &["ws/b.txt"]), "false");
    assert_eq!(err(c, "rename", &["ws/c.txt", "tmp://c"]), "cross-vfs");
    assert_eq!(err(c, "rename", &["ws/d", "ws/a.txt"]), "not-directory");
    ok(c, "mkdir", &["ws/full"]);
    ok(c, "write-file", &["ws/full/f", "1"]);
    assert_eq!(err(c, "rename", &["ws/d", "ws/full"]), "not-empty");
    assert_eq!(err(c, "rename", &["tmp://", "tmp://x"]), "access");

    ok(c, "hard-link", &["ws/a.txt", "ws/h.txt"]);
    ok(c, "write-file", &["ws/h.txt", "linked"]);
    assert_eq!(ok(c, "read-file", &["ws/a.txt"]), "linked");
    assert_eq!(
        err(c, "hard-link", &["ws/a.txt", "ws/c.txt"]),
        "already-exists"
    );
    assert_eq!(err(c, "hard-link", &["ws/d", "ws/dd"]), "is-directory");
    assert_eq!(err(c, "hard-link", &["ws/a.txt", "tmp://h"]), "cross-vfs");
    ok(c, "unlink", &["ws/h.txt"]);
    assert_eq!(ok(c, "read-file", &["ws/a.txt"]), "linked");

    assert_eq!(ok(c, "canonicalize", &["ws//./a.txt"]), "cwd://ws/a.txt");
    assert_eq!(ok(c, "canonicalize", &["workspace://ws"]), "cwd://ws");
    assert_eq!(err(c, "canonicalize", &["ws/none"]), "not-found");
    assert_eq!(err(c, "read-link", &["ws/a.txt"]), "invalid-path");

    assert_eq!(ok(c, "remove-dir-all", &["ws/p"]), "3");
    assert_eq!(ok(c, "exists", &["ws/p"]), "false");
    assert_eq!(err(c, "remove-dir-all", &["ws/a.txt"]), "not-directory");
    assert_eq!(err(c, "remove-dir-all", &["tmp://"]), "access");
    assert_eq!(err(c, "unlink", &["tmp://"]), "access");

    // Handles: positional I/O, modes, limits.
    assert_eq!(
        ok(c, "handle", &["ws/h1", "write", "w:0:hello;r:0:5"]),
        "5;!access"
    );
    assert_eq!(
        ok(
            c,
            "handle",
            &["ws/h1", "read-write", "w:5:abc;r:0:8;len:2;stat;sync;r:0:9"]
        ),
        "3;helloabc;ok;file:2;ok;he"
    );
    assert_eq!(
        ok(c, "handle", &["ws/h1", "read", "w:0:x;len:0;r:1:1"]),
        "!access;!access;e"
    );
    assert_eq!(ok(c, "handle", &["ws/h1", "read", "big-r"]), "!too-large");
    assert_eq!(ok(c, "handle", &["ws/h1", "write", "big-w"]), "!too-large");
    assert_eq!(ok(c, "handle", &["ws/h1", "read", "r:99:4"]), "");
    ok(c, "handle", &["ws/log", "append", "w:0:aa;w:0:bb"]);
    ok(c, "handle", &["ws/log", "append", "w:0:cc"]);
    assert_eq!(ok(c, "read-file", &["ws/log"]), "aabbcc");
    assert_eq!(err(c, "handle", &["ws/none", "read", ""]), "not-found");
    assert_eq!(err(c, "handle", &["ws/d", "read", ""]), "is-directory");
    // The 17th handle of a capsule is refused; all are closed after the call.
    assert_eq!(ok(c, "flood", &["ws/a.txt"]), "16:quota");
    assert_eq!(ok(c, "flood", &["ws/a.txt"]), "16:quota");
    // A handle kept past its call is closed when the call ends.
    assert_eq!(ok(c, "keep", &["ws/a.txt"]), "kept");
    assert_eq!(ok(c, "use-kept", &[]), "!closed");

    // Lexical refusals and the manifest ceiling.
    for bad in [
        "ws/../x",
        "../ws/a.txt",
        "ws/..",
        "a\u{0}b",
        "C:/ws/a.txt",
        "\\\\server\\ws",
        "ws/%2e%2e/x",
        "ws/%2E%2E",
        "ftp://ws/a.txt",
    ] {
        assert_eq!(err(c, "read-file", &[bad]), "invalid-path", "{bad:?}");
    }
    let long = format!("ws/{}", "a".repeat(4100));
    assert_eq!(err(c, "read-file", &[&long]), "invalid-path");
    assert_eq!(
        err(c, "write-file", &["cwd://ws-evil/x", "no"]),
        "capability-denied"
    );
    assert_eq!(
        err(c, "write-file", &["elsewhere", "no"]),
        "capability-denied"
    );
    assert_eq!(err(c, "mkdir", &["cwd://"]), "capability-denied");
    assert_eq!(err(c, "read-file", &["home://x"]), "capability-denied");
    assert_eq!(err(c, "write-size", &["ws/big", "10485761"]), "too-large");
}

#[test]
fn in_memory_provider() {
    let rt = runtime();
    let c = load_fsprobe(&rt, None);
    provider_suite(&c);
    // The in-memory workspace has no symlinks: stat-symlink equals stat.
    assert_eq!(ok(&c, "stat-symlink", &["ws"]), ok(&c, "stat", &["ws"]));
}

#[test]
fn host_directory_provider() {
    let rt = runtime();
    let root = scratch_dir("host");
    let c = load_fsprobe(&rt, Some(&root));
    provider_suite(&c);
    assert_eq!(std::fs::read(root.join("ws/a.txt")).unwrap(), b"linked");
    assert!(!root.join("ws/p").exists());
    // read-file checks the size before reading.
    std::fs::write(root.join("ws/huge"), vec![0u8; (10 << 20) + 1]).unwrap();
    assert_eq!(err(&c, "read-file", &["ws/huge"]), "too-large");
    assert_eq!(ok(&c, "read-size", &["ws/a.txt"]), "6");
    std::fs::remove_dir_all(&root).unwrap();
}

// ---- a C-callback VFS written here, over the built-in memory filesystem ----

struct TestVfs {
    inner: MemoryFs,
    /// 0 = honest, 1 = garbage status codes, 2 = claims over-long reads,
    /// 3 = an endless file (every read fills its buffer, slowly).
    mischief: AtomicUsize,
    calls: AtomicUsize,
    /// Handles opened and closed through the callbacks.
    opens: AtomicUsize,
    closes: AtomicUsize,
    /// Counted by the finalizer (only where a test checks it).
    finalized: Option<&'static AtomicUsize>,
}

fn tv<'a>(ud: *mut libc::c_void) -> &'a TestVfs {
    unsafe { &*(ud as *const TestVfs) }
}

fn code(r: Result<(), VfsError>) -> i32 {
    match r {
        Ok(()) => ASTRID_VFS_OK,
        Err(VfsError::NotFound) => ASTRID_VFS_NOT_FOUND,
        Err(VfsError::Access) => ASTRID_VFS_ACCESS,
        Err(VfsError::AlreadyExists) => ASTRID_VFS_ALREADY_EXISTS,
        Err(VfsError::NotDirectory) => ASTRID_VFS_NOT_DIRECTORY,
        Err(VfsError::IsDirectory) => ASTRID_VFS_IS_DIRECTORY,
        Err(VfsError::NotEmpty) => ASTRID_VFS_NOT_EMPTY,
        Err(VfsError::InvalidPath) => ASTRID_VFS_INVALID_PATH,
        Err(VfsError::Quota) => ASTRID_VFS_QUOTA,
        Err(VfsError::Closed) => ASTRID_VFS_CLOSED,
        Err(_) => ASTRID_VFS_IO,
    }
}

fn path<'a>(p: *const libc::c_char, len: usize) -> &'a str {
    unsafe { std::str::from_utf8(std::slice::from_raw_parts(p.cast(), len)).unwrap() }
}

fn fill(out: *mut astrid_vfs_stat_t, s: astrid::vfs::Stat) {
    let kind = match s.kind {
        astrid::vfs::FileKind::Regular => ASTRID_VFS_KIND_REGULAR,
        astrid::vfs::FileKind::Directory => ASTRID_VFS_KIND_DIRECTORY,
        _ => ASTRID_VFS_KIND_UNKNOWN,
    };
    let m = s.modified.unwrap();
    unsafe {
        *out = astrid_vfs_stat_t {
            size: s.size,
            kind,
            mode: s.mode,
            has_times: ASTRID_VFS_HAS_MODIFIED,
            modified_sec: m.seconds,
            modified_nsec: m.nanoseconds,
            ..Default::default()
        }
    };
}

unsafe extern "C" fn t_stat(
    ud: *mut libc::c_void,
    p: *const libc::c_char,
    l: usize,
    follow: u32,
    out: *mut astrid_vfs_stat_t,
) -> i32 {
    let v = tv(ud);
    v.calls.fetch_add(1, Ordering::SeqCst);
    if v.mischief.load(Ordering::SeqCst) == 1 {
        return 4242;
    }
    match v.inner.stat(path(p, l), follow != 0) {
        Ok(s) => {
            fill(out, s);
            ASTRID_VFS_OK
        }
        Err(e) => code(Err(e)),
    }
}
unsafe extern "C" fn t_open(
    ud: *mut libc::c_void,
    p: *const libc::c_char,
    l: usize,
    flags: u32,
    out: *mut u64,
) -> i32 {
    match tv(ud).inner.open(path(p, l), OpenFlags(flags)) {
        Ok(h) => {
            tv(ud).opens.fetch_add(1, Ordering::SeqCst);
            *out = h;
            ASTRID_VFS_OK
        }
        Err(e) => code(Err(e)),
    }
}
unsafe extern "C" fn t_read_at(
    ud: *mut libc::c_void,
    h: u64,
    off: u64,
    buf: *mut u8,
    len: usize,
    out: *mut usize,
) -> i32 {
    let v = tv(ud);
    v.calls.fetch_add(1, Ordering::SeqCst);
    match v.mischief.load(Ordering::SeqCst) {
        2 => {
            *out = len + 100;
            return ASTRID_VFS_OK;
        }
        3 => {
            std::thread::sleep(Duration::from_millis(20));
            std::ptr::write_bytes(buf, b'z', len);
            *out = len;
            return ASTRID_VFS_OK;
        }
        _ => {}
    }
    let mut data = Vec::new();
    // A deliberately short reader: at most 3 bytes per call.
    match v.inner.read_at(h, off, len.min(3), &mut data) {
        Ok(()) => {
            std::ptr::copy_nonoverlapping(data.as_ptr(), buf, data.len());
            *out = data.len();
            ASTRID_VFS_OK
        }
        Err(e) => code(Err(e)),
    }
}
unsafe extern "C" fn t_write_at(
    ud: *mut libc::c_void,
    h: u64,
    off: u64,
    data: *const u8,
    len: usize,
    out: *mut usize,
) -> i32 {
    match tv(ud)
        .inner
        .write_at(h, off, std::slice::from_raw_parts(data, len))
    {
        Ok(n) => {
            *out = n;
            ASTRID_VFS_OK
        }
        Err(e) => code(Err(e)),
    }
}
unsafe extern "C" fn t_close(ud: *mut libc::c_void, h: u64) -> i32 {
    tv(ud).closes.fetch_add(1, Ordering::SeqCst);
    tv(ud).inner.close(h);
    0
}
unsafe extern "C" fn t_sync(ud: *mut libc::c_void, h: u64, d: u32) -> i32 {
    code(tv(ud).inner.sync(h, d != 0))
}
unsafe extern "C" fn t_set_len(ud: *mut libc::c_void, h: u64, len: u64) -> i32 {
    code(tv(ud).inner.set_len(h, len))
}
unsafe extern "C" fn t_fstat(ud: *mut libc::c_void, h: u64, out: *mut astrid_vfs_stat_t) -> i32 {
    match tv(ud).inner.fstat(h) {
        Ok(s) => {
            fill(out, s);
            0
        }
        Err(e) => code(Err(e)),
    }
}
unsafe extern "C" fn t_read_dir(
    ud: *mut libc::c_void,
    p: *const libc::c_char,
    l: usize,
    sink: astrid_vfs_dir_sink_fn,
    ctx: *mut libc::c_void,
) -> i32 {
    let sink = sink.unwrap();
    code(tv(ud).inner.read_dir(path(p, l), &mut |e| {
        let kind = if e.kind == astrid::vfs::FileKind::Directory {
            ASTRID_VFS_KIND_DIRECTORY
        } else {
            ASTRID_VFS_KIND_REGULAR
        };
        sink(ctx, e.name.as_ptr().cast(), e.name.len(), kind) == 0
    }))
}
unsafe extern "C" fn t_mkdir(ud: *mut libc::c_void, p: *const libc::c_char, l: usize) -> i32 {
    code(tv(ud).inner.mkdir(path(p, l)))
}
unsafe extern "C" fn t_remove_file(ud: *mut libc::c_void, p: *const libc::c_char, l: usize) -> i32 {
    code(tv(ud).inner.remove_file(path(p, l)))
}
unsafe extern "C" fn t_remove_dir(ud: *mut libc::c_void, p: *const libc::c_char, l: usize) -> i32 {
    code(tv(ud).inner.remove_dir(path(p, l)))
}
unsafe extern "C" fn t_rename(
    ud: *mut libc::c_void,
    a: *const libc::c_char,
    al: usize,
    b: *const libc::c_char,
    bl: usize,
) -> i32 {
    code(tv(ud).inner.rename(path(a, al), path(b, bl)))
}
unsafe extern "C" fn t_hard_link(
    ud: *mut libc::c_void,
    a: *const libc::c_char,
    al: usize,
    b: *const libc::c_char,
    bl: usize,
) -> i32 {
    code(tv(ud).inner.hard_link(path(a, al), path(b, bl)))
}
unsafe extern "C" fn t_read_link(
    ud: *mut libc::c_void,
    p: *const libc::c_char,
    l: usize,
    _buf: *mut libc::c_char,
    _cap: usize,
    _out: *mut usize,
) -> i32 {
    // The memory filesystem has no links: this answers INVALID_PATH (or
    // NOT_FOUND), and makes the host walk paths with stat callbacks.
    code(tv(ud).inner.read_link(path(p, l)).map(|_| ()))
}
unsafe extern "C" fn t_finalize(ud: *mut libc::c_void) {
    let state = Box::from_raw(ud as *mut TestVfs);
    if let Some(counter) = state.finalized {
        counter.fetch_add(1, Ordering::SeqCst);
    }
}
static FINALIZED: AtomicUsize = AtomicUsize::new(0);

fn test_ops() -> astrid_vfs_ops_t {
    astrid_vfs_ops_t {
        size: std::mem::size_of::<astrid_vfs_ops_t>(),
        stat: Some(t_stat),
        open: Some(t_open),
        read_at: Some(t_read_at),
        write_at: Some(t_write_at),
        close: Some(t_close),
        sync: Some(t_sync),
        set_len: Some(t_set_len),
        fstat: Some(t_fstat),
        read_dir: Some(t_read_dir),
        mkdir: Some(t_mkdir),
        remove_file: Some(t_remove_file),
        remove_dir: Some(t_remove_dir),
        rename: Some(t_rename),
        hard_link: Some(t_hard_link),
        read_link: Some(t_read_link),
    }
}

/// Mounts the test provider on `cwd`; its finalizer bumps `finalized`.
fn mount_test_vfs(rt: &Runtime, finalized: Option<&'static AtomicUsize>) -> *const TestVfs {
    let state = Box::into_raw(Box::new(TestVfs {
        inner: MemoryFs::default(),
        mischief: AtomicUsize::new(0),
        calls: AtomicUsize::new(0),
        opens: AtomicUsize::new(0),
        closes: AtomicUsize::new(0),
        finalized,
    }));
    let provider = unsafe { callback_provider(&test_ops(), state.cast(), Some(t_finalize)) };
    rt.mount_vfs(Mount::Cwd, Some(provider)).unwrap();
    state
}

#[test]
fn c_callback_provider_and_its_misbehaviour() {
    let before = FINALIZED.load(Ordering::SeqCst);
    {
        let rt = runtime();
        let state = mount_test_vfs(&rt, Some(&FINALIZED));
        let c = load_fsprobe(&rt, None);
        provider_suite(&c);
        let state = unsafe { &*state };
        assert!(
            state.calls.load(Ordering::SeqCst) > 0,
            "the callbacks served the capsule"
        );
        // Garbage status codes become `unknown`, never a crash.
        state.mischief.store(1, Ordering::SeqCst);
        assert_eq!(err(&c, "stat", &["ws/a.txt"]), "unknown(i/o error)");
        // A read claiming more bytes than the buffer holds is refused.
        state.mischief.store(2, Ordering::SeqCst);
        assert_eq!(err(&c, "read-file", &["ws/a.txt"]), "unknown(i/o error)");
        state.mischief.store(0, Ordering::SeqCst);
        assert_eq!(ok(&c, "read-file", &["ws/a.txt"]), "linked");
        c.unload().unwrap();
        assert_eq!(FINALIZED.load(Ordering::SeqCst), before, "still mounted");
    }
    assert_eq!(
        FINALIZED.load(Ordering::SeqCst),
        before + 1,
        "finalizer ran once"
    );
}

#[test]
fn a_cancelled_call_still_closes_its_provider_handles() {
    // Default (hand-off) mode: the closes run for a call that was cancelled.
    let rt = runtime();
    let state = unsafe { &*mount_test_vfs(&rt, None) };
    let c = Arc::new(load_fsprobe(&rt, None));
    ok(&c, "write-file", &["ws", "data"]);
    let sleeper = {
        let c = c.clone();
        std::thread::spawn(move || c.call("open-then-sleep", b"ws\n2000", None))
    };
    let until = Instant::now() + Duration::from_secs(5);
    while state.opens.load(Ordering::SeqCst) < 2 {
        assert!(Instant::now() < until, "the guest never opened");
        std::thread::sleep(Duration::from_millis(5));
    }
    c.cancel();
    assert_eq!(
        sleeper.join().unwrap().map_err(|e| e.code()).unwrap_err(),
        astrid::Code::Cancelled
    );
    while state.closes.load(Ordering::SeqCst) < state.opens.load(Ordering::SeqCst) {
        assert!(Instant::now() < until, "a provider handle was never closed");
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn an_endless_provider_file_stops_at_the_whole_file_limit_and_on_cancel() {
    let rt = runtime();
    let state = unsafe { &*mount_test_vfs(&rt, None) };
    let c = Arc::new(load_fsprobe(&rt, None));
    ok(&c, "write-file", &["ws", "x"]);
    state.mischief.store(3, Ordering::SeqCst);
    // Every read fills its buffer (1 MiB) in 20 ms: past 10 MiB, too-large,
    // for the copy as for read-file.
    assert_eq!(err(&c, "copy", &["ws", "scratch"]), "too-large");
    assert_eq!(err(&c, "read-file", &["ws"]), "too-large");
    // A cancel stops the session's reads, not just the wait for them.
    let reader = {
        let c = c.clone();
        std::thread::spawn(move || c.call("read-loop", b"ws\n1000", None))
    };
    std::thread::sleep(Duration::from_millis(60));
    c.cancel();
    let _ = reader.join().unwrap();
    // The read in flight at the cancel may finish; none starts after it.
    std::thread::sleep(Duration::from_millis(50));
    let after_cancel = state.calls.load(Ordering::SeqCst);
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(
        state.calls.load(Ordering::SeqCst),
        after_cancel,
        "provider calls went on after the cancel"
    );
    state.mischief.store(0, Ordering::SeqCst);
    assert_eq!(
        state.closes.load(Ordering::SeqCst),
        state.opens.load(Ordering::SeqCst)
    );
}

#[test]
fn a_provider_without_fstat_still_serves_whole_file_reads() {
    let rt = runtime();
    let ops = astrid_vfs_ops_t {
        fstat: None,
        ..test_ops()
    };
    let state = Box::into_raw(Box::new(TestVfs {
        inner: MemoryFs::default(),
        mischief: AtomicUsize::new(0),
        calls: AtomicUsize::new(0),
        opens: AtomicUsize::new(0),
        closes: AtomicUsize::new(0),
        finalized: None,
    }));
    let provider = unsafe { callback_provider(&ops, state.cast(), Some(t_finalize)) };
    rt.mount_vfs(Mount::Cwd, Some(provider)).unwrap();
    let c = load_fsprobe(&rt, None);
    ok(&c, "mkdir", &["ws"]);
    assert_eq!(ok(&c, "write-file", &["ws/small", "hi"]), "ok");
    assert_eq!(ok(&c, "read-file", &["ws/small"]), "hi");
    // This provider answers at most 3 bytes per read: many short reads,
    // then the end, with no size known up front.
    let big = "z".repeat(4099);
    assert_eq!(ok(&c, "write-file", &["ws/f", &big]), "ok");
    assert_eq!(ok(&c, "read-size", &["ws/f"]), big.len().to_string());
}

#[test]
fn unset_callbacks_are_not_supported() {
    let rt = runtime();
    let ops = astrid_vfs_ops_t {
        size: std::mem::size_of::<astrid_vfs_ops_t>(),
        stat: Some(t_stat),
        open: None,
        read_at: None,
        write_at: None,
        close: None,
        sync: None,
        set_len: None,
        fstat: None,
        read_dir: None,
        mkdir: None,
        remove_file: None,
        remove_dir: None,
        rename: None,
        hard_link: None,
        read_link: None,
    };
    let state = Box::into_raw(Box::new(TestVfs {
        inner: MemoryFs::default(),
        mischief: AtomicUsize::new(0),
        calls: AtomicUsize::new(0),
        opens: AtomicUsize::new(0),
        closes: AtomicUsize::new(0),
        finalized: None,
    }));
    let provider = unsafe { callback_provider(&ops, state.cast(), Some(t_finalize)) };
    rt.mount_vfs(Mount::Cwd, Some(provider)).unwrap();
    let c = load_fsprobe(&rt, None);
    assert_eq!(err(&c, "mkdir", &["ws"]), "unknown(not supported)");
    assert_eq!(err(&c, "read-file", &["ws"]), "unknown(not supported)");
    assert_eq!(ok(&c, "exists", &["ws"]), "false");
    assert_eq!(err(&c, "read-link", &["ws"]), "unknown(not supported)");
}

#[test]
fn sdk_capsule_runs_against_each_provider() {
    let check = |c: &Capsule, dir: &str| {
        let r = c
            .call(
                "notes",
                format!(r#"{{"dir":"{dir}","text":"hi"}}"#).as_bytes(),
                None,
            )
            .unwrap();
        let data = r.data.clone().unwrap_or_default();
        let v: serde_json::Value = serde_json::from_str(&data).unwrap_or_else(|_| panic!("{r:?}"));
        assert_eq!(v["copied"], "hi!", "{v}");
        assert_eq!(v["head"], "12");
        assert_eq!(v["size"], 4);
        assert_eq!(v["names"], serde_json::json!(["b.txt", "c.txt"]));
        assert_eq!(v["is_dir"], true);
        assert_eq!(v["removed"], 3);
        assert_eq!(v["gone"], true);
    };
    let rt = runtime();
    let root = scratch_dir("sdk");
    let options = LoadOptions {
        workspace_root: Some(root.clone()),
        ..LoadOptions::default()
    };
    let host = rt.load_dir(&capsule_dir("sdk-fs"), &options).unwrap();
    check(&host, "notes");
    check(&host, "tmp://notes");
    assert_eq!(std::fs::read(root.join("notes/a.txt")).unwrap(), b"hi!");
    let memory = rt
        .load_dir(&capsule_dir("sdk-fs"), &LoadOptions::default())
        .unwrap();
    check(&memory, "notes");
    let rt2 = runtime();
    mount_test_vfs(&rt2, None);
    let callback = rt2
        .load_dir(&capsule_dir("sdk-fs"), &LoadOptions::default())
        .unwrap();
    check(&callback, "notes");
    std::fs::remove_dir_all(&root).unwrap();
}

// ---- escapes from a host directory ----

#[test]
fn host_directory_escapes_are_refused_without_side_effects() {
    use std::os::unix::fs::symlink;
    let rt = runtime();
    let root = scratch_dir("root");
    let outside = scratch_dir("outside");
    std::fs::write(outside.join("secret"), "s3cret").unwrap();
    std::fs::create_dir(root.join("ws")).unwrap();
    std::fs::write(root.join("ws/a.txt"), "inside").unwrap();
    symlink(&outside, root.join("ws/out_abs")).unwrap();
    symlink(outside.join("secret"), root.join("ws/secret_abs")).unwrap();
    symlink("../../../../../../../../tmp", root.join("ws/out_rel")).unwrap();
    symlink("../..", root.join("ws/up")).unwrap();
    symlink("a.txt", root.join("ws/inside")).unwrap();
    symlink(root.join("ws/a.txt"), root.join("ws/inside_abs")).unwrap();
    symlink(outside.join("new"), root.join("ws/dangling_out")).unwrap();
    let c = load_fsprobe(&rt, Some(&root));

    for path in [
        "ws/secret_abs",
        "ws/out_abs/secret",
        "ws/up/etc/passwd",
        "ws/out_rel",
    ] {
        assert_eq!(err(&c, "read-file", &[path]), "boundary-escape", "{path}");
    }
    assert_eq!(err(&c, "readdir", &["ws/out_abs"]), "boundary-escape");
    assert_eq!(err(&c, "stat", &["ws/secret_abs"]), "boundary-escape");
    assert_eq!(
        err(&c, "write-file", &["ws/out_abs/planted", "x"]),
        "boundary-escape"
    );
    assert_eq!(
        err(&c, "write-file", &["ws/dangling_out", "x"]),
        "boundary-escape"
    );
    assert_eq!(
        err(&c, "handle", &["ws/secret_abs", "read", ""]),
        "boundary-escape"
    );
    assert_eq!(
        err(&c, "copy", &["ws/secret_abs", "ws/copy"]),
        "boundary-escape"
    );
    assert_eq!(
        err(&c, "hard-link", &["ws/secret_abs", "ws/hl"]),
        "boundary-escape"
    );
    assert_eq!(err(&c, "read-link", &["ws/secret_abs"]), "boundary-escape");
    assert_eq!(err(&c, "canonicalize", &["ws/out_abs"]), "boundary-escape");
    assert_eq!(err(&c, "mkdir-all", &["ws/out_abs/x/y"]), "boundary-escape");
    // The link itself may be inspected and removed; its target is untouched.
    assert_eq!(
        ok(&c, "stat-symlink", &["ws/secret_abs"]).split(':').next(),
        Some("symlink")
    );
    assert_eq!(ok(&c, "read-link", &["ws/inside"]), "a.txt");
    assert_eq!(ok(&c, "read-link", &["ws/inside_abs"]), "cwd://ws/a.txt");
    assert_eq!(ok(&c, "read-file", &["ws/inside"]), "inside");
    assert_eq!(ok(&c, "canonicalize", &["ws/inside"]), "cwd://ws/a.txt");
    ok(&c, "unlink", &["ws/secret_abs"]);
    // A link into a subtree the manifest does not grant for writing.
    symlink("../elsewhere", root.join("ws/to_elsewhere")).unwrap();
    std::fs::create_dir(root.join("elsewhere")).unwrap();
    assert_eq!(
        err(&c, "write-file", &["ws/to_elsewhere/x", "x"]),
        "capability-denied"
    );
    // remove-dir-all does not follow links out of the tree.
    std::fs::create_dir(root.join("ws/tree")).unwrap();
    symlink(&outside, root.join("ws/tree/link")).unwrap();
    std::fs::write(root.join("ws/tree/f"), "f").unwrap();
    assert_eq!(ok(&c, "remove-dir-all", &["ws/tree"]), "3");

    assert_eq!(
        std::fs::read_to_string(outside.join("secret")).unwrap(),
        "s3cret"
    );
    let left: Vec<_> = std::fs::read_dir(&outside)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(
        left,
        vec![std::ffi::OsString::from("secret")],
        "nothing planted outside"
    );
    assert!(!root.join("elsewhere/x").exists());
    std::fs::remove_dir_all(&root).unwrap();
    std::fs::remove_dir_all(&outside).unwrap();
}

#[test]
fn symlink_swapped_between_check_and_use_cannot_escape() {
    use std::os::unix::fs::symlink;
    let rt = runtime();
    let root = scratch_dir("race");
    let outside = scratch_dir("race-out");
    std::fs::create_dir(root.join("ws")).unwrap();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let swapper = {
        let (root, outside, stop) = (root.clone(), outside.clone(), stop.clone());
        std::thread::spawn(move || {
            let target = root.join("ws/race");
            while !stop.load(Ordering::SeqCst) {
                let _ = std::fs::remove_dir_all(&target);
                let _ = std::fs::remove_file(&target);
                let _ = std::fs::create_dir(&target);
                std::thread::yield_now();
                let _ = std::fs::remove_dir_all(&target);
                let _ = symlink(&outside, &target);
                std::thread::yield_now();
            }
        })
    };
    let c = load_fsprobe(&rt, Some(&root));
    let mut outcomes = std::collections::BTreeSet::new();
    for _ in 0..300 {
        outcomes.insert(
            fs(&c, "write-file", &["ws/race/x", "x"])
                .map(|_| "ok".to_string())
                .unwrap_or_else(|e| e),
        );
    }
    stop.store(true, Ordering::SeqCst);
    swapper.join().unwrap();
    assert_eq!(
        std::fs::read_dir(&outside).unwrap().count(),
        0,
        "outcomes {outcomes:?}"
    );
    for o in &outcomes {
        assert!(
            [
                "ok",
                "boundary-escape",
                "not-found",
                "not-directory",
                "already-exists",
                // A link swapped in after the check is found by the
                // no-follow walk and refused, never followed.
                "invalid-path"
            ]
            .contains(&o.as_str()),
            "{o}"
        );
    }
    std::fs::remove_dir_all(&root).unwrap();
    std::fs::remove_dir_all(&outside).unwrap();
}

// ---- the gate ----

fn gated_runtime(gate_ms: u64, gate: GateFn) -> Runtime {
    let rt = Runtime::new(RuntimeConfig {
        gate_timeout: Duration::from_millis(gate_ms),
        ..RuntimeConfig::default()
    })
    .unwrap();
    rt.set_gate(Some(gate)).unwrap();
    rt
}

fn wait_for_events(events: &Mutex<Vec<astrid::AuditEvent>>, call: &str) -> astrid::AuditEvent {
    let until = Instant::now() + Duration::from_secs(5);
    loop {
        if let Some(e) = events.lock().unwrap().iter().rev().find(|e| e.call == call) {
            return e.clone();
        }
        assert!(Instant::now() < until, "no audit event for {call}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn gate_decides_within_the_manifest_and_its_reason_reaches_only_the_audit() {
    let asked = Arc::new(Mutex::new(Vec::new()));
    let log = asked.clone();
    let rt = gated_runtime(
        1000,
        Arc::new(move |req, _| {
            log.lock().unwrap().push((
                req.kind,
                req.path.clone().unwrap(),
                req.host_path.is_some(),
            ));
            if req.kind == GateKind::FileWrite
                && !req.path.as_deref().unwrap().starts_with("cwd://ws/allowed")
            {
                GateAnswer::Decided(Verdict::deny("writes only in ws/allowed"))
            } else {
                GateAnswer::Decided(Verdict::allow())
            }
        }),
    );
    let events = collect_audit(&rt);
    let root = scratch_dir("gate");
    let c = load_fsprobe(&rt, Some(&root));
    ok(&c, "mkdir-all", &["ws/allowed"]);
    assert_eq!(
        err(&c, "write-file", &["ws/other", "x"]),
        "capability-denied"
    );
    let e = wait_for_events(&events, "fs.write-file");
    assert_eq!(e.outcome, Outcome::Denied);
    assert!(
        e.reason
            .as_deref()
            .unwrap()
            .contains("writes only in ws/allowed"),
        "{e:?}"
    );
    assert_eq!(e.target.as_deref(), Some("cwd://ws/other"));
    ok(&c, "write-file", &["ws/allowed/f", "x"]);
    assert_eq!(ok(&c, "read-file", &["ws/allowed/f"]), "x");
    // Never asked about what the manifest refuses.
    asked.lock().unwrap().clear();
    assert_eq!(
        err(&c, "write-file", &["elsewhere", "x"]),
        "capability-denied"
    );
    assert!(asked.lock().unwrap().is_empty());
    // The host path is given to the gate for host-directory mounts.
    ok(&c, "exists", &["ws"]);
    assert!(asked.lock().unwrap().iter().all(|(_, _, host)| *host));
    std::fs::remove_dir_all(&root).unwrap();
}

#[test]
fn gate_overrunning_its_deadline_denies_in_bounded_time() {
    let rt = gated_runtime(
        100,
        Arc::new(|_, _| {
            std::thread::sleep(Duration::from_secs(2));
            GateAnswer::Decided(Verdict::allow())
        }),
    );
    let c = load_fsprobe(&rt, None);
    let started = Instant::now();
    assert_eq!(err(&c, "write-file", &["ws", "x"]), "capability-denied");
    assert!(
        started.elapsed() < Duration::from_millis(1500),
        "{:?}",
        started.elapsed()
    );
    // A panicking gate denies too, and the runtime keeps serving.
    rt.set_gate(Some(Arc::new(|_, _| panic!("gate bug"))))
        .unwrap();
    assert_eq!(err(&c, "write-file", &["ws", "x"]), "capability-denied");
    rt.set_gate(None).unwrap();
    assert_eq!(ok(&c, "write-file", &["ws", "x"]), "ok");
}

#[test]
fn deferred_verdicts_resolve_from_another_thread() {
    let tickets = Arc::new(Mutex::new(Vec::new()));
    let keep = tickets.clone();
    let rt = gated_runtime(
        5000,
        Arc::new(move |_, deferral| {
            let ticket = deferral.ticket();
            keep.lock().unwrap().push(ticket.clone());
            GateAnswer::Pending(ticket)
        }),
    );
    let c = Arc::new(load_fsprobe(&rt, None));
    for (allowed, expected) in [
        (true, Ok("ok".to_string())),
        (false, Err("capability-denied".to_string())),
    ] {
        let resolver = {
            let tickets = tickets.clone();
            std::thread::spawn(move || loop {
                if let Some(t) = tickets.lock().unwrap().pop() {
                    t.resolve(Verdict {
                        allowed,
                        reason: None,
                    });
                    return;
                }
                std::thread::sleep(Duration::from_millis(5));
            })
        };
        assert_eq!(fs(&c, "write-file", &["ws", "x"]), expected);
        resolver.join().unwrap();
    }
    // Unloaded while pending: the call returns `closed`; a late resolve is harmless.
    let caller = {
        let c = c.clone();
        std::thread::spawn(move || c.call("write-file", b"ws\ny", None).map_err(|e| e.code()))
    };
    let ticket = loop {
        if let Some(t) = tickets.lock().unwrap().pop() {
            break t;
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let started = Instant::now();
    c.cancel();
    // The host call returns `closed`, and the guest, cancelled, is stopped.
    assert_eq!(caller.join().unwrap(), Err(astrid::Code::Cancelled));
    assert!(started.elapsed() < Duration::from_secs(2));
    ticket.resolve(Verdict::allow());
    c.unload().unwrap();
    ticket.resolve(Verdict::allow());
}

#[test]
fn cancel_closes_handles_and_audit_sees_every_call() {
    let rt = runtime();
    let events = collect_audit(&rt);
    let c = Arc::new(load_fsprobe(&rt, None));
    ok(&c, "write-file", &["ws", "data"]);
    let sleeper = {
        let c = c.clone();
        std::thread::spawn(move || {
            let started = Instant::now();
            let r = c.call("open-then-sleep", b"ws\n2000", None);
            (r.map_err(|e| e.code()), started.elapsed())
        })
    };
    std::thread::sleep(Duration::from_millis(200));
    c.cancel();
    let (result, took) = sleeper.join().unwrap();
    assert_eq!(result, Err(astrid::Code::Cancelled));
    assert!(took < Duration::from_millis(1500), "{took:?}");
    assert_eq!(ok(&c, "read-file", &["ws"]), "data");
    assert_eq!(err(&c, "read-file", &["elsewhere/../x"]), "invalid-path");
    let until = Instant::now() + Duration::from_secs(5);
    while events
        .lock()
        .unwrap()
        .iter()
        .filter(|e| e.call == "fs.read-file")
        .count()
        < 2
    {
        assert!(Instant::now() < until, "audit events missing");
        std::thread::sleep(Duration::from_millis(5));
    }
    let events = events.lock().unwrap();
    let e = events
        .iter()
        .rev()
        .find(|e| e.call == "fs.read-file")
        .unwrap();
    assert_eq!(e.outcome, Outcome::Failed);
    assert_eq!(e.reason.as_deref(), Some("invalid-path"));
    let reads: Vec<_> = events.iter().filter(|e| e.call == "fs.read-file").collect();
    assert_eq!(reads.len(), 2);
    assert_eq!(reads[0].outcome, Outcome::Allowed);
    assert_eq!(reads[0].bytes, 4);
    assert!(events
        .iter()
        .any(|e| e.call == "fs.fs-open" && e.outcome == Outcome::Allowed));
}
