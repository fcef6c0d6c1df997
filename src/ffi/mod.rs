//! The C API. Every `unsafe` block and `extern "C"` function of the library
//! lives under this module, one file per header area. Each exported function
//! runs inside [`guard`], which contains panics, checks pointers and
//! converts errors into `astrid_error_t` objects.

// C names for C types; entry points take raw pointers whose validity is the
// C caller's documented contract, so they are `extern "C" fn`, not `unsafe fn`.
#![allow(non_camel_case_types, clippy::not_unsafe_ptr_arg_deref)]

pub mod capsule;
pub mod errors;
pub mod gate;
pub mod ipc;
pub mod kv;
pub mod net;
pub mod runtime;
pub mod vfs;

use crate::error::{Code, Error, Result};
use errors::astrid_error_t;
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};

/// Status returned by every fallible function: `ASTRID_OK` (0) or a negative
/// `ASTRID_E_*` code. Codes are stable and never renumbered.
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
/// The runtime or capsule has already been shut down / unloaded / freed.
pub const ASTRID_E_CLOSED: astrid_status_t = -13;
/// A blocking API call was made from inside an astrid callback.
pub const ASTRID_E_REENTRANT: astrid_status_t = -14;
/// Host I/O failure.
pub const ASTRID_E_IO: astrid_status_t = -15;
/// A Rust panic was caught at the boundary (a bug: please report it).
pub const ASTRID_E_PANIC: astrid_status_t = -16;
/// Anything else.
pub const ASTRID_E_INTERNAL: astrid_status_t = -17;

/// Pass as a string length to mean "NUL-terminated: measure it".
pub const ASTRID_NTS: usize = usize::MAX;

/// Runs an API body: panics become `ASTRID_E_PANIC`, errors are written to
/// `err` (when non-NULL) and returned as a status.
pub(crate) fn guard(
    err: *mut *mut astrid_error_t,
    body: impl FnOnce() -> Result<()>,
) -> astrid_status_t {
    let outcome = catch_unwind(AssertUnwindSafe(body)).unwrap_or_else(|panic| {
        let text = panic
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown panic payload".to_string());
        Err(Error::new(
            Code::Panic,
            format!("a Rust panic was caught at the API boundary: {text}"),
        ))
    });
    match outcome {
        Ok(()) => ASTRID_OK,
        Err(error) => {
            let code = error.code() as i32;
            if !err.is_null() {
                // SAFETY: the caller passes either NULL or a writable pointer.
                unsafe { *err = errors::into_raw(error) };
            }
            code
        }
    }
}

/// Borrows a `(ptr, len)` string as UTF-8. `(NULL, 0)` is the empty string;
/// `len == ASTRID_NTS` measures a NUL-terminated string.
///
/// # Safety
/// `ptr` must be NULL or point to `len` readable bytes (or a NUL-terminated
/// string when `len == ASTRID_NTS`) that outlive the returned borrow.
pub(crate) unsafe fn str_arg<'a>(
    ptr: *const libc::c_char,
    len: usize,
    what: &str,
) -> Result<&'a str> {
    let bytes = unsafe { bytes_arg(ptr.cast(), len, what)? };
    // Actions, topics and names are nearly always short ASCII: checking
    // that is a few instructions, where the full decoder costs ~80.
    if bytes.len() <= 64 && bytes.is_ascii() {
        // SAFETY: ASCII is valid UTF-8.
        return Ok(unsafe { std::str::from_utf8_unchecked(bytes) });
    }
    std::str::from_utf8(bytes)
        .map_err(|e| Error::new(Code::Utf8, format!("`{what}` is not valid UTF-8")).caused_by(e))
}

/// Like [`str_arg`] but NULL means "absent".
///
/// # Safety
/// As for [`str_arg`].
pub(crate) unsafe fn opt_str_arg<'a>(
    ptr: *const libc::c_char,
    len: usize,
    what: &str,
) -> Result<Option<&'a str>> {
    if ptr.is_null() {
        return Ok(None);
    }
    unsafe { str_arg(ptr, len, what) }.map(Some)
}

