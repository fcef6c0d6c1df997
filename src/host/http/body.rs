//! Response bodies: a task pumps hyper's frames through the decoder, the
//! caps, the integrity hash and the timeouts into a bounded buffer that the
//! guest drains (`read-chunk`, `body-stream`); and upload bodies the guest
//! fills through an output stream while hyper sends them.

use super::decode::Decoder;
use super::error::HttpError;
use crate::host::io::{ByteSink, ByteSource, StreamFailure};
use crate::signal::MutexExt;
use crate::signal::{Readiness, Signal, Waiter};
use bytes::Bytes;
use hyper::body::{Body as _, Frame, Incoming};
use sha2::Digest;
use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

/// Decoded bytes buffered ahead of the guest before the pump pauses.
const BUFFER_AHEAD: usize = 1 << 20;
/// Most bytes one `read-chunk` returns.
pub const MAX_CHUNK: usize = 1 << 20;
/// Output the decoder produces per step (bounds memory under a bomb).
const DECODE_STEP: usize = 64 << 10;

#[derive(Default)]
struct BodyState {
    chunks: VecDeque<Bytes>,
    buffered: usize,
    ended: bool,
    error: Option<HttpError>,
    trailers: Option<Vec<(String, String)>>,
    /// The guest closed the stream: nothing more is read.
    closed: bool,
}

/// A response body between the pump task and the guest.
#[derive(Default)]
pub(crate) struct Body {
    state: Mutex<BodyState>,
    /// Wakes guest waiters when data, the end or an error arrives.
    pub(crate) readable: Arc<Signal>,
    /// Wakes the pump when the guest made room or closed.
    room: tokio::sync::Notify,
}

/// What the pump enforces on one body.
pub(crate) struct PumpRules {
    pub decoder: Option<Decoder>,
    /// Cap on the bytes as received (`body-too-large`).
    pub max_wire: Option<u64>,
    /// Cap on the decoded bytes, and the error when it is passed.
    pub max_decoded: Option<(u64, HttpError)>,
    pub integrity: Option<[u8; 32]>,
    pub between_bytes: Duration,
    /// The whole exchange must end by then (`timeout`).
    pub deadline: Option<Instant>,
}

impl Body {
    /// Takes up to `max` buffered bytes. `Ok(None)`: nothing yet.
    /// `Ok(Some(empty))`: the body ended.
    pub(crate) fn take(&self, max: usize) -> Result<Option<Vec<u8>>, HttpError> {
        let mut state = self.state.locked();
        if state.closed {
            return Err(HttpError::Closed);
        }
        if state.buffered == 0 {
            if let Some(error) = &state.error {
                return Err(error.clone());
            }
            return Ok(state.ended.then(Vec::new));
        }
        let mut out = Vec::with_capacity(max.min(state.buffered));
        while out.len() < max {
            let Some(front) = state.chunks.front_mut() else {
                break;
            };
            let n = front.len().min(max - out.len());
            out.extend_from_slice(&front.split_to(n));
            if front.is_empty() {
                state.chunks.pop_front();
            }
        }
        state.buffered -= out.len();
        drop(state);
        self.room.notify_one();
        Ok(Some(out))
    }

    /// Whether a `take` would answer now.
    pub(crate) fn has_news(&self) -> bool {
        let state = self.state.locked();
        state.buffered > 0 || state.ended || state.error.is_some() || state.closed
    }

    /// The received trailers once the body ended (`None` before).
    pub(crate) fn trailers(&self) -> Option<Option<Vec<(String, String)>>> {
        let state = self.state.locked();
        (state.ended && state.buffered == 0).then(|| state.trailers.clone())
    }

    pub(crate) fn close(&self) {
        let mut state = self.state.locked();
        state.closed = true;
        state.chunks.clear();
        state.buffered = 0;
        drop(state);
        self.room.notify_one();
        self.readable.notify();
    }

    fn fail(&self, error: HttpError) {
        self.state.locked().error = Some(error);
        self.readable.notify();
    }

    /// Queues decoded bytes, waiting while the guest is far behind.
    async fn push(&self, data: Bytes) -> bool {
        loop {
            let notified = self.room.notified();
            {
                let mut state = self.state.locked();
                if state.closed {
                    return false;
                }
                if state.buffered < BUFFER_AHEAD {
                    state.buffered += data.len();
                    state.chunks.push_back(data);
                    drop(state);
                    self.readable.notify();
                    return true;
                }
            }
            notified.await;
        }
    }

