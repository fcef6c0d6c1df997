//! Embedder VFS providers over C (c-api §5): a size-prefixed table of
//! callbacks mounted on a runtime under a mount name (`cwd`, `home`, `tmp`).

use super::errors::astrid_error_t;
use super::runtime::{astrid_finalizer_fn, astrid_runtime_t, runtime_from};
use super::{astrid_status_t, guard, install_or_disarm, sized_struct, str_arg, Callback};
use crate::error::{Error, Result};
use crate::policy::paths::Mount;
use crate::vfs::{DirEntry, FileKind, OpenFlags, Stat, Timestamp, Vfs, VfsError, VfsResult};
use std::sync::Arc;

/// What a VFS provider callback returns: an `ASTRID_VFS_*` code (0 =
/// success, positive = the `astrid:fs` error the guest sees). Unknown codes
/// count as `ASTRID_VFS_IO`.
pub type astrid_vfs_status_t = i32;

/// Provider result: success.
pub const ASTRID_VFS_OK: astrid_vfs_status_t = 0;
/// Nothing at the path (guest: `not-found`).
pub const ASTRID_VFS_NOT_FOUND: astrid_vfs_status_t = 1;
/// Permission refused, read-only storage (guest: `access`).
pub const ASTRID_VFS_ACCESS: astrid_vfs_status_t = 2;
/// Something already exists at the path (guest: `already-exists`).
pub const ASTRID_VFS_ALREADY_EXISTS: astrid_vfs_status_t = 3;
/// A file where a directory is needed (guest: `not-directory`).
pub const ASTRID_VFS_NOT_DIRECTORY: astrid_vfs_status_t = 4;
/// A directory where a file is needed (guest: `is-directory`).
pub const ASTRID_VFS_IS_DIRECTORY: astrid_vfs_status_t = 5;
/// The directory has entries (guest: `not-empty`).
pub const ASTRID_VFS_NOT_EMPTY: astrid_vfs_status_t = 6;
/// The path or a link on it leaves the provider's root (guest: `boundary-escape`).
pub const ASTRID_VFS_BOUNDARY_ESCAPE: astrid_vfs_status_t = 7;
/// A name the provider cannot store (guest: `invalid-path`).
pub const ASTRID_VFS_INVALID_PATH: astrid_vfs_status_t = 8;
/// Out of space or quota (guest: `quota`).
pub const ASTRID_VFS_QUOTA: astrid_vfs_status_t = 9;
/// Would have to wait for a lock held elsewhere (guest: `would-block`; not retried).
pub const ASTRID_VFS_WOULD_BLOCK: astrid_vfs_status_t = 10;
/// The two paths are on different devices (guest: `cross-vfs`).
pub const ASTRID_VFS_CROSS_VFS: astrid_vfs_status_t = 11;
/// Too large for the provider (guest: `too-large`).
pub const ASTRID_VFS_TOO_LARGE: astrid_vfs_status_t = 12;
/// Unknown or closed handle (guest: `closed`).
pub const ASTRID_VFS_CLOSED: astrid_vfs_status_t = 13;
/// The operation is not supported (guest: `unknown("not supported")`); the same as a NULL entry.
pub const ASTRID_VFS_NOT_SUPPORTED: astrid_vfs_status_t = 14;
/// Any other failure (guest: `unknown`, with generic text). Unknown codes count as this.
pub const ASTRID_VFS_IO: astrid_vfs_status_t = 15;

/// Flags of a provider's `open`: `ASTRID_VFS_OPEN_*` bits.
pub type astrid_vfs_open_flags_t = u32;

/// `open` flag: readable.
pub const ASTRID_VFS_OPEN_READ: astrid_vfs_open_flags_t = 1;
/// `open` flag: writable.
pub const ASTRID_VFS_OPEN_WRITE: astrid_vfs_open_flags_t = 2;
/// `open` flag: create when missing.
pub const ASTRID_VFS_OPEN_CREATE: astrid_vfs_open_flags_t = 4;
/// `open` flag: truncate to zero length.
pub const ASTRID_VFS_OPEN_TRUNCATE: astrid_vfs_open_flags_t = 8;
/// `open` flag: every write goes to the end.
pub const ASTRID_VFS_OPEN_APPEND: astrid_vfs_open_flags_t = 16;
/// `open` flag (with CREATE): fail with ALREADY_EXISTS when the file exists.
pub const ASTRID_VFS_OPEN_EXCLUSIVE: astrid_vfs_open_flags_t = 32;

