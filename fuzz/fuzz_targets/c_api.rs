//! The C API driven by a fuzzed sequence of calls over real, freed and
//! forged handles. Invariants: no crash, every status is an `ASTRID_*`
//! code the header documents for that function, an error object (when
//! one is written) carries the returned code, and a freed or forged handle
//! is `ASTRID_E_CLOSED`, never a use-after-free.
//!
//! One runtime (with `hello` and `probe` loaded) lives for the whole fuzz
//! process; each input may add one short-lived runtime and a few capsules
//! of its own, and runs at most `MAX_OPS` operations.

#![no_main]

use astrid::ffi::call::{
    astrid_capsule_call, astrid_capsule_cancel, astrid_result_action, astrid_result_data,
    astrid_result_free, astrid_result_t,
};
use astrid::ffi::capsule::{
    astrid_capsule_load, astrid_capsule_name, astrid_capsule_t, astrid_capsule_unload,
    astrid_config_entry_t, astrid_load_options_init, astrid_load_options_t,
};
use astrid::ffi::errors::{
    astrid_error_code, astrid_error_free, astrid_error_message, astrid_error_t,
};
use astrid::ffi::runtime::{
    astrid_runtime_config_init, astrid_runtime_config_t, astrid_runtime_free, astrid_runtime_new,
    astrid_runtime_t,
};
use astrid::ffi::*;
use libfuzzer_sys::fuzz_target;
use std::ffi::CStr;
use std::sync::OnceLock;
use std::time::Duration;

const MAX_OPS: usize = 16;

const MAX_OWN_CAPSULES: usize = 3;

fn capsule_dir(name: &str) -> String {
    let root = std::env::var("ASTRID_FUZZ_CAPSULES")
        .unwrap_or_else(|_| concat!(env!("CARGO_MANIFEST_DIR"), "/../build/capsules").to_string());
    format!("{root}/{name}")
}

/// Statuses each function may return, from the header.
const NEW: &[i32] = &[
    ASTRID_OK,
    ASTRID_E_INVALID_ARGUMENT,
    ASTRID_E_UTF8,
    ASTRID_E_IO,
    ASTRID_E_INTERNAL,
];
const LOAD: &[i32] = &[
    ASTRID_OK,
    ASTRID_E_INVALID_ARGUMENT,
    ASTRID_E_UTF8,
    ASTRID_E_NOT_FOUND,
    ASTRID_E_MANIFEST,
    ASTRID_E_COMPILE,
    ASTRID_E_LINK,
    ASTRID_E_TRAP,
    ASTRID_E_RESOURCE_LIMIT,
    ASTRID_E_CLOSED,
    ASTRID_E_IO,
];
const CALL: &[i32] = &[
    ASTRID_OK,
    ASTRID_E_INVALID_ARGUMENT,
    ASTRID_E_UTF8,
    ASTRID_E_NOT_FOUND,
    ASTRID_E_TIMEOUT,
    ASTRID_E_CANCELLED,
    ASTRID_E_OUT_OF_FUEL,
    ASTRID_E_RESOURCE_LIMIT,
    ASTRID_E_TRAP,
    ASTRID_E_CLOSED,
];
const CANCEL: &[i32] = &[ASTRID_OK, ASTRID_E_INVALID_ARGUMENT, ASTRID_E_CLOSED];
const UNLOAD: &[i32] = &[ASTRID_OK, ASTRID_E_CLOSED];

/// Checks a status and the error object that came with it, then frees it.
fn settle(what: &str, status: i32, err: *mut astrid_error_t, allowed: &[i32]) -> i32 {
    assert!(
        allowed.contains(&status),
        "{what}: status {status} is not one the header documents ({allowed:?})"
    );
    if status == ASTRID_OK {
        assert!(err.is_null(), "{what}: error object written on success");
    } else if !err.is_null() {
        assert_eq!(
            astrid_error_code(err),
            status,
            "{what}: error code vs status"
        );
        let message = unsafe { CStr::from_ptr(astrid_error_message(err)) };
        assert!(
            !message.to_bytes().is_empty(),
            "{what}: empty error message"
        );
        let text = message
            .to_str()
            .expect("error message is UTF-8")
            .to_string();
        LAST_ERROR.with(|e| *e.borrow_mut() = text);
        astrid_error_free(err);
    }
    status
}

