//! A loaded capsule: its manifest, its pre-linked component, a pool of
//! instances that calls lease exclusively, cancellation and unload.

use crate::cancel::CancelToken;
use crate::config::FLAG_DISABLE_CAPABILITY_REGISTRY;
use crate::engine::{self, CompileCache, ContentHash};
use crate::error::{Code, Error, Result};
use crate::handoff::refuse_reentry;
use crate::host::{CallContext, CapsuleShared, HostState, Interrupt};
use crate::manifest::{EnvKind, Manifest};
use crate::policy::paths::Mount;
use crate::services::{LogLevel, Services};
use crate::signal::lock;
use crate::vfs::host_dir::HostDir;
use crate::vfs::memory::MemoryFs;
use crate::vfs::{CapsuleMounts, Vfs};
use crossbeam_utils::atomic::AtomicCell;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};
use wasmtime::component::Linker;
use wasmtime::component::{ComponentExportIndex, ComponentType, InstancePre, Lift, TypedFunc};
use wasmtime::{Engine, Store, Trap, UpdateDeadline};

/// What the embedder may set per capsule at load.
#[derive(Clone, Debug, Default)]
pub struct LoadOptions {
    /// The capsule's owner (its data scope outside calls).
    pub principal: Option<String>,
    /// Host directory served as the workspace (`cwd`) mount.
    pub workspace_root: Option<PathBuf>,
    /// Host directory served as the owner's `home` mount.
    pub home_root: Option<PathBuf>,
    pub memory_limit: Option<u64>,
    pub timeout: Option<Duration>,
    pub fuel: Option<u64>,
    /// Values for the manifest's `[env]` keys.
    pub config: Vec<(String, String)>,
    /// Cumulative bytes the capsule may write through `astrid:fs`; `None`
    /// = unlimited. Exhausted → `quota`.
    pub fs_write_budget: Option<u64>,
    /// The run-loop watchdog (host ABI §7.2); only the embedder can turn it off.
    pub watchdog: Watchdog,
    /// The socket path `bind-unix` binds for this capsule (never shown to
    /// the guest); `None`: the one assigned to the capsule's name with
    /// `Runtime::assign_unix_socket`, else `bind-unix` fails with
    /// `address-not-available`.
    pub unix_socket_path: Option<PathBuf>,
}

/// The run-loop watchdog of a capsule.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Watchdog {
    /// Three windows of five seconds.
    #[default]
    Default,
    /// Three windows of this length.
    Window(Duration),
    /// Exempt: the loop may run without waiting host calls.
    Off,
}

/// What the embedder may set per call.
#[derive(Clone, Debug, Default)]
pub struct CallOptions {
    /// The invoking principal (the call's context principal).
    pub principal: Option<String>,
    /// Config values that take precedence over load-time values.
    pub config_overlay: Vec<(String, String)>,
}

/// The most bytes an argument handed to the guest may have: a wasm32 guest
/// addresses at most 4 GiB, and the canonical ABI's lengths are `u32`.
pub const MAX_GUEST_BYTES: usize = u32::MAX as usize;

/// Refuses an argument longer than a wasm32 guest can address. Checked
/// before the argument is read, copied or handed to the guest.
/// `usize::MAX` passes: it is `ASTRID_NTS` ("measure a NUL-terminated
/// string") at the C boundary, and `Capsule::call` checks the measured length.
pub(crate) fn check_guest_len(len: usize, what: &str) -> Result<()> {
    if len > MAX_GUEST_BYTES && len != usize::MAX {
        return Err(Error::invalid_argument(format!(
            "`{what}` is {len} bytes; a wasm32 guest addresses at most 4 GiB, so the limit is {MAX_GUEST_BYTES} bytes"
        )));
    }
    Ok(())
}

/// The interceptor's answer (`astrid:guest/lifecycle.capsule-result`).
#[derive(ComponentType, Lift, Clone, Debug, PartialEq, Eq)]
#[component(record)]
pub struct CallResult {
    pub action: String,
    pub data: Option<String>,
}

/// Who a pooled call runs for and what triggered it.
pub(crate) struct Invocation {
    /// The context principal (`None`: none, e.g. a `system` message).
    pub principal: Option<Arc<str>>,
    pub overlay: Option<Arc<HashMap<String, String>>>,
    /// The publishing capsule's id for bus messages; `None`: the embedder's
    /// (a direct call, which then clones no `Arc`).
    pub source_id: Option<Arc<str>>,
    /// When the triggering call or message was made; `None`: now.
    pub timestamp_ms: Option<u64>,
    /// Depth of the triggering message (0 for embedder calls).
    pub depth: u32,
}

struct Limits {
    memory: u64,
    timeout: Duration,
    fuel: u64,
}

/// What a store is for.
#[derive(Clone, Copy)]
enum StoreKind {
    /// Pooled: per-call fuel and deadline.
    Pooled,
    /// A run loop's dedicated store: no fuel limit and no deadline, but
    /// interrupted after three `watchdog` windows without a waiting host call.
    RunLoop { watchdog: Option<Duration> },
}

/// A deadline no run loop reaches.
const RUN_LOOP_HORIZON: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

/// The interceptor export, type-checked once per instance. `'static` is the
/// widest lifetime; `TypedFunc` is covariant in its parameters, so the same
/// value calls with borrowed arguments of any lifetime.
type HookFunc = TypedFunc<(&'static str, &'static [u8]), (CallResult,)>;

