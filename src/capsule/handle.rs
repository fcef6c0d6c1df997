//! The owner handle of a loaded capsule: the embedder-facing API. Dropping
//! it unloads the capsule.

use super::options::{check_guest_len, CallOptions, CallResult};
use super::pool::CapsuleInner;
use crate::error::Result;
use crate::handoff::{in_callback, refuse_reentry};
use crate::manifest::Manifest;
use std::sync::Arc;
use std::time::Duration;

/// Owner of a loaded capsule.
pub struct Capsule {
    pub(crate) inner: Arc<CapsuleInner>,
}

impl Capsule {
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
        self.inner
            .call(action, payload, options)
            .map(|(result, _)| result)
    }

    /// [`call`](Self::call), also giving the id the call ran under: the id
    /// its log lines, audit events and embedder callbacks carry (a failed
    /// call's error carries it as [`Error::call_id`](crate::Error::call_id)).
    pub fn call_with_id(
        &self,
        action: &str,
        payload: &[u8],
        options: Option<&CallOptions>,
    ) -> Result<(CallResult, u64)> {
        refuse_reentry("astrid_capsule_call")?;
        check_guest_len(action.len(), "action")?;
        check_guest_len(payload.len(), "payload")?;
        self.inner.call(action, payload, options)
    }

    /// What the capsule's calls cost and did since it was loaded (see
    /// [`CapsuleStats`](super::CapsuleStats)). Errors: `Closed` once
    /// unloaded.
    pub fn stats(&self) -> Result<super::CapsuleStats> {
        self.inner.check_loaded()?;
        Ok(self.inner.stats())
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
        self.inner.cancel_calls();
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
        !self.inner.is_loaded()
    }
}

impl Drop for Capsule {
    fn drop(&mut self) {
        if !in_callback() {
            self.inner.begin_unload();
            self.inner
                .finish_unload(self.inner.shared.services.config.unload_grace);
        }
    }
}
