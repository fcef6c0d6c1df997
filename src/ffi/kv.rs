//! An embedder's KV backend over C: a size-prefixed table of callbacks that
//! serves `astrid:kv` for every capsule of a runtime.

use super::errors::astrid_error_t;
use super::runtime::{astrid_finalizer_fn, astrid_runtime_t, runtime_from};
use super::{astrid_status_t, guard, install_or_disarm, sized_struct, view, Callback};
use crate::kv::{KvError, KvStore, Namespace};
use std::sync::Arc;

/// What a KV backend callback returns: an `ASTRID_KV_*` code (0 = success,
/// positive = a failure the guest sees). Unknown codes count as `ASTRID_KV_IO`.
pub type astrid_kv_status_t = i32;

/// Backend result: success.
pub const ASTRID_KV_OK: astrid_kv_status_t = 0;
/// `get`: the key has no value (the guest reads `none`).
pub const ASTRID_KV_NOT_FOUND: astrid_kv_status_t = 1;
/// `cas`: the current value is not the expected one (guest: `cas-mismatch`).
pub const ASTRID_KV_CAS_MISMATCH: astrid_kv_status_t = 2;
/// The namespace's storage budget is exhausted (guest: `quota`).
pub const ASTRID_KV_QUOTA: astrid_kv_status_t = 3;
/// Too large for the backend (guest: `too-large`).
pub const ASTRID_KV_TOO_LARGE: astrid_kv_status_t = 4;
/// Any other failure (guest: `unknown("storage failed")`). Unknown codes count as this.
pub const ASTRID_KV_IO: astrid_kv_status_t = 5;

/// Whose keys: the data scope (the call's principal, else the capsule's
/// owner, else `system`) and the capsule's id. Borrowed for the callback;
/// strings are UTF-8, NOT NUL-terminated. Backends must keep namespaces
/// apart: that is what isolates capsules and principals from each other.
#[repr(C)]
pub struct astrid_kv_namespace_t {
    pub size: usize,
    pub scope: *const libc::c_char,
    pub scope_len: usize,
    pub capsule_id: *const libc::c_char,
    pub capsule_id_len: usize,
    /// The guest call whose `astrid:kv` call this serves; 0 outside any
    /// call. Appended after this struct was first published: read it only
    /// when `size` covers it.
    pub call_id: u64,
}

/// Receives a value from `get` (copied by the library; `(NULL, 0)` is the
/// empty value). Only valid during that `get` call.
pub type astrid_kv_value_sink_fn =
    unsafe extern "C" fn(sink: *mut libc::c_void, value: *const u8, value_len: usize);

/// Receives one key from `list` (copied by the library). Returns 0 to go on,
/// non-zero when the library wants no more keys. Only valid during that call.
pub type astrid_kv_key_sink_fn =
    unsafe extern "C" fn(sink: *mut libc::c_void, key: *const libc::c_char, key_len: usize) -> i32;

