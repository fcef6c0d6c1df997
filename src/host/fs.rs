//! `astrid:fs@1.0.0` (host ABI §2.3, §5): every path is parsed, checked
//! against the manifest, resolved on its mount, checked again on its
//! canonical form, put to the gate, and only then handed to the provider,
//! all through [`HostState::gated`]. The host composes what providers do
//! not offer (exists, mkdir-all, whole-file I/O, copy, remove-dir-all,
//! canonicalize) from the provider operations of §5.3.

use crate::handoff::Bounded;
use crate::host::audit::Payload;
use crate::host::gated::{GatedError, Prepared, Refused};
use crate::host::state::HostState;
use crate::policy::gate::{manifest_grants, GateKind, GateRequest};
use crate::policy::paths::{self, Mount, PathError, VfsPath};
use crate::services::Outcome;
use crate::vfs::{self, FileKind, OpenFlags, Stat, Vfs, VfsError, VfsResult, MAX_POSITIONAL};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;
use wasmtime::component::{HasSelf, Linker, Resource};

mod bindings {
    wasmtime::component::bindgen!({
        inline: "package astrid-runtime:fs; world imports { import astrid:fs/host@1.0.0; }",
        path: ["wit/astrid-fs@1.0.0"],
        world: "imports",
        with: { "astrid:fs/host.file-handle": super::FileHandle },
    });
}

use bindings::astrid::fs::host::{
    self, Datetime, ErrorCode, FileStat, FileType, HostFileHandle, OpenMode,
};

/// Open handles per capsule, summed over its instances.
pub const MAX_OPEN_FILES: usize = 16;
/// Whole-file calls (`read-file`, `write-file`, `fs-append`).
pub const MAX_WHOLE_FILE: usize = 10 << 20;
pub const MAX_READDIR_ENTRIES: usize = 4096;
/// Directory nesting `fs-remove-dir-all` descends before giving up.
const MAX_TREE_DEPTH: usize = 256;

pub fn add_to_linker(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    host::add_to_linker::<HostState, HasSelf<HostState>>(linker, |state| state)
}

/// A guest `file-handle`: the provider handle, `None` once closed.
pub struct FileHandle {
    vfs: Arc<dyn Vfs>,
    handle: Option<u64>,
    readable: bool,
    writable: bool,
    /// The path as opened (VFS spelling), the audit target of its methods.
    spelling: Arc<str>,
}

/// A checked path on its mount, ready for the provider.
struct Target {
    mount: Mount,
    vfs: Arc<dyn Vfs>,
    /// Provider spelling: mount-relative, `/`-separated.
    rel: String,
}

impl Target {
    fn spelling(&self) -> String {
        let scheme = self.mount.scheme();
        let mut text = String::with_capacity(scheme.len() + 3 + self.rel.len());
        text.push_str(scheme);
        text.push_str("://");
        text.push_str(&self.rel);
        text
    }
}

/// Which checks a path needs.
#[derive(Clone, Copy)]
struct Modes {
    readable: bool,
    writable: bool,
}

#[derive(Clone, Copy)]
enum Need {
    Read,
    Write,
    ReadWrite,
}

impl Need {
    fn kinds(self) -> &'static [GateKind] {
        match self {
            Need::Read => &[GateKind::FileRead],
            Need::Write => &[GateKind::FileWrite],
            Need::ReadWrite => &[GateKind::FileRead, GateKind::FileWrite],
        }
    }
}

/// One path argument of a call: its text, the checks it needs, and whether
/// a final symlink is followed.
struct PathArg<'a> {
    text: &'a str,
    need: Need,
    follow: bool,
}

fn read(text: &str) -> PathArg<'_> {
    PathArg {
        text,
        need: Need::Read,
        follow: true,
    }
}

fn write(text: &str) -> PathArg<'_> {
    PathArg {
        text,
        need: Need::Write,
        follow: true,
    }
}

impl<'a> PathArg<'a> {
    fn no_follow(mut self) -> PathArg<'a> {
        self.follow = false;
        self
    }
}

