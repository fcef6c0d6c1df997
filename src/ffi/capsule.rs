//! Capsules: load (directory or bytes), readiness, introspection, unload.
//! Calls on a loaded capsule are in `call.rs`.

use super::errors::astrid_error_t;
use super::runtime::astrid_finalizer_fn;
use super::runtime::{astrid_runtime_flags_t, astrid_runtime_t, runtime_from};
use super::vfs::{as_vfs, astrid_vfs_ops_t, callback_vfs, disarm_unused, CallbackVfs};
use super::{
    astrid_status_t, bytes_arg, guard, non_null, opt_str_arg, read_sized_in, sized_struct, str_arg,
    Registry,
};
use crate::capsule::{Capsule, LoadOptions, Watchdog};
use crate::error::{Error, Result};
use once_cell::sync::Lazy;
use std::cell::RefCell;
use std::ffi::CString;
use std::sync::{Arc, Weak};
use std::time::Duration;

/// A loaded capsule. An opaque registry handle: thread-safe (calls may run
/// concurrently), and once unloaded (or its runtime freed) every use is
/// refused with `ASTRID_E_CLOSED` (NULL / false from the accessors).
pub struct astrid_capsule_t {
    _private: [u8; 0],
}

pub(super) struct CapsuleHandle {
    pub(super) capsule: Capsule,
    name: CString,
    id: CString,
}

static CAPSULES: Lazy<Registry<CapsuleHandle>> = Lazy::new(Registry::new);

thread_local! {
    /// The capsule this thread used last. Embedders mostly call one capsule
    /// over and over; this spares each call the registry's lock and lookup.
    /// Weak, so the cache never keeps a freed capsule alive, and ids are
    /// never reused, so a stale entry can only miss.
    static LAST_CAPSULE: RefCell<(usize, Weak<CapsuleHandle>)> =
        const { RefCell::new((0, Weak::new())) };
}

/// The live handle behind `capsule`. A handle whose capsule has begun to
/// unload (or whose runtime was freed) is `Closed`, even while a call that
/// was abandoned by unload still holds it: neither this thread's cache nor
/// that call may keep an unloaded capsule usable.
pub(super) fn capsule_from(capsule: *const astrid_capsule_t) -> Result<Arc<CapsuleHandle>> {
    let handle = lookup(capsule)?;
    if handle.capsule.is_unloaded() {
        return Err(Error::closed(format!(
            "capsule `{}` has been unloaded (or its runtime freed)",
            handle.capsule.name()
        )));
    }
    Ok(handle)
}

fn lookup(capsule: *const astrid_capsule_t) -> Result<Arc<CapsuleHandle>> {
    let id = capsule as usize;
    // `try_with`: during thread exit the cache may be gone; the registry is not.
    let cached = LAST_CAPSULE
        .try_with(|last| {
            let last = last.borrow();
            if last.0 == id {
                last.1.upgrade()
            } else {
                None
            }
        })
        .ok()
        .flatten();
    if let Some(handle) = cached {
        return Ok(handle);
    }
    let handle = CAPSULES.get(id, "capsule")?;
    let _ = LAST_CAPSULE.try_with(|last| *last.borrow_mut() = (id, Arc::downgrade(&handle)));
    Ok(handle)
}

/// One `[env]` value for `astrid:sys` `get-config`: UTF-8 `(ptr, len)` pairs.
#[repr(C)]
pub struct astrid_config_entry_t {
    pub key: *const libc::c_char,
    pub key_len: usize,
    pub value: *const libc::c_char,
    pub value_len: usize,
}

