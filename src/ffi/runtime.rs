//! Runtime: version queries, configuration, creation and shutdown, and the
//! log and audit callbacks.

use super::errors::astrid_error_t;
use super::{
    astrid_status_t, guard, install_or_disarm, non_null, opt_str_arg, opt_view, view, Callback,
    Registry,
};
use crate::error::{Error, Result};
use crate::runtime::{AuditEvent, AuditSink, LogRecord, LogSink, Runtime, RuntimeConfig};
use once_cell::sync::Lazy;
use std::sync::Arc;
use std::time::Duration;

/// Incremented on every breaking change of this header. Bindings compare it
/// with `astrid_abi_version()` when they load the library. Version 2: every
/// fallible function takes `astrid_error_t **err`, constant families have
/// typedefs, and callback requests are opaque handles with accessors.
pub const ASTRID_ABI_VERSION: u32 = 2;

/// Bits of `astrid_runtime_config_t.flags`: the `ASTRID_RUNTIME_*` flags.
pub type astrid_runtime_flags_t = u32;

/// Runtime flag: let capsules reach loopback and private addresses. The only
/// way to open that door; no environment variable can.
pub const ASTRID_RUNTIME_ALLOW_LOOPBACK: astrid_runtime_flags_t = 1;
/// Runtime flag: `astrid:sys` capability lookups of other capsules answer
/// `registry-unavailable`.
pub const ASTRID_RUNTIME_DISABLE_CAPABILITY_REGISTRY: astrid_runtime_flags_t = 2;
/// Runs gate and VFS callbacks directly on the thread executing the guest
/// instead of handing them to a worker thread: about a microsecond faster per
/// callback, but a callback that blocks holds its call, and the gate / VFS
/// deadline is then only checked when it returns (a late answer still counts
/// as a denial / timeout). Use it when your callbacks never block; use a
/// deferred verdict (`ASTRID_PENDING`) for slow decisions.
pub const ASTRID_RUNTIME_INLINE_CALLBACKS: astrid_runtime_flags_t = 4;
/// Runtime flag: `bind-tcp` and `udp-bind` may use addresses other than
/// loopback (the manifest's `net_bind` and the gate still decide which).
pub const ASTRID_RUNTIME_ALLOW_ANY_BIND: astrid_runtime_flags_t = 8;
/// Runtime flag: link `wasi:sockets` for real. Every connect, bind and name
/// lookup then passes the same manifest entries (`net_connect`, `net_bind`),
/// gate kinds and SSRF airlock as `astrid:net`, and counts against the same
/// quotas; without the flag every WASI socket operation is `access-denied`.
pub const ASTRID_RUNTIME_WASI_SOCKETS: astrid_runtime_flags_t = 16;

/// Level of a log line (`astrid_log_record_t.level`): an `ASTRID_LOG_*` value.
pub type astrid_log_level_t = u32;

/// Log level: tracing detail.
pub const ASTRID_LOG_TRACE: astrid_log_level_t = 0;
/// Log level: debugging detail.
pub const ASTRID_LOG_DEBUG: astrid_log_level_t = 1;
/// Log level: information (guest stdout is logged at this level).
pub const ASTRID_LOG_INFO: astrid_log_level_t = 2;
/// Log level: warning (guest stderr is logged at this level).
pub const ASTRID_LOG_WARN: astrid_log_level_t = 3;
/// Log level: error.
pub const ASTRID_LOG_ERROR: astrid_log_level_t = 4;

/// Outcome of an audited host call (`astrid_audit_event_t.outcome`): an
/// `ASTRID_AUDIT_*` value.
pub type astrid_audit_outcome_t = u32;

