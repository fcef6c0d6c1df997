//! The virtual filesystem a capsule sees (host ABI §5): the provider trait,
//! its value types, and the symlink walk the host composes `canonicalize`
//! and every path check from. Providers: [`memory::MemoryFs`],
//! [`host_dir::HostDir`], and the embedder's C callbacks (`ffi::vfs`).
//!
//! Paths handed to a provider are mount-relative, `/`-separated and
//! normalised: no empty, `.` or `..` component, no NUL. The mount root is
//! the empty string.

pub mod host_dir;
pub mod memory;

use crate::signal::MutexExt;
use std::collections::VecDeque;
use std::path::PathBuf;

/// What a provider reports; maps one-to-one onto `astrid:fs` error cases.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VfsError {
    NotFound,
    Access,
    AlreadyExists,
    NotDirectory,
    IsDirectory,
    NotEmpty,
    BoundaryEscape,
    InvalidPath,
    Quota,
    WouldBlock,
    CrossVfs,
    TooLarge,
    Closed,
    /// The provider does not offer this operation.
    NotSupported,
    /// An embedder callback overran its deadline.
    Timeout,
    /// The call was cancelled while a callback ran.
    Cancelled,
    /// A FIFO, socket or device where a regular file is needed: never
    /// opened for a guest, so no call can block on one.
    NotRegular,
    /// Any other failure (no detail reaches the guest).
    Io,
}

impl VfsError {
    /// Maps an OS error (host ABI §5.4).
    pub fn from_io(error: &std::io::Error) -> VfsError {
        use std::io::ErrorKind as K;
        if let Some(code) = error.raw_os_error() {
            return match code {
                libc::ENOENT => VfsError::NotFound,
                libc::EACCES | libc::EPERM | libc::EROFS => VfsError::Access,
                libc::EEXIST => VfsError::AlreadyExists,
                libc::ENOTDIR => VfsError::NotDirectory,
                libc::EISDIR => VfsError::IsDirectory,
                libc::ENOTEMPTY => VfsError::NotEmpty,
                libc::EINVAL | libc::ENAMETOOLONG | libc::ELOOP => VfsError::InvalidPath,
                libc::ENXIO | libc::ENODEV => VfsError::NotRegular,
                libc::ENOSPC | libc::EDQUOT => VfsError::Quota,
                libc::EAGAIN => VfsError::WouldBlock,
                libc::EXDEV => VfsError::CrossVfs,
                libc::EFBIG => VfsError::TooLarge,
                libc::EBADF => VfsError::Closed,
                libc::ENOSYS | libc::EOPNOTSUPP => VfsError::NotSupported,
                _ => VfsError::Io,
            };
        }
        match error.kind() {
            K::NotFound => VfsError::NotFound,
            K::PermissionDenied => VfsError::Access,
            K::AlreadyExists => VfsError::AlreadyExists,
            K::InvalidInput => VfsError::InvalidPath,
            K::WouldBlock => VfsError::WouldBlock,
            K::Unsupported => VfsError::NotSupported,
            _ => VfsError::Io,
        }
    }
}