/// Per-capsule load options. Size-prefixed: set `size = sizeof(astrid_load_options_t)`
/// or call `astrid_load_options_init`. Read during the load call only.
/// Strings are UTF-8 `(ptr, len)` pairs (`len == ASTRID_NTS`: NUL-terminated);
/// NULL pointers mean "not set". Zero numeric fields mean "runtime default".
#[repr(C)]
#[derive(Clone, Copy)]
pub struct astrid_load_options_t {
    pub size: usize,
    /// The capsule's owner principal (1..=128 bytes, no control characters).
    pub principal: *const libc::c_char,
    pub principal_len: usize,
    /// Host directory served as the workspace mount (`cwd://`).
    pub workspace_root: *const libc::c_char,
    pub workspace_root_len: usize,
    /// Host directory served as the owner's `home://` mount.
    pub home_root: *const libc::c_char,
    pub home_root_len: usize,
    /// Linear-memory ceiling per instance in bytes.
    pub memory_limit_bytes: u64,
    /// Wall-clock deadline per call in milliseconds.
    pub timeout_ms: u64,
    /// Fuel per call.
    pub fuel: u64,
    /// Values for the manifest's `[env]` keys (`config_len` entries). Keys the
    /// manifest does not declare are ignored; a declared non-secret key with
    /// neither a value here nor a manifest default fails the load.
    pub config: *const astrid_config_entry_t,
    pub config_len: usize,
    /// Cumulative bytes the capsule may write through `astrid:fs` over its
    /// lifetime; 0 = unlimited. Exhausted → the guest sees `quota`.
    pub fs_write_budget: u64,
    /// Run-loop watchdog window in ms: a loop that goes three windows
    /// without a waiting host call (`recv`, `poll`, `sleep-ns`, blocking
    /// reads) is interrupted and marked failed. 0 = 5000;
    /// `ASTRID_WATCHDOG_OFF` exempts the capsule.
    pub watchdog_ms: u64,
    /// The runtime's network flags for this capsule only, added to the
    /// runtime's own: `ASTRID_RUNTIME_ALLOW_LOOPBACK`,
    /// `ASTRID_RUNTIME_ALLOW_ANY_BIND`, `ASTRID_RUNTIME_WASI_SOCKETS` (any
    /// other flag is `ASTRID_E_INVALID_ARGUMENT`). Fields from here on were
    /// appended: a smaller `size` (at least `offsetof(astrid_load_options_t,
    /// net_flags)`) reads them as 0 / NULL.
    pub net_flags: astrid_runtime_flags_t,
    /// Providers for this capsule's `cwd`, `home` and `tmp` mounts, in place
    /// of the runtime's mounts (`astrid_runtime_mount_vfs`) and the built-in
    /// ones. A `cwd` provider with `workspace_root` (or `home` with
    /// `home_root`) is `ASTRID_E_INVALID_ARGUMENT`.
    pub cwd: astrid_load_vfs_t,
    pub home: astrid_load_vfs_t,
    pub tmp: astrid_load_vfs_t,
}

/// The smallest `size` of `astrid_load_options_t` (its first published version).
const LOAD_OPTIONS_MIN_SIZE: usize = std::mem::offset_of!(astrid_load_options_t, net_flags);

/// A VFS provider for one of a capsule's mounts, given at load
/// (`astrid_load_options_t.cwd`, `home`, `tmp`): the same table, `user_data`
/// and finalizer as `astrid_runtime_mount_vfs` takes. NULL `ops` = none.
/// The finalizer runs once per provider, when the capsule's last instance
/// lets it go (after unload); a failed load leaves `user_data` with the
/// caller and runs nothing. (The same `user_data` given for two mounts is
/// two providers: its finalizer runs twice.)
#[repr(C)]
#[derive(Clone, Copy)]
pub struct astrid_load_vfs_t {
    pub ops: *const astrid_vfs_ops_t,
    pub user_data: *mut libc::c_void,
    pub finalizer: astrid_finalizer_fn,
}

const NO_PROVIDER: astrid_load_vfs_t = astrid_load_vfs_t {
    ops: std::ptr::null(),
    user_data: std::ptr::null_mut(),
    finalizer: None,
};

/// `astrid_load_options_t.watchdog_ms`: no run-loop watchdog for this capsule.
pub const ASTRID_WATCHDOG_OFF: u64 = u64::MAX;

/// The `(key, value)` pairs of a C array of config entries.
///
/// # Safety
/// `ptr` must be NULL (with `len` 0) or point to `len` readable entries
/// whose strings are valid for their lengths.
pub(super) unsafe fn config_entries(
    ptr: *const astrid_config_entry_t,
    len: usize,
    what: &str,
) -> Result<Vec<(String, String)>> {
    if len == 0 {
        return Ok(Vec::new());
    }
    non_null(ptr, what)?;
    // SAFETY: the caller promises `len` readable entries.
    let entries = unsafe { std::slice::from_raw_parts(ptr, len) };
    entries
        .iter()
        .map(|e| {
            // SAFETY: each entry's pointers are valid for their lengths.
            let key = unsafe { str_arg(e.key, e.key_len, "config key")? };
            let value = unsafe { str_arg(e.value, e.value_len, "config value")? };
            if key.is_empty() {
                return Err(Error::invalid_argument("a config key is empty"));
            }
            Ok((key.to_string(), value.to_string()))
        })
        .collect()
}

