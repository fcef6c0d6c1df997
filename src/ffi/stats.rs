//! Usage metrics: per-capsule and runtime figures, and the Prometheus text.

use super::capsule::{astrid_capsule_t, capsule_from};
use super::errors::astrid_error_t;
use super::runtime::{astrid_runtime_t, runtime_from};
use super::{astrid_status_t, guard, non_null, write_sized};
use crate::usage::{UsageTotals, CALL_ENDS, CHANNELS, INTERFACES, INTERFACE_SLOTS};

/// `astrid_usage_t.calls` index: calls that returned.
pub const ASTRID_CALLS_OK: usize = 0;
/// `calls` index: calls that trapped (or called exit).
pub const ASTRID_CALLS_TRAP: usize = 1;
/// `calls` index: calls past their deadline.
pub const ASTRID_CALLS_TIMEOUT: usize = 2;
/// `calls` index: calls that ran out of fuel.
pub const ASTRID_CALLS_OUT_OF_FUEL: usize = 3;
/// `calls` index: calls cancelled (before or while running).
pub const ASTRID_CALLS_CANCELLED: usize = 4;
/// `calls` index: calls that hit a memory or instance limit.
pub const ASTRID_CALLS_RESOURCE_LIMIT: usize = 5;
/// `calls` index: calls that failed otherwise (unloaded, no handler...).
pub const ASTRID_CALLS_OTHER: usize = 6;

/// `astrid_usage_t.host_calls` / `host_ns` index: `astrid:sys`.
pub const ASTRID_IFACE_SYS: usize = 0;
/// Index of `astrid:fs`.
pub const ASTRID_IFACE_FS: usize = 1;
/// Index of `astrid:kv`.
pub const ASTRID_IFACE_KV: usize = 2;
/// Index of `astrid:io`.
pub const ASTRID_IFACE_IO: usize = 3;
/// Index of `astrid:ipc`.
pub const ASTRID_IFACE_IPC: usize = 4;
/// Index of `astrid:net` and `astrid:request-context`.
pub const ASTRID_IFACE_NET: usize = 5;
/// Index of `astrid:http`.
pub const ASTRID_IFACE_HTTP: usize = 6;
/// Index of the vetted `wasi:sockets` checks.
pub const ASTRID_IFACE_WASI: usize = 7;

/// `astrid_usage_t.read_bytes` / `written_bytes` index: `astrid:fs` calls.
pub const ASTRID_CHANNEL_FS: usize = 0;
/// Index of sockets (`astrid:net` calls and their streams).
pub const ASTRID_CHANNEL_NET: usize = 1;
/// Index of HTTP bodies (`astrid:http` calls and their streams).
pub const ASTRID_CHANNEL_HTTP: usize = 2;

const _: () = assert!(CALL_ENDS <= 8 && INTERFACES.len() <= INTERFACE_SLOTS && CHANNELS <= 4);

/// Monotonic counters of what calls cost and did. Arrays leave room:
/// unused slots read 0. This struct's layout is fixed; later figures are
/// appended to the stats structs that embed it.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct astrid_usage_t {
    /// Calls by how they ended (`ASTRID_CALLS_*`); calls refused before they
    /// ran (cancelled, no free instance in time) count too.
    pub calls: [u64; 8],
    /// Fuel the calls consumed.
    pub fuel_consumed: u64,
    /// Wall time in guest calls, ns, on the runtime's 100 ms tick: right in
    /// sum over many calls, not per call (a short call reads as 0 or a tick).
    pub guest_ns: u64,
    /// Host calls and the time spent in them (ns), by interface (`ASTRID_IFACE_*`).
    pub host_calls: [u64; 16],
    pub host_ns: [u64; 16],
    /// Questions put to the gate, and those it denied.
    pub gate_asks: u64,
    pub gate_denials: u64,
    /// Bytes the guest read and wrote, by channel (`ASTRID_CHANNEL_*`).
    pub read_bytes: [u64; 4],
    pub written_bytes: [u64; 4],
    /// Bus messages the guest published and took, and those reported
    /// dropped or lagged for its subscriptions.
    pub bus_published: u64,
    pub bus_delivered: u64,
    pub bus_dropped: u64,
    pub bus_lagged: u64,
    /// Bus-dispatched invocations dropped because the capsule's lane was full.
    pub dispatch_dropped: u64,
}

/// A capsule's usage figures (`astrid_capsule_stats`). Size-prefixed: set
/// `size = sizeof(astrid_capsule_stats_t)` first; fields are only appended.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct astrid_capsule_stats_t {
    pub size: usize,
    pub usage: astrid_usage_t,
    /// Instances alive now (pooled, and a running `run` loop's), and of
    /// those the pooled ones waiting for a call.
    pub instances_live: u64,
    pub instances_idle: u64,
    /// Linear memory of the live instances, bytes, and its highest value.
    pub memory_bytes: u64,
    pub memory_peak_bytes: u64,
    /// Bytes its KV namespaces hold in the built-in store; `UINT64_MAX` with
    /// an embedder's KV backend (which keeps its own account).
    pub kv_bytes: u64,
}

/// A runtime's usage figures (`astrid_runtime_stats`): counters over every
/// capsule it has loaded (unloaded ones included, so they never go down).
/// Size-prefixed like `astrid_capsule_stats_t`.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct astrid_runtime_stats_t {
    pub size: usize,
    pub usage: astrid_usage_t,
    pub capsules_loaded: u64,
    pub instances_live: u64,
    pub instances_idle: u64,
    pub memory_bytes: u64,
}