/// Kind of a directory entry (`astrid_vfs_stat_t.kind`, read-dir entries):
/// an `ASTRID_VFS_KIND_*` value.
pub type astrid_vfs_kind_t = u32;

/// Entry kind: unknown (or none of the others).
pub const ASTRID_VFS_KIND_UNKNOWN: astrid_vfs_kind_t = 0;
/// Entry kind: a regular file.
pub const ASTRID_VFS_KIND_REGULAR: astrid_vfs_kind_t = 1;
/// Entry kind: a directory.
pub const ASTRID_VFS_KIND_DIRECTORY: astrid_vfs_kind_t = 2;
/// Entry kind: a symbolic link.
pub const ASTRID_VFS_KIND_SYMLINK: astrid_vfs_kind_t = 3;
/// Entry kind: a block device.
pub const ASTRID_VFS_KIND_BLOCK_DEVICE: astrid_vfs_kind_t = 4;
/// Entry kind: a character device.
pub const ASTRID_VFS_KIND_CHARACTER_DEVICE: astrid_vfs_kind_t = 5;
/// Entry kind: a named pipe.
pub const ASTRID_VFS_KIND_FIFO: astrid_vfs_kind_t = 6;
/// Entry kind: a socket.
pub const ASTRID_VFS_KIND_SOCKET: astrid_vfs_kind_t = 7;

const _: () = assert!(
    ASTRID_VFS_OPEN_READ == OpenFlags::READ
        && ASTRID_VFS_OPEN_WRITE == OpenFlags::WRITE
        && ASTRID_VFS_OPEN_CREATE == OpenFlags::CREATE
        && ASTRID_VFS_OPEN_TRUNCATE == OpenFlags::TRUNCATE
        && ASTRID_VFS_OPEN_APPEND == OpenFlags::APPEND
        && ASTRID_VFS_OPEN_EXCLUSIVE == OpenFlags::EXCLUSIVE
);

/// Which times of `astrid_vfs_stat_t` are set (`has_times`): `ASTRID_VFS_HAS_*` bits.
pub type astrid_vfs_time_flags_t = u32;

/// `astrid_vfs_stat_t.has_times` bit: `modified_*` are set.
pub const ASTRID_VFS_HAS_MODIFIED: astrid_vfs_time_flags_t = 1;
/// `astrid_vfs_stat_t.has_times` bit: `created_*` are set.
pub const ASTRID_VFS_HAS_CREATED: astrid_vfs_time_flags_t = 2;
/// `astrid_vfs_stat_t.has_times` bit: `accessed_*` are set.
pub const ASTRID_VFS_HAS_ACCESSED: astrid_vfs_time_flags_t = 4;

/// Metadata a provider fills in (zeroed by the library before each call).
#[repr(C)]
#[derive(Clone, Copy, Default)]
pub struct astrid_vfs_stat_t {
    pub size: u64,
    /// `ASTRID_VFS_KIND_*`.
    pub kind: astrid_vfs_kind_t,
    /// Permission bits; 0 when the provider has none.
    pub mode: u32,
    /// `ASTRID_VFS_HAS_*` bits saying which times are set.
    pub has_times: astrid_vfs_time_flags_t,
    pub modified_nsec: u32,
    pub modified_sec: i64,
    pub created_sec: i64,
    pub accessed_sec: i64,
    pub created_nsec: u32,
    pub accessed_nsec: u32,
}

/// Receives one directory entry from `read_dir` (name as UTF-8 `(ptr, len)`,
/// copied; kind `ASTRID_VFS_KIND_*`). Returns 0 to continue, non-zero when
/// the library wants no more entries. Only valid during that `read_dir` call.
pub type astrid_vfs_dir_sink_fn = Option<
    unsafe extern "C" fn(
        sink: *mut libc::c_void,
        name: *const libc::c_char,
        name_len: usize,
        kind: astrid_vfs_kind_t,
    ) -> i32,