/// Audit outcome: the host call was allowed and ran.
pub const ASTRID_AUDIT_ALLOWED: astrid_audit_outcome_t = 0;
/// Audit outcome: the manifest or the gate denied the host call.
pub const ASTRID_AUDIT_DENIED: astrid_audit_outcome_t = 1;
/// Audit outcome: the host call was allowed but failed; for a
/// bus-dispatched handler (`guest.<action>`), the handler failed (trap,
/// timeout, fuel, cancel: the reason says which).
pub const ASTRID_AUDIT_FAILED: astrid_audit_outcome_t = 2;
/// Audit outcome of a bus-dispatched handler that answered `continue`.
pub const ASTRID_AUDIT_CONTINUE: astrid_audit_outcome_t = 3;
/// Audit outcome of a bus-dispatched handler that answered `final`. (A
/// `deny` answer is `ASTRID_AUDIT_DENIED` with its data as the reason.)
/// Values may be appended: treat an unknown one as `ASTRID_AUDIT_ALLOWED`.
pub const ASTRID_AUDIT_FINAL: astrid_audit_outcome_t = 4;

/// A runtime: engine, worker threads, epoch ticker, callbacks. An opaque
/// registry handle: thread-safe, and once freed every use is refused with
/// `ASTRID_E_CLOSED` (it is looked up, never dereferenced).
pub struct astrid_runtime_t {
    _private: [u8; 0],
}

pub(crate) static RUNTIMES: Lazy<Registry<Runtime>> = Lazy::new(Registry::new);

pub(crate) fn runtime_from(rt: *const astrid_runtime_t) -> Result<Arc<Runtime>> {
    RUNTIMES.get(rt as usize, "rt")
}

/// Runtime configuration. Size-prefixed: set `size = sizeof(astrid_runtime_config_t)`,
/// or call `astrid_runtime_config_init`, which also fills the defaults.
/// A zero in a numeric field means "the default". Fields are only ever
/// appended: a caller built against an older header passes its smaller
/// `size` (at least `offsetof(astrid_runtime_config_t, memfs_quota_bytes)`,
/// the size before the first appended field) and the fields it does not
/// know take their defaults.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct astrid_runtime_config_t {
    /// `sizeof(astrid_runtime_config_t)` as the caller compiled it.
    pub size: usize,
    /// Async worker threads of the runtime; 0 = one per core.
    pub worker_threads: u32,
    /// Pooled instances per capsule (concurrent calls); 0 = clamp(2 × cores, 8, 64).
    pub pool_size: u32,
    /// Linear-memory ceiling per instance in bytes; default 64 MiB.
    pub memory_limit_bytes: u64,
    /// Wall-clock deadline per call in milliseconds; default 30 000.
    pub timeout_ms: u64,
    /// Fuel (instruction budget) per call; default 500 000 000.
    pub fuel: u64,
    /// Directory for compiled code (UTF-8, not NUL-terminated unless
    /// `cache_dir_len == ASTRID_NTS`); NULL = cache in memory only.
    pub cache_dir: *const libc::c_char,
    pub cache_dir_len: usize,
    /// `ASTRID_RUNTIME_*` flags; unknown bits are refused.
    pub flags: astrid_runtime_flags_t,
    /// How long unload and shutdown wait for calls in flight (ms); default 5000.
    pub unload_grace_ms: u64,
    /// How long the gate may take to answer, deferred verdicts included (ms);
    /// later counts as a denial. Default 5000.
    pub gate_timeout_ms: u64,
    /// How long one VFS or KV backend callback may take (ms); later, the
    /// guest sees `unknown("timeout")`. A whole-file call's open, reads or
    /// writes and close share one such deadline. Default 10 000.
    pub vfs_timeout_ms: u64,
    /// Messages each bus subscription queue holds before the oldest is
    /// evicted (counted as `lagged`); default 1024.
    pub ipc_queue_messages: u32,
    /// Payload bytes each bus subscription queue holds; a message that does
    /// not fit is not queued (counted as `dropped`). Default 4 MiB.
    pub ipc_queue_bytes: u64,
    /// Byte budget of each KV namespace in the built-in store: keys plus
    /// values plus 96 bytes per entry (what an entry really holds); writes
    /// beyond it fail with `quota`. Default 64 MiB. An embedder
    /// KV backend (`astrid_runtime_set_kv`) enforces its own.
    pub kv_quota_bytes: u64,
    /// Payload bytes per second each (capsule, principal) may publish on
    /// the bus; beyond it the guest's publish fails with `rate-limited`.
    /// Default 10 MiB/s.
    pub ipc_publish_bytes_per_sec: u64,
    /// Bytes each built-in in-memory mount may commit (`tmp://` of each data
    /// scope, and `cwd://` when a capsule has no workspace root): file
    /// contents plus 128 bytes and the name for every directory entry.
    /// Growth past it fails with `quota`. Default 64 MiB.
    pub memfs_quota_bytes: u64,
    /// Directory entries (files, directories, extra hard links) each
    /// built-in in-memory mount may hold; more fail with `quota`.
    /// Default 65 536.
    pub memfs_max_entries: u64,
    /// Live instances of all the runtime's capsules together (each loaded
    /// capsule keeps at least one; concurrent calls and run loops take
    /// more). The runtime reserves about 4 GiB of virtual address space per
    /// instance when it starts (4 GiB + 32 MiB: the reservation lets guest
    /// code skip bounds checks; reserved, not committed, so it costs no
    /// memory). A 64-bit Linux process has 128 TiB, which bounds the number
    /// of runtimes alive at once to about 30000 / `max_instances`.
    /// 0 = max(128, 4 × `pool_size`), at most 1000 (about 516 GiB per
    /// runtime with 128). Past it, a load or call that needs a new instance
    /// fails with `ASTRID_E_RESOURCE_LIMIT` (message names `max_instances`);
    /// a runtime whose reservation does not fit in what is left of the
    /// address space fails to start with `ASTRID_E_RESOURCE_LIMIT`.
    pub max_instances: u32,
}

