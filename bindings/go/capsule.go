package astrid

// #include "shim.h"
import "C"

import (
	"runtime"
	"runtime/cgo"
	"strings"
	"sync/atomic"
	"time"
	"unsafe"
)

// LoadOptions are per-capsule settings. Zero fields mean "not set" (the
// runtime's defaults).
type LoadOptions struct {
	// Principal is the capsule's owner (1 to 128 bytes, no control characters).
	Principal string
	// WorkspaceRoot is a host directory served as the workspace mount (cwd://).
	WorkspaceRoot string
	// HomeRoot is a host directory served as the owner's home:// mount.
	HomeRoot string
	// MemoryLimit is the linear-memory ceiling per instance in bytes.
	MemoryLimit uint64
	// Timeout is the wall-clock deadline per call (rounded up to milliseconds).
	Timeout time.Duration
	// Fuel is the instruction budget per call.
	Fuel uint64
	// Config holds values for the manifest's [env] keys (undeclared keys are ignored).
	Config map[string]string
	// FSWriteBudget caps the bytes the capsule may ever write through astrid:fs (0 = unlimited).
	FSWriteBudget uint64
	// Watchdog is the run-loop watchdog window (rounded up to milliseconds):
	// a run loop that goes three windows without a waiting host call (recv,
	// poll, sleep-ns, blocking reads) is interrupted and marked failed.
	// 0 = 5 s; WatchdogOff (any negative value) exempts the capsule.
	Watchdog time.Duration
	// NetFlags gives this capsule alone FlagAllowLoopback, FlagAllowAnyBind
	// or FlagWASISockets, on top of the runtime's flags (others are
	// ErrInvalidArgument).
	NetFlags RuntimeFlag
	// CwdVFS, HomeVFS and TmpVFS serve this capsule's mounts in place of the
	// runtime's (MountVFS) and the built-in ones. CwdVFS with WorkspaceRoot
	// (or HomeVFS with HomeRoot) is ErrInvalidArgument.
	CwdVFS, HomeVFS, TmpVFS VFS
}

// WatchdogOff as LoadOptions.Watchdog exempts a capsule's run loop from the
// watchdog.
const WatchdogOff time.Duration = -1

// CallOptions are per-call settings for Capsule.CallWith.
type CallOptions struct {
	// Principal is the invoking principal ("" = the capsule's owner).
	Principal string
	// Config values for this call only; they take precedence over load-time values.
	Config map[string]string
	// Timeout is a deadline for this call (0 = the capsule's timeout). It can
	// only shorten the capsule's; it is rounded up to whole milliseconds.
	Timeout time.Duration
	// Fuel replaces the capsule's fuel for this call (0 = the capsule's).
	Fuel uint64
	// Cancel ends this call when fired (nil = none). See CallContext for
	// the same driven by a context.Context.
	Cancel *Cancel
}

// Result is what a call returned: the interceptor's action ("continue",
// "final", "deny", ...) and its optional data.
type Result struct {
	Action string
	// Data is the result's data; HasData says whether the guest returned any.
	Data    string
	HasData bool
	// CallID is the id the call ran under, unique within the runtime: the
	// id its log records, audit events and callback requests carry.
	CallID uint64
}

// Capsule is a loaded capsule. Its methods are safe for concurrent use.
type Capsule struct {
	ptr      atomic.Pointer[byte] // the library's *astrid_capsule_t; nil once closed
	rt       *Runtime             // keeps the runtime (and its finalizer) behind its capsules
	name     string
	id       string
	runsLoop bool
}

// emptyString backs "" arguments that must not be NULL.
var emptyString = [1]byte{0}

// cstr passes a Go string's bytes to C for the duration of one call (the
// bytes hold no Go pointer, which cgo allows). "" gives a valid empty string.
func cstr(s string) (*C.char, C.size_t) {
	if len(s) == 0 {
		return (*C.char)(unsafe.Pointer(&emptyString[0])), 0
	}
	return (*C.char)(unsafe.Pointer(unsafe.StringData(s))), C.size_t(len(s))
}

// optCstr is cstr where "" means "not set" (NULL).
func optCstr(s string) (*C.char, C.size_t) {
	if len(s) == 0 {
		return nil, 0
	}
	return cstr(s)
}

// cbytes passes a byte slice to C for the duration of one call.
func cbytes(b []byte) (*C.uint8_t, C.size_t) {
	if len(b) == 0 {
		return nil, 0
	}
	return (*C.uint8_t)(unsafe.Pointer(unsafe.SliceData(b))), C.size_t(len(b))
}

