//! `astrid:net` end to end through the netprobe capsule, against servers
//! the tests start on loopback (runtimes with `ALLOW_LOOPBACK`, except where
//! the airlock is under test): TCP echo, framed messages, partial reads,
//! peek, timeouts, shutdown, options, io views, a capsule serving TCP, UDP
//! with an un-allowed peer, unix listeners with the accept verifier, quotas,
//! the gate and the airlock, and unload during a blocked read.

mod common;

use astrid::gate::{AcceptVerdict, GateAnswer};
use astrid::policy::gate::{GateKind, GateRequest, Verdict};
use astrid::runtime::{Outcome, FLAG_ALLOW_LOOPBACK};
use astrid::{Capsule, LoadOptions, Runtime, RuntimeConfig};
use common::*;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream, UdpSocket};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

/// What the gate saw: kind, transport, host, port.
type Asked = (GateKind, Option<&'static str>, Option<String>, u16);

fn net_runtime(flags: u32) -> Runtime {
    Runtime::new(RuntimeConfig {
        timeout: Duration::from_secs(10),
        fuel: u64::MAX / 4,
        memory_limit: 64 << 20,
        unload_grace: Duration::from_secs(2),
        flags,
        ..RuntimeConfig::default()
    })
    .expect("runtime")
}

fn netprobe(rt: &Runtime) -> Capsule {
    rt.load_dir(&capsule_dir("netprobe"), &LoadOptions::default())
        .expect("netprobe")
}

/// A loopback TCP server running `serve` for every connection.
fn tcp_server(serve: impl Fn(TcpStream) + Send + Sync + 'static) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let serve = Arc::new(serve);
    thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let serve = serve.clone();
            thread::spawn(move || serve(stream));
        }
    });
    port
}

fn echo_server() -> u16 {
    tcp_server(|mut s| {
        let mut buf = [0u8; 65536];
        while let Ok(n) = s.read(&mut buf) {
            if n == 0 || s.write_all(&buf[..n]).is_err() {
                break;
            }
        }
    })
}

