//! `astrid:kv` end to end through the kvprobe capsule: every function,
//! the key and value rules, namespaces per (data scope, capsule), paging,
//! quota, CAS linearizability under 8 threads, cancellation, audit, and an
//! embedder backend driven through the C callback table (including one
//! that fails).

mod common;

use astrid::ffi::kv::*;
use astrid::kv::memory::MemoryKv;
use astrid::kv::{KvError, KvStore, Namespace};
use astrid::{CallOptions, Capsule, LoadOptions, Outcome, Runtime, RuntimeConfig};
use common::*;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

/// Calls kvprobe: `Ok(data)` or `Err(error case)`.
fn kv_as(
    c: &Capsule,
    principal: Option<&str>,
    action: &str,
    args: &[&str],
) -> Result<String, String> {
    let options = CallOptions {
        principal: principal.map(str::to_string),
        ..CallOptions::default()
    };
    let r = c
        .call(action, args.join("\n").as_bytes(), Some(&options))
        .unwrap_or_else(|e| panic!("{action} {args:?}: {e}"));
    let data = r.data.unwrap_or_default();
    match r.action.as_str() {
        "ok" => Ok(data),
        _ => Err(data),
    }
}

fn ok(c: &Capsule, action: &str, args: &[&str]) -> String {
    kv_as(c, None, action, args).unwrap_or_else(|e| panic!("{action} {args:?} failed: {e}"))
}

fn err(c: &Capsule, action: &str, args: &[&str]) -> String {
    match kv_as(c, None, action, args) {
        Ok(v) => panic!("{action} {args:?} succeeded with {v:?}"),
        Err(e) => e,
    }
}

fn load_kvprobe(rt: &Runtime, owner: Option<&str>) -> Capsule {
    let options = LoadOptions {
        principal: owner.map(str::to_string),
        ..LoadOptions::default()
    };
    rt.load_dir(&capsule_dir("kvprobe"), &options)
        .expect("load kvprobe")
}

/// Every function and error case, against whatever backend `rt` serves.
fn kv_suite(c: &Capsule) {
    assert_eq!(ok(c, "get", &["missing"]), "none");
    assert_eq!(ok(c, "set", &["k", "v1"]), "ok");
    assert_eq!(ok(c, "get", &["k"]), "some:v1");
    assert_eq!(ok(c, "set", &["k", "v2"]), "ok");
    assert_eq!(ok(c, "get", &["k"]), "some:v2");
    assert_eq!(ok(c, "delete", &["k"]), "ok");
    assert_eq!(ok(c, "delete", &["k"]), "ok", "delete is idempotent");
    assert_eq!(ok(c, "get", &["k"]), "none");

    // Key rules.
    for bad in ["", "a\u{0}b", "tab\there", "cafe\u{301}", &"k".repeat(257)] {
        assert_eq!(err(c, "set", &[bad, "x"]), "invalid-key", "{bad:?}");
        assert_eq!(err(c, "get", &[bad]), "invalid-key", "{bad:?}");
    }
    assert_eq!(err(c, "list", &["a\u{7}"]), "invalid-key");
    assert_eq!(ok(c, "set", &[&"k".repeat(256), "x"]), "ok");
    assert_eq!(ok(c, "set", &["caf\u{e9}", "x"]), "ok");
    // Values: 1 MiB is the ceiling.
    assert_eq!(ok(c, "set-size", &["big", &(1 << 20).to_string()]), "ok");
    assert_eq!(
        err(c, "set-size", &["big", &((1 << 20) + 1).to_string()]),
        "too-large"
    );

    // Listing: sorted, prefixed, paged.
    assert_eq!(ok(c, "clear", &[""]), "3");
    for key in ["b2", "a", "b1", "b10", "c"] {
        ok(c, "set", &[key, "x"]);
    }
    assert_eq!(ok(c, "list", &["b"]), "b1,b10,b2");
    assert_eq!(ok(c, "list", &[""]), "a,b1,b10,b2,c");
    assert_eq!(ok(c, "page", &["", "-", "2"]), "a,b1|b1");
    assert_eq!(ok(c, "page", &["", "b1", "2"]), "b10,b2|b2");
    assert_eq!(ok(c, "page", &["", "b2", "2"]), "c|-");
    assert_eq!(ok(c, "page", &["b", "-", "0"]), "b1,b10,b2|-");
    assert_eq!(ok(c, "clear", &["b1"]), "2");
    assert_eq!(ok(c, "list", &[""]), "a,b2,c");
    // More than 1024 matches: too-large for the plain listing, paged works.
    assert_eq!(ok(c, "fill", &["many", "1100"]), "ok");
    assert_eq!(err(c, "list", &["many"]), "too-large");
    assert_eq!(ok(c, "count-pages", &["many", "0"]), "2:1100");
    assert_eq!(
        ok(c, "count-pages", &["many", "5000"]),
        "2:1100",
        "limit clamps to 1024"
    );
    assert_eq!(ok(c, "count-pages", &["many", "100"]), "11:1100");
    assert_eq!(ok(c, "clear", &["many"]), "1100");

    // Compare-and-set.
    assert_eq!(ok(c, "cas", &["n", "-", "1"]), "ok");
    assert_eq!(err(c, "cas", &["n", "-", "2"]), "cas-mismatch");
    assert_eq!(err(c, "cas", &["n", "0", "2"]), "cas-mismatch");
    assert_eq!(ok(c, "cas", &["n", "1", "2"]), "ok");
    assert_eq!(ok(c, "get", &["n"]), "some:2");
    assert_eq!(ok(c, "clear", &[""]), "4");
}