/// A KV backend: callbacks taking `user_data` first and returning an
/// `ASTRID_KV_*` code. Size-prefixed (`size = sizeof(astrid_kv_ops_t)`);
/// copied by `astrid_runtime_set_kv`. Every entry is required (a NULL entry
/// makes that operation fail with `unknown("not supported")`).
///
/// Keys and prefixes arrive validated (UTF-8 NFC, 1..=256 bytes, no control
/// characters; prefixes may be empty) as `(ptr, len)` pairs, NOT
/// NUL-terminated; values are at most 1 MiB. Keys sort bytewise. Callbacks
/// run on library worker threads (on the thread executing the guest with
/// `ASTRID_RUNTIME_INLINE_CALLBACKS`), concurrently, each under the
/// runtime's `vfs_timeout_ms`. They must not call blocking astrid functions.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct astrid_kv_ops_t {
    pub size: usize,
    /// Passes the value of `key` to `sink(sink_ctx, ...)` and returns OK, or
    /// returns NOT_FOUND.
    pub get: Option<
        unsafe extern "C" fn(
            user_data: *mut libc::c_void,
            ns: *const astrid_kv_namespace_t,
            key: *const libc::c_char,
            key_len: usize,
            sink: astrid_kv_value_sink_fn,
            sink_ctx: *mut libc::c_void,
        ) -> astrid_kv_status_t,
    >,
    /// Stores `value` under `key` (insert or replace).
    pub set: Option<
        unsafe extern "C" fn(
            user_data: *mut libc::c_void,
            ns: *const astrid_kv_namespace_t,
            key: *const libc::c_char,
            key_len: usize,
            value: *const u8,
            value_len: usize,
        ) -> astrid_kv_status_t,
    >,
    /// Removes `key`; a missing key is OK.
    pub remove: Option<
        unsafe extern "C" fn(
            user_data: *mut libc::c_void,
            ns: *const astrid_kv_namespace_t,
            key: *const libc::c_char,
            key_len: usize,
        ) -> astrid_kv_status_t,
    >,
    /// Passes, in bytewise order, the keys starting with `prefix` that sort
    /// after `after` (`(NULL, 0)`: from the first), at most `limit` of them,
    /// to `sink(sink_ctx, ...)`.
    pub list: Option<
        unsafe extern "C" fn(
            user_data: *mut libc::c_void,
            ns: *const astrid_kv_namespace_t,
            prefix: *const libc::c_char,
            prefix_len: usize,
            after: *const libc::c_char,
            after_len: usize,
            limit: u32,
            sink: astrid_kv_key_sink_fn,
            sink_ctx: *mut libc::c_void,
        ) -> astrid_kv_status_t,
    >,
    /// Removes every key starting with `prefix` (all keys of the namespace
    /// for an empty prefix) and writes how many to `*out_count`.
    pub clear_prefix: Option<
        unsafe extern "C" fn(
            user_data: *mut libc::c_void,
            ns: *const astrid_kv_namespace_t,
            prefix: *const libc::c_char,
            prefix_len: usize,
            out_count: *mut u64,
        ) -> astrid_kv_status_t,
    >,
    /// Atomically: if the current value of `key` equals `expected`
    /// (`has_expected` = 0: if the key is absent), stores `value` and returns
    /// OK; otherwise returns CAS_MISMATCH. Must be linearizable per key.
    pub cas: Option<
        unsafe extern "C" fn(
            user_data: *mut libc::c_void,
            ns: *const astrid_kv_namespace_t,
            key: *const libc::c_char,
            key_len: usize,
            has_expected: u32,
            expected: *const u8,
            expected_len: usize,
            value: *const u8,
            value_len: usize,
        ) -> astrid_kv_status_t,
    >,
}

fn status(code: astrid_kv_status_t) -> Result<(), KvError> {
    match code {
        ASTRID_KV_OK => Ok(()),
        ASTRID_KV_CAS_MISMATCH => Err(KvError::CasMismatch),
        ASTRID_KV_QUOTA => Err(KvError::Quota),
        ASTRID_KV_TOO_LARGE => Err(KvError::TooLarge),
        _ => Err(KvError::Backend("storage failed".into())),
    }
}

fn unsupported() -> KvError {
    KvError::Backend("not supported".into())
}

/// The embedder's callback table as a backend.
struct CallbackKv {
    callback: Callback<astrid_kv_ops_t>,
}

/// A namespace as the C struct, borrowing `ns`.
fn c_namespace(ns: &Namespace) -> astrid_kv_namespace_t {
    let (scope, scope_len) = view(&ns.scope);
    let (capsule_id, capsule_id_len) = view(&ns.capsule_id);
    astrid_kv_namespace_t {
        size: std::mem::size_of::<astrid_kv_namespace_t>(),
        scope,
        scope_len,
        capsule_id,
        capsule_id_len,
        call_id: crate::handoff::current_call_id(),
    }
}

