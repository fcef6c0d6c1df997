//! What `astrid:fs` keeps per capsule, over all its instances: the mounts,
//! the open-handle count and the write budget.

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