#[test]
fn built_in_store() {
    let rt = runtime();
    kv_suite(&load_kvprobe(&rt, None));
}

#[test]
fn namespaces_follow_data_scope_and_capsule() {
    let rt = runtime();
    let owned = load_kvprobe(&rt, Some("owner"));
    ok(&owned, "set", &["k", "owner's"]);
    assert_eq!(kv_as(&owned, Some("alice"), "get", &["k"]).unwrap(), "none");
    kv_as(&owned, Some("alice"), "set", &["k", "alice's"]).unwrap();
    assert_eq!(
        kv_as(&owned, Some("alice"), "get", &["k"]).unwrap(),
        "some:alice's"
    );
    assert_eq!(kv_as(&owned, Some("bob"), "get", &["k"]).unwrap(), "none");
    assert_eq!(ok(&owned, "get", &["k"]), "some:owner's");
    // The owner's own calls share the owner's scope.
    assert_eq!(
        kv_as(&owned, Some("owner"), "get", &["k"]).unwrap(),
        "some:owner's"
    );
    // A capsule without owner keeps its keys under `system`, and no other
    // capsule (another id) sees them: hello has its own namespace.
    let unowned = load_kvprobe(&rt, None);
    assert_eq!(ok(&unowned, "get", &["k"]), "none");
    // Keys persist across calls and instances.
    for _ in 0..3 {
        assert_eq!(ok(&owned, "get", &["k"]), "some:owner's");
    }
}

#[test]
fn quota_is_enforced() {
    let rt = Runtime::new(RuntimeConfig {
        kv_quota: 1000,
        ..RuntimeConfig::default()
    })
    .unwrap();
    let c = load_kvprobe(&rt, None);
    assert_eq!(ok(&c, "set-size", &["a", "900"]), "ok");
    assert_eq!(err(&c, "set-size", &["b", "100"]), "quota");
    assert_eq!(ok(&c, "set-size", &["a", "10"]), "ok");
    assert_eq!(ok(&c, "set-size", &["b", "100"]), "ok");
    assert_eq!(ok(&c, "get", &["missing"]), "none");
}

#[test]
fn cas_is_linearizable_under_eight_threads() {
    let rt = runtime();
    let c = Arc::new(load_kvprobe(&rt, None));
    let threads: Vec<_> = (0..8)
        .map(|_| {
            let c = c.clone();
            std::thread::spawn(move || ok(&c, "increment", &["counter", "200"]))
        })
        .collect();
    let retries: usize = threads
        .into_iter()
        .map(|t| t.join().unwrap().parse::<usize>().unwrap())
        .sum();
    // No lost update: every one of the 1600 increments landed exactly once.
    assert_eq!(ok(&c, "get", &["counter"]), "some:1600");
    eprintln!("{retries} CAS retries under contention");
}

