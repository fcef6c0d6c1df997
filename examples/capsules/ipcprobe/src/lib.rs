//! Drives `astrid:ipc` and `astrid:io` for the tests (actions named after
//! what they do, arguments as newline-separated payload), and handles the
//! bus messages its manifest binds (`echo`, `append-a`, `report`, ...).
//! Answers `ok` with the result as text, or `err` with the error case.

wit_bindgen::generate!({
    world: "example:ipcprobe/ipc-interceptor",
    path: [
        "../../../wit/astrid-sys@1.0.0",
        "../../../wit/astrid-io@1.0.0",
        "../../../wit/astrid-ipc@1.0.0",
        "../../../wit/astrid-guest@1.0.0",
        "wit",
    ],
    generate_all,
});

use astrid::io::poll;
use astrid::ipc::host::{self as ipc, ErrorCode, IpcEnvelope, PrincipalAttribution};
use astrid::sys::host as sys;

struct IpcProbe;

fn case(e: &ErrorCode) -> String {
    match e {
        ErrorCode::CapabilityDenied => "capability-denied".into(),
        ErrorCode::InvalidInput => "invalid-input".into(),
        ErrorCode::Closed => "closed".into(),
        ErrorCode::RateLimited => "rate-limited".into(),
        ErrorCode::Backpressure => "backpressure".into(),
        ErrorCode::Quota => "quota".into(),
        ErrorCode::Timeout => "timeout".into(),
        ErrorCode::Unknown(t) => format!("unknown({t})"),
    }
}

fn who(p: &PrincipalAttribution) -> String {
    match p {
        PrincipalAttribution::Verified(p) => format!("verified({p})"),
        PrincipalAttribution::Claimed(p) => format!("claimed({p})"),
        PrincipalAttribution::System => "system".into(),
    }
}

/// `topic|payload|principal` per message, then `dropped=N lagged=N`.
fn show(envelope: &IpcEnvelope) -> String {
    let mut parts: Vec<String> = envelope
        .messages
        .iter()
        .map(|m| format!("{}|{}|{}", m.topic, m.payload, who(&m.principal)))
        .collect();
    parts.push(format!("dropped={} lagged={}", envelope.dropped, envelope.lagged));
    parts.join(";")
}

