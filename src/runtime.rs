//! The runtime: one wasmtime engine, one linker, one tokio runtime, the
//! epoch ticker, the audit queue, the embedder's log and audit sinks, and
//! the registry of loaded capsules.

use crate::bus::{Attribution, Bus, DeliveryHandler, HostSubscription, Publish, QueueLimits};
use crate::cancel::CancelToken;
use crate::capsule::CapsuleInner;
use crate::engine::{self, CompileCache};
use crate::error::{Code, Error, Result};
use crate::gate::GateFn;
use crate::handoff::{in_callback, refuse_reentry, run_callback, Bounded};
use crate::host::{self, HostState};
use crate::kv::KvStore;
use crate::policy::paths::Mount;
use crate::vfs::Vfs;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, SyncSender};
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use wasmtime::component::Linker;
use wasmtime::Engine;

/// Lets capsules reach loopback and private addresses (tests, local setups).
pub const FLAG_ALLOW_LOOPBACK: u32 = 1 << 0;
/// Makes `check-capsule-capability` answer `registry-unavailable`.
pub const FLAG_DISABLE_CAPABILITY_REGISTRY: u32 = 1 << 1;
/// Runs gate, VFS and KV callbacks on the thread executing the guest instead
/// of a callback thread (`handoff`): no hand-off cost, but a callback that hangs holds
/// its call (its deadline is then only checked when it returns).
pub const FLAG_INLINE_CALLBACKS: u32 = 1 << 2;
/// Lets `bind-tcp` and `udp-bind` use addresses other than loopback (the
/// manifest and gate still decide which).
pub const FLAG_ALLOW_ANY_BIND: u32 = 1 << 3;
/// Links `wasi:sockets` behind the manifest, gate and airlock (host ABI §0);
/// without it every WASI socket operation is `access-denied`.
pub const FLAG_WASI_SOCKETS: u32 = 1 << 4;
pub const KNOWN_FLAGS: u32 = FLAG_ALLOW_LOOPBACK
    | FLAG_DISABLE_CAPABILITY_REGISTRY
    | FLAG_INLINE_CALLBACKS
    | FLAG_ALLOW_ANY_BIND
    | FLAG_WASI_SOCKETS;

/// The epoch ticker's period: the granularity of wall-clock deadlines.
pub const EPOCH_TICK: Duration = Duration::from_millis(100);
const AUDIT_QUEUE: usize = 4096;
const HOUSEKEEPING_PERIOD: Duration = Duration::from_secs(10);

#[derive(Clone, Debug)]
pub struct RuntimeConfig {
    /// Tokio worker threads; 0 = one per core.
    pub worker_threads: usize,
    /// Linear memory ceiling per instance, bytes.
    pub memory_limit: u64,
    /// Wall-clock deadline per interceptor call.
    pub timeout: Duration,
    /// Fuel per interceptor call.
    pub fuel: u64,
    /// Where compiled code is cached on disk; `None` = memory only.
    pub cache_dir: Option<PathBuf>,
    pub flags: u32,
    /// Pooled instances per capsule; 0 = clamp(2 × cores, 8, 64).
    pub pool_size: usize,
    /// Live instances of all capsules together (pooled ones, warm ones and
    /// run loops): the bound of the runtime's instance pool, which reserves
    /// `engine::pool_reservation_bytes(max_instances)` of address space
    /// (about 4 GiB each, none of it committed) when the runtime starts.
    /// Past it, loads and calls that need a new instance fail with
    /// `ResourceLimit`. 0 = max(128, 4 × pool size), at most 1000: about
    /// 516 GiB per runtime, so a process (128 TiB) holds some 250 default
    /// runtimes; lower it to run more.
    pub max_instances: usize,
    /// How long unload and runtime shutdown wait for calls in flight.
    pub unload_grace: Duration,
    /// How long the gate may take to answer (deferred verdicts included);
    /// later counts as a denial.
    pub gate_timeout: Duration,
    /// How long one VFS callback may take; later is `unknown("timeout")`.
    pub vfs_timeout: Duration,
    /// Bounds of every bus subscription queue (host ABI §8.4).
    pub queue_limits: QueueLimits,
    /// Byte budget of each KV namespace in the built-in store.
    pub kv_quota: u64,
    /// Budget of each built-in in-memory mount (`tmp://` per data scope,
    /// `cwd://` without a workspace root).
    pub memfs_limits: crate::vfs::memory::MemoryLimits,
    /// Payload bytes per second one (capsule, principal) may publish
    /// (host ABI §8.6); beyond it the guest gets `rate-limited`.
    pub publish_rate: u64,
}