/// The size of `astrid_runtime_config_t` before fields were appended to it:
/// the smallest `size` a caller may pass.
const RUNTIME_CONFIG_MIN_SIZE: usize =
    std::mem::offset_of!(astrid_runtime_config_t, memfs_quota_bytes);

/// The ABI version this library implements (`ASTRID_ABI_VERSION` of its header).
#[no_mangle]
pub extern "C" fn astrid_abi_version() -> u32 {
    ASTRID_ABI_VERSION
}

/// The library's version as a static NUL-terminated string (e.g. "0.1.0").
#[no_mangle]
pub extern "C" fn astrid_version() -> *const libc::c_char {
    concat!(env!("CARGO_PKG_VERSION"), "\0").as_ptr().cast()
}

/// Fills `cfg` with the defaults and sets `cfg->size`.
/// Errors: `ASTRID_E_INVALID_ARGUMENT` when `cfg` is NULL. Thread-safe.
#[no_mangle]
pub extern "C" fn astrid_runtime_config_init(
    cfg: *mut astrid_runtime_config_t,
    err: *mut *mut astrid_error_t,
) -> astrid_status_t {
    guard(err, || {
        non_null(cfg, "cfg")?;
        // SAFETY: non-NULL, and the caller provides a writable struct.
        unsafe { cfg.write(default_config()) };
        Ok(())
    })
}

fn default_config() -> astrid_runtime_config_t {
    let d = RuntimeConfig::default();
    astrid_runtime_config_t {
        size: std::mem::size_of::<astrid_runtime_config_t>(),
        worker_threads: 0,
        pool_size: 0,
        memory_limit_bytes: d.memory_limit,
        timeout_ms: d.timeout.as_millis() as u64,
        fuel: d.fuel,
        cache_dir: std::ptr::null(),
        cache_dir_len: 0,
        flags: 0,
        unload_grace_ms: d.unload_grace.as_millis() as u64,
        gate_timeout_ms: d.gate_timeout.as_millis() as u64,
        vfs_timeout_ms: d.vfs_timeout.as_millis() as u64,
        ipc_queue_messages: d.queue_limits.messages as u32,
        ipc_queue_bytes: d.queue_limits.bytes as u64,
        kv_quota_bytes: d.kv_quota,
        ipc_publish_bytes_per_sec: d.publish_rate,
        memfs_quota_bytes: d.memfs_limits.bytes,
        memfs_max_entries: d.memfs_limits.entries,
        max_instances: 0,
    }
}

