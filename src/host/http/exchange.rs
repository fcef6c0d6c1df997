//! One HTTP exchange as it moves through its hops: the canonical URL, the
//! request built for each hop, redirects and what they may carry along.

use super::body::UploadBody;
use super::client::{ReqBody, Sender};
use super::error::HttpError;
use super::headers::{CREDENTIAL_HEADERS, HOST_HEADERS};
use super::options::{Options, Request, MAX_REQUEST_BODY};
use crate::policy::net::{canonical_host, NetHost};
use crate::wait::Pending;
use bytes::Bytes;
use hyper::body::Incoming;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Instant;

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
pub(crate) struct Fetched {
    pub(crate) response: http::Response<Incoming>,
    pub(crate) sender: Sender,
    pub(crate) url: url::Url,
    pub(crate) redirects: u32,
}

/// A hop's exchange running on the runtime: the response head and the
/// connection's sender, once they arrive.
pub(crate) type HopInFlight = Pending<Result<(http::Response<Incoming>, Sender), HttpError>>;

/// Where a request stands between hops.
pub(crate) struct Exchange {
    pub(crate) url: url::Url,
    pub(crate) method: http::Method,
    pub(crate) headers: http::HeaderMap,
    pub(crate) body: Option<Bytes>,
    /// The first hop streams an upload (it cannot be replayed).
    pub(crate) upload: Option<Arc<UploadBody>>,
    pub(crate) redirects: u32,
    pub(crate) wire: Arc<AtomicU64>,
    pub(crate) started: Instant,
}

pub(crate) fn same_origin(a: &url::Url, b: &url::Url) -> bool {
    a.scheme() == b.scheme()
        && a.host_str() == b.host_str()
        && a.port_or_known_default() == b.port_or_known_default()
}

/// A URL as audit events show it: scheme, host, port and path, without
/// userinfo (credentials), query (tokens, signatures) or fragment.
pub(crate) fn audit_target(url: &url::Url) -> String {
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
pub(crate) fn request_target(url: &str) -> Option<String> {
    url::Url::parse(url).ok().map(|url| audit_target(&url))
}

/// Rewrites a hop's URL into its canonical form (see
/// [`canonical_host`]): the host in canonical spelling (IPv6 bracketed, as
/// URLs need), no userinfo. Returns the host.
pub(crate) fn canonical_url(url: &mut url::Url) -> Result<NetHost, HttpError> {
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
    pub(crate) fn new(
        request: Request,
        upload: Option<Arc<UploadBody>>,
    ) -> Result<Exchange, HttpError> {
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
    pub(crate) fn build(&mut self, opts: &Options) -> Result<http::Request<ReqBody>, HttpError> {
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
    /// hop, so a hop refused here or by [`HttpView::vet_hop`](super::view::HttpView::vet_hop) is the one
    /// audited.
    pub(crate) fn redirect(
        &mut self,
        status: u16,
        location: &str,
        opts: &Options,
    ) -> Result<(), HttpError> {
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
    pub(crate) fn refuse_redirect(&mut self, location: &str) -> HttpError {
        if let Ok(next) = self.url.join(location) {
            self.url = next;
        }
        HttpError::RedirectBlocked
    }

    /// The current hop as audit events show it.
    pub(crate) fn audit_target(&self) -> String {
        audit_target(&self.url)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::http::options::MAX_REDIRECTS;

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
