//! The built-in host-directory sandbox.
//!
//! The host resolves a guest path once (`vfs::resolve`, link by link),
//! checks the resolved path against the manifest and the gate, and hands
//! that link-free path here. Every operation then walks it from the root's
//! directory handle one component at a time with `O_NOFOLLOW`, and acts on
//! the last component relative to its parent's handle without following
//! it. So the object an operation touches is exactly the one that was
//! checked: a symlink swapped in anywhere along the path after the check
//! (by another call renaming links, or by the host) makes the operation
//! fail instead of being followed. Special files (FIFOs, sockets, devices)
//! are opened non-blocking and refused, so no call can hang on one.

use super::{DirEntry, FileKind, OpenFlags, Stat, Timestamp, Vfs, VfsError, VfsResult};
use crate::signal::MutexExt;
use rustix::fs::{self as rfs, AtFlags, Mode, OFlags, StatxFlags};
use std::collections::HashMap;
use std::fs::File;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

pub struct HostDir {
    root: OwnedFd,
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

/// The directory holding a path's last component: the root itself or a
/// handle opened by the no-follow walk.
enum Parent<'a> {
    Root(BorrowedFd<'a>),
    Opened(OwnedFd),
}

impl Parent<'_> {
    fn fd(&self) -> BorrowedFd<'_> {
        match self {
            Parent::Root(fd) => *fd,
            Parent::Opened(fd) => fd.as_fd(),
        }
    }
}

fn map_errno(error: rustix::io::Errno) -> VfsError {
    VfsError::from_io(&std::io::Error::from(error))
}

fn kind_of(mode: u32) -> FileKind {
    match rfs::FileType::from_raw_mode(mode) {
        rfs::FileType::RegularFile => FileKind::Regular,
        rfs::FileType::Directory => FileKind::Directory,
        rfs::FileType::Symlink => FileKind::Symlink,
        rfs::FileType::BlockDevice => FileKind::BlockDevice,
        rfs::FileType::CharacterDevice => FileKind::CharacterDevice,
        rfs::FileType::Fifo => FileKind::Fifo,
        rfs::FileType::Socket => FileKind::Socket,
        _ => FileKind::Unknown,
    }
}

fn stat_of(x: &rfs::Statx) -> Stat {
    let time = |t: rfs::StatxTimestamp| Timestamp {
        seconds: t.tv_sec,
        nanoseconds: t.tv_nsec,
    };
    let mask = StatxFlags::from_bits_retain(x.stx_mask);
    Stat {
        size: x.stx_size,
        kind: kind_of(u32::from(x.stx_mode)),
        mode: u32::from(x.stx_mode) & 0o7777,
        modified: mask.contains(StatxFlags::MTIME).then(|| time(x.stx_mtime)),
        created: mask.contains(StatxFlags::BTIME).then(|| time(x.stx_btime)),
        accessed: mask.contains(StatxFlags::ATIME).then(|| time(x.stx_atime)),
    }
}

/// Metadata of `name` in `dir` (the directory itself when `name` is empty),
/// never following a final symlink.
fn statx_at(dir: BorrowedFd<'_>, name: &str) -> VfsResult<Stat> {
    let flags = if name.is_empty() {
        AtFlags::EMPTY_PATH
    } else {
        AtFlags::SYMLINK_NOFOLLOW
    };
    let mask = StatxFlags::BASIC_STATS | StatxFlags::BTIME;
    rfs::statx(dir, name, flags, mask)
        .map(|x| stat_of(&x))
        .map_err(map_errno)
}

/// One component as the walk accepts it: normalised paths never hold an
/// empty, `.` or `..` component; anything else is refused, not interpreted.
fn component(name: &str) -> VfsResult<&str> {
    if name.is_empty() || name == "." || name == ".." || name.contains('\0') {
        return Err(VfsError::InvalidPath);
    }
    Ok(name)
}

