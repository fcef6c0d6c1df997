//! The embedder's gate and accept verifier (c-api §4): the answers they give,
//! deferred verdicts through tickets. Asking is `Services::ask_gate`.

use crate::cancel::CancelToken;
use crate::policy::gate::{GateRequest, Verdict};
use crate::signal::MutexExt;
use std::sync::{Arc, Mutex};

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
    /// A deferral whose tickets are answered or cancelled with `token`.
    pub(crate) fn new(token: CancelToken) -> Deferral {
        Deferral { token }
    }

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
        let mut slot = self.verdict.locked();
        if slot.is_none() {
            *slot = Some(verdict);
        }
        drop(slot);
        self.answered.cancel();
    }

    /// Waits until the ticket is resolved or cancelled, or `until` passes.
    pub(crate) fn wait_until(&self, until: std::time::Instant) {
        self.answered.wait_until(until);
    }

    pub(crate) fn take(&self) -> Option<Verdict> {
        self.verdict.locked().take()
    }
}

/// Asking ended without a verdict: the call was cancelled or passed its
/// own deadline, so the guest gets its cancel result.
#[derive(Debug, PartialEq, Eq)]
pub struct CallInterrupted;
