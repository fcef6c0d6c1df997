//! `wasi:sockets` (host ABI §0): denied unless the runtime enables it; then
//! routed through the manifest, the gate and the airlock like `astrid:net`,
//! and audited. Driven by the wasisock capsule, which uses Rust's std::net.

mod common;

use astrid::gate::GateAnswer;
use astrid::policy::gate::{GateKind, GateRequest, Verdict};
use astrid::runtime::{Outcome, FLAG_ALLOW_LOOPBACK, FLAG_WASI_SOCKETS};
use astrid::{Capsule, LoadOptions, Runtime, RuntimeConfig};
use common::*;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// What the gate saw: kind, transport, port.
type Asked = (GateKind, Option<&'static str>, u16);

fn runtime(flags: u32) -> Runtime {
    Runtime::new(RuntimeConfig {
        timeout: Duration::from_secs(10),
        flags,
        ..RuntimeConfig::default()
    })
    .unwrap()
}

fn echo_server() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for mut s in listener.incoming().flatten() {
            let mut buf = [0u8; 1024];
            if let Ok(n) = s.read(&mut buf) {
                let _ = s.write_all(&buf[..n]);
            }
        }
    });
    port
}

fn wasisock(rt: &Runtime) -> Capsule {
    rt.load_dir(&capsule_dir("wasisock"), &LoadOptions::default())
        .unwrap()
}

#[test]
fn denied_unless_the_runtime_enables_wasi_sockets() {
    let port = echo_server();
    let addr = format!("127.0.0.1:{port}");
    let rt = runtime(FLAG_ALLOW_LOOPBACK);
    let c = wasisock(&rt);
    assert_eq!(
        call(&c, "echo", &[&addr, "hi"]),
        ("err".into(), "PermissionDenied".into())
    );
    assert_eq!(call(&c, "bind", &["127.0.0.1:0"]).0, "err");
}

#[test]
fn enabled_sockets_pass_manifest_gate_and_airlock() {
    let port = echo_server();
    let addr = format!("127.0.0.1:{port}");
    let rt = runtime(FLAG_ALLOW_LOOPBACK | FLAG_WASI_SOCKETS);
    let asked: Arc<Mutex<Vec<Asked>>> = Arc::default();
    {
        let asked = asked.clone();
        rt.set_gate(Some(Arc::new(move |r: &GateRequest, _: &_| {
            asked.lock().unwrap().push((r.kind, r.transport, r.port));
            if r.port == 9 {
                GateAnswer::Decided(Verdict::deny("not 9"))
            } else {
                GateAnswer::Decided(Verdict::allow())
            }
        })))
        .unwrap();
    }
    let events = collect_audit(&rt);
    let c = wasisock(&rt);
    assert_eq!(
        call(&c, "echo", &[&addr, "through wasi"]),
        ("ok".into(), "through wasi".into())
    );
    assert!(asked
        .lock()
        .unwrap()
        .contains(&(GateKind::NetConnect, Some("tcp"), port)));
    // The gate says no.
    assert_eq!(
        call(&c, "echo", &["127.0.0.1:9", "x"]).1,
        "PermissionDenied"
    );
    // Not in the manifest (only 127.0.0.1 is): refused before the gate.
    let before = asked.lock().unwrap().len();
    assert_eq!(
        call(&c, "echo", &["10.9.8.7:80", "x"]).1,
        "PermissionDenied"
    );
    assert_eq!(asked.lock().unwrap().len(), before, "the gate is not asked");
    // Names pass the manifest and the gate's dns-lookup, then connect.
    assert_eq!(
        call(&c, "echo", &[&format!("localhost:{port}"), "by name"]),
        ("ok".into(), "by name".into())
    );
    assert!(asked
        .lock()
        .unwrap()
        .contains(&(GateKind::DnsLookup, None, 0)));
    // A name the manifest does not cover is never resolved.
    let before = asked.lock().unwrap().len();
    assert_eq!(call(&c, "echo", &["example.com:80", "x"]).0, "err");
    assert_eq!(asked.lock().unwrap().len(), before, "the gate is not asked");
    assert!(call(&c, "bind", &["127.0.0.1:0"])
        .1
        .starts_with("127.0.0.1:"));
    drop(c);
    drop(rt);
    let events = events.lock().unwrap();
    assert!(events
        .iter()
        .any(|e| e.call == "wasi:sockets.connect" && e.outcome == Outcome::Allowed));
    assert!(events
        .iter()
        .any(|e| e.call == "wasi:sockets.resolve-addresses" && e.outcome == Outcome::Denied));
    assert!(events.iter().any(|e| e.call == "wasi:sockets.connect"
        && e.outcome == Outcome::Denied
        && e.reason.as_deref().unwrap_or("").contains("not 9")));
}