/// One pooled instance and its store, with its interceptor export resolved.
struct Worker {
    store: Store<HostState>,
    hook: Option<HookFunc>,
    /// The cancel generation of the token in `store.data().call.token`;
    /// while it is current, a call reuses that token without a lock.
    generation: u64,
    /// When it was last returned to the pool (for idle trimming).
    idle_since: Instant,
}

/// Idle instances unused this long are freed by the runtime's housekeeping.
pub const IDLE_INSTANCE_TTL: Duration = Duration::from_secs(30);

/// Idle instances other than the one in `CapsuleInner::hot`. Instances in
/// use are `live` minus the idle ones (here and in `hot`).
struct Pool {
    /// Idle instances. Boxed, because they move to and from `hot` (one
    /// pointer wide) on every call.
    #[allow(clippy::vec_box)]
    idle: Vec<Box<Worker>>,
    live: usize,
    /// Threads waiting on `pool_changed`; notifying costs a syscall, so it
    /// happens only when someone waits. Mirrored in `pool_waiters`.
    waiters: usize,
}

const LOADED: u8 = 0;
const UNLOADING: u8 = 1;
const UNLOADED: u8 = 2;

pub struct CapsuleInner {
    pub(crate) platform: Arc<Platform>,
    pub(crate) shared: Arc<CapsuleShared>,
    pre: InstancePre<HostState>,
    hook: Option<ComponentExportIndex>,
    /// Whether the component imports WASI, whose sync host functions need
    /// the runtime's tokio context entered around guest code.
    uses_wasi: bool,
    limits: Limits,
    /// Token of the current call generation; `cancel` replaces it and bumps
    /// `call_generation` under this lock.
    call_token: Mutex<CancelToken>,
    /// Read without the lock by every call to find out whether the token
    /// its instance holds is still the current one.
    call_generation: AtomicU64,
    /// The instance returned last, parked outside the pool's lock: a thread
    /// calling one capsule over and over takes and returns it with one
    /// atomic swap each way. Every other path goes through `pool`, and the
    /// swaps (acquire-release on this one cell) order a parked instance
    /// against unloading and against waiters: see `release`.
    hot: AtomicCell<Option<Box<Worker>>>,
    pool: Mutex<Pool>,
    /// `pool.waiters`, readable without the lock.
    pool_waiters: AtomicUsize,
    pool_changed: Condvar,
    pool_max: usize,
    state: AtomicU8,
}

/// Owner of a loaded capsule.
pub struct Capsule {
    pub(crate) inner: Arc<CapsuleInner>,
}

/// The capsule's mounts: a host root from the load options wins, then a
/// provider the embedder mounted on the runtime, then the built-in memory
/// filesystem (`cwd`, `tmp`) or nothing (`home`).
fn build_mounts(rt: &Services, options: &LoadOptions) -> Result<CapsuleMounts> {
    let host_dir = |root: &Path, what: &str| -> Result<Arc<dyn Vfs>> {
        let dir = HostDir::open(root).map_err(|e| {
            Error::new(Code::Io, format!("cannot open the {what} as a sandbox")).caused_by(e)
        })?;
        Ok(Arc::new(dir))
    };
    let cwd = match &options.workspace_root {
        Some(root) => host_dir(root, "workspace root")?,
        None => rt
            .mounted(Mount::Cwd)
            .unwrap_or_else(|| Arc::new(MemoryFs::new(rt.config.memfs_limits))),
    };
    let home = match &options.home_root {
        Some(root) => Some(host_dir(root, "home root")?),
        None => rt.mounted(Mount::Home),
    };
    Ok(CapsuleMounts::new(
        cwd,
        home,
        rt.mounted(Mount::Tmp),
        rt.config.memfs_limits,
    ))
}

fn read_file(path: &Path, what: &str) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| {
        let code = if e.kind() == std::io::ErrorKind::NotFound {
            Code::NotFound
        } else {
            Code::Io
        };
        Error::new(code, format!("cannot read {what} `{}`", path.display())).caused_by(e)
    })
}

/// What the capsules of one runtime share: the runtime's services, the
/// engine and linker they are compiled and instantiated with, the compile
/// cache, and the registry of loaded capsules (weakly held: a capsule lives
/// as long as its owner handle or a call in flight).
pub(crate) struct Platform {
    pub(crate) services: Arc<Services>,
    pub(crate) engine: Engine,
    pub(crate) linker: Linker<HostState>,
    pub(crate) compile_cache: CompileCache,
    capsules: Mutex<Vec<Weak<CapsuleInner>>>,
}

impl Platform {
    pub(crate) fn new(
        services: Arc<Services>,
        engine: Engine,
        linker: Linker<HostState>,
        compile_cache: CompileCache,
    ) -> Platform {
        Platform {
            services,
            engine,
            linker,
            compile_cache,
            capsules: Mutex::new(Vec::new()),
        }
    }

    fn register(&self, capsule: &Arc<CapsuleInner>) -> Result<()> {
        let mut list = lock(&self.capsules);
        // Checked under the registry lock so shutdown cannot miss it.
        self.services.check_open()?;
        list.retain(|w| w.strong_count() > 0);
        list.push(Arc::downgrade(capsule));
        Ok(())
    }

    fn unregister(&self, capsule: &CapsuleInner) {
        lock(&self.capsules).retain(|w| {
            w.upgrade()
                .is_some_and(|c| !std::ptr::eq(Arc::as_ptr(&c), capsule))
        });
    }

    /// The loaded capsules, strongly held for the caller's use.
    pub(crate) fn live_capsules(&self) -> Vec<Arc<CapsuleInner>> {
        lock(&self.capsules)
            .iter()
            .filter_map(Weak::upgrade)
            .collect()
    }