>;

/// A provider operation on one path (`mkdir`, `remove_file`, `remove_dir`).
pub type astrid_vfs_path_fn = Option<
    unsafe extern "C" fn(
        user_data: *mut libc::c_void,
        path: *const libc::c_char,
        path_len: usize,
    ) -> astrid_vfs_status_t,
>;

/// A provider operation on two paths of the mount (`rename`, `hard_link`).
pub type astrid_vfs_two_paths_fn = Option<
    unsafe extern "C" fn(
        user_data: *mut libc::c_void,
        src: *const libc::c_char,
        src_len: usize,
        dst: *const libc::c_char,
        dst_len: usize,
    ) -> astrid_vfs_status_t,
>;

/// A VFS provider: callbacks taking `user_data` first and returning an
/// `ASTRID_VFS_*` code. Size-prefixed (`size = sizeof(astrid_vfs_ops_t)`);
/// copied by `astrid_runtime_mount_vfs`. A NULL entry means "not supported".
///
/// Paths are UTF-8 `(ptr, len)` pairs, NOT NUL-terminated, relative to the
/// mount root, `/`-separated, with no empty, `.` or `..` component and no
/// NUL; the root itself is the empty path. They are already checked against
/// the manifest and the gate, and links have been resolved with `stat`
/// (no-follow) and `read_link` — so a provider without `read_link` is
/// treated as having no symlinks. Handles are the provider's own numbers;
/// the guest never sees them. Positional reads and writes move at most
/// 1 MiB per call. Callbacks run on library worker threads (or the thread
/// executing the guest with `ASTRID_RUNTIME_INLINE_CALLBACKS`), possibly
/// concurrently, each under the runtime's `vfs_timeout_ms`, except that a
/// whole-file call (`read-file`, `write-file`, `fs-append`, either half of
/// `fs-copy`) runs its open, reads or writes and close back to back on one
/// thread, under one `vfs_timeout_ms` for the sequence.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct astrid_vfs_ops_t {
    pub size: usize,
    /// Metadata of `path`; `follow` = 0 inspects a final symlink itself.
    pub stat: Option<
        unsafe extern "C" fn(
            user_data: *mut libc::c_void,
            path: *const libc::c_char,
            path_len: usize,
            follow: u32,
            out: *mut astrid_vfs_stat_t,
        ) -> astrid_vfs_status_t,
    >,
    /// Opens `path` with `ASTRID_VFS_OPEN_*` flags; a directory is IS_DIRECTORY.
    pub open: Option<
        unsafe extern "C" fn(
            user_data: *mut libc::c_void,
            path: *const libc::c_char,
            path_len: usize,
            flags: astrid_vfs_open_flags_t,
            out_handle: *mut u64,
        ) -> astrid_vfs_status_t,
    >,
    /// Reads up to `len` bytes at `offset` into `buf`; `*out_read` < `len` only at end of file.
    pub read_at: Option<
        unsafe extern "C" fn(
            user_data: *mut libc::c_void,
            handle: u64,
            offset: u64,
            buf: *mut u8,
            len: usize,
            out_read: *mut usize,
        ) -> astrid_vfs_status_t,
    >,
    /// Writes `len` bytes at `offset` (append handles: at the end); `*out_written` > 0 on success.
    pub write_at: Option<
        unsafe extern "C" fn(
            user_data: *mut libc::c_void,
            handle: u64,
            offset: u64,
            data: *const u8,
            len: usize,
            out_written: *mut usize,
        ) -> astrid_vfs_status_t,
    >,
    /// Releases a handle (the result is ignored).
    pub close: Option<
        unsafe extern "C" fn(user_data: *mut libc::c_void, handle: u64) -> astrid_vfs_status_t,
    >,
    /// Flushes a handle (`data_only` = 1: data without metadata).
    pub sync: Option<
        unsafe extern "C" fn(
            user_data: *mut libc::c_void,
            handle: u64,
            data_only: u32,
        ) -> astrid_vfs_status_t,
    >,
    /// Truncates or zero-extends a file.
    pub set_len: Option<
        unsafe extern "C" fn(
            user_data: *mut libc::c_void,
            handle: u64,
            len: u64,
        ) -> astrid_vfs_status_t,
    >,
    /// Metadata of an open handle. Optional: without it whole-file reads
    /// read until `read_at` reports the end, with no size known up front.
    pub fstat: Option<
        unsafe extern "C" fn(
            user_data: *mut libc::c_void,
            handle: u64,
            out: *mut astrid_vfs_stat_t,
        ) -> astrid_vfs_status_t,
    >,
    /// Pushes each entry of a directory (never `.` or `..`) into `sink(sink_ctx, ...)`.
    pub read_dir: Option<
        unsafe extern "C" fn(
            user_data: *mut libc::c_void,
            path: *const libc::c_char,
            path_len: usize,
            sink: astrid_vfs_dir_sink_fn,
            sink_ctx: *mut libc::c_void,
        ) -> astrid_vfs_status_t,
    >,
    /// Creates one directory (its parent exists; it does not).
    pub mkdir: astrid_vfs_path_fn,
    /// Removes a file or symlink.
    pub remove_file: astrid_vfs_path_fn,
    /// Removes an empty directory.
    pub remove_dir: astrid_vfs_path_fn,
    /// Moves `src` to `dst`, replacing a file or an empty directory there.
    pub rename: astrid_vfs_two_paths_fn,
    /// Adds the name `dst` for the file `src`.
    pub hard_link: astrid_vfs_two_paths_fn,
    /// Writes a symlink's target (relative text, or `/`-rooted relative to
    /// the mount root) into `buf` (capacity `cap` = 4096) and its length into
    /// `*out_len`. Not a link: INVALID_PATH.
    pub read_link: Option<
        unsafe extern "C" fn(
            user_data: *mut libc::c_void,
            path: *const libc::c_char,
            path_len: usize,
            buf: *mut libc::c_char,
            cap: usize,
            out_len: *mut usize,
        ) -> astrid_vfs_status_t,
    >,
}

