//! A run-loop service for the tests. In `echo` mode it subscribes to
//! `svc.in`, signals ready, and republishes every message on `svc.out`
//! with the principal it ran as; `poll-echo` does the same waiting in io
//! `poll`. The other modes misbehave on purpose: `return` returns from
//! `run`, `trap` traps, `spin` loops without ever waiting (the watchdog's
//! case), `late-ready` never signals ready.

wit_bindgen::generate!({
    world: "example:runloop/service",
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
use astrid::ipc::host as ipc;
use astrid::sys::host as sys;

struct Service;

fn echo_loop(use_poll: bool) {
    let sub = ipc::subscribe("svc.in").expect("subscribe");
    let bindings = ipc::get_interceptor_bindings().map(|b| b.len()).unwrap_or(0);
    sys::log(sys::LogLevel::Info, &format!("service ready with {bindings} binding(s)"));
    sys::signal_ready();
    loop {
        let envelope = if use_poll {
            let ready = sub.subscribe_readiness();
            if poll::poll(&[&ready]).is_err() {
                return;
            }
            sub.poll()
        } else {
            sub.recv(60_000)
        };
        let Ok(envelope) = envelope else {
            return; // closed: the capsule is being unloaded
        };
        for message in envelope.messages {
            let caller = sys::get_caller()
                .ok()
                .and_then(|c| c.principal)
                .unwrap_or_else(|| "-".into());
            let reply = format!("{{\"echo\":{},\"as\":\"{caller}\"}}", message.payload);
            let _ = ipc::publish("svc.out", &reply);
        }
    }
}

impl Guest for Service {
    fn run() {
        match sys::get_config("MODE").ok().flatten().as_deref() {
            Some("return") => {}
            Some("trap") => core::arch::wasm32::unreachable(),
            Some("spin") => {
                sys::signal_ready();
                let mut n: u64 = 0;
                loop {
                    n = n.wrapping_add(1);
                    core::hint::black_box(n);
                }
            }
            Some("late-ready") => loop {
                let _ = sys::sleep_ns(50_000_000);
            },
            Some("poll-echo") => echo_loop(true),
            _ => echo_loop(false),
        }
    }

    fn astrid_hook_trigger(action: String, _payload: Vec<u8>) -> CapsuleResult {
        CapsuleResult { action: "ok".into(), data: Some(format!("direct call {action}")) }
    }
}

export!(Service);