thread_local! {
    /// The message of the last error settled on this thread (for panics).
    static LAST_ERROR: std::cell::RefCell<String> = const { std::cell::RefCell::new(String::new()) };
}

fn last_error() -> String {
    LAST_ERROR.with(|e| e.borrow().clone())
}

/// A compiled-code cache on disk shared by every runtime of the process (and
/// later runs), so a fresh runtime does not recompile the test capsules.
fn cache_dir() -> &'static str {
    static DIR: OnceLock<String> = OnceLock::new();
    DIR.get_or_init(|| {
        std::env::var("ASTRID_FUZZ_CACHE")
            .unwrap_or_else(|_| concat!(env!("CARGO_MANIFEST_DIR"), "/target/c_api-cache").into())
    })
}

fn small_config(workers: u32, pool: u32) -> astrid_runtime_config_t {
    let mut cfg = std::mem::MaybeUninit::<astrid_runtime_config_t>::zeroed();
    assert_eq!(
        astrid_runtime_config_init(cfg.as_mut_ptr(), std::ptr::null_mut()),
        ASTRID_OK
    );
    let mut cfg = unsafe { cfg.assume_init() };
    cfg.cache_dir = cache_dir().as_ptr().cast();
    cfg.cache_dir_len = cache_dir().len();
    cfg.worker_threads = workers;
    cfg.pool_size = pool;
    cfg.timeout_ms = 2_000;
    cfg.unload_grace_ms = 2_000;
    cfg
}

fn new_runtime(cfg: &astrid_runtime_config_t) -> (i32, usize) {
    let mut rt: *mut astrid_runtime_t = std::ptr::null_mut();
    let mut err = std::ptr::null_mut();
    let status = settle(
        "runtime_new",
        astrid_runtime_new(cfg, &mut rt, &mut err),
        err,
        NEW,
    );
    if status == ASTRID_OK {
        assert!(!rt.is_null());
    }
    (status, rt as usize)
}

/// Loads `dir`; `config` gives probe's required `[env] REQUIRED`.
fn load(rt: usize, dir: &[u8], config: bool) -> (i32, usize) {
    let mut capsule: *mut astrid_capsule_t = std::ptr::null_mut();
    let mut err = std::ptr::null_mut();
    let (key, value) = ("REQUIRED", "given");
    let entry = astrid_config_entry_t {
        key: key.as_ptr().cast(),
        key_len: key.len(),
        value: value.as_ptr().cast(),
        value_len: value.len(),
    };
    let mut opts = std::mem::MaybeUninit::<astrid_load_options_t>::zeroed();
    assert_eq!(
        astrid_load_options_init(opts.as_mut_ptr(), std::ptr::null_mut()),
        ASTRID_OK
    );
    let mut opts = unsafe { opts.assume_init() };
    opts.config = &entry;
    opts.config_len = 1;
    let status = astrid_capsule_load(
        rt as *mut astrid_runtime_t,
        dir.as_ptr().cast(),
        dir.len(),
        if config { &opts } else { std::ptr::null() },
        &mut capsule,
        &mut err,
    );
    let status = settle("capsule_load", status, err, LOAD);
    if status == ASTRID_OK {
        assert!(!capsule.is_null());
    } else {
        assert!(capsule.is_null(), "out_capsule written on failure");
    }
    (status, capsule as usize)
}

