package astrid

// #include "shim.h"
import "C"

import (
	"errors"
	"io/fs"
	"strconv"
	"syscall"
	"time"
)

// VFS is a filesystem provider serving a mount (cwd, home or tmp) to
// capsules; see Runtime.MountVFS. The five methods here are required
// (a read-only filesystem); a provider supports more by implementing the
// optional interfaces below (VFSWriter, VFSDirReader, ...). What it does
// not implement the guest sees as unknown("not supported").
//
// Paths are relative to the mount root, "/"-separated, with no empty, "."
// or ".." component and no NUL; the root is "". The library has already
// checked them against the manifest and the gate and resolved symlinks
// (through Stat with follow=false and ReadLink), so a provider cannot be
// walked out of its root. Handles are the provider's own numbers. Methods
// run on library threads, possibly concurrently, each bounded by
// Config.VFSTimeout.
//
// Errors: return a VFSCode (VFSNotFound, ...) or an error wrapping one; the
// io/fs errors (fs.ErrNotExist, fs.ErrExist, fs.ErrPermission, fs.ErrClosed),
// errors.ErrUnsupported and the usual syscall.Errno values map to the
// matching code too, so a provider backed by package os needs no
// translation. Anything else is VFSIO. A panic is recovered as VFSIO and
// reported (Runtime.SetPanicHandler).
type VFS interface {
	// Stat returns the metadata of path; follow=false inspects a final
	// symlink itself.
	Stat(path string, follow bool) (FileStat, error)
	// Open opens path with OpenFlag bits and returns a handle; opening a
	// directory is VFSIsDirectory.
	Open(path string, flags OpenFlag) (handle uint64, err error)
	// ReadAt reads up to len(buf) bytes at offset; fewer only at the end of
	// the file (returning io.EOF with the count is fine). buf is the
	// library's memory: do not keep it after returning.
	ReadAt(handle uint64, buf []byte, offset uint64) (int, error)
	// StatHandle returns the metadata of an open handle (whole-file reads
	// size their buffer with it).
	StatHandle(handle uint64) (FileStat, error)
	// CloseHandle releases a handle (its error is ignored).
	CloseHandle(handle uint64) error
}

// VFSWriter is implemented by providers that can write. WriteAt writes data
// at offset (append handles: at the end) and returns how many bytes it
// wrote (> 0). data is the library's memory: do not keep it.
type VFSWriter interface {
	WriteAt(handle uint64, data []byte, offset uint64) (int, error)
}

// VFSSyncer flushes a handle (dataOnly: data without metadata).
type VFSSyncer interface {
	Sync(handle uint64, dataOnly bool) error
}

// VFSTruncater truncates or zero-extends an open file.
type VFSTruncater interface {
	SetLen(handle uint64, size uint64) error
}

// VFSDirReader lists a directory: ReadDir calls emit for each entry (never
// "." or ".."); emit returns false when the library wants no more, and
// must not be called after ReadDir returns.
type VFSDirReader interface {
	ReadDir(path string, emit func(name string, kind FileKind) bool) error
}

// VFSDirMaker creates one directory (its parent exists, it does not).
type VFSDirMaker interface {
	Mkdir(path string) error
}

// VFSFileRemover removes a file or symlink.
type VFSFileRemover interface {
	RemoveFile(path string) error
}

// VFSDirRemover removes an empty directory.
type VFSDirRemover interface {
	RemoveDir(path string) error
}

// VFSRenamer moves src to dst, replacing a file or an empty directory there.
type VFSRenamer interface {
	Rename(src, dst string) error
}

// VFSHardLinker adds the name dst for the file src.
type VFSHardLinker interface {
	HardLink(src, dst string) error
}

// VFSLinkReader returns a symlink's target: relative text, or "/"-rooted
// relative to the mount root; at most 4096 bytes. Not a link: VFSInvalidPath.
// A provider without it is treated as having no symlinks.
type VFSLinkReader interface {
	ReadLink(path string) (string, error)
}

// VFSReleaser is told when the library has dropped the provider: after it
// was unmounted or replaced (or the runtime closed) and the last capsule
// using it is gone. Release runs once, on a library or closing thread; no
// other method runs after it.
type VFSReleaser interface {
	Release()
}

// FileKind is an entry kind (ASTRID_VFS_KIND_*).
type FileKind uint32

// The entry kinds.
const (
	KindUnknown     FileKind = C.ASTRID_VFS_KIND_UNKNOWN
	KindRegular     FileKind = C.ASTRID_VFS_KIND_REGULAR
	KindDirectory   FileKind = C.ASTRID_VFS_KIND_DIRECTORY
	KindSymlink     FileKind = C.ASTRID_VFS_KIND_SYMLINK
	KindBlockDevice FileKind = C.ASTRID_VFS_KIND_BLOCK_DEVICE
	KindCharDevice  FileKind = C.ASTRID_VFS_KIND_CHARACTER_DEVICE
	KindFIFO        FileKind = C.ASTRID_VFS_KIND_FIFO
	KindSocket      FileKind = C.ASTRID_VFS_KIND_SOCKET
)