/// Reads the caller's configuration: `size` bytes of it over the defaults,
/// so a caller built against an older header (a smaller struct) keeps working.
///
/// # Safety
/// `cfg` must be NULL or point to a readable struct of at least its `size`
/// bytes whose first field is `size_t size`.
unsafe fn read_config(
    cfg: *const astrid_runtime_config_t,
) -> Result<Option<astrid_runtime_config_t>> {
    if cfg.is_null() {
        return Ok(None);
    }
    // SAFETY: the first field of the struct is a size_t.
    let size = unsafe { *cfg.cast::<usize>() };
    if size < RUNTIME_CONFIG_MIN_SIZE {
        return Err(Error::invalid_argument(format!(
            "`cfg.size` is {size}, smaller than any version of astrid_runtime_config_t ({RUNTIME_CONFIG_MIN_SIZE} bytes or more; set it with sizeof or astrid_runtime_config_init)"
        )));
    }
    let mut config = default_config();
    let known = size.min(std::mem::size_of::<astrid_runtime_config_t>());
    // SAFETY: the caller's struct has `size` readable bytes; `config` has
    // `size_of` writable ones; every field is plain data.
    unsafe {
        std::ptr::copy_nonoverlapping(
            cfg.cast::<u8>(),
            (&mut config as *mut astrid_runtime_config_t).cast::<u8>(),
            known,
        );
    }
    Ok(Some(config))
}

fn config_from(cfg: Option<&astrid_runtime_config_t>) -> Result<RuntimeConfig> {
    let mut config = RuntimeConfig::default();
    let Some(c) = cfg else { return Ok(config) };
    config.worker_threads = c.worker_threads as usize;
    config.pool_size = c.pool_size as usize;
    config.max_instances = c.max_instances as usize;
    if c.memory_limit_bytes > 0 {
        config.memory_limit = c.memory_limit_bytes;
    }
    if c.timeout_ms > 0 {
        config.timeout = Duration::from_millis(c.timeout_ms);
    }
    if c.fuel > 0 {
        config.fuel = c.fuel;
    }
    if c.unload_grace_ms > 0 {
        config.unload_grace = Duration::from_millis(c.unload_grace_ms);
    }
    if c.gate_timeout_ms > 0 {
        config.gate_timeout = Duration::from_millis(c.gate_timeout_ms);
    }
    if c.vfs_timeout_ms > 0 {
        config.vfs_timeout = Duration::from_millis(c.vfs_timeout_ms);
    }
    if c.ipc_queue_messages > 0 {
        config.queue_limits.messages = c.ipc_queue_messages as usize;
    }
    if c.ipc_queue_bytes > 0 {
        config.queue_limits.bytes = usize::try_from(c.ipc_queue_bytes).unwrap_or(usize::MAX);
    }
    if c.ipc_publish_bytes_per_sec > 0 {
        config.publish_rate = c.ipc_publish_bytes_per_sec;
    }
    if c.kv_quota_bytes > 0 {
        config.kv_quota = c.kv_quota_bytes;
    }
    if c.memfs_quota_bytes > 0 {
        config.memfs_limits.bytes = c.memfs_quota_bytes;
    }
    if c.memfs_max_entries > 0 {
        config.memfs_limits.entries = c.memfs_max_entries;
    }
    config.flags = c.flags;
    // SAFETY: the caller promises cache_dir is NULL or valid for cache_dir_len.
    config.cache_dir =
        unsafe { opt_str_arg(c.cache_dir, c.cache_dir_len, "cfg.cache_dir")? }.map(Into::into);
    Ok(config)
}