fn map(error: VfsError) -> ErrorCode {
    match error {
        VfsError::NotFound => ErrorCode::NotFound,
        VfsError::Access => ErrorCode::Access,
        VfsError::AlreadyExists => ErrorCode::AlreadyExists,
        VfsError::NotDirectory => ErrorCode::NotDirectory,
        VfsError::IsDirectory => ErrorCode::IsDirectory,
        VfsError::NotEmpty => ErrorCode::NotEmpty,
        VfsError::BoundaryEscape => ErrorCode::BoundaryEscape,
        VfsError::InvalidPath => ErrorCode::InvalidPath,
        VfsError::Quota => ErrorCode::Quota,
        VfsError::WouldBlock => ErrorCode::WouldBlock,
        VfsError::CrossVfs => ErrorCode::CrossVfs,
        VfsError::TooLarge => ErrorCode::TooLarge,
        VfsError::Closed | VfsError::Cancelled => ErrorCode::Closed,
        VfsError::NotSupported => ErrorCode::Unknown("not supported".into()),
        VfsError::Timeout => ErrorCode::Unknown("timeout".into()),
        VfsError::Io => ErrorCode::Unknown("i/o error".into()),
        VfsError::NotRegular => ErrorCode::Unknown("not a regular file".into()),
    }
}

impl GatedError for ErrorCode {
    fn denied() -> Self {
        ErrorCode::CapabilityDenied
    }
    fn cancelled() -> Self {
        ErrorCode::Closed
    }
    fn audit_case(&self) -> (bool, String) {
        let name = match self {
            ErrorCode::NotFound => "not-found",
            ErrorCode::Access => "access",
            ErrorCode::CapabilityDenied => "capability-denied",
            ErrorCode::BoundaryEscape => "boundary-escape",
            ErrorCode::InvalidPath => "invalid-path",
            ErrorCode::WouldBlock => "would-block",
            ErrorCode::IsDirectory => "is-directory",
            ErrorCode::NotDirectory => "not-directory",
            ErrorCode::NotEmpty => "not-empty",
            ErrorCode::TooLarge => "too-large",
            ErrorCode::Quota => "quota",
            ErrorCode::CrossVfs => "cross-vfs",
            ErrorCode::AlreadyExists => "already-exists",
            ErrorCode::Closed => "closed",
            ErrorCode::Unknown(text) => return (false, format!("unknown({text})")),
        };
        (
            matches!(self, ErrorCode::CapabilityDenied),
            name.to_string(),
        )
    }
}

impl<T> crate::host::audit::AuditOutcome for Result<T, ErrorCode> {
    fn audit_outcome(&self) -> (Outcome, Option<String>) {
        match self {
            Ok(_) => (Outcome::Allowed, None),
            Err(code) => match code.audit_case() {
                (true, name) => (Outcome::Denied, Some(name)),
                (false, name) => (Outcome::Failed, Some(name)),
            },
        }
    }
}

impl Payload for FileStat {}
impl Payload for Resource<FileHandle> {}

fn file_type(kind: FileKind) -> FileType {
    match kind {
        FileKind::Unknown => FileType::TypeUnknown,
        FileKind::Regular => FileType::Regular,
        FileKind::Directory => FileType::Directory,
        FileKind::Symlink => FileType::Symlink,
        FileKind::BlockDevice => FileType::BlockDevice,
        FileKind::CharacterDevice => FileType::CharacterDevice,
        FileKind::Fifo => FileType::Fifo,
        FileKind::Socket => FileType::Socket,
    }
}

fn file_stat(stat: Stat) -> FileStat {
    let time = |t: Option<vfs::Timestamp>| {
        t.map(|t| Datetime {
            seconds: t.seconds,
            nanoseconds: t.nanoseconds,
        })
    };
    FileStat {
        size: stat.size,
        kind: file_type(stat.kind),
        mode: stat.mode,
        modified: time(stat.modified),
        created: time(stat.created),
        accessed: time(stat.accessed),
    }
}

fn path_error(_: PathError) -> Refused<ErrorCode> {
    Refused::Failed(ErrorCode::InvalidPath)
}

