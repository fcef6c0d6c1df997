//! `astrid:http@1.0.0` and `astrid:http@1.1.0` (host ABI §2.7). Both
//! versions share one engine; they differ only in defaults and in how
//! errors are spelled (`v1_0`, `v1_1`).
//!
//! Every hop, the first included: scheme → manifest `net` host → gate
//! `http-request` → resolution through the airlock → connect and TLS. A
//! hop to another origin loses `Authorization`, `Cookie` and
//! `Proxy-Authorization`. One audit event per host call, whatever the
//! number of hops.

/// What both versions' bindings share: the request and header
/// conversions and the `http-stream` methods, expanded once per version so
/// neither copies the other.
macro_rules! http_stream_common {
    ($stream:ident, $prefix:literal $(, trailers: $trailers:tt)?) => {
        fn method_name(method: &HttpMethod) -> String {
            match method {
                HttpMethod::Get => "GET".into(),
                HttpMethod::Head => "HEAD".into(),
                HttpMethod::Post => "POST".into(),
                HttpMethod::Put => "PUT".into(),
                HttpMethod::Delete => "DELETE".into(),
                HttpMethod::Connect => "CONNECT".into(),
                HttpMethod::Options => "OPTIONS".into(),
                HttpMethod::Trace => "TRACE".into(),
                HttpMethod::Patch => "PATCH".into(),
                HttpMethod::Other(name) => name.clone(),
            }
        }

        fn to_request(request: HttpRequestData) -> super::Request {
            super::Request {
                method: method_name(&request.method),
                url: request.url,
                headers: request.headers.into_iter().map(|kv| (kv.key, kv.value)).collect(),
                body: request.body,
            }
        }

        fn pairs(list: Vec<(String, String)>) -> Vec<KeyValuePair> {
            list.into_iter().map(|(key, value)| KeyValuePair { key, value }).collect()
        }

        /// The guest's `http-stream`.
        pub struct $stream(pub(crate) std::sync::Arc<super::Stream>);

        fn stream_of(state: &HostState, this: &Resource<$stream>) -> Option<std::sync::Arc<super::Stream>> {
            state.table.get(this).ok().map(|s| s.0.clone())
        }

        impl HostHttpStream for HostState {
            fn status(&mut self, this: Resource<$stream>) -> u16 {
                let stream = stream_of(self, &this);
                let result: Result<u16, std::convert::Infallible> =
                    self.audited(concat!($prefix, ".status"), None, 0, |_| Ok(stream.map_or(0, |s| s.status())));
                result.unwrap_or_else(|never| match never {})
            }

            fn headers(&mut self, this: Resource<$stream>) -> Vec<KeyValuePair> {
                let stream = stream_of(self, &this);
                let result: Result<_, std::convert::Infallible> =
                    self.audited(concat!($prefix, ".headers"), None, 0, |_| Ok(stream.map_or_else(Vec::new, |s| s.headers())));
                pairs(result.unwrap_or_else(|never| match never {}))
            }

            fn read_chunk(&mut self, this: Resource<$stream>) -> Result<Vec<u8>, ErrorCode> {
                let stream = stream_of(self, &this);
                self.stream_read_chunk(concat!($prefix, ".read-chunk"), stream).map_err(error_code)
            }

            fn close(&mut self, this: Resource<$stream>) -> Result<(), ErrorCode> {
                let stream = stream_of(self, &this);
                self.audited(concat!($prefix, ".close"), None, 0, |_| {
                    stream.ok_or(super::HttpError::Closed)?.close();
                    Ok(())
                })
                .map_err(error_code)
            }

            fn subscribe_readable(&mut self, this: Resource<$stream>) -> Resource<Pollable> {
                let source = match stream_of(self, &this) {
                    Some(stream) => stream.readable(),
                    None => std::sync::Arc::new(crate::host::io::AlwaysReady),
                };
                self.audit_infallible(concat!($prefix, ".subscribe-readable"));
                self.push_pollable(source)
            }

            fn body_stream(&mut self, this: Resource<$stream>) -> Resource<InputStream> {
                let source = match stream_of(self, &this) {
                    Some(stream) => stream.take_body_source(),
                    None => std::sync::Arc::new(crate::host::io::ClosedStream),
                };
                self.audit_infallible(concat!($prefix, ".body-stream"));
                self.push_input_stream(source)
            }

            $(
            fn trailers(&mut self, this: Resource<$stream>) -> Result<Option<Vec<KeyValuePair>>, ErrorCode> {
                let _ = stringify!($trailers);
                let stream = stream_of(self, &this);
                self.audited(concat!($prefix, ".trailers"), None, 0, |state| {
                    if state.call.token.is_cancelled() {
                        return Err(super::HttpError::Closed);
                    }
                    Ok(stream.ok_or(super::HttpError::Closed)?.trailers().map(pairs))
                })
                .map_err(error_code)
            }
            )?

            fn drop(&mut self, this: Resource<$stream>) -> wasmtime::Result<()> {
                self.table.delete(this)?.0.close();
                Ok(())
            }
        }
    };
}

pub(crate) mod body;
mod client;
pub(crate) mod decode;
mod v1_0;
mod v1_1;

