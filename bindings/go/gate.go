package astrid

// #include "shim.h"
import "C"

import (
	"runtime"
	"strconv"
	"sync/atomic"
	"unsafe"
)

// GateKind is the kind of a gate request (ASTRID_GATE_*).
type GateKind uint32

// The gate kinds.
const (
	GateFileRead    GateKind = C.ASTRID_GATE_FILE_READ    // Path is set
	GateFileWrite   GateKind = C.ASTRID_GATE_FILE_WRITE   // Path is set
	GateHTTPRequest GateKind = C.ASTRID_GATE_HTTP_REQUEST // Method, URL, Host, Port
	GateNetConnect  GateKind = C.ASTRID_GATE_NET_CONNECT  // Transport, Host, Port
	GateNetBind     GateKind = C.ASTRID_GATE_NET_BIND     // Transport, Host, Port
	GateDNSLookup   GateKind = C.ASTRID_GATE_DNS_LOOKUP   // Host
)

func (k GateKind) String() string {
	switch k {
	case GateFileRead:
		return "file-read"
	case GateFileWrite:
		return "file-write"
	case GateHTTPRequest:
		return "http-request"
	case GateNetConnect:
		return "net-connect"
	case GateNetBind:
		return "net-bind"
	case GateDNSLookup:
		return "dns-lookup"
	}
	return "unknown"
}

// Verdict is a gate's answer.
type Verdict uint32

const (
	// Allow lets the request through.
	Allow Verdict = C.ASTRID_ALLOW
	// Deny refuses it; the guest sees its interface's capability-denied error.
	Deny Verdict = C.ASTRID_DENY
	// Pending means the answer comes later through the ticket taken with
	// GateRequest.Defer (without a ticket, Pending is a denial).
	Pending Verdict = C.ASTRID_PENDING
)

func (v Verdict) String() string {
	switch v {
	case Allow:
		return "allow"
	case Deny:
		return "deny"
	case Pending:
		return "pending"
	}
	return "verdict(" + strconv.Itoa(int(v)) + ")"
}

// GateRequest is one question to the gate. The strings are copies; the
// methods work only while the gate callback that received the request runs,
// and only on its goroutine: the library accepts the request handle only on
// the OS thread running the callback, and refuses it from any other
// (ErrClosed, with the library's message). To answer from elsewhere, Defer
// and resolve the ticket. Fields the kind does not use are empty.
type GateRequest struct {
	// CallID is the guest call asking (Result.CallID); 0 outside any call.
	CallID uint64
	Kind   GateKind
	// Port is the port for network kinds.
	Port uint16
	// Capsule is the asking capsule's name.
	Capsule string
	// Principal is the call's principal ("" for calls without one).
	Principal string
	// Path is the VFS spelling ("cwd://a/b").
	Path string
	// HostPath is the resolved host path (host-directory mounts only).
	HostPath  string
	Method    string
	URL       string
	Host      string
	Transport string // "tcp", "udp" or "unix"

	call *gateCall // shared by copies of the request
}

// gateCall is the C side of one gate callback. The request handed to the
// callback lives inside it (one allocation); every copy of that request
// points back here, so clearing c when the callback returns disables the
// methods of all copies.
type gateCall struct {
	req GateRequest
	c   atomic.Value // *C.astrid_gate_request_t while the callback runs, a nil one after
}

// live returns the C request while the callback runs.
func (r *GateRequest) live() *C.astrid_gate_request_t {
	if r.call == nil {
		return nil
	}
	c, _ := r.call.c.Load().(*C.astrid_gate_request_t)
	return c
}

// GateFunc decides a gate request. It is asked only about requests the
// capsule's manifest allows, may run concurrently on library threads, and
// must answer within Config.GateTimeout (or return Pending after Defer).
type GateFunc func(req *GateRequest) Verdict

var errRequestDone = &Error{Code: CodeClosed, Message: "closed: the gate request is only valid inside its callback"}

// SetReason attaches a reason to the verdict. It reaches the audit
// callback, never the guest.
func (r *GateRequest) SetReason(reason string) error {
	c := r.live()
	if c == nil {
		return errRequestDone
	}
	p, n := cstr(reason)
	var cerr *C.astrid_error_t
	if status := C.astrid_gate_request_set_reason(c, p, n, &cerr); status != C.ASTRID_OK {
		return takeError(status, cerr)
	}
	return nil
}

// Defer takes a ticket to answer the request later, from any goroutine,
// with GateTicket.Resolve; the callback then returns Pending. The waiting
// call stays cancellable and bounded by Config.GateTimeout.
func (r *GateRequest) Defer() (*GateTicket, error) {
	c := r.live()
	if c == nil {
		return nil, errRequestDone
	}
	var t *C.astrid_gate_ticket_t
	var cerr *C.astrid_error_t
	if status := C.astrid_gate_request_defer(c, &t, &cerr); status != C.ASTRID_OK {
		return nil, takeError(status, cerr)
	}
	ticket := &GateTicket{}
	ticket.ptr.Store((*byte)(unsafe.Pointer(t)))
	runtime.SetFinalizer(ticket, (*GateTicket).Close)
	return ticket, nil
}

// GateTicket is a deferred gate verdict. Resolve it exactly once; a ticket
// closed (or garbage-collected) without an answer denies the request.
type GateTicket struct {
	ptr atomic.Pointer[byte] // the library's *astrid_gate_ticket_t; nil once used
}

// Resolve answers the deferred request (Allow or Deny; anything else
// denies) with an optional reason, and releases the ticket. Resolving after
// the call gave up is harmless; a second Resolve returns ErrClosed.
func (t *GateTicket) Resolve(verdict Verdict, reason string) error {
	p := t.ptr.Swap(nil)
	if p == nil {
		return closedError("the gate ticket")
	}
	runtime.SetFinalizer(t, nil)
	r, n := optCstr(reason)
	var cerr *C.astrid_error_t
	if status := C.astrid_gate_ticket_resolve(ticketPtr(p), C.astrid_verdict_t(verdict), r, n, &cerr); status != C.ASTRID_OK {
		return takeError(status, cerr)
	}
	return nil
}

// Close drops an unresolved ticket, which denies the request. Idempotent.
func (t *GateTicket) Close() error {
	p := t.ptr.Swap(nil)
	if p == nil {
		return nil
	}
	runtime.SetFinalizer(t, nil)
	C.astrid_gate_ticket_free(ticketPtr(p))
	return nil
}

func ticketPtr(p *byte) *C.astrid_gate_ticket_t { return (*C.astrid_gate_ticket_t)(unsafe.Pointer(p)) }

type gateState struct {
	fn                   GateFunc
	rep                  *reporter
	capsules, principals interner
}

// SetGate installs the security gate (nil removes it: the manifest alone
// then decides). It replaces the previous gate.
func (r *Runtime) SetGate(fn GateFunc) error {
	var state any
	if fn != nil {
		state = &gateState{fn: fn, rep: r.rep}
	}
	return r.install(state, func(p *C.astrid_runtime_t, h C.uintptr_t, e **C.astrid_error_t) C.astrid_status_t {
		return C.astrid_go_set_gate(p, h, e)
	})
}
