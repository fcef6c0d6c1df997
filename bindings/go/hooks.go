package astrid

// #include "shim.h"
import "C"

import "time"

// LogLevel is a log record's level (ASTRID_LOG_*).
type LogLevel uint32

// The log levels.
const (
	LogTrace LogLevel = C.ASTRID_LOG_TRACE
	LogDebug LogLevel = C.ASTRID_LOG_DEBUG
	LogInfo  LogLevel = C.ASTRID_LOG_INFO
	LogWarn  LogLevel = C.ASTRID_LOG_WARN
	LogError LogLevel = C.ASTRID_LOG_ERROR
)

func (l LogLevel) String() string {
	switch l {
	case LogTrace:
		return "trace"
	case LogDebug:
		return "debug"
	case LogInfo:
		return "info"
	case LogWarn:
		return "warn"
	}
	return "error"
}

// LogRecord is a log line from a capsule: astrid:sys log, guest stdout
// (info) and stderr (warn), and runtime notes about a capsule.
type LogRecord struct {
	Level   LogLevel
	Capsule string
	// Principal is the call's context principal ("" when there is none).
	Principal string
	Message   string
	// CallID is the call that wrote the line (Result.CallID); 0 outside any call.
	CallID uint64
}

// AuditOutcome is an audit event's outcome (ASTRID_AUDIT_*).
type AuditOutcome uint32

// The audit outcomes.
const (
	AuditAllowed AuditOutcome = C.ASTRID_AUDIT_ALLOWED
	// AuditDenied is a policy refusal, or a bus-dispatched handler's "deny"
	// answer (the reason is the answer's data).
	AuditDenied AuditOutcome = C.ASTRID_AUDIT_DENIED
	// AuditFailed is a failed host call, or a failed dispatched handler.
	AuditFailed AuditOutcome = C.ASTRID_AUDIT_FAILED
	// AuditContinue and AuditFinal are what a bus-dispatched handler
	// ("guest.<action>") answered.
	AuditContinue AuditOutcome = C.ASTRID_AUDIT_CONTINUE
	AuditFinal    AuditOutcome = C.ASTRID_AUDIT_FINAL
)

func (o AuditOutcome) String() string {
	switch o {
	case AuditAllowed:
		return "allowed"
	case AuditDenied:
		return "denied"
	case AuditContinue:
		return "continue"
	case AuditFinal:
		return "final"
	}
	return "failed"
}

// AuditEvent describes one host call. It never contains payloads, bodies
// or config values.
type AuditEvent struct {
	Capsule   string
	CapsuleID string
	// Principal is "p", "system" or "claimed(p)".
	Principal string
	// Call is "interface.function", e.g. "sys.get-config".
	Call string
	// Target is a VFS path, host:port, URL without query, topic or config key.
	Target string
	// Bytes counts payload bytes in plus out.
	Bytes   uint64
	Outcome AuditOutcome
	// Reason says why it was denied or failed (never shown to the guest).
	Reason  string
	Elapsed time.Duration
	// CallID is the call the event belongs to (Result.CallID); 0 outside any call.
	CallID uint64
}

// SecretRequest asks for the value of an [env] key of type secret.
type SecretRequest struct {
	Capsule   string
	CapsuleID string
	// Principal is the call's principal ("" when there is none).
	Principal string
	Key       string
	// CallID is the guest call asking (Result.CallID).
	CallID uint64
}

// SecretFunc answers a secret request: (value, true, nil) gives the guest
// the value, ("", false, nil) makes it read none, and an error makes its
// get-config fail. Values are never cached or logged by the library.
type SecretFunc func(req SecretRequest) (value string, ok bool, err error)

type logState struct {
	fn                   func(LogRecord)
	rep                  *reporter
	capsules, principals interner
}

type auditState struct {
	fn  func(AuditEvent)
	rep *reporter
}

type secretState struct {
	fn  SecretFunc
	rep *reporter
}

// SetLogger installs fn to receive capsule log lines (nil removes it). fn
// runs on the thread executing the guest, possibly concurrently.
func (r *Runtime) SetLogger(fn func(LogRecord)) error {
	var state any
	if fn != nil {
		state = &logState{fn: fn, rep: r.rep}
	}
	return r.install(state, func(p *C.astrid_runtime_t, h C.uintptr_t, e **C.astrid_error_t) C.astrid_status_t {
		return C.astrid_go_set_log(p, h, e)
	})
}

// SetAuditor installs fn to receive one event per host call (nil removes
// it). fn runs on the runtime's audit thread, one event at a time, in
// order; a slow fn makes capsules wait (events are never dropped).
func (r *Runtime) SetAuditor(fn func(AuditEvent)) error {
	var state any
	if fn != nil {
		state = &auditState{fn: fn, rep: r.rep}
	}
	return r.install(state, func(p *C.astrid_runtime_t, h C.uintptr_t, e **C.astrid_error_t) C.astrid_status_t {
		return C.astrid_go_set_audit(p, h, e)
	})
}

// SetSecretProvider installs fn to answer secret config keys (nil removes
// it: secret keys then read as none). fn runs on the thread executing the
// guest, possibly concurrently.
func (r *Runtime) SetSecretProvider(fn SecretFunc) error {
	var state any
	if fn != nil {
		state = &secretState{fn: fn, rep: r.rep}
	}
	return r.install(state, func(p *C.astrid_runtime_t, h C.uintptr_t, e **C.astrid_error_t) C.astrid_status_t {
		return C.astrid_go_set_secret(p, h, e)
	})
}
