//! Networking over C: the accept verifier that screens connections to a
//! capsule's unix listener (host ABI §2.6), and the runtime flags that
//! widen binds and enable `wasi:sockets`.

use super::errors::astrid_error_t;
use super::gate::{astrid_verdict_t, ASTRID_ALLOW};
use super::runtime::{
    astrid_finalizer_fn, astrid_runtime_t, install_hook, ASTRID_RUNTIME_ALLOW_ANY_BIND,
    ASTRID_RUNTIME_ALLOW_LOOPBACK, ASTRID_RUNTIME_WASI_SOCKETS,
};
use super::{astrid_status_t, guard, on_request, view, with_request, write_sized, RequestKind};
use crate::gate::{AcceptRequest, AcceptVerdict, AcceptVerifier};
use crate::runtime::{Runtime, FLAG_ALLOW_ANY_BIND, FLAG_ALLOW_LOOPBACK, FLAG_WASI_SOCKETS};
use std::cell::RefCell;
use std::sync::Arc;

const _: () = assert!(
    ASTRID_RUNTIME_ALLOW_LOOPBACK == FLAG_ALLOW_LOOPBACK
        && ASTRID_RUNTIME_ALLOW_ANY_BIND == FLAG_ALLOW_ANY_BIND
        && ASTRID_RUNTIME_WASI_SOCKETS == FLAG_WASI_SOCKETS
);

/// A local peer connecting to a capsule's unix listener: an opaque callback
/// request handle. It already passed the OS check (same user id as this
/// process). Read it with `astrid_accept_request_info`; name the peer's
/// principal with `astrid_accept_request_set_principal`. Thread rule: it is
/// valid only on the thread running the verifier callback that received it,
/// and only until that callback returns; anywhere else (another thread, or
/// later) every function refuses it with `ASTRID_E_CLOSED` and reads
/// nothing through it.
pub struct astrid_accept_request_t {
    _private: [u8; 0],
}

/// Who is connecting, filled by `astrid_accept_request_info`. Size-prefixed:
/// set `size = sizeof(astrid_accept_request_info_t)` before the call.
/// `capsule` is UTF-8, NOT NUL-terminated, borrowed until the callback
/// returns.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct astrid_accept_request_info_t {
    pub size: usize,
    /// The accepting capsule's name.
    pub capsule: *const libc::c_char,
    pub capsule_len: usize,
    /// The peer's process id, or -1 when the OS did not report it.
    pub pid: i64,
    pub uid: u32,
    pub gid: u32,
    /// The guest call that accepts (the id its log lines, audit events
    /// and result carry); 0 outside any call. Appended after this struct was
    /// first published: read it only when `size` covers it.
    pub call_id: u64,
}

/// The first published size of `astrid_accept_request_info_t`: the
/// smallest `size` a caller may pass.
const ACCEPT_INFO_MIN_SIZE: usize = std::mem::offset_of!(astrid_accept_request_info_t, call_id);

/// The accept verifier: returns `ASTRID_ALLOW` to hand the connection to
/// the capsule (optionally naming its verified principal with
/// `astrid_accept_request_set_principal` first); any other value closes the
/// connection before the guest sees it. Runs on the thread of the guest
/// call that accepts, so it must answer quickly and must not call blocking
/// astrid functions. A panic or abort-free failure inside is a refusal.
/// `request` is valid on this thread until the callback returns.
pub type astrid_accept_verifier_fn = Option<
    unsafe extern "C" fn(
        user_data: *mut libc::c_void,
        request: *mut astrid_accept_request_t,
    ) -> astrid_verdict_t,
>;

/// What the library keeps for an accept request while its callback runs.
struct AcceptState {
    info: astrid_accept_request_info_t,
    principal: RefCell<Option<String>>,
}

