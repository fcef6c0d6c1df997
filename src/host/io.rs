//! `astrid:io@1.0.0` (host ABI §2.1): pollables over any [`Readiness`]
//! source, `poll` over up to 256 of them, the opaque `error` resource, and
//! byte streams over [`ByteSource`] / [`ByteSink`] producers (sockets and
//! HTTP bodies plug in here; [`Pipe`] is the in-memory one).
//!
//! Every wait races the call's cancel token and deadline; every pollable
//! reads as ready once the call is cancelled, and every stream operation
//! then answers `closed`.

use crate::host::audit::AuditCase;
use crate::host::state::HostState;
use crate::signal::{Readiness, Signal, Waiter};
use crate::wait::wait_for;
use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use wasmtime::component::{HasSelf, Linker, Resource};

pub(crate) mod bindings {
    wasmtime::component::bindgen!({
        inline: "package astrid-runtime:io; world imports {
            import astrid:io/error@1.0.0;
            import astrid:io/poll@1.0.0;
            import astrid:io/streams@1.0.0;
        }",
        path: ["wit/astrid-io@1.0.0"],
        world: "imports",
        with: {
            "astrid:io/poll.pollable": super::Pollable,
            "astrid:io/error.error": super::IoError,
            "astrid:io/streams.input-stream": super::InputStream,
            "astrid:io/streams.output-stream": super::OutputStream,
        },
    });
}

use bindings::astrid::io::{error, poll, streams};
use poll::ErrorCode;
use streams::StreamError;

/// Most pollables one `poll` takes.
pub const MAX_POLL_LIST: usize = 256;
/// Most bytes one stream operation moves.
pub const MAX_STREAM_CHUNK: u64 = 1 << 20;
/// What `blocking-write-and-flush` accepts at once (as in WASI 0.2).
const MAX_BLOCKING_WRITE: usize = 4096;

pub fn add_to_linker(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    error::add_to_linker::<HostState, HasSelf<HostState>>(linker, |s| s)?;
    poll::add_to_linker::<HostState, HasSelf<HostState>>(linker, |s| s)?;
    streams::add_to_linker::<HostState, HasSelf<HostState>>(linker, |s| s)
}

/// A guest `pollable`: a view of some source's readiness.
pub struct Pollable {
    source: Arc<dyn Readiness>,
}

impl Pollable {
    pub fn new(source: Arc<dyn Readiness>) -> Self {
        Pollable { source }
    }
}

/// A guest `error`: sanitised text only.
pub struct IoError {
    text: String,
}

/// Why a stream operation failed, as producers report it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StreamFailure {
    /// End of data (input) or closed (output).
    Closed,
    /// The operation failed; the text is shown to the guest (keep it generic).
    Failed(String),
}

/// Bytes a guest reads. Never blocks: the host waits on `readiness`.
pub trait ByteSource: Send + Sync {
    /// Up to `max` bytes available now; empty when none yet; `Closed` at the end.
    fn read(&self, max: usize) -> Result<Vec<u8>, StreamFailure>;
    fn readiness(&self) -> Arc<dyn Readiness>;
}

/// Bytes a guest writes. Never blocks: the host waits on `readiness`.
pub trait ByteSink: Send + Sync {
    /// How many bytes `write` accepts now.
    fn check_write(&self) -> Result<usize, StreamFailure>;
    fn write(&self, bytes: &[u8]) -> Result<(), StreamFailure>;
    /// Starts pushing out; `flushed` tells when it is done.
    fn flush(&self) -> Result<(), StreamFailure>;
    fn flushed(&self) -> bool {
        true
    }
    fn readiness(&self) -> Arc<dyn Readiness>;
}

pub struct InputStream {
    source: Arc<dyn ByteSource>,
}

pub struct OutputStream {
    sink: Arc<dyn ByteSink>,
    /// What the last `check-write` permitted and is not yet used.
    permit: usize,
}

impl InputStream {
    pub fn new(source: Arc<dyn ByteSource>) -> Self {
        InputStream { source }
    }
}

impl OutputStream {
    pub fn new(sink: Arc<dyn ByteSink>) -> Self {
        OutputStream { sink, permit: 0 }
    }
}