/// Starts a runtime. `cfg` may be NULL for the defaults; it is read during the
/// call only. On success `*out_rt` receives a handle to free with
/// `astrid_runtime_free`. Errors: `ASTRID_E_INVALID_ARGUMENT` (NULL `out_rt`,
/// `cfg->size` too small, unknown flag), `ASTRID_E_UTF8` (cache_dir),
/// `ASTRID_E_RESOURCE_LIMIT` (the instance pool's address space, see
/// `max_instances`, does not fit in what the process has left; the message
/// says how much was asked), `ASTRID_E_IO` (threads or cache directory),
/// `ASTRID_E_INTERNAL`.
/// Thread-safe. Must not be called from inside an astrid callback.
#[no_mangle]
pub extern "C" fn astrid_runtime_new(
    cfg: *const astrid_runtime_config_t,
    out_rt: *mut *mut astrid_runtime_t,
    err: *mut *mut astrid_error_t,
) -> astrid_status_t {
    guard(err, || {
        non_null(out_rt, "out_rt")?;
        crate::handoff::refuse_reentry("astrid_runtime_new")?;
        // SAFETY: cfg is NULL or a readable size-prefixed struct.
        let cfg = unsafe { read_config(cfg)? };
        let runtime = Runtime::new(config_from(cfg.as_ref())?)?;
        let id = RUNTIMES.insert(runtime);
        // SAFETY: checked non-NULL above.
        unsafe { *out_rt = id as *mut astrid_runtime_t };
        Ok(())
    })
}

/// Shuts the runtime down: cancels every capsule, waits (bounded by the
/// unload grace) for calls in flight, stops its threads and runs the
/// finalizers of every registered callback. NULL is a no-op.
/// Subscription callbacks in flight get the unload grace too: delivery
/// stops at once, and a callback still running after the grace is left
/// running. Its finalizer then runs exactly once, on the subscription's
/// thread, right after that callback returns (after this function has
/// returned); `astrid_subscription_free` on its handle waits for that. The
/// audit callback then gets an unload grace of its own to drain the queued
/// events (each of these waits is bounded separately, so the total can be a
/// few graces): one still running after it is left running, the events
/// still queued are dropped, and the audit finalizer runs exactly once, on
/// the audit thread, when that callback returns. Capsule handles
/// of this runtime stay valid to unload, but every other use of them then
/// returns `ASTRID_E_CLOSED`; so does any later use of `rt` itself.
/// Thread-safe. Calling it from inside an astrid callback returns without
/// effect (the runtime cannot wait for the call that runs the callback).
#[no_mangle]
pub extern "C" fn astrid_runtime_free(rt: *mut astrid_runtime_t) {
    let _ = guard(std::ptr::null_mut(), || {
        if rt.is_null() {
            return Ok(());
        }
        crate::handoff::refuse_reentry("astrid_runtime_free")?;
        if let Some(runtime) = RUNTIMES.remove(rt as usize) {
            runtime.close()?;
        }
        Ok(())
    });
}

/// A log line from a capsule: guest `astrid:sys` `log`, guest stdout (info)
/// and stderr (warn), and runtime notes about a capsule. Borrowed for the
/// duration of the callback only. Strings are UTF-8 and NOT NUL-terminated.
#[repr(C)]
pub struct astrid_log_record_t {
    pub size: usize,
    /// `ASTRID_LOG_*`.
    pub level: astrid_log_level_t,
    pub capsule: *const libc::c_char,
    pub capsule_len: usize,
    /// The call's context principal; NULL when there is none.
    pub principal: *const libc::c_char,
    pub principal_len: usize,
    pub message: *const libc::c_char,
    pub message_len: usize,
    /// The guest call this belongs to (the id its log lines, audit events
    /// and result carry); 0 outside any call. Appended after this struct was
    /// first published: read it only when `size` covers it.
    pub call_id: u64,
}

