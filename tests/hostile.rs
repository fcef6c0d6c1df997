//! Hostile guests fail their own call only; the capsule and the runtime
//! keep serving. Cancellation and unload from other threads.

mod common;

use astrid::{Capsule, Code, LogLevel};
use common::*;
use std::sync::Arc;
use std::time::{Duration, Instant};

fn still_serves(capsule: &Capsule) {
    let r = capsule
        .call("anything", b"", None)
        .expect("the next call works");
    assert_eq!(data(&r), "harmless");
}

#[test]
fn infinite_loop_times_out_then_next_call_works() {
    let rt = runtime_with(300, u64::MAX / 2);
    let hostile = load(&rt, "hostile");
    let started = Instant::now();
    let e = hostile.call("loop", b"", None).unwrap_err();
    assert_eq!(e.code(), Code::Timeout, "{e}");
    assert!(e.message().contains("300 ms"), "{e}");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    still_serves(&hostile);
}

#[test]
fn fuel_exhaustion_is_reported() {
    let rt = runtime_with(20_000, 5_000_000);
    let hostile = load(&rt, "hostile");
    let e = hostile.call("loop", b"", None).unwrap_err();
    assert_eq!(e.code(), Code::OutOfFuel, "{e}");
    still_serves(&hostile);
}

#[test]
fn memory_bomb_hits_the_ceiling() {
    let rt = runtime();
    let hostile = load(&rt, "hostile");
    let e = hostile.call("membomb", b"", None).unwrap_err();
    assert_eq!(e.code(), Code::ResourceLimit, "{e}");
    assert!(e.message().contains("memory ceiling"), "{e}");
    still_serves(&hostile);
}

#[test]
fn trap_panic_exit_and_stack_overflow_fail_one_call() {
    let rt = runtime();
    let logs = collect_logs(&rt);
    let hostile = load(&rt, "hostile");
    let e = hostile.call("trap", b"", None).unwrap_err();
    assert_eq!(e.code(), Code::Trap, "{e}");
    assert!(e.full_message().contains("unreachable"), "{e}");
    still_serves(&hostile);

    let e = hostile.call("panic", b"", None).unwrap_err();
    assert_eq!(e.code(), Code::Trap, "{e}");
    assert!(
        logs.lock()
            .unwrap()
            .iter()
            .any(|l| l.level == LogLevel::Warn && l.message.contains("panicked on purpose")),
        "the guest's panic message reaches the log as stderr"
    );
    still_serves(&hostile);

    let e = hostile.call("exit", b"", None).unwrap_err();
    assert_eq!(e.code(), Code::Trap);
    assert!(e.message().contains("called exit("), "{e}"); // WASI 0.2 carries only ok/err
    still_serves(&hostile);

    let e = hostile.call("recurse", b"", None).unwrap_err();
    assert_eq!(e.code(), Code::Trap, "{e}");
    still_serves(&hostile);
}

#[test]
fn stdout_flood_is_bounded_and_long_lines_are_cut() {
    let rt = runtime_with(300, u64::MAX / 2);
    let logs = collect_logs(&rt);
    let hostile = load(&rt, "hostile");
    let e = hostile.call("flood", b"", None).unwrap_err();
    assert!(matches!(e.code(), Code::Timeout | Code::OutOfFuel), "{e}");
    assert!(
        logs.lock().unwrap().len() > 10,
        "flood lines were delivered as log lines"
    );
    still_serves(&hostile);
    logs.lock().unwrap().clear();
    hostile.call("longline", b"", None).unwrap();
    let lines = logs.lock().unwrap();
    let pieces: Vec<_> = lines
        .iter()
        .filter(|l| l.message.starts_with("xxxx"))
        .collect();
    assert_eq!(
        pieces.len(),
        4,
        "200 000 bytes without newline: three cut pieces and the flushed rest"
    );
    assert!(pieces[0].message.ends_with("[line truncated]"));
    assert!(pieces.iter().all(|p| p.message.len() <= 64 * 1024 + 20));
}