impl HostDir {
    /// Opens `root` (which must be an existing directory) as a sandbox.
    pub fn open(root: &Path) -> std::io::Result<HostDir> {
        use std::os::unix::fs::MetadataExt;
        let root_path = std::fs::canonicalize(root)?;
        let expected = std::fs::metadata(&root_path)?;
        let root = rfs::open(
            &root_path,
            OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        // The directory opened must be the one just canonicalised: a swap
        // in between (anywhere up the path) would root the sandbox elsewhere.
        let opened = rfs::fstat(&root)?;
        if opened.st_dev != expected.dev() || opened.st_ino != expected.ino() {
            return Err(std::io::Error::other(
                "the workspace directory changed while it was opened",
            ));
        }
        Ok(HostDir {
            root,
            root_path,
            handles: Mutex::new(Handles::default()),
        })
    }

    /// Walks every component of `path` but the last with `O_NOFOLLOW`, so
    /// a symlink anywhere on the way is refused (`ELOOP`/`ENOTDIR`), and
    /// returns the parent's handle and the last component (empty for the
    /// root itself).
    fn parent<'p>(&self, path: &'p str) -> VfsResult<(Parent<'_>, &'p str)> {
        let mut dir = Parent::Root(self.root.as_fd());
        if path.is_empty() {
            return Ok((dir, ""));
        }
        let (walk, last) = match path.rsplit_once('/') {
            Some((walk, last)) => (Some(walk), last),
            None => (None, path),
        };
        for name in walk.into_iter().flat_map(|w| w.split('/')) {
            let flags = OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
            let next = match rfs::openat(dir.fd(), component(name)?, flags, Mode::empty()) {
                Ok(next) => next,
                Err(e @ (rustix::io::Errno::LOOP | rustix::io::Errno::NOTDIR)) => {
                    // A symlink where the checked path had a directory is
                    // refused as such; a file there is plain `not-directory`.
                    // The second look can race too: an entry that is a
                    // directory again (swapped back) changed under the call,
                    // and one that is gone is `not-found`.
                    return Err(match statx_at(dir.fd(), name) {
                        Ok(stat) => match stat.kind {
                            FileKind::Symlink | FileKind::Directory => VfsError::InvalidPath,
                            _ => map_errno(e),
                        },
                        Err(VfsError::NotFound) => VfsError::NotFound,
                        Err(_) => map_errno(e),
                    });
                }
                Err(e) => return Err(map_errno(e)),
            };
            dir = Parent::Opened(next);
        }
        Ok((dir, component(last)?))
    }

    /// Opens the directory at `path` itself (no link followed anywhere).
    fn open_dir(&self, path: &str, flags: OFlags) -> VfsResult<OwnedFd> {
        let (parent, name) = self.parent(path)?;
        let name = if name.is_empty() { "." } else { name };
        let flags = flags | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        rfs::openat(parent.fd(), name, flags, Mode::empty()).map_err(|e| match e {
            rustix::io::Errno::LOOP | rustix::io::Errno::NOTDIR => VfsError::NotDirectory,
            e => map_errno(e),
        })
    }

    fn handle(&self, handle: u64) -> VfsResult<(Arc<File>, OpenFlags)> {
        let handles = self.handles.locked();
        handles.open.get(&handle).cloned().ok_or(VfsError::Closed)
    }
}

impl Vfs for HostDir {
    /// Never follows a final symlink: the host hands over resolved paths,
    /// so a link found where `follow` was asked is one swapped in since the
    /// check, and is refused.
    fn stat(&self, path: &str, follow: bool) -> VfsResult<Stat> {
        let (parent, name) = self.parent(path)?;
        let stat = statx_at(parent.fd(), name)?;
        if follow && stat.kind == FileKind::Symlink {
            return Err(VfsError::InvalidPath);
        }
        Ok(stat)
    }

