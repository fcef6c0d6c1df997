//! Shared helpers: capsule directories built by scripts/build-capsules.sh,
//! runtimes with short limits, and a log collector.
#![allow(dead_code)]

use astrid::{Capsule, LoadOptions, LogLevel, Runtime, RuntimeConfig};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub fn capsule_dir(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("build/capsules")
        .join(name);
    assert!(
        dir.join("Capsule.toml").exists(),
        "capsule `{name}` is not built: run scripts/build-capsules.sh (scripts/test.sh does)"
    );
    dir
}

pub fn wasm_of(name: &str) -> Vec<u8> {
    let dir = capsule_dir(name);
    let file = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|x| x == "wasm"))
        .expect("component file");
    std::fs::read(file).unwrap()
}

pub fn runtime_with(timeout_ms: u64, fuel: u64) -> Runtime {
    Runtime::new(RuntimeConfig {
        timeout: Duration::from_millis(timeout_ms),
        fuel,
        memory_limit: 32 << 20,
        unload_grace: Duration::from_secs(2),
        ..RuntimeConfig::default()
    })
    .expect("runtime")
}

pub fn runtime() -> Runtime {
    runtime_with(5_000, 500_000_000)
}

pub fn load(rt: &Runtime, name: &str) -> Capsule {
    rt.load_dir(&capsule_dir(name), &probe_options())
        .unwrap_or_else(|e| panic!("load {name}: {e}"))
}

/// The probe capsule declares `REQUIRED` without a default.
pub fn probe_options() -> LoadOptions {
    LoadOptions {
        config: vec![("REQUIRED".into(), "given".into())],
        ..LoadOptions::default()
    }
}

#[derive(Clone, Debug)]
pub struct Line {
    pub level: LogLevel,
    pub capsule: String,
    pub principal: Option<String>,
    pub message: String,
    pub call_id: u64,
}

/// Installs a log sink that records every line.
pub fn collect_logs(rt: &Runtime) -> Arc<Mutex<Vec<Line>>> {
    let lines = Arc::new(Mutex::new(Vec::new()));
    let sink = lines.clone();
    rt.set_log_sink(Some(Arc::new(move |r: &astrid::LogRecord<'_>| {
        sink.lock().unwrap().push(Line {
            level: r.level,
            capsule: r.capsule.to_string(),
            principal: r.principal.map(str::to_string),
            message: r.message.to_string(),
            call_id: r.call_id,
        });
    })))
    .unwrap();
    lines
}

/// Installs an audit sink that records every event.
pub fn collect_audit(rt: &Runtime) -> Arc<Mutex<Vec<astrid::AuditEvent>>> {
    let events = Arc::new(Mutex::new(Vec::new()));
    let sink = events.clone();
    rt.set_audit_sink(Some(Arc::new(move |e: &astrid::AuditEvent| {
        sink.lock().unwrap().push(e.clone())
    })))
    .unwrap();
    events
}

/// Lets `waiting` (a call blocked in the guest) settle, unloads the capsule
/// and checks the call ended within 2 s: either the guest saw `closed` or the
/// call was cut as cancelled.
pub fn unload_ends_the_blocked_call(
    c: &Capsule,
    waiting: std::thread::JoinHandle<astrid::Result<astrid::CallResult>>,
) {
    std::thread::sleep(Duration::from_millis(300));
    let started = std::time::Instant::now();
    c.unload().unwrap();
    let outcome = waiting.join().unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    if let Ok(r) = outcome {
        assert_eq!(r.data.as_deref(), Some("closed"));
    }
}

pub fn data(result: &astrid::CallResult) -> &str {
    result.data.as_deref().unwrap_or("<none>")
}

/// A fresh directory under the system temp dir, unique to this process and tag.
pub fn tempdir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("astrid-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Calls a probe capsule whose arguments are the payload's lines: returns
/// (the action it answered, its text).
pub fn call(c: &Capsule, action: &str, args: &[&str]) -> (String, String) {
    let r = c
        .call(action, args.join("\n").as_bytes(), None)
        .unwrap_or_else(|e| panic!("{action} {args:?}: {e}"));
    (r.action, r.data.unwrap_or_default())
}

/// The text of a probe call that must answer `ok`.
pub fn ok(c: &Capsule, action: &str, args: &[&str]) -> String {
    match call(c, action, args) {
        (a, text) if a == "ok" => text,
        (_, e) => panic!("{action} {args:?} failed: {e}"),
    }
}

/// The error case of a probe call that must answer `err`.
pub fn err(c: &Capsule, action: &str, args: &[&str]) -> String {
    match call(c, action, args) {
        (a, text) if a == "err" => text,
        (_, v) => {
            let shown: String = v.chars().take(200).collect();
            panic!("{action} {args:?} succeeded with {shown:?}")
        }
    }
}

/// A fresh directory under the system temp dir, unique per process and call.
pub fn scratch_dir(tag: &str) -> PathBuf {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let dir = std::env::temp_dir().join(format!(
        "astrid-test-{tag}-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::SeqCst)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A probe call as a `Result`: `Ok(text)` when it answered `ok`, else
/// `Err(text)` (the error case).
pub fn fs(c: &Capsule, action: &str, args: &[&str]) -> Result<String, String> {
    match call(c, action, args) {
        (a, text) if a == "ok" => Ok(text),
        (_, text) => Err(text),
    }
}
