//! The guest's `file-handle`: positional reads and writes, sync, stat and
//! truncation on an open provider handle.

use super::bindings::{ErrorCode, FileHandle, FileStat, HostFileHandle};
use super::errors::{file_stat, map};
use crate::host::fs::FsView;
use crate::vfs::MAX_POSITIONAL;
use wasmtime::component::Resource;

impl HostFileHandle for FsView<'_> {
    fn read_at(
        &mut self,
        this: Resource<FileHandle>,
        offset: u64,
        max_bytes: u32,
    ) -> Result<Vec<u8>, ErrorCode> {
        self.handle_call(
            "fs.file-handle.read-at",
            &this,
            0,
            |state, vfs, h, modes| {
                if max_bytes as usize > MAX_POSITIONAL {
                    return Err(ErrorCode::TooLarge);
                }
                if !modes.readable {
                    return Err(ErrorCode::Access);
                }
                // Providers may read short; the guest gets `max` bytes unless the
                // file ends first.
                let max = max_bytes as usize;
                let mut data = Vec::new();
                while data.len() < max {
                    let at = offset
                        .checked_add(data.len() as u64)
                        .ok_or(ErrorCode::TooLarge)?;
                    let want = max - data.len();
                    let (next, got) = state.read_chunk(vfs, h, at, data, want)?;
                    data = next;
                    if got == 0 {
                        break;
                    }
                }
                Ok(data)
            },
        )
    }

    fn write_at(
        &mut self,
        this: Resource<FileHandle>,
        offset: u64,
        data: Vec<u8>,
    ) -> Result<u32, ErrorCode> {
        let len = data.len();
        self.handle_call(
            "fs.file-handle.write-at",
            &this,
            len as u64,
            |state, vfs, h, modes| {
                if len > MAX_POSITIONAL {
                    return Err(ErrorCode::TooLarge);
                }
                if !modes.writable {
                    return Err(ErrorCode::Access);
                }
                state.charge_positional(vfs, h, offset, len as u64)?;
                state.write_all(vfs, h, data, offset)?;
                Ok(len as u32)
            },
        )
    }

    fn sync_data(&mut self, this: Resource<FileHandle>) -> Result<(), ErrorCode> {
        self.handle_call("fs.file-handle.sync-data", &this, 0, |state, vfs, h, _| {
            state.vfs_call(vfs, move |v| v.sync(h, true)).map_err(map)
        })
    }

    fn sync_all(&mut self, this: Resource<FileHandle>) -> Result<(), ErrorCode> {
        self.handle_call("fs.file-handle.sync-all", &this, 0, |state, vfs, h, _| {
            state.vfs_call(vfs, move |v| v.sync(h, false)).map_err(map)
        })
    }

    fn stat(&mut self, this: Resource<FileHandle>) -> Result<FileStat, ErrorCode> {
        self.handle_call("fs.file-handle.stat", &this, 0, |state, vfs, h, _| {
            state
                .vfs_call(vfs, move |v| v.fstat(h))
                .map(file_stat)
                .map_err(map)
        })
    }

    fn set_len(&mut self, this: Resource<FileHandle>, size: u64) -> Result<(), ErrorCode> {
        self.handle_call(
            "fs.file-handle.set-len",
            &this,
            0,
            |state, vfs, h, modes| {
                if !modes.writable {
                    return Err(ErrorCode::Access);
                }
                state.charge_positional(vfs, h, size, 0)?;
                state
                    .vfs_call(vfs, move |v| v.set_len(h, size))
                    .map_err(map)
            },
        )
    }

    fn drop(&mut self, this: Resource<FileHandle>) -> wasmtime::Result<()> {
        let rep = this.rep();
        let file = self.table.delete(this)?;
        self.fs.open_files.retain(|r| *r != rep);
        if let Some(handle) = file.handle {
            self.close_counted(&file.vfs, handle);
        }
        Ok(())
    }
}
