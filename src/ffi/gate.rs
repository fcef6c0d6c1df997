//! The security gate over C (c-api §4): the request handle and its
//! accessors, verdicts, the reason setter, and deferred verdicts through
//! tickets.

use super::errors::astrid_error_t;
use super::runtime::{astrid_finalizer_fn, astrid_runtime_t, install_hook};
use super::{
    astrid_status_t, guard, non_null, on_request, opt_view, view, with_request, write_sized,
    Registry, RequestKind,
};
use crate::error::Error;
use crate::gate::{Deferral, GateAnswer, GateFn, Ticket};
use crate::policy::gate::{GateKind, GateRequest, Verdict};
use crate::runtime::Runtime;
use once_cell::sync::Lazy;
use std::cell::RefCell;
use std::sync::Arc;

// The kind constants are literals (cbindgen emits only literal constants);
// this keeps them equal to the Rust enum.
const _: () = assert!(
    ASTRID_GATE_FILE_READ == GateKind::FileRead as u32
        && ASTRID_GATE_FILE_WRITE == GateKind::FileWrite as u32
        && ASTRID_GATE_HTTP_REQUEST == GateKind::HttpRequest as u32
        && ASTRID_GATE_NET_CONNECT == GateKind::NetConnect as u32
        && ASTRID_GATE_NET_BIND == GateKind::NetBind as u32
        && ASTRID_GATE_DNS_LOOKUP == GateKind::DnsLookup as u32
);

/// What a gate request asks about (`astrid_gate_request_info_t.kind`): an
/// `ASTRID_GATE_*` value. Kinds are only ever appended; treat an unknown
/// one as something to deny.
pub type astrid_gate_kind_t = u32;

/// Gate kind: reading a file or directory (`path` is set).
pub const ASTRID_GATE_FILE_READ: astrid_gate_kind_t = 1;
/// Gate kind: creating, changing or removing a file or directory (`path`).
pub const ASTRID_GATE_FILE_WRITE: astrid_gate_kind_t = 2;
/// Gate kind: an outbound HTTP request (`method`, `url`, `host`, `port`).
pub const ASTRID_GATE_HTTP_REQUEST: astrid_gate_kind_t = 3;
/// Gate kind: an outbound connection (`transport`, `host`, `port`).
pub const ASTRID_GATE_NET_CONNECT: astrid_gate_kind_t = 4;
/// Gate kind: a listener or bound socket (`transport`, `host`, `port`).
pub const ASTRID_GATE_NET_BIND: astrid_gate_kind_t = 5;
/// Gate kind: a name lookup (`host`).
pub const ASTRID_GATE_DNS_LOOKUP: astrid_gate_kind_t = 6;

/// A verdict: what the gate and the accept verifier return, and what
/// `astrid_gate_ticket_resolve` takes. `ASTRID_ALLOW` allows; from the gate,
/// `ASTRID_PENDING` after `astrid_gate_request_defer` waits for the ticket;
/// every other value, unknown ones included, denies.
pub type astrid_verdict_t = u32;

/// Verdict: allow the request.
pub const ASTRID_ALLOW: astrid_verdict_t = 1;
/// Verdict: deny the request. Any value other than the three verdicts is a denial too.
pub const ASTRID_DENY: astrid_verdict_t = 2;
/// Verdict: the answer comes later through the ticket taken with
/// `astrid_gate_request_defer` (without a ticket, PENDING is a denial).
pub const ASTRID_PENDING: astrid_verdict_t = 3;

/// A deferred verdict. An opaque registry handle: thread-safe, answered (and
/// freed) once with `astrid_gate_ticket_resolve` or dropped with
/// `astrid_gate_ticket_free`; afterwards every use is refused with
/// `ASTRID_E_CLOSED`.
pub struct astrid_gate_ticket_t {
    _private: [u8; 0],
}

static TICKETS: Lazy<Registry<Arc<Ticket>>> = Lazy::new(Registry::new);