// goString copies a C (ptr, len) string.
func goString(p *C.char, n C.size_t) string {
	if p == nil || n == 0 {
		return ""
	}
	return string(unsafe.Slice((*byte)(unsafe.Pointer(p)), int(n)))
}

// cArena holds C copies of strings and arrays that must outlive a Go
// argument (structs the library reads may not point into Go memory).
type cArena struct{ ptrs []unsafe.Pointer }

func (a *cArena) str(s string) (*C.char, C.size_t) {
	if s == "" {
		return nil, 0
	}
	p := C.CString(s) // copies every byte, NULs included, plus a terminator
	a.ptrs = append(a.ptrs, unsafe.Pointer(p))
	return p, C.size_t(len(s))
}

// config builds an astrid_config_entry_t array of m (in map order).
func (a *cArena) config(m map[string]string) (*C.astrid_config_entry_t, C.size_t) {
	if len(m) == 0 {
		return nil, 0
	}
	p := C.calloc(C.size_t(len(m)), C.size_t(unsafe.Sizeof(C.astrid_config_entry_t{})))
	a.ptrs = append(a.ptrs, p)
	entries := unsafe.Slice((*C.astrid_config_entry_t)(p), len(m))
	i := 0
	for k, v := range m {
		entries[i].key, entries[i].key_len = a.str(k)
		if entries[i].key == nil {
			entries[i].key, entries[i].key_len = a.nonEmpty()
		}
		entries[i].value, entries[i].value_len = a.str(v)
		if entries[i].value == nil {
			entries[i].value, entries[i].value_len = a.nonEmpty()
		}
		i++
	}
	return (*C.astrid_config_entry_t)(p), C.size_t(len(m))
}

// nonEmpty is a C empty string (a key or value of "", not "unset").
func (a *cArena) nonEmpty() (*C.char, C.size_t) {
	p := C.CString("")
	a.ptrs = append(a.ptrs, unsafe.Pointer(p))
	return p, 0
}

func (a *cArena) free() {
	for _, p := range a.ptrs {
		C.free(p)
	}
	a.ptrs = nil
}

// toC builds the C options in a; the handles of the load-time VFS
// providers it made must be deleted if the load fails (the library then
// runs no finalizer).
func (o *LoadOptions) toC(a *cArena, rep *reporter) (*C.astrid_load_options_t, []cgo.Handle) {
	if o == nil {
		return nil, nil
	}
	c := (*C.astrid_load_options_t)(C.calloc(1, C.size_t(unsafe.Sizeof(C.astrid_load_options_t{}))))
	a.ptrs = append(a.ptrs, unsafe.Pointer(c))
	C.astrid_load_options_init(c, nil)
	c.principal, c.principal_len = a.str(o.Principal)
	c.workspace_root, c.workspace_root_len = a.str(o.WorkspaceRoot)
	c.home_root, c.home_root_len = a.str(o.HomeRoot)
	c.memory_limit_bytes = C.uint64_t(o.MemoryLimit)
	c.timeout_ms = millis(o.Timeout)
	c.fuel = C.uint64_t(o.Fuel)
	c.config, c.config_len = a.config(o.Config)
	c.fs_write_budget = C.uint64_t(o.FSWriteBudget)
	if o.Watchdog < 0 {
		c.watchdog_ms = C.ASTRID_WATCHDOG_OFF
	} else {
		c.watchdog_ms = millis(o.Watchdog)
	}
	c.net_flags = C.astrid_runtime_flags_t(o.NetFlags)
	var handles []cgo.Handle
	for _, m := range []struct {
		v    VFS
		slot *C.astrid_load_vfs_t
	}{{o.CwdVFS, &c.cwd}, {o.HomeVFS, &c.home}, {o.TmpVFS, &c.tmp}} {
		if m.v == nil {
			continue
		}
		state, mask := newVFSState(m.v, rep)
		h := cgo.NewHandle(state)
		handles = append(handles, h)
		ops := (*C.astrid_vfs_ops_t)(C.calloc(1, C.size_t(unsafe.Sizeof(C.astrid_vfs_ops_t{}))))
		a.ptrs = append(a.ptrs, unsafe.Pointer(ops))
		C.astrid_go_load_vfs(m.slot, ops, C.uintptr_t(h), mask)
	}
	return c, handles
}