#[test]
fn the_airlock_applies_to_wasi_connects_and_lookups() {
    let port = echo_server();
    let rt = runtime(FLAG_WASI_SOCKETS);
    let c = wasisock(&rt);
    let (action, kind) = call(&c, "echo", &[&format!("127.0.0.1:{port}"), "x"]);
    assert_eq!(
        (action.as_str(), kind.as_str()),
        ("err", "PermissionDenied")
    );
    // `localhost` passes the manifest and the gate, but its loopback
    // addresses are filtered out of the answer: nothing left to connect to.
    assert_eq!(
        call(&c, "echo", &[&format!("localhost:{port}"), "x"]).0,
        "err"
    );
}

#[test]
fn wasi_sockets_count_against_the_capsule_quotas() {
    let port = echo_server();
    let rt = runtime(FLAG_ALLOW_LOOPBACK | FLAG_WASI_SOCKETS);
    let c = wasisock(&rt);
    let addr = format!("127.0.0.1:{port}");
    assert_eq!(
        call(&c, "connect-many", &[&addr, "9"]).1,
        "8 then PermissionDenied"
    );
    // Dropped sockets give their slots back.
    assert_eq!(call(&c, "connect-many", &[&addr, "8"]).1, "8");
    assert_eq!(
        call(&c, "listen-many", &["127.0.0.1:0", "5"]).1,
        "4 then PermissionDenied"
    );
    assert_eq!(
        call(&c, "udp-many", &["127.0.0.1:0", "5"]).1,
        "4 then PermissionDenied"
    );
    assert_eq!(call(&c, "udp-many", &["127.0.0.1:0", "4"]).1, "4");
    // Sockets that are only created still hold descriptors: 16 per store.
    assert!(call(&c, "create-many", &["17"]).1.starts_with("16 then"));
    assert_eq!(call(&c, "create-many", &["16"]).1, "16");
}

#[test]
fn a_connect_after_a_vetted_lookup_is_matched_on_the_name() {
    let port = echo_server();
    let rt = runtime(FLAG_ALLOW_LOOPBACK | FLAG_WASI_SOCKETS);
    let manifest = std::fs::read_to_string(capsule_dir("wasisock").join("Capsule.toml"))
        .unwrap()
        .replace(
            "net_connect = [\"127.0.0.1:*\", \"localhost:*\"]",
            "net_connect = [\"localhost:*\"]",
        );
    assert!(manifest.contains("net_connect = [\"localhost:*\"]"));
    let c = rt
        .load_bytes(&wasm_of("wasisock"), &manifest, &LoadOptions::default())
        .unwrap();
    assert_eq!(
        call(&c, "echo", &[&format!("localhost:{port}"), "named"]),
        ("ok".into(), "named".into())
    );
    // The same address asked for by number has no entry.
    assert_eq!(
        call(&c, "echo", &[&format!("127.0.0.1:{port}"), "x"]).1,
        "PermissionDenied"
    );
}

/// What the gate saw: kind, host, port.
type AskedHost = (GateKind, Option<String>, u16);

fn wasisock_with_v6(rt: &Runtime) -> Capsule {
    let manifest = std::fs::read_to_string(capsule_dir("wasisock").join("Capsule.toml"))
        .unwrap()
        .replace(
            "net_connect = [\"127.0.0.1:*\", \"localhost:*\"]",
            "net_connect = [\"127.0.0.1:*\", \"localhost:*\", \"[::1]:*\"]",
        );
    assert!(manifest.contains("[::1]:*"));
    rt.load_bytes(&wasm_of("wasisock"), &manifest, &LoadOptions::default())
        .unwrap()
}

