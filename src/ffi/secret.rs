//! The secret provider: the embedder's answer to a capsule's `get-config` of
//! a key declared `secret`, asked on every read and never cached or logged.

use super::errors::astrid_error_t;
use super::runtime::{astrid_finalizer_fn, astrid_runtime_t, install_hook};
use super::{
    astrid_status_t, guard, on_request, opt_view, view, with_request, write_sized, RequestKind,
};
use crate::runtime::{Runtime, SecretProvider, SecretRequest};
use std::cell::RefCell;
use std::sync::Arc;

/// A request for a secret config value (an `[env]` key of type `secret`):
/// an opaque callback request handle. Read it with
/// `astrid_secret_request_info`, answer it with
/// `astrid_secret_request_set_value`. Thread rule: it is valid only on the
/// thread running the secret callback that received it, and only until that
/// callback returns; anywhere else (another thread, or later) every function
/// refuses it with `ASTRID_E_CLOSED` and reads nothing through it.
pub struct astrid_secret_request_t {
    _private: [u8; 0],
}

/// What a secret request asks, filled by `astrid_secret_request_info`.
/// Size-prefixed: set `size = sizeof(astrid_secret_request_info_t)` before
/// the call. Strings are UTF-8, NOT NUL-terminated, borrowed until the
/// callback returns; `principal` is `(NULL, 0)` when the call has none.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct astrid_secret_request_info_t {
    pub size: usize,
    pub capsule: *const libc::c_char,
    pub capsule_len: usize,
    pub capsule_id: *const libc::c_char,
    pub capsule_id_len: usize,
    pub principal: *const libc::c_char,
    pub principal_len: usize,
    pub key: *const libc::c_char,
    pub key_len: usize,
    /// The guest call this belongs to (the id its log lines, audit events
    /// and result carry); 0 outside any call. Appended after this struct was
    /// first published: read it only when `size` covers it.
    pub call_id: u64,
}

/// The first published size of `astrid_secret_request_info_t`: the
/// smallest `size` a caller may pass.
const SECRET_INFO_MIN_SIZE: usize = std::mem::offset_of!(astrid_secret_request_info_t, call_id);

/// What the library keeps for a secret request while its callback runs.
struct SecretState {
    info: astrid_secret_request_info_t,
    answer: RefCell<Option<String>>,
}

/// Secret provider callback. Runs on the thread executing the guest, possibly
/// concurrently, on every `get-config` of a secret key (values are never
/// cached or logged). Return `ASTRID_OK` after setting a value (or without
/// one: the guest reads `none`); any other status makes the guest's
/// `get-config` fail with `unknown("secret provider failed")`. `request` is
/// valid on this thread until the callback returns.
pub type astrid_secret_fn = Option<
    unsafe extern "C" fn(
        user_data: *mut libc::c_void,
        request: *mut astrid_secret_request_t,
    ) -> astrid_status_t,
>;

/// Installs the secret provider (NULL `secret_fn` removes it). Ownership of
/// `user_data` and `finalizer`, and errors, as for
/// `astrid_runtime_set_log_callback`. Without a provider, secret keys read
/// as `none`.
#[no_mangle]
pub extern "C" fn astrid_runtime_set_secret_callback(
    rt: *mut astrid_runtime_t,
    secret_fn: astrid_secret_fn,
    user_data: *mut libc::c_void,
    finalizer: astrid_finalizer_fn,
    err: *mut *mut astrid_error_t,
) -> astrid_status_t {
    install_hook(
        rt,
        secret_fn,
        user_data,
        finalizer,
        err,
        Runtime::set_secret_provider,
        |callback| -> SecretProvider {
            Arc::new(move |request: &SecretRequest<'_>| {
                let (capsule, capsule_len) = view(request.capsule);
                let (capsule_id, capsule_id_len) = view(request.capsule_id);
                let (principal, principal_len) = opt_view(request.principal);
                let (key, key_len) = view(request.key);
                let state = SecretState {
                    info: astrid_secret_request_info_t {
                        size: std::mem::size_of::<astrid_secret_request_info_t>(),
                        capsule,
                        capsule_len,
                        capsule_id,
                        capsule_id_len,
                        principal,
                        principal_len,
                        key,
                        key_len,
                        call_id: crate::handoff::current_call_id(),
                    },
                    answer: RefCell::new(None),
                };
                // SAFETY: the embedder's function with its own user_data and a
                // request handle that is live on this thread during the call.
                let status = with_request(&state, RequestKind::Secret, |handle| unsafe {
                    (callback.function)(callback.user_data, handle.cast())
                });
                if status == super::ASTRID_OK {
                    Ok(state.answer.take())
                } else {
                    Err(())
                }
            })
        },
    )
}

/// Fills `*out_info` with what `request` asks (see
/// `astrid_secret_request_info_t`; set `out_info->size` first). Errors:
/// `ASTRID_E_INVALID_ARGUMENT` (NULL, `out_info->size` too small),
/// `ASTRID_E_CLOSED` (not on the callback's thread, or after it returned).
#[no_mangle]
pub extern "C" fn astrid_secret_request_info(
    request: *const astrid_secret_request_t,
    out_info: *mut astrid_secret_request_info_t,
    err: *mut *mut astrid_error_t,
) -> astrid_status_t {
    guard(err, || {
        // SAFETY: secret request handles are registered with a SecretState.
        let info = unsafe {
            on_request::<SecretState, _>(request.cast(), RequestKind::Secret, "request", |state| {
                Ok(state.info)
            })?
        };
        // SAFETY: NULL or the caller's writable size-prefixed struct.
        unsafe { write_sized(out_info, info, SECRET_INFO_MIN_SIZE, "out_info") }
    })
}

/// Sets the answer of a secret request (copied; a second call replaces the
/// first). Errors: `ASTRID_E_INVALID_ARGUMENT` (NULL request, or NULL value
/// with a length), `ASTRID_E_UTF8`, `ASTRID_E_CLOSED` (not on the
/// callback's thread, or after it returned).
#[no_mangle]
pub extern "C" fn astrid_secret_request_set_value(
    request: *mut astrid_secret_request_t,
    value: *const libc::c_char,
    value_len: usize,
    err: *mut *mut astrid_error_t,
) -> astrid_status_t {
    guard(err, || {
        // SAFETY: secret request handles are registered with a SecretState.
        unsafe {
            on_request::<SecretState, _>(
                request.cast_const().cast(),
                RequestKind::Secret,
                "request",
                |state| {
                    // SAFETY: caller contract for (ptr, len) strings.
                    let text = super::str_arg(value, value_len, "value")?;
                    *state.answer.borrow_mut() = Some(text.to_string());
                    Ok(())
                },
            )
        }
    })
}