// OpenFlag is a bit of VFS.Open's flags (ASTRID_VFS_OPEN_*).
type OpenFlag uint32

// The open flags.
const (
	OpenRead      OpenFlag = C.ASTRID_VFS_OPEN_READ
	OpenWrite     OpenFlag = C.ASTRID_VFS_OPEN_WRITE
	OpenCreate    OpenFlag = C.ASTRID_VFS_OPEN_CREATE
	OpenTruncate  OpenFlag = C.ASTRID_VFS_OPEN_TRUNCATE
	OpenAppend    OpenFlag = C.ASTRID_VFS_OPEN_APPEND
	OpenExclusive OpenFlag = C.ASTRID_VFS_OPEN_EXCLUSIVE // with OpenCreate: fail if it exists
)

// FileStat is the metadata a provider reports. Zero times are "not known".
type FileStat struct {
	Size uint64
	Kind FileKind
	// Mode holds permission bits (0 when the provider has none).
	Mode     uint32
	Modified time.Time
	Created  time.Time
	Accessed time.Time
}

func (s *FileStat) toC(out *C.astrid_vfs_stat_t) {
	out.size = C.uint64_t(s.Size)
	out.kind = C.uint32_t(s.Kind)
	out.mode = C.uint32_t(s.Mode)
	if !s.Modified.IsZero() {
		out.has_times |= C.ASTRID_VFS_HAS_MODIFIED
		out.modified_sec = C.int64_t(s.Modified.Unix())
		out.modified_nsec = C.uint32_t(s.Modified.Nanosecond())
	}
	if !s.Created.IsZero() {
		out.has_times |= C.ASTRID_VFS_HAS_CREATED
		out.created_sec = C.int64_t(s.Created.Unix())
		out.created_nsec = C.uint32_t(s.Created.Nanosecond())
	}
	if !s.Accessed.IsZero() {
		out.has_times |= C.ASTRID_VFS_HAS_ACCESSED
		out.accessed_sec = C.int64_t(s.Accessed.Unix())
		out.accessed_nsec = C.uint32_t(s.Accessed.Nanosecond())
	}
}

// VFSCode is a provider result (ASTRID_VFS_*); each maps one-to-one onto
// an astrid:fs error the guest sees. It is an error, for providers to return.
type VFSCode int32

// The provider results (VFSOK is success, never returned as an error).
const (
	VFSOK             VFSCode = C.ASTRID_VFS_OK
	VFSNotFound       VFSCode = C.ASTRID_VFS_NOT_FOUND
	VFSAccess         VFSCode = C.ASTRID_VFS_ACCESS
	VFSAlreadyExists  VFSCode = C.ASTRID_VFS_ALREADY_EXISTS
	VFSNotDirectory   VFSCode = C.ASTRID_VFS_NOT_DIRECTORY
	VFSIsDirectory    VFSCode = C.ASTRID_VFS_IS_DIRECTORY
	VFSNotEmpty       VFSCode = C.ASTRID_VFS_NOT_EMPTY
	VFSBoundaryEscape VFSCode = C.ASTRID_VFS_BOUNDARY_ESCAPE
	VFSInvalidPath    VFSCode = C.ASTRID_VFS_INVALID_PATH
	VFSQuota          VFSCode = C.ASTRID_VFS_QUOTA
	VFSWouldBlock     VFSCode = C.ASTRID_VFS_WOULD_BLOCK
	VFSCrossVFS       VFSCode = C.ASTRID_VFS_CROSS_VFS
	VFSTooLarge       VFSCode = C.ASTRID_VFS_TOO_LARGE
	VFSClosed         VFSCode = C.ASTRID_VFS_CLOSED
	VFSNotSupported   VFSCode = C.ASTRID_VFS_NOT_SUPPORTED
	VFSIO             VFSCode = C.ASTRID_VFS_IO
)

var vfsNames = map[VFSCode]string{
	VFSOK: "ok", VFSNotFound: "not-found", VFSAccess: "access", VFSAlreadyExists: "already-exists",
	VFSNotDirectory: "not-directory", VFSIsDirectory: "is-directory", VFSNotEmpty: "not-empty",
	VFSBoundaryEscape: "boundary-escape", VFSInvalidPath: "invalid-path", VFSQuota: "quota",
	VFSWouldBlock: "would-block", VFSCrossVFS: "cross-vfs", VFSTooLarge: "too-large",
	VFSClosed: "closed", VFSNotSupported: "not-supported", VFSIO: "io",
}

func (c VFSCode) Error() string {
	if name, ok := vfsNames[c]; ok {
		return "astrid vfs: " + name
	}
	return "astrid vfs: code " + strconv.Itoa(int(c))
}

