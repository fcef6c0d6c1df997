//! Status codes (`astrid_status_t`) and error objects (`astrid_error_t`): a
//! code and a message with its cause chain.

use crate::error::Error;
use std::ffi::CString;

/// Status returned by every fallible function: `ASTRID_OK` (0) or a negative
/// `ASTRID_E_*` code. Codes are stable and never renumbered; new ones are
/// appended. Every function that returns it also takes a last parameter
/// `astrid_error_t **err`: NULL, or where a failure stores an error object.
pub type astrid_status_t = i32;

/// Success.
pub const ASTRID_OK: astrid_status_t = 0;
/// NULL where not allowed, bad length, bad flag, struct `size` too small.
pub const ASTRID_E_INVALID_ARGUMENT: astrid_status_t = -1;
/// A string argument is not valid UTF-8.
pub const ASTRID_E_UTF8: astrid_status_t = -2;
/// Capsule.toml missing, unparsable, or with unknown / invalid fields (the message names field and line).
pub const ASTRID_E_MANIFEST: astrid_status_t = -3;
/// The bytes are not a valid WebAssembly component.
pub const ASTRID_E_COMPILE: astrid_status_t = -4;
/// The component imports an interface or version the runtime does not serve (the message names it).
pub const ASTRID_E_LINK: astrid_status_t = -5;
/// File, capsule or export not found.
pub const ASTRID_E_NOT_FOUND: astrid_status_t = -6;
/// Refused by policy (manifest or gate).
pub const ASTRID_E_DENIED: astrid_status_t = -7;
/// A call ran past its wall-clock deadline.
pub const ASTRID_E_TIMEOUT: astrid_status_t = -8;
/// The call was cancelled or the capsule unloaded while it ran.
pub const ASTRID_E_CANCELLED: astrid_status_t = -9;
/// A call exhausted its fuel (instruction budget).
pub const ASTRID_E_OUT_OF_FUEL: astrid_status_t = -10;
/// A memory or table ceiling was hit, or the runtime's instance pool is full.
pub const ASTRID_E_RESOURCE_LIMIT: astrid_status_t = -11;
/// The guest trapped; the message carries the wasm backtrace.
pub const ASTRID_E_TRAP: astrid_status_t = -12;
/// The handle is dead: the runtime, capsule, subscription or ticket was
/// already shut down / unloaded / freed, or a callback request was used
/// outside its callback (after it returned, or from another thread).
pub const ASTRID_E_CLOSED: astrid_status_t = -13;
/// A blocking API call was made from inside an astrid callback.
pub const ASTRID_E_REENTRANT: astrid_status_t = -14;
/// Host I/O failure.
pub const ASTRID_E_IO: astrid_status_t = -15;
/// A Rust panic was caught at the boundary (a bug: please report it).
pub const ASTRID_E_PANIC: astrid_status_t = -16;
/// Anything else.
pub const ASTRID_E_INTERNAL: astrid_status_t = -17;

/// A rich error: an `ASTRID_E_*` code and a message (with its causes).
/// An owned pointer, not a registry handle: once returned it is the
/// caller's, to free exactly once with `astrid_error_free`; using it after
/// that is undefined behaviour. Immutable, so it may be read from any thread.
pub struct astrid_error_t {
    code: astrid_status_t,
    message: CString,
    call_id: u64,
}

pub(crate) fn into_raw(error: Error) -> *mut astrid_error_t {
    let text = error.full_message().replace('\0', "\\0");
    Box::into_raw(Box::new(astrid_error_t {
        code: error.code() as i32,
        message: CString::new(text).unwrap_or_default(),
        call_id: error.call_id(),
    }))
}

/// The id of the guest call that failed (the id its log lines and audit
/// events carry); 0 for an error of no call, for a call that failed before
/// it started (cancelled, unloaded, no free instance in time), and for NULL.
#[no_mangle]
pub extern "C" fn astrid_error_call_id(err: *const astrid_error_t) -> u64 {
    if err.is_null() {
        return 0;
    }
    // SAFETY: non-NULL error pointers come from this library and are live until freed.
    unsafe { (*err).call_id }
}

/// The error's `ASTRID_E_*` code. NULL gives `ASTRID_E_INVALID_ARGUMENT`.
/// Thread-safe; never fails otherwise.
#[no_mangle]
pub extern "C" fn astrid_error_code(err: *const astrid_error_t) -> astrid_status_t {
    if err.is_null() {
        return ASTRID_E_INVALID_ARGUMENT;
    }
    // SAFETY: non-NULL error pointers come from this library and are live until freed.
    unsafe { (*err).code }
}

/// The error's message as a NUL-terminated UTF-8 string: `"<kind>: <what>: <cause>..."`.
/// Borrowed: valid until `astrid_error_free(err)`. NULL gives an empty string.
#[no_mangle]
pub extern "C" fn astrid_error_message(err: *const astrid_error_t) -> *const libc::c_char {
    if err.is_null() {
        return c"".as_ptr();
    }
    // SAFETY: as above.
    unsafe { (*err).message.as_ptr() }
}

/// Frees an error. NULL is a no-op. Freeing twice is undefined behaviour.
#[no_mangle]
pub extern "C" fn astrid_error_free(err: *mut astrid_error_t) {
    if !err.is_null() {
        // SAFETY: the pointer came from `into_raw` and is freed once.
        drop(unsafe { Box::from_raw(err) });
    }
}
