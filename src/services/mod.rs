//! The runtime-wide services a host call may use, and nothing else of the
//! runtime: configuration, clocks, the embedder's callbacks (gate, log,
//! secrets, accept verifier, KV backend, VFS mounts) and the threads that run
//! them under a deadline, the audit trail, the bus, and — through [`Peers`],
//! which the layer above implements — the other capsules. Host interfaces
//! reach the runtime only through this type.

mod audit;
mod gate;

pub(crate) use audit::Audit;
pub use audit::{AuditEvent, AuditSink, Outcome};

use crate::bus::{Bus, Message, Publish};
use crate::cancel::CancelToken;
use crate::config::{RuntimeConfig, FLAG_INLINE_CALLBACKS};
use crate::error::{Error, Result};
use crate::gate::{AcceptVerifier, GateFn};
use crate::handoff::{run_callback, Bounded, HandOff};
use crate::kv::KvStore;
use crate::policy::paths::Mount;
use crate::signal::{MutexExt, RwLockExt};
use crate::usage::{CapsuleUsage, UsageTotals};
use crate::vfs::Vfs;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock, Weak};
use std::time::{Duration, Instant};

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
    /// The call that produced the line (0: outside any call).
    pub call_id: u64,
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

/// The rest of the runtime as a host call sees it: the interceptors of the
/// other capsules (a guest publish starts them) and the capability registry.
/// Implemented by the runtime, which owns the capsules.
pub(crate) trait Peers: Send + Sync {
    /// Publishes a message already checked with `bus::validate_message` and
    /// starts the interceptors it reaches. Returns it once it is queued.
    fn publish(self: Arc<Self>, publish: Publish<'_>) -> Result<Arc<Message>>;
    /// Interceptor invocations triggered by `source_id` not yet finished.
    fn pending_for(&self, source_id: &str) -> usize;
    /// Whether the loaded capsule `id` holds `capability`; `None` when the
    /// embedder disabled registry lookups.
    fn capsule_holds_capability(&self, id: &str, capability: &str) -> Option<bool>;
}

/// See the module documentation.
pub struct Services {
    pub(crate) config: RuntimeConfig,
    pub(crate) handle: tokio::runtime::Handle,
    pub(crate) monotonic_origin: Instant,
    /// Wall clock (ms since the epoch) at `monotonic_origin`.
    wall_origin_ms: u64,
    /// Milliseconds since `monotonic_origin` at the last epoch tick: a clock
    /// read that costs no system call, for call bookkeeping. The epoch
    /// ticker writes it.
    pub(crate) coarse_ms: Arc<AtomicU64>,
    /// Source id of calls and messages that come from the embedder.
    pub(crate) host_source_id: Arc<str>,
    pub(crate) bus: Arc<Bus>,
    /// The threads that run embedder callbacks (see `run_bounded`).
    handoff: HandOff,
    /// The KV backend: built-in memory unless the embedder installed one.
    pub(crate) kv: RwLock<Arc<dyn KvStore>>,
    pub(crate) log_sink: RwLock<Option<LogSink>>,
    pub(crate) secret_provider: RwLock<Option<SecretProvider>>,
    pub(crate) gate: RwLock<Option<GateFn>>,
    pub(crate) accept_verifier: RwLock<Option<AcceptVerifier>>,
    /// Socket paths for `bind-unix`, by capsule name.
    pub(crate) unix_sockets: RwLock<HashMap<String, PathBuf>>,
    /// Embedder-supplied providers by mount.
    pub(crate) mounts: RwLock<HashMap<Mount, Arc<dyn Vfs>>>,
    pub(crate) audit: Audit,
    pub(crate) closed: AtomicBool,
    peers: OnceLock<Weak<dyn Peers>>,
    /// The next call id not handed out (ids start at 1; 0 is "no call").
    next_call_id: AtomicU64,
    /// The usage of every capsule loaded: those live, and the totals of
    /// those gone.
    usage: Mutex<RuntimeUsage>,
}

/// The capsules a runtime counts: live ones, and the totals of those gone.
#[derive(Default)]
struct RuntimeUsage {
    live: Vec<Arc<CapsuleUsage>>,
    retired: UsageTotals,
}

impl Services {
    pub(crate) fn new(
        config: RuntimeConfig,
        handle: tokio::runtime::Handle,
        kv: Arc<dyn KvStore>,
        host_source_id: Arc<str>,
        wall_origin_ms: u64,
    ) -> Result<Services> {
        Ok(Services {
            bus: Arc::new(Bus::new(config.queue_limits)),
            config,
            handle,
            monotonic_origin: Instant::now(),
            wall_origin_ms,
            coarse_ms: Arc::new(AtomicU64::new(0)),
            host_source_id,
            handoff: HandOff::default(),
            kv: RwLock::new(kv),
            log_sink: RwLock::new(None),
            secret_provider: RwLock::new(None),
            gate: RwLock::new(None),
            accept_verifier: RwLock::new(None),
            unix_sockets: RwLock::new(HashMap::new()),
            mounts: RwLock::new(HashMap::new()),
            audit: Audit::start()?,
            closed: AtomicBool::new(false),
            peers: OnceLock::new(),
            next_call_id: AtomicU64::new(1),
            usage: Mutex::default(),
        })
    }

