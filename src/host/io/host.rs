//! `astrid:io/error`, `poll` and `streams` as the guest calls them. Every
//! wait races the call's cancel token and deadline; every pollable reads as
//! ready once the call is cancelled, and every stream operation then
//! answers `closed`.

use super::resources::bindings::astrid::io::{error, poll, streams};
use super::resources::{
    AlwaysReady, ByteSink, ByteSource, InputStream, IoError, OutputStream, Pollable, StreamFailure,
    MAX_BLOCKING_WRITE, MAX_POLL_LIST, MAX_STREAM_CHUNK,
};
use crate::host::audit::audit_cases;
use crate::host::audit::Audited;
use crate::host::call::CallContext;
use crate::host::shared::CapsuleShared;
use crate::host::view::{host_view, HostView};
use crate::signal::Readiness;
use crate::usage::Channel;
use crate::wait::wait_for;
use poll::ErrorCode;
use std::convert::Infallible;
use std::sync::Arc;
use streams::StreamError;
use wasmtime::component::{Linker, Resource, ResourceTable};

/// What `astrid:io` sees of a store: the capsule and the call (whose
/// token and deadline bound every wait) and the resource table the
/// pollables and streams of every interface live in.
pub(crate) struct IoView<'a> {
    pub(crate) capsule: &'a Arc<CapsuleShared>,
    pub(crate) call: &'a CallContext,
    pub(crate) table: &'a mut ResourceTable,
}

host_view!(IoView, IoData);

pub(crate) fn add_to_linker<T: 'static>(
    linker: &mut Linker<T>,
    view: fn(&mut T) -> IoView<'_>,
) -> wasmtime::Result<()> {
    error::add_to_linker::<T, IoData>(linker, view)?;
    poll::add_to_linker::<T, IoData>(linker, view)?;
    streams::add_to_linker::<T, IoData>(linker, view)
}

impl IoView<'_> {
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
        if let Ok(bytes) = &outcome {
            self.count_moved(source.channel(), bytes.len(), 0);
        }
        outcome.map_err(|f| self.stream_failure(f))
    }

    /// Counts bytes a stream moved in its producer's channel (net, http).
    fn count_moved(&self, channel: Option<Channel>, read: usize, written: usize) {
        if let Some(channel) = channel {
            self.capsule
                .usage
                .moved(channel, read as u64, written as u64);
        }
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
        sink.write(bytes).map_err(|f| self.stream_failure(f))?;
        self.count_moved(sink.channel(), 0, bytes.len());
        Ok(())
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
            self.count_moved(sink.channel(), 0, now.len());
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
        self.count_moved(sink.channel(), 0, data.len());
        Ok(data.len() as u64)
    }
}

audit_cases! {
    StreamError {
        StreamError::Closed => "closed",
        StreamError::LastOperationFailed(_) => "last-operation-failed",
    }
    denials: []
}

audit_cases! {
    ErrorCode {
        ErrorCode::InvalidInput => "invalid-input",
        ErrorCode::Closed => "closed",
        ErrorCode::TooLarge => "too-large",
        ErrorCode::Cancelled => "cancelled",
    }
    unknown: ErrorCode::Unknown,
    denials: []
}

impl error::Host for IoView<'_> {}

impl error::HostError for IoView<'_> {
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

impl poll::HostPollable for IoView<'_> {
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
        self.ctx().note_waited();
        result
    }

    fn drop(&mut self, this: Resource<Pollable>) -> wasmtime::Result<()> {
        self.table.delete(this)?;
        Ok(())
    }
}

impl poll::Host for IoView<'_> {
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
        self.ctx().note_waited();
        result
    }
}

impl streams::Host for IoView<'_> {}

impl streams::HostInputStream for IoView<'_> {
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
        self.ctx().note_waited();
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
        self.ctx().note_waited();
        result
    }

    fn subscribe(&mut self, this: Resource<InputStream>) -> Resource<Pollable> {
        let source: Arc<dyn Readiness> = match self.input(&this) {
            Some(source) => source.readiness(),
            None => Arc::new(AlwaysReady),
        };
        push_pollable(self.table, source)
    }

    fn drop(&mut self, this: Resource<InputStream>) -> wasmtime::Result<()> {
        self.table.delete(this)?;
        Ok(())
    }
}

impl streams::HostOutputStream for IoView<'_> {
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
        self.ctx().note_waited();
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
        self.ctx().note_waited();
        result
    }

    fn subscribe(&mut self, this: Resource<OutputStream>) -> Resource<Pollable> {
        let source: Arc<dyn Readiness> = match self.output(&this) {
            Some(sink) => sink.readiness(),
            None => Arc::new(AlwaysReady),
        };
        push_pollable(self.table, source)
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
        self.ctx().note_waited();
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
        self.ctx().note_waited();
        result
    }

    fn drop(&mut self, this: Resource<OutputStream>) -> wasmtime::Result<()> {
        self.table.delete(this)?;
        Ok(())
    }
}

/// A new guest pollable over `source` (a stand-in that is always ready if
/// the table is full, so a guest waiting on it cannot hang).
pub(crate) fn push_pollable(
    table: &mut ResourceTable,
    source: Arc<dyn Readiness>,
) -> Resource<Pollable> {
    match table.push(Pollable::new(source)) {
        Ok(resource) => resource,
        Err(_) => Resource::new_own(u32::MAX),
    }
}

/// A new guest input stream over `source` (a dead handle if the table is
/// full: using it fails like any closed handle).
pub(crate) fn push_input_stream(
    table: &mut ResourceTable,
    source: Arc<dyn ByteSource>,
) -> Resource<InputStream> {
    table
        .push(InputStream::new(source))
        .unwrap_or_else(|_| Resource::new_own(u32::MAX))
}

/// A new guest output stream over `sink` (see [`push_input_stream`]).
pub(crate) fn push_output_stream(
    table: &mut ResourceTable,
    sink: Arc<dyn ByteSink>,
) -> Resource<OutputStream> {
    table
        .push(OutputStream::new(sink))
        .unwrap_or_else(|_| Resource::new_own(u32::MAX))
}