fn status(code: astrid_vfs_status_t) -> VfsResult<()> {
    Err(match code {
        ASTRID_VFS_OK => return Ok(()),
        ASTRID_VFS_NOT_FOUND => VfsError::NotFound,
        ASTRID_VFS_ACCESS => VfsError::Access,
        ASTRID_VFS_ALREADY_EXISTS => VfsError::AlreadyExists,
        ASTRID_VFS_NOT_DIRECTORY => VfsError::NotDirectory,
        ASTRID_VFS_IS_DIRECTORY => VfsError::IsDirectory,
        ASTRID_VFS_NOT_EMPTY => VfsError::NotEmpty,
        ASTRID_VFS_BOUNDARY_ESCAPE => VfsError::BoundaryEscape,
        ASTRID_VFS_INVALID_PATH => VfsError::InvalidPath,
        ASTRID_VFS_QUOTA => VfsError::Quota,
        ASTRID_VFS_WOULD_BLOCK => VfsError::WouldBlock,
        ASTRID_VFS_CROSS_VFS => VfsError::CrossVfs,
        ASTRID_VFS_TOO_LARGE => VfsError::TooLarge,
        ASTRID_VFS_CLOSED => VfsError::Closed,
        ASTRID_VFS_NOT_SUPPORTED => VfsError::NotSupported,
        _ => VfsError::Io,
    })
}

fn kind(code: astrid_vfs_kind_t) -> FileKind {
    match code {
        ASTRID_VFS_KIND_REGULAR => FileKind::Regular,
        ASTRID_VFS_KIND_DIRECTORY => FileKind::Directory,
        ASTRID_VFS_KIND_SYMLINK => FileKind::Symlink,
        ASTRID_VFS_KIND_BLOCK_DEVICE => FileKind::BlockDevice,
        ASTRID_VFS_KIND_CHARACTER_DEVICE => FileKind::CharacterDevice,
        ASTRID_VFS_KIND_FIFO => FileKind::Fifo,
        ASTRID_VFS_KIND_SOCKET => FileKind::Socket,
        _ => FileKind::Unknown,
    }
}