unsafe extern "C" fn take_value(sink: *mut libc::c_void, value: *const u8, value_len: usize) {
    // SAFETY: `sink` is the Option<Vec<u8>> `get` passed; the value is readable.
    let slot = unsafe { &mut *sink.cast::<Option<Vec<u8>>>() };
    let bytes = if value.is_null() || value_len == 0 {
        &[][..]
    } else {
        unsafe { std::slice::from_raw_parts(value, value_len) }
    };
    *slot = Some(bytes.to_vec());
}

struct KeySink {
    keys: Vec<String>,
    limit: usize,
    /// A key was not UTF-8 or the backend kept pushing past the limit.
    broken: bool,
}

unsafe extern "C" fn take_key(
    sink: *mut libc::c_void,
    key: *const libc::c_char,
    len: usize,
) -> i32 {
    // SAFETY: `sink` is the KeySink `list` passed; the key is readable.
    let sink = unsafe { &mut *sink.cast::<KeySink>() };
    if sink.keys.len() >= sink.limit || key.is_null() {
        sink.broken |= key.is_null();
        return 1;
    }
    let bytes = unsafe { std::slice::from_raw_parts(key.cast::<u8>(), len) };
    match std::str::from_utf8(bytes) {
        Ok(text) => sink.keys.push(text.to_string()),
        Err(_) => sink.broken = true,
    }
    i32::from(sink.keys.len() >= sink.limit)
}

impl KvStore for CallbackKv {
    fn is_callback(&self) -> bool {
        true
    }

    fn get(&self, ns: &Namespace, key: &str) -> Result<Option<Vec<u8>>, KvError> {
        let f = self.callback.function.get.ok_or_else(unsupported)?;
        let c_ns = c_namespace(ns);
        let mut slot: Option<Vec<u8>> = None;
        // SAFETY: the embedder's callback with its user_data, borrowed
        // arguments and a sink valid for the call.
        let code = unsafe {
            f(
                self.callback.user_data,
                &c_ns,
                key.as_ptr().cast(),
                key.len(),
                take_value,
                (&mut slot as *mut Option<Vec<u8>>).cast(),
            )
        };
        match code {
            ASTRID_KV_NOT_FOUND => Ok(None),
            // OK without a value is a backend bug; read it as absent rather than invent data.
            code => status(code).map(|()| slot),
        }
    }

    fn set(&self, ns: &Namespace, key: &str, value: &[u8]) -> Result<(), KvError> {
        let f = self.callback.function.set.ok_or_else(unsupported)?;
        let c_ns = c_namespace(ns);
        // SAFETY: as for get.
        status(unsafe {
            f(
                self.callback.user_data,
                &c_ns,
                key.as_ptr().cast(),
                key.len(),
                value.as_ptr(),
                value.len(),
            )
        })
    }

    fn delete(&self, ns: &Namespace, key: &str) -> Result<(), KvError> {
        let f = self.callback.function.remove.ok_or_else(unsupported)?;
        let c_ns = c_namespace(ns);
        // SAFETY: as for get.
        status(unsafe {
            f(
                self.callback.user_data,
                &c_ns,
                key.as_ptr().cast(),
                key.len(),
            )
        })
    }