/// Cancels the capsule's calls from another thread after `delay`.
fn cancel_after(capsule: &Arc<Capsule>, delay: Duration) -> std::thread::JoinHandle<()> {
    let remote = capsule.clone();
    std::thread::spawn(move || {
        std::thread::sleep(delay);
        remote.cancel();
    })
}

#[test]
fn cancel_from_another_thread_stops_guest_code_and_does_not_leak() {
    let rt = runtime_with(20_000, u64::MAX / 2);
    let hostile = Arc::new(load(&rt, "hostile"));
    let canceller = cancel_after(&hostile, Duration::from_millis(200));
    let started = Instant::now();
    let e = hostile.call("loop", b"", None).unwrap_err();
    canceller.join().unwrap();
    assert_eq!(e.code(), Code::Cancelled, "{e}");
    assert!(started.elapsed() < Duration::from_secs(5));
    still_serves(&hostile);
    still_serves(&hostile);
}

#[test]
fn cancel_wakes_a_call_waiting_in_the_host() {
    let rt = runtime_with(20_000, u64::MAX / 2);
    let hostile = Arc::new(load(&rt, "hostile"));
    let canceller = cancel_after(&hostile, Duration::from_millis(200));
    let started = Instant::now();
    let outcome = hostile.call("sleep", b"", None);
    canceller.join().unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    match outcome {
        // The sleep returns `cancelled`; the guest then either finishes or is
        // interrupted at its next epoch check.
        Ok(r) => assert_eq!(data(&r), "Err(ErrorCode::Cancelled)"),
        Err(e) => assert_eq!(e.code(), Code::Cancelled, "{e}"),
    }
    still_serves(&hostile);
}