/// Calls and checks the result; returns the status and a live result.
fn call(capsule: usize, action: &[u8], payload: &[u8]) -> (i32, *mut astrid_result_t) {
    let mut result: *mut astrid_result_t = std::ptr::null_mut();
    let mut err = std::ptr::null_mut();
    let status = astrid_capsule_call(
        capsule as *mut astrid_capsule_t,
        action.as_ptr().cast(),
        action.len(),
        payload.as_ptr(),
        payload.len(),
        &mut result,
        &mut err,
    );
    let status = settle("capsule_call", status, err, CALL);
    if status == ASTRID_OK {
        assert!(!result.is_null());
        let mut len = usize::MAX;
        let text = astrid_result_action(result, &mut len);
        assert!(!text.is_null());
        let text = unsafe { CStr::from_ptr(text) };
        assert_eq!(text.to_bytes().len(), len, "action length vs NUL");
        let (mut data, mut dlen) = (std::ptr::null(), usize::MAX);
        if astrid_result_data(result, &mut data, &mut dlen) {
            let data = unsafe { CStr::from_ptr(data) };
            assert!(data.to_bytes().len() <= dlen);
        }
    } else {
        assert!(result.is_null(), "out_result written on failure");
    }
    (status, result)
}

struct World {
    rt: usize,
    hello: usize,
    probe: usize,
}

fn world() -> &'static World {
    static WORLD: OnceLock<World> = OnceLock::new();
    WORLD.get_or_init(|| {
        let (status, rt) = new_runtime(&small_config(1, 2));
        assert_eq!(status, ASTRID_OK);
        let (s1, hello) = load(rt, capsule_dir("hello").as_bytes(), false);
        assert_eq!(
            s1,
            ASTRID_OK,
            "loading hello (build the test capsules first): {}",
            last_error()
        );
        let (s2, probe) = load(rt, capsule_dir("probe").as_bytes(), true);
        assert_eq!(s2, ASTRID_OK, "loading probe: {}", last_error());
        World { rt, hello, probe }
    })
}

#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Hello,
    Probe,
}

struct Capsule {
    handle: usize,
    kind: Kind,
    /// Index into `Seq::runtimes`.
    runtime: usize,
    live: bool,
    /// Loaded by this input (unloaded at its end).
    own: bool,
}

struct Runtime {
    handle: usize,
    live: bool,
}

struct Seq<'a> {
    data: &'a [u8],
    runtimes: Vec<Runtime>,
    capsules: Vec<Capsule>,
    results: Vec<*mut astrid_result_t>,
    /// Handles freed earlier, of any kind.
    dead: Vec<usize>,
}

