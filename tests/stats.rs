//! Usage figures: each counter and gauge moves with what the capsule did,
//! and the runtime's totals survive an unload.

mod common;

use astrid::usage::{CallEnd, Channel};
use astrid::{CallCancel, CallOptions, LoadOptions, Runtime};
use common::*;
use std::sync::Arc;
use std::time::Duration;

fn interface(name: &str) -> usize {
    astrid::usage::INTERFACES
        .iter()
        .position(|i| *i == name)
        .unwrap()
}

#[test]
fn calls_are_counted_by_how_they_ended_with_fuel_and_host_calls() {
    let rt = runtime_with(300, 50_000_000);
    let hostile = load(&rt, "hostile");
    let probe = load(&rt, "probe");
    hostile.call("ok", b"", None).unwrap();
    hostile.call("trap", b"", None).unwrap_err();
    hostile.call("loop", b"", None).unwrap_err(); // fuel or timeout: fuel is small
    let short = CallOptions {
        timeout: Some(Duration::from_millis(50)),
        fuel: Some(u64::MAX / 2),
        ..CallOptions::default()
    };
    hostile.call("loop", b"", Some(&short)).unwrap_err();
    let cancel = CallCancel::new();
    cancel.fire();
    let fired = CallOptions {
        cancel: Some(cancel),
        ..CallOptions::default()
    };
    hostile.call("ok", b"", Some(&fired)).unwrap_err();
    hostile.call("membomb", b"", None).unwrap_err();

    let s = hostile.stats().unwrap();
    let calls = s.totals.calls;
    assert_eq!(calls[CallEnd::Ok as usize], 1, "{calls:?}");
    assert_eq!(calls[CallEnd::Trap as usize], 1, "{calls:?}");
    assert_eq!(calls[CallEnd::OutOfFuel as usize], 1, "{calls:?}");
    assert_eq!(calls[CallEnd::Timeout as usize], 1, "{calls:?}");
    assert_eq!(calls[CallEnd::Cancelled as usize], 1, "{calls:?}");
    assert_eq!(calls[CallEnd::ResourceLimit as usize], 1, "{calls:?}");
    assert!(s.totals.fuel >= 50_000_000, "{}", s.totals.fuel);
    // The timed-out loop alone ran ~50 ms; the coarse clock counts whole ticks.
    assert!(s.totals.guest_ns < 10_000_000_000);
    assert!(s.memory_peak_bytes > 0 && s.memory_bytes <= s.memory_peak_bytes);

    for _ in 0..3 {
        probe.call("log:counted", b"", None).unwrap();
    }
    let s = probe.stats().unwrap();
    assert_eq!(s.totals.calls[CallEnd::Ok as usize], 3);
    assert!(s.totals.host_calls[interface("sys")] >= 3);
    assert!(s.totals.host_ns[interface("sys")] > 0);
    assert_eq!(s.totals.host_calls[interface("fs")], 0);
    assert!(s.instances_live >= 1 && s.instances_idle == s.instances_live);
}

#[test]
fn fs_bytes_and_gate_questions_are_counted() {
    let rt = runtime();
    let denied = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let seen = denied.clone();
    rt.set_gate(Some(Arc::new(
        move |request: &astrid::policy::gate::GateRequest, _: &astrid::gate::Deferral| {
            let deny = request
                .path
                .as_deref()
                .is_some_and(|p| p.contains("secret"));
            if deny {
                seen.store(true, std::sync::atomic::Ordering::SeqCst);
            }
            astrid::gate::GateAnswer::Decided(if deny {
                astrid::policy::gate::Verdict::deny("no")
            } else {
                astrid::policy::gate::Verdict::allow()
            })
        },
    )))
    .unwrap();
    let fsprobe = rt
        .load_dir(&capsule_dir("fsprobe"), &LoadOptions::default())
        .unwrap();
    ok(&fsprobe, "mkdir", &["ws"]);
    ok(&fsprobe, "write-file", &["ws/a.txt", "hello"]);
    assert_eq!(ok(&fsprobe, "read-file", &["ws/a.txt"]), "hello");
    assert_eq!(
        err(&fsprobe, "write-file", &["ws/secret.txt", "x"]),
        "capability-denied"
    );
    assert!(denied.load(std::sync::atomic::Ordering::SeqCst));
    let s = fsprobe.stats().unwrap();
    assert_eq!(s.totals.written_bytes[Channel::Fs as usize], 5);
    assert_eq!(s.totals.read_bytes[Channel::Fs as usize], 5);
    assert!(s.totals.gate_asks >= 4, "{}", s.totals.gate_asks);
    assert_eq!(s.totals.gate_denials, 1);
    assert!(s.totals.host_calls[interface("fs")] >= 4);
}

#[test]
fn kv_bytes_bus_counters_and_runtime_totals_after_unload() {
    let rt = runtime();
    let kv = load(&rt, "kvprobe");
    kv.call("set", b"k\nvalue", None).unwrap();
    let s = kv.stats().unwrap();
    assert!(s.kv_bytes.unwrap() >= 6, "{:?}", s.kv_bytes);

    let ipc = load(&rt, "ipcprobe");
    let r = ipc.call("publish", b"out.x\n{}", None).unwrap();
    assert_eq!(r.action, "ok", "{r:?}");
    let s = ipc.stats().unwrap();
    assert_eq!(s.totals.bus_published, 1);

    let before = rt.stats().unwrap();
    assert_eq!(before.capsules_loaded, 2);
    let calls_before: u64 = before.totals.calls.iter().sum();
    assert_eq!(calls_before, 2);
    kv.unload().unwrap();
    drop(kv);
    let after = rt.stats().unwrap();
    assert_eq!(after.capsules_loaded, 1);
    assert_eq!(after.totals.calls.iter().sum::<u64>(), calls_before);
    assert!(after.totals.host_calls[interface("kv")] >= 1);
    let text = rt.metrics_text().unwrap();
    assert!(text.contains("astrid_runtime_capsules_loaded 1"), "{text}");
    assert!(
        text.contains("astrid_capsule_bus_messages_total{capsule=\"ipcprobe\""),
        "{text}"
    );
}

#[test]
fn a_closed_runtime_and_an_unloaded_capsule_report_closed() {
    let rt = Runtime::new(Default::default()).unwrap();
    let hello = load(&rt, "hello");
    hello.unload().unwrap();
    assert_eq!(hello.stats().unwrap_err().code(), astrid::Code::Closed);
    rt.close().unwrap();
    assert_eq!(rt.stats().unwrap_err().code(), astrid::Code::Closed);
    assert_eq!(rt.metrics_text().unwrap_err().code(), astrid::Code::Closed);
}
