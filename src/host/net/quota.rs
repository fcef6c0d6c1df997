//! A capsule's socket quotas (host ABI §2.6), counted over all its
//! instances, and the unix socket path the embedder assigned it.

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// Open tcp-streams per capsule (accepted plus connected, unix plus TCP).
pub const MAX_STREAMS: usize = 8;
pub const MAX_TCP_LISTENERS: usize = 4;
pub const MAX_UNIX_LISTENERS: usize = 1;
pub const MAX_UDP_SOCKETS: usize = 4;
/// Largest UDP payload.
pub const MAX_DATAGRAM: usize = 65_507;
/// A capsule's network state over all its instances: quota counters and
/// the socket path the embedder assigned for `bind-unix`.
pub struct CapsuleNet {
    pub(crate) streams: Arc<AtomicUsize>,
    pub(crate) tcp_listeners: Arc<AtomicUsize>,
    pub(crate) unix_listeners: Arc<AtomicUsize>,
    pub(crate) udp_sockets: Arc<AtomicUsize>,
    /// Open `http-stream` / `http-upload` resources (host ABI §2.7).
    pub(crate) http_streams: Arc<AtomicUsize>,
    pub(crate) unix_path: Option<PathBuf>,
}

impl CapsuleNet {
    pub fn new(unix_path: Option<PathBuf>) -> Self {
        CapsuleNet {
            streams: Arc::default(),
            tcp_listeners: Arc::default(),
            unix_listeners: Arc::default(),
            udp_sockets: Arc::default(),
            http_streams: Arc::default(),
            unix_path,
        }
    }
}

impl CapsuleNet {
    /// A stream slot, if the capsule has one left.
    pub(crate) fn claim_stream(&self) -> Option<QuotaSlot> {
        QuotaSlot::claim(&self.streams, MAX_STREAMS)
    }
}

/// One unit of a capsule quota, given back on drop.
pub struct QuotaSlot(Arc<AtomicUsize>);

impl QuotaSlot {
    /// Takes a unit if fewer than `max` are taken.
    pub(crate) fn claim(counter: &Arc<AtomicUsize>, max: usize) -> Option<QuotaSlot> {
        counter
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                (n < max).then_some(n + 1)
            })
            .ok()
            .map(|_| QuotaSlot(counter.clone()))
    }
}

impl Drop for QuotaSlot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}
