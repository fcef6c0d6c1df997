//! `astrid:ipc` and `astrid:io` end to end through the ipcprobe capsule:
//! ACLs, the reserved prefix, attribution (verified, claimed, system),
//! queues seen from a guest, readiness pollables and `poll` limits,
//! interceptor dispatch (single, concurrent, chains with continue / final /
//! a failing handler), the depth limit, the publish rate limit, and unload
//! while a guest waits in `recv` or `poll`.

mod common;

use astrid::bus::Delivery;
use astrid::{CallOptions, Capsule, LoadOptions, Outcome, Runtime};
use common::*;
use std::sync::mpsc::{channel, Receiver};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn call_as(c: &Capsule, principal: Option<&str>, action: &str, args: &[&str]) -> (String, String) {
    let options = CallOptions {
        principal: principal.map(str::to_string),
        ..CallOptions::default()
    };
    let r = c
        .call(action, args.join("\n").as_bytes(), Some(&options))
        .unwrap_or_else(|e| panic!("{action} {args:?}: {e}"));
    (r.action, r.data.unwrap_or_default())
}

fn ok(c: &Capsule, action: &str, args: &[&str]) -> String {
    match call_as(c, None, action, args) {
        (a, data) if a == "ok" => data,
        (_, e) => panic!("{action} {args:?} failed: {e}"),
    }
}

fn err(c: &Capsule, action: &str, args: &[&str]) -> String {
    match call_as(c, None, action, args) {
        (a, data) if a == "err" => data,
        (_, v) => panic!("{action} {args:?} succeeded with {v:?}"),
    }
}

fn load_probe(rt: &Runtime, owner: Option<&str>) -> Capsule {
    let options = LoadOptions {
        principal: owner.map(str::to_string),
        ..LoadOptions::default()
    };
    rt.load_dir(&capsule_dir("ipcprobe"), &options)
        .expect("load ipcprobe")
}

/// The probe's component under another manifest.
fn load_with_manifest(rt: &Runtime, manifest: &str) -> Capsule {
    rt.load_bytes(&wasm_of("ipcprobe"), manifest, &LoadOptions::default())
        .expect("load with manifest")
}

/// A host subscription collecting (topic, payload, attribution) triples.
fn collect(
    rt: &Runtime,
    pattern: &str,
) -> (
    astrid::bus::HostSubscription,
    Receiver<(String, String, String)>,
) {
    let (tx, rx) = channel();
    let sub = rt
        .subscribe(
            pattern,
            Box::new(move |d: &Delivery| {
                let m = &d.message;
                let who = astrid::dispatch::attribution_text(&m.attribution);
                let _ = tx.send((m.topic.clone(), m.payload.clone(), who));
            }),
        )
        .unwrap();
    (sub, rx)
}

fn next(rx: &Receiver<(String, String, String)>) -> (String, String, String) {
    rx.recv_timeout(Duration::from_secs(10))
        .expect("a message within 10 s")
}

#[test]
fn publish_acl_reserved_prefix_and_payload_checks() {
    let rt = runtime();
    let c = load_probe(&rt, None);
    let (_sub, rx) = collect(&rt, "out.*");
    assert_eq!(ok(&c, "publish", &["out.x", "{\"a\":1}"]), "ok");
    let (topic, payload, who) = next(&rx);
    assert_eq!(
        (topic.as_str(), payload.as_str(), who.as_str()),
        ("out.x", "{\"a\":1}", "system")
    );
    assert_eq!(err(&c, "publish", &["elsewhere", "1"]), "capability-denied");
    assert_eq!(
        err(&c, "publish", &["astrid.events", "1"]),
        "capability-denied",
        "reserved prefix"
    );
    assert_eq!(err(&c, "publish", &["out.*", "1"]), "invalid-input");
    assert_eq!(err(&c, "publish", &["out..x", "1"]), "invalid-input");
    assert_eq!(err(&c, "publish", &["out.x", "not json"]), "invalid-input");
    assert_eq!(
        err(&c, "publish", &["1.2.3.4.5.6.7.8.9", "1"]),
        "invalid-input"
    );
    // Subscribing under the reserved prefix is fine where granted.
    assert_eq!(ok(&c, "subscribe", &["astrid.*"]), "ok");
}