// loaded finishes a load: on failure the providers' handles are deleted.
func (r *Runtime) loaded(status C.astrid_status_t, cerr *C.astrid_error_t, out *C.astrid_capsule_t, handles []cgo.Handle) (*Capsule, error) {
	if status != C.ASTRID_OK {
		for _, h := range handles {
			h.Delete()
		}
		return nil, takeError(status, cerr)
	}
	return r.newCapsule(out), nil
}

// Load loads the capsule in directory dir (Capsule.toml plus the component
// it names); opts may be nil.
func (r *Runtime) Load(dir string, opts *LoadOptions) (*Capsule, error) {
	p, err := r.handle()
	if err != nil {
		return nil, err
	}
	var a cArena
	defer a.free()
	copts, handles := opts.toC(&a, r.rep)
	d, dlen := cstr(dir)
	var out *C.astrid_capsule_t
	var cerr *C.astrid_error_t
	status := C.astrid_capsule_load(p, d, dlen, copts, &out, &cerr)
	runtime.KeepAlive(r)
	return r.loaded(status, cerr, out, handles)
}

// LoadBytes loads a capsule from memory: the component's bytes and the text
// of its Capsule.toml (whose [[component]] may then be omitted); opts may
// be nil. Both buffers are copied.
func (r *Runtime) LoadBytes(wasm []byte, manifest string, opts *LoadOptions) (*Capsule, error) {
	p, err := r.handle()
	if err != nil {
		return nil, err
	}
	var a cArena
	defer a.free()
	copts, handles := opts.toC(&a, r.rep)
	w, wlen := cbytes(wasm)
	m, mlen := optCstr(manifest)
	var out *C.astrid_capsule_t
	var cerr *C.astrid_error_t
	status := C.astrid_capsule_load_bytes(p, w, wlen, m, mlen, copts, &out, &cerr)
	runtime.KeepAlive(r)
	return r.loaded(status, cerr, out, handles)
}

func (r *Runtime) newCapsule(p *C.astrid_capsule_t) *Capsule {
	c := &Capsule{rt: r}
	var n C.size_t
	if name := C.astrid_capsule_name(p, &n); name != nil {
		c.name = goString(name, n)
	}
	if id := C.astrid_capsule_id(p, &n); id != nil {
		c.id = goString(id, n)
	}
	c.runsLoop = bool(C.astrid_capsule_runs_loop(p))
	c.ptr.Store((*byte)(unsafe.Pointer(p)))
	runtime.SetFinalizer(c, (*Capsule).Close)
	return c
}

func capPtr(p *byte) *C.astrid_capsule_t { return (*C.astrid_capsule_t)(unsafe.Pointer(p)) }

// Name is the capsule's [package] name.
func (c *Capsule) Name() string { return c.name }

// ID is the capsule's id (UUIDv5 of its name and component hash).
func (c *Capsule) ID() string { return c.id }

// Runtime is the runtime the capsule was loaded into.
func (c *Capsule) Runtime() *Runtime { return c.rt }

// RunsLoop reports whether the capsule runs a run loop: it exports a real
// run, not a guest-SDK placeholder (see WaitReady).
func (c *Capsule) RunsLoop() bool { return c.runsLoop }

// WaitReady waits up to timeout (rounded up to milliseconds) until the
// capsule is ready: a capsule with a run loop once the loop calls astrid:sys
// signal-ready, any other at once. The error matches ErrTimeout when it is
// not ready in time; ErrTrap, ErrTimeout or ErrResourceLimit when the run
// loop failed or returned (it is not restarted); ErrClosed; ErrReentrant
// inside a callback.
func (c *Capsule) WaitReady(timeout time.Duration) error {
	p := capPtr(c.ptr.Load())
	if p == nil {
		return closedError("the capsule")
	}
	var cerr *C.astrid_error_t
	status := C.astrid_capsule_wait_ready(p, millis(timeout), &cerr)
	runtime.KeepAlive(c)
	if status != C.ASTRID_OK {
		return takeError(status, cerr)
	}
	return nil
}

// Call invokes the guest's astrid-hook-trigger(action, payload) on a pooled
// instance, as the capsule's owner, and blocks until it returns. A failed
// call (trap, timeout, fuel...) leaves the capsule loaded.
func (c *Capsule) Call(action string, payload []byte) (Result, error) {
	p := capPtr(c.ptr.Load())
	if p == nil {
		return Result{}, closedError("the capsule")
	}
	a, alen := cstr(action)
	b, blen := cbytes(payload)
	out := C.astrid_go_call(p, a, alen, b, blen)
	runtime.KeepAlive(c)
	return takeResult(&out)
}

