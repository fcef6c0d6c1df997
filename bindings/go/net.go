package astrid

// #include "shim.h"
import "C"

import (
	"runtime"
	"sync/atomic"
)

// AcceptRequest is a local peer connecting to a capsule's unix listener
// (bound with bind-unix at the path Runtime.AssignUnixSocket gave the
// capsule), as the accept verifier sees it. The peer already passed the OS
// check: it runs as this process's user. The fields are copies; SetPrincipal
// works only while the verifier that received the request runs, and only
// on its goroutine: the library accepts the request handle only on the OS
// thread running the callback, and refuses it elsewhere (ErrClosed).
type AcceptRequest struct {
	// Capsule is the accepting capsule's name.
	Capsule string
	// PID is the peer's process id, or -1 when the OS did not report it.
	PID int64
	// UID and GID are the peer's user and group ids.
	UID, GID uint32
	// CallID is the guest call that accepts (Result.CallID).
	CallID uint64

	call *acceptCall // shared by copies of the request
}

// acceptCall is the C side of one verifier callback; clearing c when the
// callback returns disables SetPrincipal on every copy of the request.
type acceptCall struct {
	req AcceptRequest
	c   atomic.Value // *C.astrid_accept_request_t while the callback runs, a nil one after
}

// AcceptVerifier decides whether a local peer's connection reaches the
// capsule: Allow hands it over (with the principal named by SetPrincipal,
// if any); any other Verdict, or a panic, closes it before the guest sees
// it. It runs on the thread of the guest call that accepts, possibly
// concurrently with itself: answer quickly and call no blocking method of
// the runtime.
type AcceptVerifier func(req *AcceptRequest) Verdict

var errAcceptDone = &Error{Code: CodeClosed, Message: "closed: the accept request is only valid inside its verifier"}

// SetPrincipal names the connection's verified principal (1 to 128 bytes of
// UTF-8 without control characters), which the capsule reads with
// connection-principal. It counts only when the verifier then returns
// Allow. An invalid principal returns an error matching
// ErrInvalidArgument (or ErrUTF8) and changes nothing.
func (r *AcceptRequest) SetPrincipal(principal string) error {
	if r.call == nil {
		return errAcceptDone
	}
	c, _ := r.call.c.Load().(*C.astrid_accept_request_t)
	if c == nil {
		return errAcceptDone
	}
	p, n := cstr(principal)
	var cerr *C.astrid_error_t
	if status := C.astrid_accept_request_set_principal(c, p, n, &cerr); status != C.ASTRID_OK {
		return takeError(status, cerr)
	}
	return nil
}

type acceptState struct {
	fn       AcceptVerifier
	rep      *reporter
	capsules interner
}

// SetAcceptVerifier installs the accept verifier (nil removes it: peers of
// the same OS user are then accepted without a principal). It replaces the
// previous verifier.
func (r *Runtime) SetAcceptVerifier(fn AcceptVerifier) error {
	var state any
	if fn != nil {
		state = &acceptState{fn: fn, rep: r.rep}
	}
	return r.install(state, func(p *C.astrid_runtime_t, h C.uintptr_t, e **C.astrid_error_t) C.astrid_status_t {
		return C.astrid_go_set_accept_verifier(p, h, e)
	})
}

// AssignUnixSocket assigns the socket path that bind-unix binds for
// capsules named name loaded afterwards (the guest never sees the path). A
// stale socket file there is replaced when the capsule binds; any other file
// makes the bind fail with address-in-use. An empty name or a path longer
// than 107 bytes returns an error matching ErrInvalidArgument.
func (r *Runtime) AssignUnixSocket(name, path string) error {
	p, plen := cstr(path)
	return r.assignUnixSocket(name, p, plen)
}

// UnassignUnixSocket removes the socket path of capsules named name: those
// loaded afterwards get address-not-available from bind-unix.
func (r *Runtime) UnassignUnixSocket(name string) error {
	return r.assignUnixSocket(name, nil, 0)
}

func (r *Runtime) assignUnixSocket(name string, path *C.char, plen C.size_t) error {
	p, err := r.handle()
	if err != nil {
		return err
	}
	n, nlen := cstr(name)
	var cerr *C.astrid_error_t
	status := C.astrid_runtime_assign_unix_socket(p, n, nlen, path, plen, &cerr)
	runtime.KeepAlive(r)
	if status != C.ASTRID_OK {
		return takeError(status, cerr)
	}
	return nil
}