    /// Frees pooled instances idle for longer than their TTL.
    pub(crate) fn trim_idle_instances(&self) {
        for capsule in self.live_capsules() {
            capsule.trim_idle_older_than(IDLE_INSTANCE_TTL);
        }
    }

    /// Unloads every capsule (runtime shutdown): all are cancelled first,
    /// then each waits up to `grace` for its calls in flight.
    pub(crate) fn unload_all(&self, grace: Duration) {
        let capsules: Vec<_> = lock(&self.capsules).drain(..).collect();
        for capsule in capsules.iter().filter_map(Weak::upgrade) {
            capsule.begin_unload();
        }
        for capsule in capsules.iter().filter_map(Weak::upgrade) {
            capsule.finish_unload(grace);
        }
    }

    /// `None` when the embedder disabled registry lookups.
    pub(crate) fn capsule_holds_capability(&self, id: &str, capability: &str) -> Option<bool> {
        if self.services.config.flags & FLAG_DISABLE_CAPABILITY_REGISTRY != 0 {
            return None;
        }
        let list = lock(&self.capsules);
        let found = list
            .iter()
            .filter_map(Weak::upgrade)
            .find(|c| c.shared.id == id)
            .is_some_and(|c| c.shared.capability_names.iter().any(|n| n == capability));
        Some(found)
    }
}

impl Capsule {
    /// Loads a capsule directory: `Capsule.toml` and the component it names.
    pub(crate) fn load_dir(
        platform: &Arc<Platform>,
        dir: &Path,
        options: &LoadOptions,
    ) -> Result<Capsule> {
        refuse_reentry("astrid_capsule_load")?;
        let manifest_path = dir.join("Capsule.toml");
        let text = read_file(&manifest_path, "the manifest")?;
        let text = String::from_utf8(text).map_err(|_| {
            Error::new(
                Code::Utf8,
                format!("`{}` is not valid UTF-8", manifest_path.display()),
            )
        })?;
        let manifest = Manifest::parse(&text, true)?;
        let file = manifest
            .component
            .as_ref()
            .and_then(|c| c.file.clone())
            .unwrap_or_default();
        let relative = Path::new(&file);
        if relative.is_absolute()
            || relative
                .components()
                .any(|c| !matches!(c, std::path::Component::Normal(_)))
        {
            return Err(Error::manifest(format!(
                "`component.file` must be a plain path inside the capsule directory, got `{file}`"
            )));
        }
        let wasm = read_file(&dir.join(relative), "the component")?;
        Self::load(platform, &wasm, manifest, options)
    }

    /// Loads a capsule from memory: component bytes plus manifest text.
    pub(crate) fn load_bytes(
        platform: &Arc<Platform>,
        wasm: &[u8],
        manifest: &str,
        options: &LoadOptions,
    ) -> Result<Capsule> {
        refuse_reentry("astrid_capsule_load_bytes")?;
        let manifest = Manifest::parse(manifest, false)?;
        Self::load(platform, wasm, manifest, options)
    }

    fn load(
        platform: &Arc<Platform>,
        wasm: &[u8],
        manifest: Manifest,
        options: &LoadOptions,
    ) -> Result<Capsule> {
        let rt = &*platform.services;
        let hash = engine::content_hash(wasm);
        if let Some(expected) = manifest.component.as_ref().and_then(|c| c.hash) {
            if expected != hash {
                return Err(Error::manifest(
                    "`component.hash` does not match the component binary",
                ));
            }
        }
        let config = resolve_config(&manifest, &options.config)?;
        let limits = Limits {
            memory: options
                .memory_limit
                .filter(|&m| m > 0)
                .unwrap_or(rt.config.memory_limit),
            timeout: options
                .timeout
                .filter(|t| !t.is_zero())
                .unwrap_or(rt.config.timeout),
            fuel: options.fuel.filter(|&f| f > 0).unwrap_or(rt.config.fuel),
        };
        if let Some(p) = &options.principal {
            validate_principal(p)?;
        }
        for (root, what) in [
            (&options.workspace_root, "workspace root"),
            (&options.home_root, "home root"),
        ] {
            if let Some(root) = root {
                if !root.is_dir() {
                    return Err(Error::new(
                        Code::NotFound,
                        format!("the {what} `{}` is not a directory", root.display()),
                    ));
                }
            }
        }

        let mounts = build_mounts(rt, options)?;
        let component = platform
            .compile_cache
            .compile(&platform.engine, wasm, &hash)?;
        engine::check_imports(&platform.engine, &component)?;
        let pre = platform.linker.instantiate_pre(&component).map_err(|e| {
            Error::new(Code::Link, "the component's imports cannot be satisfied").caused_by(e)
        })?;
        let hook = component.get_export_index(None, "astrid-hook-trigger");
        let runs_loop = crate::exports::offered_optional_exports(wasm).contains(&"run");
        let uses_wasi = engine::imports_wasi(&platform.engine, &component);

        let id = capsule_id(&manifest.name, &hash);
        let shared = Arc::new(CapsuleShared {
            services: platform.services.clone(),
            source_id: Arc::from(id.as_str()),
            run_loop: runs_loop.then(|| Arc::new(crate::runloop::RunLoop::new())),
            subscriptions: Mutex::new(Vec::new()),
            publish_buckets: Mutex::new(HashMap::new()),
            net: crate::host::net::CapsuleNet::new(
                options
                    .unix_socket_path
                    .clone()
                    .or_else(|| rt.unix_socket_for(&manifest.name)),
            ),
            id,
            name: Arc::from(manifest.name.as_str()),
            capability_names: manifest.capabilities.names(),
            owner: options.principal.as_deref().map(Arc::from),
            manifest,
            config,
            unload_token: CancelToken::new(),
            unloaded: AtomicBool::new(false),
            mounts,
            open_files: AtomicUsize::new(0),
            write_budget: options.fs_write_budget,
            bytes_written: AtomicU64::new(0),
            waited_at_ms: AtomicU64::new(0),
        });
        let inner = Arc::new(CapsuleInner {
            platform: platform.clone(),
            call_token: Mutex::new(shared.unload_token.child()),
            call_generation: AtomicU64::new(0),
            shared,
            pre,
            hook,
            uses_wasi,
            limits,
            hot: AtomicCell::new(None),
            pool: Mutex::new(Pool {
                idle: Vec::new(),
                live: 0,
                waiters: 0,
            }),
            pool_waiters: AtomicUsize::new(0),
            pool_changed: Condvar::new(),
            pool_max: rt.config.effective_pool_size(),
            state: AtomicU8::new(LOADED),
        });

        // One instance now: a component that cannot be instantiated (start
        // code that traps, memory above the ceiling) fails the load, and the
        // first call finds a warm instance.
        let worker = inner.new_worker()?;
        {
            let mut pool = inner.pool_lock();
            pool.idle.push(worker);
            pool.live = 1;
        }
        platform.register(&inner)?;
        if runs_loop {
            let watchdog = match options.watchdog {
                Watchdog::Default => Some(crate::runloop::DEFAULT_WATCHDOG),
                Watchdog::Window(window) => Some(window),
                Watchdog::Off => None,
            };
            if let Err(e) = run_loop::start(&inner, watchdog) {
                inner.begin_unload();
                inner.finish_unload(Duration::ZERO);
                return Err(e);
            }
        }
        for name in &inner.shared.manifest.capabilities.inert {
            inner.shared.log(
                LogLevel::Warn,
                None,
                &format!("capability `{name}` is recognised but has no effect in this runtime"),
            );
        }
        Ok(Capsule { inner })
    }