#[test]
fn wasi_hosts_reach_manifest_gate_and_audit_canonically() {
    let port = echo_server();
    let rt = runtime(FLAG_ALLOW_LOOPBACK | FLAG_WASI_SOCKETS);
    let asked: Arc<Mutex<Vec<AskedHost>>> = Arc::default();
    {
        let asked = asked.clone();
        rt.set_gate(Some(Arc::new(move |r: &GateRequest, _: &_| {
            asked.lock().unwrap().push((r.kind, r.host.clone(), r.port));
            GateAnswer::Decided(Verdict::allow())
        })))
        .unwrap();
    }
    let events = collect_audit(&rt);
    let c = wasisock_with_v6(&rt);
    // std::net hands spellings it cannot parse to the name lookup; each is
    // read as 127.0.0.1, which the manifest's `127.0.0.1:*` covers.
    let spellings = [
        "2130706433",
        "127.1",
        "0x7f000001",
        "0177.0.0.1",
        "127.0.0.1.",
    ];
    for host in spellings {
        assert_eq!(
            call(&c, "echo", &[&format!("{host}:{port}"), "n"]),
            ("ok".into(), "n".into()),
            "{host}"
        );
    }
    assert_eq!(
        call(&c, "echo", &[&format!("LocalHost.:{port}"), "n"]),
        ("ok".into(), "n".into())
    );
    // An IPv6 destination: the gate sees it without brackets.
    assert_eq!(call(&c, "echo", &[&format!("[::1]:{port}"), "x"]).0, "err");
    let asked = asked.lock().unwrap().clone();
    let lookups: Vec<&str> = asked
        .iter()
        .filter(|a| a.0 == GateKind::DnsLookup)
        .map(|a| a.1.as_deref().unwrap())
        .collect();
    let mut expected = vec!["127.0.0.1"; spellings.len()];
    expected.push("localhost");
    assert_eq!(lookups, expected);
    assert!(asked.contains(&(GateKind::NetConnect, Some("127.0.0.1".into()), port)));
    assert!(asked.contains(&(GateKind::NetConnect, Some("::1".into()), port)));
    drop(c);
    drop(rt);
    let events = events.lock().unwrap();
    let resolved: Vec<(Option<&str>, Outcome)> = events
        .iter()
        .filter(|e| e.call == "wasi:sockets.resolve-addresses")
        .map(|e| (e.target.as_deref(), e.outcome))
        .collect();
    let mut expected = vec![(Some("127.0.0.1"), Outcome::Allowed); spellings.len()];
    expected.push((Some("localhost"), Outcome::Allowed));
    assert_eq!(resolved, expected);
    let v6 = format!("[::1]:{port}");
    assert!(events
        .iter()
        .any(|e| e.call == "wasi:sockets.connect" && e.target.as_deref() == Some(v6.as_str())));
}

#[test]
fn a_wasi_lookup_the_airlock_empties_is_audited_as_denied() {
    let port = echo_server();
    let rt = runtime(FLAG_WASI_SOCKETS);
    let events = collect_audit(&rt);
    let c = wasisock(&rt);
    for host in ["localhost", "2130706433"] {
        assert_eq!(
            call(&c, "echo", &[&format!("{host}:{port}"), "x"]),
            ("err".into(), "PermissionDenied".into()),
            "{host}"
        );
    }
    drop(c);
    drop(rt);
    let events = events.lock().unwrap();
    let lookups: Vec<(Option<&str>, Outcome, Option<&str>)> = events
        .iter()
        .filter(|e| e.call == "wasi:sockets.resolve-addresses")
        .map(|e| (e.target.as_deref(), e.outcome, e.reason.as_deref()))
        .collect();
    assert_eq!(
        lookups,
        [
            (Some("localhost"), Outcome::Denied, Some("airlock-rejected")),
            (Some("127.0.0.1"), Outcome::Denied, Some("airlock-rejected")),
        ]
    );
    assert!(
        !events.iter().any(|e| e.call == "wasi:sockets.connect"),
        "nothing was left to connect to"
    );
}