#[test]
fn eight_threads_call_one_capsule_at_once() {
    let rt = runtime();
    let hello = Arc::new(load(&rt, "hello"));
    let threads: Vec<_> = (0..8)
        .map(|i| {
            let hello = hello.clone();
            std::thread::spawn(move || {
                for j in 0..25 {
                    let payload = format!("{{\"name\":\"t{i}-{j}\"}}");
                    let r = hello.call("greet", payload.as_bytes(), None).unwrap();
                    assert!(
                        data(&r).contains(&format!("Hello, t{i}-{j}!")),
                        "{}",
                        data(&r)
                    );
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
}

#[test]
fn unload_while_a_call_runs_and_calls_after_unload() {
    let rt = runtime_with(20_000, u64::MAX / 2);
    let hostile = Arc::new(load(&rt, "hostile"));
    let running = hostile.clone();
    let call = std::thread::spawn(move || running.call("loop", b"", None));
    std::thread::sleep(Duration::from_millis(200));
    let started = Instant::now();
    hostile.unload().unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "unload waited {:?}",
        started.elapsed()
    );
    let e = call.join().unwrap().unwrap_err();
    assert_eq!(e.code(), Code::Cancelled, "{e}");
    let e = hostile.call("anything", b"", None).unwrap_err();
    assert_eq!(e.code(), Code::Closed, "{e}");
    hostile.unload().unwrap(); // idempotent
}

#[test]
fn runtime_close_stops_capsules_and_keeps_handles_safe() {
    let rt = runtime();
    let logs = collect_logs(&rt);
    let hello = load(&rt, "hello");
    hello.call("greet", b"{}", None).unwrap();
    rt.close().unwrap();
    let e = hello.call("greet", b"{}", None).unwrap_err();
    assert_eq!(e.code(), Code::Closed, "{e}");
    let before = logs.lock().unwrap().len();
    let e = rt
        .load_dir(&capsule_dir("hello"), &Default::default())
        .err()
        .unwrap();
    assert_eq!(e.code(), Code::Closed);
    assert_eq!(
        logs.lock().unwrap().len(),
        before,
        "no callback after close"
    );
}

#[test]
fn api_calls_from_inside_a_callback_are_refused_not_deadlocked() {
    let rt = runtime();
    let hello = Arc::new(load(&rt, "hello"));
    let slot: Arc<std::sync::Mutex<Option<Arc<Capsule>>>> = Arc::new(std::sync::Mutex::new(None));
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    {
        let slot = slot.clone();
        let seen = seen.clone();
        rt.set_log_sink(Some(Arc::new(move |_r: &astrid::LogRecord<'_>| {
            if let Some(capsule) = slot.lock().unwrap().clone() {
                let outcome = capsule
                    .call("noop", b"", None)
                    .map(|_| ())
                    .map_err(|e| e.code());
                seen.lock().unwrap().push(outcome);
                capsule.cancel(); // non-blocking: allowed from a callback
            }
        })))
        .unwrap();
    }
    *slot.lock().unwrap() = Some(hello.clone());
    let outcome = hello.call("greet", b"{}", None);
    *slot.lock().unwrap() = None;
    assert!(seen
        .lock()
        .unwrap()
        .iter()
        .all(|o| *o == Err(Code::Reentrant)));
    assert!(!seen.lock().unwrap().is_empty());
    // The callback cancelled its own call: that call fails, the next works.
    if let Err(e) = outcome {
        assert_eq!(e.code(), Code::Cancelled);
    }
    hello.call("noop", b"", None).unwrap();
}

#[test]
fn per_capsule_limits_override_the_runtime_defaults() {
    let rt = runtime_with(30_000, u64::MAX / 2);
    let options = astrid::LoadOptions {
        memory_limit: Some(8 << 20),
        timeout: Some(Duration::from_millis(250)),
        ..astrid::LoadOptions::default()
    };
    let hostile = rt.load_dir(&capsule_dir("hostile"), &options).unwrap();
    let e = hostile.call("membomb", b"", None).unwrap_err();
    assert_eq!(e.code(), Code::ResourceLimit, "{e}");
    assert!(e.message().contains("8388608 byte"), "{e}");
    let started = Instant::now();
    let e = hostile.call("loop", b"", None).unwrap_err();
    assert_eq!(e.code(), Code::Timeout, "{e}");
    assert!(e.message().contains("250 ms"), "{e}");
    assert!(started.elapsed() < Duration::from_secs(5));
    let frugal = astrid::LoadOptions {
        fuel: Some(1_000_000),
        ..astrid::LoadOptions::default()
    };
    let hostile = rt.load_dir(&capsule_dir("hostile"), &frugal).unwrap();
    assert_eq!(
        hostile.call("loop", b"", None).unwrap_err().code(),
        Code::OutOfFuel
    );
    still_serves(&hostile);
}

#[test]
fn unload_amid_a_stream_of_calls_strands_no_instance() {
    // Instances move between callers through a parked slot and the pool;
    // an unload racing those hand-overs must still find and free them all,
    // and every caller must get an answer.
    for _ in 0..20 {
        let rt = astrid::Runtime::new(astrid::RuntimeConfig {
            pool_size: 2,
            ..astrid::RuntimeConfig::default()
        })
        .unwrap();
        let hello = Arc::new(load(&rt, "hello"));
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let hello = hello.clone();
                std::thread::spawn(move || loop {
                    match hello.call("noop", b"", None) {
                        Ok(_) => {}
                        Err(e) => {
                            assert!(matches!(e.code(), Code::Closed | Code::Cancelled), "{e}");
                            return;
                        }
                    }
                })
            })
            .collect();
        std::thread::sleep(Duration::from_millis(5));
        let started = Instant::now();
        hello.unload().unwrap();
        assert!(started.elapsed() < Duration::from_secs(2));
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(hello.trim_idle(), 0, "an instance outlived the unload");
    }
}

#[test]
fn more_callers_than_pooled_instances_wait_their_turn() {
    let rt = astrid::Runtime::new(astrid::RuntimeConfig {
        pool_size: 2,
        ..astrid::RuntimeConfig::default()
    })
    .unwrap();
    let hello = Arc::new(load(&rt, "hello"));
    let threads: Vec<_> = (0..6)
        .map(|_| {
            let hello = hello.clone();
            std::thread::spawn(move || {
                for _ in 0..20 {
                    hello.call("noop", b"", None).unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert!(
        hello.trim_idle() <= 2,
        "never more instances than the pool size"
    );
}
