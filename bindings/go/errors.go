package astrid

// #include "shim.h"
import "C"

import (
	"errors"
	"fmt"
	"strconv"
)

// Code is one of the library's ASTRID_E_* status codes. Codes are stable and
// never renumbered.
type Code int32

// The ASTRID_E_* codes, in the order of astrid.h.
const (
	CodeInvalidArgument Code = C.ASTRID_E_INVALID_ARGUMENT
	CodeUTF8            Code = C.ASTRID_E_UTF8
	CodeManifest        Code = C.ASTRID_E_MANIFEST
	CodeCompile         Code = C.ASTRID_E_COMPILE
	CodeLink            Code = C.ASTRID_E_LINK
	CodeNotFound        Code = C.ASTRID_E_NOT_FOUND
	CodeDenied          Code = C.ASTRID_E_DENIED
	CodeTimeout         Code = C.ASTRID_E_TIMEOUT
	CodeCancelled       Code = C.ASTRID_E_CANCELLED
	CodeOutOfFuel       Code = C.ASTRID_E_OUT_OF_FUEL
	CodeResourceLimit   Code = C.ASTRID_E_RESOURCE_LIMIT
	CodeTrap            Code = C.ASTRID_E_TRAP
	CodeClosed          Code = C.ASTRID_E_CLOSED
	CodeReentrant       Code = C.ASTRID_E_REENTRANT
	CodeIO              Code = C.ASTRID_E_IO
	CodePanic           Code = C.ASTRID_E_PANIC
	CodeInternal        Code = C.ASTRID_E_INTERNAL
)

var codeNames = map[Code]string{
	CodeInvalidArgument: "invalid argument",
	CodeUTF8:            "invalid UTF-8",
	CodeManifest:        "manifest error",
	CodeCompile:         "compile error",
	CodeLink:            "link error",
	CodeNotFound:        "not found",
	CodeDenied:          "denied",
	CodeTimeout:         "timeout",
	CodeCancelled:       "cancelled",
	CodeOutOfFuel:       "out of fuel",
	CodeResourceLimit:   "resource limit",
	CodeTrap:            "trap",
	CodeClosed:          "closed",
	CodeReentrant:       "re-entrant call",
	CodeIO:              "I/O error",
	CodePanic:           "panic in the library",
	CodeInternal:        "internal error",
}

// String names the code ("manifest error", "closed", ...).
func (c Code) String() string {
	if name, ok := codeNames[c]; ok {
		return name
	}
	return "code " + strconv.Itoa(int(c))
}

// Error is an error reported by the library: its code and its message
// ("<kind>: <what>: <cause>..."). Compare with errors.Is against the
// sentinels (ErrManifest, ErrClosed, ...), which match any Error of the same
// code, or read Code after errors.As.
type Error struct {
	Code    Code
	Message string
	// CallID is the failed guest call's id (the id its log records and
	// audit events carry); 0 for errors of no call and calls that never
	// started. errors.Is ignores it.
	CallID uint64
}

func (e *Error) Error() string {
	if e.Message == "" {
		return "astrid: " + e.Code.String()
	}
	return "astrid: " + e.Message
}

// Is reports whether target is an *Error of the same code whose message is
// empty (a sentinel) or equal.
func (e *Error) Is(target error) bool {
	t, ok := target.(*Error)
	return ok && t.Code == e.Code && (t.Message == "" || t.Message == e.Message)
}

// Sentinels, one per code: errors.Is(err, astrid.ErrManifest) is true for
// every error the library reports with ASTRID_E_MANIFEST.
var (
	ErrInvalidArgument = &Error{Code: CodeInvalidArgument}
	ErrUTF8            = &Error{Code: CodeUTF8}
	ErrManifest        = &Error{Code: CodeManifest}
	ErrCompile         = &Error{Code: CodeCompile}
	ErrLink            = &Error{Code: CodeLink}
	ErrNotFound        = &Error{Code: CodeNotFound}
	ErrDenied          = &Error{Code: CodeDenied}
	ErrTimeout         = &Error{Code: CodeTimeout}
	ErrCancelled       = &Error{Code: CodeCancelled}
	ErrOutOfFuel       = &Error{Code: CodeOutOfFuel}
	ErrResourceLimit   = &Error{Code: CodeResourceLimit}
	ErrTrap            = &Error{Code: CodeTrap}
	ErrClosed          = &Error{Code: CodeClosed}
	ErrReentrant       = &Error{Code: CodeReentrant}
	ErrIO              = &Error{Code: CodeIO}
	ErrPanic           = &Error{Code: CodePanic}
	ErrInternal        = &Error{Code: CodeInternal}
)

// ErrABIMismatch is returned (wrapped, with both versions) by NewRuntime when
// the library's astrid_abi_version() is not the ABI this binding implements.
var ErrABIMismatch = errors.New("astrid: library ABI version mismatch")

// takeError turns a status and its optional error object into a Go error and
// frees the object. status must not be ASTRID_OK.
func takeError(status C.astrid_status_t, err *C.astrid_error_t) error {
	if err == nil {
		return &Error{Code: Code(status)}
	}
	e := &Error{
		Code:    Code(C.astrid_error_code(err)),
		Message: C.GoString(C.astrid_error_message(err)),
		CallID:  uint64(C.astrid_error_call_id(err)),
	}
	C.astrid_error_free(err)
	return e
}

// closedError is what any use of a closed Runtime, Capsule, Subscription or
// GateTicket returns.
func closedError(what string) error {
	return &Error{Code: CodeClosed, Message: "closed: " + what + " was closed"}
}

// CallbackPanic describes a panic recovered inside a Go callback. The
// library saw a denial (gate), a refused connection (accept verifier), a
// failure (VFS: ASTRID_VFS_IO, secret provider: an error) or nothing (log,
// audit, subscription).
type CallbackPanic struct {
	// Callback names the callback: "gate", "accept" (the accept verifier),
	// "log", "audit", "secret", "subscription" or "vfs.<method>" (e.g.
	// "vfs.ReadAt").
	Callback string
	// Value is what was passed to panic.
	Value any
	// Stack is the goroutine's stack at the panic.
	Stack []byte
}

func (p *CallbackPanic) Error() string {
	return fmt.Sprintf("astrid: %s callback panicked: %v", p.Callback, p.Value)
}

// Unwrap returns the panic value when it is an error.
func (p *CallbackPanic) Unwrap() error {
	if err, ok := p.Value.(error); ok {
		return err
	}
	return nil
}
