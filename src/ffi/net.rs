//! Networking over C: the accept verifier that screens connections to a
//! capsule's unix listener (host ABI §2.6), and the runtime flags that
//! widen binds and enable `wasi:sockets`.

use super::gate::ASTRID_ALLOW;
use super::runtime::{
    astrid_finalizer_fn, astrid_runtime_t, install_hook, ASTRID_RUNTIME_ALLOW_ANY_BIND,
    ASTRID_RUNTIME_ALLOW_LOOPBACK, ASTRID_RUNTIME_WASI_SOCKETS,
};
use super::{astrid_status_t, guard, non_null, view};
use crate::error::Result;
use crate::gate::{AcceptRequest, AcceptVerdict, AcceptVerifier};
use crate::runtime::{Runtime, FLAG_ALLOW_ANY_BIND, FLAG_ALLOW_LOOPBACK, FLAG_WASI_SOCKETS};
use std::cell::RefCell;
use std::sync::Arc;

const _: () = assert!(
    ASTRID_RUNTIME_ALLOW_LOOPBACK == FLAG_ALLOW_LOOPBACK
        && ASTRID_RUNTIME_ALLOW_ANY_BIND == FLAG_ALLOW_ANY_BIND
        && ASTRID_RUNTIME_WASI_SOCKETS == FLAG_WASI_SOCKETS
);

/// A local peer connecting to a capsule's unix listener, borrowed for the
/// duration of the verifier callback. It already passed the OS check (same
/// user id as this process). `capsule` is UTF-8, not NUL-terminated.
/// `private_` is the library's.
#[repr(C)]
pub struct astrid_accept_request_t {
    pub size: usize,
    pub capsule: *const libc::c_char,
    pub capsule_len: usize,
    /// The peer's process id, or -1 when the OS did not report it.
    pub pid: i64,
    pub uid: u32,
    pub gid: u32,
    pub private_: *mut libc::c_void,
}

/// The accept verifier: returns `ASTRID_ALLOW` to hand the connection to
/// the capsule (optionally naming its verified principal with
/// `astrid_accept_request_set_principal` first); any other value closes the
/// connection before the guest sees it. Runs on the thread of the guest
/// call that accepts, so it must answer quickly and must not call blocking
/// astrid functions. A panic or abort-free failure inside is a refusal.
pub type astrid_accept_verifier_fn = Option<
    unsafe extern "C" fn(
        user_data: *mut libc::c_void,
        request: *mut astrid_accept_request_t,
    ) -> u32,
>;

struct Scratch {
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
) -> astrid_status_t {
    install_hook(
        rt,
        verifier_fn,
        user_data,
        finalizer,
        Runtime::set_accept_verifier,
        |callback| -> AcceptVerifier {
            Arc::new(move |request: &AcceptRequest<'_>| {
                let scratch = Scratch {
                    principal: RefCell::new(None),
                };
                let (capsule, capsule_len) = view(request.capsule);
                let mut c_request = astrid_accept_request_t {
                    size: std::mem::size_of::<astrid_accept_request_t>(),
                    capsule,
                    capsule_len,
                    pid: request.pid.map_or(-1, i64::from),
                    uid: request.uid,
                    gid: request.gid,
                    private_: (&scratch as *const Scratch).cast_mut().cast(),
                };
                // SAFETY: the embedder's function with its own user_data and a
                // request that outlives the call.
                let verdict = unsafe { (callback.function)(callback.user_data, &mut c_request) };
                if verdict == ASTRID_ALLOW {
                    AcceptVerdict::Allow {
                        principal: scratch.principal.take(),
                    }
                } else {
                    AcceptVerdict::Refuse
                }
            })
        },
    )
}

/// Names the verified principal of the connection being accepted (copied;
/// 1..=128 bytes of UTF-8 without control characters). The capsule reads it
/// with `connection-principal`. Only valid inside the verifier callback
/// that received `request`. Errors: `ASTRID_E_INVALID_ARGUMENT` (NULL, or
/// not a valid principal), `ASTRID_E_UTF8`.
#[no_mangle]
pub extern "C" fn astrid_accept_request_set_principal(
    request: *mut astrid_accept_request_t,
    principal: *const libc::c_char,
    principal_len: usize,
) -> astrid_status_t {
    guard(std::ptr::null_mut(), || {
        let scratch = scratch(request)?;
        // SAFETY: caller contract for (ptr, len) strings.
        let text = unsafe { super::str_arg(principal, principal_len, "principal")? };
        crate::capsule::validate_principal(text)?;
        *scratch.principal.borrow_mut() = Some(text.to_string());
        Ok(())
    })
}

fn scratch<'a>(request: *mut astrid_accept_request_t) -> Result<&'a Scratch> {
    non_null(request, "request")?;
    // SAFETY: a live request passed to the verifier by this library.
    let private = unsafe { (*request).private_ }.cast::<Scratch>();
    non_null(private, "request.private_")?;
    // SAFETY: points at the Scratch of the running callback.
    Ok(unsafe { &*private })
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
    err: *mut *mut super::errors::astrid_error_t,
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
