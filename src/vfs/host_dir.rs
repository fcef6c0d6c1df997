//! The built-in host-directory sandbox. Every operation is a system call
//! relative to the root's directory handle through `cap-primitives`, which
//! refuses any resolution that leaves the root (`..`, absolute or escaping
//! symlinks), so a link swapped in between the host's check and the
//! operation cannot escape either.

use super::{DirEntry, FileKind, OpenFlags, Stat, Timestamp, Vfs, VfsError, VfsResult};
use cap_primitives::fs::{self as cap, FileTypeExt, FollowSymlinks, MetadataExt};
use std::collections::HashMap;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

pub struct HostDir {
    root: File,
    /// Canonical host path of the root (for absolute link targets and the
    /// gate's host path; never shown to a guest).
    root_path: PathBuf,
    handles: Mutex<Handles>,
}

#[derive(Default)]
struct Handles {
    open: HashMap<u64, (Arc<File>, OpenFlags)>,
    next: u64,
}

fn rel(path: &str) -> &Path {
    Path::new(if path.is_empty() { "." } else { path })
}

/// Maps an OS error; cap-primitives reports an escape as "permission
/// denied" with its own message, which is told apart from a real EACCES.
fn map_err(error: std::io::Error) -> VfsError {
    if error.raw_os_error().is_none() && error.kind() == std::io::ErrorKind::PermissionDenied {
        return VfsError::BoundaryEscape;
    }
    VfsError::from_io(&error)
}

fn stat_of(meta: &cap::Metadata) -> Stat {
    let ft = meta.file_type();
    let kind = if ft.is_file() {
        FileKind::Regular
    } else if ft.is_dir() {
        FileKind::Directory
    } else if ft.is_symlink() {
        FileKind::Symlink
    } else if ft.is_block_device() {
        FileKind::BlockDevice
    } else if ft.is_char_device() {
        FileKind::CharacterDevice
    } else if ft.is_fifo() {
        FileKind::Fifo
    } else if ft.is_socket() {
        FileKind::Socket
    } else {
        FileKind::Unknown
    };
    Stat {
        size: meta.len(),
        kind,
        mode: meta.mode() & 0o7777,
        modified: meta
            .modified()
            .ok()
            .map(|t| Timestamp::from_system(t.into_std())),
        created: meta
            .created()
            .ok()
            .map(|t| Timestamp::from_system(t.into_std())),
        accessed: meta
            .accessed()
            .ok()
            .map(|t| Timestamp::from_system(t.into_std())),
    }
}

impl HostDir {
    /// Opens `root` (which must be an existing directory) as a sandbox.
    pub fn open(root: &Path) -> std::io::Result<HostDir> {
        let root_path = std::fs::canonicalize(root)?;
        let root = cap::open_ambient_dir(&root_path, cap_primitives::ambient_authority())?;
        Ok(HostDir {
            root,
            root_path,
            handles: Mutex::new(Handles::default()),
        })
    }

    fn handle(&self, handle: u64) -> VfsResult<(Arc<File>, OpenFlags)> {
        let handles = self.handles.lock().unwrap_or_else(|e| e.into_inner());
        handles.open.get(&handle).cloned().ok_or(VfsError::Closed)
    }
}

impl Vfs for HostDir {
    fn stat(&self, path: &str, follow: bool) -> VfsResult<Stat> {
        let follow = if follow {
            FollowSymlinks::Yes
        } else {
            FollowSymlinks::No
        };
        cap::stat(&self.root, rel(path), follow)
            .map(|m| stat_of(&m))
            .map_err(map_err)
    }

    fn open(&self, path: &str, flags: OpenFlags) -> VfsResult<u64> {
        let mut options = cap::OpenOptions::new();
        options
            .read(flags.has(OpenFlags::READ))
            .write(flags.has(OpenFlags::WRITE) && !flags.has(OpenFlags::APPEND))
            .append(flags.has(OpenFlags::APPEND))
            .truncate(flags.has(OpenFlags::TRUNCATE));
        if flags.has(OpenFlags::EXCLUSIVE) {
            options.create_new(true);
        } else {
            options.create(flags.has(OpenFlags::CREATE));
        }
        let file = cap::open(&self.root, rel(path), &options).map_err(map_err)?;
        let meta = file.metadata().map_err(map_err)?;
        if meta.is_dir() {
            return Err(VfsError::IsDirectory);
        }
        let mut handles = self.handles.lock().unwrap_or_else(|e| e.into_inner());
        handles.next += 1;
        let id = handles.next;
        handles.open.insert(id, (Arc::new(file), flags));
        Ok(id)
    }

    fn read_at(&self, handle: u64, offset: u64, len: usize, buf: &mut Vec<u8>) -> VfsResult<()> {
        let (file, flags) = self.handle(handle)?;
        if !flags.has(OpenFlags::READ) {
            return Err(VfsError::Access);
        }
        let start = buf.len();
        buf.resize(start + len, 0);
        let mut filled = 0;
        while filled < len {
            match file.read_at(&mut buf[start + filled..], offset + filled as u64) {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => {
                    buf.truncate(start);
                    return Err(map_err(e));
                }
            }
        }
        buf.truncate(start + filled);
        Ok(())
    }