/// One gate question: an opaque callback request handle. Read it with
/// `astrid_gate_request_info`; answer with the callback's verdict, after
/// `astrid_gate_request_set_reason` or `astrid_gate_request_defer` if
/// wanted. Thread rule: it is valid only on the thread running the gate
/// callback that received it, and only until that callback returns;
/// anywhere else (another thread, or later) every function refuses it with
/// `ASTRID_E_CLOSED` and reads nothing through it. To answer from another
/// thread or later, defer and resolve the ticket.
pub struct astrid_gate_request_t {
    _private: [u8; 0],
}

/// What a gate request asks, filled by `astrid_gate_request_info`.
/// Size-prefixed: set `size = sizeof(astrid_gate_request_info_t)` before the
/// call. Strings are UTF-8 `(ptr, len)` pairs, NOT NUL-terminated, borrowed
/// until the callback returns; fields the kind does not use are `(NULL, 0)`
/// / 0. `path` is the VFS spelling (`cwd://a/b`); `host_path` is the
/// resolved host path, set only for host-directory mounts. `principal` is
/// `(NULL, 0)` for calls without one.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct astrid_gate_request_info_t {
    pub size: usize,
    /// `ASTRID_GATE_*`.
    pub kind: astrid_gate_kind_t,
    /// The port for network kinds, else 0.
    pub port: u16,
    pub capsule: *const libc::c_char,
    pub capsule_len: usize,
    pub principal: *const libc::c_char,
    pub principal_len: usize,
    pub path: *const libc::c_char,
    pub path_len: usize,
    pub host_path: *const libc::c_char,
    pub host_path_len: usize,
    pub method: *const libc::c_char,
    pub method_len: usize,
    pub url: *const libc::c_char,
    pub url_len: usize,
    pub host: *const libc::c_char,
    pub host_len: usize,
    /// `tcp`, `udp` or `unix` for socket kinds.
    pub transport: *const libc::c_char,
    pub transport_len: usize,
    /// The guest call asking (the id its log lines, audit events and result
    /// carry); 0 outside any call. Appended after this struct was first
    /// published: read it only when `size` covers it.
    pub call_id: u64,
}

/// The first published size of `astrid_gate_request_info_t`: the smallest
/// `size` a caller may pass.
const GATE_INFO_MIN_SIZE: usize = std::mem::offset_of!(astrid_gate_request_info_t, call_id);

/// What the library keeps for a request while its callback runs.
struct GateState<'a> {
    info: astrid_gate_request_info_t,
    reason: RefCell<Option<String>>,
    ticket: RefCell<Option<Arc<Ticket>>>,
    deferral: &'a Deferral,
}

/// The gate: returns `ASTRID_ALLOW`, `ASTRID_DENY` or `ASTRID_PENDING`.
/// Runs on a library worker thread (on the thread executing the guest with
/// `ASTRID_RUNTIME_INLINE_CALLBACKS`), possibly concurrently for different
/// calls. It is asked only about requests the capsule's manifest allows.
/// An answer later than the runtime's `gate_timeout_ms` is a denial. The
/// callback must not call blocking astrid functions (they return
/// `ASTRID_E_REENTRANT`). `request` is valid on this thread until the
/// callback returns.
pub type astrid_gate_fn = Option<
    unsafe extern "C" fn(
        user_data: *mut libc::c_void,
        request: *mut astrid_gate_request_t,
    ) -> astrid_verdict_t,
>;

