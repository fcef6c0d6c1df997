package astrid

// The //export trampolines the library calls (through shim.c). Each one
// resolves its cgo.Handle, copies what the Go callback needs out of the
// borrowed C data, calls it, and recovers any panic into the answer the
// library treats as a refusal or failure, reporting it to the runtime's
// panic handler. Nothing here may unwind into C.

// #include "shim.h"
import "C"

import (
	"errors"
	"io"
	"log"
	"runtime/cgo"
	"strings"
	"sync/atomic"
	"time"
	"unsafe"
)

// lookup resolves a callback's user_data to its state. It cannot fail
// unless the binding itself is broken; even then it logs instead of
// unwinding into C, and the caller answers with a refusal.
func lookup[T any](ud unsafe.Pointer, callback string) (st T, ok bool) {
	h := uintptr(ud)
	slot := &handleCache[h%uintptr(len(handleCache))]
	if e := slot.Load(); e != nil && e.h == h {
		st, ok = e.state.(T)
		if ok {
			return st, true
		}
	}
	defer func() {
		if p := recover(); p != nil {
			log.Printf("astrid: %s callback called with an unusable handle: %v", callback, p)
			ok = false
		}
	}()
	v := cgo.Handle(h).Value()
	if st, ok = v.(T); !ok {
		log.Printf("astrid: %s callback called with a handle of another callback", callback)
		return st, false
	}
	slot.Store(&cachedHandle{h: h, state: v})
	return st, true
}

// handleCache remembers recently resolved handles, sparing the hot callback
// paths cgo.Handle.Value (a hashed map load) on every call. It is
// direct-mapped by handle number. An entry cannot answer for another
// callback: handle numbers are never reused, and the library runs a
// callback's finalizer (which evicts the entry) only after its last call.
var handleCache [64]atomic.Pointer[cachedHandle]

type cachedHandle struct {
	h     uintptr
	state any
}

// interner hands out one copy of a string that repeats from call to call
// (the capsule name of a gate or log callback) instead of allocating each
// time; it remembers the last value only.
type interner struct{ last atomic.Pointer[string] }

func (in *interner) get(p *C.char, n C.size_t) string {
	if p == nil || n == 0 {
		return ""
	}
	view := unsafe.String((*byte)(unsafe.Pointer(p)), int(n))
	if last := in.last.Load(); last != nil && *last == view {
		return *last
	}
	s := strings.Clone(view)
	in.last.Store(&s)
	return s
}

// forgetHandle evicts a released handle from the cache.
func forgetHandle(h uintptr) {
	slot := &handleCache[h%uintptr(len(handleCache))]
	if e := slot.Load(); e != nil && e.h == h {
		slot.CompareAndSwap(e, nil)
	}
}

// releaser is the state of a callback whose Go value wants to know when
// the library has dropped it (a VFS provider, a KV backend).
type releaser interface{ release() }

// astridGoFinalize runs when the library drops a callback: it tells a VFS
// provider or KV backend that wants to know, then deletes the handle. The
// library runs it exactly once per successful install, and never for a
// failed one (whose handle the installer deletes itself).
//
//export astridGoFinalize
func astridGoFinalize(ud unsafe.Pointer) {
	st, ok := lookup[any](ud, "finalizer")
	if !ok {
		return // not a live handle: nothing to delete
	}
	if r, wants := st.(releaser); wants {
		r.release()
	}
	forgetHandle(uintptr(ud))
	cgo.Handle(uintptr(ud)).Delete()
}

//export astridGoGate
func astridGoGate(ud unsafe.Pointer, c *C.astrid_gate_request_t) (verdict C.uint32_t) {
	st, ok := lookup[*gateState](ud, "gate")
	if !ok {
		return C.ASTRID_DENY
	}
	// The request is an opaque handle, readable on this thread until we return.
	var info C.astrid_gate_request_info_t
	info.size = C.size_t(unsafe.Sizeof(info))
	if C.astrid_gate_request_info(c, &info, nil) != C.ASTRID_OK {
		return C.ASTRID_DENY
	}
	call := &gateCall{req: GateRequest{
		Kind:      GateKind(info.kind),
		Port:      uint16(info.port),
		Capsule:   st.capsules.get(info.capsule, info.capsule_len),
		Principal: st.principals.get(info.principal, info.principal_len),
		Path:      goString(info.path, info.path_len),
		HostPath:  goString(info.host_path, info.host_path_len),
		Method:    goString(info.method, info.method_len),
		URL:       goString(info.url, info.url_len),
		Host:      goString(info.host, info.host_len),
		Transport: goString(info.transport, info.transport_len),
		CallID:    uint64(info.call_id),
	}}
	call.req.call = call
	call.c.Store(c)
	defer func() {
		call.c.Store((*C.astrid_gate_request_t)(nil))
		if p := recover(); p != nil {
			verdict = C.ASTRID_DENY
			st.rep.report("gate", p)
		}
	}()
	return C.uint32_t(st.fn(&call.req))
}

