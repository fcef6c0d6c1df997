//! Drives `astrid:net`, `astrid:http@1.1.0`, `astrid:request-context` and
//! `astrid:io` for the tests (`astrid:http@1.0.0` is driven by `http10probe`:
//! wit-component merges semver-compatible imports, so a world importing both
//! http versions would come out with only the 1.1 import). Each action runs one whole scenario in one
//! call (sockets close when the call ends); its arguments are the payload's
//! lines (separated by `\n`). Answers `ok` with the result as text, or `err`
//! with the failing call's error case in kebab-case as the WIT spells it
//! (`capability-denied`, `unknown(text)`, ...).

wit_bindgen::generate!({
    world: "example:netprobe/net-interceptor",
    path: [
        "../../../wit/astrid-sys@1.0.0",
        "../../../wit/astrid-io@1.0.0",
        "../../../wit/astrid-net@1.0.0",
        "../../../wit/astrid-request-context@1.0.0",
        "../../../wit/astrid-http@1.1.0",
        "../../../wit/astrid-guest@1.0.0",
        "wit",
    ],
    generate_all,
});

use astrid::http::host as h11;
use astrid::io::poll;
use astrid::io::streams::StreamError;
use astrid::net::host::{self as net, ErrorCode, NetReadStatus, ShutdownHow, TcpStream};
use astrid::request_context::host as rc;

struct NetProbe;