/// Installs the security gate (NULL `gate_fn` removes it: the manifest
/// alone then decides). `finalizer(user_data)` runs exactly once, when the
/// gate is replaced or the runtime is freed and no call uses it any more.
/// Errors: `ASTRID_E_INVALID_ARGUMENT` (NULL runtime), `ASTRID_E_CLOSED`.
/// When the call fails, `finalizer` is NOT run: `user_data` stays the
/// caller's. Thread-safe.
#[no_mangle]
pub extern "C" fn astrid_runtime_set_gate(
    rt: *mut astrid_runtime_t,
    gate_fn: astrid_gate_fn,
    user_data: *mut libc::c_void,
    finalizer: astrid_finalizer_fn,
    err: *mut *mut astrid_error_t,
) -> astrid_status_t {
    install_hook(
        rt,
        gate_fn,
        user_data,
        finalizer,
        err,
        Runtime::set_gate,
        |callback| -> GateFn {
            Arc::new(move |request: &GateRequest, deferral: &Deferral| {
                let host_path = request.host_path.as_ref().and_then(|p| p.to_str());
                let (capsule, capsule_len) = view(&request.capsule);
                let (principal, principal_len) = opt_view(request.principal.as_deref());
                let (path, path_len) = opt_view(request.path.as_deref());
                let (host_path, host_path_len) = opt_view(host_path);
                let (method, method_len) = opt_view(request.method.as_deref());
                let (url, url_len) = opt_view(request.url.as_deref());
                let (host, host_len) = opt_view(request.host.as_deref());
                let (transport, transport_len) = opt_view(request.transport);
                let state = GateState {
                    info: astrid_gate_request_info_t {
                        size: std::mem::size_of::<astrid_gate_request_info_t>(),
                        kind: request.kind as astrid_gate_kind_t,
                        port: request.port,
                        capsule,
                        capsule_len,
                        principal,
                        principal_len,
                        path,
                        path_len,
                        host_path,
                        host_path_len,
                        method,
                        method_len,
                        url,
                        url_len,
                        host,
                        host_len,
                        transport,
                        transport_len,
                        call_id: request.call_id,
                    },
                    reason: RefCell::new(None),
                    ticket: RefCell::new(None),
                    deferral,
                };
                // SAFETY: the embedder's function with its own user_data and a
                // request handle that is live on this thread during the call.
                let verdict = with_request(&state, RequestKind::Gate, |handle| unsafe {
                    (callback.function)(callback.user_data, handle.cast())
                });
                let reason = state.reason.take();
                match verdict {
                    ASTRID_ALLOW => GateAnswer::Decided(Verdict {
                        allowed: true,
                        reason,
                    }),
                    ASTRID_PENDING => match state.ticket.take() {
                        Some(ticket) => GateAnswer::Pending(ticket),
                        None => GateAnswer::Decided(Verdict::deny(
                            "the gate answered PENDING without deferring",
                        )),
                    },
                    ASTRID_DENY => GateAnswer::Decided(Verdict {
                        allowed: false,
                        reason,
                    }),
                    other => GateAnswer::Decided(Verdict::deny(format!(
                        "the gate answered {other}, which is not a verdict"
                    ))),
                }
            })
        },
    )
}

/// Fills `*out_info` with what `request` asks (see
/// `astrid_gate_request_info_t`; set `out_info->size` first). Errors:
/// `ASTRID_E_INVALID_ARGUMENT` (NULL, `out_info->size` too small),
/// `ASTRID_E_CLOSED` (not on the callback's thread, or after it returned).
#[no_mangle]
pub extern "C" fn astrid_gate_request_info(
    request: *const astrid_gate_request_t,
    out_info: *mut astrid_gate_request_info_t,
    err: *mut *mut astrid_error_t,
) -> astrid_status_t {
    guard(err, || {
        // SAFETY: gate request handles are registered with a GateState.
        let info = unsafe {
            on_request::<GateState<'_>, _>(request.cast(), RequestKind::Gate, "request", |state| {
                Ok(state.info)
            })?
        };
        // SAFETY: NULL or the caller's writable size-prefixed struct.
        unsafe { write_sized(out_info, info, GATE_INFO_MIN_SIZE, "out_info") }
    })
}

/// Attaches a reason to the verdict (copied; a second call replaces the
/// first). It reaches the audit callback, never the guest. Errors:
/// `ASTRID_E_INVALID_ARGUMENT` (NULL request, or NULL reason with a
/// length), `ASTRID_E_UTF8`, `ASTRID_E_CLOSED` (not on the callback's
/// thread, or after it returned).
#[no_mangle]
pub extern "C" fn astrid_gate_request_set_reason(
    request: *mut astrid_gate_request_t,
    reason: *const libc::c_char,
    reason_len: usize,
    err: *mut *mut astrid_error_t,
) -> astrid_status_t {
    guard(err, || {
        // SAFETY: gate request handles are registered with a GateState.
        unsafe {
            on_request::<GateState<'_>, _>(
                request.cast_const().cast(),
                RequestKind::Gate,
                "request",
                |state| {
                    // SAFETY: caller contract for (ptr, len) strings.
                    let text = super::str_arg(reason, reason_len, "reason")?;
                    *state.reason.borrow_mut() = Some(text.to_string());
                    Ok(())
                },
            )
        }
    })
}

