package astrid

// #include "shim.h"
import "C"

import (
	"log"
	"runtime"
	"runtime/cgo"
	"runtime/debug"
	"sync/atomic"
	"time"
	"unsafe"
)

// RuntimeFlag is a bit of Config.Flags.
type RuntimeFlag uint32

const (
	// FlagAllowLoopback lets capsules reach loopback and private addresses.
	FlagAllowLoopback RuntimeFlag = C.ASTRID_RUNTIME_ALLOW_LOOPBACK
	// FlagDisableCapabilityRegistry makes astrid:sys capability lookups of
	// other capsules answer registry-unavailable.
	FlagDisableCapabilityRegistry RuntimeFlag = C.ASTRID_RUNTIME_DISABLE_CAPABILITY_REGISTRY
	// FlagInlineCallbacks runs gate and VFS callbacks on the thread executing
	// the guest (the calling goroutine's thread) instead of a library worker:
	// faster, but a callback that blocks holds its call.
	FlagInlineCallbacks RuntimeFlag = C.ASTRID_RUNTIME_INLINE_CALLBACKS
	// FlagAllowAnyBind lets bind-tcp and udp-bind use addresses other than
	// loopback (the manifest's net_bind and the gate still decide which).
	FlagAllowAnyBind RuntimeFlag = C.ASTRID_RUNTIME_ALLOW_ANY_BIND
	// FlagWASISockets links wasi:sockets for real, behind the same manifest
	// entries, gate kinds, airlock and quotas as astrid:net; without it every
	// WASI socket operation is access-denied.
	FlagWASISockets RuntimeFlag = C.ASTRID_RUNTIME_WASI_SOCKETS
)

// Config configures a runtime. Zero fields mean the library's default (in
// parentheses below).
// Durations are rounded up to whole milliseconds.
type Config struct {
	// WorkerThreads is the number of async worker threads (default: one per core).
	WorkerThreads uint32
	// PoolSize is the number of pooled instances per capsule, i.e. concurrent calls.
	PoolSize uint32
	// MemoryLimit is the linear-memory ceiling per instance in bytes (64 MiB).
	MemoryLimit uint64
	// Timeout is the wall-clock deadline of a call (30 s).
	Timeout time.Duration
	// Fuel is the instruction budget of a call (500 000 000).
	Fuel uint64
	// CacheDir is a directory for compiled code ("" = in memory only).
	CacheDir string
	// Flags are RuntimeFlag bits.
	Flags RuntimeFlag
	// UnloadGrace bounds how long unload and shutdown wait for calls in flight (5 s).
	UnloadGrace time.Duration
	// GateTimeout bounds a gate answer, deferred verdicts included (5 s).
	GateTimeout time.Duration
	// VFSTimeout bounds one VFS callback (10 s).
	VFSTimeout time.Duration
	// IPCQueueMessages bounds each subscription's queue in messages (1024).
	IPCQueueMessages uint32
	// IPCQueueBytes bounds each subscription's queue in bytes (4 MiB).
	IPCQueueBytes uint64
	// KVQuotaBytes is the byte budget (keys plus values plus 96 bytes per entry) of each namespace
	// of the built-in KV store (64 MiB); writes beyond it fail with quota. A
	// backend installed with SetKV enforces its own.
	KVQuotaBytes uint64
	// IPCPublishBytesPerSec is the payload bytes per second each (capsule,
	// principal) may publish on the bus (10 MiB/s); beyond it the guest's
	// publish fails with rate-limited.
	IPCPublishBytesPerSec uint64
	// MemFSQuotaBytes bounds what each built-in in-memory mount (tmp:// per
	// data scope, cwd:// without a workspace root) may commit: file
	// contents plus 128 bytes and the name per entry (64 MiB); growth past
	// it fails with quota.
	MemFSQuotaBytes uint64
	// MemFSMaxEntries bounds the directory entries of each built-in
	// in-memory mount (65 536).
	MemFSMaxEntries uint64
	// MaxInstances bounds the live instances over all capsules of the
	// runtime and sizes its address-space reservation (0: max(128, 4 x
	// pool size), at most 1000).
	MaxInstances uint32
}

func millis(d time.Duration) C.uint64_t {
	if d <= 0 {
		return 0
	}
	return C.uint64_t((d + time.Millisecond - 1) / time.Millisecond)
}

// Runtime is an astrid runtime: engine, worker threads and the callbacks
// installed on it. Its methods are safe for concurrent use.
type Runtime struct {
	ptr atomic.Pointer[byte] // the library's *astrid_runtime_t; nil once closed
	rep *reporter
}

// Library handles are ids that the library looks up and never dereferences;
// they are kept in atomic.Pointer[byte] fields (cgo's incomplete C types
// cannot instantiate atomic.Pointer). They never point into Go memory.
func rtPtr(p *byte) *C.astrid_runtime_t { return (*C.astrid_runtime_t)(unsafe.Pointer(p)) }