impl HostState {
    fn stream_failure(&mut self, failure: StreamFailure) -> StreamError {
        match failure {
            StreamFailure::Closed => StreamError::Closed,
            StreamFailure::Failed(text) => match self.table.push(IoError { text }) {
                Ok(error) => StreamError::LastOperationFailed(error),
                Err(_) => StreamError::Closed,
            },
        }
    }

    fn input(&self, this: &Resource<InputStream>) -> Option<Arc<dyn ByteSource>> {
        self.table.get(this).ok().map(|s| s.source.clone())
    }

    fn read_stream(
        &mut self,
        this: &Resource<InputStream>,
        len: u64,
        blocking: bool,
    ) -> Result<Vec<u8>, StreamError> {
        if self.call.token.is_cancelled() {
            return Err(StreamError::Closed);
        }
        let source = self.input(this).ok_or(StreamError::Closed)?;
        let max = len.min(MAX_STREAM_CHUNK) as usize;
        if max == 0 {
            return Ok(Vec::new());
        }
        let mut outcome = source.read(max);
        if blocking && matches!(&outcome, Ok(b) if b.is_empty()) {
            let readiness = source.readiness();
            let (token, deadline) = (self.call.token.clone(), self.call.deadline);
            let mut last = Ok(Vec::new());
            let done = wait_for(&[&*readiness], &token, deadline, || {
                last = source.read(max);
                !matches!(&last, Ok(b) if b.is_empty())
            });
            if !done {
                return Err(StreamError::Closed);
            }
            outcome = last;
        }
        outcome.map_err(|f| self.stream_failure(f))
    }

    fn output(&self, this: &Resource<OutputStream>) -> Option<Arc<dyn ByteSink>> {
        self.table.get(this).ok().map(|s| s.sink.clone())
    }

    fn write_stream(
        &mut self,
        this: &Resource<OutputStream>,
        bytes: &[u8],
    ) -> Result<(), StreamError> {
        if self.call.token.is_cancelled() {
            return Err(StreamError::Closed);
        }
        let stream = self.table.get_mut(this).map_err(|_| StreamError::Closed)?;
        if bytes.len() > stream.permit || bytes.len() as u64 > MAX_STREAM_CHUNK {
            let failure = StreamFailure::Failed("write exceeds what check-write permitted".into());
            return Err(self.stream_failure(failure));
        }
        stream.permit -= bytes.len();
        let sink = stream.sink.clone();
        sink.write(bytes).map_err(|f| self.stream_failure(f))
    }

    /// Waits for room, writes `bytes` (at most 4096), then waits for the flush.
    fn blocking_write_flush(
        &mut self,
        this: &Resource<OutputStream>,
        bytes: &[u8],
    ) -> Result<(), StreamError> {
        if bytes.len() > MAX_BLOCKING_WRITE {
            let failure =
                StreamFailure::Failed("more than 4096 bytes in one blocking write".into());
            return Err(self.stream_failure(failure));
        }
        let sink = self.output(this).ok_or(StreamError::Closed)?;
        let mut rest = bytes;
        while !rest.is_empty() {
            let room = self.wait_writable(&sink)?;
            let (now, later) = rest.split_at(room.min(rest.len()));
            sink.write(now).map_err(|f| self.stream_failure(f))?;
            rest = later;
        }
        self.blocking_flush_sink(&sink)
    }

    /// Waits until the sink accepts at least one byte; returns how many.
    fn wait_writable(&mut self, sink: &Arc<dyn ByteSink>) -> Result<usize, StreamError> {
        let readiness = sink.readiness();
        let (token, deadline) = (self.call.token.clone(), self.call.deadline);
        let mut last = Ok(0);
        let done = wait_for(&[&*readiness], &token, deadline, || {
            last = sink.check_write();
            !matches!(last, Ok(0))
        });
        if !done {
            return Err(StreamError::Closed);
        }
        last.map_err(|f| self.stream_failure(f))
    }

    fn blocking_flush_sink(&mut self, sink: &Arc<dyn ByteSink>) -> Result<(), StreamError> {
        sink.flush().map_err(|f| self.stream_failure(f))?;
        let readiness = sink.readiness();
        let (token, deadline) = (self.call.token.clone(), self.call.deadline);
        if !wait_for(&[&*readiness], &token, deadline, || sink.flushed()) {
            return Err(StreamError::Closed);
        }
        Ok(())
    }

