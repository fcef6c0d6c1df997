//! The generated `astrid:fs` bindings, the guest's `file-handle` and the
//! interface's limits.

use super::shared::{FsCall, FsShared};
use crate::host::call::CallContext;
use crate::host::shared::CapsuleShared;
use crate::host::view::host_view;
use crate::vfs::Vfs;
use std::sync::Arc;
use wasmtime::component::{Linker, ResourceTable};

pub(crate) mod generated {
    wasmtime::component::bindgen!({
        inline: "package astrid-runtime:fs; world imports { import astrid:fs/host@1.0.0; }",
        path: ["wit/astrid-fs@1.0.0"],
        world: "imports",
        with: { "astrid:fs/host.file-handle": super::FileHandle },
    });
}

pub(crate) use generated::astrid::fs::host::{
    self, Datetime, ErrorCode, FileStat, FileType, HostFileHandle, OpenMode,
};

/// Open handles per capsule, summed over its instances.
pub const MAX_OPEN_FILES: usize = 16;
/// Whole-file calls (`read-file`, `write-file`, `fs-append`).
pub const MAX_WHOLE_FILE: usize = 10 << 20;
pub const MAX_READDIR_ENTRIES: usize = 4096;
/// Directory nesting `fs-remove-dir-all` descends before giving up.
pub(crate) const MAX_TREE_DEPTH: usize = 256;

/// What `astrid:fs` sees of a store: the capsule and the call, the
/// capsule's mounts and quotas, the handles the call opened, and the
/// resource table its `file-handle`s live in.
pub(crate) struct FsView<'a> {
    pub(crate) capsule: &'a Arc<CapsuleShared>,
    pub(crate) call: &'a CallContext,
    pub(crate) shared: &'a FsShared,
    pub(crate) fs: &'a mut FsCall,
    pub(crate) table: &'a mut ResourceTable,
}

host_view!(FsView, FsData);

pub(crate) fn add_to_linker<T: 'static>(
    linker: &mut Linker<T>,
    view: fn(&mut T) -> FsView<'_>,
) -> wasmtime::Result<()> {
    host::add_to_linker::<T, FsData>(linker, view)
}

/// A guest `file-handle`: the provider handle, `None` once closed.
pub struct FileHandle {
    pub(super) vfs: Arc<dyn Vfs>,
    pub(super) handle: Option<u64>,
    pub(super) readable: bool,
    pub(super) writable: bool,
    /// The path as opened (VFS spelling), the audit target of its methods.
    pub(super) spelling: Arc<str>,
}