impl Seq<'_> {
    fn byte(&mut self) -> u8 {
        match self.data.split_first() {
            Some((b, rest)) => {
                self.data = rest;
                *b
            }
            None => 0,
        }
    }

    fn bytes(&mut self, max: usize) -> Vec<u8> {
        let n = usize::from(self.byte()) % (max + 1);
        let n = n.min(self.data.len());
        let (head, rest) = self.data.split_at(n);
        self.data = rest;
        head.to_vec()
    }

    fn is_live_capsule(&self, handle: usize) -> Option<&Capsule> {
        self.capsules.iter().find(|c| c.live && c.handle == handle)
    }

    /// A capsule handle: live, unloaded, forged, NULL or a runtime's.
    fn pick_capsule(&mut self) -> usize {
        let b = self.byte();
        let n = self.capsules.len();
        match b % 8 {
            0..=3 if n > 0 => self.capsules[usize::from(b / 8) % n].handle,
            4 if !self.dead.is_empty() => self.dead[usize::from(b / 8) % self.dead.len()],
            5 => 0,
            6 => self.runtimes[usize::from(b / 8) % self.runtimes.len()].handle,
            _ => {
                let base = self.capsules.first().map_or(0x10_0000, |c| c.handle);
                let forged = u64::from_le_bytes(std::array::from_fn(|_| self.byte()));
                match b % 3 {
                    0 => base.wrapping_add(usize::from(b)),
                    1 => base.wrapping_add(16 * usize::from(b)),
                    _ => forged as usize,
                }
            }
        }
    }

    /// What a call on `handle` must return when it is not a live capsule
    /// of a live runtime: `None` when it is one.
    fn expect_dead(&self, handle: usize) -> Option<i32> {
        if handle == 0 {
            return Some(ASTRID_E_INVALID_ARGUMENT);
        }
        match self.is_live_capsule(handle) {
            Some(c) if self.runtimes[c.runtime].live => None,
            _ => Some(ASTRID_E_CLOSED),
        }
    }

    fn op_load(&mut self) {
        let b = self.byte();
        let rt_index = usize::from(b / 4) % self.runtimes.len();
        let own = self.capsules.iter().filter(|c| c.own).count();
        let (dir, kind) = match b % 4 {
            0 => (capsule_dir("hello").into_bytes(), Some(Kind::Hello)),
            1 => (capsule_dir("probe").into_bytes(), Some(Kind::Probe)),
            2 => (capsule_dir("no-such-capsule").into_bytes(), None),
            _ => (self.bytes(12), None),
        };
        if kind.is_some() && own >= MAX_OWN_CAPSULES {
            return;
        }
        let rt = if b & 0x80 != 0 && !self.dead.is_empty() {
            self.dead[usize::from(b) % self.dead.len()]
        } else {
            self.runtimes[rt_index].handle
        };
        let rt_live = self.runtimes.iter().any(|r| r.live && r.handle == rt);
        let config = b & 0x40 == 0;
        let (status, handle) = load(rt, &dir, config);
        if rt_live && kind == Some(Kind::Probe) && !config {
            assert_eq!(
                status, ASTRID_E_MANIFEST,
                "probe without its REQUIRED config"
            );
            return;
        }
        if !rt_live {
            assert_eq!(status, ASTRID_E_CLOSED, "load on a freed runtime");
        }
        if status == ASTRID_OK {
            let kind = kind.expect("only the test capsules load");
            let runtime = self.runtimes.iter().position(|r| r.handle == rt).unwrap();
            assert!(
                self.is_live_capsule(handle).is_none(),
                "a handle was reused"
            );
            assert!(!self.dead.contains(&handle), "a freed handle was reused");
            self.capsules.push(Capsule {
                handle,
                kind,
                runtime,
                live: true,
                own: true,
            });
        } else if kind.is_some() && rt_live {
            panic!("loading a test capsule failed: {status}: {}", last_error());
        }
    }

    fn op_call(&mut self) {
        let handle = self.pick_capsule();
        let kind = self.is_live_capsule(handle).map(|c| c.kind);
        let b = self.byte();
        let action: Vec<u8> = match (kind, b % 12) {
            (Some(Kind::Probe), 0) => b"sleep:1000000".to_vec(),
            (Some(Kind::Probe), 1) => b"config:GREETING".to_vec(),
            (Some(Kind::Probe), 2) => b"random:16".to_vec(),
            (Some(Kind::Probe), 3) => b"caps".to_vec(),
            (_, 4) => b"greet".to_vec(),
            (_, 5) => b"echo".to_vec(),
            (_, 6) => b"echo-len".to_vec(),
            (_, 7) => b"noop".to_vec(),
            (_, 8) => vec![0xff, 0xfe],
            (_, 9) => Vec::new(),
            _ => self.bytes(24),
        };
        let payload = self.bytes(64);
        let expect = self.expect_dead(handle);
        let (status, result) = call(handle, &action, &payload);
        if let Some(expect) = expect {
            // A capsule of a freed runtime is still a registered handle: its
            // arguments are checked (ASTRID_E_UTF8) before the call finds the
            // runtime closed. Both are documented.
            let bad_utf8 = std::str::from_utf8(&action).is_err();
            let registered = self.is_live_capsule(handle).is_some();
            if !(bad_utf8 && registered && status == ASTRID_E_UTF8) {
                assert_eq!(status, expect, "call on a dead handle {handle:#x}");
            }
        }
        if !result.is_null() {
            self.results.push(result);
        }
    }

    fn op_cancel(&mut self) {
        let handle = self.pick_capsule();
        let expect = self.expect_dead(handle);
        let mut err = std::ptr::null_mut();
        let status = settle(
            "capsule_cancel",
            astrid_capsule_cancel(handle as *mut _, &mut err),
            err,
            CANCEL,
        );
        // Fixed finding: cancel on a capsule whose runtime was freed returned
        // ASTRID_OK; it is ASTRID_E_CLOSED like every other use.
        match expect {
            Some(expect) => assert_eq!(status, expect, "cancel on a dead handle"),
            None => assert_eq!(status, ASTRID_OK),
        }
    }

    fn op_unload(&mut self) {
        let handle = self.pick_capsule();
        let world = world();
        if handle == world.hello || handle == world.probe {
            return; // the process-wide capsules stay
        }
        let live = self.is_live_capsule(handle).is_some();
        let mut err = std::ptr::null_mut();
        let status = settle(
            "capsule_unload",
            astrid_capsule_unload(handle as *mut _, &mut err),
            err,
            UNLOAD,
        );
        if handle == 0 {
            assert_eq!(status, ASTRID_OK, "unload(NULL) is a no-op");
        } else if live {
            // Also after its runtime was freed: handles stay valid to unload.
            assert_eq!(status, ASTRID_OK, "unload of a live handle");
            let c = self
                .capsules
                .iter_mut()
                .find(|c| c.live && c.handle == handle)
                .unwrap();
            c.live = false;
            self.dead.push(handle);
        } else {
            assert_eq!(status, ASTRID_E_CLOSED, "unload of a dead handle");
        }
    }

    fn op_result_free(&mut self) {
        let b = usize::from(self.byte());
        if self.results.is_empty() {
            astrid_result_free(std::ptr::null_mut());
        } else {
            let r = self.results.swap_remove(b % self.results.len());
            astrid_result_free(r);
        }
    }

    fn op_runtime_new(&mut self) {
        if self.runtimes.len() >= 2 {
            return;
        }
        let b = self.byte();
        let mut cfg = small_config(1, 1);
        let mut expect_invalid = false;
        if b & 1 != 0 {
            cfg.flags = u32::from(self.byte()) << (b % 5);
            expect_invalid = cfg.flags & !31 != 0;
        }
        if b & 2 != 0 {
            cfg.size = usize::from(self.byte()) % std::mem::size_of::<astrid_runtime_config_t>();
            // From the first appended field's offset up, a size is an older
            // caller's struct (accepted); below it, refused.
            let oldest = std::mem::offset_of!(astrid_runtime_config_t, memfs_quota_bytes);
            expect_invalid |= cfg.size < oldest;
        }
        let (status, handle) = new_runtime(&cfg);
        if expect_invalid {
            assert_eq!(status, ASTRID_E_INVALID_ARGUMENT);
        }
        if status == ASTRID_OK {
            self.runtimes.push(Runtime { handle, live: true });
        }
    }

    fn op_runtime_free(&mut self) {
        let b = self.byte();
        let handle = match b % 4 {
            0 if self.runtimes.len() > 1 => self.runtimes[1].handle,
            1 if !self.dead.is_empty() => self.dead[usize::from(b) % self.dead.len()],
            2 => 0,
            _ => 0x7fff_0000_usize.wrapping_add(usize::from(b) * 16),
        };
        if handle == world().rt {
            return;
        }
        astrid_runtime_free(handle as *mut _);
        if let Some(r) = self
            .runtimes
            .iter_mut()
            .find(|r| r.live && r.handle == handle)
        {
            r.live = false;
            self.dead.push(handle);
        }
    }

    /// A call running on another thread while this one cancels (or
    /// unloads) its capsule.
    fn op_cancel_running(&mut self) {
        let b = self.byte();
        // The newest probe: one this input loaded (and may unload) if any.
        let Some(index) = self
            .capsules
            .iter()
            .rposition(|c| c.live && c.kind == Kind::Probe && self.runtimes[c.runtime].live)
        else {
            return;
        };
        let handle = self.capsules[index].handle;
        let unload = b & 1 != 0 && self.capsules[index].own;
        let wait = Duration::from_micros(u64::from(b) * 24);
        // Looks the handle up on this thread first, so the per-thread handle
        // cache holds it when the unload below returns.
        let mut len = 0;
        assert!(!astrid_capsule_name(handle as *const _, &mut len).is_null());
        std::thread::scope(|scope| {
            let caller = scope.spawn(move || {
                let (status, result) = call(handle, b"sleep:5000000", b"");
                astrid_result_free(result);
                status
            });
            std::thread::sleep(wait);
            if unload {
                let s = astrid_capsule_unload(handle as *mut _, std::ptr::null_mut());
                assert_eq!(s, ASTRID_OK);
                // The racing call may still hold the handle: the unloaded
                // handle must read as closed all the same.
                // Fixed finding: the per-thread handle cache revived the
                // handle while the racing call held it (cancel said OK, the
                // name pointer dangled once that call returned).
                let cancel = astrid_capsule_cancel(handle as *mut _, std::ptr::null_mut());
                let name = astrid_capsule_name(handle as *const _, &mut len);
                assert!(
                    cancel == ASTRID_E_CLOSED && name.is_null(),
                    "right after unload: cancel = {cancel}, name = {name:?} (a handle the racing call still holds)"
                );
            } else {
                assert_eq!(
                    astrid_capsule_cancel(handle as *mut _, std::ptr::null_mut()),
                    ASTRID_OK
                );
            }
            let status = caller.join().expect("caller thread");
            let allowed: &[i32] = if unload {
                &[ASTRID_OK, ASTRID_E_CANCELLED, ASTRID_E_CLOSED]
            } else {
                &[ASTRID_OK, ASTRID_E_CANCELLED]
            };
            assert!(allowed.contains(&status), "racing call returned {status}");
        });
        if unload {
            self.capsules[index].live = false;
            self.dead.push(handle);
        }
    }

    fn op_name(&mut self) {
        let handle = self.pick_capsule();
        let mut len = usize::MAX;
        let name = astrid_capsule_name(handle as *const _, &mut len);
        match self.is_live_capsule(handle) {
            Some(c) if !name.is_null() => {
                let text = unsafe { CStr::from_ptr(name) }.to_bytes();
                assert_eq!(text.len(), len);
                let want: &[u8] = if c.kind == Kind::Hello {
                    b"hello"
                } else {
                    b"probe"
                };
                assert_eq!(text, want);
            }
            Some(_) => {}
            None => assert!(name.is_null(), "name of a dead handle"),
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let world = world();
    let mut seq = Seq {
        data,
        runtimes: vec![Runtime {
            handle: world.rt,
            live: true,
        }],
        capsules: vec![
            Capsule {
                handle: world.hello,
                kind: Kind::Hello,
                runtime: 0,
                live: true,
                own: false,
            },
            Capsule {
                handle: world.probe,
                kind: Kind::Probe,
                runtime: 0,
                live: true,
                own: false,
            },
        ],
        results: Vec::new(),
        dead: Vec::new(),
    };
    for _ in 0..MAX_OPS {
        if seq.data.is_empty() {
            break;
        }
        match seq.byte() % 10 {
            0 => seq.op_load(),
            1 | 2 => seq.op_call(),
            3 => seq.op_cancel(),
            4 => seq.op_unload(),
            5 => seq.op_result_free(),
            6 => seq.op_runtime_new(),
            7 => seq.op_runtime_free(),
            8 => seq.op_cancel_running(),
            _ => seq.op_name(),
        }
    }
    // Clean up what this input made; every handle then reads as closed.
    for r in seq.results.drain(..) {
        astrid_result_free(r);
    }
    let own: Vec<usize> = seq
        .capsules
        .iter()
        .filter(|c| c.own && c.live)
        .map(|c| c.handle)
        .collect();
    for handle in own {
        assert_eq!(
            astrid_capsule_unload(handle as *mut _, std::ptr::null_mut()),
            ASTRID_OK
        );
        seq.dead.push(handle);
    }
    for r in seq.runtimes.iter().skip(1).filter(|r| r.live) {
        astrid_runtime_free(r.handle as *mut _);
        seq.dead.push(r.handle);
    }
    for &handle in &seq.dead {
        assert_eq!(
            astrid_capsule_cancel(handle as *mut _, std::ptr::null_mut()),
            ASTRID_E_CLOSED
        );
        let (status, _) = call(handle, b"noop", b"");
        assert_eq!(status, ASTRID_E_CLOSED);
    }
});
