//! Per-call control: a call's own deadline, fuel and cancel token, which
//! end that call only and leave concurrent calls on the same capsule alone.

mod common;

use astrid::{CallCancel, CallOptions, Capsule, Code};
use common::*;
use std::sync::Arc;
use std::time::{Duration, Instant};

fn with_cancel(cancel: &CallCancel) -> CallOptions {
    CallOptions {
        cancel: Some(cancel.clone()),
        ..CallOptions::default()
    }
}

fn fire_after(cancel: &CallCancel, delay: Duration) -> std::thread::JoinHandle<()> {
    let cancel = cancel.clone();
    std::thread::spawn(move || {
        std::thread::sleep(delay);
        cancel.fire();
    })
}

/// `sleep` answers with the host call's result; a cancelled sleep is
/// either that answer or an interrupted call.
fn assert_cancelled(outcome: astrid::Result<astrid::CallResult>) {
    match outcome {
        Ok(r) => assert_eq!(data(&r), "Err(ErrorCode::Cancelled)"),
        Err(e) => assert_eq!(e.code(), Code::Cancelled, "{e}"),
    }
}

#[test]
fn a_fired_token_ends_its_call_and_not_a_concurrent_one() {
    let rt = runtime_with(20_000, u64::MAX / 2);
    let hostile = Arc::new(load(&rt, "hostile"));
    for spinning in [true, false] {
        let cancel = CallCancel::new();
        // The other call sleeps 1.5 s in the host (it asks for 50 s, so its
        // own short deadline ends it, not the token).
        let other = {
            let hostile = hostile.clone();
            std::thread::spawn(move || {
                let options = CallOptions {
                    timeout: Some(Duration::from_millis(1500)),
                    ..CallOptions::default()
                };
                let started = Instant::now();
                let outcome = hostile.call("sleep", b"", Some(&options));
                (outcome, started.elapsed())
            })
        };
        let firing = fire_after(&cancel, Duration::from_millis(200));
        let started = Instant::now();
        let action = if spinning { "loop" } else { "sleep" };
        let outcome = hostile.call(action, b"", Some(&with_cancel(&cancel)));
        let took = started.elapsed();
        firing.join().unwrap();
        if spinning {
            assert_eq!(outcome.unwrap_err().code(), Code::Cancelled);
        } else {
            assert_cancelled(outcome);
        }
        assert!(took < Duration::from_millis(1000), "{action}: {took:?}");
        let (other, other_took) = other.join().unwrap();
        // Untouched by the token: it ran to its own deadline.
        assert!(other_took >= Duration::from_millis(1400), "{other_took:?}");
        // (Its sleep ends at its deadline: the guest either returns what
        // the sleep said or is stopped as timed out, never as cancelled.)
        if let Err(e) = other {
            assert_eq!(e.code(), Code::Timeout, "{e}");
        }
        // The stores the token touched serve the next calls normally.
        let r = hostile.call("anything", b"", None).unwrap();
        assert_eq!(data(&r), "harmless");
    }
}

#[test]
fn a_token_fired_before_the_call_keeps_the_guest_from_running() {
    let rt = runtime();
    let logs = collect_logs(&rt);
    let probe = load(&rt, "probe");
    let cancel = CallCancel::new();
    cancel.fire();
    cancel.fire(); // idempotent
    assert!(cancel.is_fired());
    let e = probe
        .call("log:never", b"", Some(&with_cancel(&cancel)))
        .unwrap_err();
    assert_eq!(e.code(), Code::Cancelled);
    assert!(e.message().contains("before it started"), "{e}");
    std::thread::sleep(Duration::from_millis(100));
    assert!(
        !logs
            .lock()
            .unwrap()
            .iter()
            .any(|l| l.message.contains("never")),
        "the guest ran"
    );
    // Without the token the capsule serves.
    probe.call("log:after", b"", None).unwrap();
}

#[test]
fn one_token_governs_many_calls_on_many_capsules() {
    let rt = runtime_with(20_000, u64::MAX / 2);
    let first = Arc::new(load(&rt, "hostile"));
    let second = Arc::new(load(&rt, "hostile"));
    let cancel = CallCancel::new();
    let calls: Vec<_> = [&first, &first, &second]
        .into_iter()
        .map(|capsule| {
            let capsule: Arc<Capsule> = capsule.clone();
            let options = with_cancel(&cancel);
            std::thread::spawn(move || capsule.call("loop", b"", Some(&options)))
        })
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    let started = Instant::now();
    cancel.fire();
    for call in calls {
        assert_eq!(call.join().unwrap().unwrap_err().code(), Code::Cancelled);
    }
    assert!(started.elapsed() < Duration::from_secs(1));
}

#[test]
fn capsule_cancel_still_ends_calls_that_carry_a_token() {
    let rt = runtime_with(20_000, u64::MAX / 2);
    let hostile = Arc::new(load(&rt, "hostile"));
    let cancel = CallCancel::new();
    let remote = hostile.clone();
    let canceller = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(200));
        remote.cancel();
    });
    let e = hostile
        .call("loop", b"", Some(&with_cancel(&cancel)))
        .unwrap_err();
    canceller.join().unwrap();
    assert_eq!(e.code(), Code::Cancelled);
    assert!(!cancel.is_fired(), "capsule cancel does not fire the token");
    // The token still works for the next call.
    let firing = fire_after(&cancel, Duration::from_millis(100));
    let e = hostile
        .call("loop", b"", Some(&with_cancel(&cancel)))
        .unwrap_err();
    firing.join().unwrap();
    assert_eq!(e.code(), Code::Cancelled);
}

