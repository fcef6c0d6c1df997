//! Calls on a loaded capsule: per-call options, results, cancellation.

use super::capsule::{astrid_capsule_t, astrid_config_entry_t, capsule_from, config_entries};
use super::errors::astrid_error_t;
use super::{
    astrid_status_t, bytes_arg, guard, non_null, opt_str_arg, read_sized_in, str_arg, Registry,
};
use crate::capsule::{CallCancel, CallOptions, CallResult};
use once_cell::sync::Lazy;
use std::time::Duration;

thread_local! {
    /// One freed result's allocation, reused by this thread's next call: a
    /// call-and-free loop then allocates no result at all.
    static SPARE_RESULT: std::cell::Cell<Option<Box<astrid_result_t>>> =
        const { std::cell::Cell::new(None) };
}

/// The most bytes an action or payload may have (4 GiB - 1): what a wasm32
/// guest can address.
pub const ASTRID_MAX_GUEST_BYTES: u64 = 4_294_967_295;
const _: () = assert!(ASTRID_MAX_GUEST_BYTES == crate::capsule::MAX_GUEST_BYTES as u64);

/// Per-call options. Size-prefixed: fields are only ever appended, each
/// with 0 / NULL meaning "the default", and a caller built against an older
/// header (a smaller `size`) gets the defaults for the fields it lacks.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct astrid_call_options_t {
    pub size: usize,
    /// The invoking principal; NULL = the capsule's owner.
    pub principal: *const libc::c_char,
    pub principal_len: usize,
    /// Config values for this call only; they take precedence over load-time values.
    pub config: *const astrid_config_entry_t,
    pub config_len: usize,
    /// A deadline for this call in milliseconds; 0 = the capsule's timeout.
    /// It can only shorten the capsule's timeout (a longer one is the
    /// capsule's). The wait for a free instance counts against it. Host
    /// calls that wait end at the deadline itself; running guest code is
    /// stopped at the runtime's next epoch tick, up to 100 ms later.
    pub timeout_ms: u64,
    /// Fuel for this call in place of the capsule's; 0 = the capsule's.
    pub fuel: u64,
    /// A token that ends this call when fired (`astrid_cancel_fire`); NULL =
    /// none. A call started with a fired token returns `ASTRID_E_CANCELLED`
    /// without running the guest. The token is looked up when the call
    /// starts: freeing it during the call does not end the call.
    pub cancel: *mut astrid_cancel_t,
}

/// The smallest `size` of `astrid_call_options_t` (its first published
/// version, before `timeout_ms`).
const CALL_OPTIONS_MIN_SIZE: usize = std::mem::offset_of!(astrid_call_options_t, timeout_ms);

/// A cancel token for calls (`astrid_call_options_t.cancel`). An opaque
/// registry handle: thread-safe, fired from any thread any number of times;
/// one token may govern any number of calls, on any capsules. After
/// `astrid_cancel_free`, uses are refused with `ASTRID_E_CLOSED` (false
/// from `astrid_cancel_is_fired`), never undefined behaviour.
pub struct astrid_cancel_t {
    _private: [u8; 0],
}

static CANCELS: Lazy<Registry<CallCancel>> = Lazy::new(Registry::new);

fn cancel_from(cancel: *const astrid_cancel_t, what: &str) -> crate::error::Result<CallCancel> {
    CANCELS
        .get(cancel as usize, what)
        .map(|token| CallCancel::clone(&token))
}

/// The result of a call: the interceptor's `action` and optional `data`.
/// An owned pointer, not a registry handle: it is the caller's, to free
/// exactly once with `astrid_result_free`; using it after that is undefined
/// behaviour. Immutable, so it may be read from any thread.
pub struct astrid_result_t {
    action: CText,
    data: Option<CText>,
    call_id: u64,
}

/// A NUL-terminated copy of a string for C. Short texts (every usual action)
/// live inline, sparing an allocation per call.
enum CText {
    Inline { bytes: [u8; 32], len: u8 },
    Heap(Vec<u8>),
}

