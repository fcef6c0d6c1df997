//! A capsule's instances: how a store is built (limits, fuel, deadlines,
//! the epoch callback that interrupts cancelled, late or stuck guests), the
//! pooled instance with its interceptor export resolved, the run loop's
//! store, and how a wasmtime failure becomes the error the embedder sees.

use super::options::CallResult;
use crate::cancel::CancelToken;
use crate::engine;
use crate::error::{Code, Error, Result};
use crate::host::call::CallContext;
use crate::host::shared::CapsuleShared;
use crate::host::state::InterfaceShared;
use crate::host::state::{HostState, Interrupt};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};
use wasmtime::component::{ComponentExportIndex, InstancePre, TypedFunc};
use wasmtime::{Engine, Store, Trap, UpdateDeadline};

/// A capsule's ceilings per instance and per call.
pub(crate) struct Limits {
    pub(crate) memory: u64,
    pub(crate) timeout: Duration,
    pub(crate) fuel: u64,
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
pub(crate) struct PooledInstance {
    pub(crate) store: Store<HostState>,
    pub(crate) hook: Option<HookFunc>,
    /// The cancel generation of the token in `store.data().call.token`;
    /// while it is current, a call reuses that token without a lock.
    pub(crate) generation: u64,
    /// When it was last returned to the pool (for idle trimming).
    pub(crate) idle_since: Instant,
}

/// Everything needed to make instances of one capsule.
pub(crate) struct InstanceFactory {
    pub(crate) engine: Engine,
    pub(crate) shared: Arc<CapsuleShared>,
    /// What each host interface keeps for the capsule, over its stores.
    pub(crate) interfaces: Arc<InterfaceShared>,
    pub(crate) pre: InstancePre<HostState>,
    pub(crate) hook: Option<ComponentExportIndex>,
    /// Whether the component imports WASI, whose sync host functions need
    /// the runtime's tokio context entered around guest code.
    pub(crate) uses_wasi: bool,
    pub(crate) limits: Limits,
}

impl InstanceFactory {
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
        // The loop runs under one id until it takes a message; each message
        // it takes is a call of its own (see `astrid:ipc`'s delivery).
        let call_id = store.data_mut().begin_call_id();
        let _serving = crate::handoff::serve_call(call_id);
        // The loop's instance is never idle.
        store.data().call.usage.call_started();
        let _enter = self.uses_wasi.then(|| self.shared.services.handle.enter());
        let outcome = run.call(&mut store, ());
        store.data().stdio.flush();
        outcome.map_err(|e| classify_failure(&store, &e, &self.limits, "run loop"))
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
            &self.engine,
            HostState::new(
                self.shared.clone(),
                self.interfaces.clone(),
                self.limits.memory,
            ),
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
        data.call = CallContext::idle(token.clone(), data.call.usage.clone());
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

    /// A new pooled instance holding `token` of cancel generation `generation`.
    pub(crate) fn new_pooled(
        &self,
        generation: u64,
        token: CancelToken,
    ) -> Result<Box<PooledInstance>> {
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
        Ok(Box::new(PooledInstance {
            store,
            hook,
            generation,
            idle_since: Instant::now(),
        }))
    }
}

/// Turns a wasmtime failure into the error the embedder sees.
pub(crate) fn classify_failure(
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
pub(crate) fn interrupt_guests(engine: &wasmtime::Engine, cancel: impl FnOnce()) {
    engine.increment_epoch();
    cancel();
    engine.increment_epoch();
}
