//! What `astrid:fs` keeps per capsule, over all its instances (the mounts,
//! the open-handle count and the write budget), and per store for the call
//! it serves (the handles that call opened).

use crate::vfs::CapsuleMounts;
use std::sync::atomic::{AtomicU64, AtomicUsize};

pub struct FsShared {
    pub(crate) mounts: CapsuleMounts,
    /// Provider handles open over all instances (at most 16).
    pub(crate) open_files: AtomicUsize,
    /// Bytes any fs call may still write (`None`: no budget).
    pub(crate) write_budget: Option<u64>,
    pub(crate) bytes_written: AtomicU64,
}

impl FsShared {
    pub(crate) fn new(mounts: CapsuleMounts, write_budget: Option<u64>) -> FsShared {
        FsShared {
            mounts,
            open_files: AtomicUsize::new(0),
            write_budget,
            bytes_written: AtomicU64::new(0),
        }
    }
}

/// What `astrid:fs` keeps for the call a store serves.
#[derive(Default)]
pub struct FsCall {
    /// `file-handle` resources opened by the current call (table reps),
    /// closed when it ends.
    pub(crate) open_files: Vec<u32>,
}
