//! The C API. Every `unsafe` block and `extern "C"` function of the library
//! lives under this module, one file per header section (`build.rs` lists
//! them in header order). Each exported function runs inside [`guard`],
//! which contains panics, checks pointers and converts errors into
//! `astrid_error_t` objects.

// C names for C types; entry points take raw pointers whose validity is the
// C caller's documented contract, so they are `extern "C" fn`, not `unsafe fn`.
#![allow(non_camel_case_types, clippy::not_unsafe_ptr_arg_deref)]

pub mod call;
pub mod capsule;
pub mod errors;
pub mod gate;
pub mod ipc;
pub mod kv;
pub mod net;
pub mod runtime;
pub mod secret;
pub mod stats;
pub mod vfs;

use crate::error::{Code, Error, Result};
use crate::signal::RwLockExt;
use errors::astrid_error_t;
use std::cell::RefCell;
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};

pub use errors::{
    astrid_status_t, ASTRID_E_CANCELLED, ASTRID_E_CLOSED, ASTRID_E_COMPILE, ASTRID_E_DENIED,
    ASTRID_E_INTERNAL, ASTRID_E_INVALID_ARGUMENT, ASTRID_E_IO, ASTRID_E_LINK, ASTRID_E_MANIFEST,
    ASTRID_E_NOT_FOUND, ASTRID_E_OUT_OF_FUEL, ASTRID_E_PANIC, ASTRID_E_REENTRANT,
    ASTRID_E_RESOURCE_LIMIT, ASTRID_E_TIMEOUT, ASTRID_E_TRAP, ASTRID_E_UTF8, ASTRID_OK,
};

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