// CallWith is Call with per-call options (opts may be nil).
func (c *Capsule) CallWith(opts *CallOptions, action string, payload []byte) (Result, error) {
	if opts == nil {
		return c.Call(action, payload)
	}
	p := capPtr(c.ptr.Load())
	if p == nil {
		return Result{}, closedError("the capsule")
	}
	if opts.Timeout < 0 {
		return Result{}, &Error{Code: CodeInvalidArgument, Message: "CallOptions.Timeout must not be negative"}
	}
	var cancel *C.astrid_cancel_t
	if opts.Cancel != nil {
		cancel = opts.Cancel.handle()
		if cancel == nil {
			return Result{}, closedError("the cancel token")
		}
	}
	var arena cArena
	defer arena.free()
	cfg, cfgLen := arena.config(opts.Config)
	pr, prlen := optCstr(opts.Principal)
	a, alen := cstr(action)
	b, blen := cbytes(payload)
	timeoutMs := C.uint64_t((opts.Timeout + time.Millisecond - 1) / time.Millisecond)
	out := C.astrid_go_call_with(p, pr, prlen, cfg, cfgLen, timeoutMs, C.uint64_t(opts.Fuel), cancel, a, alen, b, blen)
	runtime.KeepAlive(c)
	runtime.KeepAlive(opts.Cancel)
	return takeResult(&out)
}

// takeResult copies a call's outcome into Go values and frees the C side.
func takeResult(out *C.astrid_go_call_t) (Result, error) {
	if out.status != C.ASTRID_OK {
		return Result{}, takeError(out.status, out.err)
	}
	res := Result{HasData: out.has_data != 0, CallID: uint64(out.call_id)}
	if out.action == nil {
		res.Action = actionString(&out.action_inline[0], out.action_len)
	} else {
		res.Action = actionString(out.action, out.action_len)
	}
	if res.HasData {
		res.Data = goString(out.data, out.data_len)
	}
	if out.result != nil {
		C.astrid_result_free(out.result)
	}
	return res, nil
}

// actionString copies an action, without allocating for the usual ones.
func actionString(p *C.char, n C.size_t) string {
	if n == 0 {
		return ""
	}
	s := unsafe.String((*byte)(unsafe.Pointer(p)), int(n))
	switch s {
	case "continue":
		return "continue"
	case "final":
		return "final"
	case "deny":
		return "deny"
	case "ok":
		return "ok"
	case "err":
		return "err"
	}
	return strings.Clone(s)
}

// Cancel cancels the calls running on this capsule now: each returns an
// error matching ErrCancelled. Later calls are not affected. Allowed
// anywhere, callbacks included.
func (c *Capsule) Cancel() error {
	p := capPtr(c.ptr.Load())
	if p == nil {
		return closedError("the capsule")
	}
	var cerr *C.astrid_error_t
	status := C.astrid_capsule_cancel(p, &cerr)
	runtime.KeepAlive(c)
	if status != C.ASTRID_OK {
		return takeError(status, cerr)
	}
	return nil
}

// HasCapability reports whether the capsule holds a capability, by the names
// of astrid:sys enumerate-capabilities (net, net_connect, net_bind, fs_read,
// fs_write, uplink). False once closed.
func (c *Capsule) HasCapability(name string) bool {
	p := capPtr(c.ptr.Load())
	if p == nil {
		return false
	}
	n, nlen := cstr(name)
	ok := C.astrid_capsule_has_capability(p, n, nlen)
	runtime.KeepAlive(c)
	return bool(ok)
}

// Close unloads the capsule: cancels its calls, waits for them (bounded by
// the runtime's unload grace) and frees its instances. Idempotent. From
// inside a callback it returns ErrReentrant and leaves the capsule loaded.
func (c *Capsule) Close() error {
	p := c.ptr.Swap(nil)
	if p == nil {
		return nil
	}
	var cerr *C.astrid_error_t
	status := C.astrid_capsule_unload(capPtr(p), &cerr)
	if status == C.ASTRID_E_REENTRANT {
		c.ptr.CompareAndSwap(nil, p)
		return takeError(status, cerr)
	}
	runtime.SetFinalizer(c, nil)
	if status == C.ASTRID_E_CLOSED { // already unloaded: Close stays idempotent
		C.astrid_error_free(cerr)
		return nil
	}
	if status != C.ASTRID_OK {
		return takeError(status, cerr)
	}
	return nil
}
