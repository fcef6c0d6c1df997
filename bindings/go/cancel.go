package astrid

// #include "shim.h"
import "C"

import (
	"context"
	"errors"
	"runtime"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"
)

// Cancel is a token that ends the calls it governs when fired (pass it in
// CallOptions.Cancel). Fire may be called from any goroutine, any number
// of times, and never waits for a call; a call started with a fired token
// fails with ErrCancelled without running the guest. One token may govern
// many calls on any capsules; other calls are untouched. Close frees it
// (a finalizer does too); calls it governs run on.
type Cancel struct {
	ptr atomic.Pointer[byte] // the library's *astrid_cancel_t; nil once closed
}

// NewCancel creates an unfired token.
func NewCancel() (*Cancel, error) {
	var out *C.astrid_cancel_t
	var cerr *C.astrid_error_t
	if s := C.astrid_cancel_new(&out, &cerr); s != C.ASTRID_OK {
		return nil, takeError(s, cerr)
	}
	c := &Cancel{}
	c.ptr.Store((*byte)(unsafe.Pointer(out)))
	runtime.SetFinalizer(c, (*Cancel).Close)
	return c, nil
}

func (c *Cancel) handle() *C.astrid_cancel_t {
	return (*C.astrid_cancel_t)(unsafe.Pointer(c.ptr.Load()))
}

// Fire fires the token (idempotent). It fails with ErrClosed after Close.
func (c *Cancel) Fire() error {
	p := c.handle()
	if p == nil {
		return closedError("the cancel token")
	}
	var cerr *C.astrid_error_t
	s := C.astrid_cancel_fire(p, &cerr)
	runtime.KeepAlive(c)
	if s != C.ASTRID_OK {
		return takeError(s, cerr)
	}
	return nil
}

// Fired reports whether the token has been fired (false once closed).
func (c *Cancel) Fired() bool {
	p := c.handle()
	fired := p != nil && bool(C.astrid_cancel_is_fired(p))
	runtime.KeepAlive(c)
	return fired
}

// Close frees the token; idempotent.
func (c *Cancel) Close() {
	if p := c.ptr.Swap(nil); p != nil {
		C.astrid_cancel_free((*C.astrid_cancel_t)(unsafe.Pointer(p)))
		runtime.SetFinalizer(c, nil)
	}
}

// CallbackCallID is the id of the guest call the calling goroutine's
// thread serves: inside any callback (gate, VFS, KV, secret, accept
// verifier, log), the call whose host call it answers; 0 elsewhere. VFS and
// KV methods have no request value: this is how they learn the call.
func CallbackCallID() uint64 { return uint64(C.astrid_callback_call_id()) }

// ContextError is the error of a CallContext call that ctx ended: it is
// both the library's error (errors.Is(err, ErrCancelled) or ErrTimeout) and
// the context's (errors.Is(err, context.Canceled) or
// context.DeadlineExceeded).
type ContextError struct {
	Err     error // the library's error
	Context error // ctx.Err(), or context.DeadlineExceeded when ctx's deadline set the call's
}

func (e *ContextError) Error() string { return e.Err.Error() + " (" + e.Context.Error() + ")" }

// Unwrap gives both errors to errors.Is and errors.As.
func (e *ContextError) Unwrap() []error { return []error{e.Err, e.Context} }

// unfired keeps tokens that governed a call and were never fired, so a
// CallContext call does not create and free one each time.
var unfired = sync.Pool{New: func() any { return nil }}

// CallContext is CallWith under ctx: cancelling ctx fires the call's token,
// and ctx's deadline, when it is earlier than opts.Timeout (or the capsule's
// timeout), becomes the call's deadline. A call that ctx ended fails with a
// *ContextError; one started with ctx already done does not run. opts may
// be nil; opts.Cancel must be nil (ctx is the call's cancellation).
func (c *Capsule) CallContext(ctx context.Context, action string, payload []byte, opts *CallOptions) (Result, error) {
	if err := ctx.Err(); err != nil {
		return Result{}, &ContextError{Err: &Error{Code: CodeCancelled, Message: "the call was not started: " + err.Error()}, Context: err}
	}
	var o CallOptions
	if opts != nil {
		o = *opts
	}
	if o.Cancel != nil {
		return Result{}, &Error{Code: CodeInvalidArgument, Message: "CallContext takes the call's cancellation from ctx: opts.Cancel must be nil"}
	}
	deadline, hasDeadline := ctx.Deadline()
	ctxSetsTimeout := false
	if hasDeadline {
		left := time.Until(deadline)
		if left <= 0 {
			return Result{}, &ContextError{Err: &Error{Code: CodeTimeout, Message: "the call was not started: the context's deadline has passed"}, Context: context.DeadlineExceeded}
		}
		if o.Timeout == 0 || left < o.Timeout {
			o.Timeout, ctxSetsTimeout = left, true
		}
	}
	if ctx.Done() == nil {
		return c.CallWith(&o, action, payload)
	}
	token, _ := unfired.Get().(*Cancel)
	if token == nil || token.handle() == nil {
		var err error
		if token, err = NewCancel(); err != nil {
			return Result{}, err
		}
	}
	stop := context.AfterFunc(ctx, func() { _ = token.Fire() })
	o.Cancel = token
	res, err := c.CallWith(&o, action, payload)
	stopped := stop()
	if stopped && !token.Fired() {
		unfired.Put(token)
	} else {
		token.Close()
	}
	if err == nil {
		return res, nil
	}
	ctxErr := ctx.Err()
	switch {
	case errors.Is(ctxErr, context.DeadlineExceeded) && errors.Is(err, ErrCancelled):
		// The context's deadline fired the token before the call's own
		// deadline was seen: to the caller it is the same timeout.
		return Result{}, &ContextError{Err: &Error{Code: CodeTimeout, Message: "timeout: the call ran past its context's deadline"}, Context: ctxErr}
	case errors.Is(err, ErrCancelled) && ctxErr != nil:
		return Result{}, &ContextError{Err: err, Context: ctxErr}
	case errors.Is(err, ErrTimeout) && ctxSetsTimeout:
		return Result{}, &ContextError{Err: err, Context: context.DeadlineExceeded}
	}
	return Result{}, err
}
