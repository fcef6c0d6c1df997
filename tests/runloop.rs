//! Run loops (host ABI §3, §7.2) through the runloop capsule: a real `run`
//! export is detected (SDK placeholders are not), the loop echoes bus
//! messages with the sender's principal as its context, `wait_ready`
//! reports ready / failure / timeout, the watchdog stops a loop that never
//! waits, and unload ends a loop blocked in `recv` or `poll` promptly.

mod common;

use astrid::bus::Delivery;
use astrid::{Capsule, Code, LoadOptions, Runtime, Watchdog};
use common::*;
use std::sync::mpsc::{channel, Receiver};
use std::time::{Duration, Instant};

fn load_mode(rt: &Runtime, mode: &str, watchdog: Watchdog) -> Capsule {
    let options = LoadOptions {
        config: vec![("MODE".into(), mode.into())],
        watchdog,
        ..LoadOptions::default()
    };
    rt.load_dir(&capsule_dir("runloop"), &options)
        .expect("load runloop")
}

fn replies(rt: &Runtime) -> (astrid::bus::HostSubscription, Receiver<String>) {
    let (tx, rx) = channel();
    let sub = rt
        .subscribe(
            "svc.out",
            Box::new(move |d: &Delivery| {
                let _ = tx.send(d.message.payload.clone());
            }),
        )
        .unwrap();
    (sub, rx)
}

#[test]
fn real_run_exports_are_loops_and_sdk_placeholders_are_not() {
    let rt = runtime();
    let service = load_mode(&rt, "echo", Watchdog::Default);
    assert!(service.runs_loop());
    let sdk = load(&rt, "sdk-hello");
    assert!(
        !sdk.runs_loop(),
        "the SDK's shared placeholder is not a run loop"
    );
    sdk.wait_ready(Duration::ZERO).unwrap();
}

#[test]
fn a_loop_echoes_messages_as_their_principal() {
    for mode in ["echo", "poll-echo"] {
        let rt = runtime();
        let logs = collect_logs(&rt);
        let service = load_mode(&rt, mode, Watchdog::Default);
        service.wait_ready(Duration::from_secs(10)).unwrap();
        let (_sub, rx) = replies(&rt);
        rt.publish("svc.in", "{\"n\":1}", Some("erin")).unwrap();
        rt.publish("svc.in", "{\"n\":2}", None).unwrap();
        let first = rx.recv_timeout(Duration::from_secs(10)).unwrap();
        let second = rx.recv_timeout(Duration::from_secs(10)).unwrap();
        assert_eq!(first, "{\"echo\":{\"n\":1},\"as\":\"erin\"}", "{mode}");
        assert_eq!(
            second, "{\"echo\":{\"n\":2},\"as\":\"-\"}",
            "{mode}: system clears it"
        );
        // Its [subscribe] handler is not dispatched (the loop is busy), but
        // the loop can read its bindings.
        assert!(logs
            .lock()
            .unwrap()
            .iter()
            .any(|l| l.message == "service ready with 1 binding(s)"));
        // The embedder can still call the interceptor export directly.
        let direct = service.call("ping", b"", None).unwrap();
        assert_eq!(direct.data.as_deref(), Some("direct call ping"));
    }
}

#[test]
fn a_loop_that_returns_or_traps_is_failed() {
    let rt = runtime();
    for (mode, code) in [("return", Code::Trap), ("trap", Code::Trap)] {
        let service = load_mode(&rt, mode, Watchdog::Default);
        let err = service.wait_ready(Duration::from_secs(10)).unwrap_err();
        assert_eq!(err.code(), code, "{mode}: {err}");
        assert!(err.message().contains("run loop"), "{mode}: {err}");
    }
}

#[test]
fn wait_ready_times_out_for_a_loop_that_never_signals() {
    let rt = runtime();
    let service = load_mode(
        &rt,
        "late-ready",
        Watchdog::Window(Duration::from_millis(100)),
    );
    let started = Instant::now();
    let err = service.wait_ready(Duration::from_millis(200)).unwrap_err();
    assert_eq!(err.code(), Code::Timeout);
    assert!(started.elapsed() < Duration::from_secs(2));
    // Sleeping counts as waiting: the watchdog leaves it alone.
    std::thread::sleep(Duration::from_millis(700));
    let again = service.wait_ready(Duration::from_millis(10)).unwrap_err();
    assert_eq!(
        again.code(),
        Code::Timeout,
        "still running, not failed: {again}"
    );
}

#[test]
fn the_watchdog_stops_a_loop_that_never_waits_unless_exempt() {
    let rt = runtime();
    let logs = collect_logs(&rt);
    let spinning = load_mode(&rt, "spin", Watchdog::Window(Duration::from_millis(100)));
    spinning.wait_ready(Duration::from_secs(5)).unwrap();
    // Three 100 ms windows without a wait, checked at each 100 ms epoch tick.
    let started = Instant::now();
    loop {
        let failed = logs
            .lock()
            .unwrap()
            .iter()
            .any(|l| l.message.contains("run-loop watchdog"));
        if failed {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "the watchdog never fired"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let err = spinning.wait_ready(Duration::ZERO).unwrap_err();
    assert_eq!(err.code(), Code::Timeout, "{err}");

    let exempt = load_mode(&rt, "spin", Watchdog::Off);
    exempt.wait_ready(Duration::from_secs(5)).unwrap();
    std::thread::sleep(Duration::from_millis(600));
    exempt
        .wait_ready(Duration::ZERO)
        .expect("exempt loops keep running");
    // Unload still stops it (epoch interruption), promptly.
    let started = Instant::now();
    exempt.unload().unwrap();
    assert!(started.elapsed() < Duration::from_secs(2));
}

#[test]
fn unload_ends_a_loop_blocked_in_recv_or_poll_promptly() {
    for mode in ["echo", "poll-echo"] {
        let rt = runtime();
        let service = load_mode(&rt, mode, Watchdog::Default);
        service.wait_ready(Duration::from_secs(10)).unwrap();
        std::thread::sleep(Duration::from_millis(100)); // now blocked waiting
        let started = Instant::now();
        service.unload().unwrap();
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{mode}: unload took {:?}",
            started.elapsed()
        );
        assert_eq!(
            service.wait_ready(Duration::ZERO).unwrap_err().code(),
            Code::Closed
        );
    }
}

#[test]
fn each_message_a_loop_takes_is_a_call_of_its_own() {
    let rt = runtime();
    let audit = collect_audit(&rt);
    let service = load_mode(&rt, "echo", Watchdog::Default);
    service.wait_ready(Duration::from_secs(10)).unwrap();
    let (_sub, rx) = replies(&rt);
    for n in 0..3 {
        rt.publish("svc.in", &format!("{{\"n\":{n}}}"), None)
            .unwrap();
        rx.recv_timeout(Duration::from_secs(10)).unwrap();
    }
    // The loop's replies (`ipc.publish` events) each carry the id of the
    // message being handled: three messages, three ids, none of them 0.
    let until = Instant::now() + Duration::from_secs(5);
    let ids = loop {
        let mut ids: Vec<u64> = audit
            .lock()
            .unwrap()
            .iter()
            .filter(|e| e.call == "ipc.publish" && e.capsule == "runloop")
            .map(|e| e.call_id)
            .collect();
        if ids.len() >= 3 || Instant::now() > until {
            ids.sort_unstable();
            ids.dedup();
            break ids;
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    assert_eq!(ids.len(), 3, "{ids:?}");
    assert!(ids[0] != 0);
}