#[test]
fn subscribe_acl_only_narrows_grants() {
    let rt = runtime();
    let c = load_probe(&rt, None);
    assert_eq!(ok(&c, "subscribe", &["probe.*"]), "ok");
    assert_eq!(ok(&c, "subscribe", &["probe.x"]), "ok");
    assert_eq!(
        ok(&c, "subscribe", &["probe.*.z"]),
        "ok",
        "a.* covers a.*.c"
    );
    assert_eq!(err(&c, "subscribe", &["*"]), "capability-denied");
    assert_eq!(
        err(&c, "subscribe", &["echo.*"]),
        "capability-denied",
        "a.b does not cover a.*"
    );
    assert_eq!(err(&c, "subscribe", &["probe.x*"]), "invalid-input");
    // Without any [subscribe] table everything is denied.
    let bare = load_with_manifest(
        &rt,
        "[package]\nname = \"bare\"\nversion = \"0.1.0\"\n[publish]\n\"out.*\" = \"opaque\"\n",
    );
    assert_eq!(err(&bare, "subscribe", &["probe.x"]), "capability-denied");
}

#[test]
fn guest_queue_roundtrip_attribution_and_envelopes() {
    let rt = runtime();
    let c = load_probe(&rt, None);
    // Three messages to itself, read back one envelope at a time.
    assert_eq!(
        ok(&c, "roundtrip", &["probe.*", "probe.rt", "3"]),
        "probe.rt|0|system;dropped=0 lagged=0 probe.rt|1|system;dropped=0 lagged=0 \
         probe.rt|2|system;dropped=0 lagged=0 dropped=0 lagged=0"
    );
    // A call for alice publishes verified(alice), and her subscription sees it.
    let (_sub, rx) = collect(&rt, "out.*");
    call_as(&c, Some("alice"), "publish", &["out.v", "1"]);
    assert_eq!(next(&rx).2, "alice");
    // publish-as: claimed, never verified.
    assert_eq!(ok(&c, "publish-as", &["out.c", "2", "bob"]), "ok");
    assert_eq!(next(&rx).2, "claimed(bob)");
    assert_eq!(err(&c, "publish-as", &["out.c", "2", ""]), "invalid-input");
    assert_eq!(
        err(&c, "publish-as", &["out.c", "2", "a\tb"]),
        "invalid-input"
    );
    // Without `uplink`, publish-as is denied.
    let no_uplink = load_with_manifest(
        &rt,
        "[package]\nname = \"nouplink\"\nversion = \"0.1.0\"\n[publish]\n\"out.*\" = \"opaque\"\n",
    );
    assert_eq!(
        err(&no_uplink, "publish-as", &["out.c", "2", "bob"]),
        "capability-denied"
    );
}

#[test]
fn recv_waits_for_a_host_publish_and_times_out_empty() {
    let rt = Arc::new(runtime());
    let c = Arc::new(load_probe(&rt, None));
    let waiter = {
        let c = c.clone();
        std::thread::spawn(move || ok(&c, "recv", &["probe.wait", "5000"]))
    };
    // Publish until the guest's subscription exists and takes the message.
    let started = Instant::now();
    while !waiter.is_finished() && started.elapsed() < Duration::from_secs(5) {
        rt.publish("probe.wait", "\"hi\"", Some("carol")).unwrap();
        std::thread::sleep(Duration::from_millis(20));
    }
    let got = waiter.join().unwrap();
    assert!(
        got.starts_with("probe.wait|\"hi\"|verified(carol)"),
        "{got}"
    );
    // Nothing arrives: an empty envelope after the timeout, not an error.
    let started = Instant::now();
    assert_eq!(ok(&c, "recv", &["probe.none", "100"]), "dropped=0 lagged=0");
    assert!(started.elapsed() >= Duration::from_millis(90));
}

#[test]
fn poll_takes_256_pollables_and_refuses_257_or_none() {
    let rt = runtime();
    let c = load_probe(&rt, None);
    assert_eq!(
        ok(&c, "poll-many", &["256"]),
        "256 ready, first Some(0), last Some(255)"
    );
    assert_eq!(
        ok(&c, "poll-many", &["257"]),
        "poll error ErrorCode::TooLarge"
    );
    assert_eq!(ok(&c, "poll-empty", &[]), "Err(ErrorCode::InvalidInput)");
}

#[test]
fn unload_wakes_a_guest_blocked_in_recv_or_poll() {
    for action in ["recv", "poll-wait"] {
        let rt = runtime_with(60_000, 500_000_000);
        let c = Arc::new(load_probe(&rt, None));
        let blocked = {
            let c = c.clone();
            std::thread::spawn(move || c.call(action, b"probe.never\n60000", None))
        };
        std::thread::sleep(Duration::from_millis(300));
        let started = Instant::now();
        c.unload().unwrap();
        let outcome = blocked.join().unwrap();
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "{action}: {:?}",
            started.elapsed()
        );
        match outcome {
            Ok(r) => assert!(
                matches!(r.data.as_deref(), Some("closed") | Some("cancelled")),
                "{action}: {r:?}"
            ),
            Err(e) => assert!(
                matches!(e.code(), astrid::Code::Cancelled | astrid::Code::Closed),
                "{action}: {e}"
            ),
        }
    }
}