fn c_usage(t: &UsageTotals) -> astrid_usage_t {
    fn fill<const N: usize>(from: &[u64]) -> [u64; N] {
        let mut out = [0; N];
        out[..from.len()].copy_from_slice(from);
        out
    }
    astrid_usage_t {
        calls: fill(&t.calls),
        fuel_consumed: t.fuel,
        guest_ns: t.guest_ns,
        host_calls: fill(&t.host_calls),
        host_ns: fill(&t.host_ns),
        gate_asks: t.gate_asks,
        gate_denials: t.gate_denials,
        read_bytes: fill(&t.read_bytes),
        written_bytes: fill(&t.written_bytes),
        bus_published: t.bus_published,
        bus_delivered: t.bus_delivered,
        bus_dropped: t.bus_dropped,
        bus_lagged: t.bus_lagged,
        dispatch_dropped: t.dispatch_dropped,
    }
}

/// Fills `*out` with the capsule's figures (set `out->size` first; a smaller
/// size from an older header gets the fields it knows). Reading costs a
/// lock per capsule, never a call's time. Errors: `ASTRID_E_INVALID_ARGUMENT`
/// (NULL, `out->size` too small), `ASTRID_E_CLOSED` (unloaded, runtime freed).
#[no_mangle]
pub extern "C" fn astrid_capsule_stats(
    capsule: *mut astrid_capsule_t,
    out: *mut astrid_capsule_stats_t,
    err: *mut *mut astrid_error_t,
) -> astrid_status_t {
    guard(err, || {
        non_null(out, "out")?;
        let stats = capsule_from(capsule)?.capsule.stats()?;
        let value = astrid_capsule_stats_t {
            size: std::mem::size_of::<astrid_capsule_stats_t>(),
            usage: c_usage(&stats.totals),
            instances_live: stats.instances_live,
            instances_idle: stats.instances_idle,
            memory_bytes: stats.memory_bytes,
            memory_peak_bytes: stats.memory_peak_bytes,
            kv_bytes: stats.kv_bytes.unwrap_or(u64::MAX),
        };
        // SAFETY: non-NULL, the caller's writable size-prefixed struct.
        unsafe {
            write_sized(
                out,
                value,
                std::mem::size_of::<astrid_capsule_stats_t>(),
                "out",
            )
        }
    })
}

/// Fills `*out` with the runtime's figures (set `out->size` first).
/// Errors: `ASTRID_E_INVALID_ARGUMENT` (NULL, `out->size` too small),
/// `ASTRID_E_CLOSED` (freed or closed runtime).
#[no_mangle]
pub extern "C" fn astrid_runtime_stats(
    rt: *mut astrid_runtime_t,
    out: *mut astrid_runtime_stats_t,
    err: *mut *mut astrid_error_t,
) -> astrid_status_t {
    guard(err, || {
        non_null(out, "out")?;
        let stats = runtime_from(rt)?.stats()?;
        let value = astrid_runtime_stats_t {
            size: std::mem::size_of::<astrid_runtime_stats_t>(),
            usage: c_usage(&stats.totals),
            capsules_loaded: stats.capsules_loaded,
            instances_live: stats.instances_live,
            instances_idle: stats.instances_idle,
            memory_bytes: stats.memory_bytes,
        };
        // SAFETY: non-NULL, the caller's writable size-prefixed struct.
        unsafe {
            write_sized(
                out,
                value,
                std::mem::size_of::<astrid_runtime_stats_t>(),
                "out",
            )
        }
    })
}

/// The runtime's and each loaded capsule's figures in the Prometheus text
/// exposition format (0.0.4), labelled `capsule` and `capsule_id`, ready to
/// serve as `/metrics`. On success `*text` receives a NUL-terminated UTF-8
/// string to free with `astrid_text_free`, and `*len` (when non-NULL) its
/// length. Errors: `ASTRID_E_INVALID_ARGUMENT` (NULL `text`),
/// `ASTRID_E_CLOSED` (freed or closed runtime).
#[no_mangle]
pub extern "C" fn astrid_runtime_metrics_text(
    rt: *mut astrid_runtime_t,
    text: *mut *mut libc::c_char,
    len: *mut usize,
    err: *mut *mut astrid_error_t,
) -> astrid_status_t {
    guard(err, || {
        non_null(text, "text")?;
        let rendered = runtime_from(rt)?.metrics_text()?;
        // Label values are escaped and names are fixed: no NUL inside.
        let owned = std::ffi::CString::new(rendered).map_err(|_| {
            crate::error::Error::new(crate::error::Code::Internal, "metrics text holds a NUL")
        })?;
        let n = owned.as_bytes().len();
        // SAFETY: checked non-NULL above; `len` is NULL or writable.
        unsafe {
            *text = owned.into_raw();
            if !len.is_null() {
                *len = n;
            }
        }
        Ok(())
    })
}

/// Frees a text from `astrid_runtime_metrics_text`. NULL is a no-op.
/// Freeing twice is undefined behaviour.
#[no_mangle]
pub extern "C" fn astrid_text_free(text: *mut libc::c_char) {
    if !text.is_null() {
        // SAFETY: came from CString::into_raw in this library.
        drop(unsafe { std::ffi::CString::from_raw(text) });
    }
}