fn hold_server() -> u16 {
    tcp_server(|s| {
        thread::sleep(Duration::from_secs(30));
        drop(s);
    })
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn tcp_echo_framed_partial_and_peek() {
    let rt = net_runtime(FLAG_ALLOW_LOOPBACK);
    let c = netprobe(&rt);
    let echo = echo_server().to_string();
    assert_eq!(
        ok(&c, "tcp-echo", &["127.0.0.1", &echo, "hello astrid"]),
        "hello astrid"
    );
    assert_eq!(
        ok(&c, "tcp-echo", &["localhost", &echo, "by name"]),
        "by name"
    );
    assert_eq!(
        ok(&c, "tcp-framed", &["127.0.0.1", &echo, "one frame"]),
        "one frame"
    );
    let greeter = tcp_server(|mut s| {
        s.write_all(b"hello world").unwrap();
        thread::sleep(Duration::from_millis(500));
    })
    .to_string();
    assert_eq!(
        ok(&c, "tcp-partial", &["127.0.0.1", &greeter]),
        "hello| world"
    );
    assert_eq!(
        ok(&c, "tcp-peek", &["127.0.0.1", &greeter]),
        "hello|hello world"
    );
    // A frame header split across writes is still one frame.
    let dribbler = tcp_server(|mut s| {
        let mut req = [0u8; 64];
        let _ = s.read(&mut req);
        s.write_all(&[0, 0]).unwrap();
        thread::sleep(Duration::from_millis(120));
        s.write_all(&[0, 5]).unwrap();
        thread::sleep(Duration::from_millis(30));
        s.write_all(b"split").unwrap();
        thread::sleep(Duration::from_millis(300));
    })
    .to_string();
    assert_eq!(
        ok(&c, "tcp-framed", &["127.0.0.1", &dribbler, "go"]),
        "split"
    );
}

#[test]
fn timeouts_shutdown_and_options() {
    let rt = net_runtime(FLAG_ALLOW_LOOPBACK);
    let c = netprobe(&rt);
    let hold = hold_server().to_string();
    let started = Instant::now();
    assert_eq!(
        ok(&c, "tcp-timeout", &["127.0.0.1", &hold, "150"]),
        "timeout"
    );
    assert!(started.elapsed() >= Duration::from_millis(150));
    assert_eq!(
        ok(&c, "tcp-timeout", &["127.0.0.1", &hold, "0"]),
        "would-block"
    );
    // The server answers only once it saw the end of our stream.
    let after_eof = tcp_server(|mut s| {
        let mut got = Vec::new();
        s.read_to_end(&mut got).unwrap();
        s.write_all(format!("got:{}", String::from_utf8_lossy(&got)).as_bytes())
            .unwrap();
    })
    .to_string();
    assert_eq!(
        ok(&c, "tcp-shutdown", &["127.0.0.1", &after_eof]),
        "got:bye"
    );
    let options = ok(&c, "tcp-options", &["127.0.0.1", &hold]);
    for expected in [
        "nodelay=Ok(true)",
        "keepalive=Ok(Some(30))",
        "linger=Ok(Some(1000))",
        "reuseaddr=Ok(true)",
        "hop=Ok(32)",
        "rt=Ok(Some(7))",
    ] {
        assert!(options.contains(expected), "{expected} in {options}");
    }
}

#[test]
fn io_views_and_readiness() {
    let rt = net_runtime(FLAG_ALLOW_LOOPBACK);
    let c = netprobe(&rt);
    let echo = echo_server().to_string();
    let big = "x".repeat(10_000);
    assert_eq!(
        ok(&c, "tcp-streams", &["127.0.0.1", &echo, &big]),
        format!("{big}|second=closed")
    );
    let greeter = tcp_server(|mut s| {
        thread::sleep(Duration::from_millis(100));
        s.write_all(b"late").unwrap();
        thread::sleep(Duration::from_millis(500));
    })
    .to_string();
    assert_eq!(
        ok(&c, "tcp-readable", &["127.0.0.1", &greeter]),
        "polled|late"
    );
}

#[test]
fn a_capsule_serves_tcp_on_loopback() {
    let rt = net_runtime(FLAG_ALLOW_LOOPBACK);
    let c = Arc::new(netprobe(&rt));
    let port = free_port();
    let server = {
        let c = c.clone();
        thread::spawn(move || ok(&c, "tcp-serve", &[&port.to_string()]))
    };
    let mut client = loop {
        match TcpStream::connect(("127.0.0.1", port)) {
            Ok(s) => break s,
            Err(_) => thread::sleep(Duration::from_millis(10)),
        }
    };
    client.write_all(b"ping").unwrap();
    let mut reply = [0u8; 9];
    client.read_exact(&mut reply).unwrap();
    assert_eq!(&reply, b"echo:ping");
    drop(client);
    assert_eq!(server.join().unwrap(), "served:ping");
    assert_eq!(
        ok(&c, "tcp-serve-poll", &[&free_port().to_string(), "50"]),
        "none"
    );
    assert!(ok(&c, "listen-local-addr", &[]).starts_with("127.0.0.1:"));
    // Not loopback and no ALLOW_ANY_BIND: refused by the airlock.
    assert_eq!(err(&c, "bind", &["0.0.0.0", "0"]), "airlock-rejected");
}

#[test]
fn udp_echo_and_an_unallowed_peer_is_not_delivered() {
    let rt = net_runtime(FLAG_ALLOW_LOOPBACK);
    let c = netprobe(&rt);
    let server = UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = server.local_addr().unwrap().port().to_string();
    let stranger = UdpSocket::bind("127.0.0.1:0").unwrap();
    thread::spawn(move || {
        let mut buf = [0u8; 2048];
        for _ in 0..3 {
            let Ok((n, peer)) = server.recv_from(&mut buf) else {
                return;
            };
            // Someone the capsule never talked to writes first.
            stranger.send_to(b"stranger", peer).unwrap();
            thread::sleep(Duration::from_millis(20));
            server.send_to(&buf[..n], peer).unwrap();
        }
    });
    assert_eq!(
        ok(&c, "udp-echo", &["127.0.0.1", &port, "dgram"]),
        "dgram|127.0.0.1"
    );
    assert_eq!(
        ok(&c, "udp-first", &["127.0.0.1", &port, "again"]),
        "again|none"
    );
    let connected = ok(&c, "udp-connected", &["127.0.0.1", &port, "conn"]);
    assert!(
        connected.starts_with("before=address-not-available,peer=Some("),
        "{connected}"
    );
    assert!(connected.ends_with("got=conn"), "{connected}");
    assert_eq!(ok(&c, "udp-big", &["127.0.0.1", &port]), "big=quota,max=ok");
    assert_eq!(ok(&c, "udp-timeout0", &[]), "would-block");
}

#[test]
fn quotas_per_capsule() {
    let rt = net_runtime(FLAG_ALLOW_LOOPBACK);
    let c = netprobe(&rt);
    let hold = hold_server().to_string();
    assert_eq!(
        ok(&c, "stream-quota", &["127.0.0.1", &hold, "9"]),
        "8 then quota"
    );
    assert_eq!(ok(&c, "listener-quota", &["5"]), "4 then quota");
    assert_eq!(ok(&c, "udp-quota", &["5"]), "4 then quota");
    // Everything was released when those calls ended.
    assert_eq!(ok(&c, "stream-quota", &["127.0.0.1", &hold, "8"]), "8");
    // A guest that hides streams in a static past its call finds them
    // closed, and they no longer count against the quota.
    assert_eq!(ok(&c, "keep", &["127.0.0.1", &hold, "8"]), "kept 8");
    assert_eq!(ok(&c, "kept-read", &[]), "closed");
    assert_eq!(ok(&c, "stream-quota", &["127.0.0.1", &hold, "8"]), "8");
}

#[test]
fn the_airlock_refuses_private_addresses_without_the_flag() {
    let rt = net_runtime(0);
    let c = netprobe(&rt);
    let echo = echo_server().to_string();
    for host in [
        "127.0.0.1",
        "localhost",
        "::ffff:127.0.0.1",
        "10.1.2.3",
        "169.254.169.254",
    ] {
        assert_eq!(
            err(&c, "connect", &[host, &echo]),
            "airlock-rejected",
            "{host}"
        );
    }
    assert_eq!(err(&c, "lookup", &["localhost"]), "airlock-rejected");
    assert_eq!(
        err(&c, "udp-echo", &["127.0.0.1", &echo, "x"]),
        "airlock-rejected"
    );
    // Link-local and metadata stay closed even with loopback allowed.
    let open = net_runtime(FLAG_ALLOW_LOOPBACK);
    let c = netprobe(&open);
    assert_eq!(
        err(&c, "connect", &["169.254.169.254", "80"]),
        "airlock-rejected"
    );
    assert!(ok(&c, "lookup", &["localhost"]).contains("127.0.0.1"));
    assert_eq!(
        err(&c, "lookup", &["no-such-host.invalid"]),
        "name-unresolvable"
    );
    // Brackets around an IPv6 literal are read like URLs read them.
    assert_eq!(
        err(&c, "connect", &["[::1]", &echo]),
        err(&c, "connect", &["::1", &echo])
    );
    assert_eq!(err(&c, "connect", &["[::1", &echo]), "name-unresolvable");
}

#[test]
fn the_gate_decides_within_the_manifest_and_every_call_is_audited() {
    let rt = net_runtime(FLAG_ALLOW_LOOPBACK);
    let asked: Arc<Mutex<Vec<Asked>>> = Arc::default();
    {
        let asked = asked.clone();
        rt.set_gate(Some(Arc::new(move |r: &GateRequest, _: &_| {
            asked
                .lock()
                .unwrap()
                .push((r.kind, r.transport, r.host.clone(), r.port));
            if r.port == 9 {
                GateAnswer::Decided(Verdict::deny("port 9 is closed"))
            } else {
                GateAnswer::Decided(Verdict::allow())
            }
        })))
        .unwrap();
    }
    let events = collect_audit(&rt);
    let c = netprobe(&rt);
    let echo = echo_server();
    assert_eq!(
        ok(&c, "tcp-echo", &["127.0.0.1", &echo.to_string(), "x"]),
        "x"
    );
    assert_eq!(err(&c, "connect", &["127.0.0.1", "9"]), "capability-denied");
    ok(&c, "lookup", &["localhost"]);
    let asked = asked.lock().unwrap().clone();
    assert!(asked.contains(&(
        GateKind::NetConnect,
        Some("tcp"),
        Some("127.0.0.1".into()),
        echo
    )));
    assert!(asked.contains(&(GateKind::DnsLookup, None, Some("localhost".into()), 0)));
    drop(c);
    drop(rt); // drains the audit queue
    let events = events.lock().unwrap();
    let denied = events
        .iter()
        .find(|e| e.call == "net.connect-tcp" && e.outcome == Outcome::Denied)
        .expect("denied connect audited");
    assert_eq!(denied.target.as_deref(), Some("127.0.0.1:9"));
    assert!(denied
        .reason
        .as_deref()
        .unwrap()
        .contains("port 9 is closed"));
    // `bytes` counts the payload in and out.
    for call in ["net.tcp-stream.write-bytes", "net.tcp-stream.read-bytes"] {
        assert!(
            events.iter().any(|e| e.call == call && e.bytes == 1),
            "{call} with one byte"
        );
    }
    for call in [
        "net.tcp-stream.write-bytes",
        "net.tcp-stream.read-bytes",
        "net.lookup-host",
    ] {
        assert!(
            events
                .iter()
                .any(|e| e.call == call && e.outcome == Outcome::Allowed),
            "{call}"
        );
    }
}

#[test]
fn unix_listener_with_the_accept_verifier() {
    let rt = net_runtime(FLAG_ALLOW_LOOPBACK);
    let seen = Arc::new(Mutex::new(0u32));
    {
        let seen = seen.clone();
        rt.set_accept_verifier(Some(Arc::new(
            move |r: &astrid::gate::AcceptRequest<'_>| {
                assert_eq!(r.capsule, "netprobe");
                let mut n = seen.lock().unwrap();
                *n += 1;
                if *n == 1 {
                    AcceptVerdict::Refuse
                } else {
                    AcceptVerdict::Allow {
                        principal: Some("alice".into()),
                    }
                }
            },
        )))
        .unwrap();
    }
    let dir = tempdir("unix");
    let path = dir.join("netprobe.sock");
    let options = LoadOptions {
        principal: Some("owner-1".into()),
        unix_socket_path: Some(path.clone()),
        ..LoadOptions::default()
    };
    let c = Arc::new(rt.load_dir(&capsule_dir("netprobe"), &options).unwrap());
    let server = {
        let c = c.clone();
        thread::spawn(move || ok(&c, "unix-serve", &["5000"]))
    };
    let connect = || loop {
        match std::os::unix::net::UnixStream::connect(&path) {
            Ok(s) => break s,
            Err(_) => thread::sleep(Duration::from_millis(10)),
        }
    };
    // Refused by the verifier: closed without a byte.
    let mut refused = connect();
    refused.write_all(b"nope").ok();
    let mut buf = Vec::new();
    refused
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    assert_eq!(refused.read_to_end(&mut buf).unwrap_or(0), 0);
    let mut admitted = connect();
    admitted.write_all(b"yes").unwrap();
    let mut reply = [0u8; 2];
    admitted.read_exact(&mut reply).unwrap();
    assert_eq!(&reply, b"hi");
    assert_eq!(
        server.join().unwrap(),
        "got:yes|principal=alice|owner=owner-1"
    );
    assert_eq!(ok(&c, "unix-bind-twice", &[]), "address-in-use");
    // Without an assigned path there is nothing to bind.
    let plain = netprobe(&rt);
    assert_eq!(err(&plain, "unix-serve", &["10"]), "address-not-available");
}