/// The provider tables of a load, checked before any provider is built
/// (so a refused table never runs another one's finalizer).
///
/// # Safety
/// Each `ops` must be NULL or a readable size-prefixed table.
unsafe fn load_tables(
    tables: [(&astrid_load_vfs_t, &str); 3],
) -> Result<[Option<Arc<CallbackVfs>>; 3]> {
    let mut checked = [None; 3];
    for (slot, (table, what)) in checked.iter_mut().zip(tables) {
        // SAFETY: caller contract.
        *slot = unsafe { sized_struct(table.ops, what)? }.map(|ops| (*ops, *table));
    }
    Ok(checked
        .map(|entry| entry.map(|(ops, table)| callback_vfs(ops, table.user_data, table.finalizer))))
}

/// The load options, and the providers built from their VFS tables (to
/// disarm if the load fails).
type Loading = (LoadOptions, Vec<Arc<CallbackVfs>>);

unsafe fn load_options(opts: *const astrid_load_options_t) -> Result<Loading> {
    // SAFETY: NULL or a readable size-prefixed struct.
    let Some(o) = (unsafe { read_sized_in(opts, LOAD_OPTIONS_MIN_SIZE, "opts")? }) else {
        return Ok((LoadOptions::default(), Vec::new()));
    };
    let mut options = unsafe { plain_load_options(&o)? };
    // SAFETY: NULL or readable tables (caller contract).
    let [cwd, home, tmp] = unsafe {
        load_tables([
            (&o.cwd, "opts.cwd.ops"),
            (&o.home, "opts.home.ops"),
            (&o.tmp, "opts.tmp.ops"),
        ])?
    };
    options.net_flags = o.net_flags;
    options.cwd_vfs = cwd.as_ref().map(as_vfs);
    options.home_vfs = home.as_ref().map(as_vfs);
    options.tmp_vfs = tmp.as_ref().map(as_vfs);
    Ok((options, [cwd, home, tmp].into_iter().flatten().collect()))
}

/// Loads with `options`, giving the providers' `user_data` back when the
/// load fails.
fn load_with(
    (options, providers): Loading,
    load: impl FnOnce(&LoadOptions) -> Result<Capsule>,
    out: *mut *mut astrid_capsule_t,
) -> Result<()> {
    let loaded = load(&options);
    drop(options);
    match loaded {
        Ok(capsule) => publish(capsule, out),
        Err(e) => {
            providers.into_iter().for_each(disarm_unused);
            Err(e)
        }
    }
}

/// The options that hold no provider.
///
/// # Safety
/// The strings and the config array of `o` are valid for their lengths.
unsafe fn plain_load_options(o: &astrid_load_options_t) -> Result<LoadOptions> {
    unsafe {
        Ok(LoadOptions {
            principal: opt_str_arg(o.principal, o.principal_len, "opts.principal")?
                .map(str::to_string),
            workspace_root: opt_str_arg(
                o.workspace_root,
                o.workspace_root_len,
                "opts.workspace_root",
            )?
            .map(Into::into),
            home_root: opt_str_arg(o.home_root, o.home_root_len, "opts.home_root")?.map(Into::into),
            memory_limit: Some(o.memory_limit_bytes).filter(|&v| v > 0),
            timeout: Some(o.timeout_ms)
                .filter(|&v| v > 0)
                .map(Duration::from_millis),
            fuel: Some(o.fuel).filter(|&v| v > 0),
            config: config_entries(o.config, o.config_len, "opts.config")?,
            fs_write_budget: Some(o.fs_write_budget).filter(|&v| v > 0),
            watchdog: match o.watchdog_ms {
                0 => Watchdog::Default,
                ASTRID_WATCHDOG_OFF => Watchdog::Off,
                ms => Watchdog::Window(Duration::from_millis(ms)),
            },
            // Assigned per capsule name: astrid_runtime_assign_unix_socket.
            unix_socket_path: None,
            ..LoadOptions::default()
        })
    }
}

fn publish(capsule: Capsule, out: *mut *mut astrid_capsule_t) -> Result<()> {
    let name = CString::new(capsule.name()).unwrap_or_default();
    let id = CString::new(capsule.id()).unwrap_or_default();
    let handle = CAPSULES.insert(CapsuleHandle { capsule, name, id });
    // SAFETY: `out` was checked non-NULL by the caller.
    unsafe { *out = handle as *mut astrid_capsule_t };
    Ok(())
}