#[test]
fn a_call_deadline_shortens_the_capsule_timeout_only() {
    let rt = runtime_with(30_000, u64::MAX / 2);
    let hostile = load(&rt, "hostile");
    let short = CallOptions {
        timeout: Some(Duration::from_millis(200)),
        ..CallOptions::default()
    };
    // Guest code: the deadline is seen at the next epoch tick (100 ms).
    let started = Instant::now();
    let e = hostile.call("loop", b"", Some(&short)).unwrap_err();
    let took = started.elapsed();
    assert_eq!(e.code(), Code::Timeout, "{e}");
    assert!(e.message().contains("200 ms"), "{e}");
    assert!(
        took >= Duration::from_millis(200) && took < Duration::from_millis(700),
        "{took:?}"
    );
    // A host wait ends at the deadline itself.
    let started = Instant::now();
    let outcome = hostile.call("sleep", b"", Some(&short));
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(190) && took < Duration::from_millis(700),
        "{took:?}"
    );
    if let Err(e) = outcome {
        assert_eq!(e.code(), Code::Timeout, "{e}");
    }
    // Longer than the capsule's: the capsule's stands.
    let rt = runtime_with(300, u64::MAX / 2);
    let hostile = load(&rt, "hostile");
    let long = CallOptions {
        timeout: Some(Duration::from_secs(60)),
        ..CallOptions::default()
    };
    let started = Instant::now();
    let e = hostile.call("loop", b"", Some(&long)).unwrap_err();
    assert_eq!(e.code(), Code::Timeout, "{e}");
    assert!(e.message().contains("300 ms"), "{e}");
    assert!(started.elapsed() < Duration::from_secs(3));
}

#[test]
fn a_call_fuel_replaces_the_capsule_fuel() {
    let rt = runtime_with(20_000, u64::MAX / 2);
    let hostile = load(&rt, "hostile");
    let little = CallOptions {
        fuel: Some(2_000_000),
        ..CallOptions::default()
    };
    let e = hostile.call("loop", b"", Some(&little)).unwrap_err();
    assert_eq!(e.code(), Code::OutOfFuel, "{e}");
    assert!(e.message().contains("2000000 units"), "{e}");
    // The next call without options has the capsule's fuel again.
    let r = hostile.call("anything", b"", None).unwrap();
    assert_eq!(data(&r), "harmless");
}

/// Waits up to 5 s for an audit event matching `pred` (the audit sink runs
/// on its own thread).
fn audit_event(
    events: &std::sync::Mutex<Vec<astrid::AuditEvent>>,
    pred: impl Fn(&astrid::AuditEvent) -> bool,
) -> astrid::AuditEvent {
    let until = Instant::now() + Duration::from_secs(5);
    loop {
        if let Some(e) = events.lock().unwrap().iter().find(|e| pred(e)) {
            return e.clone();
        }
        assert!(Instant::now() < until, "no such audit event");
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn every_call_has_an_id_that_its_log_lines_and_audit_events_carry() {
    let rt = runtime();
    let logs = collect_logs(&rt);
    let audit = collect_audit(&rt);
    let probe = load(&rt, "probe");
    let (_, first) = probe.call_with_id("log:first-line", b"", None).unwrap();
    let (_, second) = probe.call_with_id("log:second-line", b"", None).unwrap();
    assert!(first != 0 && second != 0 && first != second);
    let line = |text: &str| {
        let lines = logs.lock().unwrap();
        lines
            .iter()
            .find(|l| l.message.contains(text))
            .unwrap()
            .clone()
    };
    assert_eq!(line("first-line").call_id, first);
    assert_eq!(line("second-line").call_id, second);
    let event = audit_event(&audit, |e| e.call == "sys.log" && e.call_id == first);
    assert_eq!(event.capsule, "probe");
    assert!(audit_event(&audit, |e| e.call == "sys.log" && e.call_id == second).bytes > 0);

    // A failed call's error carries its id; one that never started has none.
    let hostile = load(&rt, "hostile");
    let e = hostile.call_with_id("trap", b"", None).unwrap_err();
    assert!(e.call_id() != 0 && e.call_id() != first && e.call_id() != second);
    let cancel = CallCancel::new();
    cancel.fire();
    let e = hostile
        .call_with_id("ok", b"", Some(&with_cancel(&cancel)))
        .unwrap_err();
    assert_eq!(e.call_id(), 0);
    // Between calls, the capsule's own lines carry none.
    assert!(logs
        .lock()
        .unwrap()
        .iter()
        .filter(|l| l.message.contains("line"))
        .all(|l| l.call_id != 0));
}

#[test]
fn call_ids_are_unique_across_threads_and_capsules() {
    let rt = runtime();
    let hello = Arc::new(load(&rt, "hello"));
    let other = Arc::new(load(&rt, "hello"));
    let threads: Vec<_> = [hello.clone(), hello, other]
        .into_iter()
        .map(|capsule| {
            std::thread::spawn(move || {
                (0..700)
                    .map(|_| capsule.call_with_id("noop", b"", None).unwrap().1)
                    .collect::<Vec<u64>>()
            })
        })
        .collect();
    let mut ids: Vec<u64> = threads
        .into_iter()
        .flat_map(|t| t.join().unwrap())
        .collect();
    let total = ids.len();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), total);
    assert!(ids[0] != 0);
}