/// Defers the verdict: `*out_ticket` receives a ticket the embedder answers
/// later, from any thread, with `astrid_gate_ticket_resolve` (or drops with
/// `astrid_gate_ticket_free`, a denial); the callback then returns
/// `ASTRID_PENDING`. The waiting call stays cancellable and is still bounded
/// by the gate deadline. A second defer replaces the first ticket (which
/// then only denies). Errors: `ASTRID_E_INVALID_ARGUMENT` (NULL),
/// `ASTRID_E_CLOSED` (not on the callback's thread, or after it returned).
#[no_mangle]
pub extern "C" fn astrid_gate_request_defer(
    request: *mut astrid_gate_request_t,
    out_ticket: *mut *mut astrid_gate_ticket_t,
    err: *mut *mut astrid_error_t,
) -> astrid_status_t {
    guard(err, || {
        non_null(out_ticket, "out_ticket")?;
        // SAFETY: gate request handles are registered with a GateState.
        unsafe {
            on_request::<GateState<'_>, _>(
                request.cast_const().cast(),
                RequestKind::Gate,
                "request",
                |state| {
                    let ticket = state.deferral.ticket();
                    let id = TICKETS.insert(ticket.clone());
                    *state.ticket.borrow_mut() = Some(ticket);
                    // SAFETY: non-NULL, writable out-parameter.
                    *out_ticket = id as *mut astrid_gate_ticket_t;
                    Ok(())
                },
            )
        }
    })
}

/// Answers a deferred request with `ASTRID_ALLOW` or `ASTRID_DENY` (anything
/// else denies) and an optional reason (`(NULL, 0)` for none), and frees the
/// ticket. Thread-safe. Resolving after the call gave up (deadline, cancel,
/// unload) is harmless. Errors: `ASTRID_E_INVALID_ARGUMENT` (NULL),
/// `ASTRID_E_CLOSED` (already resolved or freed; nothing happens),
/// `ASTRID_E_UTF8` (the reason; the ticket is then still denied and freed).
#[no_mangle]
pub extern "C" fn astrid_gate_ticket_resolve(
    ticket: *mut astrid_gate_ticket_t,
    verdict: astrid_verdict_t,
    reason: *const libc::c_char,
    reason_len: usize,
    err: *mut *mut astrid_error_t,
) -> astrid_status_t {
    guard(err, || {
        non_null(ticket, "ticket")?;
        let entry = TICKETS
            .remove(ticket as usize)
            .ok_or_else(|| Error::closed("`ticket` was already resolved or freed"))?;
        // SAFETY: caller contract for (ptr, len) strings.
        let reason = match unsafe { super::opt_str_arg(reason, reason_len, "reason") } {
            Ok(reason) => reason.map(str::to_string),
            Err(e) => {
                entry.resolve(Verdict::deny("the deferred reason was not UTF-8"));
                return Err(e);
            }
        };
        entry.resolve(Verdict {
            allowed: verdict == ASTRID_ALLOW,
            reason,
        });
        Ok(())
    })
}

/// Frees an unresolved ticket: the waiting request is denied. NULL and
/// already-freed tickets are ignored. Thread-safe.
#[no_mangle]
pub extern "C" fn astrid_gate_ticket_free(ticket: *mut astrid_gate_ticket_t) {
    let _ = guard(std::ptr::null_mut(), || {
        if let Some(entry) = TICKETS.remove(ticket as usize) {
            entry.resolve(Verdict::deny("the ticket was freed unresolved"));
        }
        Ok(())
    });
}
