//! astrid:sys as a guest sees it (through the `probe` capsule), and the
//! published SDK running unmodified.

mod common;

use astrid::{CallOptions, Capsule, Code, LoadOptions, LogLevel, Runtime, RuntimeConfig};
use common::*;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

fn ask(capsule: &Capsule, action: &str) -> String {
    let r = capsule
        .call(action, b"", None)
        .unwrap_or_else(|e| panic!("{action}: {e}"));
    assert_eq!(r.action, "final");
    data(&r).to_string()
}

#[test]
fn hello_greets_with_config_principal_and_logs() {
    let rt = runtime();
    let logs = collect_logs(&rt);
    let options = LoadOptions {
        principal: Some("alice".into()),
        config: vec![("GREETING".into(), "Hej".into())],
        ..LoadOptions::default()
    };
    let hello = rt.load_dir(&capsule_dir("hello"), &options).unwrap();
    assert_eq!(hello.name(), "hello");
    let r = hello.call("greet", br#"{"name":"Ada"}"#, None).unwrap();
    assert_eq!(r.action, "final");
    let d = data(&r);
    assert!(d.contains(r#""message":"Hej, Ada!""#), "{d}");
    assert!(d.contains(r#""principal":"alice""#), "{d}");
    assert!(d.contains(r#""nonce_bytes":4"#), "{d}");
    let lines = logs.lock().unwrap();
    let sys_line = lines
        .iter()
        .find(|l| l.message == "greeting Ada on behalf of alice")
        .expect("sys log line");
    assert_eq!(sys_line.level, LogLevel::Info);
    assert_eq!(sys_line.capsule, "hello");
    assert_eq!(sys_line.principal.as_deref(), Some("alice"));
    let stdout_line = lines
        .iter()
        .find(|l| l.message == "hello capsule wrote this line to stdout")
        .expect("stdout line");
    assert_eq!(stdout_line.level, LogLevel::Info);
}

#[test]
fn sdk_capsule_runs_unmodified() {
    let rt = runtime();
    let logs = collect_logs(&rt);
    let sdk = load(&rt, "sdk-hello");
    let r = sdk.call("greet", br#"{"name":"SDK"}"#, None).unwrap();
    assert_eq!(r.action, "continue");
    let v: serde_json::Value = serde_json::from_str(data(&r)).unwrap();
    assert_eq!(v["message"], "Howdy, SDK!");
    let now = astrid::host::sys::wall_clock_ms();
    let clock = v["clock_ms"].as_u64().unwrap();
    assert!(
        clock <= now && now - clock < 60_000,
        "clock {clock} vs {now}"
    );
    assert!(logs
        .lock()
        .unwrap()
        .iter()
        .any(|l| l.message == "sdk capsule greeting SDK"));
    // The SDK maps a handler error to `deny` (bad arguments here).
    let r = sdk.call("greet", b"not json", None).unwrap();
    assert_eq!(r.action, "deny");
}

#[test]
fn config_lookup_order_and_rendering() {
    let rt = runtime();
    let probe = rt
        .load_dir(
            &capsule_dir("probe"),
            &LoadOptions {
                config: vec![
                    ("REQUIRED".into(), "given".into()),
                    ("GREETING".into(), "Hi".into()),
                    ("UNDECLARED".into(), "x".into()),
                ],
                ..LoadOptions::default()
            },
        )
        .unwrap();
    assert_eq!(
        ask(&probe, "config:GREETING"),
        "some:Hi",
        "embedder value beats the default"
    );
    assert_eq!(ask(&probe, "config:COLOR"), "some:red", "manifest default");
    assert_eq!(
        ask(&probe, "config:LIMITS"),
        "some:[1,2,3]",
        "non-strings come back as JSON"
    );
    assert_eq!(ask(&probe, "config:REQUIRED"), "some:given");
    assert_eq!(
        ask(&probe, "config:TOKEN"),
        "none",
        "no secret provider: absent"
    );
    assert_eq!(ask(&probe, "config:UNDECLARED"), "none");
    assert_eq!(ask(&probe, "config:ASTRID_HOME"), "err:config-key-reserved");
    let overlay = CallOptions {
        config_overlay: vec![("GREETING".into(), "Yo".into())],
        ..CallOptions::default()
    };
    let r = probe.call("config:GREETING", b"", Some(&overlay)).unwrap();
    assert_eq!(data(&r), "some:Yo", "per-call overlay wins");
    assert_eq!(
        ask(&probe, "config:GREETING"),
        "some:Hi",
        "overlay does not stick"
    );
}

#[test]
fn missing_required_config_and_bad_select_fail_the_load() {
    let rt = runtime();
    let e = rt
        .load_dir(&capsule_dir("probe"), &LoadOptions::default())
        .err()
        .unwrap();
    assert_eq!(e.code(), Code::Manifest);
    assert!(e.message().contains("env.REQUIRED"), "{e}");
    let e = rt
        .load_dir(
            &capsule_dir("probe"),
            &LoadOptions {
                config: vec![
                    ("REQUIRED".into(), "x".into()),
                    ("COLOR".into(), "blue".into()),
                ],
                ..LoadOptions::default()
            },
        )
        .err()
        .unwrap();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(e.message().contains("COLOR"), "{e}");
}

#[test]
fn caller_context() {
    let rt = runtime();
    let probe = rt
        .load_dir(
            &capsule_dir("probe"),
            &LoadOptions {
                principal: Some("owner-1".into()),
                ..probe_options()
            },
        )
        .unwrap();
    let owner = ask(&probe, "caller");
    let parts: Vec<&str> = owner.split('|').collect();
    assert_eq!(parts[0], "owner-1");
    assert_eq!(parts[1].len(), 36, "source id is a UUID: {owner}");
    assert!(
        parts[2].ends_with('Z') && parts[2].contains('T'),
        "ISO 8601 UTC: {owner}"
    );
    let as_bob = CallOptions {
        principal: Some("bob".into()),
        ..CallOptions::default()
    };
    let r = probe.call("caller", b"", Some(&as_bob)).unwrap();
    assert!(data(&r).starts_with("bob|"), "{}", data(&r));
    let e = probe
        .call(
            "caller",
            b"",
            Some(&CallOptions {
                principal: Some("bad\nname".into()),
                ..CallOptions::default()
            }),
        )
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
}

#[test]
fn sleep_random_clock_and_limits() {
    let rt = runtime();
    let probe = load(&rt, "probe");
    let started = Instant::now();
    assert_eq!(ask(&probe, "sleep:20000000"), "ok");
    assert!(started.elapsed() >= Duration::from_millis(20));
    assert_eq!(ask(&probe, "sleep:60000000001"), "err:too-large");
    assert_eq!(ask(&probe, "random:64"), "64:true");
    assert_eq!(ask(&probe, "random:4096"), "4096:true");
    assert_eq!(ask(&probe, "random:4097"), "err:too-large");
    let clock = ask(&probe, "clock");
    let (wall, monotonic_ok) = clock.split_once(':').unwrap();
    let wall: u64 = wall.parse().unwrap();
    assert!(wall.abs_diff(astrid::host::sys::wall_clock_ms()) < 60_000);
    assert_eq!(monotonic_ok, "true");
    assert_eq!(
        ask(&probe, "ready"),
        "ok",
        "signal-ready is a no-op in an interceptor call"
    );
}

#[test]
fn sleep_ends_at_the_call_deadline() {
    let rt = runtime_with(300, 500_000_000);
    let probe = load(&rt, "probe");
    let started = Instant::now();
    let e = probe.call("sleep:10000000000", b"", None).unwrap_err();
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    assert!(matches!(e.code(), Code::Timeout), "{e}");
    assert_eq!(ask(&probe, "random:64"), "64:true", "the next call works");
}

#[test]
fn capabilities_and_registry() {
    let rt = runtime();
    let logs = collect_logs(&rt);
    let probe = load(&rt, "probe");
    assert_eq!(ask(&probe, "caps"), "net,fs_read,uplink");
    assert!(logs
        .lock()
        .unwrap()
        .iter()
        .any(|l| l.level == LogLevel::Warn && l.message.contains("host_process")));
    let hello = load(&rt, "hello");
    assert_eq!(
        ask(&probe, &format!("check:{}/fs_read", probe.id())),
        "true"
    );
    assert_eq!(
        ask(&probe, &format!("check:{}/net_bind", probe.id())),
        "false"
    );
    assert_eq!(
        ask(&probe, &format!("check:{}/fs_read", hello.id())),
        "false"
    );
    assert_eq!(ask(&probe, "check:not-a-uuid/fs_read"), "false");
    hello.unload().unwrap();

    let closed = Runtime::new(RuntimeConfig {
        flags: astrid::runtime::FLAG_DISABLE_CAPABILITY_REGISTRY,
        ..RuntimeConfig::default()
    })
    .unwrap();
    let probe2 = load(&closed, "probe");
    assert_eq!(
        ask(&probe2, &format!("check:{}/fs_read", probe2.id())),
        "err:registry-unavailable"
    );
}

#[test]
fn log_levels_truncation_and_stderr() {
    let rt = runtime();
    let logs = collect_logs(&rt);
    let probe = load(&rt, "probe");
    for level in ["trace", "debug", "info", "warn", "error"] {
        ask(&probe, &format!("log:{level}:at {level}"));
    }
    ask(&probe, "biglog");
    ask(&probe, "stderr:to stderr");
    let lines = logs.lock().unwrap();
    let levels: Vec<LogLevel> = lines
        .iter()
        .filter(|l| l.message.starts_with("at "))
        .map(|l| l.level)
        .collect();
    assert_eq!(
        levels,
        [
            LogLevel::Trace,
            LogLevel::Debug,
            LogLevel::Info,
            LogLevel::Warn,
            LogLevel::Error
        ]
    );
    let big = lines
        .iter()
        .find(|l| l.message.starts_with("yyyy"))
        .unwrap();
    assert!(
        big.message.len() < 70 * 1024,
        "truncated to 64 KiB plus a marker"
    );
    assert!(
        big.message.ends_with("[truncated 6144 bytes]"),
        "{}",
        &big.message[big.message.len() - 40..]
    );
    let err_line = lines.iter().find(|l| l.message == "to stderr").unwrap();
    assert_eq!(err_line.level, LogLevel::Warn);
}

#[test]
fn audit_events_for_host_calls() {
    let rt = runtime();
    let events = Arc::new(Mutex::new(Vec::<astrid::AuditEvent>::new()));
    let sink = events.clone();
    rt.set_audit_sink(Some(Arc::new(move |e: &astrid::AuditEvent| {
        sink.lock().unwrap().push(e.clone())
    })))
    .unwrap();
    let probe = rt
        .load_dir(
            &capsule_dir("probe"),
            &LoadOptions {
                principal: Some("carol".into()),
                ..probe_options()
            },
        )
        .unwrap();
    ask(&probe, "config:GREETING");
    ask(&probe, "random:5000");
    drop(probe);
    rt.close().unwrap(); // drains the audit queue
    let events = events.lock().unwrap();
    let config = events
        .iter()
        .find(|e| e.call == "sys.get-config")
        .expect("get-config audited");
    assert_eq!(config.outcome, astrid::Outcome::Allowed);
    assert_eq!(config.target.as_deref(), Some("GREETING"));
    assert_eq!(config.principal, "carol");
    assert_eq!(config.capsule, "probe");
    let random = events
        .iter()
        .find(|e| e.call == "sys.random-bytes")
        .expect("random audited");
    assert_eq!(random.outcome, astrid::Outcome::Failed);
    assert_eq!(random.reason.as_deref(), Some("too-large"));
}

/// An audit callback that never returns on its own holds shutdown for the
/// unload grace at most; its finalizer (the sink's drop) runs once, when
/// that callback returns, and nothing is delivered after it.
#[test]
fn shutdown_with_a_blocked_audit_callback_is_bounded() {
    struct Finalizer(Arc<std::sync::atomic::AtomicU32>);
    impl Drop for Finalizer {
        fn drop(&mut self) {
            self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
    }
    let rt = Runtime::new(RuntimeConfig {
        unload_grace: Duration::from_millis(300),
        ..RuntimeConfig::default()
    })
    .unwrap();
    let finalized = Arc::new(std::sync::atomic::AtomicU32::new(0));
    let delivered = Arc::new(std::sync::atomic::AtomicU32::new(0));
    let (entered_tx, entered_rx) = std::sync::mpsc::channel::<()>();
    let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
    let release_rx = Mutex::new(release_rx);
    let entered_tx = Mutex::new(entered_tx);
    let guard = Finalizer(finalized.clone());
    let count = delivered.clone();
    rt.set_audit_sink(Some(Arc::new(move |_: &astrid::AuditEvent| {
        let _keep = &guard;
        if count.fetch_add(1, std::sync::atomic::Ordering::SeqCst) == 0 {
            let _ = entered_tx.lock().unwrap().send(());
            let _ = release_rx.lock().unwrap().recv(); // blocks until released
        }
    })))
    .unwrap();
    let probe = load(&rt, "probe");
    for _ in 0..20 {
        ask(&probe, "config:GREETING");
    }
    entered_rx
        .recv_timeout(Duration::from_secs(5))
        .expect("the first audit event reached the sink");
    drop(probe);
    // Shut down on another thread, so that an unbounded wait fails the
    // test instead of hanging it.
    let (closed_tx, closed_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let started = Instant::now();
        rt.close().unwrap();
        let _ = closed_tx.send(started.elapsed());
        drop(rt);
    });
    let took = closed_rx
        .recv_timeout(Duration::from_secs(10))
        .expect("shutdown returned while the audit callback was still blocked");
    assert!(took < Duration::from_secs(2), "shutdown took {took:?}");
    assert_eq!(finalized.load(std::sync::atomic::Ordering::SeqCst), 0);
    release_tx.send(()).unwrap();
    let until = Instant::now() + Duration::from_secs(5);
    while finalized.load(std::sync::atomic::Ordering::SeqCst) == 0 && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(finalized.load(std::sync::atomic::Ordering::SeqCst), 1);
    // The events queued behind the blocked one were dropped, not delivered.
    assert_eq!(delivered.load(std::sync::atomic::Ordering::SeqCst), 1);
}

#[test]
fn wasi_is_deny_by_default() {
    let rt = runtime();
    let probe = load(&rt, "probe");
    let fs = ask(&probe, "wasi-fs");
    assert!(fs.starts_with("denied"), "no preopens: {fs}");
    let fs = ask(&probe, &format!("wasi-fs:{}", env!("CARGO_MANIFEST_DIR")));
    assert!(fs.starts_with("denied"), "host paths are invisible: {fs}");
    let net = ask(&probe, "wasi-net");
    assert!(net.starts_with("denied"), "sockets are off: {net}");
    assert_eq!(
        ask(&probe, "wasi-env"),
        "0:0",
        "empty environment and arguments"
    );
}

#[test]
fn secrets_come_from_the_embedder_provider() {
    let rt = runtime();
    rt.set_secret_provider(Some(Arc::new(
        |r: &astrid::runtime::SecretRequest<'_>| match (r.capsule, r.key) {
            ("probe", "TOKEN") => Ok(Some(format!("s3cret-for-{}", r.principal.unwrap_or("-")))),
            _ => Err(()),
        },
    )))
    .unwrap();
    let probe = rt
        .load_dir(
            &capsule_dir("probe"),
            &LoadOptions {
                principal: Some("erin".into()),
                ..probe_options()
            },
        )
        .unwrap();
    assert_eq!(ask(&probe, "config:TOKEN"), "some:s3cret-for-erin");
    assert_eq!(
        ask(&probe, "config:GREETING"),
        "some:Hello",
        "non-secrets bypass the provider"
    );

    rt.set_secret_provider(Some(Arc::new(|_: &astrid::runtime::SecretRequest<'_>| {
        Err(())
    })))
    .unwrap();
    assert_eq!(
        ask(&probe, "config:TOKEN"),
        "err:unknown(secret provider failed)"
    );
    rt.set_secret_provider(Some(Arc::new(
        |_: &astrid::runtime::SecretRequest<'_>| -> Result<Option<String>, ()> {
            panic!("provider bug")
        },
    )))
    .unwrap();
    assert_eq!(
        ask(&probe, "config:TOKEN"),
        "err:unknown(secret provider failed)",
        "a panicking provider is a failure"
    );
    rt.set_secret_provider(None).unwrap();
    assert_eq!(ask(&probe, "config:TOKEN"), "none");
}

/// A runtime whose last owner is dropped inside one of its own callbacks
/// cannot block there to shut down; it still stops serving: its capsules
/// are cancelled, so their calls end `Closed` instead of running on without
/// the epoch ticker that bounds them, and the handles stay safe to use and
/// drop.
#[test]
fn a_runtime_dropped_inside_its_callback_stops_its_capsules() {
    let owner: Arc<Mutex<Option<Runtime>>> = Arc::new(Mutex::new(Some(runtime())));
    let hello = {
        let slot = owner.lock().unwrap();
        let rt = slot.as_ref().unwrap();
        let dropper = owner.clone();
        rt.set_log_sink(Some(Arc::new(move |_: &astrid::LogRecord<'_>| {
            // The only owner goes away on the guest's own thread.
            drop(dropper.lock().unwrap().take());
        })))
        .unwrap();
        rt.load_dir(&capsule_dir("hello"), &LoadOptions::default())
            .unwrap()
    };
    // The call logs, so the runtime is dropped inside it; the call itself
    // then ends either way, and nothing hangs.
    let _ = hello.call("greet", br#"{"name":"Ada"}"#, None);
    assert!(
        owner.lock().unwrap().is_none(),
        "the sink dropped the runtime"
    );
    let started = Instant::now();
    let err = hello
        .call("greet", br#"{"name":"Bo"}"#, None)
        .expect_err("a capsule of a dropped runtime serves no more calls");
    assert_eq!(err.code(), Code::Closed, "{err}");
    assert!(started.elapsed() < Duration::from_secs(5));
    assert!(hello.is_unloaded());
    drop(hello);
}
