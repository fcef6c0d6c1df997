//! A capsule written with the published guest SDK (`astrid-sdk` 0.7.2) that
//! uses the SDK's `http` and `net` modules: a buffered HTTP GET, a raw TCP
//! echo, and one connection accepted on the capsule's unix listener with
//! its host-authenticated principal. Run unmodified by the tests.

use astrid_sdk::prelude::*;
use serde::Deserialize;

#[derive(Default)]
pub struct SdkNet;

#[derive(Deserialize)]
pub struct FetchArgs {
    url: String,
}

#[derive(Deserialize)]
pub struct EchoArgs {
    addr: String,
    msg: String,
}

#[derive(Deserialize)]
pub struct ServeArgs {
    timeout_ms: u64,
}

#[capsule]
impl SdkNet {
    /// `http::send` of a GET: status, body text (lossy) and final URL.
    #[astrid::interceptor("fetch")]
    fn fetch(&self, args: FetchArgs) -> Result<serde_json::Value, SysError> {
        let response = http::send(&http::Request::get(args.url))?;
        Ok(serde_json::json!({
            "status": response.status(),
            "body": String::from_utf8_lossy(response.bytes()),
            "final_url": response.final_url(),
        }))
    }

    /// Connects with `net::TcpStream::connect("host:port")`, writes `msg`
    /// with the raw `write_bytes` and reads back as many bytes with the raw
    /// `read_bytes` (no framing).
    #[astrid::interceptor("echo")]
    fn echo(&self, args: EchoArgs) -> Result<serde_json::Value, SysError> {
        let stream = net::TcpStream::connect(&args.addr).map_err(|e| SysError::HostError(e.to_string()))?;
        let msg = args.msg.as_bytes();
        let mut sent = 0;
        while sent < msg.len() {
            sent += stream.write_bytes(&msg[sent..])? as usize;
        }
        let mut got = Vec::new();
        while got.len() < msg.len() {
            let piece = stream.read_bytes((msg.len() - got.len()) as u32)?;
            if piece.is_empty() {
                break;
            }
            got.extend_from_slice(&piece);
        }
        Ok(serde_json::json!({ "echoed": String::from_utf8_lossy(&got) }))
    }

    /// Activates the capsule's unix listener, waits up to `timeout_ms` for a
    /// connection, reads once (up to 4096 bytes) and reports the data with
    /// the connection's principal. Both are null when nothing connected.
    #[astrid::interceptor("serve-unix")]
    fn serve_unix(&self, args: ServeArgs) -> Result<serde_json::Value, SysError> {
        let listener = net::bind_unix()?;
        let Some(conn) = listener.try_accept(args.timeout_ms)? else {
            return Ok(serde_json::json!({ "data": null, "principal": null }));
        };
        let data = conn.read_bytes(4096)?;
        let principal = conn.connection_principal()?;
        Ok(serde_json::json!({
            "data": String::from_utf8_lossy(&data),
            "principal": principal.as_ref().map(|p| p.as_str()),
        }))
    }
}