// vfsCodeOf maps a provider's error onto the code the library expects.
func vfsCodeOf(err error) C.int32_t {
	if err == nil {
		return C.ASTRID_VFS_OK
	}
	var code VFSCode
	if errors.As(err, &code) {
		if code == VFSOK {
			return C.ASTRID_VFS_IO // an error that claims success is still a failure
		}
		return C.int32_t(code)
	}
	var errno syscall.Errno
	if errors.As(err, &errno) {
		switch errno {
		case syscall.ENOTDIR:
			return C.ASTRID_VFS_NOT_DIRECTORY
		case syscall.EISDIR:
			return C.ASTRID_VFS_IS_DIRECTORY
		case syscall.ENOTEMPTY:
			return C.ASTRID_VFS_NOT_EMPTY
		case syscall.ENOSPC, syscall.EDQUOT:
			return C.ASTRID_VFS_QUOTA
		case syscall.EXDEV:
			return C.ASTRID_VFS_CROSS_VFS
		case syscall.EFBIG:
			return C.ASTRID_VFS_TOO_LARGE
		case syscall.EAGAIN:
			return C.ASTRID_VFS_WOULD_BLOCK
		case syscall.ENAMETOOLONG, syscall.EILSEQ:
			return C.ASTRID_VFS_INVALID_PATH
		case syscall.EROFS:
			return C.ASTRID_VFS_ACCESS
		case syscall.EBADF:
			return C.ASTRID_VFS_CLOSED
		}
	}
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return C.ASTRID_VFS_NOT_FOUND
	case errors.Is(err, fs.ErrExist):
		return C.ASTRID_VFS_ALREADY_EXISTS
	case errors.Is(err, fs.ErrPermission):
		return C.ASTRID_VFS_ACCESS
	case errors.Is(err, fs.ErrClosed):
		return C.ASTRID_VFS_CLOSED
	case errors.Is(err, errors.ErrUnsupported):
		return C.ASTRID_VFS_NOT_SUPPORTED
	}
	return C.ASTRID_VFS_IO
}

// vfsState is what the library's user_data handle of a mount resolves to:
// the provider and its optional interfaces, looked up once.
type vfsState struct {
	fs         VFS
	writer     VFSWriter
	syncer     VFSSyncer
	truncater  VFSTruncater
	dirReader  VFSDirReader
	dirMaker   VFSDirMaker
	fileRemove VFSFileRemover
	dirRemove  VFSDirRemover
	renamer    VFSRenamer
	linker     VFSHardLinker
	linkReader VFSLinkReader
	releaser   VFSReleaser
	rep        *reporter
}

// release runs the provider's Release, if any, when the library drops it.
func (st *vfsState) release() {
	if st.releaser == nil {
		return
	}
	defer func() {
		if p := recover(); p != nil {
			st.rep.report("vfs.Release", p)
		}
	}()
	st.releaser.Release()
}

func newVFSState(v VFS, rep *reporter) (*vfsState, C.uint32_t) {
	st := &vfsState{fs: v, rep: rep}
	var mask C.uint32_t
	if x, ok := v.(VFSWriter); ok {
		st.writer, mask = x, mask|C.ASTRID_GO_VFS_WRITE_AT
	}
	if x, ok := v.(VFSSyncer); ok {
		st.syncer, mask = x, mask|C.ASTRID_GO_VFS_SYNC
	}
	if x, ok := v.(VFSTruncater); ok {
		st.truncater, mask = x, mask|C.ASTRID_GO_VFS_SET_LEN
	}
	if x, ok := v.(VFSDirReader); ok {
		st.dirReader, mask = x, mask|C.ASTRID_GO_VFS_READ_DIR
	}
	if x, ok := v.(VFSDirMaker); ok {
		st.dirMaker, mask = x, mask|C.ASTRID_GO_VFS_MKDIR
	}
	if x, ok := v.(VFSFileRemover); ok {
		st.fileRemove, mask = x, mask|C.ASTRID_GO_VFS_REMOVE_FILE
	}
	if x, ok := v.(VFSDirRemover); ok {
		st.dirRemove, mask = x, mask|C.ASTRID_GO_VFS_REMOVE_DIR
	}
	if x, ok := v.(VFSRenamer); ok {
		st.renamer, mask = x, mask|C.ASTRID_GO_VFS_RENAME
	}
	if x, ok := v.(VFSHardLinker); ok {
		st.linker, mask = x, mask|C.ASTRID_GO_VFS_HARD_LINK
	}
	if x, ok := v.(VFSLinkReader); ok {
		st.linkReader, mask = x, mask|C.ASTRID_GO_VFS_READ_LINK
	}
	st.releaser, _ = v.(VFSReleaser)
	return st, mask
}

// MountVFS serves the mount ("cwd", "home" or "tmp") from v for every
// capsule loaded afterwards (capsules already loaded keep what they had);
// nil unmounts. A workspace or home root in a capsule's LoadOptions takes
// precedence for that capsule. v is released once the mount is replaced or
// unmounted and the last capsule using it is gone.
func (r *Runtime) MountVFS(mount string, v VFS) error {
	var state any
	var mask C.uint32_t
	if v != nil {
		state, mask = newVFSState(v, r.rep)
	}
	m, mlen := cstr(mount)
	return r.install(state, func(p *C.astrid_runtime_t, h C.uintptr_t, e **C.astrid_error_t) C.astrid_status_t {
		return C.astrid_go_mount_vfs(p, m, mlen, h, mask, e)
	})
}
