//! What a capsule's store carries, and the linker that serves the host ABI.
//! One module per host interface; each adds itself to the linker.

pub mod sys;
pub mod wasi;

use crate::cancel::CancelToken;
use crate::capsule::CapsuleShared;
use crate::runtime::{AuditEvent, Outcome};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;
use wasmtime::component::{Linker, ResourceTable};
use wasmtime::{Engine, ResourceLimiter};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

/// The call a store is serving: who asked, on whose behalf, until when.
#[derive(Clone)]
pub struct CallContext {
    pub principal: Option<Arc<str>>,
    pub source_id: Arc<str>,
    /// When the triggering call or message was made (ms since the epoch).
    pub timestamp_ms: u64,
    pub token: CancelToken,
    pub deadline: Instant,
    /// Per-call config overlay (`get-config` step 2).
    pub overlay: Option<Arc<HashMap<String, String>>>,
    /// False between calls: `get-caller` then reports no caller.
    pub active: bool,
}

impl CallContext {
    pub fn idle(token: CancelToken) -> Self {
        CallContext {
            principal: None,
            source_id: Arc::from(""),
            timestamp_ms: 0,
            token,
            deadline: Instant::now(),
            overlay: None,
            active: false,
        }
    }
}

/// Why the epoch callback stopped the guest.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Interrupt {
    Cancelled,
    Timeout,
}

/// Linear-memory and table ceilings of one store (host ABI §7.1).
pub struct MemoryLimiter {
    pub max_memory: usize,
    pub max_table_elements: usize,
    /// Set when a grow was refused, to report "resource limit" on a trap.
    pub hit: bool,
}

impl ResourceLimiter for MemoryLimiter {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let allowed = desired <= self.max_memory;
        self.hit |= !allowed;
        Ok(allowed)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let allowed = desired <= self.max_table_elements;
        self.hit |= !allowed;
        Ok(allowed)
    }
}

/// The data of every capsule store.
pub struct HostState {
    pub(crate) capsule: Arc<CapsuleShared>,
    pub(crate) call: CallContext,
    pub(crate) limiter: MemoryLimiter,
    pub(crate) interrupt: Option<Interrupt>,
    pub(crate) stdio: Arc<wasi::StdioLog>,
    wasi: WasiCtx,
    table: ResourceTable,
}

impl HostState {
    pub fn new(capsule: Arc<CapsuleShared>, max_memory: u64) -> Self {
        let max_memory = usize::try_from(max_memory).unwrap_or(usize::MAX);
        let stdio = Arc::new(wasi::StdioLog::new(capsule.clone()));
        let wasi = wasi::deny_by_default_ctx(&stdio);
        HostState {
            call: CallContext::idle(capsule.unload_token.clone()),
            capsule,
            limiter: MemoryLimiter {
                max_memory,
                max_table_elements: max_memory / 32,
                hit: false,
            },
            interrupt: None,
            stdio,
            wasi,
            table: ResourceTable::new(),
        }
    }

    /// Runs one host call and records its audit event. The clock is read only
    /// when an audit sink is installed, so unaudited runtimes pay nothing.
    pub(crate) fn audited<T, E>(
        &mut self,
        call: &'static str,
        target: Option<&str>,
        bytes: u64,
        body: impl FnOnce(&mut Self) -> Result<T, E>,
    ) -> Result<T, E>
    where
        Result<T, E>: AuditOutcome,
    {
        let started = self.capsule.runtime.has_audit_sink().then(Instant::now);
        let result = body(self);
        if let Some(started) = started {
            let (outcome, reason) = result.audit_outcome();
            self.audit(call, target, bytes, outcome, reason.as_deref(), started);
        }
        result
    }

    /// Records one audit event for a host call (a no-op without a sink).
    fn audit(
        &self,
        call: &'static str,
        target: Option<&str>,
        bytes: u64,
        outcome: Outcome,
        reason: Option<&str>,
        started: Instant,
    ) {
        let runtime = &self.capsule.runtime;
        if !runtime.has_audit_sink() {
            return;
        }
        runtime.emit_audit(AuditEvent {
            capsule: self.capsule.name.clone(),
            capsule_id: self.capsule.id.clone(),
            principal: self
                .call
                .principal
                .as_deref()
                .map_or_else(|| "system".to_string(), str::to_string),
            call: call.to_string(),
            target: target.map(str::to_string),
            bytes,
            outcome,
            reason: reason.map(str::to_string),
            elapsed_us: u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX),
        });
    }
}

/// How a host call's result reads in the audit log: outcome and reason.
pub(crate) trait AuditOutcome {
    fn audit_outcome(&self) -> (Outcome, Option<String>);
}

/// Infallible host functions are always `allowed`.
impl<T> AuditOutcome for Result<T, std::convert::Infallible> {
    fn audit_outcome(&self) -> (Outcome, Option<String>) {
        (Outcome::Allowed, None)
    }
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

/// The types-only interface of the guest export contract.
pub const GUEST_LIFECYCLE: &str = "astrid:guest/lifecycle@1.0.0";

/// The linker every capsule of a runtime is instantiated with.
pub fn build_linker(engine: &Engine) -> wasmtime::Result<Linker<HostState>> {
    let mut linker = Linker::new(engine);
    wasmtime_wasi::p2::add_to_linker_sync(&mut linker)?;
    sys::add_to_linker(&mut linker)?;
    // `astrid:guest/lifecycle` only declares types the exports use; guests
    // built from the published worlds import it, so it is served empty.
    linker.instance(GUEST_LIFECYCLE)?;
    Ok(linker)
}