    fn splice_stream(
        &mut self,
        this: &Resource<OutputStream>,
        src: &Resource<InputStream>,
        len: u64,
        blocking: bool,
    ) -> Result<u64, StreamError> {
        if self.call.token.is_cancelled() {
            return Err(StreamError::Closed);
        }
        let sink = self.output(this).ok_or(StreamError::Closed)?;
        let room = if blocking {
            self.wait_writable(&sink)?
        } else {
            sink.check_write().map_err(|f| self.stream_failure(f))?
        };
        let want = len.min(MAX_STREAM_CHUNK).min(room as u64);
        if want == 0 {
            return Ok(0);
        }
        let data = self.read_stream(src, want, blocking)?;
        sink.write(&data).map_err(|f| self.stream_failure(f))?;
        Ok(data.len() as u64)
    }
}

impl AuditCase for StreamError {
    fn case(&self) -> String {
        match self {
            StreamError::Closed => "closed".into(),
            StreamError::LastOperationFailed(_) => "last-operation-failed".into(),
        }
    }
}

impl AuditCase for ErrorCode {
    fn case(&self) -> String {
        match self {
            ErrorCode::InvalidInput => "invalid-input".into(),
            ErrorCode::Closed => "closed".into(),
            ErrorCode::TooLarge => "too-large".into(),
            ErrorCode::Cancelled => "cancelled".into(),
            ErrorCode::Unknown(text) => format!("unknown({text})"),
        }
    }
}

impl error::Host for HostState {}

impl error::HostError for HostState {
    fn to_debug_string(&mut self, this: Resource<IoError>) -> String {
        self.table
            .get(&this)
            .map(|e| e.text.clone())
            .unwrap_or_default()
    }

    fn drop(&mut self, this: Resource<IoError>) -> wasmtime::Result<()> {
        self.table.delete(this)?;
        Ok(())
    }
}

impl poll::HostPollable for HostState {
    fn ready(&mut self, this: Resource<Pollable>) -> bool {
        let Ok(ready) = self.audited("io.pollable.ready", None, 0, |state| {
            let ready = state.call.token.is_cancelled()
                || state.table.get(&this).map_or(true, |p| p.source.is_ready());
            Ok::<_, Infallible>(ready)
        });
        ready
    }

    fn block(&mut self, this: Resource<Pollable>) -> Result<(), ErrorCode> {
        let result = self.audited("io.pollable.block", None, 0, |state| {
            (|| {
                let source = state
                    .table
                    .get(&this)
                    .map_err(|_| ErrorCode::Closed)?
                    .source
                    .clone();
                let (token, deadline) = (state.call.token.clone(), state.call.deadline);
                if wait_for(&[&*source], &token, deadline, || source.is_ready()) {
                    Ok(())
                } else {
                    Err(ErrorCode::Cancelled)
                }
            })()
        });
        self.note_waited();
        result
    }

    fn drop(&mut self, this: Resource<Pollable>) -> wasmtime::Result<()> {
        self.table.delete(this)?;
        Ok(())
    }
}

impl poll::Host for HostState {
    fn poll(&mut self, pollables: Vec<Resource<Pollable>>) -> Result<Vec<u32>, ErrorCode> {
        let result = self.audited("io.poll", None, 0, |state| {
            (|| {
                if pollables.is_empty() {
                    return Err(ErrorCode::InvalidInput);
                }
                if pollables.len() > MAX_POLL_LIST {
                    return Err(ErrorCode::TooLarge);
                }
                let sources = pollables
                    .iter()
                    .map(|p| state.table.get(p).map(|p| p.source.clone()))
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|_| ErrorCode::Closed)?;
                let views: Vec<&dyn Readiness> = sources.iter().map(|s| &**s).collect();
                let (token, deadline) = (state.call.token.clone(), state.call.deadline);
                let ready_now = || -> Vec<u32> {
                    (0u32..)
                        .zip(&sources)
                        .filter(|(_, s)| s.is_ready())
                        .map(|(i, _)| i)
                        .collect()
                };
                let mut found = Vec::new();
                if wait_for(&views, &token, deadline, || {
                    found = ready_now();
                    !found.is_empty()
                }) {
                    Ok(found)
                } else {
                    Err(ErrorCode::Cancelled)
                }
            })()
        });
        self.note_waited();
        result
    }
}

