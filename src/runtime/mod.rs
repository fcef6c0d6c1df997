//! The runtime: the owner of everything a set of capsules shares. It builds
//! the layers below (the services host calls use, the platform capsules are
//! compiled and instantiated on, the interceptor dispatcher), runs the epoch
//! ticker and the housekeeping task, and shuts it all down in order.

mod metrics;

pub use crate::config::{
    RuntimeConfig, EPOCH_TICK, FLAG_ALLOW_ANY_BIND, FLAG_ALLOW_LOOPBACK,
    FLAG_DISABLE_CAPABILITY_REGISTRY, FLAG_INLINE_CALLBACKS, FLAG_WASI_SOCKETS, KNOWN_FLAGS,
};
pub use crate::services::{
    AuditEvent, AuditSink, LogLevel, LogRecord, LogSink, Outcome, SecretProvider, SecretRequest,
};
pub use metrics::RuntimeStats;

use crate::bus::{Attribution, DeliveryHandler, HostSubscription, Publish};
use crate::cancel::CancelToken;
use crate::capsule::{self, validate_principal, Capsule, LoadOptions, Platform};
use crate::dispatch::Dispatcher;
use crate::engine::{self, CompileCache};
use crate::error::{Code, Error, Result};
use crate::gate::{AcceptVerifier, GateFn};
use crate::handoff::{in_callback, refuse_reentry};
use crate::host;
use crate::kv::KvStore;
use crate::policy::paths::Mount;
use crate::services::{Peers, Services};
use crate::signal::{MutexExt, RwLockExt};
use crate::vfs::Vfs;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

/// How often idle pooled instances are looked for and freed.
const HOUSEKEEPING_PERIOD: Duration = Duration::from_secs(10);

/// The runtime behind its owner handle (shared with the housekeeping task).
pub struct RuntimeInner {
    pub(crate) services: Arc<Services>,
    pub(crate) platform: Arc<Platform>,
    pub(crate) dispatcher: Arc<Dispatcher>,
    tokio: Mutex<Option<tokio::runtime::Runtime>>,
    ticker_stop: CancelToken,
    ticker: Mutex<Option<JoinHandle<()>>>,
}

/// Owner of a runtime. Dropping it shuts the runtime down.
pub struct Runtime {
    pub(crate) inner: Arc<RuntimeInner>,
}

impl Runtime {
    pub fn new(config: RuntimeConfig) -> Result<Runtime> {
        config.validate()?;
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

        let host_source_id =
            uuid::Uuid::new_v5(&uuid::Uuid::NAMESPACE_OID, b"astrid-embedder").to_string();
        let kv = host::kv::default_store(config.kv_quota);
        let services = Arc::new(Services::new(
            config,
            tokio.handle().clone(),
            kv,
            Arc::from(host_source_id),
            host::sys::wall_clock_ms(),
        )?);
        let ticker_stop = CancelToken::new();
        let ticker = {
            let engine = engine.clone();
            let stop = ticker_stop.clone();
            let origin = services.monotonic_origin;
            let coarse_ms = services.coarse_ms.clone();
            std::thread::Builder::new()
                .name("astrid-epoch".into())
                .spawn(move || {
                    while !stop.wait_timeout(EPOCH_TICK) {
                        let ms = u64::try_from(origin.elapsed().as_millis()).unwrap_or(u64::MAX);
                        coarse_ms.store(ms, Ordering::Relaxed);
                        engine.increment_epoch();
                    }
                })
                .map_err(|e| Error::new(Code::Io, "cannot start the epoch ticker").caused_by(e))?
        };
        let platform = Arc::new(Platform::new(
            services.clone(),
            engine,
            linker,
            CompileCache::default(),
        ));
        let dispatcher = Arc::new(Dispatcher::new(platform.clone()));
        let peers: Arc<dyn Peers> = dispatcher.clone();
        services.connect_peers(Arc::downgrade(&peers));
        let runtime = Runtime {
            inner: Arc::new(RuntimeInner {
                services,
                platform,
                dispatcher,
                tokio: Mutex::new(Some(tokio)),
                ticker_stop,
                ticker: Mutex::new(Some(ticker)),
            }),
        };
        // Housekeeping: free pooled instances idle for longer than their TTL.
        let weak = Arc::downgrade(&runtime.inner);
        runtime.inner.services.handle.spawn(async move {
            loop {
                tokio::time::sleep(HOUSEKEEPING_PERIOD).await;
                let Some(inner) = weak.upgrade() else { break };
                if inner.services.is_closed() {
                    break;
                }
                inner.platform.trim_idle_instances();
            }
        });
        Ok(runtime)
    }

    /// Loads the capsule in `dir` (its `Capsule.toml` and component).
    pub fn load_dir(&self, dir: &Path, options: &LoadOptions) -> Result<Capsule> {
        refuse_reentry("astrid_capsule_load")?;
        self.inner.services.check_open()?;
        capsule::load::load_dir(&self.inner.platform, dir, options)
    }

    /// Loads a capsule from its manifest text and component bytes.
    pub fn load_bytes(
        &self,
        wasm: &[u8],
        manifest: &str,
        options: &LoadOptions,
    ) -> Result<Capsule> {
        self.inner.services.check_open()?;
        capsule::load::load_bytes(&self.inner.platform, wasm, manifest, options)
    }

    pub fn config(&self) -> &RuntimeConfig {
        &self.inner.services.config
    }