/// Borrows a `(ptr, len)` byte buffer. `(NULL, 0)` is the empty buffer.
///
/// # Safety
/// `ptr` must be NULL or point to `len` readable bytes.
pub(crate) unsafe fn bytes_arg<'a>(ptr: *const u8, len: usize, what: &str) -> Result<&'a [u8]> {
    if ptr.is_null() {
        return if len == 0 || len == ASTRID_NTS {
            Ok(&[])
        } else {
            Err(Error::invalid_argument(format!(
                "`{what}` is NULL with a non-zero length"
            )))
        };
    }
    if len == ASTRID_NTS {
        // SAFETY: the caller promises a NUL-terminated string.
        return Ok(unsafe { std::ffi::CStr::from_ptr(ptr.cast()) }.to_bytes());
    }
    if len > isize::MAX as usize {
        return Err(Error::invalid_argument(format!(
            "`{what}` length is too large"
        )));
    }
    // SAFETY: the caller promises `len` readable bytes.
    Ok(unsafe { std::slice::from_raw_parts(ptr, len) })
}

/// Fails with `ASTRID_E_INVALID_ARGUMENT` when a required pointer is NULL.
pub(crate) fn non_null<T>(ptr: *const T, what: &str) -> Result<()> {
    if ptr.is_null() {
        return Err(Error::invalid_argument(format!(
            "`{what}` must not be NULL"
        )));
    }
    Ok(())
}

/// Reads a size-prefixed struct, refusing a `size` smaller than this
/// library's version of it (fields are append-only).
///
/// # Safety
/// `ptr` must be NULL or point to a readable struct whose first field is `size_t size`.
pub(crate) unsafe fn sized_struct<'a, T>(ptr: *const T, what: &str) -> Result<Option<&'a T>> {
    if ptr.is_null() {
        return Ok(None);
    }
    // SAFETY: the first field of every size-prefixed struct is a size_t.
    let size = unsafe { *ptr.cast::<usize>() };
    if size < std::mem::size_of::<T>() {
        return Err(Error::invalid_argument(format!(
            "`{what}.size` is {size}, smaller than this library's {} (set it with sizeof or the *_init function)",
            std::mem::size_of::<T>()
        )));
    }
    Ok(Some(unsafe { &*ptr }))
}

/// Handles are opaque ids looked up in a registry, never dereferenced, so a
/// freed or forged handle is reported as `ASTRID_E_CLOSED` instead of being
/// a use-after-free.
pub(crate) struct Registry<T> {
    entries: RwLock<HashMap<usize, Arc<T>, BuildHasherDefault<HandleHasher>>>,
}

/// Handle ids are unique counters: hashing them is wasted work on the hot
/// path of every call, so the id (spread a little) is its own hash.
#[derive(Default)]
pub(crate) struct HandleHasher(u64);

impl Hasher for HandleHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 << 8 | u64::from(b)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }

    fn write_usize(&mut self, id: usize) {
        self.0 = (id as u64 >> 4).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

static NEXT_HANDLE: AtomicUsize = AtomicUsize::new(0x10_0000);

impl<T> Registry<T> {
    pub(crate) fn new() -> Self {
        Registry {
            entries: RwLock::new(HashMap::default()),
        }
    }

    pub(crate) fn insert(&self, value: T) -> usize {
        let id = NEXT_HANDLE.fetch_add(16, Ordering::Relaxed);
        self.entries
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id, Arc::new(value));
        id
    }

    pub(crate) fn get(&self, id: usize, what: &str) -> Result<Arc<T>> {
        if id == 0 {
            return Err(Error::invalid_argument(format!(
                "`{what}` must not be NULL"
            )));
        }
        self.entries
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&id)
            .cloned()
            .ok_or_else(|| {
                Error::closed(format!(
                    "`{what}` was already freed or never created by this library"
                ))
            })
    }

    pub(crate) fn remove(&self, id: usize) -> Option<Arc<T>> {
        self.entries
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&id)
    }
}

