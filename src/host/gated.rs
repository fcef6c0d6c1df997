//! The pipeline every gated host call runs (host ABI §4): cancel check,
//! validation and manifest, the embedder's gate, the operation, one audit
//! event; denials become the interface's `capability-denied`.

use super::audit::{AuditCase, Payload};
use super::view::{CallCtx, HostView};
use crate::policy::gate::GateRequest;
use crate::services::Outcome;
use std::time::Instant;

/// The gated pipeline, for every interface's view.
pub(crate) trait Gated: HostView + Sized {
    /// Every gated host call goes through here, in the order of host ABI
    /// §4: cancel check → validation and manifest (`prepare`) → gate (one
    /// question per request `prepare` returns) → `op` → exactly one audit
    /// event. Denials become the interface's `capability-denied`; the gate's
    /// reason reaches the audit event only.
    fn gated<C, T: Payload, E: GatedError>(
        &mut self,
        call: &'static str,
        fallback_target: &str,
        bytes_in: u64,
        prepare: impl FnOnce(&mut Self) -> Result<Prepared<C>, Refused<E>>,
        op: impl FnOnce(&mut Self, C) -> Result<T, E>,
    ) -> Result<T, E> {
        let started = Instant::now();
        let mut target = None;
        let result = self.gated_steps(&mut target, prepare, op);
        let ctx = self.ctx();
        let bytes_out = result.as_ref().map_or(0, Payload::payload_len);
        let interface = crate::usage::interface_of(call);
        let elapsed = ctx.count_host_call(interface, started, result.is_ok(), bytes_in, bytes_out);
        if ctx.capsule.services.has_audit_sink() {
            let (outcome, reason) = match &result {
                Ok(_) => (Outcome::Allowed, None),
                Err(Refused::Denied(reason)) => (Outcome::Denied, Some(reason.clone())),
                Err(Refused::Failed(e)) if e.is_denial() => (Outcome::Denied, Some(e.case())),
                Err(Refused::Failed(e)) => (Outcome::Failed, Some(e.case())),
            };
            let target = target.as_deref().unwrap_or(fallback_target);
            ctx.audit(
                call,
                Some(target),
                bytes_in + bytes_out,
                outcome,
                reason.as_deref(),
                elapsed,
            );
        }
        result.map_err(|refused| match refused {
            Refused::Denied(_) => E::denied(),
            Refused::Failed(e) => e,
        })
    }

    fn gated_steps<C, T, E: GatedError>(
        &mut self,
        target: &mut Option<String>,
        prepare: impl FnOnce(&mut Self) -> Result<Prepared<C>, Refused<E>>,
        op: impl FnOnce(&mut Self, C) -> Result<T, E>,
    ) -> Result<T, Refused<E>> {
        if self.ctx().call.token.is_cancelled() {
            return Err(Refused::Failed(E::cancelled()));
        }
        let prepared = prepare(self)?;
        // Empty when no audit sink was installed as the call began.
        *target = Some(prepared.target).filter(|t| !t.is_empty());
        for request in prepared.asks {
            match self.ctx().ask_gate(request) {
                Ok(()) => {}
                Err(GateRefusal::Denied(reason)) => return Err(Refused::Denied(reason)),
                Err(GateRefusal::Interrupted) => return Err(Refused::Failed(E::cancelled())),
            }
        }
        op(self, prepared.ctx).map_err(Refused::Failed)
    }
}

impl<V: HostView> Gated for V {}

impl CallCtx<'_> {
    /// Asks the embedder's gate about one request the manifest allowed.
    pub(crate) fn ask_gate(&self, mut request: GateRequest) -> Result<(), GateRefusal> {
        request.call_id = self.call.id;
        let runtime = &self.capsule.services;
        let verdict = runtime.ask_gate(request, &self.call.token, self.call.deadline);
        self.call
            .usage
            .gate_asked(matches!(&verdict, Ok(v) if !v.allowed));
        match verdict {
            Ok(verdict) if verdict.allowed => Ok(()),
            Ok(verdict) => {
                let reason = verdict
                    .reason
                    .unwrap_or_else(|| "denied by the gate".into());
                Err(GateRefusal::Denied(format!("gate: {reason}")))
            }
            Err(crate::gate::CallInterrupted) => Err(GateRefusal::Interrupted),
        }
    }
}

/// What a gated call's `prepare` step produced: the audit target (VFS
/// spelling, `host:port`, URL), the gate questions, and what `op` needs.
pub(crate) struct Prepared<C> {
    pub target: String,
    pub asks: Vec<GateRequest>,
    pub ctx: C,
}

/// Why the gate did not allow a request.
pub(crate) enum GateRefusal {
    /// The gate's reason (for the audit log only).
    Denied(String),
    /// The call was cancelled or reached its deadline while asking.
    Interrupted,
}

/// Why a gated call stopped before its operation.
pub(crate) enum Refused<E> {
    /// Manifest or gate said no (the reason is for the audit log only).
    Denied(String),
    Failed(E),
}

impl<E> From<&'static str> for Refused<E> {
    fn from(reason: &'static str) -> Self {
        Refused::Denied(reason.to_string())
    }
}

/// The error type of a gated interface.
pub(crate) trait GatedError: AuditCase {
    /// Its `capability-denied` case.
    fn denied() -> Self;
    /// Its cancel result (host ABI §7.3).
    fn cancelled() -> Self;
}