fn run(action: &str, payload: &str) -> Result<String, ErrorCode> {
    let args: Vec<&str> = payload.split('\n').collect();
    let arg = |i: usize| args.get(i).copied().unwrap_or("");
    match action {
        "publish" => ipc::publish(arg(0), arg(1)).map(|()| "ok".into()),
        "publish-as" => ipc::publish_as(arg(0), arg(1), arg(2)).map(|()| "ok".into()),
        "subscribe" => ipc::subscribe(arg(0)).map(|_| "ok".into()),
        // Holds up to `n` live subscriptions: "N" or "N then <error>".
        "subscribe-many" => {
            let n: usize = arg(0).parse().unwrap();
            let mut held = Vec::new();
            for _ in 0..n {
                match ipc::subscribe("probe.many") {
                    Ok(sub) => held.push(sub),
                    Err(e) => return Ok(format!("{} then {}", held.len(), case(&e))),
                }
            }
            Ok(held.len().to_string())
        }
        // Subscribes, publishes `count` messages to the topic, then reads
        // them back with poll: "n messages;dropped=..".
        "roundtrip" => {
            let sub = ipc::subscribe(arg(0))?;
            let count: usize = arg(2).parse().unwrap_or(1);
            for i in 0..count {
                ipc::publish(arg(1), &i.to_string())?;
            }
            let mut seen = Vec::new();
            loop {
                let envelope = sub.poll()?;
                if envelope.messages.is_empty() {
                    seen.push(show(&envelope));
                    return Ok(seen.join(" "));
                }
                seen.push(show(&envelope));
            }
        }
        // Subscribes and waits up to `timeout` ms for one message.
        "recv" => {
            let sub = ipc::subscribe(arg(0))?;
            let timeout: u64 = arg(1).parse().unwrap_or(0);
            sub.recv(timeout).map(|e| show(&e))
        }
        // Subscribes, then waits in io `poll` on its readiness.
        "poll-wait" => {
            let sub = ipc::subscribe(arg(0))?;
            let ready = sub.subscribe_readiness();
            match poll::poll(&[&ready]) {
                Ok(indices) => Ok(format!("{indices:?}")),
                Err(poll::ErrorCode::Cancelled) => Ok("cancelled".into()),
                Err(e) => Ok(format!("poll error {e:?}")),
            }
        }
        // `n` copies of one ready pollable in one `poll`.
        "poll-many" => {
            let n: usize = arg(0).parse().unwrap();
            let sub = ipc::subscribe("probe.many")?;
            ipc::publish("probe.many", "1")?;
            let ready = sub.subscribe_readiness();
            let list: Vec<&poll::Pollable> = (0..n).map(|_| &ready).collect();
            Ok(match poll::poll(&list) {
                Ok(indices) => format!("{} ready, first {:?}, last {:?}", indices.len(), indices.first(), indices.last()),
                Err(e) => format!("poll error {e:?}"),
            })
        }
        "poll-empty" => Ok(format!("{:?}", poll::poll(&[]))),
        "bindings" => ipc::get_interceptor_bindings().map(|bindings| {
            bindings
                .iter()
                .map(|b| format!("{}:{}:{}", b.handle_id, b.action, b.topic))
                .collect::<Vec<_>>()
                .join(",")
        }),
        // Publishes `count` payloads of `size` bytes; reports how many went
        // out and the first error.
        "storm" => {
            let count: usize = arg(1).parse().unwrap();
            let body = format!("\"{}\"", "x".repeat(arg(2).parse::<usize>().unwrap() - 2));
            let mut sent = 0;
            for _ in 0..count {
                match ipc::publish(arg(0), &body) {
                    Ok(()) => sent += 1,
                    Err(e) => return Ok(format!("{sent} then {}", case(&e))),
                }
            }
            Ok(format!("{sent}"))
        }
        // ---- interceptor handlers (payload: the message's JSON text) ----
        "echo" => ipc::publish("out.echo", payload).map(|()| "continue".into()),
        "append-a" => Ok(format!("continue-with:{}", append(payload, "a"))),
        "final" => Ok("final".into()),
        "deny" => Ok("deny".into()),
        "sleep" => {
            let _ = sys::sleep_ns(100_000_000);
            Ok("continue".into())
        }
        "trap" => core::arch::wasm32::unreachable(),
        "report" => ipc::publish("out.report", payload).map(|()| "continue".into()),
        "report-again" => ipc::publish("out.report-again", payload).map(|()| "continue".into()),
        "loop" => {
            // Republishes on loop.in until the depth limit refuses it.
            let depth: u64 = payload.trim_matches('"').parse().unwrap_or(0);
            match ipc::publish("loop.in", &format!("\"{}\"", depth + 1)) {
                Ok(()) => Ok("continue".into()),
                Err(e) => {
                    // Any publish from here is as deep: report through the log.
                    sys::log(sys::LogLevel::Info, &format!("loop at depth {depth}: {}", case(&e)));
                    Ok("continue".into())
                }
            }
        }
        "whoami" => {
            let caller = sys::get_caller().map(|c| c.principal.unwrap_or_else(|| "-".into()));
            let text = format!("\"{}\"", caller.unwrap_or_else(|_| "error".into()));
            ipc::publish("out.who", &text).map(|()| "continue".into())
        }
        other => Ok(format!("unknown action {other}")),
    }
}

/// Appends `suffix` inside a JSON string payload (`"x"` → `"xa"`).
fn append(payload: &str, suffix: &str) -> String {
    match payload.strip_suffix('"') {
        Some(head) => format!("{head}{suffix}\""),
        None => format!("\"{suffix}\""),
    }
}

impl Guest for IpcProbe {
    fn astrid_hook_trigger(action: String, payload: Vec<u8>) -> CapsuleResult {
        // The interceptor the bus benchmark measures: republish the payload
        // as it came, with no parsing or copying (`echo-unheard` publishes
        // where nobody listens, for the benchmark's no-bus row).
        let lean_topic = match action.as_str() {
            "echo" => Some("out.echo"),
            "echo-unheard" => Some("out.unheard"),
            _ => None,
        };
        if let (Some(topic), Ok(text)) = (lean_topic, std::str::from_utf8(&payload)) {
            return match ipc::publish(topic, text) {
                Ok(()) => CapsuleResult { action: "continue".into(), data: None },
                Err(e) => CapsuleResult { action: "err".into(), data: Some(case(&e)) },
            };
        }
        let text = String::from_utf8_lossy(&payload).into_owned();
        match run(&action, &text) {
            Ok(data) if data == "continue" => CapsuleResult { action: "continue".into(), data: None },
            Ok(data) if data == "final" => CapsuleResult { action: "final".into(), data: Some("\"stopped\"".into()) },
            Ok(data) if data == "deny" => CapsuleResult { action: "deny".into(), data: Some("nope".into()) },
            Ok(data) => match data.strip_prefix("continue-with:") {
                Some(next) => CapsuleResult { action: "continue".into(), data: Some(next.into()) },
                None => CapsuleResult { action: "ok".into(), data: Some(data) },
            },
            Err(e) => CapsuleResult { action: "err".into(), data: Some(case(&e)) },
        }
    }
}

export!(IpcProbe);
