package astrid

// #include "shim.h"
import "C"

import (
	"errors"
	"strconv"
	"unsafe"
)

// KVNamespace says whose keys an operation is about: the data scope (the
// call's principal, else the capsule's owner, else "system") and the
// capsule's id. A backend must keep namespaces apart: that is what isolates
// capsules and principals from each other. It is comparable, so it can key
// a map.
type KVNamespace struct {
	Scope     string
	CapsuleID string
}

// KV is a key-value backend serving astrid:kv for every capsule of a
// runtime; see Runtime.SetKV.
//
// Keys and prefixes arrive validated (UTF-8 NFC, 1 to 256 bytes, no control
// characters; prefixes may be empty) and sort bytewise (Go string order);
// values are at most 1 MiB. The byte slices a method receives are copies
// the backend may keep. Methods run on library threads (or the calling
// goroutine's thread with FlagInlineCallbacks), concurrently, each bounded
// by Config.VFSTimeout: they must be safe for concurrent use.
//
// Errors: return a KVCode (KVQuota, KVTooLarge, ...) or an error wrapping
// one for the matching guest error; any other error is KVIO (the guest sees
// unknown("storage failed")). A panic is recovered as KVIO and reported
// (Runtime.SetPanicHandler); the runtime keeps serving.
type KV interface {
	// Get returns the value of key; found=false when it has none.
	Get(ns KVNamespace, key string) (value []byte, found bool, err error)
	// Set stores value under key (insert or replace).
	Set(ns KVNamespace, key string, value []byte) error
	// Remove removes key; a missing key is not an error.
	Remove(ns KVNamespace, key string) error
	// List calls emit, in bytewise order, for the keys starting with prefix
	// that sort after after ("" = from the first), at most limit of them.
	// emit returns false when the library wants no more, and must not be
	// called after List returns.
	List(ns KVNamespace, prefix, after string, limit int, emit func(key string) bool) error
	// ClearPrefix removes every key starting with prefix (all keys of the
	// namespace for "") and returns how many it removed.
	ClearPrefix(ns KVNamespace, prefix string) (removed uint64, err error)
	// CAS atomically stores value if the current value of key equals
	// expected (hasExpected=false: if the key is absent) and reports whether
	// it did. It must be linearizable per key.
	CAS(ns KVNamespace, key string, expected []byte, hasExpected bool, value []byte) (swapped bool, err error)
}

// KVReleaser is told when the library has dropped the backend: after it
// was replaced (SetKV) or the runtime closed, and no call uses it any more.
// Release runs once; no other method runs after it.
type KVReleaser interface {
	Release()
}

// KVCode is a backend result (ASTRID_KV_*); each maps onto an astrid:kv
// error the guest sees. It is an error, for backends to return.
type KVCode int32

// The backend results (KVOK is success, never returned as an error).
const (
	KVOK          KVCode = C.ASTRID_KV_OK
	KVNotFound    KVCode = C.ASTRID_KV_NOT_FOUND    // Get: no value (the guest reads none)
	KVCasMismatch KVCode = C.ASTRID_KV_CAS_MISMATCH // CAS: not the expected value
	KVQuota       KVCode = C.ASTRID_KV_QUOTA        // the namespace's budget is exhausted
	KVTooLarge    KVCode = C.ASTRID_KV_TOO_LARGE    // too large for the backend
	KVIO          KVCode = C.ASTRID_KV_IO           // any other failure: unknown("storage failed")
)

var kvNames = map[KVCode]string{
	KVOK: "ok", KVNotFound: "not-found", KVCasMismatch: "cas-mismatch", KVQuota: "quota",
	KVTooLarge: "too-large", KVIO: "io",
}

func (c KVCode) Error() string {
	if name, ok := kvNames[c]; ok {
		return "astrid kv: " + name
	}
	return "astrid kv: code " + strconv.Itoa(int(c))
}

// kvCodeOf maps a backend's error onto the code the library expects.
func kvCodeOf(err error) C.int32_t {
	if err == nil {
		return C.ASTRID_KV_OK
	}
	var code KVCode
	if errors.As(err, &code) && code != KVOK {
		return C.int32_t(code)
	}
	return C.ASTRID_KV_IO // including an error that claims success
}

// kvState is what the library's user_data handle of a backend resolves to.
type kvState struct {
	kv       KV
	releaser KVReleaser
	rep      *reporter
	scopes   interner
	ids      interner
}

func (st *kvState) release() {
	if st.releaser == nil {
		return
	}
	defer func() {
		if p := recover(); p != nil {
			st.rep.report("kv.Release", p)
		}
	}()
	st.releaser.Release()
}

func (st *kvState) namespace(ns *C.astrid_kv_namespace_t) KVNamespace {
	return KVNamespace{Scope: st.scopes.get(ns.scope, ns.scope_len), CapsuleID: st.ids.get(ns.capsule_id, ns.capsule_id_len)}
}

// SetKV serves astrid:kv for every capsule of the runtime from kv, from the
// next KV call on; nil goes back to a fresh, empty built-in in-memory store.
// The previous backend is released (KVReleaser) once no call uses it any
// more; the last one when the runtime closes.
func (r *Runtime) SetKV(kv KV) error {
	var state any
	if kv != nil {
		st := &kvState{kv: kv, rep: r.rep}
		st.releaser, _ = kv.(KVReleaser)
		state = st
	}
	return r.install(state, func(p *C.astrid_runtime_t, h C.uintptr_t, e **C.astrid_error_t) C.astrid_status_t {
		return C.astrid_go_set_kv(p, h, e)
	})
}

