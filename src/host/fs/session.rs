//! Provider sessions: every provider call bounded by the VFS deadline and
//! the call's cancel token, the open-handle quota and write budget, and the
//! whole-file, copy and tree operations composed from provider calls.

use super::bindings::FsView;
use super::bindings::{
    ErrorCode, FileHandle, MAX_OPEN_FILES, MAX_READDIR_ENTRIES, MAX_TREE_DEPTH, MAX_WHOLE_FILE,
};
use super::errors::map;
use super::targets::{Modes, Target};
use crate::handoff::Bounded;
use crate::host::audit::Audited;
use crate::host::view::{EndOfCall, HostView};
use crate::policy::paths::Mount;
use crate::vfs::{self, FileKind, OpenFlags, Stat, Vfs, VfsError, VfsResult, MAX_POSITIONAL};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;
use wasmtime::component::Resource;

impl FsView<'_> {
    /// Runs a provider operation; callback providers run it under the VFS
    /// deadline and the call's cancel token.
    pub(super) fn vfs_call<R: Send + 'static>(
        &self,
        vfs: &Arc<dyn Vfs>,
        op: impl FnOnce(&dyn Vfs) -> VfsResult<R> + Send + 'static,
    ) -> VfsResult<R> {
        self.provider_call(vfs, false, op)
    }

    /// One provider call (or session); `cleanup` ones (a `close`) run even
    /// for a call that was cancelled, without being waited for then.
    pub(super) fn provider_call<R: Send + 'static>(
        &self,
        vfs: &Arc<dyn Vfs>,
        cleanup: bool,
        op: impl FnOnce(&dyn Vfs) -> VfsResult<R> + Send + 'static,
    ) -> VfsResult<R> {
        if !vfs.is_callback() {
            return op(&**vfs);
        }
        let provider = vfs.clone();
        match self.ctx().backend_call(cleanup, move || op(&*provider)) {
            Bounded::Done(result) => result,
            Bounded::Panicked => Err(VfsError::Io),
            Bounded::Overran => Err(VfsError::Timeout),
            Bounded::Cancelled => Err(VfsError::Cancelled),
        }
    }

    /// Opens a provider handle, charging the capsule's handle quota.
    pub(super) fn open_counted(&self, target: &Target, flags: OpenFlags) -> Result<u64, ErrorCode> {
        let counter = &self.shared.open_files;
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

    pub(super) fn close_counted(&self, vfs: &Arc<dyn Vfs>, handle: u64) {
        self.shared.open_files.fetch_sub(1, Ordering::SeqCst);
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
    pub(super) fn charge_positional(
        &self,
        vfs: &Arc<dyn Vfs>,
        handle: u64,
        offset: u64,
        length: u64,
    ) -> Result<(), ErrorCode> {
        if self.shared.write_budget.is_none() {
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
    pub(super) fn charge_writes(&self, bytes: u64) -> Result<(), ErrorCode> {
        let Some(budget) = self.shared.write_budget else {
            return Ok(());
        };
        // One compare-and-swap: a charge that does not fit never touches
        // the counter, so no concurrent charge can see it wrapped.
        let used = &self.shared.bytes_written;
        used.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |spent| {
            spent.checked_add(bytes).filter(|&total| total <= budget)
        })
        .map(|_| ())
        .map_err(|_| ErrorCode::Quota)
    }

    /// One provider read of up to `want` bytes at `offset`, appended to
    /// `data`. The buffer travels into the provider and back, so the bytes
    /// are copied once, straight into the result. Returns the count read.
    pub(super) fn read_chunk(
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
    pub(super) fn write_all(
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
    pub(super) fn with_open<R: Send + 'static>(
        &self,
        target: &Target,
        flags: OpenFlags,
        body: impl FnOnce(&dyn Vfs, u64, &SessionStop) -> Result<R, ErrorCode> + Send + 'static,
    ) -> Result<R, ErrorCode> {
        let counter = &self.shared.open_files;
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
    pub(super) fn write_whole(
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

    pub(super) fn stat_target(&self, target: &Target, follow: bool) -> VfsResult<Stat> {
        let rel = target.rel.clone();
        self.vfs_call(&target.vfs, move |v| v.stat(&rel, follow))
    }

    pub(super) fn list(&self, vfs: &Arc<dyn Vfs>, rel: &str) -> VfsResult<Vec<vfs::DirEntry>> {
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
    pub(super) fn check_stop(&self) -> VfsResult<()> {
        if self.call.token.is_cancelled() {
            return Err(VfsError::Cancelled);
        }
        if Instant::now() >= self.call.deadline {
            return Err(VfsError::Timeout);
        }
        Ok(())
    }

    /// Removes a tree below `rel` without following links; counts entries.
    pub(super) fn remove_tree(
        &self,
        vfs: &Arc<dyn Vfs>,
        rel: &str,
        depth: usize,
    ) -> VfsResult<u64> {
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
    pub(super) fn handle_call<T: crate::host::audit::Payload>(
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
        self.audited_io(call, Some(&spelling), bytes_in, |state| {
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
    pub(super) fn mount(&self, mount: Mount) -> Option<Arc<dyn Vfs>> {
        let mounts = &self.shared.mounts;
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
            Mount::Tmp => Some(mounts.tmp_for(self.ctx().data_scope())),
        }
    }
}

/// Closes every handle the current call opened.
impl EndOfCall for FsView<'_> {
    fn end_call(&mut self) {
        for rep in std::mem::take(&mut self.fs.open_files) {
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

/// Reads a whole open file from `v`, failing past `limit` bytes. Provider
/// calls only, so it runs inside one provider session (`with_open`).
/// Reads go straight into the result buffer: what `fstat` promised, then a
/// one-byte probe for the end (a file that grew meanwhile is read on in
/// full-size pieces; a provider without `fstat` is read until it reports
/// the end).
pub(super) fn read_whole(
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
pub(super) struct SessionStop {
    pub(super) token: crate::cancel::CancelToken,
    pub(super) until: Instant,
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
pub(super) fn write_piece_max(vfs: &Arc<dyn Vfs>) -> usize {
    if vfs.is_callback() {
        MAX_POSITIONAL
    } else {
        usize::MAX
    }
}

/// Writes all of `data` from `offset` on an open handle of `v`; inside a
/// session, `stop` is checked between provider calls.
pub(super) fn write_whole_at(
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
