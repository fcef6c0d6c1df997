//! Drives `astrid:http@1.0.0` for the tests. Arguments are the payload's
//! lines (separated by `\n`). Answers `ok` with the result as text, or `err`
//! with the error case in kebab-case as the WIT spells it.

wit_bindgen::generate!({
    world: "example:http10probe/http10-interceptor",
    path: [
        "../../../wit/astrid-sys@1.0.0",
        "../../../wit/astrid-io@1.0.0",
        "../../../wit/astrid-http@1.0.0",
        "../../../wit/astrid-guest@1.0.0",
        "wit",
    ],
    generate_all,
});

use astrid::http::host::{self as http, ErrorCode};

struct Http10Probe;

fn case(e: &ErrorCode) -> String {
    match e {
        ErrorCode::CapabilityDenied => "capability-denied".into(),
        ErrorCode::InvalidRequest => "invalid-request".into(),
        ErrorCode::DnsError => "dns-error".into(),
        ErrorCode::AirlockRejected => "airlock-rejected".into(),
        ErrorCode::TlsError => "tls-error".into(),
        ErrorCode::Timeout => "timeout".into(),
        ErrorCode::ConnectionError => "connection-error".into(),
        ErrorCode::BodyTooLarge => "body-too-large".into(),
        ErrorCode::Closed => "closed".into(),
        ErrorCode::Quota => "quota".into(),
        ErrorCode::Protocol(t) => format!("protocol({t})"),
        ErrorCode::Unknown(t) => format!("unknown({t})"),
    }
}

fn run(action: &str, payload: &str) -> Result<String, String> {
    let args: Vec<&str> = payload.split('\n').collect();
    let arg = |i: usize| args.get(i).copied().unwrap_or("");
    match action {
        // Buffered GET: "status|body" (body as lossy UTF-8).
        "get" => {
            let request = http::HttpRequestData {
                url: arg(0).to_string(),
                method: http::HttpMethod::Get,
                headers: Vec::new(),
                body: None,
            };
            let response = http::http_request(&request).map_err(|e| case(&e))?;
            Ok(format!("{}|{}", response.status, String::from_utf8_lossy(&response.body)))
        }
        other => Err(format!("unknown-action({other})")),
    }
}

impl Guest for Http10Probe {
    fn astrid_hook_trigger(action: String, payload: Vec<u8>) -> CapsuleResult {
        let payload = String::from_utf8_lossy(&payload).into_owned();
        match run(&action, &payload) {
            Ok(data) => CapsuleResult { action: "ok".into(), data: Some(data) },
            Err(case) => CapsuleResult { action: "err".into(), data: Some(case) },
        }
    }
}

export!(Http10Probe);