fn stat_from(c: &astrid_vfs_stat_t) -> Stat {
    let time = |bit: astrid_vfs_time_flags_t, seconds: i64, nanoseconds: u32| {
        (c.has_times & bit != 0 && nanoseconds < 1_000_000_000).then_some(Timestamp {
            seconds,
            nanoseconds,
        })
    };
    Stat {
        size: c.size,
        kind: kind(c.kind),
        mode: c.mode & 0o7777,
        modified: time(ASTRID_VFS_HAS_MODIFIED, c.modified_sec, c.modified_nsec),
        created: time(ASTRID_VFS_HAS_CREATED, c.created_sec, c.created_nsec),
        accessed: time(ASTRID_VFS_HAS_ACCESSED, c.accessed_sec, c.accessed_nsec),
    }
}

/// An embedder's VFS as a provider.
pub(super) struct CallbackVfs {
    callback: Callback<astrid_vfs_ops_t>,
}

/// A provider over an embedder's callback table (copied).
pub(super) fn callback_vfs(
    ops: astrid_vfs_ops_t,
    user_data: *mut libc::c_void,
    finalizer: astrid_finalizer_fn,
) -> Arc<CallbackVfs> {
    Arc::new(CallbackVfs {
        callback: Callback::new(ops, user_data, finalizer),
    })
}

/// Gives a load-time provider's `user_data` back to the embedder (the load
/// failed): no finalizer runs, even if something still holds the provider
/// for a moment. (A failed load ran no guest code, so nothing calls it.)
pub(super) fn disarm_unused(provider: Arc<CallbackVfs>) {
    provider.callback.disarm_shared();
}

/// The provider as the capsule's mount.
pub(super) fn as_vfs(provider: &Arc<CallbackVfs>) -> Arc<dyn Vfs> {
    provider.clone()
}

macro_rules! op {
    ($self:ident, $name:ident) => {
        match $self.callback.function.$name {
            Some(f) => f,
            None => return Err(VfsError::NotSupported),
        }
    };
}

impl CallbackVfs {
    fn ud(&self) -> *mut libc::c_void {
        self.callback.user_data
    }

    fn path_op(&self, f: astrid_vfs_path_fn, path: &str) -> VfsResult<()> {
        let f = f.ok_or(VfsError::NotSupported)?;
        // SAFETY: the embedder's callback with its user_data and a borrowed path.
        status(unsafe { f(self.ud(), path.as_ptr().cast(), path.len()) })
    }

    fn two_path_op(&self, f: astrid_vfs_two_paths_fn, src: &str, dst: &str) -> VfsResult<()> {
        let f = f.ok_or(VfsError::NotSupported)?;
        // SAFETY: as for path_op.
        status(unsafe {
            f(
                self.ud(),
                src.as_ptr().cast(),
                src.len(),
                dst.as_ptr().cast(),
                dst.len(),
            )
        })
    }
}

/// Collects `read_dir` entries for the library.
unsafe extern "C" fn dir_sink(
    sink: *mut libc::c_void,
    name: *const libc::c_char,
    name_len: usize,
    kind_code: astrid_vfs_kind_t,
) -> i32 {
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        // SAFETY: `sink` is the closure pointer this library passed to read_dir.
        let sink = unsafe { &mut *sink.cast::<&mut dyn FnMut(DirEntry) -> bool>() };
        // SAFETY: the provider promises `name_len` readable bytes.
        let Ok(name) = (unsafe { str_arg(name, name_len, "name") }) else {
            return 0; // names that are not UTF-8 are skipped
        };
        let more = sink(DirEntry {
            name: name.to_string(),
            kind: kind(kind_code),
        });
        i32::from(!more)
    }));
    outcome.unwrap_or(1)
}

impl Vfs for CallbackVfs {
    fn stat(&self, path: &str, follow: bool) -> VfsResult<Stat> {
        let f = op!(self, stat);
        let mut out = astrid_vfs_stat_t::default();
        // SAFETY: callback contract; `out` is writable.
        status(unsafe {
            f(
                self.ud(),
                path.as_ptr().cast(),
                path.len(),
                u32::from(follow),
                &mut out,
            )
        })?;
        Ok(stat_from(&out))
    }