    /// Counts a capsule just loaded in the runtime's figures.
    pub(crate) fn track_usage(&self, usage: &Arc<CapsuleUsage>) {
        self.usage.locked().live.push(usage.clone());
    }

    /// A capsule is going: its figures join the retired totals, under the
    /// lock [`usage_totals`](Self::usage_totals) reads with, so no reading
    /// ever misses them (the runtime's counters never go down).
    pub(crate) fn retire_usage(&self, usage: &Arc<CapsuleUsage>) {
        let mut runtime = self.usage.locked();
        if let Some(i) = runtime.live.iter().position(|u| Arc::ptr_eq(u, usage)) {
            runtime.live.swap_remove(i);
            let (totals, _, _) = usage.snapshot();
            runtime.retired.add(&totals);
        }
    }

    /// The figures of every capsule this runtime has loaded.
    pub(crate) fn usage_totals(&self) -> UsageTotals {
        let runtime = self.usage.locked();
        let mut totals = runtime.retired;
        for usage in &runtime.live {
            totals.add(&usage.snapshot().0);
        }
        totals
    }

    /// Reserves `count` call ids, unique within the runtime, and returns
    /// the first. Stores take them in blocks, so a call costs no shared
    /// write: ids are unique but not in the order calls start.
    pub(crate) fn reserve_call_ids(&self, count: u64) -> u64 {
        self.next_call_id.fetch_add(count, Ordering::Relaxed)
    }

    /// Connects the layer above (once, right after it is built).
    pub(crate) fn connect_peers(&self, peers: Weak<dyn Peers>) {
        let _ = self.peers.set(peers);
    }

    /// The other capsules; `None` once the runtime is gone.
    pub(crate) fn peers(&self) -> Option<Arc<dyn Peers>> {
        self.peers.get().and_then(Weak::upgrade)
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.closed.load(Ordering::SeqCst)
    }

    /// Stops the callback threads (bounded by `grace`) and drops every
    /// embedder callback, running their finalizers, now that no call can
    /// use them. `default_kv` replaces an embedder's KV backend.
    pub(crate) fn shut_down(&self, grace: Duration, default_kv: Arc<dyn KvStore>) {
        self.handoff.close(grace);
        *self.kv.write_locked() = default_kv;
        self.audit.shut_down(grace);
        self.log_sink.write_locked().take();
        self.secret_provider.write_locked().take();
    }

    #[inline]
    pub(crate) fn has_audit_sink(&self) -> bool {
        self.audit.has_sink()
    }

    /// See [`Audit::emit`].
    pub(crate) fn emit_audit(&self, event: AuditEvent) {
        self.audit.emit(event);
    }

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

    pub(crate) fn log(&self, record: &LogRecord<'_>) {
        let sink = self.log_sink.read_locked().clone();
        if let Some(sink) = sink {
            run_callback(|| sink(record));
        }
    }

    /// Asks the secret provider; no provider means no value.
    pub(crate) fn secret(
        &self,
        request: &SecretRequest<'_>,
    ) -> std::result::Result<Option<String>, ()> {
        let provider = self.secret_provider.read_locked().clone();
        match provider {
            None => Ok(None),
            Some(provider) => run_callback(|| provider(request)).unwrap_or(Err(())),
        }
    }

    /// Whether a gate is installed (a request checked without one is
    /// decided by the manifest alone).
    pub(crate) fn has_gate(&self) -> bool {
        self.gate.read_locked().is_some()
    }

    pub(crate) fn gate(&self) -> Option<GateFn> {
        self.gate.read_locked().clone()
    }

    pub(crate) fn unix_socket_for(&self, name: &str) -> Option<PathBuf> {
        self.unix_sockets.read_locked().get(name).cloned()
    }

    pub(crate) fn accept_verifier(&self) -> Option<crate::gate::AcceptVerifier> {
        self.accept_verifier.read_locked().clone()
    }

    pub(crate) fn kv_store(&self) -> Arc<dyn KvStore> {
        self.kv.read_locked().clone()
    }

    pub(crate) fn mounted(&self, mount: Mount) -> Option<Arc<dyn Vfs>> {
        let mounts = self.mounts.read_locked();
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
        let call_id = crate::handoff::current_call_id();
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
                let _serving = crate::handoff::serve_call(call_id);
                let result = run_callback(callback);
                *slot.locked() = Some(result);
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
        let finished = slot.locked().take();
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
}
