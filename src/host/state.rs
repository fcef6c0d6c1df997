//! The data of every capsule store: the call it serves, its memory ceilings,
//! why the guest was interrupted, the per-call resources to close when a
//! pooled call ends, and the WASI context.

use super::fs::shared::FsCall;
use super::ipc::shared::IpcCall;
use super::shared::CapsuleShared;
use super::wasi::stdio::{deny_by_default_ctx, StdioLog};
use super::wasi::vetting::WasiSocketSlots;
use crate::cancel::CancelToken;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;
use wasmtime::component::ResourceTable;
use wasmtime::ResourceLimiter;
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
    pub(crate) stdio: Arc<StdioLog>,
    /// What each interface keeps for the current call.
    pub(crate) fs: FsCall,
    pub(crate) ipc: IpcCall,
    /// Sockets and HTTP streams the current call opened: closed when a
    /// pooled call ends, so none outlives it into another caller's call.
    pub(crate) call_scoped: Vec<std::sync::Weak<dyn CallScoped>>,
    /// The store's `wasi:sockets` resources and their quota units.
    pub(crate) wasi_sockets: WasiSocketSlots,
    /// This store runs the capsule's `run` loop.
    pub(crate) run_loop: bool,
    /// The run loop's watchdog window (`None`: exempt, or not a run loop).
    pub(crate) watchdog: Option<std::time::Duration>,
    pub(crate) wasi: WasiCtx,
    pub(crate) table: ResourceTable,
}

impl HostState {
    pub fn new(capsule: Arc<CapsuleShared>, max_memory: u64) -> Self {
        let max_memory = usize::try_from(max_memory).unwrap_or(usize::MAX);
        let stdio = Arc::new(StdioLog::new(capsule.clone()));
        let wasi = deny_by_default_ctx(&stdio);
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
            fs: FsCall::default(),
            ipc: IpcCall::default(),
            call_scoped: Vec::new(),
            wasi_sockets: WasiSocketSlots::default(),
            run_loop: false,
            watchdog: None,
            wasi,
            table: ResourceTable::new(),
        }
    }

    /// Ends a pooled call: the store no longer speaks for its caller, and
    /// everything the call opened (file handles, subscriptions, sockets and
    /// HTTP streams) is closed, so none outlives it into another caller's
    /// call. The guest's resources stay, answering `closed`.
    pub(crate) fn end_call(&mut self) {
        self.call.active = false;
        self.call.overlay = None;
        if !self.fs.open_files.is_empty() {
            self.close_call_files();
        }
        if !self.ipc.open_subscriptions.is_empty() {
            self.close_call_subscriptions();
        }
        if !self.call_scoped.is_empty() {
            self.close_call_scoped();
        }
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
}

/// A host object bound to the call that opened it (see `call_scoped`).
pub(crate) trait CallScoped: Send + Sync {
    /// Releases the underlying socket or request; later use reports closed.
    fn close(&self);
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}