//export astridGoAcceptVerify
func astridGoAcceptVerify(ud unsafe.Pointer, c *C.astrid_accept_request_t) (verdict C.uint32_t) {
	st, ok := lookup[*acceptState](ud, "accept")
	if !ok {
		return C.ASTRID_DENY
	}
	var info C.astrid_accept_request_info_t
	info.size = C.size_t(unsafe.Sizeof(info))
	if C.astrid_accept_request_info(c, &info, nil) != C.ASTRID_OK {
		return C.ASTRID_DENY
	}
	call := &acceptCall{req: AcceptRequest{
		Capsule: st.capsules.get(info.capsule, info.capsule_len),
		PID:     int64(info.pid),
		UID:     uint32(info.uid),
		GID:     uint32(info.gid),
		CallID:  uint64(info.call_id),
	}}
	call.req.call = call
	call.c.Store(c)
	defer func() {
		call.c.Store((*C.astrid_accept_request_t)(nil))
		if p := recover(); p != nil {
			verdict = C.ASTRID_DENY
			st.rep.report("accept", p)
		}
	}()
	if st.fn(&call.req) == Allow {
		return C.ASTRID_ALLOW
	}
	return C.ASTRID_DENY
}

//export astridGoLog
func astridGoLog(ud unsafe.Pointer, c *C.astrid_log_record_t) {
	st, ok := lookup[*logState](ud, "log")
	if !ok {
		return
	}
	defer recoverTo(st.rep, "log")
	st.fn(LogRecord{
		Level:     LogLevel(c.level),
		Capsule:   st.capsules.get(c.capsule, c.capsule_len),
		Principal: st.principals.get(c.principal, c.principal_len),
		Message:   goString(c.message, c.message_len),
		CallID:    uint64(c.call_id),
	})
}

//export astridGoAudit
func astridGoAudit(ud unsafe.Pointer, c *C.astrid_audit_event_t) {
	st, ok := lookup[*auditState](ud, "audit")
	if !ok {
		return
	}
	defer recoverTo(st.rep, "audit")
	st.fn(AuditEvent{
		Capsule:   goString(c.capsule, c.capsule_len),
		CapsuleID: goString(c.capsule_id, c.capsule_id_len),
		Principal: goString(c.principal, c.principal_len),
		Call:      goString(c.call, c.call_len),
		Target:    goString(c.target, c.target_len),
		Bytes:     uint64(c.bytes),
		Outcome:   AuditOutcome(c.outcome),
		Reason:    goString(c.reason, c.reason_len),
		Elapsed:   time.Duration(c.elapsed_us) * time.Microsecond,
		CallID:    uint64(c.call_id),
	})
}

// recoverTo is deferred by callbacks without an answer to repair.
func recoverTo(rep *reporter, callback string) {
	if p := recover(); p != nil {
		rep.report(callback, p)
	}
}

//export astridGoSecret
func astridGoSecret(ud unsafe.Pointer, c *C.astrid_secret_request_t) (status C.astrid_status_t) {
	st, ok := lookup[*secretState](ud, "secret")
	if !ok {
		return C.ASTRID_E_INTERNAL
	}
	defer func() {
		if p := recover(); p != nil {
			status = C.ASTRID_E_INTERNAL
			st.rep.report("secret", p)
		}
	}()
	var info C.astrid_secret_request_info_t
	info.size = C.size_t(unsafe.Sizeof(info))
	if s := C.astrid_secret_request_info(c, &info, nil); s != C.ASTRID_OK {
		return s
	}
	value, ok, err := st.fn(SecretRequest{
		Capsule:   goString(info.capsule, info.capsule_len),
		CapsuleID: goString(info.capsule_id, info.capsule_id_len),
		Principal: goString(info.principal, info.principal_len),
		Key:       goString(info.key, info.key_len),
		CallID:    uint64(info.call_id),
	})
	if err != nil {
		var e *Error
		if errors.As(err, &e) && e.Code < 0 {
			return C.astrid_status_t(e.Code)
		}
		return C.ASTRID_E_INTERNAL
	}
	if !ok {
		return C.ASTRID_OK
	}
	v, n := cstr(value)
	// A refused value fails the guest's get-config; the status says why.
	return C.astrid_secret_request_set_value(c, v, n, nil)
}