    fn open(&self, path: &str, flags: OpenFlags) -> VfsResult<u64> {
        let f = op!(self, open);
        let mut handle = 0u64;
        // SAFETY: callback contract.
        status(unsafe {
            f(
                self.ud(),
                path.as_ptr().cast(),
                path.len(),
                flags.0,
                &mut handle,
            )
        })?;
        Ok(handle)
    }

    fn read_at(&self, handle: u64, offset: u64, len: usize, buf: &mut Vec<u8>) -> VfsResult<()> {
        let f = op!(self, read_at);
        let start = buf.len();
        buf.reserve(len);
        let mut read = 0usize;
        // SAFETY: `len` bytes of spare capacity are writable; the provider
        // reports how many it wrote.
        let code = unsafe {
            f(
                self.ud(),
                handle,
                offset,
                buf.as_mut_ptr().add(start),
                len,
                &mut read,
            )
        };
        status(code)?;
        if read > len {
            return Err(VfsError::Io); // an over-read claim is garbage, not data
        }
        // SAFETY: the provider initialised `read` <= `len` bytes.
        unsafe { buf.set_len(start + read) };
        Ok(())
    }

    fn write_at(&self, handle: u64, offset: u64, data: &[u8]) -> VfsResult<usize> {
        let f = op!(self, write_at);
        let mut written = 0usize;
        // SAFETY: callback contract; `data` is readable.
        status(unsafe {
            f(
                self.ud(),
                handle,
                offset,
                data.as_ptr(),
                data.len(),
                &mut written,
            )
        })?;
        if written > data.len() {
            return Err(VfsError::Io);
        }
        Ok(written)
    }

    fn sync(&self, handle: u64, data_only: bool) -> VfsResult<()> {
        let f = op!(self, sync);
        // SAFETY: callback contract.
        status(unsafe { f(self.ud(), handle, u32::from(data_only)) })
    }

    fn set_len(&self, handle: u64, len: u64) -> VfsResult<()> {
        let f = op!(self, set_len);
        // SAFETY: callback contract.
        status(unsafe { f(self.ud(), handle, len) })
    }

    fn fstat(&self, handle: u64) -> VfsResult<Stat> {
        let f = op!(self, fstat);
        let mut out = astrid_vfs_stat_t::default();
        // SAFETY: callback contract.
        status(unsafe { f(self.ud(), handle, &mut out) })?;
        Ok(stat_from(&out))
    }

    fn close(&self, handle: u64) {
        if let Some(f) = self.callback.function.close {
            // SAFETY: callback contract.
            unsafe { f(self.ud(), handle) };
        }
    }

    fn read_dir(&self, path: &str, sink: &mut dyn FnMut(DirEntry) -> bool) -> VfsResult<()> {
        let f = op!(self, read_dir);
        let mut sink: &mut dyn FnMut(DirEntry) -> bool = sink;
        let ctx = (&mut sink as *mut &mut dyn FnMut(DirEntry) -> bool).cast();
        // SAFETY: callback contract; `ctx` lives for the call.
        status(unsafe {
            f(
                self.ud(),
                path.as_ptr().cast(),
                path.len(),
                Some(dir_sink),
                ctx,
            )
        })
    }

    fn mkdir(&self, path: &str) -> VfsResult<()> {
        self.path_op(self.callback.function.mkdir, path)
    }

    fn remove_file(&self, path: &str) -> VfsResult<()> {
        self.path_op(self.callback.function.remove_file, path)
    }

    fn remove_dir(&self, path: &str) -> VfsResult<()> {
        self.path_op(self.callback.function.remove_dir, path)
    }

    fn rename(&self, src: &str, dst: &str) -> VfsResult<()> {
        self.two_path_op(self.callback.function.rename, src, dst)
    }

    fn hard_link(&self, src: &str, dst: &str) -> VfsResult<()> {
        self.two_path_op(self.callback.function.hard_link, src, dst)
    }