/// Installs the accept verifier (NULL `verifier_fn` removes it: connections
/// from the same OS user are then accepted without a principal).
/// `finalizer(user_data)` runs exactly once, when the verifier is replaced
/// or the runtime is freed and no call uses it any more; when this call
/// fails it is NOT run. Errors: `ASTRID_E_INVALID_ARGUMENT` (NULL runtime),
/// `ASTRID_E_CLOSED`. Thread-safe.
#[no_mangle]
pub extern "C" fn astrid_runtime_set_accept_verifier(
    rt: *mut astrid_runtime_t,
    verifier_fn: astrid_accept_verifier_fn,
    user_data: *mut libc::c_void,
    finalizer: astrid_finalizer_fn,
    err: *mut *mut astrid_error_t,
) -> astrid_status_t {
    install_hook(
        rt,
        verifier_fn,
        user_data,
        finalizer,
        err,
        Runtime::set_accept_verifier,
        |callback| -> AcceptVerifier {
            Arc::new(move |request: &AcceptRequest<'_>| {
                let (capsule, capsule_len) = view(request.capsule);
                let state = AcceptState {
                    info: astrid_accept_request_info_t {
                        size: std::mem::size_of::<astrid_accept_request_info_t>(),
                        capsule,
                        capsule_len,
                        pid: request.pid.map_or(-1, i64::from),
                        uid: request.uid,
                        gid: request.gid,
                        call_id: crate::handoff::current_call_id(),
                    },
                    principal: RefCell::new(None),
                };
                // SAFETY: the embedder's function with its own user_data and a
                // request handle that is live on this thread during the call.
                let verdict = with_request(&state, RequestKind::Accept, |handle| unsafe {
                    (callback.function)(callback.user_data, handle.cast())
                });
                if verdict == ASTRID_ALLOW {
                    AcceptVerdict::Allow {
                        principal: state.principal.take(),
                    }
                } else {
                    AcceptVerdict::Refuse
                }
            })
        },
    )
}

/// Fills `*out_info` with who is connecting (see
/// `astrid_accept_request_info_t`; set `out_info->size` first). Errors:
/// `ASTRID_E_INVALID_ARGUMENT` (NULL, `out_info->size` too small),
/// `ASTRID_E_CLOSED` (not on the callback's thread, or after it returned).
#[no_mangle]
pub extern "C" fn astrid_accept_request_info(
    request: *const astrid_accept_request_t,
    out_info: *mut astrid_accept_request_info_t,
    err: *mut *mut astrid_error_t,
) -> astrid_status_t {
    guard(err, || {
        // SAFETY: accept request handles are registered with an AcceptState.
        let info = unsafe {
            on_request::<AcceptState, _>(request.cast(), RequestKind::Accept, "request", |state| {
                Ok(state.info)
            })?
        };
        // SAFETY: NULL or the caller's writable size-prefixed struct.
        unsafe { write_sized(out_info, info, ACCEPT_INFO_MIN_SIZE, "out_info") }
    })
}

/// Names the verified principal of the connection being accepted (copied;
/// 1..=128 bytes of UTF-8 without control characters; a second call
/// replaces the first). The capsule reads it with `connection-principal`.
/// Errors: `ASTRID_E_INVALID_ARGUMENT` (NULL, or not a valid principal),
/// `ASTRID_E_UTF8`, `ASTRID_E_CLOSED` (not on the callback's thread, or
/// after it returned).
#[no_mangle]
pub extern "C" fn astrid_accept_request_set_principal(
    request: *mut astrid_accept_request_t,
    principal: *const libc::c_char,
    principal_len: usize,
    err: *mut *mut astrid_error_t,
) -> astrid_status_t {
    guard(err, || {
        // SAFETY: accept request handles are registered with an AcceptState.
        unsafe {
            on_request::<AcceptState, _>(
                request.cast_const().cast(),
                RequestKind::Accept,
                "request",
                |state| {
                    // SAFETY: caller contract for (ptr, len) strings.
                    let text = super::str_arg(principal, principal_len, "principal")?;
                    crate::capsule::validate_principal(text)?;
                    *state.principal.borrow_mut() = Some(text.to_string());
                    Ok(())
                },
            )
        }
    })
}

/// Assigns the socket path that `bind-unix` binds for capsules named
/// `name` loaded after this call (UTF-8 `(ptr, len)` pairs; a NULL `path`
/// removes the assignment). The guest never sees the path; a stale socket
/// file left there is replaced when the capsule binds, any other file makes
/// the bind fail with `address-in-use`. Errors: `ASTRID_E_INVALID_ARGUMENT`
/// (NULL runtime, empty name, a path longer than 107 bytes), `ASTRID_E_UTF8`,
/// `ASTRID_E_CLOSED`. Thread-safe.
#[no_mangle]
pub extern "C" fn astrid_runtime_assign_unix_socket(
    rt: *mut astrid_runtime_t,
    name: *const libc::c_char,
    name_len: usize,
    path: *const libc::c_char,
    path_len: usize,
    err: *mut *mut astrid_error_t,
) -> astrid_status_t {
    guard(err, || {
        let runtime = super::runtime::runtime_from(rt)?;
        // SAFETY: caller contract for (ptr, len) strings.
        let name = unsafe { super::str_arg(name, name_len, "name")? };
        // SAFETY: as above.
        let path = unsafe { super::opt_str_arg(path, path_len, "path")? };
        runtime.assign_unix_socket(name, path.map(Into::into))
    })
}
