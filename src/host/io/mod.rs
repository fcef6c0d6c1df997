//! `astrid:io@1.0.0` (host ABI §2.1): pollables over any [`Readiness`]
//! source, `poll` over up to 256 of them, the opaque `error` resource, and
//! byte streams over [`ByteSource`] / [`ByteSink`] producers (sockets and
//! HTTP bodies plug in here; tests use an in-memory pipe).
//!
//! Every wait races the call's cancel token and deadline; every pollable
//! reads as ready once the call is cancelled, and every stream operation
//! then answers `closed`.

mod host;
#[cfg(test)]
mod pipe;
mod resources;

pub(crate) use host::add_to_linker;
pub(crate) use host::{push_input_stream, push_output_stream, push_pollable, IoView};
pub(crate) use resources::bindings;
pub use resources::{
    AlwaysReady, ByteSink, ByteSource, ClosedStream, InputStream, IoError, OutputStream, Pollable,
    StreamFailure, MAX_POLL_LIST, MAX_STREAM_CHUNK,
};