//export astridGoMessage
func astridGoMessage(ud unsafe.Pointer, c *C.astrid_message_t) {
	st, ok := lookup[*subscriptionState](ud, "subscription")
	if !ok {
		return
	}
	defer recoverTo(st.rep, "subscription")
	var payload []byte
	if c.payload_len > 0 {
		payload = C.GoBytes(unsafe.Pointer(c.payload), C.int(c.payload_len))
	}
	st.fn(Message{
		Topic:       goString(c.topic, c.topic_len),
		Payload:     payload,
		SourceID:    goString(c.source_id, c.source_id_len),
		Attribution: Attribution(c.attribution),
		Principal:   goString(c.principal, c.principal_len),
		Sequence:    uint64(c.sequence),
		Timestamp:   time.UnixMilli(int64(c.timestamp_ms)),
		Depth:       uint32(c.depth),
		Dropped:     uint64(c.dropped),
		Lagged:      uint64(c.lagged),
	})
}

// ---- VFS ----

//export astridGoVfsStat
func astridGoVfsStat(ud unsafe.Pointer, path *C.char, n C.size_t, follow C.uint32_t, out *C.astrid_vfs_stat_t) (code C.int32_t) {
	st, ok := lookup[*vfsState](ud, "vfs")
	if !ok {
		return C.ASTRID_VFS_IO
	}
	defer vfsRecoverDeferred(st, "Stat", &code)
	s, err := st.fs.Stat(goString(path, n), follow != 0)
	if err != nil {
		return vfsCodeOf(err)
	}
	s.toC(out)
	return C.ASTRID_VFS_OK
}

// vfsRecoverDeferred, deferred by every VFS trampoline, turns a provider
// panic into ASTRID_VFS_IO and reports it.
func vfsRecoverDeferred(st *vfsState, method string, code *C.int32_t) {
	if p := recover(); p != nil {
		*code = C.ASTRID_VFS_IO
		st.rep.report("vfs."+method, p)
	}
}

//export astridGoVfsOpen
func astridGoVfsOpen(ud unsafe.Pointer, path *C.char, n C.size_t, flags C.uint32_t, out *C.uint64_t) (code C.int32_t) {
	st, ok := lookup[*vfsState](ud, "vfs")
	if !ok {
		return C.ASTRID_VFS_IO
	}
	defer vfsRecoverDeferred(st, "Open", &code)
	h, err := st.fs.Open(goString(path, n), OpenFlag(flags))
	if err != nil {
		return vfsCodeOf(err)
	}
	*out = C.uint64_t(h)
	return C.ASTRID_VFS_OK
}

//export astridGoVfsReadAt
func astridGoVfsReadAt(ud unsafe.Pointer, h, off C.uint64_t, buf *C.uint8_t, n C.size_t, out *C.size_t) (code C.int32_t) {
	st, ok := lookup[*vfsState](ud, "vfs")
	if !ok {
		return C.ASTRID_VFS_IO
	}
	defer vfsRecoverDeferred(st, "ReadAt", &code)
	var b []byte
	if n > 0 {
		b = unsafe.Slice((*byte)(unsafe.Pointer(buf)), int(n))
	}
	got, err := st.fs.ReadAt(uint64(h), b, uint64(off))
	if err != nil && !(err == io.EOF && got < len(b)) {
		return vfsCodeOf(err)
	}
	if got < 0 || got > len(b) {
		return C.ASTRID_VFS_IO
	}
	*out = C.size_t(got)
	return C.ASTRID_VFS_OK
}

//export astridGoVfsWriteAt
func astridGoVfsWriteAt(ud unsafe.Pointer, h, off C.uint64_t, data *C.uint8_t, n C.size_t, out *C.size_t) (code C.int32_t) {
	st, ok := lookup[*vfsState](ud, "vfs")
	if !ok {
		return C.ASTRID_VFS_IO
	}
	defer vfsRecoverDeferred(st, "WriteAt", &code)
	var b []byte
	if n > 0 {
		b = unsafe.Slice((*byte)(unsafe.Pointer(data)), int(n))
	}
	wrote, err := st.writer.WriteAt(uint64(h), b, uint64(off))
	if err != nil {
		return vfsCodeOf(err)
	}
	if wrote < 0 || wrote > len(b) {
		return C.ASTRID_VFS_IO
	}
	*out = C.size_t(wrote)
	return C.ASTRID_VFS_OK
}

//export astridGoVfsClose
func astridGoVfsClose(ud unsafe.Pointer, h C.uint64_t) (code C.int32_t) {
	st, ok := lookup[*vfsState](ud, "vfs")
	if !ok {
		return C.ASTRID_VFS_IO
	}
	defer vfsRecoverDeferred(st, "CloseHandle", &code)
	return vfsCodeOf(st.fs.CloseHandle(uint64(h)))
}

//export astridGoVfsSync
func astridGoVfsSync(ud unsafe.Pointer, h C.uint64_t, dataOnly C.uint32_t) (code C.int32_t) {
	st, ok := lookup[*vfsState](ud, "vfs")
	if !ok {
		return C.ASTRID_VFS_IO
	}
	defer vfsRecoverDeferred(st, "Sync", &code)
	return vfsCodeOf(st.syncer.Sync(uint64(h), dataOnly != 0))
}

