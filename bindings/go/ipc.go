package astrid

// #include "shim.h"
import "C"

import (
	"runtime"
	"runtime/cgo"
	"sync/atomic"
	"time"
	"unsafe"
)

// Attribution says who vouches for a message's principal (ASTRID_ATTRIBUTION_*).
type Attribution uint32

const (
	// AttributionSystem: published by the embedder without a principal, or
	// by a capsule acting for no principal.
	AttributionSystem Attribution = 0
	// AttributionVerified: the host vouches for the principal.
	AttributionVerified Attribution = 1
	// AttributionClaimed: a capsule with uplink named the principal itself.
	AttributionClaimed Attribution = 2
)

func (a Attribution) String() string {
	switch a {
	case AttributionSystem:
		return "system"
	case AttributionVerified:
		return "verified"
	case AttributionClaimed:
		return "claimed"
	}
	return "unknown"
}

// Message is one message delivered to a subscription. Its fields are copies.
type Message struct {
	Topic string
	// Payload is the message's JSON text.
	Payload []byte
	// SourceID is the publishing capsule's id, or the embedder's id for
	// messages published with Runtime.Publish.
	SourceID    string
	Attribution Attribution
	// Principal is set for verified and claimed messages.
	Principal string
	// Sequence is the runtime-wide publish sequence number (increasing).
	Sequence  uint64
	Timestamp time.Time
	// Depth is 0 for host publishes.
	Depth uint32
	// Dropped counts messages this subscription missed (never queued) since
	// the previous delivery; Lagged those evicted unread from its full queue.
	Dropped uint64
	Lagged  uint64
}

// Publish publishes the JSON text payload on topic as the embedder
// (attribution system). It returns once the message is queued for every
// matching subscription. Allowed inside callbacks.
func (r *Runtime) Publish(topic string, payload []byte) error {
	return r.publish(topic, payload, nil)
}

// PublishAs is Publish attributed verified(principal): the embedder vouches
// for the principal.
func (r *Runtime) PublishAs(topic string, payload []byte, principal string) error {
	return r.publish(topic, payload, &principal)
}

func (r *Runtime) publish(topic string, payload []byte, principal *string) error {
	p, err := r.handle()
	if err != nil {
		return err
	}
	t, tlen := cstr(topic)
	j, jlen := cbytes(payload)
	if j == nil {
		j = (*C.uint8_t)(unsafe.Pointer(&emptyString[0]))
	}
	var pr *C.char
	var prlen C.size_t
	if principal != nil {
		pr, prlen = cstr(*principal)
	}
	var cerr *C.astrid_error_t
	status := C.astrid_go_publish(p, t, tlen, (*C.char)(unsafe.Pointer(j)), jlen, pr, prlen, &cerr)
	runtime.KeepAlive(r)
	if status != C.ASTRID_OK {
		return takeError(status, cerr)
	}
	return nil
}

// Subscription delivers the messages matching a topic pattern to a Go
// func until it is closed.
type Subscription struct {
	ptr atomic.Pointer[byte] // the library's opaque handle
	rt  *Runtime
}

type subscriptionState struct {
	fn  func(Message)
	rep *reporter
}

// Subscribe calls fn with every message published on a topic matching
// pattern ("a.b", "a.*", "*", "a.*.c": a final * matches one or more
// segments, another * exactly one). fn runs on the subscription's own
// thread, one message at a time, in publish order; it may Publish, and
// blocking runtime methods return ErrReentrant there.
func (r *Runtime) Subscribe(pattern string, fn func(Message)) (*Subscription, error) {
	if fn == nil {
		return nil, &Error{Code: CodeInvalidArgument, Message: "invalid argument: nil subscription func"}
	}
	p, err := r.handle()
	if err != nil {
		return nil, err
	}
	h := cgo.NewHandle(&subscriptionState{fn: fn, rep: r.rep})
	pat, plen := cstr(pattern)
	var out *C.astrid_subscription_t
	var cerr *C.astrid_error_t
	status := C.astrid_go_subscribe(p, pat, plen, C.uintptr_t(h), &out, &cerr)
	runtime.KeepAlive(r)
	if status != C.ASTRID_OK {
		h.Delete() // the library kept nothing of a failed subscribe
		return nil, takeError(status, cerr)
	}
	s := &Subscription{rt: r}
	s.ptr.Store((*byte)(unsafe.Pointer(out)))
	runtime.SetFinalizer(s, (*Subscription).Close)
	return s, nil
}

// Close stops delivery. It returns once no callback of the subscription
// runs (called from the subscription's own callback, it returns at once and
// delivery stops after that callback). Idempotent.
func (s *Subscription) Close() error {
	p := s.ptr.Swap(nil)
	if p == nil {
		return nil
	}
	runtime.SetFinalizer(s, nil)
	C.astrid_subscription_free((*C.astrid_subscription_t)(unsafe.Pointer(p)))
	return nil
}
