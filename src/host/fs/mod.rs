//! `astrid:fs@1.0.0` (host ABI §2.3, §5): every path is parsed, checked
//! against the manifest, resolved on its mount, checked again on its
//! canonical form, put to the gate, and only then handed to the provider,
//! all through [`Gated::gated`](crate::host::gated::Gated::gated). The host composes what providers do
//! not offer (exists, mkdir-all, whole-file I/O, copy, remove-dir-all,
//! canonicalize) from the provider operations of §5.3.

mod bindings;
mod calls;
mod errors;
mod handle;
mod prepare;
mod session;
pub mod shared;
mod targets;

pub(crate) use bindings::{add_to_linker, FsView};
pub use bindings::{FileHandle, MAX_OPEN_FILES, MAX_READDIR_ENTRIES, MAX_WHOLE_FILE};