/// What a guest learns when resolving its path failed. A failure on the
/// path as the guest spelled it (no link followed yet) is reported as is:
/// that path passed the manifest. One reached through a link is described
/// only where that place is granted too; elsewhere it is a denial, so a
/// link cannot be used to probe what exists, or where links lead, in
/// ungranted places.
fn resolve_refusal(
    failure: vfs::ResolveFailure,
    granted: impl FnOnce(Vec<String>) -> bool,
) -> Refused<ErrorCode> {
    let told = !failure.via_link || granted(failure.reached);
    if told {
        Refused::Failed(map(failure.error))
    } else {
        "a link leads outside the granted paths".into()
    }
}

impl HostState {
    /// Runs a provider operation; callback providers run it under the VFS
    /// deadline and the call's cancel token.
    fn vfs_call<R: Send + 'static>(
        &self,
        vfs: &Arc<dyn Vfs>,
        op: impl FnOnce(&dyn Vfs) -> VfsResult<R> + Send + 'static,
    ) -> VfsResult<R> {
        self.provider_call(vfs, false, op)
    }

    /// One provider call (or session); `cleanup` ones (a `close`) run even
    /// for a call that was cancelled, without being waited for then.
    fn provider_call<R: Send + 'static>(
        &self,
        vfs: &Arc<dyn Vfs>,
        cleanup: bool,
        op: impl FnOnce(&dyn Vfs) -> VfsResult<R> + Send + 'static,
    ) -> VfsResult<R> {
        if !vfs.is_callback() {
            return op(&**vfs);
        }
        let runtime = &self.capsule.services;
        let limit = runtime.config.vfs_timeout;
        let (token, deadline) = (&self.call.token, self.call.deadline);
        let bounded = if runtime.inline_callbacks() {
            runtime.run_inline(limit, token, || op(&**vfs))
        } else {
            let vfs = vfs.clone();
            runtime.run_handed_off(limit, deadline, token, cleanup, move || op(&*vfs))
        };
        match bounded {
            Bounded::Done(result) => result,
            Bounded::Panicked => Err(VfsError::Io),
            Bounded::Overran => Err(VfsError::Timeout),
            Bounded::Cancelled => Err(VfsError::Cancelled),
        }
    }

    /// Validation, manifest (lexical, then canonical) and the gate requests
    /// for every path argument of a call.
    fn prepare_paths(
        &self,
        args: &[PathArg<'_>],
    ) -> Result<Prepared<Vec<Target>>, Refused<ErrorCode>> {
        let manifest = &self.capsule.manifest.capabilities;
        let runtime = &self.capsule.services;
        let (asking, auditing) = (runtime.has_gate(), runtime.has_audit_sink());
        let mut prepared = Prepared {
            target: String::new(),
            asks: Vec::new(),
            ctx: Vec::with_capacity(args.len()),
        };
        for arg in args {
            let path = paths::parse(arg.text).map_err(path_error)?;
            let granted = |p: &VfsPath| {
                arg.need.kinds().iter().all(|kind| match kind {
                    GateKind::FileRead => manifest_grants(&manifest.fs_read, p),
                    _ => manifest_grants(&manifest.fs_write, p),
                })
            };
            if !granted(&path) {
                return Err("not granted by the manifest".into());
            }
            let vfs = self
                .mount(path.mount)
                .ok_or_else(|| Refused::from("no home mount for this data scope"))?;
            let components = if vfs.has_symlinks() {
                let lexical = path.components.clone();
                let follow = arg.follow;
                let walked = self.vfs_call(&vfs, move |v| Ok(vfs::resolve(v, &lexical, follow)));
                match walked.map_err(|e| Refused::Failed(map(e)))? {
                    Ok(components) => components,
                    Err(failure) => {
                        return Err(resolve_refusal(failure, |reached| {
                            granted(&VfsPath {
                                mount: path.mount,
                                components: reached,
                            })
                        }))
                    }
                }
            } else {
                path.components
            };
            let canonical = VfsPath {
                mount: path.mount,
                components,
            };
            if !granted(&canonical) {
                return Err("a link leads outside the granted paths".into());
            }
            let target = Target {
                mount: canonical.mount,
                rel: vfs::join(&canonical.components),
                vfs,
            };
            // The spelling is only for the gate and the audit log: without
            // either, the hot path builds no strings.
            if asking || auditing {
                let spelling = target.spelling();
                if auditing {
                    if !prepared.target.is_empty() {
                        prepared.target.push_str(" -> ");
                    }
                    prepared.target.push_str(&spelling);
                }
                if asking {
                    let request = |kind: GateKind, path: String| {
                        GateRequest::file(
                            kind,
                            self.capsule.name.clone(),
                            self.call.principal.clone(),
                            path,
                            target.vfs.host_path(&target.rel),
                        )
                    };
                    // The last request takes the spelling itself.
                    if let Some((last, rest)) = arg.need.kinds().split_last() {
                        for kind in rest {
                            prepared.asks.push(request(*kind, spelling.clone()));
                        }
                        prepared.asks.push(request(*last, spelling));
                    }
                }
            }
            prepared.ctx.push(target);
        }
        Ok(prepared)
    }

    /// One gated fs call: `args` are checked, then `op` runs on the targets.
    fn fs_call<T: Payload>(
        &mut self,
        call: &'static str,
        args: &[PathArg<'_>],
        bytes_in: u64,
        op: impl FnOnce(&mut Self, Vec<Target>) -> Result<T, ErrorCode>,
    ) -> Result<T, ErrorCode> {
        let fallback = args.first().map_or("", |a| a.text).to_string();
        self.gated(
            call,
            &fallback,
            bytes_in,
            |state| state.prepare_paths(args),
            op,
        )
    }

    /// Opens a provider handle, charging the capsule's handle quota.
    fn open_counted(&self, target: &Target, flags: OpenFlags) -> Result<u64, ErrorCode> {
        let counter = &self.capsule.open_files;
        if counter.fetch_add(1, Ordering::SeqCst) >= MAX_OPEN_FILES {
            counter.fetch_sub(1, Ordering::SeqCst);
            return Err(ErrorCode::Quota);
        }
        let rel = target.rel.clone();
        self.vfs_call(&target.vfs, move |v| v.open(&rel, flags))
            .map_err(|e| {
                counter.fetch_sub(1, Ordering::SeqCst);
                map(e)
            })
    }

    fn close_counted(&self, vfs: &Arc<dyn Vfs>, handle: u64) {
        self.capsule.open_files.fetch_sub(1, Ordering::SeqCst);
        // Best effort: a close that times out is abandoned to the provider;
        // one for a cancelled call still reaches it.
        let _ = self.provider_call(vfs, true, move |v| {
            v.close(handle);
            Ok(())
        });
    }

    /// Charges the optional per-capsule write budget `length` bytes of file
    /// length at `offset` on an open handle: the bytes themselves plus any
    /// hole opened past the current end, because the host commits a file's
    /// length, sparse or not. (`set-len` is a write of no bytes at the new
    /// length.) Without a budget this costs nothing.
    fn charge_positional(
        &self,
        vfs: &Arc<dyn Vfs>,
        handle: u64,
        offset: u64,
        length: u64,
    ) -> Result<(), ErrorCode> {
        if self.capsule.write_budget.is_none() {
            return Ok(());
        }
        let size = match self.vfs_call(vfs, move |v| v.fstat(handle)) {
            Ok(stat) => stat.size,
            Err(VfsError::NotSupported) => 0, // charge as if the file were empty
            Err(e) => return Err(map(e)),
        };
        self.charge_writes(length.saturating_add(offset.saturating_sub(size)))
    }

    /// Charges the optional per-capsule write budget.
    fn charge_writes(&self, bytes: u64) -> Result<(), ErrorCode> {
        let Some(budget) = self.capsule.write_budget else {
            return Ok(());
        };
        // One compare-and-swap: a charge that does not fit never touches
        // the counter, so no concurrent charge can see it wrapped.
        let used = &self.capsule.bytes_written;
        used.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |spent| {
            spent.checked_add(bytes).filter(|&total| total <= budget)
        })
        .map(|_| ())
        .map_err(|_| ErrorCode::Quota)
    }

    /// One provider read of up to `want` bytes at `offset`, appended to
    /// `data`. The buffer travels into the provider and back, so the bytes
    /// are copied once, straight into the result. Returns the count read.
    fn read_chunk(
        &self,
        vfs: &Arc<dyn Vfs>,
        handle: u64,
        offset: u64,
        mut data: Vec<u8>,
        want: usize,
    ) -> Result<(Vec<u8>, usize), ErrorCode> {
        let before = data.len();
        let data = self
            .vfs_call(vfs, move |v| {
                v.read_at(handle, offset, want, &mut data).map(|()| data)
            })
            .map_err(map)?;
        match data.len().checked_sub(before) {
            Some(got) if got <= want => Ok((data, got)),
            _ => Err(ErrorCode::Unknown("provider returned too much".into())),
        }
    }

    /// Writes all of `data` at `offset` on an open handle (one hand-off).
    fn write_all(
        &self,
        vfs: &Arc<dyn Vfs>,
        handle: u64,
        data: Vec<u8>,
        offset: u64,
    ) -> Result<(), ErrorCode> {
        let piece_max = write_piece_max(vfs);
        self.vfs_call(vfs, move |v| {
            Ok(write_whole_at(v, handle, &data, offset, piece_max, None))
        })
        .map_err(map)?
    }

    /// Runs `body` on a handle opened for `target` and closes it after, all
    /// as one provider session: with callbacks handed off, a whole-file
    /// call crosses threads once instead of once per provider call. The
    /// capsule's handle quota is charged for the duration.
    fn with_open<R: Send + 'static>(
        &self,
        target: &Target,
        flags: OpenFlags,
        body: impl FnOnce(&dyn Vfs, u64, &SessionStop) -> Result<R, ErrorCode> + Send + 'static,
    ) -> Result<R, ErrorCode> {
        let counter = &self.capsule.open_files;
        if counter.fetch_add(1, Ordering::SeqCst) >= MAX_OPEN_FILES {
            counter.fetch_sub(1, Ordering::SeqCst);
            return Err(ErrorCode::Quota);
        }
        let rel = target.rel.clone();
        // The session stops between provider calls once the call is
        // cancelled or its time is up, even on a thread nobody waits for.
        let limit = self.capsule.services.config.vfs_timeout;
        let stop = SessionStop {
            token: self.call.token.clone(),
            until: (Instant::now() + limit).min(self.call.deadline),
        };
        let outcome = self.vfs_call(&target.vfs, move |v| {
            let handle = v.open(&rel, flags)?;
            let result = body(v, handle, &stop);
            v.close(handle);
            Ok(result)
        });
        counter.fetch_sub(1, Ordering::SeqCst);
        outcome.map_err(map)?
    }

    /// Opens, writes a whole buffer, closes (`write-file`, `fs-append`, copy).
    fn write_whole(
        &self,
        target: &Target,
        flags: OpenFlags,
        data: Vec<u8>,
    ) -> Result<(), ErrorCode> {
        self.charge_writes(data.len() as u64)?;
        let piece_max = write_piece_max(&target.vfs);
        self.with_open(target, flags, move |v, handle, stop| {
            write_whole_at(v, handle, &data, 0, piece_max, Some(stop))
        })
    }

    fn stat_target(&self, target: &Target, follow: bool) -> VfsResult<Stat> {
        let rel = target.rel.clone();
        self.vfs_call(&target.vfs, move |v| v.stat(&rel, follow))
    }

    fn list(&self, vfs: &Arc<dyn Vfs>, rel: &str) -> VfsResult<Vec<vfs::DirEntry>> {
        let rel = rel.to_string();
        self.vfs_call(vfs, move |v| {
            let mut entries = Vec::new();
            v.read_dir(&rel, &mut |entry| {
                if entry.name.is_empty()
                    || entry.name == "."
                    || entry.name == ".."
                    || entry.name.contains('/')
                {
                    return true; // a provider's garbage never reaches the guest
                }
                entries.push(entry);
                entries.len() <= MAX_READDIR_ENTRIES
            })
            .map(|()| entries)
        })
    }

    /// Checked between the steps of every loop over provider calls: once
    /// the call is cancelled or past its deadline, no further step runs.
    fn check_stop(&self) -> VfsResult<()> {
        if self.call.token.is_cancelled() {
            return Err(VfsError::Cancelled);
        }
        if Instant::now() >= self.call.deadline {
            return Err(VfsError::Timeout);
        }
        Ok(())
    }

    /// Removes a tree below `rel` without following links; counts entries.
    fn remove_tree(&self, vfs: &Arc<dyn Vfs>, rel: &str, depth: usize) -> VfsResult<u64> {
        self.check_stop()?;
        if depth > MAX_TREE_DEPTH {
            return Err(VfsError::InvalidPath); // as ELOOP would
        }
        let mut removed = 0;
        loop {
            let entries = self.list(vfs, rel)?;
            if entries.is_empty() {
                break;
            }
            for entry in entries {
                self.check_stop()?;
                let child = if rel.is_empty() {
                    entry.name.clone()
                } else {
                    format!("{rel}/{}", entry.name)
                };
                let kind = match entry.kind {
                    FileKind::Unknown => {
                        let c = child.clone();
                        self.vfs_call(vfs, move |v| v.stat(&c, false))?.kind
                    }
                    kind => kind,
                };
                if kind == FileKind::Directory {
                    removed += self.remove_tree(vfs, &child, depth + 1)?;
                } else {
                    self.vfs_call(vfs, move |v| v.remove_file(&child))?;
                    removed += 1;
                }
            }
        }
        let rel = rel.to_string();
        self.vfs_call(vfs, move |v| v.remove_dir(&rel))?;
        Ok(removed + 1)
    }

    /// A `file-handle` method: cancel first, closed handles, audit.
    fn handle_call<T>(
        &mut self,
        call: &'static str,
        this: &Resource<FileHandle>,
        bytes_in: u64,
        op: impl FnOnce(&Self, &Arc<dyn Vfs>, u64, Modes) -> Result<T, ErrorCode>,
    ) -> Result<T, ErrorCode> {
        let (spelling, vfs, handle, modes) = match self.table.get(this) {
            Ok(file) => (
                file.spelling.clone(),
                file.vfs.clone(),
                file.handle,
                Modes {
                    readable: file.readable,
                    writable: file.writable,
                },
            ),
            Err(_) => return Err(ErrorCode::Closed),
        };
        self.audited(call, Some(&spelling), bytes_in, |state| {
            if state.call.token.is_cancelled() {
                return Err(ErrorCode::Closed);
            }
            let handle = handle.ok_or(ErrorCode::Closed)?;
            op(state, &vfs, handle, modes)
        })
    }

    /// The provider serving `mount` for the current data scope (host ABI
    /// §5.2). `home` belongs to the owner: calls on behalf of someone else
    /// have none.
    fn mount(&self, mount: Mount) -> Option<Arc<dyn Vfs>> {
        let mounts = &self.capsule.mounts;
        match mount {
            Mount::Cwd => Some(mounts.cwd.clone()),
            Mount::Home => {
                let owner_scope = match (&self.call.principal, &self.capsule.owner) {
                    (None, _) => true,
                    (Some(p), Some(owner)) => p == owner,
                    (Some(_), None) => false,
                };
                mounts.home.clone().filter(|_| owner_scope)
            }
            Mount::Tmp => Some(mounts.tmp_for(self.data_scope())),
        }
    }

    /// Closes every handle this store's current call opened (end of a pooled
    /// call, cancel, unload). The guest's resources stay, reporting `closed`.
    pub(crate) fn close_call_files(&mut self) {
        for rep in std::mem::take(&mut self.open_files) {
            let resource = Resource::<FileHandle>::new_borrow(rep);
            let Ok(file) = self.table.get_mut(&resource) else {
                continue;
            };
            if let Some(handle) = file.handle.take() {
                let vfs = file.vfs.clone();
                self.close_counted(&vfs, handle);
            }
        }
    }
}