impl CText {
    fn new(text: String) -> CText {
        let len = text.len();
        if len < 32 {
            let mut bytes = [0u8; 32];
            bytes[..len].copy_from_slice(text.as_bytes());
            CText::Inline {
                bytes,
                len: len as u8,
            }
        } else {
            let mut bytes = text.into_bytes();
            bytes.push(0);
            CText::Heap(bytes)
        }
    }

    fn as_ptr(&self) -> *const libc::c_char {
        match self {
            CText::Inline { bytes, .. } => bytes.as_ptr().cast(),
            CText::Heap(bytes) => bytes.as_ptr().cast(),
        }
    }

    fn len(&self) -> usize {
        match self {
            CText::Inline { len, .. } => usize::from(*len),
            CText::Heap(bytes) => bytes.len() - 1,
        }
    }
}

/// Fills `opts` with defaults and sets `opts->size`.
/// Errors: `ASTRID_E_INVALID_ARGUMENT` when `opts` is NULL.
#[no_mangle]
pub extern "C" fn astrid_call_options_init(
    opts: *mut astrid_call_options_t,
    err: *mut *mut astrid_error_t,
) -> astrid_status_t {
    guard(err, || {
        non_null(opts, "opts")?;
        // SAFETY: non-NULL, writable.
        unsafe {
            opts.write(astrid_call_options_t {
                size: std::mem::size_of::<astrid_call_options_t>(),
                principal: std::ptr::null(),
                principal_len: 0,
                config: std::ptr::null(),
                config_len: 0,
                timeout_ms: 0,
                fuel: 0,
                cancel: std::ptr::null_mut(),
            })
        };
        Ok(())
    })
}

/// Calls the capsule's `astrid-hook-trigger(action, payload)` on a pooled
/// instance, as the capsule's owner. See `astrid_capsule_call_with`.
#[no_mangle]
pub extern "C" fn astrid_capsule_call(
    capsule: *mut astrid_capsule_t,
    action: *const libc::c_char,
    action_len: usize,
    payload: *const u8,
    payload_len: usize,
    out_result: *mut *mut astrid_result_t,
    err: *mut *mut astrid_error_t,
) -> astrid_status_t {
    astrid_capsule_call_with(
        capsule,
        std::ptr::null(),
        action,
        action_len,
        payload,
        payload_len,
        out_result,
        err,
    )
}