    fn open(&self, path: &str, flags: OpenFlags) -> VfsResult<u64> {
        let (parent, name) = self.parent(path)?;
        if name.is_empty() {
            return Err(VfsError::IsDirectory);
        }
        let mut oflags = OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC | OFlags::NOCTTY;
        oflags |= match (flags.has(OpenFlags::READ), flags.has(OpenFlags::WRITE)) {
            (true, true) => OFlags::RDWR,
            (false, true) => OFlags::WRONLY,
            _ => OFlags::RDONLY,
        };
        if flags.has(OpenFlags::APPEND) {
            oflags |= OFlags::APPEND;
        }
        if flags.has(OpenFlags::TRUNCATE) {
            oflags |= OFlags::TRUNC;
        }
        if flags.has(OpenFlags::CREATE) {
            oflags |= OFlags::CREATE;
            if flags.has(OpenFlags::EXCLUSIVE) {
                oflags |= OFlags::EXCL;
            }
        }
        // Refuse special files before opening them at all (opening a device
        // can have effects); the fstat below catches a swap in between, as
        // O_NONBLOCK keeps that open from blocking.
        match statx_at(parent.fd(), name) {
            Ok(stat) => match stat.kind {
                FileKind::Regular | FileKind::Symlink => {}
                FileKind::Directory => return Err(VfsError::IsDirectory),
                _ => return Err(VfsError::NotRegular),
            },
            Err(VfsError::NotFound) if flags.has(OpenFlags::CREATE) => {}
            Err(e) => return Err(e),
        }
        let fd = rfs::openat(parent.fd(), name, oflags, Mode::from_raw_mode(0o666)).map_err(
            |e| match e {
                // O_NOFOLLOW met a link: not what the check saw.
                rustix::io::Errno::LOOP => VfsError::InvalidPath,
                e => map_errno(e),
            },
        )?;
        match statx_at(fd.as_fd(), "")?.kind {
            FileKind::Regular => {}
            FileKind::Directory => return Err(VfsError::IsDirectory),
            _ => return Err(VfsError::NotRegular),
        }
        let mut handles = self.handles.locked();
        handles.next += 1;
        let id = handles.next;
        handles.open.insert(id, (Arc::new(File::from(fd)), flags));
        Ok(id)
    }