#[test]
fn every_call_is_audited_with_its_key() {
    let rt = runtime();
    let events = Arc::new(Mutex::new(Vec::new()));
    let sink = events.clone();
    rt.set_audit_sink(Some(Arc::new(move |e: &astrid::AuditEvent| {
        sink.lock().unwrap().push(e.clone());
    })))
    .unwrap();
    let c = load_kvprobe(&rt, None);
    ok(&c, "set", &["audited", "v"]);
    err(&c, "set", &["", "v"]);
    drop(c);
    drop(rt); // drains the audit queue
    let events = events.lock().unwrap();
    let kv: Vec<_> = events
        .iter()
        .filter(|e| e.call.starts_with("kv."))
        .collect();
    assert_eq!(kv.len(), 2, "{kv:?}");
    assert_eq!(kv[0].call, "kv.kv-set");
    assert_eq!(kv[0].target.as_deref(), Some("audited"));
    assert_eq!((kv[0].outcome, kv[0].bytes), (Outcome::Allowed, 1));
    assert_eq!(kv[1].outcome, Outcome::Failed);
    assert_eq!(kv[1].reason.as_deref(), Some("invalid-key"));
}

// ---- an embedder backend through the C callback table ----

/// A C-style backend: the built-in store behind the callback table, plus
/// switches to make it misbehave.
struct TestBackend {
    store: MemoryKv,
    fail: AtomicBool,
    calls: AtomicUsize,
    finalized: Arc<AtomicBool>,
}

fn backend<'a>(ud: *mut libc::c_void) -> &'a TestBackend {
    unsafe { &*(ud as *const TestBackend) }
}

fn ns_of(ns: *const astrid_kv_namespace_t) -> Namespace {
    let ns = unsafe { &*ns };
    let text = |p: *const libc::c_char, len: usize| {
        String::from_utf8(unsafe { std::slice::from_raw_parts(p.cast::<u8>(), len) }.to_vec())
            .unwrap()
    };
    Namespace {
        scope: text(ns.scope, ns.scope_len),
        capsule_id: text(ns.capsule_id, ns.capsule_id_len),
    }
}

fn text<'a>(p: *const libc::c_char, len: usize) -> &'a str {
    if p.is_null() {
        return "";
    }
    std::str::from_utf8(unsafe { std::slice::from_raw_parts(p.cast::<u8>(), len) }).unwrap()
}

fn bytes<'a>(p: *const u8, len: usize) -> &'a [u8] {
    if p.is_null() {
        return &[];
    }
    unsafe { std::slice::from_raw_parts(p, len) }
}

fn code(r: Result<(), KvError>) -> i32 {
    match r {
        Ok(()) => ASTRID_KV_OK,
        Err(KvError::CasMismatch) => ASTRID_KV_CAS_MISMATCH,
        Err(KvError::Quota) => ASTRID_KV_QUOTA,
        Err(KvError::TooLarge) => ASTRID_KV_TOO_LARGE,
        Err(KvError::Backend(_)) => ASTRID_KV_IO,
    }
}

/// Counts the call and answers `Some(garbage code)` when failing.
fn failing(ud: *mut libc::c_void) -> Option<i32> {
    let b = backend(ud);
    b.calls.fetch_add(1, Ordering::SeqCst);
    b.fail.load(Ordering::SeqCst).then_some(1234)
}

unsafe extern "C" fn b_get(
    ud: *mut libc::c_void,
    ns: *const astrid_kv_namespace_t,
    key: *const libc::c_char,
    key_len: usize,
    sink: astrid_kv_value_sink_fn,
    ctx: *mut libc::c_void,
) -> i32 {
    if let Some(c) = failing(ud) {
        return c;
    }
    match backend(ud)
        .store
        .get(&ns_of(ns), text(key, key_len))
        .unwrap()
    {
        Some(v) => {
            sink(ctx, v.as_ptr(), v.len());
            ASTRID_KV_OK
        }
        None => ASTRID_KV_NOT_FOUND,
    }
}

