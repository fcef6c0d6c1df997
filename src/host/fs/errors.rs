//! How provider and path failures reach the guest (host ABI §5.4) and the
//! audit log, and how provider stats become `file-stat`.

use super::bindings::{Datetime, ErrorCode, FileHandle, FileStat, FileType};
use crate::host::audit::{audit_cases, Payload};
use crate::host::gated::{GatedError, Refused};
use crate::policy::paths::PathError;
use crate::vfs::{self, FileKind, Stat, VfsError};
use wasmtime::component::Resource;

pub(super) fn map(error: VfsError) -> ErrorCode {
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
}

audit_cases! {
    ErrorCode {
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
    }
    unknown: ErrorCode::Unknown,
    denials: [ErrorCode::CapabilityDenied]
}

impl Payload for FileStat {}
impl Payload for Resource<FileHandle> {}

pub(super) fn file_type(kind: FileKind) -> FileType {
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

pub(super) fn file_stat(stat: Stat) -> FileStat {
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

pub(super) fn path_error(_: PathError) -> Refused<ErrorCode> {
    Refused::Failed(ErrorCode::InvalidPath)
}

/// What a guest learns when resolving its path failed. A failure on the
/// path as the guest spelled it (no link followed yet) is reported as is:
/// that path passed the manifest. One reached through a link is described
/// only where that place is granted too; elsewhere it is a denial, so a
/// link cannot be used to probe what exists, or where links lead, in
/// ungranted places.
pub(super) fn resolve_refusal(
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