    pub fn name(&self) -> &str {
        &self.inner.shared.name
    }

    pub fn id(&self) -> &str {
        &self.inner.shared.id
    }

    pub fn manifest(&self) -> &Manifest {
        &self.inner.shared.manifest
    }

    /// Capability names the capsule holds (as `enumerate-capabilities`).
    pub fn capabilities(&self) -> &[String] {
        &self.inner.shared.capability_names
    }

    /// Calls the guest's `astrid-hook-trigger(action, payload)`.
    pub fn call(
        &self,
        action: &str,
        payload: &[u8],
        options: Option<&CallOptions>,
    ) -> Result<CallResult> {
        refuse_reentry("astrid_capsule_call")?;
        check_guest_len(action.len(), "action")?;
        check_guest_len(payload.len(), "payload")?;
        self.inner.call(action, payload, options)
    }

    /// Waits until a run-loop capsule has called `signal-ready` (others are
    /// ready once loaded). Errors: `Timeout`, the loop's failure, `Closed`.
    pub fn wait_ready(&self, timeout: Duration) -> Result<()> {
        refuse_reentry("astrid_capsule_wait_ready")?;
        self.inner.check_loaded()?;
        match &self.inner.shared.run_loop {
            Some(run) => run.wait_ready(timeout),
            None => Ok(()),
        }
    }

    /// Whether the capsule runs a `run` loop (a real export, not a placeholder).
    pub fn runs_loop(&self) -> bool {
        self.inner.shared.run_loop.is_some()
    }

    /// Cancels the calls in flight now; later calls are unaffected.
    pub fn cancel(&self) {
        let inner = &self.inner;
        let fresh = inner.shared.unload_token.child();
        let old = {
            let mut current = inner.call_token.lock().unwrap_or_else(|e| e.into_inner());
            inner.call_generation.fetch_add(1, Ordering::AcqRel);
            std::mem::replace(&mut *current, fresh)
        };
        interrupt_guests(&inner.platform.engine, || old.cancel());
    }

    /// Cancels, waits (bounded) for calls in flight and frees the instances.
    pub fn unload(&self) -> Result<()> {
        refuse_reentry("astrid_capsule_unload")?;
        self.inner.begin_unload();
        self.inner
            .finish_unload(self.inner.shared.services.config.unload_grace);
        Ok(())
    }

    /// Frees the idle pooled instances (memory goes back to the allocator);
    /// later calls instantiate afresh. Returns how many were freed.
    pub fn trim_idle(&self) -> usize {
        self.inner.trim_idle_older_than(Duration::ZERO)
    }

    pub fn is_unloaded(&self) -> bool {
        self.inner.state.load(Ordering::SeqCst) != LOADED
    }
}

impl Drop for Capsule {
    fn drop(&mut self) {
        if !crate::handoff::in_callback() {
            self.inner.begin_unload();
            self.inner
                .finish_unload(self.inner.shared.services.config.unload_grace);
        }
    }
}

fn same_principal(a: &Option<Arc<str>>, b: &Option<Arc<str>>) -> bool {
    match (a, b) {
        (None, None) => true,
        (Some(a), Some(b)) => Arc::ptr_eq(a, b) || a == b,
        _ => false,
    }
}

fn capsule_id(name: &str, hash: &ContentHash) -> String {
    let mut seed = name.as_bytes().to_vec();
    seed.push(b':');
    seed.extend_from_slice(hash);
    uuid::Uuid::new_v5(&uuid::Uuid::NAMESPACE_OID, &seed).to_string()
}

