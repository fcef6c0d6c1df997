//! Exercises every `astrid:sys` function and reports what it saw, so tests
//! can assert host behaviour from the guest's side. Actions are
//! `name` or `name:argument`; answers are plain text in `data`.

wit_bindgen::generate!({
    world: "example:capsules/sys-interceptor",
    path: ["../../../wit/astrid-sys@1.0.0", "../../../wit/astrid-guest@1.0.0", "../wit"],
    generate_all,
});

use astrid::sys::host::{self as sys, CapabilityCheckRequest, ErrorCode, LogLevel};

struct Probe;

fn code(e: ErrorCode) -> String {
    match e {
        ErrorCode::CapabilityDenied => "capability-denied".into(),
        ErrorCode::ConfigKeyReserved => "config-key-reserved".into(),
        ErrorCode::TooLarge => "too-large".into(),
        ErrorCode::RegistryUnavailable => "registry-unavailable".into(),
        ErrorCode::Cancelled => "cancelled".into(),
        ErrorCode::Unknown(text) => format!("unknown({text})"),
    }
}

fn answer(action: &str, arg: &str) -> String {
    match action {
        "config" => match sys::get_config(arg) {
            Ok(Some(v)) => format!("some:{v}"),
            Ok(None) => "none".into(),
            Err(e) => format!("err:{}", code(e)),
        },
        "caller" => match sys::get_caller() {
            Ok(c) => format!("{}|{}|{}", c.principal.unwrap_or_else(|| "-".into()), c.source_id, c.timestamp),
            Err(e) => format!("err:{}", code(e)),
        },
        "sleep" => match sys::sleep_ns(arg.parse().unwrap_or(0)) {
            Ok(()) => "ok".into(),
            Err(e) => format!("err:{}", code(e)),
        },
        "random" => match sys::random_bytes(arg.parse().unwrap_or(0)) {
            Ok(bytes) => format!("{}:{}", bytes.len(), bytes.iter().any(|&b| b != 0)),
            Err(e) => format!("err:{}", code(e)),
        },
        "caps" => sys::enumerate_capabilities().join(","),
        "check" => {
            let (uuid, capability) = arg.split_once('/').unwrap_or((arg, ""));
            let request = CapabilityCheckRequest {
                source_uuid: uuid.into(),
                capability: capability.into(),
            };
            match sys::check_capsule_capability(&request) {
                Ok(r) => r.allowed.to_string(),
                Err(e) => format!("err:{}", code(e)),
            }
        }
        "clock" => {
            let wall = sys::clock_ms();
            let a = sys::clock_monotonic_ns();
            let b = sys::clock_monotonic_ns();
            format!("{wall}:{}", b >= a)
        }
        "log" => {
            let (level, text) = arg.split_once(':').unwrap_or(("info", arg));
            let level = match level {
                "trace" => LogLevel::Trace,
                "debug" => LogLevel::Debug,
                "warn" => LogLevel::Warn,
                "error" => LogLevel::Error,
                _ => LogLevel::Info,
            };
            sys::log(level, text);
            "logged".into()
        }
        "biglog" => {
            sys::log(LogLevel::Info, &"y".repeat(70 * 1024));
            "logged".into()
        }
        "ready" => {
            sys::signal_ready();
            "ok".into()
        }
        "stderr" => {
            eprintln!("{arg}");
            "ok".into()
        }
        // WASI as astrid links it: nothing to see, nowhere to go.
        "wasi-fs" => match std::fs::read_to_string(if arg.is_empty() { "/etc/passwd" } else { arg }) {
            Ok(text) => format!("read {} bytes", text.len()),
            Err(e) => format!("denied: {}", e.kind()),
        },
        "wasi-net" => match std::net::TcpStream::connect(if arg.is_empty() { "127.0.0.1:9" } else { arg }) {
            Ok(_) => "connected".into(),
            Err(e) => format!("denied: {}", e.kind()),
        },
        "wasi-env" => format!("{}:{}", std::env::vars().count(), std::env::args().count()),
        other => format!("unknown action {other}"),
    }
}

impl Guest for Probe {
    fn astrid_hook_trigger(action: String, _payload: Vec<u8>) -> CapsuleResult {
        let (name, arg) = action.split_once(':').unwrap_or((action.as_str(), ""));
        CapsuleResult {
            action: "final".into(),
            data: Some(answer(name, arg)),
        }
    }
}

export!(Probe);