#[test]
fn interceptor_bindings_are_listed_in_manifest_order() {
    let rt = runtime();
    let c = load_probe(&rt, None);
    assert_eq!(
        ok(&c, "bindings", &[]),
        "0:echo:echo.in,1:append-a:chain.in,2:final:chain.stop,3:trap:chain.fail,\
         4:report:chain.*,5:report:fan.x,6:report-again:fan.*,7:loop:loop.in,8:whoami:who.*,\
         9:report:svc.out,10:deny:deny.in"
    );
}

#[test]
fn host_publish_reaches_a_single_interceptor() {
    let rt = runtime();
    let _c = load_probe(&rt, None);
    let (_sub, rx) = collect(&rt, "out.*");
    rt.publish("echo.in", "{\"n\":1}", None).unwrap();
    assert_eq!(next(&rx).1, "{\"n\":1}");
    // The handler runs with the message's verified principal as caller.
    rt.publish("who.x", "0", Some("dave")).unwrap();
    assert_eq!(
        next(&rx),
        ("out.who".into(), "\"dave\"".into(), "dave".into())
    );
    // A system message leaves it empty.
    rt.publish("who.x", "0", None).unwrap();
    assert_eq!(next(&rx).1, "\"-\"");
}

#[test]
fn chains_pass_payloads_stop_on_final_and_skip_failures() {
    let rt = runtime();
    let logs = collect_logs(&rt);
    let _c = load_probe(&rt, None);
    let (_sub, rx) = collect(&rt, "out.report");
    // chain.stop: final (20) stops the chain before report (30).
    rt.publish("chain.stop", "\"s\"", None).unwrap();
    // chain.fail: trap (5) fails and is skipped; report (30) still runs.
    rt.publish("chain.fail", "\"f\"", None).unwrap();
    // chain.in: append-a (10) continues with a new payload; report (30) sees it.
    rt.publish("chain.in", "\"x\"", None).unwrap();
    // One lane per (capsule, principal): the chains ran in publish order.
    assert_eq!(next(&rx).1, "\"f\"");
    assert_eq!(next(&rx).1, "\"xa\"");
    assert!(
        rx.recv_timeout(Duration::from_millis(200)).is_err(),
        "final stopped chain.stop"
    );
    let lines = logs.lock().unwrap();
    assert!(
        lines.iter().any(|l| l
            .message
            .contains("interceptor `trap` for `chain.fail` failed")),
        "{:?}",
        lines.iter().map(|l| &l.message).collect::<Vec<_>>()
    );
}

#[test]
fn equal_priorities_run_as_independent_calls() {
    let rt = runtime();
    let _c = load_probe(&rt, None);
    let (_sub, rx) = collect(&rt, "out.*");
    rt.publish("fan.x", "\"both\"", None).unwrap();
    let mut topics = vec![next(&rx).0, next(&rx).0];
    topics.sort();
    assert_eq!(topics, ["out.report", "out.report-again"]);
}

#[test]
fn publishing_deeper_than_eight_is_refused_with_quota() {
    let rt = runtime();
    let logs = collect_logs(&rt);
    let _c = load_probe(&rt, None);
    rt.publish("loop.in", "\"0\"", None).unwrap();
    // Host publish = depth 0; handlers republish at depths 1..=8; the
    // handler at depth 8 is refused.
    let started = Instant::now();
    let found = loop {
        let lines = logs.lock().unwrap();
        if let Some(line) = lines
            .iter()
            .find(|l| l.message.starts_with("loop at depth"))
        {
            break line.message.clone();
        }
        drop(lines);
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "no depth report"
        );
        std::thread::sleep(Duration::from_millis(10));
    };
    assert_eq!(found, "loop at depth 8: quota");
}