/// Fills `opts` with defaults (everything unset) and sets `opts->size`.
/// Errors: `ASTRID_E_INVALID_ARGUMENT` when `opts` is NULL.
#[no_mangle]
pub extern "C" fn astrid_load_options_init(
    opts: *mut astrid_load_options_t,
    err: *mut *mut astrid_error_t,
) -> astrid_status_t {
    guard(err, || {
        non_null(opts, "opts")?;
        // SAFETY: non-NULL, writable.
        unsafe {
            opts.write(astrid_load_options_t {
                size: std::mem::size_of::<astrid_load_options_t>(),
                principal: std::ptr::null(),
                principal_len: 0,
                workspace_root: std::ptr::null(),
                workspace_root_len: 0,
                home_root: std::ptr::null(),
                home_root_len: 0,
                memory_limit_bytes: 0,
                timeout_ms: 0,
                fuel: 0,
                config: std::ptr::null(),
                config_len: 0,
                fs_write_budget: 0,
                watchdog_ms: 0,
                net_flags: 0,
                cwd: NO_PROVIDER,
                home: NO_PROVIDER,
                tmp: NO_PROVIDER,
            })
        };
        Ok(())
    })
}

/// Loads the capsule in directory `dir` (`Capsule.toml` plus the component
/// its `[[component]] file` names). `opts` may be NULL. On success
/// `*out_capsule` receives a handle to release with `astrid_capsule_unload`.
/// Errors: `ASTRID_E_INVALID_ARGUMENT`, `ASTRID_E_UTF8`, `ASTRID_E_NOT_FOUND`
/// (no manifest or component file), `ASTRID_E_MANIFEST`, `ASTRID_E_COMPILE`,
/// `ASTRID_E_LINK`, `ASTRID_E_TRAP` / `ASTRID_E_RESOURCE_LIMIT` (the first
/// instantiation failed), `ASTRID_E_CLOSED` (runtime freed), `ASTRID_E_IO`,
/// `ASTRID_E_REENTRANT` (called from a callback). Thread-safe.
#[no_mangle]
pub extern "C" fn astrid_capsule_load(
    rt: *mut astrid_runtime_t,
    dir: *const libc::c_char,
    dir_len: usize,
    opts: *const astrid_load_options_t,
    out_capsule: *mut *mut astrid_capsule_t,
    err: *mut *mut astrid_error_t,
) -> astrid_status_t {
    guard(err, || {
        non_null(out_capsule, "out_capsule")?;
        let runtime = runtime_from(rt)?;
        non_null(dir, "dir")?;
        // SAFETY: pointer arguments are valid for their lengths (caller contract).
        let dir = unsafe { str_arg(dir, dir_len, "dir")? };
        let loading = unsafe { load_options(opts)? };
        load_with(loading, |o| runtime.load_dir(dir.as_ref(), o), out_capsule)
    })
}

/// Loads a capsule from memory: component bytes and `Capsule.toml` text. In
/// this form `[[component]]` may be omitted; when present, its `file` is
/// ignored and its `hash` checked. Both buffers are copied. Errors as for
/// `astrid_capsule_load`. Thread-safe.
#[no_mangle]
pub extern "C" fn astrid_capsule_load_bytes(
    rt: *mut astrid_runtime_t,
    wasm: *const u8,
    wasm_len: usize,
    manifest: *const libc::c_char,
    manifest_len: usize,
    opts: *const astrid_load_options_t,
    out_capsule: *mut *mut astrid_capsule_t,
    err: *mut *mut astrid_error_t,
) -> astrid_status_t {
    guard(err, || {
        non_null(out_capsule, "out_capsule")?;
        let runtime = runtime_from(rt)?;
        non_null(manifest, "manifest")?;
        // SAFETY: pointer arguments are valid for their lengths (caller contract).
        let wasm = unsafe { bytes_arg(wasm, wasm_len, "wasm")? };
        let manifest = unsafe { str_arg(manifest, manifest_len, "manifest")? };
        let loading = unsafe { load_options(opts)? };
        load_with(
            loading,
            |o| runtime.load_bytes(wasm, manifest, o),
            out_capsule,
        )
    })
}

/// Waits up to `timeout_ms` until the capsule is ready: a capsule that
/// exports `run` is ready once its loop calls `astrid:sys` `signal-ready`;
/// any other capsule is ready once loaded (returns at once). Errors:
/// `ASTRID_E_INVALID_ARGUMENT`, `ASTRID_E_TIMEOUT` (not ready in time),
/// `ASTRID_E_TRAP` / `ASTRID_E_TIMEOUT` / `ASTRID_E_RESOURCE_LIMIT` (the
/// run loop failed or returned; it is not restarted), `ASTRID_E_CLOSED`
/// (unloaded), `ASTRID_E_REENTRANT` (from a callback). Thread-safe.
#[no_mangle]
pub extern "C" fn astrid_capsule_wait_ready(
    capsule: *mut astrid_capsule_t,
    timeout_ms: u64,
    err: *mut *mut astrid_error_t,
) -> astrid_status_t {
    guard(err, || {
        capsule_from(capsule)?
            .capsule
            .wait_ready(Duration::from_millis(timeout_ms))
    })
}