pub(crate) fn validate_principal(principal: &str) -> Result<()> {
    if principal.is_empty() || principal.len() > 128 || principal.chars().any(char::is_control) {
        return Err(Error::invalid_argument(
            "a principal must be 1..=128 bytes without control characters",
        ));
    }
    // `system` is the data scope of calls without a principal; a principal
    // with that name would share its KV namespace, tmp mount and budgets.
    if principal == "system" {
        return Err(Error::invalid_argument(
            "`system` is reserved for calls without a principal",
        ));
    }
    Ok(())
}

/// Load-time `[env]` values: the embedder's value, else the manifest default.
/// Every non-secret key needs one; keys the manifest does not declare are
/// ignored (one config set may serve several capsules).
fn resolve_config(
    manifest: &Manifest,
    given: &[(String, String)],
) -> Result<HashMap<String, String>> {
    let mut values = HashMap::new();
    for entry in &manifest.env {
        if entry.kind == EnvKind::Secret {
            continue;
        }
        let value = given
            .iter()
            .rev()
            .find(|(k, _)| *k == entry.key)
            .map(|(_, v)| v.clone());
        let value = match value.or_else(|| entry.default.clone()) {
            Some(v) => v,
            None => {
                return Err(Error::manifest(format!(
                "`env.{}` has no value: pass it in the load options' config or give it a default",
                entry.key
            )))
            }
        };
        if entry.kind == EnvKind::Select && !entry.enum_values.contains(&value) {
            return Err(Error::invalid_argument(format!(
                "config value for `{}` is not one of its enum_values",
                entry.key
            )));
        }
        values.insert(entry.key.clone(), value);
    }
    Ok(values)
}

impl CapsuleInner {
    /// Builds the run loop's store and runs `run` on this thread until it
    /// returns, fails, or unload interrupts it.
    pub(crate) fn drive_run_loop(&self, watchdog: Option<Duration>) -> Result<()> {
        let token = self.shared.unload_token.clone();
        let (mut store, instance) = self.build_store(&token, StoreKind::RunLoop { watchdog })?;
        let run = instance
            .get_typed_func::<(), ()>(&mut store, "run")
            .map_err(|e| {
                Error::new(
                    Code::Link,
                    "export `run` does not have the signature of astrid:guest/background@1.0.0",
                )
                .caused_by(e)
            })?;
        self.shared.note_waited();
        let _enter = self.uses_wasi.then(|| self.shared.services.handle.enter());
        let outcome = run.call(&mut store, ());
        store.data().stdio.flush();
        outcome.map_err(|e| classify_failure(&store, &e, &self.limits, "run loop"))
    }

    /// Whether bus messages may be dispatched to this capsule's handlers:
    /// loaded, exporting `astrid-hook-trigger`, and not a run loop.
    pub(crate) fn serves_interceptors(&self) -> bool {
        self.hook.is_some()
            && self.state.load(Ordering::SeqCst) == LOADED
            && self.shared.run_loop.is_none()
    }

    fn pool_lock(&self) -> std::sync::MutexGuard<'_, Pool> {
        self.pool.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The current call token and its generation, read together.
    fn current_token(&self) -> (u64, CancelToken) {
        let token = self.call_token.lock().unwrap_or_else(|e| e.into_inner());
        (self.call_generation.load(Ordering::Acquire), token.clone())
    }

    fn check_loaded(&self) -> Result<()> {
        self.shared.services.check_open()?;
        if self.state.load(Ordering::SeqCst) != LOADED {
            return Err(Error::closed(format!(
                "capsule `{}` has been unloaded",
                self.shared.name
            )));
        }
        Ok(())
    }

    /// Creates a store and instantiates, under the limits of a call.
    /// A store with the capsule's limits and an instance in it.
    fn build_store(
        &self,
        token: &CancelToken,
        kind: StoreKind,
    ) -> Result<(Store<HostState>, wasmtime::component::Instance)> {
        let rt = &self.shared.services;
        let mut store = Store::new(
            &self.platform.engine,
            HostState::new(self.shared.clone(), self.limits.memory),
        );
        store.limiter(|state| &mut state.limiter);
        store.epoch_deadline_callback(|mut ctx| {
            let state = ctx.data_mut();
            if state.call.token.is_cancelled() {
                state.interrupt = Some(Interrupt::Cancelled);
                return Ok(UpdateDeadline::Interrupt);
            }
            if Instant::now() >= state.call.deadline {
                state.interrupt = Some(Interrupt::Timeout);
                return Ok(UpdateDeadline::Interrupt);
            }
            if let Some(window) = state.watchdog {
                let shared = &state.capsule;
                let idle = shared
                    .services
                    .coarse_ms()
                    .saturating_sub(shared.waited_at_ms.load(Ordering::Relaxed));
                if u128::from(idle) > 3 * window.as_millis() {
                    state.interrupt = Some(Interrupt::Watchdog);
                    return Ok(UpdateDeadline::Interrupt);
                }
            }
            Ok(UpdateDeadline::Continue(1))
        });
        let data = store.data_mut();
        data.call = CallContext::idle(token.clone());
        let fuel = match kind {
            StoreKind::Pooled => {
                data.call.deadline = Instant::now() + self.limits.timeout;
                self.limits.fuel
            }
            StoreKind::RunLoop { watchdog } => {
                data.watchdog = watchdog;
                data.run_loop = true;
                data.call.deadline = Instant::now() + RUN_LOOP_HORIZON;
                data.call.active = true;
                data.stdio.begin_call(&data.call.token, data.call.deadline);
                u64::MAX
            }
        };
        store
            .set_fuel(fuel)
            .map_err(|e| Error::new(Code::Internal, "cannot set fuel").caused_by(e))?;
        store.set_epoch_deadline(1);
        let _enter = self.uses_wasi.then(|| rt.handle.enter());
        let instance = self
            .pre
            .instantiate(&mut store)
            .map_err(|e| classify_failure(&store, &e, &self.limits, "instantiation"))?;
        Ok((store, instance))
    }

