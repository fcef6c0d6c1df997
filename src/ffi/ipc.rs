//! The host side of the IPC bus: publishing as the embedder and
//! subscriptions delivered to a C callback.

use super::errors::astrid_error_t;
use super::runtime::{astrid_finalizer_fn, astrid_runtime_t, runtime_from};
use super::{
    astrid_status_t, guard, install_or_disarm, non_null, opt_view, str_arg, view, Callback,
    Registry,
};
use crate::bus::{Attribution, Delivery, HostSubscription};
use once_cell::sync::Lazy;
use std::sync::Arc;

/// Who a message speaks for (`astrid_message_t.attribution`): an
/// `ASTRID_ATTRIBUTION_*` value.
pub type astrid_attribution_t = u32;

/// `astrid_message_t.attribution`: published by the embedder without a
/// principal, or by a capsule acting for no principal.
pub const ASTRID_ATTRIBUTION_SYSTEM: astrid_attribution_t = 0;
/// `astrid_message_t.attribution`: the principal is vouched for by the host.
pub const ASTRID_ATTRIBUTION_VERIFIED: astrid_attribution_t = 1;
/// `astrid_message_t.attribution`: a capsule with `uplink` named the
/// principal itself; the host never upgrades it to verified.
pub const ASTRID_ATTRIBUTION_CLAIMED: astrid_attribution_t = 2;

/// A host subscription to a topic pattern. An opaque registry handle; free
/// it with `astrid_subscription_free` (freeing it again, or after the
/// runtime was freed, is harmless).
pub struct astrid_subscription_t {
    _private: [u8; 0],
}

static SUBSCRIPTIONS: Lazy<Registry<HostSubscription>> = Lazy::new(Registry::new);

/// One delivered bus message, borrowed for the duration of the callback.
/// Strings are UTF-8 `(ptr, len)` pairs, NOT NUL-terminated.
#[repr(C)]
pub struct astrid_message_t {
    pub size: usize,
    pub topic: *const libc::c_char,
    pub topic_len: usize,
    /// JSON text.
    pub payload: *const libc::c_char,
    pub payload_len: usize,
    /// The publishing capsule's id, or the embedder's id (the same for every
    /// host publish of every runtime) for messages published through this API.
    pub source_id: *const libc::c_char,
    pub source_id_len: usize,
    /// `ASTRID_ATTRIBUTION_*`.
    pub attribution: astrid_attribution_t,
    /// The principal for verified and claimed messages; `(NULL, 0)` for system.
    pub principal: *const libc::c_char,
    pub principal_len: usize,
    /// Runtime-wide publish sequence number (starts at 1, increasing).
    pub sequence: u64,
    /// Wall clock at publish, milliseconds since the Unix epoch.
    pub timestamp_ms: u64,
    /// 0 for host publishes; one more than the message being handled for a
    /// capsule publishing from an interceptor.
    pub depth: u32,
    /// Messages that matched this subscription but were never queued (its
    /// byte budget was full, or the publish hit the fan-out cap of 256)
    /// since the previous delivery.
    pub dropped: u64,
    /// Messages evicted unread from this subscription's full queue since the
    /// previous delivery.
    pub lagged: u64,
}

/// Subscription callback. Runs on the subscription's own thread, one
/// message at a time, in publish order. It may call `astrid_ipc_publish`;
/// blocking astrid functions return `ASTRID_E_REENTRANT`. A slow callback
/// fills its own queue (the oldest messages are then evicted and counted in
/// `lagged`); it never slows publishers or other subscriptions.
pub type astrid_message_fn =
    Option<unsafe extern "C" fn(user_data: *mut libc::c_void, message: *const astrid_message_t)>;

/// Publishes the JSON text `json` on `topic` as the embedder, attributed
/// `system`. Returns once the message is queued for every matching
/// subscription (at most 256; subscribers never run inside this call).
/// Errors: `ASTRID_E_INVALID_ARGUMENT` (NULL `rt`; topic grammar: 1 to 8
/// `.`-separated segments, at most 256 bytes, no whitespace, no `*`;
/// payload not JSON or over 1 MiB), `ASTRID_E_UTF8`, `ASTRID_E_CLOSED`.
/// Thread-safe, callable from callbacks.
#[no_mangle]
pub extern "C" fn astrid_ipc_publish(
    rt: *mut astrid_runtime_t,
    topic: *const libc::c_char,
    topic_len: usize,
    json: *const libc::c_char,
    json_len: usize,
    err: *mut *mut astrid_error_t,
) -> astrid_status_t {
    publish(rt, topic, topic_len, json, json_len, None, err)
}

/// Like `astrid_ipc_publish`, attributed `verified(principal)`: the embedder
/// vouches for the principal (1..=128 bytes, no control characters, else
/// `ASTRID_E_INVALID_ARGUMENT`).
#[no_mangle]
pub extern "C" fn astrid_ipc_publish_as(
    rt: *mut astrid_runtime_t,
    topic: *const libc::c_char,
    topic_len: usize,
    json: *const libc::c_char,
    json_len: usize,
    principal: *const libc::c_char,
    principal_len: usize,
    err: *mut *mut astrid_error_t,
) -> astrid_status_t {
    publish(
        rt,
        topic,
        topic_len,
        json,
        json_len,
        Some((principal, principal_len)),
        err,
    )
}