impl streams::Host for HostState {}

impl streams::HostInputStream for HostState {
    fn read(&mut self, this: Resource<InputStream>, len: u64) -> Result<Vec<u8>, StreamError> {
        self.audited("io.input-stream.read", None, 0, |state| {
            state.read_stream(&this, len, false)
        })
    }

    fn blocking_read(
        &mut self,
        this: Resource<InputStream>,
        len: u64,
    ) -> Result<Vec<u8>, StreamError> {
        let result = self.audited("io.input-stream.blocking-read", None, 0, |state| {
            state.read_stream(&this, len, true)
        });
        self.note_waited();
        result
    }

    fn skip(&mut self, this: Resource<InputStream>, len: u64) -> Result<u64, StreamError> {
        self.audited("io.input-stream.skip", None, 0, |state| {
            state.read_stream(&this, len, false).map(|b| b.len() as u64)
        })
    }

    fn blocking_skip(&mut self, this: Resource<InputStream>, len: u64) -> Result<u64, StreamError> {
        let result = self.audited("io.input-stream.blocking-skip", None, 0, |state| {
            state.read_stream(&this, len, true).map(|b| b.len() as u64)
        });
        self.note_waited();
        result
    }

    fn subscribe(&mut self, this: Resource<InputStream>) -> Resource<Pollable> {
        let source: Arc<dyn Readiness> = match self.input(&this) {
            Some(source) => source.readiness(),
            None => Arc::new(AlwaysReady),
        };
        self.push_pollable(source)
    }

    fn drop(&mut self, this: Resource<InputStream>) -> wasmtime::Result<()> {
        self.table.delete(this)?;
        Ok(())
    }
}

impl streams::HostOutputStream for HostState {
    fn check_write(&mut self, this: Resource<OutputStream>) -> Result<u64, StreamError> {
        self.audited("io.output-stream.check-write", None, 0, |state| {
            (|| {
                if state.call.token.is_cancelled() {
                    return Err(StreamError::Closed);
                }
                let stream = state
                    .table
                    .get_mut(&this)
                    .map_err(|_| StreamError::Closed)?;
                match stream.sink.check_write() {
                    Ok(room) => {
                        let room = room.min(MAX_STREAM_CHUNK as usize);
                        stream.permit = room;
                        Ok(room as u64)
                    }
                    Err(f) => Err(state.stream_failure(f)),
                }
            })()
        })
    }

    fn write(
        &mut self,
        this: Resource<OutputStream>,
        contents: Vec<u8>,
    ) -> Result<(), StreamError> {
        self.audited(
            "io.output-stream.write",
            None,
            contents.len() as u64,
            |state| state.write_stream(&this, &contents),
        )
    }

    fn blocking_write_and_flush(
        &mut self,
        this: Resource<OutputStream>,
        contents: Vec<u8>,
    ) -> Result<(), StreamError> {
        let result = self.audited(
            "io.output-stream.blocking-write-and-flush",
            None,
            contents.len() as u64,
            |state| {
                if state.call.token.is_cancelled() {
                    Err(StreamError::Closed)
                } else {
                    state.blocking_write_flush(&this, &contents)
                }
            },
        );
        self.note_waited();
        result
    }

    fn flush(&mut self, this: Resource<OutputStream>) -> Result<(), StreamError> {
        self.audited("io.output-stream.flush", None, 0, |state| {
            match state.output(&this) {
                _ if state.call.token.is_cancelled() => Err(StreamError::Closed),
                Some(sink) => sink.flush().map_err(|f| state.stream_failure(f)),
                None => Err(StreamError::Closed),
            }
        })
    }

    fn blocking_flush(&mut self, this: Resource<OutputStream>) -> Result<(), StreamError> {
        let result = self.audited(
            "io.output-stream.blocking-flush",
            None,
            0,
            |state| match state.output(&this) {
                _ if state.call.token.is_cancelled() => Err(StreamError::Closed),
                Some(sink) => state.blocking_flush_sink(&sink),
                None => Err(StreamError::Closed),
            },
        );
        self.note_waited();
        result
    }

