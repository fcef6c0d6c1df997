//! What a capsule's store carries, and the linker that serves the host ABI.
//! One module per host interface; each adds itself to the linker.

pub mod fs;
pub mod http;
pub mod io;
pub mod ipc;
pub mod kv;
pub mod net;
pub mod shared;
pub mod sys;
pub mod wasi;

use crate::cancel::CancelToken;
use crate::policy::gate::GateRequest;
use crate::services::{AuditEvent, Outcome};
pub use shared::CapsuleShared;
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
    /// Depth of the message being handled (0 for embedder calls); the
    /// guest's own publishes get one more (host ABI §8.6).
    pub depth: u32,
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
            depth: 0,
        }
    }
}

/// Why the epoch callback stopped the guest.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Interrupt {
    Cancelled,
    Timeout,
    /// A run loop went three watchdog windows without a waiting host call.
    Watchdog,
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
    /// `file-handle` resources opened by the current call (table reps).
    pub(crate) open_files: Vec<u32>,
    /// `subscription` resources made by the current call (table reps).
    pub(crate) open_subscriptions: Vec<u32>,
    /// Sockets and HTTP streams the current call opened: closed when a
    /// pooled call ends, so none outlives it into another caller's call.
    pub(crate) call_scoped: Vec<std::sync::Weak<dyn CallScoped>>,
    /// Quota units held by WASI sockets, by resource rep (`wasi.rs`).
    pub(crate) wasi_sockets: HashMap<u32, net::QuotaSlot>,
    /// WASI sockets created and not yet dropped (at most 16 per store).
    pub(crate) wasi_created: std::collections::HashSet<u32>,
    /// This store runs the capsule's `run` loop.
    pub(crate) run_loop: bool,
    /// The run loop's watchdog window (`None`: exempt, or not a run loop).
    pub(crate) watchdog: Option<std::time::Duration>,
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
            open_files: Vec::new(),
            open_subscriptions: Vec::new(),
            call_scoped: Vec::new(),
            wasi_sockets: HashMap::new(),
            wasi_created: std::collections::HashSet::new(),
            run_loop: false,
            watchdog: None,
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
        self.audited_counting(call, target, body, |_| bytes)
    }

    /// [`audited`](Self::audited) for calls that move data: the event's
    /// `bytes` is the payload in plus what the result carries out.
    pub(crate) fn audited_io<T: Payload, E>(
        &mut self,
        call: &'static str,
        target: Option<&str>,
        bytes_in: u64,
        body: impl FnOnce(&mut Self) -> Result<T, E>,
    ) -> Result<T, E>
    where
        Result<T, E>: AuditOutcome,
    {
        self.audited_counting(call, target, body, |result| {
            bytes_in + result.as_ref().map_or(0, Payload::payload_len)
        })
    }

    /// The audit wrapper behind both: `bytes` counts the event's bytes from
    /// the result, and runs only when an audit sink is installed.
    fn audited_counting<T, E>(
        &mut self,
        call: &'static str,
        target: Option<&str>,
        body: impl FnOnce(&mut Self) -> Result<T, E>,
        bytes: impl FnOnce(&Result<T, E>) -> u64,
    ) -> Result<T, E>
    where
        Result<T, E>: AuditOutcome,
    {
        let started = self.capsule.services.has_audit_sink().then(Instant::now);
        let result = body(self);
        if let Some(started) = started {
            let (outcome, reason) = result.audit_outcome();
            let bytes = bytes(&result);
            self.audit(call, target, bytes, outcome, reason.as_deref(), started);
        }
        result
    }

    /// [`audited_counting`](Self::audited_counting) for calls whose target
    /// is known only once they ran (an HTTP exchange is audited with the
    /// hop it ended on): `body` fills the target slot.
    pub(crate) fn audited_late_target<T, E>(
        &mut self,
        call: &'static str,
        body: impl FnOnce(&mut Self, &mut Option<String>) -> Result<T, E>,
        bytes: impl FnOnce(&Result<T, E>) -> u64,
    ) -> Result<T, E>
    where
        Result<T, E>: AuditOutcome,
    {
        let started = self.capsule.services.has_audit_sink().then(Instant::now);
        let mut target = None;
        let result = body(self, &mut target);
        if let Some(started) = started {
            let (outcome, reason) = result.audit_outcome();
            let bytes = bytes(&result);
            self.audit(
                call,
                target.as_deref(),
                bytes,
                outcome,
                reason.as_deref(),
                started,
            );
        }
        result
    }

    /// Records the audit event of a call that cannot fail (one that hands
    /// out a stream or a pollable).
    pub(crate) fn audit_infallible(&mut self, call: &'static str) {
        let _: Result<(), std::convert::Infallible> = self.audited(call, None, 0, |_| Ok(()));
    }

    /// Remembers a host object to close when the current call ends.
    pub(crate) fn track_call_scoped(&mut self, object: std::sync::Weak<dyn CallScoped>) {
        self.call_scoped.retain(|o| o.strong_count() > 0);
        self.call_scoped.push(object);
    }

    /// Closes everything the current call opened (end of a pooled call).
    /// The guest's resources stay, answering `closed`.
    pub(crate) fn close_call_scoped(&mut self) {
        for object in std::mem::take(&mut self.call_scoped) {
            if let Some(object) = object.upgrade() {
                object.close();
            }
        }
    }

    /// Tells the run-loop watchdog that the guest came back to a waiting
    /// host call (host ABI §7.2).
    pub(crate) fn note_waited(&self) {
        self.capsule.note_waited();
    }

    /// The principal of the data scope: the context principal, else the owner.
    pub(crate) fn data_scope_principal(&self) -> Option<&str> {
        self.call
            .principal
            .as_deref()
            .or(self.capsule.owner.as_deref())
    }

    /// The data scope (host ABI §1): the context principal, else the owner,
    /// else `system`.
    pub(crate) fn data_scope(&self) -> &str {
        self.call
            .principal
            .as_deref()
            .or(self.capsule.owner.as_deref())
            .unwrap_or("system")
    }

    /// Every gated host call goes through here, in the order of host ABI
    /// §4: cancel check → validation and manifest (`prepare`) → gate (one
    /// question per request `prepare` returns) → `op` → exactly one audit
    /// event. Denials become the interface's `capability-denied`; the gate's
    /// reason reaches the audit event only.
    pub(crate) fn gated<C, T: Payload, E: GatedError>(
        &mut self,
        call: &'static str,
        fallback_target: &str,
        bytes_in: u64,
        prepare: impl FnOnce(&mut Self) -> Result<Prepared<C>, Refused<E>>,
        op: impl FnOnce(&mut Self, C) -> Result<T, E>,
    ) -> Result<T, E> {
        let started = self.capsule.services.has_audit_sink().then(Instant::now);
        let mut target = None;
        let result = self.gated_steps(&mut target, prepare, op);
        if let Some(started) = started {
            let (outcome, reason) = match &result {
                Ok(_) => (Outcome::Allowed, None),
                Err(Refused::Denied(reason)) => (Outcome::Denied, Some(reason.clone())),
                Err(Refused::Failed(e)) => match e.audit_case() {
                    (true, case) => (Outcome::Denied, Some(case)),
                    (false, case) => (Outcome::Failed, Some(case)),
                },
            };
            let bytes = bytes_in + result.as_ref().map_or(0, Payload::payload_len);
            let target = target.as_deref().unwrap_or(fallback_target);
            self.audit(
                call,
                Some(target),
                bytes,
                outcome,
                reason.as_deref(),
                started,
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
        if self.call.token.is_cancelled() {
            return Err(Refused::Failed(E::cancelled()));
        }
        let prepared = prepare(self)?;
        // Empty when no audit sink was installed as the call began.
        *target = Some(prepared.target).filter(|t| !t.is_empty());
        for request in prepared.asks {
            match self.ask_gate(request) {
                Ok(()) => {}
                Err(GateRefusal::Denied(reason)) => return Err(Refused::Denied(reason)),
                Err(GateRefusal::Interrupted) => return Err(Refused::Failed(E::cancelled())),
            }
        }
        op(self, prepared.ctx).map_err(Refused::Failed)
    }

    /// Asks the embedder's gate about one request the manifest allowed.
    pub(crate) fn ask_gate(&self, request: GateRequest) -> Result<(), GateRefusal> {
        let runtime = &self.capsule.services;
        match runtime.ask_gate(request, &self.call.token, self.call.deadline) {
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
        let runtime = &self.capsule.services;
        if !runtime.has_audit_sink() {
            return;
        }
        runtime.emit_audit(AuditEvent {
            capsule: self.capsule.name.to_string(),
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

/// A host object bound to the call that opened it (see `call_scoped`).
pub(crate) trait CallScoped: Send + Sync {
    /// Releases the underlying socket or request; later use reports closed.
    fn close(&self);
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
pub(crate) trait GatedError {
    /// Its `capability-denied` case.
    fn denied() -> Self;
    /// Its cancel result (host ABI §7.3).
    fn cancelled() -> Self;
    /// (is a denial, WIT case name) for the audit log.
    fn audit_case(&self) -> (bool, String);
}

/// Bytes a result carries back to the guest, for the audit event.
pub(crate) trait Payload {
    fn payload_len(&self) -> u64 {
        0
    }
}

impl Payload for () {}
impl Payload for bool {}
impl Payload for u64 {}
impl Payload for u32 {}
impl Payload for String {
    fn payload_len(&self) -> u64 {
        self.len() as u64
    }
}
impl Payload for Vec<u8> {
    fn payload_len(&self) -> u64 {
        self.len() as u64
    }
}
impl<T: Payload> Payload for Option<T> {
    fn payload_len(&self) -> u64 {
        self.as_ref().map_or(0, Payload::payload_len)
    }
}
impl Payload for Vec<String> {
    fn payload_len(&self) -> u64 {
        self.iter().map(|s| s.len() as u64).sum()
    }
}

/// How a host call's result reads in the audit log: outcome and reason.
pub(crate) trait AuditOutcome {
    fn audit_outcome(&self) -> (Outcome, Option<String>);
}

/// A WIT error variant as the audit log names it.
pub(crate) trait AuditCase {
    /// The case name as the WIT spells it (`capability-denied`, `unknown(text)`).
    fn case(&self) -> String;
    /// Whether it is a policy refusal (audited `denied` rather than `failed`).
    fn is_denial(&self) -> bool {
        false
    }
}

impl<T, E: AuditCase> AuditOutcome for Result<T, E> {
    fn audit_outcome(&self) -> (Outcome, Option<String>) {
        match self {
            Ok(_) => (Outcome::Allowed, None),
            Err(e) if e.is_denial() => (Outcome::Denied, Some(e.case())),
            Err(e) => (Outcome::Failed, Some(e.case())),
        }
    }
}

/// Infallible host functions are always `allowed`.
impl AuditCase for std::convert::Infallible {
    fn case(&self) -> String {
        match *self {}
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

/// The linker every capsule of a runtime is instantiated with.
pub fn build_linker(engine: &Engine) -> wasmtime::Result<Linker<HostState>> {
    let mut linker = Linker::new(engine);
    wasmtime_wasi::p2::add_to_linker_sync(&mut linker)?;
    wasi::route_name_lookups(&mut linker)?;
    wasi::count_wasi_sockets(&mut linker)?;
    sys::add_to_linker(&mut linker)?;
    fs::add_to_linker(&mut linker)?;
    kv::add_to_linker(&mut linker)?;
    io::add_to_linker(&mut linker)?;
    ipc::add_to_linker(&mut linker)?;
    net::add_to_linker(&mut linker)?;
    http::add_to_linker(&mut linker)?;
    // `astrid:guest/lifecycle` only declares types the exports use; guests
    // built from the published worlds import it, so it is served empty.
    linker.instance(crate::engine::GUEST_LIFECYCLE)?;
    Ok(linker)
}