    fn new_worker(&self) -> Result<Box<Worker>> {
        let (generation, token) = self.current_token();
        let (mut store, instance) = self.build_store(&token, StoreKind::Pooled)?;
        store.data().stdio.flush();
        let hook = self
            .hook
            .and_then(|index| instance.get_func(&mut store, index));
        let hook = hook
            .map(|func| {
                func.typed::<(&'static str, &'static [u8]), (CallResult,)>(&store)
                    .map_err(|e| {
                        Error::new(
                            Code::Link,
                            "export `astrid-hook-trigger` does not have the signature of astrid:guest/interceptor@1.0.0",
                        )
                        .caused_by(e)
                    })
            })
            .transpose()?;
        Ok(Box::new(Worker {
            store,
            hook,
            generation,
            idle_since: Instant::now(),
        }))
    }

    /// Takes an idle instance, creates one, or waits for one to come back.
    /// `generation` is the cancel generation the call started in: a cancel
    /// since then ends the wait.
    fn lease(&self, generation: u64, deadline: Instant) -> Result<Box<Worker>> {
        self.check_lease(generation)?;
        if let Some(worker) = self.hot.take() {
            return Ok(worker);
        }
        let mut pool = self.pool_lock();
        loop {
            self.check_lease(generation)?;
            if let Some(worker) = self.hot.take().or_else(|| pool.idle.pop()) {
                return Ok(worker);
            }
            if pool.live < self.pool_max {
                pool.live += 1;
                drop(pool);
                return self.new_worker().inspect_err(|_| {
                    let mut pool = self.pool_lock();
                    pool.live -= 1;
                    self.wake_waiters(pool);
                });
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(Error::new(
                    Code::Timeout,
                    "every pooled instance stayed busy until the call's deadline",
                ));
            }
            pool = self.wait_pool(pool, (deadline - now).min(crate::config::EPOCH_TICK));
        }
    }

    /// What a lease checks before it takes an instance.
    fn check_lease(&self, generation: u64) -> Result<()> {
        self.check_loaded()?;
        if self.call_generation.load(Ordering::Acquire) != generation {
            return Err(Error::new(
                Code::Cancelled,
                "the call was cancelled before it started",
            ));
        }
        Ok(())
    }