    fn subscribe(&mut self, this: Resource<OutputStream>) -> Resource<Pollable> {
        let source: Arc<dyn Readiness> = match self.output(&this) {
            Some(sink) => sink.readiness(),
            None => Arc::new(AlwaysReady),
        };
        self.push_pollable(source)
    }

    fn write_zeroes(&mut self, this: Resource<OutputStream>, len: u64) -> Result<(), StreamError> {
        self.audited(
            "io.output-stream.write-zeroes",
            None,
            len,
            |state| match usize::try_from(len) {
                Ok(n) if len <= MAX_STREAM_CHUNK => state.write_stream(&this, &vec![0; n]),
                _ => {
                    let failure = StreamFailure::Failed("more than 1 MiB in one write".into());
                    Err(state.stream_failure(failure))
                }
            },
        )
    }

    fn blocking_write_zeroes_and_flush(
        &mut self,
        this: Resource<OutputStream>,
        len: u64,
    ) -> Result<(), StreamError> {
        let result = self.audited(
            "io.output-stream.blocking-write-zeroes-and-flush",
            None,
            len,
            |state| {
                if state.call.token.is_cancelled() {
                    Err(StreamError::Closed)
                } else if len > MAX_BLOCKING_WRITE as u64 {
                    let failure =
                        StreamFailure::Failed("more than 4096 bytes in one blocking write".into());
                    Err(state.stream_failure(failure))
                } else {
                    state.blocking_write_flush(&this, &vec![0; len as usize])
                }
            },
        );
        self.note_waited();
        result
    }

    fn splice(
        &mut self,
        this: Resource<OutputStream>,
        src: Resource<InputStream>,
        len: u64,
    ) -> Result<u64, StreamError> {
        self.audited("io.output-stream.splice", None, 0, |state| {
            state.splice_stream(&this, &src, len, false)
        })
    }

    fn blocking_splice(
        &mut self,
        this: Resource<OutputStream>,
        src: Resource<InputStream>,
        len: u64,
    ) -> Result<u64, StreamError> {
        let result = self.audited("io.output-stream.blocking-splice", None, 0, |state| {
            state.splice_stream(&this, &src, len, true)
        });
        self.note_waited();
        result
    }

    fn drop(&mut self, this: Resource<OutputStream>) -> wasmtime::Result<()> {
        self.table.delete(this)?;
        Ok(())
    }
}

impl HostState {
    /// A new guest pollable over `source` (a stand-in that is always ready
    /// if the table is full, so a guest waiting on it cannot hang).
    /// A new guest input stream over `source` (a dead handle if the table
    /// is full: using it fails like any closed handle).
    pub(crate) fn push_input_stream(
        &mut self,
        source: Arc<dyn ByteSource>,
    ) -> Resource<InputStream> {
        self.table
            .push(InputStream::new(source))
            .unwrap_or_else(|_| Resource::new_own(u32::MAX))
    }

    /// A new guest output stream over `sink` (see `push_input_stream`).
    pub(crate) fn push_output_stream(&mut self, sink: Arc<dyn ByteSink>) -> Resource<OutputStream> {
        self.table
            .push(OutputStream::new(sink))
            .unwrap_or_else(|_| Resource::new_own(u32::MAX))
    }

    pub(crate) fn push_pollable(&mut self, source: Arc<dyn Readiness>) -> Resource<Pollable> {
        match self.table.push(Pollable::new(source)) {
            Ok(resource) => resource,
            Err(_) => Resource::new_own(u32::MAX),
        }
    }
}

/// A stream that reports `closed` on first use (a view asked for twice, an
/// endpoint that is gone).
pub struct ClosedStream;

impl ByteSource for ClosedStream {
    fn read(&self, _max: usize) -> Result<Vec<u8>, StreamFailure> {
        Err(StreamFailure::Closed)
    }
    fn readiness(&self) -> Arc<dyn Readiness> {
        Arc::new(AlwaysReady)
    }
}