#[test]
fn unload_wakes_a_blocked_read_promptly() {
    let rt = net_runtime(FLAG_ALLOW_LOOPBACK);
    let c = Arc::new(netprobe(&rt));
    let hold = hold_server().to_string();
    let reader = {
        let c = c.clone();
        thread::spawn(move || {
            c.call(
                "tcp-read-forever",
                format!("127.0.0.1\n{hold}").as_bytes(),
                None,
            )
        })
    };
    unload_ends_the_blocked_call(&c, reader);
}

#[test]
fn a_udp_send_to_a_new_destination_is_one_audit_event() {
    let rt = net_runtime(FLAG_ALLOW_LOOPBACK);
    let events = collect_audit(&rt);
    let c = netprobe(&rt);
    let server = UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = server.local_addr().unwrap().port().to_string();
    thread::spawn(move || {
        let mut buf = [0u8; 64];
        if let Ok((n, peer)) = server.recv_from(&mut buf) {
            server.send_to(&buf[..n], peer).unwrap();
        }
    });
    assert_eq!(
        ok(&c, "udp-echo", &["127.0.0.1", &port, "once"]),
        "once|127.0.0.1"
    );
    drop(c);
    drop(rt); // drains the audit queue
    let events = events.lock().unwrap();
    let sends: Vec<_> = events
        .iter()
        .filter(|e| e.call == "net.udp-socket.send-to")
        .collect();
    assert_eq!(sends.len(), 1, "{sends:?}");
    assert_eq!(sends[0].outcome, Outcome::Allowed);
    assert_eq!(
        sends[0].target.as_deref(),
        Some(format!("127.0.0.1:{port}").as_str())
    );
}

