//! Error objects (`astrid_error_t`): a code and a message with its cause chain.

use super::astrid_status_t;
use crate::error::Error;
use std::ffi::CString;

/// A rich error: an `ASTRID_E_*` code and a message (with its causes).
/// Owned by the caller once returned; free it with `astrid_error_free`.
pub struct astrid_error_t {
    code: astrid_status_t,
    message: CString,
}

pub(crate) fn into_raw(error: Error) -> *mut astrid_error_t {
    let text = error.full_message().replace('\0', "\\0");
    Box::into_raw(Box::new(astrid_error_t {
        code: error.code() as i32,
        message: CString::new(text).unwrap_or_default(),
    }))
}

/// The error's `ASTRID_E_*` code. NULL gives `ASTRID_E_INVALID_ARGUMENT`.
/// Thread-safe; never fails otherwise.
#[no_mangle]
pub extern "C" fn astrid_error_code(err: *const astrid_error_t) -> astrid_status_t {
    if err.is_null() {
        return super::ASTRID_E_INVALID_ARGUMENT;
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