use super::net::{resolve, QuotaSlot};
use crate::host::audit::AuditCase;
use crate::host::gated::GateRefusal;
use crate::host::state::{CallScoped, HostState};
use crate::policy::airlock;
use crate::policy::gate::GateRequest;
use crate::policy::net::{canonical_host, NetHost};
use crate::signal::lock;
use crate::wait::Pending;
use body::{Body, BodyReadable, BodySource, PumpRules, UploadBody, UploadSink, UploadWritable};
use bytes::Bytes;
use client::{Dial, ReqBody, Sender};
use hyper::body::Incoming;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use wasmtime::component::Linker;

/// Concurrent `http-stream` / `http-upload` resources per capsule.
pub const MAX_STREAMS: usize = 4;
/// Buffered response bodies (and any decoded body kept whole).
pub const MAX_BUFFERED_BODY: u64 = 10 << 20;
/// Most redirects `follow` takes.
pub const MAX_REDIRECTS: u32 = 10;
const BUFFERED_TOTAL: Duration = Duration::from_secs(30);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
const FIRST_BYTE_TIMEOUT: Duration = Duration::from_secs(120);
const BETWEEN_BYTES_TIMEOUT: Duration = Duration::from_secs(120);
/// Request bodies follow the payload ceiling (host ABI §1).
const MAX_REQUEST_BODY: usize = 10 << 20;

pub fn add_to_linker(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    v1_0::add_to_linker(linker)?;
    v1_1::add_to_linker(linker)
}

/// Every way an HTTP call fails; each version spells these its own way.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum HttpError {
    /// Manifest or gate said no; the reason is for the audit log only.
    Denied(String),
    InvalidRequest(&'static str),
    DnsError,
    AirlockRejected,
    TlsError,
    Timeout,
    ConnectionError,
    BodyTooLarge,
    Closed,
    Quota,
    RedirectBlocked,
    TooManyRedirects,
    IntegrityMismatch,
    SchemeDenied,
    DecompressionBomb,
    Protocol(String),
}

impl HttpError {
    fn from_hyper(e: &hyper::Error) -> HttpError {
        if e.is_timeout() {
            HttpError::Timeout
        } else if e.is_parse() || e.is_parse_status() {
            HttpError::Protocol("malformed response".into())
        } else if e.is_incomplete_message() {
            HttpError::Protocol("response ended early".into())
        } else if e.is_canceled() {
            HttpError::Closed
        } else {
            HttpError::ConnectionError
        }
    }

    /// The WIT case name (1.1 spelling).
    fn name(&self) -> &'static str {
        match self {
            HttpError::Denied(_) => "capability-denied",
            HttpError::InvalidRequest(_) => "invalid-request",
            HttpError::DnsError => "dns-error",
            HttpError::AirlockRejected => "airlock-rejected",
            HttpError::TlsError => "tls-error",
            HttpError::Timeout => "timeout",
            HttpError::ConnectionError => "connection-error",
            HttpError::BodyTooLarge => "body-too-large",
            HttpError::Closed => "closed",
            HttpError::Quota => "quota",
            HttpError::RedirectBlocked => "redirect-blocked",
            HttpError::TooManyRedirects => "too-many-redirects",
            HttpError::IntegrityMismatch => "integrity-mismatch",
            HttpError::SchemeDenied => "scheme-denied",
            HttpError::DecompressionBomb => "decompression-bomb",
            HttpError::Protocol(_) => "protocol",
        }
    }

    /// Text for an io `error` resource (a body stream that failed).
    fn guest_text(&self) -> String {
        match self {
            HttpError::Protocol(text) => format!("protocol: {text}"),
            other => other.name().to_string(),
        }
    }
}

impl AuditCase for HttpError {
    fn case(&self) -> String {
        match self {
            HttpError::Denied(reason) => format!("capability-denied ({reason})"),
            HttpError::InvalidRequest(why) => format!("invalid-request ({why})"),
            HttpError::Protocol(text) => format!("protocol({text})"),
            other => other.name().to_string(),
        }
    }

