//! The sample capsule: answers `greet` with a greeting built from the
//! payload, its configuration and `astrid:sys` calls; `echo` returns the
//! payload; `noop` does nothing (used by the benchmarks).

wit_bindgen::generate!({
    world: "example:capsules/sys-interceptor",
    path: ["../../../wit/astrid-sys@1.0.0", "../../../wit/astrid-guest@1.0.0", "../wit"],
    generate_all,
});

use astrid::sys::host::{self as sys, LogLevel};

struct Hello;

/// Pulls `"name": "..."` out of a small JSON object without a JSON library.
fn name_from(payload: &str) -> Option<String> {
    let at = payload.find("\"name\"")?;
    let rest = payload[at + 6..].trim_start().strip_prefix(':')?.trim_start().strip_prefix('"')?;
    Some(rest[..rest.find('"')?].to_string())
}

fn json_string(text: &str) -> String {
    let mut out = String::from("\"");
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

impl Guest for Hello {
    fn astrid_hook_trigger(action: String, payload: Vec<u8>) -> CapsuleResult {
        match action.as_str() {
            "greet" => {
                let text = String::from_utf8_lossy(&payload);
                let name = name_from(&text).unwrap_or_else(|| "world".to_string());
                let greeting = sys::get_config("GREETING").ok().flatten().unwrap_or_else(|| "Hello".into());
                let caller = sys::get_caller().ok().and_then(|c| c.principal).unwrap_or_else(|| "nobody".into());
                let now = sys::clock_ms();
                let nonce = sys::random_bytes(4).unwrap_or_default();
                sys::log(LogLevel::Info, &format!("greeting {name} on behalf of {caller}"));
                println!("hello capsule wrote this line to stdout");
                let message = format!("{greeting}, {name}!");
                CapsuleResult {
                    action: "final".into(),
                    data: Some(format!(
                        "{{\"message\":{},\"principal\":{},\"clock_ms\":{now},\"nonce_bytes\":{}}}",
                        json_string(&message),
                        json_string(&caller),
                        nonce.len()
                    )),
                }
            }
            "echo" => CapsuleResult {
                action: "continue".into(),
                data: Some(String::from_utf8_lossy(&payload).into_owned()),
            },
            "echo-len" => CapsuleResult {
                action: "continue".into(),
                data: Some(payload.len().to_string()),
            },
            "noop" => CapsuleResult {
                action: "continue".into(),
                data: None,
            },
            other => {
                sys::log(LogLevel::Warn, &format!("unknown action {other}"));
                CapsuleResult {
                    action: "deny".into(),
                    data: Some(format!("unknown action {}", json_string(other))),
                }
            }
        }
    }
}

export!(Hello);