/// Calls `astrid-hook-trigger(action, payload)` with per-call options
/// (`opts` may be NULL). Blocks the calling thread until the guest returns.
/// Thread-safe: calls on one capsule run concurrently, up to the pool size.
/// On success `*out_result` receives a result to free with `astrid_result_free`.
/// A failed call leaves the capsule loaded; the next call runs on a fresh instance.
/// Errors: `ASTRID_E_INVALID_ARGUMENT`, `ASTRID_E_UTF8` (action),
/// `ASTRID_E_NOT_FOUND` (no `astrid-hook-trigger` export), `ASTRID_E_TIMEOUT`,
/// `ASTRID_E_CANCELLED`, `ASTRID_E_OUT_OF_FUEL`, `ASTRID_E_RESOURCE_LIMIT`,
/// `ASTRID_E_TRAP`, `ASTRID_E_CLOSED` (unloaded, or runtime freed),
/// `ASTRID_E_REENTRANT` (from inside a callback).
/// `action_len` and `payload_len` must be below 4 GiB
/// (`ASTRID_MAX_GUEST_BYTES`): a wasm32 guest cannot address more, so a longer
/// one is `ASTRID_E_INVALID_ARGUMENT`, refused before the buffer is read.
/// Shorter ones still have to fit in the guest's memory ceiling (else
/// `ASTRID_E_RESOURCE_LIMIT` or `ASTRID_E_TRAP`, as the guest's allocator fails).
#[no_mangle]
#[allow(clippy::too_many_arguments)]
pub extern "C" fn astrid_capsule_call_with(
    capsule: *mut astrid_capsule_t,
    opts: *const astrid_call_options_t,
    action: *const libc::c_char,
    action_len: usize,
    payload: *const u8,
    payload_len: usize,
    out_result: *mut *mut astrid_result_t,
    err: *mut *mut astrid_error_t,
) -> astrid_status_t {
    guard(err, || {
        non_null(out_result, "out_result")?;
        let handle = capsule_from(capsule)?;
        non_null(action, "action")?;
        // Before anything is read: a length a wasm32 guest cannot address is
        // the caller's mistake, not something to hand to the guest.
        crate::capsule::check_guest_len(action_len, "action")?;
        crate::capsule::check_guest_len(payload_len, "payload")?;
        // SAFETY: pointer arguments are valid for their lengths (caller contract).
        let action = unsafe { str_arg(action, action_len, "action")? };
        let payload = unsafe { bytes_arg(payload, payload_len, "payload")? };
        // SAFETY: `opts` is NULL or a readable options struct (caller contract).
        let options = match unsafe { read_sized_in(opts, CALL_OPTIONS_MIN_SIZE, "opts")? } {
            None => None,
            Some(o) => Some(CallOptions {
                principal: unsafe { opt_str_arg(o.principal, o.principal_len, "opts.principal")? }
                    .map(str::to_string),
                config_overlay: unsafe { config_entries(o.config, o.config_len, "opts.config")? },
                timeout: (o.timeout_ms > 0).then(|| Duration::from_millis(o.timeout_ms)),
                fuel: (o.fuel > 0).then_some(o.fuel),
                cancel: if o.cancel.is_null() {
                    None
                } else {
                    Some(cancel_from(o.cancel, "opts.cancel")?)
                },
            }),
        };
        let (CallResult { action, data }, call_id) =
            handle
                .capsule
                .call_with_id(action, payload, options.as_ref())?;
        let result = astrid_result_t {
            action: CText::new(action),
            data: data.map(CText::new),
            call_id,
        };
        let boxed = match SPARE_RESULT.try_with(std::cell::Cell::take).ok().flatten() {
            Some(mut spare) => {
                *spare = result;
                spare
            }
            None => Box::new(result),
        };
        // SAFETY: checked non-NULL above.
        unsafe { *out_result = Box::into_raw(boxed) };
        Ok(())
    })
}

/// The result's action (`continue`, `final`, `deny`, ...), NUL-terminated;
/// its length is written to `*len` when `len` is non-NULL. Borrowed: valid
/// until `astrid_result_free`. NULL `result` gives NULL.
#[no_mangle]
pub extern "C" fn astrid_result_action(
    result: *const astrid_result_t,
    len: *mut usize,
) -> *const libc::c_char {
    if result.is_null() {
        return std::ptr::null();
    }
    // SAFETY: a live result from this library.
    let r = unsafe { &*result };
    if !len.is_null() {
        // SAFETY: caller-provided writable pointer.
        unsafe { *len = r.action.len() };
    }
    r.action.as_ptr()
}

/// Whether the result carries data. When it does and `data` / `len` are
/// non-NULL, they receive a borrowed NUL-terminated copy (valid until
/// `astrid_result_free`) and its length. NULL `result` gives false.
#[no_mangle]
pub extern "C" fn astrid_result_data(
    result: *const astrid_result_t,
    data: *mut *const libc::c_char,
    len: *mut usize,
) -> bool {
    if result.is_null() {
        return false;
    }
    // SAFETY: a live result from this library.
    let r = unsafe { &*result };
    match &r.data {
        None => false,
        Some(text) => {
            if !data.is_null() {
                // SAFETY: caller-provided writable pointers.
                unsafe { *data = text.as_ptr() };
            }
            if !len.is_null() {
                unsafe { *len = text.len() };
            }
            true
        }
    }
}