/// Log callback. Runs on the thread executing the guest (the thread inside
/// `astrid_capsule_call`, or a library worker), possibly concurrently for
/// different calls. Must not call blocking astrid functions (they return
/// `ASTRID_E_REENTRANT`).
pub type astrid_log_fn =
    Option<unsafe extern "C" fn(user_data: *mut libc::c_void, record: *const astrid_log_record_t)>;

/// The id of the guest call the calling thread serves: inside any
/// embedder callback (gate, VFS provider, KV backend, secret provider,
/// accept verifier, log), the call that made the host call it answers; on a
/// thread inside `astrid_capsule_call`, that call. 0 anywhere else. The VFS
/// provider's operations have no request object: this is how they learn
/// the call. Thread-safe; never fails.
#[no_mangle]
pub extern "C" fn astrid_callback_call_id() -> u64 {
    crate::handoff::current_call_id()
}

/// Finalizer of a callback's `user_data`: run exactly once, on whichever
/// library or caller thread drops the callback last (replaced, removed, or
/// runtime freed).
pub type astrid_finalizer_fn = Option<unsafe extern "C" fn(user_data: *mut libc::c_void)>;

/// Installs the log callback (NULL `log_fn` removes it). The previous
/// callback's finalizer runs once no log line uses it any more. Errors:
/// `ASTRID_E_INVALID_ARGUMENT` (NULL `rt`), `ASTRID_E_CLOSED` (freed or
/// unknown `rt`). Thread-safe.
/// When the call fails, `finalizer` is NOT run: `user_data` stays the caller's.
#[no_mangle]
pub extern "C" fn astrid_runtime_set_log_callback(
    rt: *mut astrid_runtime_t,
    log_fn: astrid_log_fn,
    user_data: *mut libc::c_void,
    finalizer: astrid_finalizer_fn,
    err: *mut *mut astrid_error_t,
) -> astrid_status_t {
    install_hook(
        rt,
        log_fn,
        user_data,
        finalizer,
        err,
        Runtime::set_log_sink,
        |callback| -> LogSink {
            Arc::new(move |record: &LogRecord<'_>| {
                let (capsule, capsule_len) = view(record.capsule);
                let (principal, principal_len) = opt_view(record.principal);
                let (message, message_len) = view(record.message);
                let c_record = astrid_log_record_t {
                    size: std::mem::size_of::<astrid_log_record_t>(),
                    level: record.level as astrid_log_level_t,
                    capsule,
                    capsule_len,
                    principal,
                    principal_len,
                    message,
                    message_len,
                    call_id: record.call_id,
                };
                // SAFETY: the embedder's function, called with its own user_data
                // and a record that lives for the duration of the call.
                unsafe { (callback.function)(callback.user_data, &c_record) };
            })
        },
    )
}

/// One host call, as the audit callback receives it. Borrowed for the
/// duration of the callback. Strings are UTF-8, NOT NUL-terminated; absent
/// ones are `(NULL, 0)`. Never contains payloads, bodies or config values.
#[repr(C)]
pub struct astrid_audit_event_t {
    pub size: usize,
    pub capsule: *const libc::c_char,
    pub capsule_len: usize,
    pub capsule_id: *const libc::c_char,
    pub capsule_id_len: usize,
    /// `p`, `system`, or `claimed(p)`.
    pub principal: *const libc::c_char,
    pub principal_len: usize,
    /// `interface.function`, e.g. `sys.get-config`.
    pub call: *const libc::c_char,
    pub call_len: usize,
    /// VFS path, `host:port`, URL without query, topic, or config key.
    pub target: *const libc::c_char,
    pub target_len: usize,
    /// Payload bytes in plus out.
    pub bytes: u64,
    /// `ASTRID_AUDIT_*`.
    pub outcome: astrid_audit_outcome_t,
    /// Why it was denied or failed (never shown to the guest).
    pub reason: *const libc::c_char,
    pub reason_len: usize,
    pub elapsed_us: u64,
    /// The guest call this belongs to (the id its log lines, audit events
    /// and result carry); 0 outside any call. Appended after this struct was
    /// first published: read it only when `size` covers it.
    pub call_id: u64,
}

