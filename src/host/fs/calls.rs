//! The `astrid:fs/host` functions.

use super::bindings::{
    host, ErrorCode, FileHandle, FileStat, OpenMode, MAX_READDIR_ENTRIES, MAX_WHOLE_FILE,
};
use super::errors::{file_stat, map};
use super::session::read_whole;
use super::targets::{read, write, Need, PathArg};
use crate::host::fs::FsView;
use crate::policy::paths::{self};
use crate::vfs::{self, FileKind, OpenFlags, VfsError};
use std::sync::Arc;
use wasmtime::component::Resource;

impl host::Host for FsView<'_> {
    fn fs_open(&mut self, path: String, mode: OpenMode) -> Result<Resource<FileHandle>, ErrorCode> {
        let (need, flags) = match mode {
            OpenMode::Read => (Need::Read, OpenFlags::READ),
            OpenMode::Write => (
                Need::Write,
                OpenFlags::WRITE | OpenFlags::CREATE | OpenFlags::TRUNCATE,
            ),
            OpenMode::Append => (
                Need::Write,
                OpenFlags::WRITE | OpenFlags::APPEND | OpenFlags::CREATE,
            ),
            OpenMode::ReadWrite => (
                Need::ReadWrite,
                OpenFlags::READ | OpenFlags::WRITE | OpenFlags::CREATE,
            ),
        };
        let arg = PathArg {
            text: &path,
            need,
            follow: true,
        };
        self.fs_call("fs.fs-open", &[arg], 0, |state, targets| {
            let target = &targets[0];
            let flags = OpenFlags(flags);
            let handle = state.open_counted(target, flags)?;
            let file = FileHandle {
                vfs: target.vfs.clone(),
                handle: Some(handle),
                readable: flags.has(OpenFlags::READ),
                writable: flags.has(OpenFlags::WRITE),
                spelling: Arc::from(target.spelling()),
            };
            match state.table.push(file) {
                Ok(resource) => {
                    state.fs.open_files.push(resource.rep());
                    Ok(resource)
                }
                Err(_) => {
                    state.close_counted(&target.vfs, handle);
                    Err(ErrorCode::Quota)
                }
            }
        })
    }

    fn fs_exists(&mut self, path: String) -> Result<bool, ErrorCode> {
        self.fs_call(
            "fs.fs-exists",
            &[read(&path)],
            0,
            |state, targets| match state.stat_target(&targets[0], true) {
                Ok(_) => Ok(true),
                Err(VfsError::NotFound) => Ok(false),
                Err(e) => Err(map(e)),
            },
        )
    }

    fn fs_mkdir(&mut self, path: String) -> Result<(), ErrorCode> {
        self.fs_call(
            "fs.fs-mkdir",
            &[write(&path).no_follow()],
            0,
            |state, targets| {
                let rel = targets[0].rel.clone();
                state
                    .vfs_call(&targets[0].vfs, move |v| v.mkdir(&rel))
                    .map_err(map)
            },
        )
    }

    fn fs_mkdir_all(&mut self, path: String) -> Result<(), ErrorCode> {
        self.fs_call("fs.fs-mkdir-all", &[write(&path)], 0, |state, targets| {
            let target = &targets[0];
            let rel = &target.rel;
            // Every ancestor, then the path itself (none for the root).
            let ends = rel.match_indices('/').map(|(at, _)| at);
            let ends: Vec<usize> = ends.chain((!rel.is_empty()).then_some(rel.len())).collect();
            for (i, &end) in ends.iter().enumerate() {
                state.check_stop().map_err(map)?;
                let prefix = rel[..end].to_string();
                let last = i + 1 == ends.len();
                let probe = prefix.clone();
                match state.vfs_call(&target.vfs, move |v| v.stat(&probe, true)) {
                    Ok(stat) if stat.kind == FileKind::Directory => continue,
                    Ok(_) if last => return Err(ErrorCode::AlreadyExists),
                    Ok(_) => return Err(ErrorCode::NotDirectory),
                    Err(VfsError::NotFound) => {}
                    Err(e) => return Err(map(e)),
                }
                match state.vfs_call(&target.vfs, move |v| v.mkdir(&prefix)) {
                    // Lost a race with another creator: fine if it is a directory.
                    Ok(()) | Err(VfsError::AlreadyExists) => {}
                    Err(e) => return Err(map(e)),
                }
            }
            Ok(())
        })
    }

    fn fs_readdir(&mut self, path: String) -> Result<Vec<String>, ErrorCode> {
        self.fs_call("fs.fs-readdir", &[read(&path)], 0, |state, targets| {
            let entries = state.list(&targets[0].vfs, &targets[0].rel).map_err(map)?;
            if entries.len() > MAX_READDIR_ENTRIES {
                return Err(ErrorCode::TooLarge);
            }
            let mut names: Vec<String> = entries.into_iter().map(|e| e.name).collect();
            names.sort_unstable();
            names.dedup();
            Ok(names)
        })
    }

    fn fs_stat(&mut self, path: String) -> Result<FileStat, ErrorCode> {
        self.fs_call("fs.fs-stat", &[read(&path)], 0, |state, targets| {
            state
                .stat_target(&targets[0], true)
                .map(file_stat)
                .map_err(map)
        })
    }

    fn fs_stat_symlink(&mut self, path: String) -> Result<FileStat, ErrorCode> {
        let arg = read(&path).no_follow();
        self.fs_call("fs.fs-stat-symlink", &[arg], 0, |state, targets| {
            state
                .stat_target(&targets[0], false)
                .map(file_stat)
                .map_err(map)
        })
    }

    fn fs_unlink(&mut self, path: String) -> Result<(), ErrorCode> {
        self.fs_call(
            "fs.fs-unlink",
            &[write(&path).no_follow()],
            0,
            |state, targets| {
                let target = &targets[0];
                if target.rel.is_empty() {
                    return Err(ErrorCode::Access);
                }
                if state.stat_target(target, false).map_err(map)?.kind == FileKind::Directory {
                    return Err(ErrorCode::IsDirectory);
                }
                let rel = target.rel.clone();
                state
                    .vfs_call(&target.vfs, move |v| v.remove_file(&rel))
                    .map_err(map)
            },
        )
    }

    fn read_file(&mut self, path: String) -> Result<Vec<u8>, ErrorCode> {
        self.fs_call("fs.read-file", &[read(&path)], 0, |state, targets| {
            state.with_open(
                &targets[0],
                OpenFlags(OpenFlags::READ),
                |v, handle, stop| read_whole(v, handle, MAX_WHOLE_FILE, stop),
            )
        })
    }

    fn write_file(&mut self, path: String, content: Vec<u8>) -> Result<(), ErrorCode> {
        let len = content.len() as u64;
        self.fs_call("fs.write-file", &[write(&path)], len, |state, targets| {
            if content.len() > MAX_WHOLE_FILE {
                return Err(ErrorCode::TooLarge);
            }
            let flags = OpenFlags(OpenFlags::WRITE | OpenFlags::CREATE | OpenFlags::TRUNCATE);
            state.write_whole(&targets[0], flags, content)
        })
    }

    fn fs_append(&mut self, path: String, content: Vec<u8>) -> Result<(), ErrorCode> {
        let len = content.len() as u64;
        self.fs_call("fs.fs-append", &[write(&path)], len, |state, targets| {
            if content.len() > MAX_WHOLE_FILE {
                return Err(ErrorCode::TooLarge);
            }
            let flags = OpenFlags(OpenFlags::WRITE | OpenFlags::APPEND | OpenFlags::CREATE);
            state.write_whole(&targets[0], flags, content)
        })
    }

    fn fs_copy(&mut self, src: String, dst: String) -> Result<(), ErrorCode> {
        self.fs_call(
            "fs.fs-copy",
            &[read(&src), write(&dst)],
            0,
            |state, targets| {
                let (from, to) = (&targets[0], &targets[1]);
                if state.stat_target(from, true).map_err(map)?.kind == FileKind::Directory {
                    return Err(ErrorCode::IsDirectory);
                }
                // A whole-file call like the others: at most 10 MiB.
                let data =
                    state.with_open(from, OpenFlags(OpenFlags::READ), |v, handle, stop| {
                        read_whole(v, handle, MAX_WHOLE_FILE, stop)
                    })?;
                let flags = OpenFlags(OpenFlags::WRITE | OpenFlags::CREATE | OpenFlags::TRUNCATE);
                state.write_whole(to, flags, data)
            },
        )
    }

    fn fs_rename(&mut self, src: String, dst: String) -> Result<(), ErrorCode> {
        let args = [write(&src).no_follow(), write(&dst).no_follow()];
        self.fs_call("fs.fs-rename", &args, 0, |state, targets| {
            let (from, to) = (&targets[0], &targets[1]);
            if from.mount != to.mount || !Arc::ptr_eq(&from.vfs, &to.vfs) {
                return Err(ErrorCode::CrossVfs);
            }
            if from.rel.is_empty() || to.rel.is_empty() {
                return Err(ErrorCode::Access);
            }
            let (a, b) = (from.rel.clone(), to.rel.clone());
            state
                .vfs_call(&from.vfs, move |v| v.rename(&a, &b))
                .map_err(map)
        })
    }

    fn fs_remove_dir_all(&mut self, path: String) -> Result<u64, ErrorCode> {
        let arg = write(&path).no_follow();
        self.fs_call("fs.fs-remove-dir-all", &[arg], 0, |state, targets| {
            let target = &targets[0];
            if target.rel.is_empty() {
                return Err(ErrorCode::Access);
            }
            if state.stat_target(target, false).map_err(map)?.kind != FileKind::Directory {
                return Err(ErrorCode::NotDirectory);
            }
            state.remove_tree(&target.vfs, &target.rel, 0).map_err(map)
        })
    }

    fn fs_canonicalize(&mut self, path: String) -> Result<String, ErrorCode> {
        self.fs_call("fs.fs-canonicalize", &[read(&path)], 0, |state, targets| {
            state.stat_target(&targets[0], true).map_err(map)?;
            Ok(targets[0].spelling())
        })
    }

    fn fs_read_link(&mut self, path: String) -> Result<String, ErrorCode> {
        let arg = read(&path).no_follow();
        self.fs_call("fs.fs-read-link", &[arg], 0, |state, targets| {
            let target = &targets[0];
            let rel = target.rel.clone();
            let link = state
                .vfs_call(&target.vfs, move |v| v.read_link(&rel))
                .map_err(map)?;
            if link.contains('\0') || link.len() > paths::MAX_PATH_BYTES {
                return Err(ErrorCode::InvalidPath);
            }
            // Text that climbs out of the mount root would show the guest
            // something of the host's tree: it is refused, not returned.
            let components: Vec<String> = target.rel.split('/').map(str::to_string).collect();
            let dir = &components[..components.len().saturating_sub(1)];
            if vfs::link_destination(dir, &link).is_none() {
                return Err(ErrorCode::BoundaryEscape);
            }
            Ok(match link.strip_prefix('/') {
                Some(inside) => format!("{}://{inside}", target.mount.scheme()),
                None => link,
            })
        })
    }

    fn fs_hard_link(&mut self, src: String, link_path: String) -> Result<(), ErrorCode> {
        // A new name for a file is a new way to write it: the source must
        // be writable as well as readable, or linking a read-only file into
        // a writable directory would widen the grant.
        let source = PathArg {
            text: &src,
            need: Need::ReadWrite,
            follow: true,
        };
        let args = [source, write(&link_path).no_follow()];
        self.fs_call("fs.fs-hard-link", &args, 0, |state, targets| {
            let (from, to) = (&targets[0], &targets[1]);
            if from.mount != to.mount || !Arc::ptr_eq(&from.vfs, &to.vfs) {
                return Err(ErrorCode::CrossVfs);
            }
            if state.stat_target(from, true).map_err(map)?.kind == FileKind::Directory {
                return Err(ErrorCode::IsDirectory);
            }
            let (a, b) = (from.rel.clone(), to.rel.clone());
            state
                .vfs_call(&from.vfs, move |v| v.hard_link(&a, &b))
                .map_err(map)
        })
    }
}
