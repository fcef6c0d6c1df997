//! Asking the embedder's gate (c-api §4): synchronous verdicts, deferred
//! verdicts through tickets, the gate deadline, and cancellation. A gate
//! that panics, overruns its deadline or answers nonsense has denied.

use crate::cancel::CancelToken;
use crate::handoff::Bounded;
use crate::policy::gate::{GateRequest, Verdict};
use crate::runtime::RuntimeInner;
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// The gate's immediate answer.
pub enum GateAnswer {
    Decided(Verdict),
    /// The verdict comes later through this ticket.
    Pending(Arc<Ticket>),
}

/// Lets a gate defer its verdict: [`Deferral::ticket`] makes the ticket it
/// resolves later, from any thread.
pub struct Deferral {
    token: CancelToken,
}

impl Deferral {
    pub fn ticket(&self) -> Arc<Ticket> {
        Arc::new(Ticket {
            verdict: Mutex::new(None),
            answered: self.token.child(),
        })
    }
}

pub type GateFn = Arc<dyn Fn(&GateRequest, &Deferral) -> GateAnswer + Send + Sync>;

/// A local peer knocking on a capsule's unix listener (host ABI §2.6),
/// after the OS user check passed.
pub struct AcceptRequest<'a> {
    pub capsule: &'a str,
    pub pid: Option<i32>,
    pub uid: u32,
    pub gid: u32,
}

/// The embedder's answer for one incoming unix connection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AcceptVerdict {
    /// Hand the connection to the guest; `principal` is what
    /// `connection-principal` reports (`None`: unauthenticated).
    Allow { principal: Option<String> },
    /// Close it before the guest sees it.
    Refuse,
}

/// The embedder's accept verifier. Runs on the thread of the guest call
/// that accepts, so it should answer quickly.
pub type AcceptVerifier = Arc<dyn Fn(&AcceptRequest<'_>) -> AcceptVerdict + Send + Sync>;

/// A deferred verdict. Resolving twice, or after the call gave up, is
/// harmless: only the first answer counts and a late one is dropped.
pub struct Ticket {
    verdict: Mutex<Option<Verdict>>,
    /// Fired on resolve; a child of the call's token, so cancelling the call
    /// wakes its waiter too.
    answered: CancelToken,
}

impl Ticket {
    pub fn resolve(&self, verdict: Verdict) {
        let mut slot = self.verdict.lock().unwrap_or_else(|e| e.into_inner());
        if slot.is_none() {
            *slot = Some(verdict);
        }
        drop(slot);
        self.answered.cancel();
    }

    fn take(&self) -> Option<Verdict> {
        self.verdict
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
    }
}

/// Asking ended without a verdict: the call was cancelled or passed its
/// own deadline, so the guest gets its cancel result.
#[derive(Debug, PartialEq, Eq)]
pub struct CallInterrupted;

/// Asks the gate about a request the manifest already allows. With no gate
/// installed the manifest alone decides (allow).
pub fn ask(
    runtime: &RuntimeInner,
    request: GateRequest,
    token: &CancelToken,
    call_deadline: Instant,
) -> Result<Verdict, CallInterrupted> {
    let Some(gate) = runtime.gate() else {
        return Ok(Verdict::allow());
    };
    let limit = runtime.config.gate_timeout;
    let gate_deadline = Instant::now() + limit;
    let deferral = Deferral {
        token: token.clone(),
    };
    let answer = runtime.run_bounded(limit, call_deadline, token, move || {
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
    ticket.answered.wait_until(until);
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