    fn is_denial(&self) -> bool {
        matches!(
            self,
            HttpError::Denied(_) | HttpError::AirlockRejected | HttpError::SchemeDenied
        )
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Redirect {
    Follow,
    Error,
    Manual,
}

/// A request as both versions describe it.
pub(crate) struct Request {
    pub url: String,
    pub method: String,
    pub headers: Vec<(String, String)>,
    pub body: Option<Vec<u8>>,
}

/// The guest's 1.1 options, before defaults and clamps.
#[derive(Default)]
pub(crate) struct GuestOptions {
    pub connect_ms: Option<u64>,
    pub first_byte_ms: Option<u64>,
    pub between_bytes_ms: Option<u64>,
    pub total_ms: Option<u64>,
    pub redirect: Option<Redirect>,
    pub max_redirects: Option<u32>,
    pub max_response_bytes: Option<u64>,
    pub max_decompressed_bytes: Option<u64>,
    pub auto_decompress: Option<bool>,
    pub https_only: Option<bool>,
    pub integrity: Option<String>,
}

/// Settings of one call after defaults and clamps (guest values may only
/// lower host maxima).
pub(crate) struct Options {
    legacy: bool,
    redirect: Redirect,
    max_redirects: u32,
    connect: Duration,
    first_byte: Duration,
    between_bytes: Duration,
    total: Option<Duration>,
    max_response: Option<u64>,
    max_decompressed: Option<u64>,
    auto_decompress: bool,
    https_only: bool,
    integrity: Option<[u8; 32]>,
}

fn lower(host: Duration, guest: Option<u64>) -> Duration {
    guest.map_or(host, |ms| host.min(Duration::from_millis(ms)))
}

impl Options {
    /// 1.0: redirects followed (10 at most), bodies decoded.
    pub(crate) fn legacy(buffered: bool) -> Options {
        Options {
            legacy: true,
            redirect: Redirect::Follow,
            max_redirects: MAX_REDIRECTS,
            connect: CONNECT_TIMEOUT,
            first_byte: FIRST_BYTE_TIMEOUT,
            between_bytes: BETWEEN_BYTES_TIMEOUT,
            total: buffered.then_some(BUFFERED_TOTAL),
            max_response: buffered.then_some(MAX_BUFFERED_BODY),
            max_decompressed: None,
            auto_decompress: true,
            https_only: false,
            integrity: None,
        }
    }

    /// 1.1 defaults under the guest's options.
    pub(crate) fn current(guest: GuestOptions, buffered: bool) -> Result<Options, HttpError> {
        let integrity = match &guest.integrity {
            None => None,
            Some(text) => Some(
                parse_integrity(text).ok_or(HttpError::InvalidRequest("malformed integrity"))?,
            ),
        };
        let total = if buffered {
            Some(lower(BUFFERED_TOTAL, guest.total_ms))
        } else {
            guest.total_ms.map(Duration::from_millis)
        };
        let max_response = match (buffered, guest.max_response_bytes) {
            (true, cap) => Some(cap.unwrap_or(MAX_BUFFERED_BODY).min(MAX_BUFFERED_BODY)),
            (false, cap) => cap,
        };
        Ok(Options {
            legacy: false,
            redirect: guest.redirect.unwrap_or(Redirect::Error),
            max_redirects: guest
                .max_redirects
                .unwrap_or(MAX_REDIRECTS)
                .min(MAX_REDIRECTS),
            connect: lower(CONNECT_TIMEOUT, guest.connect_ms),
            first_byte: lower(FIRST_BYTE_TIMEOUT, guest.first_byte_ms),
            between_bytes: lower(BETWEEN_BYTES_TIMEOUT, guest.between_bytes_ms),
            total,
            max_response,
            max_decompressed: guest.max_decompressed_bytes.or(max_response),
            auto_decompress: guest.auto_decompress.unwrap_or(true),
            https_only: guest.https_only.unwrap_or(false),
            integrity,
        })
    }

    /// What the body pump enforces for a response with `encoding`.
    pub(crate) fn pump_rules(
        &self,
        encoding: Option<&str>,
        buffered: bool,
        deadline: Option<Instant>,
    ) -> PumpRules {
        let decoder = encoding
            .filter(|_| self.auto_decompress)
            .and_then(decode::Decoder::for_encoding);
        let max_decoded = if self.legacy {
            // 1.0: the decoded size counts against the body cap.
            self.max_response.map(|cap| (cap, HttpError::BodyTooLarge))
        } else {
            let cap = match (self.max_decompressed, buffered) {
                (Some(cap), true) => Some(cap.min(MAX_BUFFERED_BODY)),
                (cap, _) => cap,
            };
            let error = if decoder.is_some() {
                HttpError::DecompressionBomb
            } else {
                HttpError::BodyTooLarge
            };
            cap.map(|cap| (cap, error))
        };
        PumpRules {
            decoder,
            max_wire: self.max_response,
            max_decoded,
            integrity: self.integrity,
            between_bytes: self.between_bytes,
            deadline,
        }
    }
}

/// `sha256-<base64>` (standard alphabet, padding optional).
fn parse_integrity(text: &str) -> Option<[u8; 32]> {
    use base64::Engine;
    let encoded = text.strip_prefix("sha256-")?;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .or_else(|_| base64::engine::general_purpose::STANDARD_NO_PAD.decode(encoded))
        .ok()?;
    bytes.try_into().ok()
}

/// Header pairs with lowercase names (values decoded lossily).
fn header_pairs(headers: &http::HeaderMap) -> Vec<(String, String)> {
    headers
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().to_string(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect()
}

/// The parts of `response-meta`.
pub(crate) struct Meta {
    pub final_url: String,
    pub redirect_count: u32,
    pub elapsed_ms: u64,
    pub wire_bytes: u64,
}

/// A whole buffered response.
pub(crate) struct Buffered {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub meta: Meta,
}

impl crate::host::audit::Payload for Buffered {
    fn payload_len(&self) -> u64 {
        self.body.len() as u64
    }
}

/// A response whose head arrived, with everything needed to read its body.
struct Fetched {
    response: http::Response<Incoming>,
    sender: Sender,
    url: url::Url,
    redirects: u32,
}

/// A hop's exchange running on the runtime: the response head and the
/// connection's sender, once they arrive.
type HopInFlight = Pending<Result<(http::Response<Incoming>, Sender), HttpError>>;

/// Where a request stands between hops.
struct Exchange {
    url: url::Url,
    method: http::Method,
    headers: http::HeaderMap,
    body: Option<Bytes>,
    /// The first hop streams an upload (it cannot be replayed).
    upload: Option<Arc<UploadBody>>,
    redirects: u32,
    wire: Arc<AtomicU64>,
    started: Instant,
}

/// Headers the host sets itself, ignoring the guest's values.
const HOST_HEADERS: [http::HeaderName; 4] = [
    http::header::HOST,
    http::header::CONTENT_LENGTH,
    http::header::TRANSFER_ENCODING,
    http::header::CONNECTION,
];

/// Credentials a hop to another origin loses.
const CREDENTIAL_HEADERS: [http::HeaderName; 3] = [
    http::header::AUTHORIZATION,
    http::header::COOKIE,
    http::header::PROXY_AUTHORIZATION,
];

fn same_origin(a: &url::Url, b: &url::Url) -> bool {
    a.scheme() == b.scheme()
        && a.host_str() == b.host_str()
        && a.port_or_known_default() == b.port_or_known_default()
}

/// A URL as audit events show it: scheme, host, port and path, without
/// userinfo (credentials), query (tokens, signatures) or fragment.
fn audit_target(url: &url::Url) -> String {
    let mut shown = url.clone();
    // Both fail only for URLs that cannot carry userinfo at all.
    let _ = shown.set_username("");
    let _ = shown.set_password(None);
    shown.set_query(None);
    shown.set_fragment(None);
    shown.to_string()
}

/// The audit target of a request before its exchange exists (`None` for
/// a malformed URL).
fn request_target(url: &str) -> Option<String> {
    url::Url::parse(url).ok().map(|url| audit_target(&url))
}

/// Rewrites a hop's URL into its canonical form (see
/// [`canonical_host`]): the host in canonical spelling (IPv6 bracketed, as
/// URLs need), no userinfo. Returns the host.
fn canonical_url(url: &mut url::Url) -> Result<NetHost, HttpError> {
    let malformed = HttpError::InvalidRequest("malformed host");
    let host = url
        .host_str()
        .ok_or(HttpError::InvalidRequest("URL without a host"))?;
    let host = canonical_host(host).map_err(|_| malformed.clone())?;
    url.set_host(Some(&host.url_host()))
        .map_err(|_| malformed.clone())?;
    url.set_username("").map_err(|_| malformed.clone())?;
    url.set_password(None).map_err(|_| malformed)?;
    Ok(host)
}

impl Exchange {
    fn new(request: Request, upload: Option<Arc<UploadBody>>) -> Result<Exchange, HttpError> {
        let url = url::Url::parse(&request.url)
            .map_err(|_| HttpError::InvalidRequest("malformed URL"))?;
        let method = http::Method::from_bytes(request.method.as_bytes())
            .map_err(|_| HttpError::InvalidRequest("malformed method"))?;
        let mut headers = http::HeaderMap::new();
        for (name, value) in request.headers {
            let name = http::HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| HttpError::InvalidRequest("malformed header name"))?;
            let value = http::HeaderValue::from_str(&value)
                .map_err(|_| HttpError::InvalidRequest("malformed header value"))?;
            if !HOST_HEADERS.contains(&name) {
                headers.append(name, value);
            }
        }
        if request
            .body
            .as_ref()
            .is_some_and(|b| b.len() > MAX_REQUEST_BODY)
        {
            return Err(HttpError::BodyTooLarge);
        }
        Ok(Exchange {
            url,
            method,
            headers,
            body: request.body.map(Bytes::from),
            upload,
            redirects: 0,
            wire: Arc::default(),
            started: Instant::now(),
        })
    }

    /// The hyper request for the current hop.
    fn build(&mut self, opts: &Options) -> Result<http::Request<ReqBody>, HttpError> {
        let mut target = self.url.path().to_string();
        if let Some(query) = self.url.query() {
            target.push('?');
            target.push_str(query);
        }
        let host = self
            .url
            .host_str()
            .ok_or(HttpError::InvalidRequest("URL without a host"))?;
        let host = match self.url.port() {
            Some(port) => format!("{host}:{port}"),
            None => host.to_string(),
        };
        let mut builder = http::Request::builder()
            .method(self.method.clone())
            .uri(target);
        let headers = builder
            .headers_mut()
            .ok_or(HttpError::InvalidRequest("malformed request"))?;
        *headers = self.headers.clone();
        headers.insert(
            http::header::HOST,
            http::HeaderValue::from_str(&host)
                .map_err(|_| HttpError::InvalidRequest("malformed host"))?,
        );
        if opts.auto_decompress && !headers.contains_key(http::header::ACCEPT_ENCODING) {
            headers.insert(
                http::header::ACCEPT_ENCODING,
                http::HeaderValue::from_static("gzip, deflate, br"),
            );
        }
        let body = match (self.upload.clone(), &self.body) {
            (Some(upload), _) => ReqBody::Upload(upload),
            (None, Some(bytes)) => ReqBody::Full(Some(bytes.clone())),
            (None, None) => ReqBody::Empty,
        };
        builder
            .body(body)
            .map_err(|_| HttpError::InvalidRequest("malformed request"))
    }

    /// Applies a 3xx `location` under `follow`: method and body rules,
    /// credential stripping, the hop count.
    /// From the moment the location is read, the exchange is at the new
    /// hop, so a hop refused here or by [`HostState::vet_hop`] is the one
    /// audited.
    fn redirect(&mut self, status: u16, location: &str, opts: &Options) -> Result<(), HttpError> {
        let next = self
            .url
            .join(location)
            .map_err(|_| HttpError::Protocol("malformed redirect location".into()))?;
        let previous = std::mem::replace(&mut self.url, next);
        if self.redirects >= opts.max_redirects {
            return Err(HttpError::TooManyRedirects);
        }
        let to_get =
            status == 303 || (matches!(status, 301 | 302) && self.method == http::Method::POST);
        if to_get {
            if self.method != http::Method::HEAD {
                self.method = http::Method::GET;
            }
            self.body = None;
            self.upload = None;
            self.headers.remove(http::header::CONTENT_TYPE);
        } else if self.upload.is_some() {
            // 307/308 keep the body, and a streamed upload cannot be replayed.
            return Err(HttpError::RedirectBlocked);
        }
        if !same_origin(&previous, &self.url) {
            for name in &CREDENTIAL_HEADERS {
                self.headers.remove(name);
            }
        }
        self.redirects += 1;
        Ok(())
    }

    /// A redirect the policy refuses (`error`): the audit names its target.
    fn refuse_redirect(&mut self, location: &str) -> HttpError {
        if let Ok(next) = self.url.join(location) {
            self.url = next;
        }
        HttpError::RedirectBlocked
    }

    /// The current hop as audit events show it.
    fn audit_target(&self) -> String {
        audit_target(&self.url)
    }
}

impl HostState {
    /// The checks of one hop, in order: scheme, manifest, gate, airlock.
    /// Returns where to connect. The hop's URL is first rewritten with its
    /// host in canonical spelling and without userinfo (never sent: the
    /// host sends only path and query), so the manifest, the gate,
    /// resolution, the `Host` header and the audit all see one spelling.
    fn vet_hop(&self, exchange: &mut Exchange, opts: &Options) -> Result<Dial, HttpError> {
        let https = match exchange.url.scheme() {
            "https" => true,
            "http" if !opts.https_only => false,
            _ => return Err(HttpError::SchemeDenied),
        };
        let host = canonical_url(&mut exchange.url)?;
        let url = &exchange.url;
        let port = url
            .port_or_known_default()
            .ok_or(HttpError::InvalidRequest("URL without a port"))?;
        if !self
            .capsule
            .manifest
            .capabilities
            .net
            .iter()
            .any(|grant| grant.allows(&host))
        {
            return Err(HttpError::Denied(
                "manifest: no net entry covers the host".into(),
            ));
        }
        let request = GateRequest::http(
            self.capsule.name.clone(),
            self.call.principal.clone(),
            exchange.method.as_str(),
            url,
            &host,
        );
        match self.ask_gate(request) {
            Ok(()) => {}
            Err(GateRefusal::Denied(reason)) => return Err(HttpError::Denied(reason)),
            Err(GateRefusal::Interrupted) => return Err(HttpError::Closed),
        }
        let allow = self.allow_loopback();
        let (addrs, tls_name) = match &host {
            NetHost::Name(name) => {
                let found = resolve::resolve(self, &host, port).map_err(|e| match e {
                    resolve::ResolveError::Cancelled => HttpError::Closed,
                    resolve::ResolveError::Timeout => HttpError::Timeout,
                    resolve::ResolveError::NoSuchName => HttpError::DnsError,
                })?;
                // HTTP filters: unsafe results are dropped, and only an
                // empty remainder fails.
                let safe: Vec<_> = found
                    .into_iter()
                    .filter(|a| airlock::check(a.ip(), allow).is_ok())
                    .collect();
                (safe, name.clone())
            }
            NetHost::Ip(ip) => (vec![std::net::SocketAddr::new(*ip, port)], ip.to_string()),
        };
        if addrs.is_empty() || addrs.iter().any(|a| airlock::check(a.ip(), allow).is_err()) {
            return Err(HttpError::AirlockRejected);
        }
        Ok(Dial {
            addrs,
            tls_name: https.then_some(tls_name),
            connect_timeout: opts.connect,
            first_byte_timeout: exchange.upload.is_none().then_some(opts.first_byte),
        })
    }

    /// The deadline of a call with `opts`: the call's own, or sooner.
    fn http_deadline(&self, opts: &Options, started: Instant) -> Instant {
        match opts.total {
            Some(total) => self.call.deadline.min(started + total),
            None => self.call.deadline,
        }
    }

    /// Starts one hop's exchange on the runtime.
    fn start_hop(&self, exchange: &mut Exchange, opts: &Options) -> Result<HopInFlight, HttpError> {
        let dial = self.vet_hop(exchange, opts)?;
        let request = exchange.build(opts)?;
        let wire = exchange.wire.clone();
        let upload = exchange.upload.clone();
        Ok(Pending::spawn(&self.capsule.services.handle, async move {
            let result = client::exchange(dial, request, wire).await;
            if let (Err(_), Some(upload)) = (&result, upload) {
                // The guest's writes fail from now on, instead of waiting
                // for room that never comes; `finish` reports the error.
                upload.abort();
            }
            result
        }))
    }

    fn await_hop(
        &self,
        pending: HopInFlight,
        deadline: Instant,
    ) -> Result<(http::Response<Incoming>, Sender), HttpError> {
        match pending.wait(&self.call.token, deadline) {
            Some(result) => result,
            None if self.call.token.is_cancelled() => Err(HttpError::Closed),
            None => Err(HttpError::Timeout),
        }
    }

    /// Runs hops until a response that is not followed. `first` is a hop
    /// already under way (an upload's).
    fn fetch(
        &self,
        exchange: &mut Exchange,
        opts: &Options,
        mut first: Option<HopInFlight>,
    ) -> Result<Fetched, HttpError> {
        let deadline = self.http_deadline(opts, exchange.started);
        loop {
            let (pending, hop_deadline) = match first.take() {
                // An upload's head is due `first-byte` after its body ended.
                Some(pending) => (pending, deadline.min(Instant::now() + opts.first_byte)),
                None => (self.start_hop(exchange, opts)?, deadline),
            };
            let (response, sender) = self.await_hop(pending, hop_deadline)?;
            let status = response.status().as_u16();
            let location = response
                .headers()
                .get(http::header::LOCATION)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string);
            let is_redirect = matches!(status, 301 | 302 | 303 | 307 | 308);
            match (is_redirect, location, opts.redirect) {
                (true, Some(location), Redirect::Error) => {
                    return Err(exchange.refuse_redirect(&location))
                }
                (true, Some(location), Redirect::Follow) => {
                    drop((response, sender));
                    exchange.redirect(status, &location, opts)?;
                }
                _ => {
                    return Ok(Fetched {
                        response,
                        sender,
                        url: exchange.url.clone(),
                        redirects: exchange.redirects,
                    })
                }
            }
        }
    }

    /// Starts the body pump of a fetched response.
    fn open_body(
        &self,
        fetched: Fetched,
        opts: &Options,
        buffered: bool,
        deadline: Option<Instant>,
    ) -> (
        u16,
        Vec<(String, String)>,
        Arc<Body>,
        tokio::task::AbortHandle,
    ) {
        let (parts, incoming) = fetched.response.into_parts();
        let encoding = parts
            .headers
            .get(http::header::CONTENT_ENCODING)
            .and_then(|v| v.to_str().ok());
        let rules = opts.pump_rules(encoding, buffered, deadline);
        let mut headers = parts.headers.clone();
        if rules.decoder.is_some() {
            // The guest sees the decoded body.
            headers.remove(http::header::CONTENT_ENCODING);
            headers.remove(http::header::CONTENT_LENGTH);
        }
        let body = Arc::new(Body::default());
        let task =
            self.capsule
                .services
                .handle
                .spawn(body.clone().pump(incoming, rules, fetched.sender));
        (
            parts.status.as_u16(),
            header_pairs(&headers),
            body,
            task.abort_handle(),
        )
    }

    /// `http-request`: the whole exchange, body included.
    pub(crate) fn http_buffered(
        &mut self,
        call: &'static str,
        request: Request,
        opts: Options,
    ) -> Result<Buffered, HttpError> {
        let bytes_in = request.body.as_ref().map_or(0, |b| b.len() as u64);
        let counted = |result: &Result<Buffered, HttpError>| {
            bytes_in
                + result
                    .as_ref()
                    .map_or(0, crate::host::audit::Payload::payload_len)
        };
        self.audited_late_target(
            call,
            |state, target| {
                *target = request_target(&request.url);
                if state.call.token.is_cancelled() {
                    return Err(HttpError::Closed);
                }
                let mut exchange = Exchange::new(request, None)?;
                let result = state.buffered_exchange(&mut exchange, &opts);
                *target = Some(exchange.audit_target());
                result
            },
            counted,
        )
    }

    /// The hops and the whole body of `http-request`.
    fn buffered_exchange(
        &self,
        exchange: &mut Exchange,
        opts: &Options,
    ) -> Result<Buffered, HttpError> {
        let deadline = self.http_deadline(opts, exchange.started);
        let fetched = self.fetch(exchange, opts, None)?;
        let final_url = fetched.url.to_string();
        let redirects = fetched.redirects;
        let (status, headers, body, task) = self.open_body(fetched, opts, true, Some(deadline));
        let _abort = AbortOnDrop(task);
        let mut out = Vec::new();
        loop {
            let ready =
                crate::wait::wait_for(&[&*body.readable], &self.call.token, deadline, || {
                    body.has_news()
                });
            if !ready {
                return Err(if self.call.token.is_cancelled() {
                    HttpError::Closed
                } else {
                    HttpError::Timeout
                });
            }
            match body.take(usize::MAX)? {
                None => {}
                Some(chunk) if chunk.is_empty() => break,
                Some(chunk) => out.extend_from_slice(&chunk),
            }
        }
        Ok(Buffered {
            status,
            headers,
            body: out,
            meta: Meta {
                final_url,
                redirect_count: redirects,
                elapsed_ms: exchange.started.elapsed().as_millis() as u64,
                wire_bytes: exchange.wire.load(Ordering::Relaxed),
            },
        })
    }

    fn claim_http_stream(&self) -> Result<QuotaSlot, HttpError> {
        QuotaSlot::claim(&self.capsule.net.http_streams, MAX_STREAMS).ok_or(HttpError::Quota)
    }

    /// `http-stream-start`: the head now, the body as the guest reads it.
    pub(crate) fn http_stream(
        &mut self,
        call: &'static str,
        request: Request,
        opts: Options,
    ) -> Result<Arc<Stream>, HttpError> {
        let bytes_in = request.body.as_ref().map_or(0, |b| b.len() as u64);
        let first = request_target(&request.url);
        self.open_call_scoped(call, first, bytes_in, |state, target| {
            let slot = state.claim_http_stream()?;
            let mut exchange = Exchange::new(request, None)?;
            let fetched = state.fetch(&mut exchange, &opts, None);
            *target = Some(exchange.audit_target());
            let deadline = opts.total.map(|t| exchange.started + t);
            Ok(Stream::open(state, fetched?, &opts, deadline, slot))
        })
    }

    /// `http-upload-start`: vets the first hop and starts sending; the
    /// guest writes the body, `finish` waits for the head.
    pub(crate) fn http_upload(
        &mut self,
        call: &'static str,
        request: Request,
        opts: Options,
    ) -> Result<Arc<Upload>, HttpError> {
        let first = request_target(&request.url);
        self.open_call_scoped(call, first, 0, |state, target| {
            if request.body.is_some() {
                return Err(HttpError::InvalidRequest(
                    "an upload's body comes from its sink",
                ));
            }
            let slot = state.claim_http_stream()?;
            let body = Arc::new(UploadBody::default());
            let mut exchange = Exchange::new(request, Some(body.clone()))?;
            let first = state.start_hop(&mut exchange, &opts);
            *target = Some(exchange.audit_target());
            let first = first?;
            Ok(Arc::new(Upload {
                body,
                sink_taken: AtomicBool::new(false),
                state: Mutex::new(Some(UploadState {
                    exchange,
                    first,
                    opts,
                    slot,
                })),
            }))
        })
    }

    /// `http-upload.finish`: ends the body and waits for the response head.
    pub(crate) fn upload_finish(&mut self, upload: &Upload) -> Result<Arc<Stream>, HttpError> {
        self.open_call_scoped("http.http-upload.finish", None, 0, |state, target| {
            let Some(UploadState {
                mut exchange,
                first,
                opts,
                slot,
            }) = lock(&upload.state).take()
            else {
                return Err(HttpError::Closed);
            };
            upload.body.finish();
            let fetched = state.fetch(&mut exchange, &opts, Some(first));
            *target = Some(exchange.audit_target());
            let fetched = fetched?;
            let deadline = opts.total.map(|t| exchange.started + t);
            Ok(Stream::open(state, fetched, &opts, deadline, slot))
        })
    }

    /// An audited call that opens an HTTP object (refused once the guest
    /// call is cancelled); the object is closed when the guest call ends.
    /// The audit target starts as `first` (the request's URL); `open`
    /// replaces it with the hop the exchange ended on.
    fn open_call_scoped<T: CallScoped + 'static>(
        &mut self,
        call: &'static str,
        first: Option<String>,
        bytes_in: u64,
        open: impl FnOnce(&mut Self, &mut Option<String>) -> Result<Arc<T>, HttpError>,
    ) -> Result<Arc<T>, HttpError> {
        let object = self.audited_late_target(
            call,
            |state, target| {
                *target = first;
                if state.call.token.is_cancelled() {
                    return Err(HttpError::Closed);
                }
                open(state, target)
            },
            |_| bytes_in,
        )?;
        self.track_call_scoped(Arc::downgrade(&object) as std::sync::Weak<dyn CallScoped>);
        Ok(object)
    }