impl ByteSink for ClosedStream {
    fn check_write(&self) -> Result<usize, StreamFailure> {
        Err(StreamFailure::Closed)
    }
    fn write(&self, _bytes: &[u8]) -> Result<(), StreamFailure> {
        Err(StreamFailure::Closed)
    }
    fn flush(&self) -> Result<(), StreamFailure> {
        Err(StreamFailure::Closed)
    }
    fn readiness(&self) -> Arc<dyn Readiness> {
        Arc::new(AlwaysReady)
    }
}

/// A source that is always ready (closed streams, gone subscriptions).
pub struct AlwaysReady;

impl Readiness for AlwaysReady {
    fn is_ready(&self) -> bool {
        true
    }
    fn register(&self, _waiter: &Arc<Waiter>) {}
}

/// An in-memory byte pipe: one side writes, the other reads, with a
/// bounded buffer. The in-memory producer for streams, and what tests use.
pub struct Pipe {
    state: Mutex<PipeState>,
    signal: Signal,
    capacity: usize,
}

#[derive(Default)]
struct PipeState {
    buffer: VecDeque<u8>,
    writer_closed: bool,
    reader_closed: bool,
}

impl Pipe {
    pub fn new(capacity: usize) -> Arc<Pipe> {
        Arc::new(Pipe {
            state: Mutex::new(PipeState::default()),
            signal: Signal::default(),
            capacity,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, PipeState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// No more bytes will be written: the reader sees `closed` after the rest.
    pub fn close_writer(&self) {
        self.lock().writer_closed = true;
        self.signal.notify();
    }

    /// The reader is gone: writes fail with `closed`.
    pub fn close_reader(&self) {
        let mut state = self.lock();
        state.reader_closed = true;
        state.buffer.clear();
        drop(state);
        self.signal.notify();
    }
}

/// The reading end of a [`Pipe`].
pub struct PipeReader(pub Arc<Pipe>);
/// The writing end of a [`Pipe`].
pub struct PipeWriter(pub Arc<Pipe>);

struct PipeReadable(Arc<Pipe>);
struct PipeWritable(Arc<Pipe>);

impl Readiness for PipeReadable {
    fn is_ready(&self) -> bool {
        let state = self.0.lock();
        !state.buffer.is_empty() || state.writer_closed || state.reader_closed
    }
    fn register(&self, waiter: &Arc<Waiter>) {
        self.0.signal.register(waiter);
    }
}

impl Readiness for PipeWritable {
    fn is_ready(&self) -> bool {
        let state = self.0.lock();
        state.buffer.len() < self.0.capacity || state.reader_closed || state.writer_closed
    }
    fn register(&self, waiter: &Arc<Waiter>) {
        self.0.signal.register(waiter);
    }
}

impl ByteSource for PipeReader {
    fn read(&self, max: usize) -> Result<Vec<u8>, StreamFailure> {
        let mut state = self.0.lock();
        if state.reader_closed || (state.buffer.is_empty() && state.writer_closed) {
            return Err(StreamFailure::Closed);
        }
        let n = max.min(state.buffer.len());
        let bytes: Vec<u8> = state.buffer.drain(..n).collect();
        drop(state);
        if n > 0 {
            self.0.signal.notify();
        }
        Ok(bytes)
    }

    fn readiness(&self) -> Arc<dyn Readiness> {
        Arc::new(PipeReadable(self.0.clone()))
    }
}

impl ByteSink for PipeWriter {
    fn check_write(&self) -> Result<usize, StreamFailure> {
        let state = self.0.lock();
        if state.reader_closed || state.writer_closed {
            return Err(StreamFailure::Closed);
        }
        Ok(self.0.capacity - state.buffer.len())
    }

    fn write(&self, bytes: &[u8]) -> Result<(), StreamFailure> {
        let mut state = self.0.lock();
        if state.reader_closed || state.writer_closed {
            return Err(StreamFailure::Closed);
        }
        if state.buffer.len() + bytes.len() > self.0.capacity {
            return Err(StreamFailure::Failed("the stream's buffer is full".into()));
        }
        state.buffer.extend(bytes);
        drop(state);
        self.0.signal.notify();
        Ok(())
    }

    fn flush(&self) -> Result<(), StreamFailure> {
        if self.0.lock().reader_closed {
            return Err(StreamFailure::Closed);
        }
        Ok(())
    }

    fn readiness(&self) -> Arc<dyn Readiness> {
        Arc::new(PipeWritable(self.0.clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pipe_reads_what_was_written_then_closed() {
        let pipe = Pipe::new(8);
        let (reader, writer) = (PipeReader(pipe.clone()), PipeWriter(pipe.clone()));
        assert_eq!(reader.read(4).unwrap(), b"");
        assert!(!reader.readiness().is_ready());
        assert_eq!(writer.check_write().unwrap(), 8);
        writer.write(b"hello").unwrap();
        assert_eq!(writer.check_write().unwrap(), 3);
        assert!(writer.write(b"toolong").is_err(), "beyond the permit");
        assert!(reader.readiness().is_ready());
        assert_eq!(reader.read(3).unwrap(), b"hel");
        pipe.close_writer();
        assert_eq!(reader.read(10).unwrap(), b"lo");
        assert_eq!(reader.read(10), Err(StreamFailure::Closed));
        assert_eq!(writer.check_write(), Err(StreamFailure::Closed));
    }
}

/// The stream and poll host functions exercised on a real capsule's store
/// state, with in-memory pipes standing in for the producers that arrive
/// with net/http.
#[cfg(test)]
mod host_tests {
    use super::*;
    use crate::cancel::CancelToken;
    use crate::{Capsule, LoadOptions, Runtime, RuntimeConfig};
    use poll::{Host as _, HostPollable as _};
    use std::time::{Duration, Instant};
    use streams::{HostInputStream as _, HostOutputStream as _};

    fn state() -> (Runtime, Capsule, HostState) {
        let rt = Runtime::new(RuntimeConfig::default()).unwrap();
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("build/capsules/hello");
        let capsule = rt
            .load_dir(&dir, &LoadOptions::default())
            .expect("build the capsules first (scripts/build-capsules.sh)");
        let mut state = HostState::new(capsule.inner.shared.clone(), 64 << 20);
        state.call.token = CancelToken::new();
        state.call.deadline = Instant::now() + Duration::from_secs(10);
        (rt, capsule, state)
    }

    fn input(state: &mut HostState, pipe: &Arc<Pipe>) -> Resource<InputStream> {
        let source: Arc<dyn ByteSource> = Arc::new(PipeReader(pipe.clone()));
        state.table.push(InputStream::new(source)).unwrap()
    }

    fn output(state: &mut HostState, pipe: &Arc<Pipe>) -> Resource<OutputStream> {
        let sink: Arc<dyn ByteSink> = Arc::new(PipeWriter(pipe.clone()));
        state.table.push(OutputStream::new(sink)).unwrap()
    }

    fn again<T: 'static>(r: &Resource<T>) -> Resource<T> {
        Resource::new_borrow(r.rep())
    }

    #[test]
    fn input_streams_read_wait_end_and_close_on_cancel() {
        let (_rt, _capsule, mut state) = state();
        let pipe = Pipe::new(4 << 20);
        let stream = input(&mut state, &pipe);
        assert_eq!(state.read(again(&stream), 10).unwrap(), b"");
        PipeWriter(pipe.clone())
            .write(&vec![7u8; (2 << 20) + 5])
            .unwrap();
        // One read moves at most 1 MiB, whatever the guest asks for.
        assert_eq!(state.read(again(&stream), u64::MAX).unwrap().len(), 1 << 20);
        assert_eq!(state.skip(again(&stream), 1 << 20).unwrap(), 1 << 20);
        assert_eq!(state.read(again(&stream), 100).unwrap(), vec![7u8; 5]);
        // blocking-read waits for a writer on another thread.
        let writer = {
            let pipe = pipe.clone();
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(30));
                PipeWriter(pipe).write(b"late").unwrap();
            })
        };
        assert_eq!(state.blocking_read(again(&stream), 100).unwrap(), b"late");
        writer.join().unwrap();
        // Readiness through a pollable and `poll`.
        let ready = streams::HostInputStream::subscribe(&mut state, again(&stream));
        assert!(!state.ready(again(&ready)));
        PipeWriter(pipe.clone()).write(b"x").unwrap();
        assert_eq!(
            state.poll(vec![again(&ready), again(&ready)]).unwrap(),
            vec![0, 1]
        );
        // End of data is `closed`, after what was written.
        pipe.close_writer();
        assert_eq!(state.read(again(&stream), 10).unwrap(), b"x");
        assert!(matches!(
            state.read(again(&stream), 10),
            Err(StreamError::Closed)
        ));
        // Once cancelled, every operation answers `closed`, blocking or not.
        let other = Pipe::new(16);
        let fresh = input(&mut state, &other);
        state.call.token.cancel();
        assert!(matches!(
            state.read(again(&fresh), 1),
            Err(StreamError::Closed)
        ));
        let started = Instant::now();
        assert!(matches!(
            state.blocking_read(again(&fresh), 1),
            Err(StreamError::Closed)
        ));
        assert!(started.elapsed() < Duration::from_secs(1));
        // And every pollable reads as ready.
        let pollable = streams::HostInputStream::subscribe(&mut state, again(&fresh));
        assert!(state.ready(again(&pollable)));
        assert!(matches!(
            state.block(again(&pollable)),
            Err(ErrorCode::Cancelled)
        ));
    }

    #[test]
    fn output_streams_honour_check_write_permits() {
        let (_rt, _capsule, mut state) = state();
        let pipe = Pipe::new(8);
        let stream = output(&mut state, &pipe);
        // No permit yet: a write fails with last-operation-failed.
        match state.write(again(&stream), b"abc".to_vec()) {
            Err(StreamError::LastOperationFailed(error)) => {
                let text = error::HostError::to_debug_string(&mut state, error);
                assert!(text.contains("check-write"), "{text}");
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(state.check_write(again(&stream)).unwrap(), 8);
        state.write(again(&stream), b"abcde".to_vec()).unwrap();
        // The permit shrinks by what was written.
        assert!(state.write(again(&stream), b"wxyz".to_vec()).is_err());
        assert_eq!(state.check_write(again(&stream)).unwrap(), 3);
        assert!(state.write_zeroes(again(&stream), (1 << 20) + 1).is_err());
        // A blocking write waits for the reader to make room.
        let reader = {
            let pipe = pipe.clone();
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(30));
                PipeReader(pipe).read(8).unwrap()
            })
        };
        state
            .blocking_write_and_flush(again(&stream), b"0123456".to_vec())
            .unwrap();
        // It filled the room there was, waited, then wrote the rest.
        assert_eq!(reader.join().unwrap(), b"abcde012");
        assert_eq!(PipeReader(pipe.clone()).read(16).unwrap(), b"3456");
        assert!(state
            .blocking_write_and_flush(again(&stream), vec![0; 4097])
            .is_err());
        // Splice moves bytes from an input stream into this one.
        let source_pipe = Pipe::new(64);
        let source = input(&mut state, &source_pipe);
        PipeWriter(source_pipe.clone()).write(b"spliced!").unwrap();
        assert_eq!(
            state.splice(again(&stream), again(&source), 100).unwrap(),
            8
        );
        assert_eq!(PipeReader(pipe.clone()).read(16).unwrap(), b"spliced!");
        // A closed reader ends the output stream.
        pipe.close_reader();
        assert!(matches!(
            state.check_write(again(&stream)),
            Err(StreamError::Closed)
        ));
    }

    #[test]
    fn poll_limits() {
        let (_rt, _capsule, mut state) = state();
        assert!(matches!(
            state.poll(Vec::new()),
            Err(ErrorCode::InvalidInput)
        ));
        let pipe = Pipe::new(8);
        let stream = input(&mut state, &pipe);
        let ready = streams::HostInputStream::subscribe(&mut state, again(&stream));
        let many: Vec<_> = (0..=MAX_POLL_LIST).map(|_| again(&ready)).collect();
        assert!(matches!(state.poll(many), Err(ErrorCode::TooLarge)));
        // Nothing ready: poll gives up with `cancelled` at the call's deadline.
        state.call.deadline = Instant::now() + Duration::from_millis(50);
        assert!(matches!(
            state.poll(vec![again(&ready)]),
            Err(ErrorCode::Cancelled)
        ));
    }
}