pub type VfsResult<T> = Result<T, VfsError>;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FileKind {
    Unknown,
    Regular,
    Directory,
    Symlink,
    BlockDevice,
    CharacterDevice,
    Fifo,
    Socket,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timestamp {
    pub seconds: i64,
    pub nanoseconds: u32,
}

impl Timestamp {
    pub fn now() -> Timestamp {
        Timestamp::from_system(std::time::SystemTime::now())
    }

    pub fn from_system(time: std::time::SystemTime) -> Timestamp {
        match time.duration_since(std::time::UNIX_EPOCH) {
            Ok(d) => Timestamp {
                seconds: i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
                nanoseconds: d.subsec_nanos(),
            },
            Err(before) => {
                let d = before.duration();
                let mut seconds = -i64::try_from(d.as_secs()).unwrap_or(i64::MAX);
                let mut nanoseconds = d.subsec_nanos();
                if nanoseconds > 0 {
                    seconds -= 1;
                    nanoseconds = 1_000_000_000 - nanoseconds;
                }
                Timestamp {
                    seconds,
                    nanoseconds,
                }
            }
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stat {
    pub size: u64,
    pub kind: FileKind,
    /// Permission bits; 0 where the provider has none.
    pub mode: u32,
    pub modified: Option<Timestamp>,
    pub created: Option<Timestamp>,
    pub accessed: Option<Timestamp>,
}

/// How a provider opens a file (bit values shared with `ASTRID_VFS_OPEN_*`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OpenFlags(pub u32);

impl OpenFlags {
    pub const READ: u32 = 1;
    pub const WRITE: u32 = 2;
    pub const CREATE: u32 = 4;
    pub const TRUNCATE: u32 = 8;
    pub const APPEND: u32 = 16;
    pub const EXCLUSIVE: u32 = 32;
    pub const ALL: u32 = 63;

    pub fn has(self, bit: u32) -> bool {
        self.0 & bit != 0
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DirEntry {
    pub name: String,
    pub kind: FileKind,
}

/// Per-call limit on positional reads and writes.
pub const MAX_POSITIONAL: usize = 1 << 20;
/// Link hops before a walk gives up (as ELOOP would).
pub const MAX_LINK_HOPS: usize = 40;

/// A filesystem a mount is served from. Implementations are called from
/// many threads at once. Provider handles are private to the host: they
/// never reach the guest.
pub trait Vfs: Send + Sync {
    /// Metadata; `follow` = false inspects a final symlink itself.
    fn stat(&self, path: &str, follow: bool) -> VfsResult<Stat>;
    fn open(&self, path: &str, flags: OpenFlags) -> VfsResult<u64>;
    /// Appends up to `len` bytes read at `offset` to `buf`; fewer at EOF.
    fn read_at(&self, handle: u64, offset: u64, len: usize, buf: &mut Vec<u8>) -> VfsResult<()>;
    /// Writes `data` at `offset` (append handles: at the end); returns the
    /// count written.
    fn write_at(&self, handle: u64, offset: u64, data: &[u8]) -> VfsResult<usize>;
    fn sync(&self, handle: u64, data_only: bool) -> VfsResult<()>;
    fn set_len(&self, handle: u64, len: u64) -> VfsResult<()>;
    fn fstat(&self, handle: u64) -> VfsResult<Stat>;
    fn close(&self, handle: u64);
    /// Pushes every entry (never `.` or `..`) into `sink`; `sink` returns
    /// false to stop early.
    fn read_dir(&self, path: &str, sink: &mut dyn FnMut(DirEntry) -> bool) -> VfsResult<()>;
    /// Creates one directory (strict).
    fn mkdir(&self, path: &str) -> VfsResult<()>;
    fn remove_file(&self, path: &str) -> VfsResult<()>;
    /// Removes an empty directory.
    fn remove_dir(&self, path: &str) -> VfsResult<()>;
    fn rename(&self, src: &str, dst: &str) -> VfsResult<()>;
    fn hard_link(&self, src: &str, dst: &str) -> VfsResult<()>;
    /// A link's target: relative text verbatim, or `/`-rooted relative to
    /// the mount root. Not a link → `InvalidPath`.
    fn read_link(&self, path: &str) -> VfsResult<String>;
    /// Whether paths can contain symlinks; false skips the resolution walk.
    fn has_symlinks(&self) -> bool;
    /// Whether operations call into the embedder (and so need a deadline).
    fn is_callback(&self) -> bool {
        false
    }
    /// The host path behind `path`, for the gate (host directories only).
    fn host_path(&self, _path: &str) -> Option<PathBuf> {
        None
    }
}

/// Joins components into the provider spelling.
pub fn join(components: &[String]) -> String {
    components.join("/")
}

/// Why a resolution stopped: the provider's error, and where the walk was
/// when it happened, so the host can tell a failure on a path the guest
/// spelled from one reached through a link (which it must not describe
/// unless that place is granted too).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResolveFailure {
    pub error: VfsError,
    /// The resolved components up to and including the one that failed.
    pub reached: Vec<String>,
    /// Whether a symlink had been followed before the failure.
    pub via_link: bool,
}

/// Resolves the symlinks along `components` the way the host ABI requires:
/// the deepest existing ancestor is resolved, the missing tail re-appended,
/// and any step out of the mount root is `BoundaryEscape`. The last
/// component is followed only when `follow_last` is set. The result holds
/// no symlink (as of the walk), so providers can act on it without
/// following any.
pub fn resolve(
    vfs: &dyn Vfs,
    components: &[String],
    follow_last: bool,
) -> Result<Vec<String>, ResolveFailure> {
    if !vfs.has_symlinks() || components.is_empty() {
        return Ok(components.to_vec());
    }
    let mut pending: VecDeque<String> = components.iter().cloned().collect();
    let mut resolved: Vec<String> = Vec::with_capacity(components.len());
    let mut hops = 0;
    let fail = |error, reached: &Vec<String>, hops: usize| ResolveFailure {
        error,
        reached: reached.clone(),
        via_link: hops > 0,
    };
    while let Some(part) = pending.pop_front() {
        match part.as_str() {
            "" | "." => continue,
            ".." => {
                if resolved.pop().is_none() {
                    return Err(fail(VfsError::BoundaryEscape, &resolved, hops));
                }
                continue;
            }
            _ => {}
        }
        resolved.push(part);
        if resolved.len() > crate::policy::paths::MAX_COMPONENTS {
            return Err(fail(VfsError::InvalidPath, &resolved, hops));
        }
        if pending.is_empty() && !follow_last {
            break;
        }
        let stat = match vfs.stat(&join(&resolved), false) {
            Ok(stat) => stat,
            Err(VfsError::NotFound) => {
                // Deepest existing ancestor found: the tail is re-appended as
                // spelled (it cannot contain links that do not exist yet).
                for rest in pending.drain(..) {
                    match rest.as_str() {
                        "" | "." => {}
                        ".." => return Err(fail(VfsError::NotFound, &resolved, hops)),
                        _ => resolved.push(rest),
                    }
                }
                if resolved.len() > crate::policy::paths::MAX_COMPONENTS {
                    return Err(fail(VfsError::InvalidPath, &resolved, hops));
                }
                break;
            }
            Err(e) => return Err(fail(e, &resolved, hops)),
        };
        if stat.kind != FileKind::Symlink {
            continue;
        }
        hops += 1;
        if hops > MAX_LINK_HOPS {
            return Err(fail(VfsError::InvalidPath, &resolved, hops));
        }
        let target = vfs
            .read_link(&join(&resolved))
            .map_err(|e| fail(e, &resolved, hops))?;
        resolved.pop();
        if target.starts_with('/') {
            resolved.clear();
        }
        for part in target.split('/').rev() {
            pending.push_front(part.to_string());
        }
    }
    Ok(resolved)
}

/// Where a link's text leads, lexically, from the directory `dir` holding
/// the link: `None` when it climbs out of the mount root. Absolute text is
/// `/`-rooted at the mount root (the provider spelling of `read_link`).
pub fn link_destination(dir: &[String], target: &str) -> Option<Vec<String>> {
    let mut at: Vec<String> = if target.starts_with('/') {
        Vec::new()
    } else {
        dir.to_vec()
    };
    for part in target.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                at.pop()?;
            }
            name => at.push(name.to_string()),
        }
    }
    Some(at)
}

/// The providers behind one capsule's three mounts (host ABI §5.2).
pub struct CapsuleMounts {
    pub cwd: std::sync::Arc<dyn Vfs>,
    /// The owner's home, when the embedder provides one.
    pub home: Option<std::sync::Arc<dyn Vfs>>,
    /// An embedder-mounted `tmp`, shared by every data scope.
    tmp_shared: Option<std::sync::Arc<dyn Vfs>>,
    /// Otherwise one in-memory scratch space per data scope.
    tmp: std::sync::Mutex<std::collections::HashMap<String, std::sync::Arc<dyn Vfs>>>,
    /// The budget of each scratch space.
    tmp_limits: memory::MemoryLimits,
}

impl CapsuleMounts {
    pub fn new(
        cwd: std::sync::Arc<dyn Vfs>,
        home: Option<std::sync::Arc<dyn Vfs>>,
        tmp_shared: Option<std::sync::Arc<dyn Vfs>>,
        tmp_limits: memory::MemoryLimits,
    ) -> CapsuleMounts {
        CapsuleMounts {
            cwd,
            home,
            tmp_shared,
            tmp: Default::default(),
            tmp_limits,
        }
    }

    /// The scratch mount of a data scope, created on first use.
    pub fn tmp_for(&self, scope: &str) -> std::sync::Arc<dyn Vfs> {
        if let Some(shared) = &self.tmp_shared {
            return shared.clone();
        }
        let mut tmp = self.tmp.locked();
        if let Some(fs) = tmp.get(scope) {
            return fs.clone(); // no key allocation on the common path
        }
        let fs: std::sync::Arc<dyn Vfs> =
            std::sync::Arc::new(memory::MemoryFs::new(self.tmp_limits));
        tmp.insert(scope.to_string(), fs.clone());
        fs
    }
}