    /// Installs (or with `None` removes) the security gate. Calls already
    /// asking the previous gate finish with it; a host call whose checks
    /// began before the first gate was installed is decided by the manifest.
    pub fn set_gate(&self, gate: Option<GateFn>) -> Result<()> {
        self.inner.services.check_open()?;
        *self.inner.services.gate.write_locked() = gate;
        Ok(())
    }

    /// Installs (or with `None` removes) the accept verifier that screens
    /// every connection to a capsule's unix listener.
    pub fn set_accept_verifier(&self, verifier: Option<AcceptVerifier>) -> Result<()> {
        self.inner.services.check_open()?;
        *self.inner.services.accept_verifier.write_locked() = verifier;
        Ok(())
    }

    /// Assigns the socket path `bind-unix` binds for capsules named `name`
    /// loaded afterwards (`None` removes the assignment). The guest never
    /// sees the path. A path in a capsule's load options takes precedence.
    pub fn assign_unix_socket(&self, name: &str, path: Option<PathBuf>) -> Result<()> {
        self.inner.services.check_open()?;
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
        let mut paths = self.inner.services.unix_sockets.write_locked();
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
        self.inner.services.check_open()?;
        let mut mounts = self.inner.services.mounts.write_locked();
        match provider {
            Some(provider) => mounts.insert(mount, provider),
            None => mounts.remove(&mount),
        };
        Ok(())
    }

    /// Installs (or with `None` removes) the log sink. The previous sink is
    /// dropped once no emission uses it any more.
    pub fn set_log_sink(&self, sink: Option<LogSink>) -> Result<()> {
        self.inner.services.check_open()?;
        *self.inner.services.log_sink.write_locked() = sink;
        Ok(())
    }

    /// Installs (or with `None` removes) the provider of secret config values.
    pub fn set_secret_provider(&self, provider: Option<SecretProvider>) -> Result<()> {
        self.inner.services.check_open()?;
        *self.inner.services.secret_provider.write_locked() = provider;
        Ok(())
    }

    pub fn set_audit_sink(&self, sink: Option<AuditSink>) -> Result<()> {
        self.inner.services.check_open()?;
        self.inner.services.audit.set_sink(sink);
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
        self.inner.services.is_closed()
    }

    /// Publishes JSON text on `topic` as the embedder (host ABI §8.7):
    /// attributed `system`, or `verified(principal)` when one is named.
    /// Returns the message's sequence number once it is queued.
    pub fn publish(&self, topic: &str, payload: &str, principal: Option<&str>) -> Result<u64> {
        self.inner.services.check_open()?;
        let attribution = match principal {
            Some(p) => {
                validate_principal(p)?;
                Attribution::Verified(p.to_string())
            }
            None => Attribution::System,
        };
        crate::bus::validate_message(topic, payload)?;
        let services = &self.inner.services;
        let message = self.inner.dispatcher.publish_valid(Publish {
            topic,
            payload,
            source_id: services.host_source_id.clone(),
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
        self.inner.services.check_open()?;
        self.inner.services.bus.subscribe_host(pattern, handler)
    }

    /// Serves `astrid:kv` from `store` (`None`: back to a fresh built-in
    /// in-memory store). Takes effect for the next KV call of every capsule.
    pub fn set_kv_store(&self, store: Option<Arc<dyn KvStore>>) -> Result<()> {
        self.inner.services.check_open()?;
        let store = store
            .unwrap_or_else(|| crate::host::kv::default_store(self.inner.services.config.kv_quota));
        *self.inner.services.kv.write_locked() = store;
        Ok(())
    }

    /// Live bus subscriptions (host and guest).
    pub fn subscription_count(&self) -> usize {
        self.inner.services.bus.queue_count()
    }

    /// The id host publishes carry as their source.
    pub fn host_source_id(&self) -> &str {
        &self.inner.services.host_source_id
    }
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
        // Normally close() already ran. If not (the owner was dropped inside a
        // callback), shut down without blocking, as this may run on one of
        // the runtime's own threads: nothing new starts, every capsule is
        // cancelled (its handle finishes the unload when it drops, and its
        // calls end as `Closed` rather than running on without a ticker),
        // and the worker threads stop in the background.
        if !self.services.closed.swap(true, Ordering::SeqCst) {
            for capsule in self.platform.live_capsules() {
                capsule.begin_unload();
            }
            self.dispatcher.close();
        }
        if let Some(rt) = self.tokio.get_mut_recovered().take() {
            rt.shutdown_background();
        }
        self.ticker_stop.cancel();
    }
}

impl RuntimeInner {
    /// Cancels every capsule, waits (bounded) for calls in flight, then stops
    /// the bus, the dispatcher, the callback threads, the ticker, the audit
    /// thread and the worker threads, in that order. Idempotent.
    fn close(&self) {
        let services = &self.services;
        if services.closed.swap(true, Ordering::SeqCst) {
            return;
        }
        let grace = services.config.unload_grace;
        self.platform.unload_all(grace);
        // Stops every subscription, waiting up to the grace for callbacks
        // in flight, so their finalizers have run when shutdown returns;
        // one still running then finalizes on its own thread when it returns.
        services.bus.close_within(Some(grace));
        self.dispatcher.close();
        self.ticker_stop.cancel();
        if let Some(t) = self.ticker.locked().take() {
            let _ = t.join();
        }
        services.shut_down(grace, host::kv::default_store(0));
        if let Some(rt) = self.tokio.locked().take() {
            rt.shutdown_timeout(grace);
        }
    }
}