/// Reads a size-prefixed input struct of any published version: a `size`
/// below `min_size` (its first published size) is refused; fields past the
/// caller's `size` (appended in later versions) read as zero, which every
/// appended field documents as its default.
///
/// # Safety
/// `ptr` must be NULL or point to a readable struct of at least its `size`
/// bytes whose first field is `size_t size`; `T` must be plain data for
/// which all-zero bytes are a valid value.
pub(crate) unsafe fn read_sized_in<T: Copy>(
    ptr: *const T,
    min_size: usize,
    what: &str,
) -> Result<Option<T>> {
    if ptr.is_null() {
        return Ok(None);
    }
    // SAFETY: the first field of every size-prefixed struct is a size_t.
    let size = unsafe { ptr.cast::<usize>().read() };
    if size < min_size {
        return Err(Error::invalid_argument(format!(
            "`{what}.size` is {size}, smaller than any version of this struct ({min_size} bytes or more; set it with sizeof or the *_init function)"
        )));
    }
    // Between two published versions a size would cut a field in half
    // (half a pointer read as the whole): only whole versions are taken.
    if size != min_size && size < std::mem::size_of::<T>() {
        return Err(Error::invalid_argument(format!(
            "`{what}.size` is {size}, not the size of any version of this struct ({min_size} or at least {}; set it with sizeof or the *_init function)",
            std::mem::size_of::<T>()
        )));
    }
    // SAFETY: all-zero is a valid `T` (caller contract).
    let mut value: T = unsafe { std::mem::zeroed() };
    let known = size.min(std::mem::size_of::<T>());
    // SAFETY: the caller's struct has `size` readable bytes and `value` has
    // `size_of::<T>()` writable ones; `T` is plain data.
    unsafe {
        std::ptr::copy_nonoverlapping(ptr.cast::<u8>(), (&mut value as *mut T).cast::<u8>(), known);
    }
    Ok(Some(value))
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

/// The first handle value. Handles are ids the library looks up, never
/// addresses, but bindings hold them as pointers (Go's `*C.T`, ctypes'
/// `c_void_p`): starting in the top half of the address space keeps them
/// out of every range a process maps, so no garbage collector mistakes one
/// for a pointer into its heap however many are issued.
const FIRST_HANDLE: usize = (1 << (usize::BITS - 1)) | 0x10_0000;

static NEXT_HANDLE: AtomicUsize = AtomicUsize::new(FIRST_HANDLE);

impl<T> Registry<T> {
    pub(crate) fn new() -> Self {
        Registry {
            entries: RwLock::new(HashMap::default()),
        }
    }

    pub(crate) fn insert(&self, value: T) -> usize {
        let id = NEXT_HANDLE.fetch_add(16, Ordering::Relaxed);
        self.entries.write_locked().insert(id, Arc::new(value));
        id
    }

    pub(crate) fn get(&self, id: usize, what: &str) -> Result<Arc<T>> {
        if id == 0 {
            return Err(Error::invalid_argument(format!(
                "`{what}` must not be NULL"
            )));
        }
        self.entries.read_locked().get(&id).cloned().ok_or_else(|| {
            Error::closed(format!(
                "`{what}` was already freed or never created by this library"
            ))
        })
    }

    pub(crate) fn remove(&self, id: usize) -> Option<Arc<T>> {
        self.entries.write_locked().remove(&id)
    }
}

/// An embedder callback triple: function, `user_data`, optional finalizer
/// run exactly once when the library drops the callback.
pub(crate) struct Callback<F: Copy> {
    pub(crate) function: F,
    pub(crate) user_data: *mut libc::c_void,
    finalizer: Option<unsafe extern "C" fn(*mut libc::c_void)>,
    /// Cleared to give `user_data` back: the finalizer then never runs,
    /// whoever drops the callback last.
    armed: std::sync::atomic::AtomicBool,
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
            armed: std::sync::atomic::AtomicBool::new(true),
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

    /// [`disarm`](Self::disarm) through a shared reference, for a callback
    /// something else may still hold for a moment (a failed load's provider
    /// seen by a concurrent metrics read).
    pub(crate) fn disarm_shared(&self) {
        self.armed.store(false, std::sync::atomic::Ordering::SeqCst);
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
        let armed = self.armed.load(std::sync::atomic::Ordering::SeqCst);
        if let Some(finalizer) = self.finalizer.take().filter(|_| armed) {
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

/// Writes `value` into the caller's size-prefixed output struct: at most
/// the caller's `size` bytes of it (fields are only ever appended, so a
/// caller built against an older header, with a smaller struct, gets the
/// fields it knows), then sets `size` to the number of bytes written.
/// A `size` below `min_size` (the struct's first published size) is
/// `ASTRID_E_INVALID_ARGUMENT`, and nothing is written.
///
/// # Safety
/// `out` must be NULL or point to a writable struct of at least its `size`
/// bytes whose first field is `size_t size`; `T` must be plain data.
pub(crate) unsafe fn write_sized<T: Copy>(
    out: *mut T,
    value: T,
    min_size: usize,
    what: &str,
) -> Result<()> {
    non_null(out, what)?;
    // SAFETY: the first field of every size-prefixed struct is a size_t.
    let size = unsafe { out.cast::<usize>().read() };
    if size < min_size {
        return Err(Error::invalid_argument(format!(
            "`{what}->size` is {size}, smaller than this struct's {min_size} bytes (set it with sizeof before the call)"
        )));
    }
    let written = size.min(std::mem::size_of::<T>());
    // SAFETY: the caller's struct has `size` >= `written` writable bytes;
    // `value` has `size_of::<T>()` >= `written` readable ones (an untyped copy).
    unsafe {
        std::ptr::copy_nonoverlapping((&value as *const T).cast::<u8>(), out.cast::<u8>(), written);
        out.cast::<usize>().write(written);
    }
    Ok(())
}

/// The kinds of callback request handles: `astrid_gate_request_t`,
/// `astrid_accept_request_t` and `astrid_secret_request_t`.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum RequestKind {
    Gate,
    Accept,
    Secret,
}

/// One live callback request on this thread: its handle (a unique id, never
/// reused), the address of its state and its kind.
#[derive(Clone, Copy)]
struct LiveRequest {
    id: usize,
    state: usize,
    kind: RequestKind,
}

thread_local! {
    /// The callback requests live on this thread: one per callback running
    /// on it, innermost last (callbacks may nest). A request handle is only
    /// ever resolved through this list, so it works on the thread running
    /// its callback while that callback runs, and is refused everywhere
    /// else (another thread, or after the callback returned) without
    /// anything being read through it.
    static LIVE_REQUESTS: RefCell<Vec<LiveRequest>> = const { RefCell::new(Vec::new()) };
}

/// Runs `call` with a handle to `state`: a request of `kind` that the
/// request accessors resolve on this thread until `call` returns (or
/// unwinds), and nowhere else.
pub(crate) fn with_request<S, R>(
    state: &S,
    kind: RequestKind,
    call: impl FnOnce(*mut libc::c_void) -> R,
) -> R {
    /// Unregisters the request when the callback is over, unwinding included.
    struct Registered(usize);
    impl Drop for Registered {
        fn drop(&mut self) {
            let _ = LIVE_REQUESTS.try_with(|live| {
                let mut live = live.borrow_mut();
                if let Some(at) = live.iter().rposition(|r| r.id == self.0) {
                    live.remove(at);
                }
            });
        }
    }
    let id = NEXT_HANDLE.fetch_add(16, Ordering::Relaxed);
    let entry = LiveRequest {
        id,
        state: (state as *const S) as usize,
        kind,
    };
    // Unregistered (the thread is exiting), the handle is simply refused.
    let registered = LIVE_REQUESTS
        .try_with(|live| live.borrow_mut().push(entry))
        .is_ok();
    let _registered = if registered {
        Some(Registered(id))
    } else {
        None
    };
    call(id as *mut libc::c_void)
}

/// Runs `body` on the state behind `handle`, a request of `kind` live on
/// this thread. NULL is `ASTRID_E_INVALID_ARGUMENT`; a handle that is not
/// live here (its callback returned, it belongs to a callback on another
/// thread, or it was never a request) is `ASTRID_E_CLOSED`.
///
/// # Safety
/// `S` must be the state type that [`with_request`] registers for `kind`.
pub(crate) unsafe fn on_request<S, R>(
    handle: *const libc::c_void,
    kind: RequestKind,
    what: &str,
    body: impl FnOnce(&S) -> Result<R>,
) -> Result<R> {
    non_null(handle, what)?;
    let id = handle as usize;
    let found = LIVE_REQUESTS
        .try_with(|live| live.borrow().iter().rev().find(|r| r.id == id).copied())
        .ok()
        .flatten();
    match found {
        Some(live) if live.kind == kind => {
            // SAFETY: registered by `with_request` for a state of type `S`
            // (the kind says which), on this thread, and unregistered before
            // that state goes away: it is alive for this whole call.
            body(unsafe { &*(live.state as *const S) })
        }
        Some(live) => Err(Error::invalid_argument(format!(
            "`{what}` is a {:?} request, not a {kind:?} request",
            live.kind
        ))),
        None => Err(Error::closed(format!(
            "`{what}` is not a live request on this thread: a callback request may only be used \
             on the thread running its callback, until the callback returns"
        ))),
    }
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

    #[test]
    fn request_handles_live_only_on_their_thread_during_the_call() {
        fn read(handle: *const libc::c_void, kind: RequestKind) -> std::result::Result<u32, i32> {
            // SAFETY: every handle of this test is registered with a u32 state.
            unsafe { on_request::<u32, _>(handle, kind, "request", |s| Ok(*s)) }
                .map_err(|e| e.code() as i32)
        }
        let state = 7u32;
        let mut seen = None;
        let handle = with_request(&state, RequestKind::Gate, |handle| {
            seen = Some(read(handle, RequestKind::Gate));
            assert_eq!(
                read(handle, RequestKind::Accept),
                Err(ASTRID_E_INVALID_ARGUMENT)
            );
            let addr = handle as usize;
            let elsewhere =
                std::thread::spawn(move || read(addr as *const libc::c_void, RequestKind::Gate))
                    .join()
                    .unwrap();
            assert_eq!(elsewhere, Err(ASTRID_E_CLOSED));
            addr
        });
        assert_eq!(seen, Some(Ok(7)));
        assert_eq!(
            read(handle as *const libc::c_void, RequestKind::Gate),
            Err(ASTRID_E_CLOSED)
        );
        assert_eq!(
            read(std::ptr::null(), RequestKind::Gate),
            Err(ASTRID_E_INVALID_ARGUMENT)
        );
    }

    #[test]
    fn write_sized_writes_what_the_caller_has_room_for() {
        #[derive(Clone, Copy)]
        #[repr(C)]
        struct Out {
            size: usize,
            a: u64,
            b: u64,
        }
        let value = Out {
            size: std::mem::size_of::<Out>(),
            a: 1,
            b: 2,
        };
        // A caller built when the struct ended after `a`.
        let mut older = Out {
            size: 16,
            a: 0,
            b: 99,
        };
        unsafe { write_sized(&mut older, value, 16, "out") }.unwrap();
        assert_eq!((older.size, older.a, older.b), (16, 1, 99));
        let mut newer = Out {
            size: 64,
            a: 0,
            b: 0,
        };
        unsafe { write_sized(&mut newer, value, 16, "out") }.unwrap();
        assert_eq!((newer.size, newer.a, newer.b), (24, 1, 2));
        let mut small = Out {
            size: 8,
            a: 0,
            b: 0,
        };
        let e = unsafe { write_sized(&mut small, value, 16, "out") }.unwrap_err();
        assert_eq!(e.code() as i32, ASTRID_E_INVALID_ARGUMENT);
        assert_eq!((small.size, small.a), (8, 0));
    }
}