    fn read_link(&self, path: &str) -> VfsResult<String> {
        let f = op!(self, read_link);
        let mut buf = vec![0u8; crate::policy::paths::MAX_PATH_BYTES];
        let mut len = 0usize;
        // SAFETY: callback contract; `buf` has `cap` writable bytes.
        status(unsafe {
            f(
                self.ud(),
                path.as_ptr().cast(),
                path.len(),
                buf.as_mut_ptr().cast(),
                buf.len(),
                &mut len,
            )
        })?;
        if len > buf.len() {
            return Err(VfsError::InvalidPath);
        }
        buf.truncate(len);
        String::from_utf8(buf).map_err(|_| VfsError::InvalidPath)
    }

    fn has_symlinks(&self) -> bool {
        self.callback.function.read_link.is_some()
    }

    fn is_callback(&self) -> bool {
        true
    }
}

fn mount_named(name: &str) -> Result<Mount> {
    match name {
        "cwd" | "workspace" => Ok(Mount::Cwd),
        "home" => Ok(Mount::Home),
        "tmp" => Ok(Mount::Tmp),
        other => Err(Error::invalid_argument(format!(
            "unknown mount `{other}` (expected cwd, home or tmp)"
        ))),
    }
}

/// Serves the mount `mount_name` (`cwd`, `home` or `tmp`; UTF-8 `(ptr, len)`)
/// from the provider `ops` for every capsule loaded afterwards; capsules
/// already loaded keep what they had. `ops` is copied; NULL unmounts. A
/// workspace or home root in a capsule's load options takes precedence for
/// that capsule. `home` is the capsule owner's home: calls made for another
/// principal have none. A `tmp` provider is shared by every capsule and data
/// scope (without one, each gets private memory). `finalizer(user_data)`
/// runs exactly once, after the provider is unmounted or replaced and the
/// last capsule using it is gone; when the call fails it is not run and
/// `user_data` stays the caller's. With NULL `ops`, `user_data` and
/// `finalizer` are ignored. Errors: `ASTRID_E_INVALID_ARGUMENT`
/// (NULL runtime, unknown mount, `ops->size` too small), `ASTRID_E_UTF8`,
/// `ASTRID_E_CLOSED`. Thread-safe.
#[no_mangle]
pub extern "C" fn astrid_runtime_mount_vfs(
    rt: *mut astrid_runtime_t,
    mount_name: *const libc::c_char,
    mount_name_len: usize,
    ops: *const astrid_vfs_ops_t,
    user_data: *mut libc::c_void,
    finalizer: astrid_finalizer_fn,
    err: *mut *mut astrid_error_t,
) -> astrid_status_t {
    guard(err, || {
        let runtime = runtime_from(rt)?;
        // SAFETY: caller contract for (ptr, len) strings.
        let mount = mount_named(unsafe { str_arg(mount_name, mount_name_len, "mount_name")? })?;
        // SAFETY: NULL or a readable size-prefixed table.
        let Some(ops) = (unsafe { sized_struct(ops, "ops")? }) else {
            return runtime.mount_vfs(mount, None);
        };
        let provider = Arc::new(CallbackVfs {
            callback: Callback::new(*ops, user_data, finalizer),
        });
        install_or_disarm(
            provider,
            |p| p.callback.disarm(),
            |provider| runtime.mount_vfs(mount, Some(provider)),
        )
    })
}

/// The provider `astrid_runtime_mount_vfs` would mount, for Rust embedders
/// and tests that drive a C callback table through the Rust API.
///
/// # Safety
/// `ops` must point to a valid table whose callbacks honour the contract of
/// [`astrid_vfs_ops_t`] for `user_data`, from any thread, until the provider
/// is dropped (then `finalizer(user_data)` runs).
pub unsafe fn callback_provider(
    ops: &astrid_vfs_ops_t,
    user_data: *mut libc::c_void,
    finalizer: astrid_finalizer_fn,
) -> Arc<dyn Vfs> {
    Arc::new(CallbackVfs {
        callback: Callback::new(*ops, user_data, finalizer),
    })
}