unsafe extern "C" fn b_set(
    ud: *mut libc::c_void,
    ns: *const astrid_kv_namespace_t,
    key: *const libc::c_char,
    key_len: usize,
    value: *const u8,
    value_len: usize,
) -> i32 {
    if let Some(c) = failing(ud) {
        return c;
    }
    code(
        backend(ud)
            .store
            .set(&ns_of(ns), text(key, key_len), bytes(value, value_len)),
    )
}

unsafe extern "C" fn b_remove(
    ud: *mut libc::c_void,
    ns: *const astrid_kv_namespace_t,
    key: *const libc::c_char,
    key_len: usize,
) -> i32 {
    if let Some(c) = failing(ud) {
        return c;
    }
    code(backend(ud).store.delete(&ns_of(ns), text(key, key_len)))
}

#[allow(clippy::too_many_arguments)]
unsafe extern "C" fn b_list(
    ud: *mut libc::c_void,
    ns: *const astrid_kv_namespace_t,
    prefix: *const libc::c_char,
    prefix_len: usize,
    after: *const libc::c_char,
    after_len: usize,
    limit: u32,
    sink: astrid_kv_key_sink_fn,
    ctx: *mut libc::c_void,
) -> i32 {
    if let Some(c) = failing(ud) {
        return c;
    }
    let after = (!after.is_null()).then(|| text(after, after_len));
    let keys = backend(ud)
        .store
        .list(&ns_of(ns), text(prefix, prefix_len), after, limit as usize)
        .unwrap();
    for key in keys {
        if sink(ctx, key.as_ptr().cast(), key.len()) != 0 {
            break;
        }
    }
    ASTRID_KV_OK
}

unsafe extern "C" fn b_clear(
    ud: *mut libc::c_void,
    ns: *const astrid_kv_namespace_t,
    prefix: *const libc::c_char,
    prefix_len: usize,
    out: *mut u64,
) -> i32 {
    if let Some(c) = failing(ud) {
        return c;
    }
    *out = backend(ud)
        .store
        .clear_prefix(&ns_of(ns), text(prefix, prefix_len))
        .unwrap();
    ASTRID_KV_OK
}

#[allow(clippy::too_many_arguments)]
unsafe extern "C" fn b_cas(
    ud: *mut libc::c_void,
    ns: *const astrid_kv_namespace_t,
    key: *const libc::c_char,
    key_len: usize,
    has_expected: u32,
    expected: *const u8,
    expected_len: usize,
    value: *const u8,
    value_len: usize,
) -> i32 {
    if let Some(c) = failing(ud) {
        return c;
    }
    let expected = (has_expected != 0).then(|| bytes(expected, expected_len));
    code(backend(ud).store.cas(
        &ns_of(ns),
        text(key, key_len),
        expected,
        bytes(value, value_len),
    ))
}

unsafe extern "C" fn b_finalize(ud: *mut libc::c_void) {
    let b = Box::from_raw(ud as *mut TestBackend);
    b.finalized.store(true, Ordering::SeqCst);
}

fn full_ops() -> astrid_kv_ops_t {
    astrid_kv_ops_t {
        size: std::mem::size_of::<astrid_kv_ops_t>(),
        get: Some(b_get),
        set: Some(b_set),
        remove: Some(b_remove),
        list: Some(b_list),
        clear_prefix: Some(b_clear),
        cas: Some(b_cas),
    }
}

/// Installs the test backend through the C entry point, as an embedder would.
fn install_backend(rt: &Runtime, ops: &astrid_kv_ops_t) -> (*const TestBackend, Arc<AtomicBool>) {
    // The C entry point takes a runtime handle; the Rust API mirrors it.
    let finalized = Arc::new(AtomicBool::new(false));
    let backend = Box::into_raw(Box::new(TestBackend {
        store: MemoryKv::new(1 << 30),
        fail: AtomicBool::new(false),
        calls: AtomicUsize::new(0),
        finalized: finalized.clone(),
    }));
    let store = unsafe { callback_store(ops, backend.cast(), Some(b_finalize)) };
    rt.set_kv_store(Some(store)).unwrap();
    (backend, finalized)
}