/// An embedder callback triple: function, `user_data`, optional finalizer
/// run exactly once when the library drops the callback.
pub(crate) struct Callback<F: Copy> {
    pub(crate) function: F,
    pub(crate) user_data: *mut libc::c_void,
    finalizer: Option<unsafe extern "C" fn(*mut libc::c_void)>,
}

// SAFETY: the header documents that callbacks and their user_data are used
// from library threads, concurrently; the embedder accepts that contract.
unsafe impl<F: Copy> Send for Callback<F> {}
unsafe impl<F: Copy> Sync for Callback<F> {}

impl<F: Copy> Callback<F> {
    pub(crate) fn new(
        function: F,
        user_data: *mut libc::c_void,
        finalizer: Option<unsafe extern "C" fn(*mut libc::c_void)>,
    ) -> Self {
        Callback {
            function,
            user_data,
            finalizer,
        }
    }
}

impl<F: Copy> Callback<F> {
    /// Gives `user_data` back to the embedder: the finalizer will not run.
    /// For calls that fail after building the callback (the header promises
    /// that a failed call leaves `user_data` with the caller).
    pub(crate) fn disarm(&mut self) {
        self.finalizer = None;
    }
}

/// Runs `install`, which hands `owner` (something holding the callback) to
/// the library; if it fails and nothing else kept `owner`, the callback is
/// disarmed so the failed call does not run the embedder's finalizer.
pub(crate) fn install_or_disarm<T>(
    owner: Arc<T>,
    disarm: impl FnOnce(&mut T),
    install: impl FnOnce(Arc<T>) -> Result<()>,
) -> Result<()> {
    let kept = owner.clone();
    let outcome = install(owner);
    if outcome.is_err() {
        if let Ok(mut alone) = Arc::try_unwrap(kept) {
            disarm(&mut alone);
        }
    }
    outcome
}

impl<F: Copy> Drop for Callback<F> {
    fn drop(&mut self) {
        if let Some(finalizer) = self.finalizer.take() {
            let user_data = self.user_data;
            // SAFETY: the embedder registered this finalizer for user_data.
            crate::handoff::run_callback(|| unsafe { finalizer(user_data) });
        }
    }
}

/// `(ptr, len)` of a Rust string for a borrowed C view.
pub(crate) fn view(s: &str) -> (*const libc::c_char, usize) {
    (s.as_ptr().cast(), s.len())
}

/// Same, with `(NULL, 0)` for absent.
pub(crate) fn opt_view(s: Option<&str>) -> (*const libc::c_char, usize) {
    s.map_or((std::ptr::null(), 0), view)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_constants_match_codes() {
        let pairs = [
            (ASTRID_E_INVALID_ARGUMENT, Code::InvalidArgument),
            (ASTRID_E_UTF8, Code::Utf8),
            (ASTRID_E_MANIFEST, Code::Manifest),
            (ASTRID_E_COMPILE, Code::Compile),
            (ASTRID_E_LINK, Code::Link),
            (ASTRID_E_NOT_FOUND, Code::NotFound),
            (ASTRID_E_DENIED, Code::Denied),
            (ASTRID_E_TIMEOUT, Code::Timeout),
            (ASTRID_E_CANCELLED, Code::Cancelled),
            (ASTRID_E_OUT_OF_FUEL, Code::OutOfFuel),
            (ASTRID_E_RESOURCE_LIMIT, Code::ResourceLimit),
            (ASTRID_E_TRAP, Code::Trap),
            (ASTRID_E_CLOSED, Code::Closed),
            (ASTRID_E_REENTRANT, Code::Reentrant),
            (ASTRID_E_IO, Code::Io),
            (ASTRID_E_PANIC, Code::Panic),
            (ASTRID_E_INTERNAL, Code::Internal),
        ];
        for (status, code) in pairs {
            assert_eq!(status, code as i32, "{code:?}");
        }
    }
}