    /// Waits for the pool to change (or the timeout), counted in `waiters`.
    /// An instance parked in `hot` before the count went up is moved into the
    /// pool instead; one parked after it sees the count (see `release`).
    fn wait_pool<'a>(
        &self,
        mut pool: MutexGuard<'a, Pool>,
        timeout: Duration,
    ) -> MutexGuard<'a, Pool> {
        pool.waiters += 1;
        self.pool_waiters.store(pool.waiters, Ordering::SeqCst);
        if let Some(worker) = self.hot.take() {
            pool.idle.push(worker);
        } else {
            pool = self
                .pool_changed
                .wait_timeout(pool, timeout)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        pool.waiters -= 1;
        self.pool_waiters.store(pool.waiters, Ordering::SeqCst);
        pool
    }

    /// Releases the lock and wakes the waiters, if there are any.
    fn wake_waiters(&self, pool: MutexGuard<'_, Pool>) {
        let waiting = pool.waiters > 0;
        drop(pool);
        if waiting {
            self.pool_changed.notify_all();
        }
    }

    /// Returns a leased instance, dated now for the idle TTL.
    ///
    /// A reusable one is parked in `hot` (the one parked there before goes
    /// into the pool). The swap is an acquire-release RMW on `hot`, as are
    /// the takes in `wait_pool` and `finish_unload`, which follow a store
    /// of the waiter count or of the unloading state: whichever of the two
    /// RMWs comes second sees what preceded the first. So either the waiter
    /// or unloader takes this instance, or the checks after the swap below
    /// see it waiting or unloading.
    fn release(&self, mut worker: Box<Worker>, reusable: bool) {
        if !reusable || self.state.load(Ordering::SeqCst) != LOADED {
            self.discard(worker);
            return;
        }
        worker.idle_since = self.shared.services.coarse_now();
        if let Some(previous) = self.hot.swap(Some(worker)) {
            self.park_in_pool(previous);
        }
        if self.state.load(Ordering::SeqCst) != LOADED {
            if let Some(parked) = self.hot.take() {
                self.discard(parked);
            }
        }
        if self.pool_waiters.load(Ordering::SeqCst) > 0 {
            self.wake_waiters(self.pool_lock());
        }
    }

    /// Puts an idle instance in the pool, or frees it once unloading has
    /// begun: checked under the lock `finish_unload` drains the pool with,
    /// so an instance never lands there after the drain.
    fn park_in_pool(&self, worker: Box<Worker>) {
        let mut pool = self.pool_lock();
        if self.state.load(Ordering::SeqCst) == LOADED {
            pool.idle.push(worker);
            self.wake_waiters(pool);
        } else {
            pool.live -= 1;
            self.wake_waiters(pool);
            drop(worker);
        }
    }

    /// Frees an instance that will not be used again.
    fn discard(&self, worker: Box<Worker>) {
        let mut pool = self.pool_lock();
        pool.live -= 1;
        self.wake_waiters(pool);
        drop(worker); // freeing a store is not done under the lock
    }

    fn call(
        &self,
        action: &str,
        payload: &[u8],
        options: Option<&CallOptions>,
    ) -> Result<CallResult> {
        let principal = match options.and_then(|o| o.principal.as_deref()) {
            Some(p) => {
                validate_principal(p)?;
                Some(Arc::from(p))
            }
            None => self.shared.owner.clone(),
        };
        let overlay = options
            .filter(|o| !o.config_overlay.is_empty())
            .map(|o| Arc::new(o.config_overlay.iter().cloned().collect::<HashMap<_, _>>()));
        self.invoke(
            action,
            payload,
            Invocation {
                principal,
                overlay,
                source_id: None,
                timestamp_ms: None,
                depth: 0,
            },
        )
    }

    /// Runs `astrid-hook-trigger` on a pooled instance for an embedder call
    /// or a bus message.
    pub(crate) fn invoke(
        &self,
        action: &str,
        payload: &[u8],
        invocation: Invocation,
    ) -> Result<CallResult> {
        self.check_loaded()?;
        self.hook.ok_or_else(|| {
            Error::new(
                Code::NotFound,
                format!(
                    "capsule `{}` does not export astrid-hook-trigger",
                    self.shared.name
                ),
            )
        })?;
        let Invocation {
            principal,
            overlay,
            source_id,
            timestamp_ms,
            depth,
        } = invocation;
        let generation = self.call_generation.load(Ordering::Acquire);
        let rt = &self.shared.services;
        // The coarse clock lags by up to one tick; adding a tick keeps the
        // deadline from ever being earlier than the configured timeout.
        let started = rt.coarse_now();
        let deadline = started + self.limits.timeout + crate::config::EPOCH_TICK;
        let mut worker = self.lease(generation, deadline)?;

        let Worker {
            store,
            hook,
            generation: held,
            ..
        } = &mut *worker;
        let state = store.data_mut();
        if *held != generation {
            // A cancel since this instance's last call: take the new token.
            let (current, token) = self.current_token();
            *held = current;
            state.call.token = token;
            if current != generation {
                // Another cancel came after this call started: it covers it.
                self.release(worker, true);
                return Err(Error::new(
                    Code::Cancelled,
                    "the call was cancelled before it started",
                ));
            }
        }
        // Updated in place: most fields repeat from call to call.
        let call = &mut state.call;
        if !same_principal(&call.principal, &principal) {
            state.stdio.set_principal(principal.as_ref());
            call.principal = principal;
        }
        let source_id = source_id.as_ref().unwrap_or(&rt.host_source_id);
        if !Arc::ptr_eq(&call.source_id, source_id) {
            call.source_id = source_id.clone();
        }
        call.timestamp_ms = timestamp_ms.unwrap_or_else(|| rt.wall_ms_at(started));
        call.depth = depth;
        call.deadline = deadline;
        state.stdio.begin_call(&call.token, call.deadline);
        call.overlay = overlay;
        call.active = true;
        state.interrupt = None;
        state.limiter.hit = false;
        let outcome = (|| {
            store.set_fuel(self.limits.fuel)?;
            store.set_epoch_deadline(1);
            // Entering costs ~60 ns; pure-astrid capsules skip it.
            let _enter = self.uses_wasi.then(|| rt.handle.enter());
            let hook =
                hook.ok_or_else(|| wasmtime::format_err!("astrid-hook-trigger export is missing"))?;
            hook.call(&mut *store, (action, payload))
        })();
        store.data().stdio.flush();
        let state = store.data_mut();
        state.call.active = false;
        state.call.overlay = None;
        if !state.open_files.is_empty() {
            state.close_call_files();
        }
        if !state.open_subscriptions.is_empty() {
            state.close_call_subscriptions();
        }
        if !state.call_scoped.is_empty() {
            state.close_call_scoped();
        }

        match outcome {
            Ok((result,)) => {
                self.release(worker, true);
                Ok(result)
            }
            Err(e) => {
                let err = classify_failure(store, &e, &self.limits, "call");
                // A failed instance may hold broken state: never reuse it.
                self.release(worker, false);
                Err(err)
            }
        }
    }

    /// Frees idle instances returned longer than `ttl` ago.
    pub(crate) fn trim_idle_older_than(&self, ttl: Duration) -> usize {
        let mut pool = self.pool_lock();
        if let Some(worker) = self.hot.take() {
            pool.idle.push(worker);
        }
        let (expired, kept): (Vec<_>, Vec<_>) = std::mem::take(&mut pool.idle)
            .into_iter()
            .partition(|worker| worker.idle_since.elapsed() >= ttl);
        pool.idle = kept;
        pool.live -= expired.len();
        drop(pool);
        expired.len()
    }

    /// Marks the capsule unloading and cancels everything it runs.
    pub(crate) fn begin_unload(&self) {
        if self
            .state
            .compare_exchange(LOADED, UNLOADING, Ordering::SeqCst, Ordering::SeqCst)
            .is_err()
        {
            return;
        }
        interrupt_guests(&self.platform.engine, || self.shared.unload_token.cancel());
        self.shared.close_subscriptions();
        self.wake_waiters(self.pool_lock());
    }

    /// Waits up to `grace` for calls in flight, then frees the instances.
    pub(crate) fn finish_unload(&self, grace: Duration) {
        let until = Instant::now() + grace;
        if let Some(run) = &self.shared.run_loop {
            // Abandoned after the grace: the thread ends at the guest's next
            // epoch check and drops the store itself.
            run.wait_finished(grace);
        }
        let mut pool = self.pool_lock();
        loop {
            if let Some(worker) = self.hot.take() {
                pool.idle.push(worker);
            }
            if pool.live == pool.idle.len() {
                break; // none in use
            }
            let now = Instant::now();
            if now >= until {
                break; // Abandoned: those stores are freed when their calls end.
            }
            pool = self.wait_pool(pool, (until - now).min(crate::config::EPOCH_TICK));
        }
        let idle = std::mem::take(&mut pool.idle);
        pool.live -= idle.len();
        drop(pool);
        drop(idle);
        if self.state.swap(UNLOADED, Ordering::SeqCst) != UNLOADED {
            self.shared.unloaded.store(true, Ordering::SeqCst);
            self.platform.unregister(self);
        }
    }
}

