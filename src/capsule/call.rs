//! The call path: an embedder call or a bus message runs
//! `astrid-hook-trigger` on a leased instance, with the call's principal,
//! config overlay, deadline and fuel set on the store, and the resources
//! the call opened closed when it ends.

use super::cancel::CallCancel;
use super::instance::{classify_failure, Limits, PooledInstance};
use super::options::{validate_principal, CallControl, CallOptions, CallResult, Invocation};
use super::pool::CapsuleInner;
use crate::error::{Code, Error, Result};
use crate::usage::CallEnd;
use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

impl CapsuleInner {
    /// An embedder call: its result and the id it ran under (a failure
    /// carries the id in the error).
    pub(crate) fn call(
        &self,
        action: &str,
        payload: &[u8],
        options: Option<&CallOptions>,
    ) -> Result<(CallResult, u64)> {
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
        let control = options
            .filter(|o| o.timeout.is_some() || o.fuel.is_some() || o.cancel.is_some())
            .map(|o| CallControl {
                timeout: o.timeout,
                fuel: o.fuel,
                cancel: o.cancel.clone(),
            });
        self.invoke(
            action,
            payload,
            Invocation {
                principal,
                overlay,
                source_id: None,
                timestamp_ms: None,
                depth: 0,
                control,
            },
        )
    }

    /// Runs `astrid-hook-trigger` on a pooled instance for an embedder call
    /// or a bus message: the answer and the call's id, or the failure
    /// (carrying the id once the call had one). Counted in the capsule's
    /// usage either way.
    pub(crate) fn invoke(
        &self,
        action: &str,
        payload: &[u8],
        invocation: Invocation,
    ) -> Result<(CallResult, u64)> {
        let outcome = self.run_invocation(action, payload, invocation);
        if let Err(e) = &outcome {
            if e.call_id() == 0 {
                // It never ran on a store, which counts the calls that do.
                self.shared.usage.unstarted(call_end(e.code()));
            }
        }
        outcome
    }

    fn run_invocation(
        &self,
        action: &str,
        payload: &[u8],
        invocation: Invocation,
    ) -> Result<(CallResult, u64)> {
        self.check_loaded()?;
        self.factory.hook.ok_or_else(|| {
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
            control,
        } = invocation;
        let limits = &self.factory.limits;
        let (timeout, fuel, cancel) = match &control {
            None => (limits.timeout, limits.fuel, None),
            Some(c) => (
                c.timeout.map_or(limits.timeout, |t| t.min(limits.timeout)),
                c.fuel.unwrap_or(limits.fuel),
                c.cancel.as_ref(),
            ),
        };
        if cancel.is_some_and(CallCancel::is_fired) {
            return Err(cancelled_before_start());
        }
        let generation = self.call_generation.load(Ordering::Acquire);
        let rt = &self.shared.services;
        let started = rt.coarse_now();
        let deadline = if timeout < limits.timeout {
            // A shorter deadline of the embedder's: read the precise clock.
            Instant::now() + timeout
        } else {
            // The coarse clock lags by up to one tick; adding a tick keeps
            // the deadline from ever being earlier than the configured timeout.
            started + timeout + crate::config::EPOCH_TICK
        };
        let mut worker = self.lease(generation, deadline)?;

        let PooledInstance {
            store,
            hook,
            generation: held,
            ..
        } = &mut *worker;
        let state = store.data_mut();
        if *held != generation || state.call.token.is_cancelled() {
            // A cancel since this instance's last call (capsule-wide, or a
            // per-call token that ended its last call): the store takes a
            // fresh token under the current generation's.
            let (current, token) = self.current_token();
            *held = current;
            state.call.token = token.child();
            if current != generation {
                // Another cancel came after this call started: it covers it.
                self.release(worker, true);
                return Err(cancelled_before_start());
            }
        }
        if let Some(cancel) = cancel {
            cancel.attach(&self.factory.engine, &state.call.token);
            if cancel.is_fired() {
                // Fired since the check above: the guest does not run.
                cancel.detach(&state.call.token);
                self.release(worker, true);
                return Err(cancelled_before_start());
            }
        }
        let call_id = state.begin_call_id();
        // Log lines and embedder callbacks of this call carry its id.
        let _serving = crate::handoff::serve_call(call_id);
        state.call.usage.call_started();
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
            store.set_fuel(fuel)?;
            store.set_epoch_deadline(1);
            // Entering costs ~60 ns; pure-astrid capsules skip it.
            let _enter = self.factory.uses_wasi.then(|| rt.handle.enter());
            let hook =
                hook.ok_or_else(|| wasmtime::format_err!("astrid-hook-trigger export is missing"))?;
            hook.call(&mut *store, (action, payload))
        })();
        store.data().stdio.flush();
        store.data_mut().end_call();
        if let Some(cancel) = cancel {
            cancel.detach(&store.data().call.token);
            if cancel.is_fired() {
                // A fire may still be on its way to this store's token (the
                // token takes its children before cancelling them): the next
                // call on this store starts from a fresh one.
                *held = u64::MAX;
            }
        }

        let fuel_used = fuel.saturating_sub(store.get_fuel().unwrap_or(fuel));
        // On the coarse clock (the epoch tick): reading a precise one twice
        // would cost a tenth of a no-op call. A call's share of ticks is
        // its duration on average, so the sum is right over many calls,
        // though a single short call reads as 0 or a whole tick.
        let guest_ns = u64::try_from(
            rt.coarse_now()
                .saturating_duration_since(started)
                .as_nanos(),
        )
        .unwrap_or(u64::MAX);
        match outcome {
            Ok((result,)) => {
                store
                    .data()
                    .call
                    .usage
                    .call_ended(CallEnd::Ok, fuel_used, guest_ns);
                self.release(worker, true);
                Ok((result, call_id))
            }
            Err(e) => {
                let limits = Limits {
                    memory: limits.memory,
                    timeout,
                    fuel,
                };
                let err = classify_failure(store, &e, &limits, "call").in_call(call_id);
                store
                    .data()
                    .call
                    .usage
                    .call_ended(call_end(err.code()), fuel_used, guest_ns);
                // A failed instance may hold broken state: never reuse it.
                self.release(worker, false);
                Err(err)
            }
        }
    }
}

/// How a failed call counts in the usage figures.
fn call_end(code: Code) -> CallEnd {
    match code {
        Code::Trap => CallEnd::Trap,
        Code::Timeout => CallEnd::Timeout,
        Code::OutOfFuel => CallEnd::OutOfFuel,
        Code::Cancelled => CallEnd::Cancelled,
        Code::ResourceLimit => CallEnd::ResourceLimit,
        _ => CallEnd::Other,
    }
}

fn cancelled_before_start() -> Error {
    Error::new(Code::Cancelled, "the call was cancelled before it started")
}

fn same_principal(a: &Option<Arc<str>>, b: &Option<Arc<str>>) -> bool {
    match (a, b) {
        (None, None) => true,
        (Some(a), Some(b)) => Arc::ptr_eq(a, b) || a == b,
        _ => false,
    }
}