#[test]
fn a_publish_storm_is_rate_limited_per_capsule_and_others_keep_publishing() {
    let rt = runtime();
    let noisy = load_probe(&rt, None);
    let quiet = load_with_manifest(
        &rt,
        "[package]\nname = \"quiet\"\nversion = \"0.1.0\"\n[publish]\n\"out.*\" = \"opaque\"\n",
    );
    // 1 MiB payloads: the 10 MiB/s budget runs out after about ten.
    let result = ok(
        &noisy,
        "storm",
        &["out.storm", "40", &(1 << 20).to_string()],
    );
    let (sent, error) = result.split_once(" then ").expect(&result);
    let sent: usize = sent.parse().unwrap();
    assert!((9..=12).contains(&sent), "{result}");
    assert_eq!(error, "rate-limited");
    // Another capsule is not affected.
    assert_eq!(ok(&quiet, "publish", &["out.q", "1"]), "ok");
}

#[test]
fn the_129th_live_subscription_is_refused_with_quota() {
    let rt = runtime();
    let c = load_probe(&rt, None);
    assert_eq!(ok(&c, "subscribe-many", &["128"]), "128");
    assert_eq!(ok(&c, "subscribe-many", &["129"]), "128 then quota");
    // They were released with the call: the next call gets its 128 again.
    assert_eq!(ok(&c, "subscribe-many", &["128"]), "128");
}

#[test]
fn subscriptions_end_with_their_call() {
    let rt = runtime();
    let c = load_probe(&rt, None);
    let before = rt.subscription_count();
    for _ in 0..200 {
        ok(&c, "subscribe", &["probe.x"]);
    }
    // Each call's subscription was closed when the call ended: no quota hit.
    assert_eq!(rt.subscription_count(), before);
}

#[test]
fn too_many_pending_invocations_give_backpressure_and_others_keep_going() {
    let rt = runtime();
    let publisher = load_probe(&rt, None);
    // Twenty slow handlers (100 ms each), one lane each: every publish adds
    // twenty pending invocations until the lanes (64 deep) fill.
    let _targets: Vec<Capsule> = (0..20)
        .map(|i| {
            load_with_manifest(
                &rt,
                &format!(
                    "[package]\nname = \"slow{i}\"\nversion = \"0.1.0\"\n\
                     [subscribe]\n\"probe.slow\" = {{ wit = \"opaque\", handler = \"sleep\" }}\n"
                ),
            )
        })
        .collect();
    let result = ok(&publisher, "storm", &["probe.slow", "200", "4"]);
    let (sent, error) = result.split_once(" then ").expect(&result);
    assert_eq!(error, "backpressure");
    let sent: usize = sent.parse().unwrap();
    // 1024 pending / 20 per publish ≈ 52 (a few may have finished meanwhile).
    assert!((50..=64).contains(&sent), "{result}");
    // Nobody else is held back: another capsule and the host still publish.
    let quiet = load_with_manifest(
        &rt,
        "[package]\nname = \"quiet\"\nversion = \"0.1.0\"\n[publish]\n\"out.*\" = \"opaque\"\n",
    );
    assert_eq!(ok(&quiet, "publish", &["out.q", "1"]), "ok");
    rt.publish("out.host", "1", None).unwrap();
}

#[test]
fn dispatched_handlers_are_audited_with_what_they_answered() {
    let rt = runtime();
    let audit = collect_audit(&rt);
    let _c = load_probe(&rt, None);
    rt.publish("deny.in", "\"d\"", None).unwrap();
    rt.publish("echo.in", "{}", None).unwrap();
    rt.publish("chain.stop", "\"s\"", None).unwrap();
    rt.publish("chain.fail", "\"f\"", None).unwrap();
    let find = |call: &str| {
        let until = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(e) = audit.lock().unwrap().iter().find(|e| e.call == call) {
                return e.clone();
            }
            assert!(Instant::now() < until, "no audit event for {call}");
            std::thread::sleep(Duration::from_millis(10));
        }
    };
    let deny = find("guest.deny");
    assert_eq!(deny.outcome, Outcome::Denied);
    assert_eq!(deny.reason.as_deref(), Some("nope"));
    assert_eq!(deny.target.as_deref(), Some("deny.in"));
    let echo = find("guest.echo");
    assert_eq!(echo.outcome, Outcome::Continue);
    assert_eq!(find("guest.final").outcome, Outcome::Final);
    let trap = find("guest.trap");
    assert_eq!(trap.outcome, Outcome::Failed);
    assert!(
        trap.reason
            .as_deref()
            .unwrap_or("")
            .starts_with("guest trap"),
        "{trap:?}"
    );
    let mut ids = vec![deny.call_id, echo.call_id, trap.call_id];
    ids.sort_unstable();
    ids.dedup();
    assert!(ids.len() == 3 && ids[0] != 0, "{ids:?}");
}