/// The id the call ran under, unique within the runtime: the id its log
/// lines, audit events and embedder callbacks carry. (Ids are unique, not
/// ordered by start time.) NULL gives 0.
#[no_mangle]
pub extern "C" fn astrid_result_call_id(result: *const astrid_result_t) -> u64 {
    if result.is_null() {
        return 0;
    }
    // SAFETY: a live result from this library.
    unsafe { (*result).call_id }
}

/// Frees a result. NULL is a no-op.
#[no_mangle]
pub extern "C" fn astrid_result_free(result: *mut astrid_result_t) {
    if result.is_null() {
        return;
    }
    // SAFETY: came from Box::into_raw in astrid_capsule_call_with.
    let mut result = unsafe { Box::from_raw(result) };
    // The texts go now; the box waits for this thread's next call (or is
    // freed if one is already waiting, or the thread is exiting).
    *result = astrid_result_t {
        action: CText::new(String::new()),
        data: None,
        call_id: 0,
    };
    let _ = SPARE_RESULT.try_with(|spare| {
        let kept = spare.take().or(Some(result));
        spare.set(kept);
    });
}

/// Creates a cancel token (unfired) into `*out`, to free with
/// `astrid_cancel_free`. Errors: `ASTRID_E_INVALID_ARGUMENT` when `out` is NULL.
#[no_mangle]
pub extern "C" fn astrid_cancel_new(
    out: *mut *mut astrid_cancel_t,
    err: *mut *mut astrid_error_t,
) -> astrid_status_t {
    guard(err, || {
        non_null(out, "out")?;
        let id = CANCELS.insert(CallCancel::new());
        // SAFETY: checked non-NULL above.
        unsafe { *out = id as *mut astrid_cancel_t };
        Ok(())
    })
}

/// Fires the token: every call it governs returns `ASTRID_E_CANCELLED`
/// promptly (guest code stops at its next epoch check, waiting host calls
/// return at once), and calls started with it afterwards do not run.
/// Idempotent; thread-safe; never waits for a call to end, so it may be
/// called from a signal-watching thread or from inside a callback. Other
/// calls, on the same capsule or not, are untouched.
/// Errors: `ASTRID_E_INVALID_ARGUMENT` for NULL, `ASTRID_E_CLOSED` for a
/// freed or unknown token.
#[no_mangle]
pub extern "C" fn astrid_cancel_fire(
    cancel: *mut astrid_cancel_t,
    err: *mut *mut astrid_error_t,
) -> astrid_status_t {
    guard(err, || {
        cancel_from(cancel, "cancel")?.fire();
        Ok(())
    })
}

/// Whether the token has been fired. False for NULL and for a freed token.
#[no_mangle]
pub extern "C" fn astrid_cancel_is_fired(cancel: *const astrid_cancel_t) -> bool {
    cancel_from(cancel, "cancel").is_ok_and(|c| c.is_fired())
}

/// Frees the token. Calls it governs keep running under it (a fire is no
/// longer possible through this handle). NULL and already-freed handles
/// are no-ops.
#[no_mangle]
pub extern "C" fn astrid_cancel_free(cancel: *mut astrid_cancel_t) {
    CANCELS.remove(cancel as usize);
}

/// Cancels the calls running on this capsule now: each returns
/// `ASTRID_E_CANCELLED` promptly (guest code stops at its next epoch check,
/// waiting host calls return at once). Calls started afterwards are not
/// affected. Thread-safe, non-blocking, callable from callbacks. Errors:
/// `ASTRID_E_INVALID_ARGUMENT` for NULL, `ASTRID_E_CLOSED` for an unloaded or
/// unknown handle and for a capsule whose runtime was freed (its calls have
/// already been cancelled).
#[no_mangle]
pub extern "C" fn astrid_capsule_cancel(
    capsule: *mut astrid_capsule_t,
    err: *mut *mut astrid_error_t,
) -> astrid_status_t {
    guard(err, || {
        capsule_from(capsule)?.capsule.cancel();
        Ok(())
    })
}