// NewRuntime starts a runtime; cfg may be nil for the defaults. It first
// checks that the library implements ABIVersion (ErrABIMismatch).
func NewRuntime(cfg *Config) (*Runtime, error) {
	if err := CheckABI(); err != nil {
		return nil, err
	}
	var c C.astrid_runtime_config_t
	C.astrid_runtime_config_init(&c, nil)
	if cfg != nil {
		c.worker_threads = C.uint32_t(cfg.WorkerThreads)
		c.pool_size = C.uint32_t(cfg.PoolSize)
		c.memory_limit_bytes = C.uint64_t(cfg.MemoryLimit)
		c.timeout_ms = millis(cfg.Timeout)
		c.fuel = C.uint64_t(cfg.Fuel)
		c.flags = C.uint32_t(cfg.Flags)
		c.unload_grace_ms = millis(cfg.UnloadGrace)
		c.gate_timeout_ms = millis(cfg.GateTimeout)
		c.vfs_timeout_ms = millis(cfg.VFSTimeout)
		c.ipc_queue_messages = C.uint32_t(cfg.IPCQueueMessages)
		c.ipc_queue_bytes = C.uint64_t(cfg.IPCQueueBytes)
		c.kv_quota_bytes = C.uint64_t(cfg.KVQuotaBytes)
		c.ipc_publish_bytes_per_sec = C.uint64_t(cfg.IPCPublishBytesPerSec)
		c.memfs_quota_bytes = C.uint64_t(cfg.MemFSQuotaBytes)
		c.memfs_max_entries = C.uint64_t(cfg.MemFSMaxEntries)
		c.max_instances = C.uint32_t(cfg.MaxInstances)
		if cfg.CacheDir != "" {
			dir := C.CString(cfg.CacheDir)
			defer C.free(unsafe.Pointer(dir))
			c.cache_dir = dir
			c.cache_dir_len = C.size_t(len(cfg.CacheDir))
		}
	}
	var ptr *C.astrid_runtime_t
	var cerr *C.astrid_error_t
	if status := C.astrid_runtime_new(&c, &ptr, &cerr); status != C.ASTRID_OK {
		return nil, takeError(status, cerr)
	}
	r := &Runtime{rep: &reporter{}}
	r.ptr.Store((*byte)(unsafe.Pointer(ptr)))
	runtime.SetFinalizer(r, (*Runtime).Close)
	return r, nil
}

// handle returns the live C handle or ErrClosed.
func (r *Runtime) handle() (*C.astrid_runtime_t, error) {
	if p := r.ptr.Load(); p != nil {
		return rtPtr(p), nil
	}
	return nil, closedError("the runtime")
}

// Close shuts the runtime down: cancels every capsule, waits (bounded by
// Config.UnloadGrace) for calls in flight, stops its threads and releases
// every callback. Idempotent. Must not be called from inside a callback
// (the library ignores it there).
func (r *Runtime) Close() error {
	p := r.ptr.Swap(nil)
	if p == nil {
		return nil
	}
	runtime.SetFinalizer(r, nil)
	C.astrid_runtime_free(rtPtr(p))
	return nil
}

// SetPanicHandler installs fn to receive the panics recovered inside this
// runtime's callbacks (nil restores the default: the standard logger). fn
// runs on the thread of the callback that panicked.
func (r *Runtime) SetPanicHandler(fn func(*CallbackPanic)) {
	if fn == nil {
		r.rep.handler.Store(nil)
		return
	}
	r.rep.handler.Store(&fn)
}

// install hands a callback to a C installer through a fresh cgo.Handle. On
// failure the library keeps nothing (it never runs the finalizer of a
// failed install), so the handle is deleted here, and the error carries the
// library's message.
func (r *Runtime) install(state any, set func(*C.astrid_runtime_t, C.uintptr_t, **C.astrid_error_t) C.astrid_status_t) error {
	p, err := r.handle()
	if err != nil {
		return err
	}
	var h cgo.Handle
	if state != nil {
		h = cgo.NewHandle(state)
	}
	var cerr *C.astrid_error_t
	status := set(p, C.uintptr_t(h), &cerr)
	runtime.KeepAlive(r)
	if status != C.ASTRID_OK {
		if h != 0 {
			h.Delete()
		}
		return takeError(status, cerr)
	}
	return nil
}

// reporter delivers recovered callback panics. It is shared by the
// callbacks of one runtime and never references the Runtime itself (a
// cgo.Handle is a GC root: a reference from it would keep the Runtime, and
// so its finalizer, alive for ever).
type reporter struct {
	handler atomic.Pointer[func(*CallbackPanic)]
}

func (rep *reporter) report(callback string, value any) {
	p := &CallbackPanic{Callback: callback, Value: value, Stack: debug.Stack()}
	if h := rep.handler.Load(); h != nil {
		if rep.deliver(*h, p) {
			return
		}
	}
	log.Printf("%v\n%s", p, p.Stack)
}

// deliver runs the embedder's panic handler; a panic in it falls back to the log.
func (rep *reporter) deliver(h func(*CallbackPanic), p *CallbackPanic) (ok bool) {
	defer func() {
		if v := recover(); v != nil {
			log.Printf("astrid: panic handler panicked (%v) while reporting: %v", v, p)
			ok = true
		}
	}()
	h(p)
	return true
}
