//! Asking the embedder's gate (c-api §4): synchronous verdicts, deferred
//! verdicts through tickets, the gate deadline, and cancellation. A gate
//! that panics, overruns its deadline or answers nonsense has denied.

use super::Services;
use crate::cancel::CancelToken;
use crate::gate::{CallInterrupted, Deferral, GateAnswer};
use crate::handoff::Bounded;
use crate::policy::gate::{GateRequest, Verdict};
use std::time::Instant;

impl Services {
    /// Asks the gate about a request the manifest already allows. With no gate
    /// installed the manifest alone decides (allow).
    pub(crate) fn ask_gate(
        &self,
        request: GateRequest,
        token: &CancelToken,
        call_deadline: Instant,
    ) -> Result<Verdict, CallInterrupted> {
        let Some(gate) = self.gate() else {
            return Ok(Verdict::allow());
        };
        let limit = self.config.gate_timeout;
        let gate_deadline = Instant::now() + limit;
        let deferral = Deferral::new(token.clone());
        let answer = self.run_bounded(limit, call_deadline, token, move || {
            gate(&request, &deferral)
        });
        let ticket = match answer {
            Bounded::Done(GateAnswer::Decided(verdict)) => return Ok(verdict),
            Bounded::Done(GateAnswer::Pending(ticket)) => ticket,
            Bounded::Panicked => return Ok(Verdict::deny("the gate callback panicked")),
            Bounded::Overran => return Ok(Verdict::deny("the gate overran its deadline")),
            Bounded::Cancelled => return Err(CallInterrupted),
        };
        let until = gate_deadline.min(call_deadline);
        ticket.wait_until(until);
        if let Some(verdict) = ticket.take() {
            return Ok(verdict);
        }
        if token.is_cancelled() || Instant::now() >= call_deadline {
            return Err(CallInterrupted);
        }
        Ok(Verdict::deny(
            "the deferred verdict did not come before the gate deadline",
        ))
    }
}