    /// Reads `incoming` to its end under `rules`. Runs as a task; `keep`
    /// holds whatever must live as long as the body (the request sender).
    pub(crate) async fn pump<K: Send>(
        self: Arc<Self>,
        mut incoming: Incoming,
        mut rules: PumpRules,
        keep: K,
    ) {
        let outcome = self.pump_frames(&mut incoming, &mut rules).await;
        drop(keep);
        match outcome {
            Ok(()) => {
                self.state.locked().ended = true;
                self.readable.notify();
            }
            Err(error) => self.fail(error),
        }
    }

    async fn pump_frames(
        &self,
        incoming: &mut Incoming,
        rules: &mut PumpRules,
    ) -> Result<(), HttpError> {
        let mut wire: u64 = 0;
        let mut decoded: u64 = 0;
        let mut hash = rules.integrity.map(|_| sha2::Sha256::new());
        loop {
            let mut wait = rules.between_bytes;
            if let Some(deadline) = rules.deadline {
                wait = wait.min(deadline.saturating_duration_since(Instant::now()));
            }
            let next = std::future::poll_fn(|cx| Pin::new(&mut *incoming).poll_frame(cx));
            let frame = match tokio::time::timeout(wait, next).await {
                Err(_) => return Err(HttpError::Timeout),
                Ok(None) => break,
                Ok(Some(Err(e))) => return Err(HttpError::from_hyper(&e)),
                Ok(Some(Ok(frame))) => frame,
            };
            let frame: Frame<Bytes> = frame;
            let data = match frame.into_data() {
                Ok(data) => data,
                Err(frame) => {
                    if let Ok(trailers) = frame.into_trailers() {
                        self.state.locked().trailers =
                            Some(super::headers::header_pairs(&trailers));
                    }
                    continue;
                }
            };
            wire += data.len() as u64;
            if rules.max_wire.is_some_and(|max| wire > max) {
                return Err(HttpError::BodyTooLarge);
            }
            let mut outputs = Vec::new();
            match &mut rules.decoder {
                None => outputs.push(data),
                Some(decoder) => {
                    let mut input = &data[..];
                    loop {
                        let mut out = vec![0u8; DECODE_STEP];
                        let (used, made) = decoder.step(input, &mut out)?;
                        input = &input[used..];
                        out.truncate(made);
                        if made > 0 {
                            decoded += made as u64;
                            check_decoded(decoded, &rules.max_decoded)?;
                            if !self.deliver(Bytes::from(out), &mut hash).await {
                                return Ok(());
                            }
                        }
                        if input.is_empty() && made < DECODE_STEP {
                            break;
                        }
                    }
                }
            }
            for data in outputs {
                decoded += data.len() as u64;
                check_decoded(decoded, &rules.max_decoded)?;
                if !self.deliver(data, &mut hash).await {
                    return Ok(());
                }
            }
        }
        if let Some(decoder) = &rules.decoder {
            if !decoder.finished() {
                return Err(HttpError::Protocol("truncated compressed body".into()));
            }
        }
        if let (Some(expected), Some(hash)) = (rules.integrity, hash) {
            if hash.finalize().as_slice() != expected {
                return Err(HttpError::IntegrityMismatch);
            }
        }
        Ok(())
    }

    async fn deliver(&self, data: Bytes, hash: &mut Option<sha2::Sha256>) -> bool {
        if let Some(hash) = hash {
            hash.update(&data);
        }
        self.push(data).await
    }
}

fn check_decoded(decoded: u64, cap: &Option<(u64, HttpError)>) -> Result<(), HttpError> {
    match cap {
        Some((max, error)) if decoded > *max => Err(error.clone()),
        _ => Ok(()),
    }
}

/// Readable when `read-chunk` would answer now.
pub(crate) struct BodyReadable(pub Arc<Body>);

impl Readiness for BodyReadable {
    fn is_ready(&self) -> bool {
        self.0.has_news()
    }
    fn register(&self, waiter: &Arc<Waiter>) {
        self.0.readable.register(waiter);
    }
}