fn publish(
    rt: *mut astrid_runtime_t,
    topic: *const libc::c_char,
    topic_len: usize,
    json: *const libc::c_char,
    json_len: usize,
    principal: Option<(*const libc::c_char, usize)>,
    err: *mut *mut astrid_error_t,
) -> astrid_status_t {
    guard(err, || {
        let runtime = runtime_from(rt)?;
        // SAFETY: caller contract for (ptr, len) strings.
        let topic = unsafe { str_arg(topic, topic_len, "topic")? };
        let json = unsafe { str_arg(json, json_len, "json")? };
        let principal = match principal {
            Some((ptr, len)) => {
                non_null(ptr, "principal")?;
                Some(unsafe { str_arg(ptr, len, "principal")? })
            }
            None => None,
        };
        runtime.publish(topic, json, principal).map(drop)
    })
}

/// Subscribes the embedder to `pattern` (a topic whose segments may be
/// exactly `*`: a final `*` matches one or more segments, another `*`
/// exactly one). Every matching message is passed to `message_fn` on the
/// subscription's own thread, in publish order; the queue holds
/// `ipc_queue_messages` messages / `ipc_queue_bytes` bytes (runtime config).
/// On success `*out_sub` receives a handle to free with
/// `astrid_subscription_free`; `finalizer(user_data)` runs exactly once,
/// after the last callback (when `astrid_runtime_free` gave up waiting for
/// a callback, on the subscription's thread once it returns). Errors: `ASTRID_E_INVALID_ARGUMENT` (NULL `rt`,
/// `message_fn` or `out_sub`; bad pattern), `ASTRID_E_UTF8`,
/// `ASTRID_E_CLOSED`, `ASTRID_E_IO` (no thread). When the call fails,
/// `finalizer` is NOT run: `user_data` stays the caller's. Thread-safe.
#[no_mangle]
pub extern "C" fn astrid_ipc_subscribe(
    rt: *mut astrid_runtime_t,
    pattern: *const libc::c_char,
    pattern_len: usize,
    message_fn: astrid_message_fn,
    user_data: *mut libc::c_void,
    finalizer: astrid_finalizer_fn,
    out_sub: *mut *mut astrid_subscription_t,
    err: *mut *mut astrid_error_t,
) -> astrid_status_t {
    guard(err, || {
        non_null(out_sub, "out_sub")?;
        let runtime = runtime_from(rt)?;
        // SAFETY: caller contract for (ptr, len) strings.
        let pattern = unsafe { str_arg(pattern, pattern_len, "pattern")? };
        let Some(function) = message_fn else {
            return Err(crate::error::Error::invalid_argument(
                "`message_fn` must not be NULL",
            ));
        };
        // A refused subscribe (bad pattern, closed runtime) disarms the
        // callback: the finalizer does not run and user_data stays the caller's.
        let callback = Arc::new(Callback::new(function, user_data, finalizer));
        install_or_disarm(callback, Callback::disarm, |callback| {
            let handler = Box::new(move |delivery: &Delivery| deliver(&callback, delivery));
            let subscription = runtime.subscribe(pattern, handler)?;
            let id = SUBSCRIPTIONS.insert(subscription);
            // SAFETY: checked non-NULL above.
            unsafe { *out_sub = id as *mut astrid_subscription_t };
            Ok(())
        })
    })
}

type MessageFn = unsafe extern "C" fn(*mut libc::c_void, *const astrid_message_t);

fn deliver(callback: &Callback<MessageFn>, delivery: &Delivery) {
    let message = &delivery.message;
    let (topic, topic_len) = view(&message.topic);
    let (payload, payload_len) = view(&message.payload);
    let (source_id, source_id_len) = view(&message.source_id);
    let (principal, principal_len) = opt_view(message.attribution.principal());
    let attribution = match message.attribution {
        Attribution::System => ASTRID_ATTRIBUTION_SYSTEM,
        Attribution::Verified(_) => ASTRID_ATTRIBUTION_VERIFIED,
        Attribution::Claimed(_) => ASTRID_ATTRIBUTION_CLAIMED,
    };
    let c_message = astrid_message_t {
        size: std::mem::size_of::<astrid_message_t>(),
        topic,
        topic_len,
        payload,
        payload_len,
        source_id,
        source_id_len,
        attribution,
        principal,
        principal_len,
        sequence: message.sequence,
        timestamp_ms: message.timestamp_ms,
        depth: message.depth,
        dropped: delivery.dropped,
        lagged: delivery.lagged,
    };
    // SAFETY: the embedder's function with its own user_data and a message
    // that lives for the duration of the call.
    unsafe { (callback.function)(callback.user_data, &c_message) };
}

/// Stops delivery and frees the subscription. Returns once no callback for
/// it runs and its finalizer has run. From inside an astrid callback
/// (including this subscription's own) it does not wait: delivery stops
/// after the callback that is running, then the finalizer runs on the
/// subscription's thread. NULL, freed and unknown handles are ignored.
/// Thread-safe.
#[no_mangle]
pub extern "C" fn astrid_subscription_free(sub: *mut astrid_subscription_t) {
    let _ = guard(std::ptr::null_mut(), || {
        if let Some(subscription) = SUBSCRIPTIONS.remove(sub as usize) {
            subscription.close();
        }
        Ok(())
    });
}
