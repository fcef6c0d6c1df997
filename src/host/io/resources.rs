//! The resources of `astrid:io` and the producers behind them: a pollable
//! over any [`Readiness`] source, the sanitised `error`, and byte streams
//! over [`ByteSource`] / [`ByteSink`] (sockets and HTTP bodies implement
//! them).

use crate::signal::{Readiness, Waiter};
use crate::usage::Channel;
use std::sync::Arc;

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

/// Most pollables one `poll` takes.
pub const MAX_POLL_LIST: usize = 256;
/// Most bytes one stream operation moves.
pub const MAX_STREAM_CHUNK: u64 = 1 << 20;
/// What `blocking-write-and-flush` accepts at once (as in WASI 0.2).
pub(crate) const MAX_BLOCKING_WRITE: usize = 4096;

/// A guest `pollable`: a view of some source's readiness.
pub struct Pollable {
    pub(crate) source: Arc<dyn Readiness>,
}

impl Pollable {
    pub fn new(source: Arc<dyn Readiness>) -> Self {
        Pollable { source }
    }
}

/// A guest `error`: sanitised text only.
pub struct IoError {
    pub(crate) text: String,
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
    /// Where the bytes come from, for the usage figures (`None`: nowhere counted).
    fn channel(&self) -> Option<Channel> {
        None
    }
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
    /// Where the bytes go, for the usage figures (`None`: nowhere counted).
    fn channel(&self) -> Option<Channel> {
        None
    }
}

pub struct InputStream {
    pub(crate) source: Arc<dyn ByteSource>,
}

pub struct OutputStream {
    pub(crate) sink: Arc<dyn ByteSink>,
    /// What the last `check-write` permitted and is not yet used.
    pub(crate) permit: usize,
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
