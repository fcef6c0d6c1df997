//! Fetching over HTTP as a host call: each hop vetted (manifest, gate,
//! airlock on every resolved address), dialled, awaited under the call's
//! deadline, then handed to the guest buffered or as a stream.

use super::body::{Body, UploadBody};
use super::client::{Dial, Sender};
use super::error::HttpError;
use super::exchange::{
    canonical_url, request_target, Buffered, Exchange, Fetched, HopInFlight, Meta,
};
use super::headers::header_pairs;
use super::options::{Options, Redirect, Request, MAX_STREAMS};
use super::resources::{AbortOnDrop, Stream, Upload, UploadState};
use super::view::HttpView;
use crate::host::audit::Audited;
use crate::host::gated::GateRefusal;
use crate::host::net::{resolve, QuotaSlot};
use crate::host::view::CallScoped;
use crate::host::view::HostView;
use crate::policy::airlock;
use crate::policy::gate::GateRequest;
use crate::policy::net::NetHost;
use crate::signal::MutexExt;
use crate::wait::Pending;
use hyper::body::Incoming;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

impl HttpView<'_> {
    /// The checks of one hop, in order: scheme, manifest, gate, airlock.
    /// Returns where to connect. The hop's URL is first rewritten with its
    /// host in canonical spelling and without userinfo (never sent: the
    /// host sends only path and query), so the manifest, the gate,
    /// resolution, the `Host` header and the audit all see one spelling.
    pub(crate) fn vet_hop(
        &self,
        exchange: &mut Exchange,
        opts: &Options,
    ) -> Result<Dial, HttpError> {
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
        match self.ctx().ask_gate(request) {
            Ok(()) => {}
            Err(GateRefusal::Denied(reason)) => return Err(HttpError::Denied(reason)),
            Err(GateRefusal::Interrupted) => return Err(HttpError::Closed),
        }
        let allow = self.ctx().allow_loopback();
        let (addrs, tls_name) = match &host {
            NetHost::Name(name) => {
                let found = resolve::resolve(self.ctx(), &host, port).map_err(|e| match e {
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
    pub(crate) fn http_deadline(&self, opts: &Options, started: Instant) -> Instant {
        match opts.total {
            Some(total) => self.call.deadline.min(started + total),
            None => self.call.deadline,
        }
    }

    /// Starts one hop's exchange on the runtime.
    pub(crate) fn start_hop(
        &self,
        exchange: &mut Exchange,
        opts: &Options,
    ) -> Result<HopInFlight, HttpError> {
        let dial = self.vet_hop(exchange, opts)?;
        let request = exchange.build(opts)?;
        let wire = exchange.wire.clone();
        let upload = exchange.upload.clone();
        Ok(Pending::spawn(&self.capsule.services.handle, async move {
            let result = super::client::exchange(dial, request, wire).await;
            if let (Err(_), Some(upload)) = (&result, upload) {
                // The guest's writes fail from now on, instead of waiting
                // for room that never comes; `finish` reports the error.
                upload.abort();
            }
            result
        }))
    }

    pub(crate) fn await_hop(
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
    pub(crate) fn fetch(
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
    pub(crate) fn open_body(
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
        let bytes_out = |result: &Result<Buffered, HttpError>| {
            result
                .as_ref()
                .map_or(0, crate::host::audit::Payload::payload_len)
        };
        self.audited_late_target(
            call,
            bytes_in,
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
            bytes_out,
        )
    }

    /// The hops and the whole body of `http-request`.
    pub(crate) fn buffered_exchange(
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

    pub(crate) fn claim_http_stream(&self) -> Result<QuotaSlot, HttpError> {
        QuotaSlot::claim(&self.net.http_streams, MAX_STREAMS).ok_or(HttpError::Quota)
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
            }) = upload.state.locked().take()
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
    pub(crate) fn open_call_scoped<T: CallScoped + 'static>(
        &mut self,
        call: &'static str,
        first: Option<String>,
        bytes_in: u64,
        open: impl FnOnce(&mut Self, &mut Option<String>) -> Result<Arc<T>, HttpError>,
    ) -> Result<Arc<T>, HttpError> {
        let object = self.audited_late_target(
            call,
            bytes_in,
            |state, target| {
                *target = first;
                if state.call.token.is_cancelled() {
                    return Err(HttpError::Closed);
                }
                open(state, target)
            },
            |_| 0,
        )?;
        self.call_scoped
            .track(Arc::downgrade(&object) as std::sync::Weak<dyn CallScoped>);
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
                if let Some(chunk) = body.take(super::body::MAX_CHUNK)? {
                    return Ok(chunk);
                }
            }
        });
        self.ctx().note_waited();
        result
    }
}