/// Turns a wasmtime failure into the error the embedder sees.
fn classify_failure(
    store: &Store<HostState>,
    error: &wasmtime::Error,
    limits: &Limits,
    what: &str,
) -> Error {
    let state = store.data();
    match state.interrupt {
        Some(Interrupt::Cancelled) => {
            return Error::new(Code::Cancelled, format!("the {what} was cancelled"));
        }
        Some(Interrupt::Timeout) => {
            return Error::new(
                Code::Timeout,
                format!(
                    "the {what} ran past its {} ms deadline",
                    limits.timeout.as_millis()
                ),
            );
        }
        Some(Interrupt::Watchdog) => {
            let window = state.watchdog.map_or(0, |w| w.as_millis());
            return Error::new(
                Code::Timeout,
                format!(
                    "the {what} went {} ms without a waiting host call (run-loop watchdog)",
                    3 * window
                ),
            );
        }
        None => {}
    }
    if error.downcast_ref::<Trap>() == Some(&Trap::OutOfFuel) {
        return Error::new(
            Code::OutOfFuel,
            format!("the {what} used up its {} units of fuel", limits.fuel),
        );
    }
    if error
        .downcast_ref::<wasmtime::PoolConcurrencyLimitError>()
        .is_some()
    {
        return Error::new(
            Code::ResourceLimit,
            format!(
                "the runtime's instance pool is full: {} live instances over all its capsules (max_instances)",
                state.capsule.services.config.effective_max_instances()
            ),
        )
        .caused_by(error);
    }
    if engine::is_out_of_memory(error) {
        return Error::new(
            Code::ResourceLimit,
            format!("the host ran out of memory or address space during the {what}"),
        )
        .caused_by(format!("{error:?}"));
    }
    if state.limiter.hit {
        return Error::new(
            Code::ResourceLimit,
            format!("the {what} hit the {} byte memory ceiling", limits.memory),
        )
        .caused_by(format!("{error:?}"));
    }
    if let Some(exit) = error.downcast_ref::<wasmtime_wasi::I32Exit>() {
        return Error::new(Code::Trap, format!("the guest called exit({})", exit.0));
    }
    Error::new(Code::Trap, format!("the guest trapped during the {what}"))
        .caused_by(format!("{error:?}"))
}

/// Cancels through `cancel` so that every guest of the engine stops at its
/// next epoch check. The epoch moves before the cancel, so a guest woken
/// from a host call by the cancel finds its deadline passed on return (the
/// cancelling thread may be descheduled before it gets further); and again
/// after, so guest code already running sees the cancelled token at once.
fn interrupt_guests(engine: &wasmtime::Engine, cancel: impl FnOnce()) {
    engine.increment_epoch();
    cancel();
    engine.increment_epoch();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_parked_instance_slot_is_a_plain_atomic() {
        // Otherwise `AtomicCell` falls back to a global lock and the fast
        // path would cost more than the pool's own mutex.
        assert!(AtomicCell::<Option<Box<Worker>>>::is_lock_free());
    }
}

/// The thread that drives a run loop.
mod run_loop {
    use super::CapsuleInner;
    use crate::error::{Code, Error, Result};
    use crate::runloop::RunState;
    use crate::services::LogLevel;
    use std::sync::Arc;
    use std::time::Duration;

    /// Starts the loop's thread. The store is built on it, so a failing
    /// instantiation shows up as a failed loop, not a hung load.
    pub(crate) fn start(capsule: &Arc<CapsuleInner>, watchdog: Option<Duration>) -> Result<()> {
        let run = capsule
            .shared
            .run_loop
            .clone()
            .ok_or_else(|| Error::new(Code::Internal, "not a run-loop capsule"))?;
        let worker = capsule.clone();
        let name = format!("astrid-run-{}", capsule.shared.name);
        std::thread::Builder::new()
            .name(name)
            .spawn(move || {
                let outcome = worker.drive_run_loop(watchdog);
                let unloading = worker.shared.unload_token.is_cancelled();
                match outcome {
                    _ if unloading => run.set(RunState::Stopped),
                    Ok(()) => {
                        let error =
                            Error::new(Code::Trap, "`run` returned; run loops must not return");
                        worker.shared.log(LogLevel::Error, None, error.message());
                        run.set(RunState::Failed(error));
                    }
                    Err(error) => {
                        worker.shared.log(
                            LogLevel::Error,
                            None,
                            &format!("the run loop failed and will not be restarted: {error}"),
                        );
                        run.set(RunState::Failed(error));
                    }
                }
                run.mark_finished();
            })
            .map(drop)
            .map_err(|e| Error::new(Code::Io, "cannot start the run loop's thread").caused_by(e))
    }
}