    fn read_at(&self, handle: u64, offset: u64, len: usize, buf: &mut Vec<u8>) -> VfsResult<()> {
        let (file, flags) = self.handle(handle)?;
        if !flags.has(OpenFlags::READ) {
            return Err(VfsError::Access);
        }
        let start = buf.len();
        buf.try_reserve_exact(len).map_err(|_| VfsError::TooLarge)?;
        buf.resize(start + len, 0);
        let mut filled = 0;
        while filled < len {
            let at = offset.saturating_add(filled as u64);
            match file.read_at(&mut buf[start + filled..], at) {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => {
                    buf.truncate(start);
                    return Err(VfsError::from_io(&e));
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
            std::io::Write::write_all(&mut writer, data).map_err(|e| VfsError::from_io(&e))?;
        } else {
            file.write_all_at(data, offset)
                .map_err(|e| VfsError::from_io(&e))?;
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
        .map_err(|e| VfsError::from_io(&e))
    }

    fn set_len(&self, handle: u64, len: u64) -> VfsResult<()> {
        let (file, flags) = self.handle(handle)?;
        if !flags.has(OpenFlags::WRITE) {
            return Err(VfsError::Access);
        }
        file.set_len(len).map_err(|e| VfsError::from_io(&e))
    }

    fn fstat(&self, handle: u64) -> VfsResult<Stat> {
        let (file, _) = self.handle(handle)?;
        statx_at(file.as_fd(), "")
    }

    fn close(&self, handle: u64) {
        let mut handles = self.handles.locked();
        handles.open.remove(&handle);
    }

    fn read_dir(&self, path: &str, sink: &mut dyn FnMut(DirEntry) -> bool) -> VfsResult<()> {
        let dir = self.open_dir(path, OFlags::RDONLY)?;
        let mut entries = rfs::Dir::new(dir).map_err(map_errno)?;
        while let Some(entry) = entries.read() {
            let entry = entry.map_err(map_errno)?;
            let Ok(name) = entry.file_name().to_str() else {
                continue; // not representable in a WIT string
            };
            if name == "." || name == ".." {
                continue;
            }
            let kind = match entry.file_type() {
                rfs::FileType::Directory => FileKind::Directory,
                rfs::FileType::RegularFile => FileKind::Regular,
                rfs::FileType::Symlink => FileKind::Symlink,
                _ => FileKind::Unknown,
            };
            let name = name.to_string();
            if !sink(DirEntry { name, kind }) {
                break;
            }
        }
        Ok(())
    }

    fn mkdir(&self, path: &str) -> VfsResult<()> {
        let (parent, name) = self.parent(path)?;
        if name.is_empty() {
            return Err(VfsError::AlreadyExists);
        }
        rfs::mkdirat(parent.fd(), name, Mode::from_raw_mode(0o777)).map_err(map_errno)
    }

    fn remove_file(&self, path: &str) -> VfsResult<()> {
        let (parent, name) = self.parent(path)?;
        if name.is_empty() {
            return Err(VfsError::Access);
        }
        match rfs::unlinkat(parent.fd(), name, AtFlags::empty()).map_err(map_errno) {
            // Linux reports unlink(2) of a directory as EISDIR or EPERM.
            Err(VfsError::Access | VfsError::IsDirectory)
                if statx_at(parent.fd(), name).map(|s| s.kind) == Ok(FileKind::Directory) =>
            {
                Err(VfsError::IsDirectory)
            }
            other => other,
        }
    }

    fn remove_dir(&self, path: &str) -> VfsResult<()> {
        let (parent, name) = self.parent(path)?;
        if name.is_empty() {
            return Err(VfsError::Access);
        }
        rfs::unlinkat(parent.fd(), name, AtFlags::REMOVEDIR).map_err(map_errno)
    }

    fn rename(&self, src: &str, dst: &str) -> VfsResult<()> {
        let (from, from_name) = self.parent(src)?;
        let (to, to_name) = self.parent(dst)?;
        if from_name.is_empty() || to_name.is_empty() {
            return Err(VfsError::Access);
        }
        rfs::renameat(from.fd(), from_name, to.fd(), to_name).map_err(map_errno)
    }

    fn hard_link(&self, src: &str, dst: &str) -> VfsResult<()> {
        let (from, from_name) = self.parent(src)?;
        let (to, to_name) = self.parent(dst)?;
        if from_name.is_empty() {
            return Err(VfsError::IsDirectory);
        }
        if to_name.is_empty() {
            return Err(VfsError::AlreadyExists);
        }
        match statx_at(from.fd(), from_name)?.kind {
            FileKind::Regular => {}
            FileKind::Directory => return Err(VfsError::IsDirectory),
            // Linking a symlink would copy a target string the guest could
            // not have written; other kinds are never served.
            FileKind::Symlink => return Err(VfsError::InvalidPath),
            _ => return Err(VfsError::NotRegular),
        }
        // No AT_SYMLINK_FOLLOW: a link swapped in is linked as itself, never
        // through, and the check above refused links.
        rfs::linkat(from.fd(), from_name, to.fd(), to_name, AtFlags::empty()).map_err(map_errno)
    }

    fn read_link(&self, path: &str) -> VfsResult<String> {
        let (parent, name) = self.parent(path)?;
        if name.is_empty() {
            return Err(VfsError::InvalidPath);
        }
        let target = match rfs::readlinkat(parent.fd(), name, Vec::new()) {
            Ok(target) => target,
            Err(rustix::io::Errno::INVAL) => return Err(VfsError::InvalidPath),
            Err(e) => return Err(map_errno(e)),
        };
        let target = target.into_string().map_err(|_| VfsError::InvalidPath)?;
        if let Some(absolute) = target.strip_prefix('/') {
            // Only the root's own spelling is translated; any other
            // absolute target is outside and is not shown.
            let inside = Path::new("/")
                .join(absolute)
                .strip_prefix(&self.root_path)
                .map_err(|_| VfsError::BoundaryEscape)?
                .to_str()
                .ok_or(VfsError::InvalidPath)?
                .to_string();
            return Ok(format!("/{inside}"));
        }
        Ok(target)
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vfs::resolve;
    use std::os::unix::fs::symlink;

    fn scratch(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("astrid-hostdir-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn parts(path: &str) -> Vec<String> {
        path.split('/').map(str::to_string).collect()
    }

    /// The host checks a resolved path, then a symlink is swapped in where
    /// the check saw a directory (the worst moment, made deterministic):
    /// every operation on the checked path refuses instead of following it
    /// to the place the link names, which the check never saw.
    #[test]
    fn a_link_swapped_in_after_the_check_is_never_followed() {
        let root = scratch("swap");
        std::fs::create_dir_all(root.join("ws/d")).unwrap();
        std::fs::create_dir(root.join("private")).unwrap();
        std::fs::write(root.join("private/secret"), "s3cret").unwrap();
        std::fs::write(root.join("ws/d/secret"), "public").unwrap();
        let dir = HostDir::open(&root).unwrap();

        let checked = resolve(&dir, &parts("ws/d/secret"), true).unwrap();
        assert_eq!(checked, parts("ws/d/secret"));
        // The swap: ws/d becomes a link to ../private.
        std::fs::rename(root.join("ws/d"), root.join("ws/old")).unwrap();
        symlink("../private", root.join("ws/d")).unwrap();

        let path = checked.join("/");
        let read = OpenFlags(OpenFlags::READ);
        let write = OpenFlags(OpenFlags::WRITE | OpenFlags::CREATE | OpenFlags::TRUNCATE);
        assert_eq!(dir.open(&path, read), Err(VfsError::InvalidPath));
        assert_eq!(dir.open("ws/d/new", write), Err(VfsError::InvalidPath));
        assert_eq!(dir.stat(&path, true), Err(VfsError::InvalidPath));
        assert_eq!(dir.stat(&path, false), Err(VfsError::InvalidPath));
        assert_eq!(dir.mkdir("ws/d/m"), Err(VfsError::InvalidPath));
        assert_eq!(dir.remove_file(&path), Err(VfsError::InvalidPath));
        assert_eq!(dir.rename(&path, "ws/stolen"), Err(VfsError::InvalidPath));
        assert_eq!(
            dir.hard_link(&path, "ws/stolen"),
            Err(VfsError::InvalidPath)
        );
        assert_eq!(dir.read_link("ws/d/secret"), Err(VfsError::InvalidPath));
        assert_eq!(
            dir.read_dir("ws/d", &mut |_| true),
            Err(VfsError::NotDirectory)
        );
        // The final component swapped: a link where a file was checked.
        std::fs::remove_file(root.join("ws/d")).unwrap();
        std::fs::rename(root.join("ws/old"), root.join("ws/d")).unwrap();
        std::fs::remove_file(root.join("ws/d/secret")).unwrap();
        symlink("../../private/secret", root.join("ws/d/secret")).unwrap();
        assert_eq!(dir.open(&path, read), Err(VfsError::InvalidPath));
        assert_eq!(dir.open(&path, write), Err(VfsError::InvalidPath));
        assert_eq!(dir.stat(&path, true), Err(VfsError::InvalidPath));
        assert_eq!(dir.hard_link(&path, "ws/l"), Err(VfsError::InvalidPath));

        assert_eq!(
            std::fs::read_to_string(root.join("private/secret")).unwrap(),
            "s3cret"
        );
        let private: Vec<_> = std::fs::read_dir(root.join("private")).unwrap().collect();
        assert_eq!(private.len(), 1, "nothing created in private/");
        assert!(!root.join("ws/stolen").exists() && !root.join("ws/l").exists());
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn special_files_are_refused_without_blocking() {
        let root = scratch("fifo");
        let status = std::process::Command::new("mkfifo")
            .arg(root.join("pipe"))
            .status()
            .unwrap();
        assert!(status.success());
        let dir = HostDir::open(&root).unwrap();
        for flags in [
            OpenFlags::READ,
            OpenFlags::WRITE,
            OpenFlags::READ | OpenFlags::WRITE | OpenFlags::CREATE,
        ] {
            assert_eq!(
                dir.open("pipe", OpenFlags(flags)),
                Err(VfsError::NotRegular),
                "{flags}"
            );
        }
        assert_eq!(dir.stat("pipe", true).unwrap().kind, FileKind::Fifo);
        assert_eq!(dir.hard_link("pipe", "pipe2"), Err(VfsError::NotRegular));
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn link_text_is_translated_only_inside_the_root() {
        let root = scratch("links");
        symlink(root.join("a"), root.join("abs_in")).unwrap();
        symlink("/etc/passwd", root.join("abs_out")).unwrap();
        symlink(root.join("../x"), root.join("abs_dotdot")).unwrap();
        symlink("../../etc", root.join("rel")).unwrap();
        let dir = HostDir::open(&root).unwrap();
        assert_eq!(dir.read_link("abs_in").unwrap(), "/a");
        assert_eq!(dir.read_link("abs_out"), Err(VfsError::BoundaryEscape));
        // Relative text is the host's verbatim; the host layer judges where
        // it leads (`vfs::link_destination`).
        assert_eq!(dir.read_link("rel").unwrap(), "../../etc");
        assert_eq!(crate::vfs::link_destination(&[], "../../etc"), None);
        assert_eq!(
            crate::vfs::link_destination(&parts("a/b"), "../c/./d"),
            Some(parts("a/c/d"))
        );
        let dotdot = dir
            .read_link("abs_dotdot")
            .map(|t| crate::vfs::link_destination(&[], &t));
        assert!(
            matches!(dotdot, Ok(None) | Err(VfsError::BoundaryEscape)),
            "{dotdot:?}"
        );
        std::fs::remove_dir_all(&root).unwrap();
    }
}