    fn list(
        &self,
        ns: &Namespace,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<String>, KvError> {
        let f = self.callback.function.list.ok_or_else(unsupported)?;
        let c_ns = c_namespace(ns);
        let mut sink = KeySink {
            keys: Vec::new(),
            limit,
            broken: false,
        };
        let (after_ptr, after_len) = after.map_or((std::ptr::null(), 0), view);
        // SAFETY: as for get.
        status(unsafe {
            f(
                self.callback.user_data,
                &c_ns,
                prefix.as_ptr().cast(),
                prefix.len(),
                after_ptr,
                after_len,
                u32::try_from(limit).unwrap_or(u32::MAX),
                take_key,
                (&mut sink as *mut KeySink).cast(),
            )
        })?;
        if sink.broken {
            return Err(KvError::Backend("storage failed".into()));
        }
        // Whatever the backend did, the guest gets the contract: prefixed,
        // after the cursor, sorted, unique.
        let mut keys: Vec<String> = sink
            .keys
            .into_iter()
            .filter(|k| k.starts_with(prefix) && after.is_none_or(|a| k.as_str() > a))
            .collect();
        keys.sort_unstable();
        keys.dedup();
        Ok(keys)
    }

    fn clear_prefix(&self, ns: &Namespace, prefix: &str) -> Result<u64, KvError> {
        let f = self
            .callback
            .function
            .clear_prefix
            .ok_or_else(unsupported)?;
        let c_ns = c_namespace(ns);
        let mut count = 0u64;
        // SAFETY: as for get.
        status(unsafe {
            f(
                self.callback.user_data,
                &c_ns,
                prefix.as_ptr().cast(),
                prefix.len(),
                &mut count,
            )
        })?;
        Ok(count)
    }

    fn cas(
        &self,
        ns: &Namespace,
        key: &str,
        expected: Option<&[u8]>,
        new: &[u8],
    ) -> Result<(), KvError> {
        let f = self.callback.function.cas.ok_or_else(unsupported)?;
        let c_ns = c_namespace(ns);
        let (has_expected, expected_ptr, expected_len) =
            expected.map_or((0, std::ptr::null(), 0), |e| (1, e.as_ptr(), e.len()));
        // SAFETY: as for get.
        status(unsafe {
            f(
                self.callback.user_data,
                &c_ns,
                key.as_ptr().cast(),
                key.len(),
                has_expected,
                expected_ptr,
                expected_len,
                new.as_ptr(),
                new.len(),
            )
        })
    }
}

/// Serves `astrid:kv` for every capsule of the runtime from the backend
/// `ops` (copied), from the next KV call on; NULL `ops` goes back to a fresh,
/// empty built-in in-memory store. `finalizer(user_data)` runs exactly once,
/// after the backend is replaced or the runtime freed and no call uses it
/// any more; when the call fails it is not run and `user_data` stays the
/// caller's. Errors: `ASTRID_E_INVALID_ARGUMENT` (NULL runtime, `ops->size`
/// too small), `ASTRID_E_CLOSED`. Thread-safe.
#[no_mangle]
pub extern "C" fn astrid_runtime_set_kv(
    rt: *mut astrid_runtime_t,
    ops: *const astrid_kv_ops_t,
    user_data: *mut libc::c_void,
    finalizer: astrid_finalizer_fn,
    err: *mut *mut astrid_error_t,
) -> astrid_status_t {
    guard(err, || {
        let runtime = runtime_from(rt)?;
        // SAFETY: NULL or a readable size-prefixed table.
        let Some(ops) = (unsafe { sized_struct(ops, "ops")? }) else {
            return runtime.set_kv_store(None);
        };
        let store = Arc::new(CallbackKv {
            callback: Callback::new(*ops, user_data, finalizer),
        });
        install_or_disarm(
            store,
            |s| s.callback.disarm(),
            |store| runtime.set_kv_store(Some(store)),
        )
    })
}

/// The backend `astrid_runtime_set_kv` would install, for Rust embedders and
/// tests that drive a C callback table through the Rust API.
///
/// # Safety
/// `ops` must be a valid table whose callbacks honour the contract of
/// [`astrid_kv_ops_t`] for `user_data`, from any thread, until the backend is
/// dropped (then `finalizer(user_data)` runs).
pub unsafe fn callback_store(
    ops: &astrid_kv_ops_t,
    user_data: *mut libc::c_void,
    finalizer: astrid_finalizer_fn,
) -> Arc<dyn KvStore> {
    Arc::new(CallbackKv {
        callback: Callback::new(*ops, user_data, finalizer),
    })
}