// kvRecoverDeferred, deferred by every KV trampoline, turns a backend panic
// into ASTRID_KV_IO and reports it.
func kvRecoverDeferred(st *kvState, method string, code *C.int32_t) {
	if p := recover(); p != nil {
		*code = C.ASTRID_KV_IO
		st.rep.report("kv."+method, p)
	}
}

// goBytes copies a borrowed C buffer into Go memory (empty, not nil, for 0).
func goBytes(p *C.uint8_t, n C.size_t) []byte {
	if n == 0 {
		return []byte{}
	}
	return C.GoBytes(unsafe.Pointer(p), C.int(n))
}

//export astridGoKvGet
func astridGoKvGet(ud unsafe.Pointer, ns *C.astrid_kv_namespace_t, key *C.char, n C.size_t, sink, ctx unsafe.Pointer) (code C.int32_t) {
	st, ok := lookup[*kvState](ud, "kv")
	if !ok {
		return C.ASTRID_KV_IO
	}
	defer kvRecoverDeferred(st, "Get", &code)
	value, found, err := st.kv.Get(st.namespace(ns), goString(key, n))
	if err != nil {
		return kvCodeOf(err)
	}
	if !found {
		return C.ASTRID_KV_NOT_FOUND
	}
	v, vlen := cbytes(value)
	if v == nil {
		v = (*C.uint8_t)(unsafe.Pointer(&emptyString[0]))
	}
	C.astrid_go_kv_value_sink(sink, ctx, v, vlen)
	return C.ASTRID_KV_OK
}

//export astridGoKvSet
func astridGoKvSet(ud unsafe.Pointer, ns *C.astrid_kv_namespace_t, key *C.char, n C.size_t, value *C.uint8_t, vn C.size_t) (code C.int32_t) {
	st, ok := lookup[*kvState](ud, "kv")
	if !ok {
		return C.ASTRID_KV_IO
	}
	defer kvRecoverDeferred(st, "Set", &code)
	return kvCodeOf(st.kv.Set(st.namespace(ns), goString(key, n), goBytes(value, vn)))
}

//export astridGoKvRemove
func astridGoKvRemove(ud unsafe.Pointer, ns *C.astrid_kv_namespace_t, key *C.char, n C.size_t) (code C.int32_t) {
	st, ok := lookup[*kvState](ud, "kv")
	if !ok {
		return C.ASTRID_KV_IO
	}
	defer kvRecoverDeferred(st, "Remove", &code)
	return kvCodeOf(st.kv.Remove(st.namespace(ns), goString(key, n)))
}

//export astridGoKvList
func astridGoKvList(ud unsafe.Pointer, ns *C.astrid_kv_namespace_t, prefix *C.char, pn C.size_t, after *C.char, an C.size_t, limit C.uint32_t, sink, ctx unsafe.Pointer) (code C.int32_t) {
	st, ok := lookup[*kvState](ud, "kv")
	if !ok {
		return C.ASTRID_KV_IO
	}
	defer kvRecoverDeferred(st, "List", &code)
	open := true // the sink is valid only during this call
	defer func() { open = false }()
	left := int(limit)
	emit := func(key string) bool {
		if !open || left <= 0 {
			return false
		}
		left--
		k, klen := cstr(key)
		return C.astrid_go_kv_key_sink(sink, ctx, k, klen) == 0 && left > 0
	}
	if left == 0 {
		return C.ASTRID_KV_OK
	}
	return kvCodeOf(st.kv.List(st.namespace(ns), goString(prefix, pn), goString(after, an), int(limit), emit))
}

//export astridGoKvClearPrefix
func astridGoKvClearPrefix(ud unsafe.Pointer, ns *C.astrid_kv_namespace_t, prefix *C.char, pn C.size_t, out *C.uint64_t) (code C.int32_t) {
	st, ok := lookup[*kvState](ud, "kv")
	if !ok {
		return C.ASTRID_KV_IO
	}
	defer kvRecoverDeferred(st, "ClearPrefix", &code)
	removed, err := st.kv.ClearPrefix(st.namespace(ns), goString(prefix, pn))
	if err != nil {
		return kvCodeOf(err)
	}
	*out = C.uint64_t(removed)
	return C.ASTRID_KV_OK
}

//export astridGoKvCas
func astridGoKvCas(ud unsafe.Pointer, ns *C.astrid_kv_namespace_t, key *C.char, n C.size_t, hasExpected C.uint32_t, expected *C.uint8_t, en C.size_t, value *C.uint8_t, vn C.size_t) (code C.int32_t) {
	st, ok := lookup[*kvState](ud, "kv")
	if !ok {
		return C.ASTRID_KV_IO
	}
	defer kvRecoverDeferred(st, "CAS", &code)
	var want []byte
	if hasExpected != 0 {
		want = goBytes(expected, en)
	}
	swapped, err := st.kv.CAS(st.namespace(ns), goString(key, n), want, hasExpected != 0, goBytes(value, vn))
	if err != nil {
		return kvCodeOf(err)
	}
	if !swapped {
		return C.ASTRID_KV_CAS_MISMATCH
	}
	return C.ASTRID_KV_OK
}
