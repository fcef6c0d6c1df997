//! The call-scoped resources an HTTP call hands the guest: a streaming
//! response and an upload in progress.

use super::body::{Body, BodyReadable, BodySource, UploadBody, UploadSink, UploadWritable};
use super::exchange::{Exchange, Fetched, HopInFlight};
use super::options::Options;
use super::view::HttpView;
use crate::host::net::QuotaSlot;
use crate::host::view::CallScoped;
use crate::signal::MutexExt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

pub(crate) struct AbortOnDrop(pub(crate) tokio::task::AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// An open response body (`http-stream`).
pub(crate) struct Stream {
    pub(crate) status: u16,
    pub(crate) headers: Vec<(String, String)>,
    pub(crate) body: Arc<Body>,
    pub(crate) task: tokio::task::AbortHandle,
    pub(crate) body_taken: AtomicBool,
    /// Given back when closed: a closed resource the guest keeps does not
    /// count against the quota.
    pub(crate) slot: Mutex<Option<QuotaSlot>>,
}

impl Stream {
    pub(crate) fn open(
        state: &HttpView<'_>,
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
        self.slot.locked().take();
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

pub(crate) struct UploadState {
    pub(crate) exchange: Exchange,
    pub(crate) first: HopInFlight,
    pub(crate) opts: Options,
    pub(crate) slot: QuotaSlot,
}

/// An upload in progress (`http-upload`).
pub(crate) struct Upload {
    pub(crate) body: Arc<UploadBody>,
    pub(crate) sink_taken: AtomicBool,
    /// Taken by `finish`.
    pub(crate) state: Mutex<Option<UploadState>>,
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
        self.state.locked().take();
    }
}

impl Drop for Upload {
    fn drop(&mut self) {
        self.body.abort();
    }
}