    fn write_at(&self, handle: u64, offset: u64, data: &[u8]) -> VfsResult<usize> {
        let (file, flags) = self.handle(handle)?;
        if !flags.has(OpenFlags::WRITE) {
            return Err(VfsError::Access);
        }
        if flags.has(OpenFlags::APPEND) {
            // O_APPEND: one write(2) lands atomically at the end.
            let mut writer: &File = &file;
            std::io::Write::write_all(&mut writer, data).map_err(map_err)?;
        } else {
            file.write_all_at(data, offset).map_err(map_err)?;
        }
        Ok(data.len())
    }

    fn sync(&self, handle: u64, data_only: bool) -> VfsResult<()> {
        let (file, _) = self.handle(handle)?;
        if data_only {
            file.sync_data()
        } else {
            file.sync_all()
        }
        .map_err(map_err)
    }

    fn set_len(&self, handle: u64, len: u64) -> VfsResult<()> {
        let (file, flags) = self.handle(handle)?;
        if !flags.has(OpenFlags::WRITE) {
            return Err(VfsError::Access);
        }
        file.set_len(len).map_err(map_err)
    }

    fn fstat(&self, handle: u64) -> VfsResult<Stat> {
        let (file, _) = self.handle(handle)?;
        cap::Metadata::from_file(&file)
            .map(|m| stat_of(&m))
            .map_err(map_err)
    }

    fn close(&self, handle: u64) {
        let mut handles = self.handles.lock().unwrap_or_else(|e| e.into_inner());
        handles.open.remove(&handle);
    }

    fn read_dir(&self, path: &str, sink: &mut dyn FnMut(DirEntry) -> bool) -> VfsResult<()> {
        let entries = cap::read_dir(&self.root, rel(path)).map_err(map_err)?;
        for entry in entries {
            let entry = entry.map_err(map_err)?;
            let Ok(name) = entry.file_name().into_string() else {
                continue; // not representable in a WIT string
            };
            let kind = match entry.file_type() {
                Ok(ft) if ft.is_dir() => FileKind::Directory,
                Ok(ft) if ft.is_file() => FileKind::Regular,
                Ok(ft) if ft.is_symlink() => FileKind::Symlink,
                _ => FileKind::Unknown,
            };
            if !sink(DirEntry { name, kind }) {
                break;
            }
        }
        Ok(())
    }

    fn mkdir(&self, path: &str) -> VfsResult<()> {
        if path.is_empty() {
            return Err(VfsError::AlreadyExists);
        }
        cap::create_dir(&self.root, rel(path), &cap::DirOptions::new()).map_err(map_err)
    }

    fn remove_file(&self, path: &str) -> VfsResult<()> {
        if path.is_empty() {
            return Err(VfsError::Access);
        }
        match cap::remove_file(&self.root, rel(path)).map_err(map_err) {
            // Linux reports unlink(2) of a directory as EISDIR or EPERM.
            Err(VfsError::Access)
                if self.stat(path, false).map(|s| s.kind) == Ok(FileKind::Directory) =>
            {
                Err(VfsError::IsDirectory)
            }
            other => other,
        }
    }

    fn remove_dir(&self, path: &str) -> VfsResult<()> {
        if path.is_empty() {
            return Err(VfsError::Access);
        }
        cap::remove_dir(&self.root, rel(path)).map_err(map_err)
    }

    fn rename(&self, src: &str, dst: &str) -> VfsResult<()> {
        if src.is_empty() || dst.is_empty() {
            return Err(VfsError::Access);
        }
        cap::rename(&self.root, rel(src), &self.root, rel(dst)).map_err(map_err)
    }

    fn hard_link(&self, src: &str, dst: &str) -> VfsResult<()> {
        match self.stat(src, false)?.kind {
            FileKind::Directory => return Err(VfsError::IsDirectory),
            // Linking a symlink would copy a target string the guest could
            // not have written; refuse rather than reason about it.
            FileKind::Symlink => return Err(VfsError::InvalidPath),
            _ => {}
        }
        cap::hard_link(&self.root, rel(src), &self.root, rel(dst)).map_err(map_err)
    }

    fn read_link(&self, path: &str) -> VfsResult<String> {
        let target = match cap::read_link_contents(&self.root, rel(path)) {
            Ok(target) => target,
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => return Err(VfsError::InvalidPath),
            Err(e) => return Err(map_err(e)),
        };
        if target.is_absolute() {
            let inside = target
                .strip_prefix(&self.root_path)
                .map_err(|_| VfsError::BoundaryEscape)?;
            let inside = inside.to_str().ok_or(VfsError::InvalidPath)?;
            return Ok(format!("/{inside}"));
        }
        target
            .into_os_string()
            .into_string()
            .map_err(|_| VfsError::InvalidPath)
    }

    fn has_symlinks(&self) -> bool {
        true
    }

    fn host_path(&self, path: &str) -> Option<PathBuf> {
        Some(if path.is_empty() {
            self.root_path.clone()
        } else {
            self.root_path.join(path)
        })
    }
}