/// Whether the capsule runs a `run` loop (it exports a real `run`, not a
/// guest-SDK placeholder). Unknown or unloaded handle (runtime freed
/// included) or NULL: false.
#[no_mangle]
pub extern "C" fn astrid_capsule_runs_loop(capsule: *const astrid_capsule_t) -> bool {
    let mut runs = false;
    let _ = guard(std::ptr::null_mut(), || {
        runs = capsule_from(capsule.cast_mut())?.capsule.runs_loop();
        Ok(())
    });
    runs
}

/// Unloads and frees the capsule: cancels its calls, waits for them (bounded
/// by the runtime's unload grace), frees its instances, then frees the handle.
/// No log callback for this capsule runs after it returns. NULL is a no-op.
/// The handle is invalid afterwards: any further use, on any thread,
/// returns `ASTRID_E_CLOSED` (NULL or false from the accessors), also while
/// a call that outlived the grace still runs (handles are looked up, never
/// dereferenced).
/// Errors: `ASTRID_E_CLOSED` (already unloaded), `ASTRID_E_REENTRANT` (from
/// inside a callback; nothing is done). Thread-safe.
#[no_mangle]
pub extern "C" fn astrid_capsule_unload(
    capsule: *mut astrid_capsule_t,
    err: *mut *mut astrid_error_t,
) -> astrid_status_t {
    guard(err, || {
        if capsule.is_null() {
            return Ok(());
        }
        crate::handoff::refuse_reentry("astrid_capsule_unload")?;
        let handle = CAPSULES.remove(capsule as usize).ok_or_else(|| {
            Error::closed("`capsule` was already unloaded or never created by this library")
        })?;
        handle.capsule.unload()
    })
}

/// The capsule's `[package] name`, NUL-terminated; its length goes to `*len`
/// when non-NULL. Borrowed: valid until `astrid_capsule_unload` is called
/// for the handle, on any thread: do not read it once that call has begun
/// (its memory may be freed at any moment from then on, also while a call
/// that outlived the unload grace still runs; copy the name if you need it
/// longer). Freeing the runtime does not end it.
/// From the moment unload begins, or once the runtime is freed, this
/// returns NULL, as for an unknown handle or NULL. Thread-safe.
#[no_mangle]
pub extern "C" fn astrid_capsule_name(
    capsule: *const astrid_capsule_t,
    len: *mut usize,
) -> *const libc::c_char {
    borrowed_text(capsule, len, |h| &h.name)
}

/// The capsule's id (UUIDv5 of its name and component hash), as
/// `astrid:sys` `check-capsule-capability` expects it. Borrowing and NULL
/// returns as for `astrid_capsule_name`.
#[no_mangle]
pub extern "C" fn astrid_capsule_id(
    capsule: *const astrid_capsule_t,
    len: *mut usize,
) -> *const libc::c_char {
    borrowed_text(capsule, len, |h| &h.id)
}

fn borrowed_text(
    capsule: *const astrid_capsule_t,
    len: *mut usize,
    pick: fn(&CapsuleHandle) -> &CString,
) -> *const libc::c_char {
    let found = std::panic::catch_unwind(|| capsule_from(capsule).ok());
    let Ok(Some(handle)) = found else {
        return std::ptr::null();
    };
    let text = pick(&handle);
    if !len.is_null() {
        // SAFETY: caller-provided writable pointer.
        unsafe { *len = text.as_bytes().len() };
    }
    // The CString lives as long as the handle: at least until unload
    // removes it from the registry (longer while an abandoned call holds
    // it, which the header does not promise).
    text.as_ptr()
}

/// Whether the capsule holds a capability, by the names of
/// `astrid:sys` `enumerate-capabilities` (`net`, `net_connect`, `net_bind`,
/// `fs_read`, `fs_write`, `uplink`). Unknown or unloaded handle (runtime
/// freed included), NULL or bad UTF-8: false.
#[no_mangle]
pub extern "C" fn astrid_capsule_has_capability(
    capsule: *const astrid_capsule_t,
    name: *const libc::c_char,
    name_len: usize,
) -> bool {
    std::panic::catch_unwind(|| {
        let Ok(handle) = capsule_from(capsule) else {
            return false;
        };
        // SAFETY: caller contract for (ptr, len) strings.
        let Ok(name) = (unsafe { str_arg(name, name_len, "name") }) else {
            return false;
        };
        handle.capsule.capabilities().iter().any(|c| c == name)
    })
    .unwrap_or(false)
}