impl RuntimeConfig {
    /// Pooled instances per capsule, the default resolved.
    pub fn effective_pool_size(&self) -> usize {
        if self.pool_size > 0 {
            return self.pool_size;
        }
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        (2 * cores).clamp(8, 64)
    }

    /// `max_instances`, the default resolved.
    pub fn effective_max_instances(&self) -> usize {
        if self.max_instances > 0 {
            return self.max_instances;
        }
        (4 * self.effective_pool_size()).clamp(128, 1000)
    }
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        RuntimeConfig {
            worker_threads: 0,
            memory_limit: 64 << 20,
            timeout: Duration::from_secs(30),
            fuel: 500_000_000,
            cache_dir: None,
            flags: 0,
            pool_size: 0,
            max_instances: 0,
            unload_grace: Duration::from_secs(5),
            gate_timeout: Duration::from_secs(5),
            vfs_timeout: Duration::from_secs(10),
            queue_limits: QueueLimits::default(),
            kv_quota: crate::kv::DEFAULT_QUOTA_BYTES,
            memfs_limits: crate::vfs::memory::MemoryLimits::DEFAULT,
            publish_rate: 10 << 20,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
#[repr(u32)]
pub enum LogLevel {
    Trace = 0,
    Debug = 1,
    Info = 2,
    Warn = 3,
    Error = 4,
}

/// One log line from a capsule (or the runtime about a capsule).
pub struct LogRecord<'a> {
    pub level: LogLevel,
    pub capsule: &'a str,
    pub principal: Option<&'a str>,
    pub message: &'a str,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum Outcome {
    Allowed = 0,
    Denied = 1,
    Failed = 2,
}

/// One host call, as the audit sink sees it (host ABI §1).
#[derive(Clone, Debug)]
pub struct AuditEvent {
    pub capsule: String,
    pub capsule_id: String,
    /// The context principal `p`, `system`, or `claimed(p)`.
    pub principal: String,
    /// `interface.function`, e.g. `sys.get-config`.
    pub call: String,
    pub target: Option<String>,
    pub bytes: u64,
    pub outcome: Outcome,
    pub reason: Option<String>,
    pub elapsed_us: u64,
}

pub type LogSink = Arc<dyn Fn(&LogRecord<'_>) + Send + Sync>;

/// What the embedder's secret provider is asked for (`[env]` keys of type
/// `secret`, looked up on every `get-config`, never cached or logged).
pub struct SecretRequest<'a> {
    pub capsule: &'a str,
    pub capsule_id: &'a str,
    /// The data scope's principal, if any.
    pub principal: Option<&'a str>,
    pub key: &'a str,
}

/// Answers a secret request: `Ok(None)` when the provider has no value,
/// `Err(())` when it failed (the guest then sees `unknown`).
pub type SecretProvider =
    Arc<dyn Fn(&SecretRequest<'_>) -> std::result::Result<Option<String>, ()> + Send + Sync>;
pub type AuditSink = Arc<dyn Fn(&AuditEvent) + Send + Sync>;

pub struct RuntimeInner {
    pub(crate) engine: Engine,
    pub(crate) linker: Linker<HostState>,
    pub(crate) config: RuntimeConfig,
    pub(crate) compile_cache: CompileCache,
    pub(crate) handle: tokio::runtime::Handle,
    pub(crate) monotonic_origin: Instant,
    /// Wall clock (ms since the epoch) at `monotonic_origin`.
    wall_origin_ms: u64,
    /// Milliseconds since `monotonic_origin` at the last epoch tick: a clock
    /// read that costs no system call, for call bookkeeping.
    coarse_ms: Arc<AtomicU64>,
    /// Source id of calls and messages that come from the embedder.
    pub(crate) host_source_id: Arc<str>,
    pub(crate) bus: Arc<Bus>,
    pub(crate) dispatcher: crate::dispatch::Dispatcher,
    /// The threads that run embedder callbacks (see `run_bounded`).
    handoff: crate::handoff::HandOff,
    /// The KV backend: built-in memory unless the embedder installed one.
    kv: RwLock<Arc<dyn KvStore>>,
    tokio: Mutex<Option<tokio::runtime::Runtime>>,
    log_sink: RwLock<Option<LogSink>>,
    secret_provider: RwLock<Option<SecretProvider>>,
    gate: RwLock<Option<GateFn>>,
    accept_verifier: RwLock<Option<crate::gate::AcceptVerifier>>,
    /// Socket paths for `bind-unix`, by capsule name.
    unix_sockets: RwLock<HashMap<String, PathBuf>>,
    /// Embedder-supplied providers by mount.
    mounts: RwLock<HashMap<Mount, Arc<dyn Vfs>>>,
    audit_sink: Arc<RwLock<Option<AuditSink>>>,
    has_audit: AtomicBool,
    audit_tx: RwLock<Option<SyncSender<AuditEvent>>>,
    audit_thread: Mutex<Option<JoinHandle<()>>>,
    /// Set when shutdown stops waiting for the audit thread: it delivers
    /// nothing more and drops the sink itself.
    audit_abandoned: Arc<AtomicBool>,
    capsules: Mutex<Vec<Weak<CapsuleInner>>>,
    closed: AtomicBool,
    ticker_stop: CancelToken,
    ticker: Mutex<Option<JoinHandle<()>>>,
}

/// Owner of a runtime. Dropping it shuts the runtime down.
pub struct Runtime {
    pub(crate) inner: Arc<RuntimeInner>,
}

impl Runtime {
    pub fn new(config: RuntimeConfig) -> Result<Runtime> {
        if config.flags & !KNOWN_FLAGS != 0 {
            return Err(Error::invalid_argument(format!(
                "unknown runtime flags {:#x}",
                config.flags & !KNOWN_FLAGS
            )));
        }
        if config.memory_limit == 0
            || config.fuel == 0
            || config.timeout.is_zero()
            || config.gate_timeout.is_zero()
            || config.vfs_timeout.is_zero()
            || config.queue_limits.messages == 0
            || config.queue_limits.bytes == 0
            || config.publish_rate == 0
        {
            return Err(Error::invalid_argument(
                "memory limit, fuel, timeouts and queue bounds must be non-zero",
            ));
        }
        let engine = engine::build_engine(
            config.cache_dir.as_deref(),
            config.effective_max_instances(),
        )?;
        let linker = host::build_linker(&engine)
            .map_err(|e| Error::new(Code::Internal, "cannot build the host linker").caused_by(e))?;
        let mut builder = tokio::runtime::Builder::new_multi_thread();
        builder.enable_all().thread_name("astrid-worker");
        if config.worker_threads > 0 {
            builder.worker_threads(config.worker_threads);
        }
        let tokio = builder.build().map_err(|e| {
            Error::new(Code::Io, "cannot start the runtime's worker threads").caused_by(e)
        })?;

        let audit_sink: Arc<RwLock<Option<AuditSink>>> = Arc::new(RwLock::new(None));
        let audit_abandoned = Arc::new(AtomicBool::new(false));
        let (audit_tx, audit_rx) = sync_channel::<AuditEvent>(AUDIT_QUEUE);
        let audit_thread = {
            let sink = audit_sink.clone();
            let abandoned = audit_abandoned.clone();
            std::thread::Builder::new()
                .name("astrid-audit".into())
                .spawn(move || {
                    for event in audit_rx {
                        if abandoned.load(Ordering::SeqCst) {
                            break;
                        }
                        let current = sink.read().unwrap_or_else(|e| e.into_inner()).clone();
                        if let Some(sink) = current {
                            run_callback(|| sink(&event));
                        }
                    }
                    // Left behind by shutdown: the sink's finalizer runs
                    // here, after the callback that held shutdown returned.
                    if abandoned.load(Ordering::SeqCst) {
                        drop(sink.write().unwrap_or_else(|e| e.into_inner()).take());
                    }
                })
                .map_err(|e| Error::new(Code::Io, "cannot start the audit thread").caused_by(e))?
        };

        let ticker_stop = CancelToken::new();
        let monotonic_origin = Instant::now();
        let coarse_ms = Arc::new(AtomicU64::new(0));
        let ticker = {
            let engine = engine.clone();
            let stop = ticker_stop.clone();
            let coarse_ms = coarse_ms.clone();
            std::thread::Builder::new()
                .name("astrid-epoch".into())
                .spawn(move || {
                    while !stop.wait_timeout(EPOCH_TICK) {
                        let ms = u64::try_from(monotonic_origin.elapsed().as_millis())
                            .unwrap_or(u64::MAX);
                        coarse_ms.store(ms, Ordering::Relaxed);
                        engine.increment_epoch();
                    }
                })
                .map_err(|e| Error::new(Code::Io, "cannot start the epoch ticker").caused_by(e))?
        };

        let host_source_id =
            uuid::Uuid::new_v5(&uuid::Uuid::NAMESPACE_OID, b"astrid-embedder").to_string();
        let bus = Arc::new(Bus::new(config.queue_limits));
        let kv = RwLock::new(crate::host::kv::default_store(config.kv_quota));
        let runtime = Runtime {
            inner: Arc::new(RuntimeInner {
                handle: tokio.handle().clone(),
                engine,
                linker,
                config,
                compile_cache: CompileCache::default(),
                monotonic_origin,
                wall_origin_ms: crate::host::sys::wall_clock_ms(),
                coarse_ms,
                host_source_id: Arc::from(host_source_id),
                bus,
                dispatcher: crate::dispatch::Dispatcher::default(),
                handoff: crate::handoff::HandOff::default(),
                kv,
                tokio: Mutex::new(Some(tokio)),
                log_sink: RwLock::new(None),
                secret_provider: RwLock::new(None),
                gate: RwLock::new(None),
                accept_verifier: RwLock::new(None),
                unix_sockets: RwLock::new(HashMap::new()),
                mounts: RwLock::new(HashMap::new()),
                audit_sink,
                has_audit: AtomicBool::new(false),
                audit_tx: RwLock::new(Some(audit_tx)),
                audit_thread: Mutex::new(Some(audit_thread)),
                audit_abandoned,
                capsules: Mutex::new(Vec::new()),
                closed: AtomicBool::new(false),
                ticker_stop,
                ticker: Mutex::new(Some(ticker)),
            }),
        };
        // Housekeeping: free pooled instances idle for longer than their TTL.
        let weak = Arc::downgrade(&runtime.inner);
        runtime.inner.handle.spawn(async move {
            loop {
                tokio::time::sleep(HOUSEKEEPING_PERIOD).await;
                let Some(inner) = weak.upgrade() else { break };
                if inner.closed.load(Ordering::SeqCst) {
                    break;
                }
                inner.trim_idle_instances();
            }
        });
        Ok(runtime)
    }

    pub fn config(&self) -> &RuntimeConfig {
        &self.inner.config
    }

    /// Installs (or with `None` removes) the security gate. Calls already
    /// asking the previous gate finish with it; a host call whose checks
    /// began before the first gate was installed is decided by the manifest.
    pub fn set_gate(&self, gate: Option<GateFn>) -> Result<()> {
        self.inner.check_open()?;
        *self.inner.gate.write().unwrap_or_else(|e| e.into_inner()) = gate;
        Ok(())
    }

    /// Installs (or with `None` removes) the accept verifier that screens
    /// every connection to a capsule's unix listener.
    pub fn set_accept_verifier(&self, verifier: Option<crate::gate::AcceptVerifier>) -> Result<()> {
        self.inner.check_open()?;
        *self
            .inner
            .accept_verifier
            .write()
            .unwrap_or_else(|e| e.into_inner()) = verifier;
        Ok(())
    }

    /// Assigns the socket path `bind-unix` binds for capsules named `name`
    /// loaded afterwards (`None` removes the assignment). The guest never
    /// sees the path. A path in a capsule's load options takes precedence.
    pub fn assign_unix_socket(&self, name: &str, path: Option<PathBuf>) -> Result<()> {
        self.inner.check_open()?;
        if name.is_empty() {
            return Err(Error::invalid_argument(
                "the capsule name must not be empty",
            ));
        }
        if let Some(path) = &path {
            // sockaddr_un holds 108 bytes including the terminating NUL.
            let len = path.as_os_str().len();
            if len == 0 || len > 107 {
                return Err(Error::invalid_argument(format!(
                    "a unix socket path must be 1 to 107 bytes, not {len}"
                )));
            }
        }
        let mut paths = self
            .inner
            .unix_sockets
            .write()
            .unwrap_or_else(|e| e.into_inner());
        match path {
            Some(path) => paths.insert(name.to_string(), path),
            None => paths.remove(name),
        };
        Ok(())
    }

    /// Serves `mount` from `provider` for every capsule loaded afterwards
    /// (`None` unmounts). A workspace or home root named in a capsule's load
    /// options takes precedence for that capsule.
    pub fn mount_vfs(&self, mount: Mount, provider: Option<Arc<dyn Vfs>>) -> Result<()> {
        self.inner.check_open()?;
        let mut mounts = self.inner.mounts.write().unwrap_or_else(|e| e.into_inner());
        match provider {
            Some(provider) => mounts.insert(mount, provider),
            None => mounts.remove(&mount),
        };
        Ok(())
    }

    /// Installs (or with `None` removes) the log sink. The previous sink is
    /// dropped once no emission uses it any more.
    pub fn set_log_sink(&self, sink: Option<LogSink>) -> Result<()> {
        self.inner.check_open()?;
        *self
            .inner
            .log_sink
            .write()
            .unwrap_or_else(|e| e.into_inner()) = sink;
        Ok(())
    }

    /// Installs (or with `None` removes) the provider of secret config values.
    pub fn set_secret_provider(&self, provider: Option<SecretProvider>) -> Result<()> {
        self.inner.check_open()?;
        *self
            .inner
            .secret_provider
            .write()
            .unwrap_or_else(|e| e.into_inner()) = provider;
        Ok(())
    }

    pub fn set_audit_sink(&self, sink: Option<AuditSink>) -> Result<()> {
        self.inner.check_open()?;
        let present = sink.is_some();
        *self
            .inner
            .audit_sink
            .write()
            .unwrap_or_else(|e| e.into_inner()) = sink;
        self.inner.has_audit.store(present, Ordering::SeqCst);
        Ok(())
    }

    /// Cancels every capsule, waits (bounded) for calls in flight, stops the
    /// threads and drops the sinks. Idempotent; also run on drop.
    pub fn close(&self) -> Result<()> {
        refuse_reentry("astrid_runtime_free")?;
        self.inner.close();
        Ok(())
    }

    pub fn is_closed(&self) -> bool {
        self.inner.closed.load(Ordering::SeqCst)
    }

    /// Publishes JSON text on `topic` as the embedder (host ABI §8.7):
    /// attributed `system`, or `verified(principal)` when one is named.
    /// Returns the message's sequence number once it is queued.
    pub fn publish(&self, topic: &str, payload: &str, principal: Option<&str>) -> Result<u64> {
        self.inner.check_open()?;
        let attribution = match principal {
            Some(p) => {
                crate::capsule::validate_principal(p)?;
                Attribution::Verified(p.to_string())
            }
            None => Attribution::System,
        };
        crate::bus::validate_message(topic, payload)?;
        let inner = &self.inner;
        let message = inner.publish_valid(Publish {
            topic,
            payload,
            source_id: inner.host_source_id.clone(),
            attribution,
            depth: 0,
            timestamp_ms: crate::host::sys::wall_clock_ms(),
        })?;
        Ok(message.sequence)
    }

    /// Subscribes the embedder to `pattern`: `handler` gets every matching
    /// message in publish order on the subscription's own thread, with the
    /// `dropped` / `lagged` counts since the previous one.
    pub fn subscribe(&self, pattern: &str, handler: DeliveryHandler) -> Result<HostSubscription> {
        self.inner.check_open()?;
        self.inner.bus.subscribe_host(pattern, handler)
    }

    /// Serves `astrid:kv` from `store` (`None`: back to a fresh built-in
    /// in-memory store). Takes effect for the next KV call of every capsule.
    pub fn set_kv_store(&self, store: Option<Arc<dyn KvStore>>) -> Result<()> {
        self.inner.check_open()?;
        let store =
            store.unwrap_or_else(|| crate::host::kv::default_store(self.inner.config.kv_quota));
        *self.inner.kv.write().unwrap_or_else(|e| e.into_inner()) = store;
        Ok(())
    }

    /// Live bus subscriptions (host and guest).
    pub fn subscription_count(&self) -> usize {
        self.inner.bus.queue_count()
    }

    /// The id host publishes carry as their source.
    pub fn host_source_id(&self) -> &str {
        &self.inner.host_source_id
    }
}

/// Joins `thread` if it ends within `grace` (true); otherwise leaves it
/// running, detached, so that shutdown stays bounded (false).
fn join_within(thread: std::thread::JoinHandle<()>, grace: Duration) -> bool {
    let deadline = Instant::now() + grace;
    while !thread.is_finished() {
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    let _ = thread.join();
    true
}

impl Drop for Runtime {
    fn drop(&mut self) {
        if !in_callback() {
            self.inner.close();
        }
    }
}

impl Drop for RuntimeInner {
    fn drop(&mut self) {
        // Normally close() already took the tokio runtime. If not (the owner
        // was dropped inside a callback), shut it down without blocking: this
        // may run on one of its own workers.
        if let Some(rt) = self
            .tokio
            .get_mut()
            .unwrap_or_else(|e| e.into_inner())
            .take()
        {
            rt.shutdown_background();
        }
        self.ticker_stop.cancel();
    }
}

impl RuntimeInner {
    /// The time of the last epoch tick: at most one tick behind `Instant::now()`.
    /// Deadlines are only checked at ticks, so call bookkeeping needs no finer clock.
    pub(crate) fn coarse_now(&self) -> Instant {
        self.monotonic_origin + Duration::from_millis(self.coarse_ms.load(Ordering::Relaxed))
    }

    /// Milliseconds since the runtime started, as of the last epoch tick.
    pub(crate) fn coarse_ms(&self) -> u64 {
        self.coarse_ms.load(Ordering::Relaxed)
    }

    /// Wall-clock milliseconds at `instant`, derived from the monotonic clock.
    pub(crate) fn wall_ms_at(&self, instant: Instant) -> u64 {
        let since = instant.saturating_duration_since(self.monotonic_origin);
        self.wall_origin_ms + u64::try_from(since.as_millis()).unwrap_or(u64::MAX / 2)
    }

    pub(crate) fn check_open(&self) -> Result<()> {
        if self.closed.load(Ordering::SeqCst) {
            return Err(Error::closed("the runtime has been shut down"));
        }
        Ok(())
    }

    fn close(&self) {
        if self.closed.swap(true, Ordering::SeqCst) {
            return;
        }
        let capsules: Vec<_> = self
            .capsules
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .drain(..)
            .collect();
        for capsule in capsules.iter().filter_map(Weak::upgrade) {
            capsule.begin_unload();
        }
        for capsule in capsules.iter().filter_map(Weak::upgrade) {
            capsule.finish_unload(self.config.unload_grace);
        }
        // Stops every subscription, waiting up to the grace for callbacks
        // in flight, so their finalizers have run when shutdown returns;
        // one still running then finalizes on its own thread when it returns.
        self.bus.close_within(Some(self.config.unload_grace));
        self.dispatcher.close();
        self.handoff.close(self.config.unload_grace);
        // Drops an embedder KV backend (running its finalizer) now that no
        // call can use it.
        *self.kv.write().unwrap_or_else(|e| e.into_inner()) = crate::host::kv::default_store(0);
        self.ticker_stop.cancel();
        if let Some(t) = self.ticker.lock().unwrap_or_else(|e| e.into_inner()).take() {
            let _ = t.join();
        }
        // Closing the channel lets the audit thread drain what is queued and
        // exit. An embedder's audit callback that blocks gets an unload
        // grace of its own: after it the thread is abandoned; it starts no
        // further delivery and drops the sink (running its finalizer)
        // itself once the callback in flight returns.
        self.audit_tx
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        let audit_thread = self
            .audit_thread
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        let audit_ended = match audit_thread {
            Some(t) => join_within(t, self.config.unload_grace),
            None => true,
        };
        if !audit_ended {
            self.audit_abandoned.store(true, Ordering::SeqCst);
        }
        self.log_sink
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        self.secret_provider
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if audit_ended {
            self.audit_sink
                .write()
                .unwrap_or_else(|e| e.into_inner())
                .take();
        }
        self.has_audit.store(false, Ordering::SeqCst);
        if let Some(rt) = self.tokio.lock().unwrap_or_else(|e| e.into_inner()).take() {
            rt.shutdown_timeout(self.config.unload_grace);
        }
    }

    /// The loaded capsules, strongly held for the caller's use.
    pub(crate) fn live_capsules(&self) -> Vec<Arc<CapsuleInner>> {
        self.capsules
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .filter_map(Weak::upgrade)
            .collect()
    }

    /// Publishes a message already checked with `bus::validate_message` and
    /// starts the interceptors it reaches (they come first in the fan-out
    /// budget, host ABI §8.6). Returns the stamped message once it is queued.
    pub(crate) fn publish_valid(
        self: &Arc<Self>,
        publish: Publish<'_>,
    ) -> Result<Arc<crate::bus::Message>> {
        let plan =
            crate::dispatch::plan(&self.live_capsules(), publish.topic, &publish.attribution);
        let budget = crate::bus::MAX_FAN_OUT - plan.len();
        let message = self.bus.publish_valid(publish, budget)?;
        self.dispatch(plan, message.clone());
        Ok(message)
    }

    pub(crate) fn register(&self, capsule: &Arc<CapsuleInner>) -> Result<()> {
        let mut list = self.capsules.lock().unwrap_or_else(|e| e.into_inner());
        // Checked under the registry lock so close() cannot miss it.
        self.check_open()?;
        list.retain(|w| w.strong_count() > 0);
        list.push(Arc::downgrade(capsule));
        Ok(())
    }

    pub(crate) fn unregister(&self, capsule: &CapsuleInner) {
        self.capsules
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|w| {
                w.upgrade()
                    .is_some_and(|c| !std::ptr::eq(Arc::as_ptr(&c), capsule))
            });
    }

    fn trim_idle_instances(&self) {
        let capsules: Vec<_> = self
            .capsules
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        for capsule in capsules.iter().filter_map(Weak::upgrade) {
            capsule.trim_idle_older_than(crate::capsule::IDLE_INSTANCE_TTL);
        }
    }

    /// `None` when the embedder disabled registry lookups.
    pub(crate) fn capsule_holds_capability(&self, id: &str, capability: &str) -> Option<bool> {
        if self.config.flags & FLAG_DISABLE_CAPABILITY_REGISTRY != 0 {
            return None;
        }
        let list = self.capsules.lock().unwrap_or_else(|e| e.into_inner());
        let found = list
            .iter()
            .filter_map(Weak::upgrade)
            .find(|c| c.shared.id == id)
            .is_some_and(|c| c.shared.capability_names.iter().any(|n| n == capability));
        Some(found)
    }

    pub(crate) fn log(&self, record: &LogRecord<'_>) {
        let sink = self
            .log_sink
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        if let Some(sink) = sink {
            run_callback(|| sink(record));
        }
    }

    /// Asks the secret provider; no provider means no value.
    pub(crate) fn secret(
        &self,
        request: &SecretRequest<'_>,
    ) -> std::result::Result<Option<String>, ()> {
        let provider = self
            .secret_provider
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        match provider {
            None => Ok(None),
            Some(provider) => run_callback(|| provider(request)).unwrap_or(Err(())),
        }
    }

    /// Whether a gate is installed (a request checked without one is
    /// decided by the manifest alone).
    pub(crate) fn has_gate(&self) -> bool {
        self.gate
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .is_some()
    }

    pub(crate) fn gate(&self) -> Option<GateFn> {
        self.gate.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub(crate) fn unix_socket_for(&self, name: &str) -> Option<PathBuf> {
        self.unix_sockets
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(name)
            .cloned()
    }

    pub(crate) fn accept_verifier(&self) -> Option<crate::gate::AcceptVerifier> {
        self.accept_verifier
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub(crate) fn kv_store(&self) -> Arc<dyn KvStore> {
        self.kv.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub(crate) fn mounted(&self, mount: Mount) -> Option<Arc<dyn Vfs>> {
        let mounts = self.mounts.read().unwrap_or_else(|e| e.into_inner());
        mounts.get(&mount).cloned()
    }

    /// Runs an embedder callback under a deadline (`limit`, and the call's
    /// own `call_deadline`) and the call's cancel token. By default the
    /// callback runs on a hand-off thread (`handoff`) so the call can return
    /// on time even if it never does; with `FLAG_INLINE_CALLBACKS` it runs right
    /// here and an overrun is only noticed when it returns.
    pub(crate) fn run_bounded<R: Send + 'static>(
        &self,
        limit: Duration,
        call_deadline: Instant,
        token: &CancelToken,
        callback: impl FnOnce() -> R + Send + 'static,
    ) -> Bounded<R> {
        self.run_handed_off(limit, call_deadline, token, false, callback)
    }

    /// `run_bounded`, where `always_run` marks cleanup (a provider `close`):
    /// such a callback runs even when the call has already been cancelled or
    /// is past its deadline; the caller just does not wait for it then.
    pub(crate) fn run_handed_off<R: Send + 'static>(
        &self,
        limit: Duration,
        call_deadline: Instant,
        token: &CancelToken,
        always_run: bool,
        callback: impl FnOnce() -> R + Send + 'static,
    ) -> Bounded<R> {
        if self.inline_callbacks() {
            return self.run_inline(limit, token, callback);
        }
        let slot: Arc<Mutex<Option<Option<R>>>> = Arc::new(Mutex::new(None));
        let done = token.child();
        let limit_at = Instant::now() + limit;
        let queued = {
            let slot = slot.clone();
            let done = done.clone();
            self.handoff.run(move || {
                // A caller that gave up (cancelled, or past its deadline
                // while this waited for a thread) gets no late callback,
                // unless it is cleanup that must happen anyway.
                if done.is_cancelled() && !always_run {
                    return;
                }
                let result = run_callback(callback);
                *slot.lock().unwrap_or_else(|e| e.into_inner()) = Some(result);
                done.cancel();
            })
        };
        if !queued {
            return Bounded::Cancelled;
        }
        // Most callbacks answer within microseconds: catch that awake.
        if !crate::signal::spin_until(|| done.is_cancelled()) {
            done.wait_until(limit_at.min(call_deadline));
        }
        // Marks the job finished from this side too, so one still queued
        // does not call the embedder for an answer nobody waits for.
        done.cancel();
        let finished = slot.lock().unwrap_or_else(|e| e.into_inner()).take();
        match finished {
            Some(Some(result)) => Bounded::Done(result),
            Some(None) => Bounded::Panicked,
            None if token.is_cancelled() || Instant::now() >= call_deadline => Bounded::Cancelled,
            None => Bounded::Overran,
        }
    }

    /// Whether embedder callbacks run on the guest's own thread
    /// (`FLAG_INLINE_CALLBACKS`).
    #[inline]
    pub(crate) fn inline_callbacks(&self) -> bool {
        self.config.flags & FLAG_INLINE_CALLBACKS != 0
    }

    /// `run_bounded` with `FLAG_INLINE_CALLBACKS`: the callback runs right
    /// here (so it needs neither `Send` nor `'static`), and an overrun is
    /// only noticed when it returns. Timed with the coarse clock, which
    /// costs no system call.
    pub(crate) fn run_inline<R>(
        &self,
        limit: Duration,
        token: &CancelToken,
        callback: impl FnOnce() -> R,
    ) -> Bounded<R> {
        let started_ms = self.coarse_ms();
        let result = run_callback(callback);
        if token.is_cancelled() {
            return Bounded::Cancelled;
        }
        if u128::from(self.coarse_ms().saturating_sub(started_ms)) > limit.as_millis() {
            return Bounded::Overran;
        }
        result.map_or(Bounded::Panicked, Bounded::Done)
    }

    #[inline]
    pub(crate) fn has_audit_sink(&self) -> bool {
        self.has_audit.load(Ordering::Relaxed)
    }

    /// Queues an event; waits when the queue is full (events are never
    /// dropped while the runtime runs; at shutdown, those queued behind an
    /// audit callback that outlives the unload grace are).
    pub(crate) fn emit_audit(&self, event: AuditEvent) {
        let tx = self
            .audit_tx
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        if let Some(tx) = tx {
            let _ = tx.send(event);
        }
    }
}