/// The `body-stream` view.
pub(crate) struct BodySource(pub Arc<Body>);

impl ByteSource for BodySource {
    fn channel(&self) -> Option<crate::usage::Channel> {
        Some(crate::usage::Channel::Http)
    }

    fn read(&self, max: usize) -> Result<Vec<u8>, StreamFailure> {
        match self.0.take(max) {
            Ok(None) => Ok(Vec::new()),
            Ok(Some(data)) if data.is_empty() => Err(StreamFailure::Closed),
            Ok(Some(data)) => Ok(data),
            Err(HttpError::Closed) => Err(StreamFailure::Closed),
            Err(e) => Err(StreamFailure::Failed(e.guest_text())),
        }
    }

    fn readiness(&self) -> Arc<dyn Readiness> {
        Arc::new(BodyReadable(self.0.clone()))
    }
}

/// How much an upload buffers ahead of the connection.
const UPLOAD_BUFFER: usize = 256 << 10;

#[derive(Default)]
struct UploadState {
    buf: VecDeque<u8>,
    finished: bool,
    aborted: bool,
    sent: u64,
    waker: Option<Waker>,
}

/// An upload body: the guest writes, hyper reads.
#[derive(Default)]
pub(crate) struct UploadBody {
    state: Mutex<UploadState>,
    pub(crate) writable: Arc<Signal>,
}

impl UploadBody {
    pub(crate) fn finish(&self) {
        let mut state = self.state.locked();
        state.finished = true;
        if let Some(waker) = state.waker.take() {
            waker.wake();
        }
    }

    pub(crate) fn abort(&self) {
        let mut state = self.state.locked();
        state.aborted = true;
        if let Some(waker) = state.waker.take() {
            waker.wake();
        }
        drop(state);
        self.writable.notify();
    }

    pub(crate) fn poll_frame(
        &self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        let mut state = self.state.locked();
        if state.aborted {
            return Poll::Ready(Some(Err(std::io::Error::other("upload aborted"))));
        }
        if !state.buf.is_empty() {
            let n = state.buf.len().min(64 << 10);
            let chunk: Vec<u8> = state.buf.drain(..n).collect();
            state.sent += n as u64;
            drop(state);
            self.writable.notify();
            return Poll::Ready(Some(Ok(Frame::data(Bytes::from(chunk)))));
        }
        if state.finished {
            return Poll::Ready(None);
        }
        state.waker = Some(cx.waker().clone());
        Poll::Pending
    }
}

/// The `body-sink` view of an upload.
pub(crate) struct UploadSink(pub Arc<UploadBody>);

impl ByteSink for UploadSink {
    fn channel(&self) -> Option<crate::usage::Channel> {
        Some(crate::usage::Channel::Http)
    }

    fn check_write(&self) -> Result<usize, StreamFailure> {
        let state = self.0.state.locked();
        if state.finished || state.aborted {
            return Err(StreamFailure::Closed);
        }
        Ok(UPLOAD_BUFFER - state.buf.len().min(UPLOAD_BUFFER))
    }

    fn write(&self, bytes: &[u8]) -> Result<(), StreamFailure> {
        let mut state = self.0.state.locked();
        if state.finished || state.aborted {
            return Err(StreamFailure::Closed);
        }
        state.buf.extend(bytes);
        if let Some(waker) = state.waker.take() {
            waker.wake();
        }
        Ok(())
    }

    fn flush(&self) -> Result<(), StreamFailure> {
        let state = self.0.state.locked();
        if state.aborted {
            return Err(StreamFailure::Closed);
        }
        Ok(())
    }

    fn flushed(&self) -> bool {
        let state = self.0.state.locked();
        state.buf.is_empty() || state.aborted
    }

    fn readiness(&self) -> Arc<dyn Readiness> {
        Arc::new(UploadWritable(self.0.clone()))
    }
}

/// Writable while the upload buffer has room.
pub(crate) struct UploadWritable(pub Arc<UploadBody>);

impl Readiness for UploadWritable {
    fn is_ready(&self) -> bool {
        let state = self.0.state.locked();
        state.buf.len() < UPLOAD_BUFFER || state.finished || state.aborted
    }
    fn register(&self, waiter: &Arc<Waiter>) {
        self.0.writable.register(waiter);
    }
}