/// A gate that records what it was asked and allows everything.
fn recording_gate(rt: &Runtime) -> Arc<Mutex<Vec<Asked>>> {
    let asked: Arc<Mutex<Vec<Asked>>> = Arc::default();
    let seen = asked.clone();
    rt.set_gate(Some(Arc::new(move |r: &GateRequest, _: &_| {
        seen.lock()
            .unwrap()
            .push((r.kind, r.transport, r.host.clone(), r.port));
        GateAnswer::Decided(Verdict::allow())
    })))
    .unwrap();
    asked
}

#[test]
fn every_spelling_of_an_address_reaches_gate_and_audit_canonically() {
    // No ALLOW_LOOPBACK: whatever the spelling, 127.0.0.1 is refused.
    let rt = net_runtime(0);
    let asked = recording_gate(&rt);
    let events = collect_audit(&rt);
    let c = netprobe(&rt);
    let loopback = [
        "127.0.0.1",
        "2130706433",
        "127.1",
        "127.0.1",
        "0x7f000001",
        "0X7F.1",
        "0177.0.0.1",
        "0x7f.0.0.0x1",
        "017700000001",
        "127.0.0.1.",
        "::ffff:127.0.0.1",
        "[::ffff:7f00:1]",
    ];
    for host in loopback {
        assert_eq!(
            err(&c, "connect", &[host, "7"]),
            "airlock-rejected",
            "{host}"
        );
        assert_eq!(err(&c, "lookup", &[host]), "airlock-rejected", "{host}");
        assert_eq!(
            err(&c, "udp-echo", &[host, "7", "x"]),
            "airlock-rejected",
            "{host}"
        );
    }
    for host in ["::1", "[::1]", "0:0:0:0:0:0:0:1", "[0000::0001]"] {
        assert_eq!(
            err(&c, "connect", &[host, "7"]),
            "airlock-rejected",
            "{host}"
        );
        assert_eq!(err(&c, "lookup", &[host]), "airlock-rejected", "{host}");
    }
    assert_eq!(err(&c, "lookup", &["LocalHost."]), "airlock-rejected");
    // Spellings no reading accepts (or that a resolver could read two ways)
    // never reach the gate.
    let before = asked.lock().unwrap().len();
    for host in ["1.2.3.09", "1.2.3.4.5", "fe80::1%lo", "[127.0.0.1]", "a b"] {
        assert_eq!(
            err(&c, "connect", &[host, "7"]),
            "name-unresolvable",
            "{host}"
        );
    }
    assert_eq!(asked.lock().unwrap().len(), before, "the gate is not asked");
    let asked = asked.lock().unwrap().clone();
    let hosts = |kind: GateKind, transport: Option<&str>| -> Vec<String> {
        let mut hosts: Vec<String> = asked
            .iter()
            .filter(|a| a.0 == kind && a.1 == transport)
            .map(|a| a.2.clone().unwrap())
            .collect();
        hosts.dedup();
        hosts
    };
    assert_eq!(
        hosts(GateKind::NetConnect, Some("tcp")),
        ["127.0.0.1", "::1"]
    );
    assert_eq!(hosts(GateKind::NetConnect, Some("udp")), ["127.0.0.1"]);
    assert_eq!(
        hosts(GateKind::DnsLookup, None),
        ["127.0.0.1", "::1", "localhost"]
    );
    assert_eq!(
        asked
            .iter()
            .filter(|a| a.0 == GateKind::NetConnect && a.1 == Some("tcp"))
            .count(),
        loopback.len() + 4,
        "one question per connect"
    );
    drop(c);
    drop(rt);
    let events = events.lock().unwrap();
    let targets = |call: &str| -> Vec<(String, Outcome)> {
        let mut seen: Vec<(String, Outcome)> = events
            .iter()
            .filter(|e| e.call == call)
            .map(|e| (e.target.clone().unwrap_or_default(), e.outcome))
            .collect();
        seen.dedup();
        seen
    };
    let mut connects = vec![
        ("127.0.0.1:7".to_string(), Outcome::Denied),
        ("[::1]:7".to_string(), Outcome::Denied),
    ];
    // Refused spellings are shown as given (they name nothing).
    for shown in [
        "1.2.3.09:7",
        "1.2.3.4.5:7",
        "[fe80::1%lo]:7",
        "[127.0.0.1]:7",
        "a b:7",
    ] {
        connects.push((shown.to_string(), Outcome::Failed));
    }
    assert_eq!(targets("net.connect-tcp"), connects);
    assert_eq!(
        targets("net.lookup-host"),
        [
            ("127.0.0.1".to_string(), Outcome::Denied),
            ("::1".to_string(), Outcome::Denied),
            ("localhost".to_string(), Outcome::Denied),
        ]
    );
    assert_eq!(
        targets("net.udp-socket.send-to"),
        [("127.0.0.1:7".to_string(), Outcome::Denied)]
    );
}