//export astridGoVfsSetLen
func astridGoVfsSetLen(ud unsafe.Pointer, h, size C.uint64_t) (code C.int32_t) {
	st, ok := lookup[*vfsState](ud, "vfs")
	if !ok {
		return C.ASTRID_VFS_IO
	}
	defer vfsRecoverDeferred(st, "SetLen", &code)
	return vfsCodeOf(st.truncater.SetLen(uint64(h), uint64(size)))
}

//export astridGoVfsFstat
func astridGoVfsFstat(ud unsafe.Pointer, h C.uint64_t, out *C.astrid_vfs_stat_t) (code C.int32_t) {
	st, ok := lookup[*vfsState](ud, "vfs")
	if !ok {
		return C.ASTRID_VFS_IO
	}
	defer vfsRecoverDeferred(st, "StatHandle", &code)
	s, err := st.fs.StatHandle(uint64(h))
	if err != nil {
		return vfsCodeOf(err)
	}
	s.toC(out)
	return C.ASTRID_VFS_OK
}

//export astridGoVfsReadDir
func astridGoVfsReadDir(ud unsafe.Pointer, path *C.char, n C.size_t, sink, ctx unsafe.Pointer) (code C.int32_t) {
	st, ok := lookup[*vfsState](ud, "vfs")
	if !ok {
		return C.ASTRID_VFS_IO
	}
	defer vfsRecoverDeferred(st, "ReadDir", &code)
	open := true // the sink is valid only during this call
	defer func() { open = false }()
	emit := func(name string, kind FileKind) bool {
		if !open {
			return false
		}
		p, l := cstr(name)
		return C.astrid_go_dir_sink(sink, ctx, p, l, C.uint32_t(kind)) == 0
	}
	return vfsCodeOf(st.dirReader.ReadDir(goString(path, n), emit))
}

//export astridGoVfsPath
func astridGoVfsPath(ud unsafe.Pointer, op C.uint32_t, path *C.char, n C.size_t) (code C.int32_t) {
	st, ok := lookup[*vfsState](ud, "vfs")
	if !ok {
		return C.ASTRID_VFS_IO
	}
	p := goString(path, n)
	switch op {
	case C.ASTRID_GO_VFS_MKDIR:
		defer vfsRecoverDeferred(st, "Mkdir", &code)
		return vfsCodeOf(st.dirMaker.Mkdir(p))
	case C.ASTRID_GO_VFS_REMOVE_FILE:
		defer vfsRecoverDeferred(st, "RemoveFile", &code)
		return vfsCodeOf(st.fileRemove.RemoveFile(p))
	case C.ASTRID_GO_VFS_REMOVE_DIR:
		defer vfsRecoverDeferred(st, "RemoveDir", &code)
		return vfsCodeOf(st.dirRemove.RemoveDir(p))
	}
	return C.ASTRID_VFS_NOT_SUPPORTED
}

//export astridGoVfsTwoPaths
func astridGoVfsTwoPaths(ud unsafe.Pointer, op C.uint32_t, src *C.char, sn C.size_t, dst *C.char, dn C.size_t) (code C.int32_t) {
	st, ok := lookup[*vfsState](ud, "vfs")
	if !ok {
		return C.ASTRID_VFS_IO
	}
	s, d := goString(src, sn), goString(dst, dn)
	switch op {
	case C.ASTRID_GO_VFS_RENAME:
		defer vfsRecoverDeferred(st, "Rename", &code)
		return vfsCodeOf(st.renamer.Rename(s, d))
	case C.ASTRID_GO_VFS_HARD_LINK:
		defer vfsRecoverDeferred(st, "HardLink", &code)
		return vfsCodeOf(st.linker.HardLink(s, d))
	}
	return C.ASTRID_VFS_NOT_SUPPORTED
}

//export astridGoVfsReadLink
func astridGoVfsReadLink(ud unsafe.Pointer, path *C.char, n C.size_t, buf *C.char, capacity C.size_t, out *C.size_t) (code C.int32_t) {
	st, ok := lookup[*vfsState](ud, "vfs")
	if !ok {
		return C.ASTRID_VFS_IO
	}
	defer vfsRecoverDeferred(st, "ReadLink", &code)
	target, err := st.linkReader.ReadLink(goString(path, n))
	if err != nil {
		return vfsCodeOf(err)
	}
	if len(target) > int(capacity) {
		return C.ASTRID_VFS_TOO_LARGE
	}
	if len(target) > 0 {
		copy(unsafe.Slice((*byte)(unsafe.Pointer(buf)), int(capacity)), target)
	}
	*out = C.size_t(len(target))
	return C.ASTRID_VFS_OK
}