    /// `http-stream.read-chunk`: the next bytes (empty at the end).
    pub(crate) fn stream_read_chunk(
        &mut self,
        call: &'static str,
        stream: Option<Arc<Stream>>,
    ) -> Result<Vec<u8>, HttpError> {
        let result = self.audited_io(call, None, 0, |state| {
            let stream = stream.ok_or(HttpError::Closed)?;
            if state.call.token.is_cancelled() || stream.body_taken.load(Ordering::SeqCst) {
                return Err(HttpError::Closed);
            }
            let body = &stream.body;
            loop {
                let ready = crate::wait::wait_for(
                    &[&*body.readable],
                    &state.call.token,
                    state.call.deadline,
                    || body.has_news(),
                );
                if !ready {
                    return Err(if state.call.token.is_cancelled() {
                        HttpError::Closed
                    } else {
                        HttpError::Timeout
                    });
                }
                if let Some(chunk) = body.take(body::MAX_CHUNK)? {
                    return Ok(chunk);
                }
            }
        });
        self.note_waited();
        result
    }
}

struct AbortOnDrop(tokio::task::AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// An open response body (`http-stream`).
pub(crate) struct Stream {
    status: u16,
    headers: Vec<(String, String)>,
    body: Arc<Body>,
    task: tokio::task::AbortHandle,
    body_taken: AtomicBool,
    /// Given back when closed: a closed resource the guest keeps does not
    /// count against the quota.
    slot: Mutex<Option<QuotaSlot>>,
}

impl Stream {
    fn open(
        state: &HostState,
        fetched: Fetched,
        opts: &Options,
        deadline: Option<Instant>,
        slot: QuotaSlot,
    ) -> Arc<Stream> {
        let (status, headers, body, task) = state.open_body(fetched, opts, false, deadline);
        Arc::new(Stream {
            status,
            headers,
            body,
            task,
            body_taken: AtomicBool::new(false),
            slot: Mutex::new(Some(slot)),
        })
    }

    pub(crate) fn status(&self) -> u16 {
        self.status
    }

    pub(crate) fn headers(&self) -> Vec<(String, String)> {
        self.headers.clone()
    }

    pub(crate) fn readable(&self) -> Arc<dyn crate::signal::Readiness> {
        Arc::new(BodyReadable(self.body.clone()))
    }

    /// The `body-stream` view, once; later requests get a closed stream.
    pub(crate) fn take_body_source(&self) -> Arc<dyn crate::host::io::ByteSource> {
        if self.body_taken.swap(true, Ordering::SeqCst) {
            Arc::new(crate::host::io::ClosedStream)
        } else {
            Arc::new(BodySource(self.body.clone()))
        }
    }

    pub(crate) fn trailers(&self) -> Option<Vec<(String, String)>> {
        self.body.trailers().flatten()
    }

    pub(crate) fn close(&self) {
        self.body.close();
        self.task.abort();
        lock(&self.slot).take();
    }
}

impl CallScoped for Stream {
    fn close(&self) {
        Stream::close(self);
    }
}

impl Drop for Stream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

struct UploadState {
    exchange: Exchange,
    first: HopInFlight,
    opts: Options,
    slot: QuotaSlot,
}

/// An upload in progress (`http-upload`).
pub(crate) struct Upload {
    body: Arc<UploadBody>,
    sink_taken: AtomicBool,
    /// Taken by `finish`.
    state: Mutex<Option<UploadState>>,
}

impl Upload {
    /// The `body-sink` view, once; later requests get a closed stream.
    pub(crate) fn take_sink(&self) -> Arc<dyn crate::host::io::ByteSink> {
        if self.sink_taken.swap(true, Ordering::SeqCst) {
            Arc::new(crate::host::io::ClosedStream)
        } else {
            Arc::new(UploadSink(self.body.clone()))
        }
    }

    pub(crate) fn writable(&self) -> Arc<dyn crate::signal::Readiness> {
        Arc::new(UploadWritable(self.body.clone()))
    }
}

impl CallScoped for Upload {
    fn close(&self) {
        self.body.abort();
        lock(&self.state).take();
    }
}

impl Drop for Upload {
    fn drop(&mut self) {
        self.body.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integrity_strings() {
        let digest = [7u8; 32];
        use base64::Engine;
        let text = format!(
            "sha256-{}",
            base64::engine::general_purpose::STANDARD.encode(digest)
        );
        assert_eq!(parse_integrity(&text), Some(digest));
        assert_eq!(parse_integrity(text.trim_end_matches('=')), Some(digest));
        for bad in ["sha256-", "sha512-abc", "sha256-!!!", "sha256-AAAA"] {
            assert_eq!(parse_integrity(bad), None, "{bad}");
        }
    }

    #[test]
    fn guest_options_only_lower_host_maxima() {
        let opts = Options::current(
            GuestOptions {
                total_ms: Some(3_600_000),
                connect_ms: Some(5),
                max_redirects: Some(99),
                max_response_bytes: Some(u64::MAX),
                ..GuestOptions::default()
            },
            true,
        )
        .unwrap();
        assert_eq!(opts.total, Some(BUFFERED_TOTAL));
        assert_eq!(opts.connect, Duration::from_millis(5));
        assert_eq!(opts.max_redirects, MAX_REDIRECTS);
        assert_eq!(opts.max_response, Some(MAX_BUFFERED_BODY));
        assert_eq!(opts.redirect, Redirect::Error, "1.1 defaults to error");
        assert_eq!(Options::legacy(true).redirect, Redirect::Follow);
    }

    #[test]
    fn redirects_change_method_and_drop_credentials_across_origins() {
        let request = Request {
            url: "https://a.example/x".into(),
            method: "POST".into(),
            headers: vec![
                ("Authorization".into(), "secret".into()),
                ("Cookie".into(), "c".into()),
                ("X-Keep".into(), "1".into()),
            ],
            body: Some(b"data".to_vec()),
        };
        let opts = Options::legacy(true);
        let mut exchange = Exchange::new(request, None).unwrap();
        exchange.redirect(302, "/y", &opts).unwrap();
        assert_eq!(exchange.method, http::Method::GET);
        assert!(exchange.body.is_none());
        assert!(
            exchange.headers.contains_key("authorization"),
            "same origin keeps them"
        );
        exchange
            .redirect(307, "https://b.example/z", &opts)
            .unwrap();
        assert!(!exchange.headers.contains_key("authorization"));
        assert!(!exchange.headers.contains_key("cookie"));
        assert!(exchange.headers.contains_key("x-keep"));
        assert_eq!(exchange.url.as_str(), "https://b.example/z");
        exchange.redirects = MAX_REDIRECTS;
        assert_eq!(
            exchange.redirect(302, "/again", &opts),
            Err(HttpError::TooManyRedirects)
        );
    }

    #[test]
    fn the_host_sets_framing_headers_itself() {
        let request = Request {
            url: "http://a.example:8080/p?q=1".into(),
            method: "PUT".into(),
            headers: vec![
                ("Host".into(), "evil".into()),
                ("Content-Length".into(), "1".into()),
                ("Connection".into(), "upgrade".into()),
            ],
            body: Some(b"abc".to_vec()),
        };
        let mut exchange = Exchange::new(request, None).unwrap();
        let built = exchange.build(&Options::legacy(true)).unwrap();
        assert_eq!(built.uri(), "/p?q=1");
        assert_eq!(built.headers()["host"], "a.example:8080");
        assert!(!built.headers().contains_key("content-length"));
        assert!(!built.headers().contains_key("connection"));
        assert_eq!(
            request_target("http://user:pw@a.example/p?token=secret#f").as_deref(),
            Some("http://a.example/p")
        );
        assert_eq!(request_target("not a url"), None);
    }
}