impl HostFileHandle for HostState {
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
        self.open_files.retain(|r| *r != rep);
        if let Some(handle) = file.handle {
            self.close_counted(&file.vfs, handle);
        }
        Ok(())
    }
}

impl host::Host for HostState {
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
                    state.open_files.push(resource.rep());
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

/// Reads a whole open file from `v`, failing past `limit` bytes. Provider
/// calls only, so it runs inside one provider session (`with_open`).
/// Reads go straight into the result buffer: what `fstat` promised, then a
/// one-byte probe for the end (a file that grew meanwhile is read on in
/// full-size pieces; a provider without `fstat` is read until it reports
/// the end).
fn read_whole(
    v: &dyn Vfs,
    handle: u64,
    limit: usize,
    stop: &SessionStop,
) -> Result<Vec<u8>, ErrorCode> {
    let size = match v.fstat(handle) {
        Ok(stat) => stat.size,
        Err(VfsError::NotSupported) => 0,
        Err(e) => return Err(map(e)),
    };
    if size > limit as u64 {
        return Err(ErrorCode::TooLarge);
    }
    let size = usize::try_from(size).unwrap_or(usize::MAX);
    // One spare byte: the end-of-file probe then needs no reallocation.
    let mut data = Vec::with_capacity(size.min(MAX_WHOLE_FILE) + 1);
    loop {
        let want = match data.len() {
            read if read < size => (size - read).min(MAX_POSITIONAL),
            read if read == size => 1,
            _ => MAX_POSITIONAL,
        };
        let before = data.len();
        if before > 0 {
            stop.check()?;
        }
        v.read_at(handle, before as u64, want, &mut data)
            .map_err(map)?;
        let got = match data.len().checked_sub(before) {
            Some(got) if got <= want => got,
            _ => return Err(ErrorCode::Unknown("provider returned too much".into())),
        };
        if got == 0 {
            return Ok(data);
        }
        if data.len() > limit {
            return Err(ErrorCode::TooLarge);
        }
    }
}

/// Why a provider session stops early: the call was cancelled, or the
/// session's time (`vfs_timeout_ms`, within the call's deadline) is up.
struct SessionStop {
    token: crate::cancel::CancelToken,
    until: Instant,
}

impl SessionStop {
    fn check(&self) -> Result<(), ErrorCode> {
        if self.token.is_cancelled() {
            return Err(map(VfsError::Cancelled));
        }
        if Instant::now() >= self.until {
            return Err(map(VfsError::Timeout));
        }
        Ok(())
    }
}

/// The largest write one provider call gets: embedder callbacks take pieces
/// of at most 1 MiB (their contract); the built-in providers get one write,
/// which keeps `fs-append` atomic per call.
fn write_piece_max(vfs: &Arc<dyn Vfs>) -> usize {
    if vfs.is_callback() {
        MAX_POSITIONAL
    } else {
        usize::MAX
    }
}

/// Writes all of `data` from `offset` on an open handle of `v`; inside a
/// session, `stop` is checked between provider calls.
fn write_whole_at(
    v: &dyn Vfs,
    handle: u64,
    data: &[u8],
    offset: u64,
    piece_max: usize,
    stop: Option<&SessionStop>,
) -> Result<(), ErrorCode> {
    let mut done = 0usize;
    while done < data.len() {
        if done > 0 {
            if let Some(stop) = stop {
                stop.check()?;
            }
        }
        let piece = &data[done..data.len().min(done.saturating_add(piece_max))];
        let written = v
            .write_at(handle, offset.saturating_add(done as u64), piece)
            .map_err(map)?;
        if written == 0 || written > piece.len() {
            return Err(ErrorCode::Unknown("short write".into()));
        }
        done += written;
    }
    Ok(())
}