/// Audit callback. Runs on the runtime's audit thread, one event at a time,
/// in order. It observes and cannot veto. A slow callback makes capsules wait
/// (events are never dropped).
pub type astrid_audit_fn =
    Option<unsafe extern "C" fn(user_data: *mut libc::c_void, event: *const astrid_audit_event_t)>;

/// Installs the audit callback (NULL `audit_fn` removes it). Same ownership
/// rules and errors as `astrid_runtime_set_log_callback`. Thread-safe.
#[no_mangle]
pub extern "C" fn astrid_runtime_set_audit_callback(
    rt: *mut astrid_runtime_t,
    audit_fn: astrid_audit_fn,
    user_data: *mut libc::c_void,
    finalizer: astrid_finalizer_fn,
    err: *mut *mut astrid_error_t,
) -> astrid_status_t {
    install_hook(
        rt,
        audit_fn,
        user_data,
        finalizer,
        err,
        Runtime::set_audit_sink,
        |callback| -> AuditSink {
            Arc::new(move |event: &AuditEvent| {
                let (capsule, capsule_len) = view(&event.capsule);
                let (capsule_id, capsule_id_len) = view(&event.capsule_id);
                let (principal, principal_len) = view(&event.principal);
                let (call, call_len) = view(&event.call);
                let (target, target_len) = opt_view(event.target.as_deref());
                let (reason, reason_len) = opt_view(event.reason.as_deref());
                let c_event = astrid_audit_event_t {
                    size: std::mem::size_of::<astrid_audit_event_t>(),
                    capsule,
                    capsule_len,
                    capsule_id,
                    capsule_id_len,
                    principal,
                    principal_len,
                    call,
                    call_len,
                    target,
                    target_len,
                    bytes: event.bytes,
                    outcome: event.outcome as astrid_audit_outcome_t,
                    reason,
                    reason_len,
                    elapsed_us: event.elapsed_us,
                    call_id: event.call_id,
                };
                // SAFETY: as for the log callback.
                unsafe { (callback.function)(callback.user_data, &c_event) };
            })
        },
    )
}

/// The plumbing shared by every `astrid_runtime_set_*_callback`: installs the
/// hook `wrap` builds around the embedder's callback triple, or removes the
/// hook when `function` is NULL. Failures go to `err` (NULL or writable).
pub(crate) fn install_hook<F: Copy, S>(
    rt: *mut astrid_runtime_t,
    function: Option<F>,
    user_data: *mut libc::c_void,
    finalizer: astrid_finalizer_fn,
    err: *mut *mut astrid_error_t,
    set: fn(&Runtime, Option<S>) -> Result<()>,
    wrap: impl FnOnce(Arc<Callback<F>>) -> S,
) -> astrid_status_t {
    guard(err, || {
        let runtime = runtime_from(rt)?;
        let Some(function) = function else {
            return set(&runtime, None);
        };
        runtime.check_open_for_hooks()?;
        let callback = Arc::new(Callback::new(function, user_data, finalizer));
        install_or_disarm(callback, Callback::disarm, |callback| {
            set(&runtime, Some(wrap(callback)))
        })
    })
}

impl Runtime {
    fn check_open_for_hooks(&self) -> Result<()> {
        if self.is_closed() {
            return Err(Error::closed("the runtime has been shut down"));
        }
        Ok(())
    }
}