thread_local! {
    /// Streams the `keep` action holds across calls.
    static KEPT: std::cell::RefCell<Vec<TcpStream>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// A failed step: the text answered with `err`.
struct Fail(String);

fn net_case(e: &ErrorCode) -> String {
    match e {
        ErrorCode::WouldBlock => "would-block".into(),
        ErrorCode::Closed => "closed".into(),
        ErrorCode::CapabilityDenied => "capability-denied".into(),
        ErrorCode::AirlockRejected => "airlock-rejected".into(),
        ErrorCode::ConnectionRefused => "connection-refused".into(),
        ErrorCode::ConnectionReset => "connection-reset".into(),
        ErrorCode::Timeout => "timeout".into(),
        ErrorCode::AddressInUse => "address-in-use".into(),
        ErrorCode::AddressNotAvailable => "address-not-available".into(),
        ErrorCode::NameUnresolvable => "name-unresolvable".into(),
        ErrorCode::InvalidHandle => "invalid-handle".into(),
        ErrorCode::NotTcp => "not-tcp".into(),
        ErrorCode::Quota => "quota".into(),
        ErrorCode::Unknown(t) => format!("unknown({t})"),
    }
}

fn h11_case(e: &h11::ErrorCode) -> String {
    use h11::ErrorCode as E;
    match e {
        E::CapabilityDenied => "capability-denied".into(),
        E::InvalidRequest => "invalid-request".into(),
        E::DnsError => "dns-error".into(),
        E::AirlockRejected => "airlock-rejected".into(),
        E::TlsError => "tls-error".into(),
        E::Timeout => "timeout".into(),
        E::ConnectionError => "connection-error".into(),
        E::BodyTooLarge => "body-too-large".into(),
        E::Closed => "closed".into(),
        E::Quota => "quota".into(),
        E::RedirectBlocked => "redirect-blocked".into(),
        E::TooManyRedirects => "too-many-redirects".into(),
        E::IntegrityMismatch => "integrity-mismatch".into(),
        E::SchemeDenied => "scheme-denied".into(),
        E::DecompressionBomb => "decompression-bomb".into(),
        E::Protocol(t) => format!("protocol({t})"),
        E::Unknown(t) => format!("unknown({t})"),
    }
}

fn poll_case(e: &poll::ErrorCode) -> String {
    use poll::ErrorCode as E;
    match e {
        E::InvalidInput => "invalid-input".into(),
        E::Closed => "closed".into(),
        E::TooLarge => "too-large".into(),
        E::Cancelled => "cancelled".into(),
        E::Unknown(t) => format!("unknown({t})"),
    }
}

fn stream_case(e: &StreamError) -> String {
    match e {
        StreamError::Closed => "closed".into(),
        StreamError::LastOperationFailed(err) => format!("last-operation-failed({})", err.to_debug_string()),
    }
}

impl From<ErrorCode> for Fail {
    fn from(e: ErrorCode) -> Self {
        Fail(net_case(&e))
    }
}
impl From<h11::ErrorCode> for Fail {
    fn from(e: h11::ErrorCode) -> Self {
        Fail(h11_case(&e))
    }
}
impl From<poll::ErrorCode> for Fail {
    fn from(e: poll::ErrorCode) -> Self {
        Fail(poll_case(&e))
    }
}
impl From<StreamError> for Fail {
    fn from(e: StreamError) -> Self {
        Fail(stream_case(&e))
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn num<T: core::str::FromStr>(what: &str, s: &str) -> Result<T, Fail> {
    s.trim().parse().map_err(|_| Fail(format!("bad-argument({what}={s})")))
}

/// `Ok(value)` with Debug of the value, `Err(case)` with the case name.
fn show<T: core::fmt::Debug>(r: Result<T, ErrorCode>) -> String {
    match r {
        Ok(v) => format!("Ok({v:?})"),
        Err(e) => format!("Err({})", net_case(&e)),
    }
}

/// Writes all of `data` with `write-bytes`.
fn write_all(s: &TcpStream, data: &[u8]) -> Result<(), Fail> {
    let mut off = 0;
    while off < data.len() {
        let n = s.write_bytes(&data[off..])? as usize;
        if n == 0 {
            return Err(Fail("write-bytes-returned-zero".into()));
        }
        off += n;
    }
    Ok(())
}

/// Reads with `read-bytes` until `n` bytes arrived or the stream ended.
fn read_n(s: &TcpStream, n: usize) -> Result<Vec<u8>, Fail> {
    let mut got = Vec::new();
    while got.len() < n {
        let want = u32::try_from(n - got.len()).unwrap_or(u32::MAX);
        let b = s.read_bytes(want)?;
        if b.is_empty() {
            break;
        }
        got.extend_from_slice(&b);
    }
    Ok(got)
}

/// Reads with `read-bytes(100)` until end of stream.
fn read_to_end(s: &TcpStream) -> Result<Vec<u8>, Fail> {
    let mut got = Vec::new();
    loop {
        let b = s.read_bytes(100)?;
        if b.is_empty() {
            return Ok(got);
        }
        got.extend_from_slice(&b);
    }
}

/// Holds up to `n` resources made by `make`: "N", or "K then <case>" at the
/// first failure.
fn quota<T, E>(n: usize, mut make: impl FnMut() -> Result<T, E>, case: impl Fn(&E) -> String) -> String {
    let mut held = Vec::new();
    for _ in 0..n {
        match make() {
            Ok(r) => held.push(r),
            Err(e) => return format!("{} then {}", held.len(), case(&e)),
        }
    }
    held.len().to_string()
}

/// Parses an options line `key=value;key=value` into 1.1 request options.
fn parse_opts(line: &str) -> Result<h11::RequestOptions, Fail> {
    let mut o = h11::RequestOptions {
        timeouts: None,
        redirect: None,
        max_redirects: None,
        max_response_bytes: None,
        max_decompressed_bytes: None,
        auto_decompress: None,
        https_only: None,
        integrity: None,
    };
    let mut t = h11::TimeoutConfig { connect_ms: None, first_byte_ms: None, between_bytes_ms: None, total_ms: None };
    let mut any_timeout = false;
    for part in line.split(';').map(str::trim).filter(|p| !p.is_empty()) {
        let (key, value) = part.split_once('=').ok_or_else(|| Fail(format!("bad-option({part})")))?;
        let (key, value) = (key.trim(), value.trim());
        let flag = |v: &str| match v {
            "true" => Ok(true),
            "false" => Ok(false),
            _ => Err(Fail(format!("bad-option({part})"))),
        };
        match key {
            "redirect" => {
                o.redirect = Some(match value {
                    "follow" => h11::RedirectPolicy::Follow,
                    "error" => h11::RedirectPolicy::Error,
                    "manual" => h11::RedirectPolicy::Manual,
                    _ => return Err(Fail(format!("bad-option({part})"))),
                })
            }
            "max-redirects" => o.max_redirects = Some(num(key, value)?),
            "max-response" => o.max_response_bytes = Some(num(key, value)?),
            "max-decompressed" => o.max_decompressed_bytes = Some(num(key, value)?),
            "auto-decompress" => o.auto_decompress = Some(flag(value)?),
            "https-only" => o.https_only = Some(flag(value)?),
            "integrity" => o.integrity = Some(value.to_string()),
            "connect-ms" => (t.connect_ms, any_timeout) = (Some(num(key, value)?), true),
            "first-byte-ms" => (t.first_byte_ms, any_timeout) = (Some(num(key, value)?), true),
            "between-ms" => (t.between_bytes_ms, any_timeout) = (Some(num(key, value)?), true),
            "total-ms" => (t.total_ms, any_timeout) = (Some(num(key, value)?), true),
            _ => return Err(Fail(format!("bad-option({part})"))),
        }
    }
    if any_timeout {
        o.timeouts = Some(t);
    }
    Ok(o)
}

fn request(url: &str, method: h11::HttpMethod, headers: &[(&str, &str)], body: Option<Vec<u8>>) -> h11::HttpRequestData {
    h11::HttpRequestData {
        url: url.to_string(),
        method,
        headers: headers
            .iter()
            .map(|(k, v)| h11::KeyValuePair { key: k.to_string(), value: v.to_string() })
            .collect(),
        body,
    }
}

/// Buffered 1.1 request: the `-opts` function when an options line is given.
fn send(req: &h11::HttpRequestData, opts: Option<&str>) -> Result<h11::HttpResponseData, Fail> {
    Ok(match opts {
        Some(line) => h11::http_request_opts(req, &parse_opts(line)?)?,
        None => h11::http_request(req)?,
    })
}

fn start(req: &h11::HttpRequestData, opts: Option<&str>) -> Result<h11::HttpStream, Fail> {
    Ok(match opts {
        Some(line) => h11::http_stream_start_opts(req, &parse_opts(line)?)?,
        None => h11::http_stream_start(req)?,
    })
}

fn run(action: &str, payload: &str) -> Result<String, Fail> {
    let args: Vec<&str> = payload.split('\n').collect();
    let arg = |i: usize| args.get(i).copied().unwrap_or("");
    // An optional line: present (even empty) when the payload has it.
    let opt = |i: usize| args.get(i).copied();
    let port = |i: usize| num::<u16>("port", arg(i));
    let count = |i: usize| num::<usize>("n", arg(i));
    match action {
        // ---------------- TCP client ----------------
        "connect" => {
            let _s = net::connect_tcp(arg(0), port(1)?)?;
            Ok("ok".into())
        }
        // A hostile habit: keeping sockets past the call in a static.
        "keep" => {
            let n: usize = num("n", arg(2))?;
            for _ in 0..n {
                let s = net::connect_tcp(arg(0), port(1)?)?;
                KEPT.with(|kept| kept.borrow_mut().push(s));
            }
            Ok(format!("kept {n}"))
        }
        "kept-read" => KEPT.with(|kept| match kept.borrow().first() {
            None => Ok("none kept".into()),
            Some(s) => Ok(match s.read_bytes(1) {
                Ok(bytes) => format!("read {}", bytes.len()),
                Err(e) => net_case(&e),
            }),
        }),
        // Benchmarks (benches/net.rs): `n` round trips of `size` bytes on one
        // connection; `bytes` echoed through in 64 KiB pieces; `n` GETs.
        "bench-rtt" => {
            let s = net::connect_tcp(arg(0), port(1)?)?;
            s.set_nodelay(true)?;
            let n: usize = num("n", arg(2))?;
            let msg = vec![7u8; num::<usize>("size", arg(3))?];
            for _ in 0..n {
                write_all(&s, &msg)?;
                read_n(&s, msg.len())?;
            }
            Ok(n.to_string())
        }
        "bench-bulk" => {
            let s = net::connect_tcp(arg(0), port(1)?)?;
            let total: usize = num("bytes", arg(2))?;
            let piece = vec![7u8; 64 << 10];
            let mut moved = 0;
            while moved < total {
                let n = piece.len().min(total - moved);
                write_all(&s, &piece[..n])?;
                moved += read_n(&s, n)?.len();
            }
            Ok(moved.to_string())
        }
        "bench-http" => {
            let req = request(arg(0), h11::HttpMethod::Get, &[], None);
            let n: usize = num("n", arg(1))?;
            let mut bytes = 0;
            for _ in 0..n {
                bytes += h11::http_request(&req)?.body.len();
            }
            Ok(bytes.to_string())
        }
        "tcp-echo" => {
            let s = net::connect_tcp(arg(0), port(1)?)?;
            let msg = arg(2).as_bytes();
            write_all(&s, msg)?;
            Ok(text(&read_n(&s, msg.len())?))
        }
        "tcp-framed" => {
            let s = net::connect_tcp(arg(0), port(1)?)?;
            s.write(arg(2).as_bytes())?;
            for _ in 0..100 {
                match s.read()? {
                    NetReadStatus::Data(d) => return Ok(text(&d)),
                    NetReadStatus::Closed => return Ok("closed".into()),
                    NetReadStatus::Pending => {}
                }
            }
            Ok("pending".into())
        }
        "tcp-partial" => {
            let s = net::connect_tcp(arg(0), port(1)?)?;
            let a = s.read_bytes(5)?;
            let b = s.read_bytes(100)?;
            Ok(format!("{}|{}", text(&a), text(&b)))
        }
        "tcp-peek" => {
            let s = net::connect_tcp(arg(0), port(1)?)?;
            let a = s.peek(5)?;
            let b = s.read_bytes(100)?;
            Ok(format!("{}|{}", text(&a), text(&b)))
        }
        // The read's outcome is the answer: its case, or "data:<text>".
        "tcp-timeout" => {
            let s = net::connect_tcp(arg(0), port(1)?)?;
            s.set_read_timeout(Some(num("ms", arg(2))?))?;
            Ok(match s.read_bytes(10) {
                Ok(d) => format!("data:{}", text(&d)),
                Err(e) => net_case(&e),
            })
        }
        "tcp-shutdown" => {
            let s = net::connect_tcp(arg(0), port(1)?)?;
            write_all(&s, b"bye")?;
            s.shutdown(ShutdownHow::Send)?;
            Ok(text(&read_to_end(&s)?))
        }
        "tcp-options" => {
            let s = net::connect_tcp(arg(0), port(1)?)?;
            let nodelay = s.set_nodelay(true).and_then(|()| s.nodelay());
            let keepalive = s.set_keepalive(Some(30)).and_then(|()| s.keepalive());
            let linger = s.set_linger(Some(1000)).and_then(|()| s.linger());
            let reuse = s.set_reuseaddr(true).and_then(|()| s.reuseaddr());
            let hop = s.set_hop_limit(32).and_then(|()| s.hop_limit());
            let rt = s.set_read_timeout(Some(7)).and_then(|()| s.read_timeout());
            Ok(format!(
                "nodelay={},keepalive={},linger={},reuseaddr={},hop={},rt={}",
                show(nodelay),
                show(keepalive),
                show(linger),
                show(reuse),
                show(hop),
                show(rt)
            ))
        }
        "tcp-streams" => {
            let s = net::connect_tcp(arg(0), port(1)?)?;
            let msg = arg(2).as_bytes();
            let out = s.write_stream();
            for piece in msg.chunks(4096) {
                out.blocking_write_and_flush(piece)?;
            }
            let input = s.read_stream();
            let mut got = Vec::new();
            while got.len() < msg.len() {
                got.extend(input.blocking_read((msg.len() - got.len()) as u64)?);
            }
            let second = s.read_stream();
            let second_result = match second.blocking_read(1) {
                Err(StreamError::Closed) => "closed".to_string(),
                Err(StreamError::LastOperationFailed(_)) => "other".to_string(),
                Ok(d) => format!("data({})", text(&d)),
            };
            Ok(format!("{}|second={second_result}", text(&got)))
        }
        "tcp-readable" => {
            let s = net::connect_tcp(arg(0), port(1)?)?;
            let ready = s.subscribe_readable();
            poll::poll(&[&ready])?;
            let d = s.read_bytes(100)?;
            Ok(format!("polled|{}", text(&d)))
        }
        // The read's outcome is the answer: its case, or "data:<text>".
        "tcp-read-forever" => {
            let s = net::connect_tcp(arg(0), port(1)?)?;
            Ok(match s.read_bytes(10) {
                Ok(d) => format!("data:{}", text(&d)),
                Err(e) => net_case(&e),
            })
        }
        // ---------------- TCP listener ----------------
        "tcp-serve" => {
            let listener = net::bind_tcp("127.0.0.1", port(0)?)?;
            let conn = listener.accept()?;
            let data = text(&conn.read_bytes(100)?);
            write_all(&conn, format!("echo:{data}").as_bytes())?;
            read_to_end(&conn)?;
            Ok(format!("served:{data}"))
        }
        "tcp-serve-poll" => {
            let listener = net::bind_tcp("127.0.0.1", port(0)?)?;
            Ok(match listener.poll_accept(num("ms", arg(1))?)? {
                Some(_) => "got".into(),
                None => "none".into(),
            })
        }
        "listen-local-addr" => Ok(net::bind_tcp("127.0.0.1", 0)?.local_addr()?),
        "bind" => {
            let _l = net::bind_tcp(arg(0), port(1)?)?;
            Ok("ok".into())
        }
        // ---------------- quotas ----------------
        "stream-quota" => {
            let (host, p, n) = (arg(0), port(1)?, count(2)?);
            Ok(quota(n, || net::connect_tcp(host, p), net_case))
        }
        "listener-quota" => Ok(quota(count(0)?, || net::bind_tcp("127.0.0.1", 0), net_case)),
        "udp-quota" => Ok(quota(count(0)?, || net::udp_bind("0.0.0.0", 0), net_case)),
        // ---------------- UDP ----------------
        "udp-echo" => {
            let u = net::udp_bind("0.0.0.0", 0)?;
            u.set_read_timeout(Some(3000))?;
            u.send_to(arg(2).as_bytes(), arg(0), port(1)?)?;
            Ok(match u.recv_from(65535)? {
                Some(d) => format!("{}|{}", text(&d.data), d.peer_host),
                None => "none".into(),
            })
        }
        "udp-connected" => {
            let u = net::udp_bind("0.0.0.0", 0)?;
            let msg = arg(2).as_bytes();
            let before = match u.send(msg) {
                Ok(n) => format!("sent({n})"),
                Err(e) => net_case(&e),
            };
            u.connect(arg(0), port(1)?)?;
            let peer = match u.peer_addr()? {
                Some(p) => format!("Some({p})"),
                None => "None".into(),
            };
            u.send(msg)?;
            u.set_read_timeout(Some(3000))?;
            let got = match u.recv(65535) {
                Ok(Some(d)) => text(&d),
                Ok(None) => "none".into(),
                Err(e) => net_case(&e),
            };
            Ok(format!("before={before},peer={peer},got={got}"))
        }
        "udp-first" => {
            let u = net::udp_bind("0.0.0.0", 0)?;
            u.set_read_timeout(Some(3000))?;
            u.send_to(arg(2).as_bytes(), arg(0), port(1)?)?;
            let next = || match u.recv_from(65535) {
                Ok(Some(d)) => text(&d.data),
                Ok(None) => "none".to_string(),
                Err(e) => net_case(&e),
            };
            let first = next();
            let second = next();
            Ok(format!("{first}|{second}"))
        }
        "udp-big" => {
            let u = net::udp_bind("0.0.0.0", 0)?;
            let (host, p) = (arg(0), port(1)?);
            let outcome = |r: Result<u32, ErrorCode>| match r {
                Ok(_) => "ok".to_string(),
                Err(e) => net_case(&e),
            };
            let big = outcome(u.send_to(&vec![b'x'; 65508], host, p));
            let max = outcome(u.send_to(&vec![b'x'; 65507], host, p));
            Ok(format!("big={big},max={max}"))
        }
        // The receive's outcome is the answer: "none", its case or "data:<text>".
        "udp-timeout0" => {
            let u = net::udp_bind("0.0.0.0", 0)?;
            u.set_read_timeout(Some(0))?;
            Ok(match u.recv_from(10) {
                Ok(Some(d)) => format!("data:{}", text(&d.data)),
                Ok(None) => "none".into(),
                Err(e) => net_case(&e),
            })
        }
        "lookup" => Ok(net::lookup_host(arg(0))?.join(",")),
        // ---------------- unix listener ----------------
        "unix-serve" => {
            let listener = net::bind_unix()?;
            match listener.poll_accept(num("ms", arg(0))?)? {
                None => Ok("none".into()),
                Some(conn) => {
                    let data = text(&conn.read_bytes(100)?);
                    let principal = rc::connection_principal(&conn)?.unwrap_or_else(|| "none".into());
                    let owner = rc::connection_owner(&conn)?.unwrap_or_else(|| "none".into());
                    write_all(&conn, b"hi")?;
                    Ok(format!("got:{data}|principal={principal}|owner={owner}"))
                }
            }
        }
        // The second bind's outcome is the answer: its case or "ok".
        "unix-bind-twice" => {
            let _first = net::bind_unix()?;
            Ok(match net::bind_unix() {
                Ok(_) => "ok".into(),
                Err(e) => net_case(&e),
            })
        }
        // ---------------- HTTP 1.1 ----------------
        "http-get" => {
            let req = request(arg(0), h11::HttpMethod::Get, &[], None);
            let r = send(&req, opt(1))?;
            Ok(format!("{}|{}|{}|{}", r.status, text(&r.body), r.meta.final_url, r.meta.redirect_count))
        }
        "http-post" => {
            let req = request(
                arg(0),
                h11::HttpMethod::Post,
                &[("content-type", "text/plain")],
                Some(arg(1).as_bytes().to_vec()),
            );
            let r = send(&req, opt(2))?;
            Ok(format!("{}|{}", r.status, text(&r.body)))
        }
        "http-headers" => {
            let req = request(
                arg(0),
                h11::HttpMethod::Get,
                &[("Authorization", "secret"), ("Cookie", "c=1"), ("X-Keep", "yes"), ("Host", "evil.example")],
                None,
            );
            let r = send(&req, None)?;
            Ok(format!("{}|{}", r.status, text(&r.body)))
        }
        "http-stream" => {
            let req = request(arg(0), h11::HttpMethod::Get, &[], None);
            let s = start(&req, opt(1))?;
            let mut len = 0usize;
            loop {
                match s.read_chunk() {
                    Ok(c) if c.is_empty() => break,
                    Ok(c) => len += c.len(),
                    Err(e) if len > 0 => return Err(Fail(format!("after {len}: {}", h11_case(&e)))),
                    Err(e) => return Err(e.into()),
                }
            }
            let trailers = match s.trailers()? {
                Some(list) => list.iter().map(|kv| format!("{}={}", kv.key, kv.value)).collect::<Vec<_>>().join(","),
                None => "none".into(),
            };
            Ok(format!("{}|{len}|{trailers}", s.status()))
        }
        "http-body-stream" => {
            let req = request(arg(0), h11::HttpMethod::Get, &[], None);
            let s = start(&req, None)?;
            let body = s.body_stream();
            let mut len = 0usize;
            loop {
                match body.blocking_read(65536) {
                    Ok(d) => len += d.len(),
                    Err(StreamError::Closed) => break,
                    Err(e) => return Err(Fail(format!("after {len}: {}", stream_case(&e)))),
                }
            }
            let readchunk = match s.read_chunk() {
                Ok(c) => format!("ok({})", c.len()),
                Err(e) => h11_case(&e),
            };
            Ok(format!("{len}|readchunk={readchunk}"))
        }
        "http-upload" => {
            let n = count(1)?;
            let req = request(arg(0), h11::HttpMethod::Post, &[], None);
            let mut opts = parse_opts("")?;
            opts.redirect = Some(h11::RedirectPolicy::Follow);
            let upload = h11::http_upload_start(&req, &opts)?;
            let sink = upload.body_sink();
            let piece = vec![b'u'; 4096];
            let mut left = n;
            while left > 0 {
                let k = left.min(4096);
                sink.blocking_write_and_flush(&piece[..k]).map_err(|e| Fail(format!("write: {}", stream_case(&e))))?;
                left -= k;
            }
            sink.blocking_flush().map_err(|e| Fail(format!("flush: {}", stream_case(&e))))?;
            drop(sink);
            let s = upload.finish()?;
            let mut body = Vec::new();
            loop {
                let c = s.read_chunk()?;
                if c.is_empty() {
                    break;
                }
                body.extend(c);
            }
            Ok(format!("{}|{}", s.status(), text(&body)))
        }
        // The start's outcome is the answer: its case, or "started".
        "http-upload-with-body" => {
            let req = request(arg(0), h11::HttpMethod::Post, &[], Some(b"x".to_vec()));
            Ok(match h11::http_upload_start(&req, &parse_opts("")?) {
                Ok(_) => "started".into(),
                Err(e) => h11_case(&e),
            })
        }
        "http-stream-quota" => {
            let req = request(arg(0), h11::HttpMethod::Get, &[], None);
            Ok(quota(count(1)?, || h11::http_stream_start(&req), h11_case))
        }
        other => Err(Fail(format!("unknown-action({other})"))),
    }
}

impl Guest for NetProbe {
    fn astrid_hook_trigger(action: String, payload: Vec<u8>) -> CapsuleResult {
        let payload = String::from_utf8_lossy(&payload).into_owned();
        match run(&action, &payload) {
            Ok(data) => CapsuleResult { action: "ok".into(), data: Some(data) },
            Err(Fail(case)) => CapsuleResult { action: "err".into(), data: Some(case) },
        }
    }
}

export!(NetProbe);