#[test]
fn c_callback_backend_serves_the_suite_in_both_callback_modes() {
    for flags in [0, astrid::runtime::FLAG_INLINE_CALLBACKS] {
        let rt = Runtime::new(RuntimeConfig {
            flags,
            ..RuntimeConfig::default()
        })
        .unwrap();
        let (backend, finalized) = install_backend(&rt, &full_ops());
        let c = load_kvprobe(&rt, Some("owner"));
        kv_suite(&c);
        assert!(unsafe { (*backend).calls.load(Ordering::SeqCst) } > 50);
        // CAS through the callbacks stays linearizable (the backend's job,
        // the library must not break it by retrying or reordering).
        let c = Arc::new(c);
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let c = c.clone();
                std::thread::spawn(move || ok(&c, "increment", &["counter", "50"]))
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(ok(&c, "get", &["counter"]), "some:400");
        drop(c);
        assert!(!finalized.load(Ordering::SeqCst));
        rt.close().unwrap();
        assert!(
            finalized.load(Ordering::SeqCst),
            "runtime close runs the finalizer"
        );
    }
}

#[test]
fn failing_and_partial_backends_give_unknown_and_the_runtime_keeps_serving() {
    let rt = runtime();
    let (backend, _) = install_backend(&rt, &full_ops());
    let c = load_kvprobe(&rt, None);
    unsafe { (*backend).fail.store(true, Ordering::SeqCst) };
    for (action, args) in [
        ("get", &["k"][..]),
        ("set", &["k", "v"]),
        ("delete", &["k"]),
        ("list", &[""]),
        ("clear", &[""]),
        ("cas", &["k", "-", "v"]),
    ] {
        assert_eq!(err(&c, action, args), "unknown(storage failed)", "{action}");
    }
    unsafe { (*backend).fail.store(false, Ordering::SeqCst) };
    assert_eq!(ok(&c, "set", &["k", "v"]), "ok");

    // A table without entries: every operation is "not supported".
    let empty = astrid_kv_ops_t {
        size: std::mem::size_of::<astrid_kv_ops_t>(),
        get: None,
        set: None,
        remove: None,
        list: None,
        clear_prefix: None,
        cas: None,
    };
    let (_, finalized) = install_backend(&rt, &empty);
    assert_eq!(err(&c, "get", &["k"]), "unknown(not supported)");
    // Back to the built-in store: empty, and the replaced backend was finalized.
    rt.set_kv_store(None).unwrap();
    assert!(finalized.load(Ordering::SeqCst));
    assert_eq!(ok(&c, "get", &["k"]), "none");
}

#[test]
fn a_cancelled_call_touches_nothing() {
    let rt = runtime();
    let (backend, _) = install_backend(&rt, &full_ops());
    let c = Arc::new(load_kvprobe(&rt, None));
    // Make the backend slow so the cancel lands while the loop runs.
    let worker = {
        let c = c.clone();
        std::thread::spawn(move || c.call("fill", b"slow\n100000", None))
    };
    while unsafe { (*backend).calls.load(Ordering::SeqCst) } < 100 {
        std::thread::yield_now();
    }
    c.cancel();
    let outcome = worker.join().unwrap();
    // Either the guest saw unknown("cancelled") and answered err, or the
    // epoch interruption stopped it: both end the call early.
    match outcome {
        Ok(r) => assert_eq!(r.data.as_deref(), Some("unknown(cancelled)")),
        Err(e) => assert_eq!(e.code(), astrid::Code::Cancelled),
    }
    let written: usize = ok(&c, "count-pages", &["slow", "0"])
        .split(':')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    assert!(written < 100_000, "{written}");
    assert_eq!(
        ok(&c, "set", &["after", "cancel"]),
        "ok",
        "the next call works"
    );
}
