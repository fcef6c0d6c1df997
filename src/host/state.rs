//! The data of every capsule store: the call it serves, its memory ceilings,
//! why the guest was interrupted, each interface's per-call state, and the
//! WASI context; and the views each interface is linked with
//! ([`super::view`]), built from it.

use super::call::CallContext;
use super::fs::shared::FsCall;
use super::fs::shared::FsShared;
use super::fs::FsView;
use super::http::HttpView;
use super::io::IoView;
use super::ipc::shared::IpcCall;
use super::ipc::shared::IpcShared;
use super::ipc::IpcView;
use super::kv::KvView;
use super::net::quota::CapsuleNet;
use super::net::resolve::Lookup;
use super::net::NetView;
use super::shared::CapsuleShared;
use super::sys::SysView;
use super::view::{CallScopedSet, EndOfCall};
use super::wasi::sockets::WasiSocketsHost;
use super::wasi::stdio::{deny_by_default_ctx, StdioLog};
use super::wasi::vetting::{WasiSocketSlots, WasiSocketsCall};
use std::sync::Arc;
use wasmtime::component::ResourceTable;
use wasmtime::ResourceLimiter;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

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
    /// This store's linear memory (bytes), reported to its capsule's gauge.
    pub(crate) memory: u64,
    pub(crate) capsule: Arc<CapsuleShared>,
}

impl ResourceLimiter for MemoryLimiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let allowed = desired <= self.max_memory;
        self.hit |= !allowed;
        if allowed {
            let grown = desired.saturating_sub(current) as u64;
            self.memory += grown;
            self.capsule.usage.memory_changed(grown, 0);
        }
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

/// What each host interface keeps per capsule, over all its stores.
pub struct InterfaceShared {
    pub(crate) fs: FsShared,
    pub(crate) ipc: Arc<IpcShared>,
    /// Socket quotas and the unix listener path (host ABI §2.6), shared by
    /// `astrid:net`, `astrid:http` and `wasi:sockets`.
    pub(crate) net: CapsuleNet,
}

/// The data of every capsule store.
pub struct HostState {
    pub(crate) capsule: Arc<CapsuleShared>,
    /// What each interface keeps per capsule (reached through its view).
    interfaces: Arc<InterfaceShared>,
    pub(crate) call: CallContext,
    pub(crate) limiter: MemoryLimiter,
    pub(crate) interrupt: Option<Interrupt>,
    pub(crate) stdio: Arc<StdioLog>,
    /// What each interface keeps for the current call.
    fs: FsCall,
    ipc: IpcCall,
    /// Sockets and HTTP streams the current call opened.
    call_scoped: CallScopedSet,
    /// The store's `wasi:sockets` resources and their quota units.
    wasi_sockets: WasiSocketSlots,
    /// This store runs the capsule's `run` loop.
    pub(crate) run_loop: bool,
    /// The run loop's watchdog window (`None`: exempt, or not a run loop).
    pub(crate) watchdog: Option<std::time::Duration>,
    /// Call ids reserved for this store: the next one and the end of the block.
    call_ids: std::ops::Range<u64>,
    wasi: WasiCtx,
    table: ResourceTable,
}

/// The part of a store every view shares ([`CallCtx`]'s two fields), as a
/// pair of disjoint borrows so a view can borrow other fields mutably.
macro_rules! shared_part {
    ($state:ident) => {
        (&$state.capsule, &$state.call)
    };
}

impl HostState {
    pub fn new(
        capsule: Arc<CapsuleShared>,
        interfaces: Arc<InterfaceShared>,
        max_memory: u64,
    ) -> Self {
        let max_memory = usize::try_from(max_memory).unwrap_or(usize::MAX);
        let stdio = Arc::new(StdioLog::new(capsule.clone()));
        let wasi = deny_by_default_ctx(&stdio);
        HostState {
            call: CallContext::idle(capsule.unload_token.clone(), capsule.usage.register()),
            limiter: MemoryLimiter {
                max_memory,
                max_table_elements: max_memory / 32,
                hit: false,
                memory: 0,
                capsule: capsule.clone(),
            },
            capsule,
            interfaces,
            interrupt: None,
            stdio,
            fs: FsCall::default(),
            ipc: IpcCall::default(),
            call_scoped: CallScopedSet::default(),
            wasi_sockets: WasiSocketSlots::default(),
            run_loop: false,
            watchdog: None,
            call_ids: 0..0,
            wasi,
            table: ResourceTable::new(),
        }
    }

    /// Gives the call about to run its id (taken from this store's block of
    /// reserved ids, refilled from the runtime 256 at a time) and returns it.
    pub(crate) fn begin_call_id(&mut self) -> u64 {
        const BLOCK: u64 = 256;
        if self.call_ids.is_empty() {
            let first = self.capsule.services.reserve_call_ids(BLOCK);
            self.call_ids = first..first + BLOCK;
        }
        let id = self.call_ids.start;
        self.call_ids.start += 1;
        self.call.id = id;
        id
    }

    /// Ends a pooled call: the store no longer speaks for its caller, and
    /// each interface closes what the call opened ([`EndOfCall`]).
    pub(crate) fn end_call(&mut self) {
        self.call.active = false;
        self.call.overlay = None;
        self.call.id = 0;
        self.fs_view().end_call();
        self.ipc_view().end_call();
        self.call_scoped.end_call();
    }

    pub(crate) fn kv_view(&mut self) -> KvView<'_> {
        let (capsule, call) = shared_part!(self);
        KvView { capsule, call }
    }

    pub(crate) fn sys_view(&mut self) -> SysView<'_> {
        let (capsule, call) = shared_part!(self);
        SysView {
            capsule,
            call,
            run_loop: self.run_loop,
        }
    }

    pub(crate) fn fs_view(&mut self) -> FsView<'_> {
        let (capsule, call) = shared_part!(self);
        FsView {
            capsule,
            call,
            shared: &self.interfaces.fs,
            fs: &mut self.fs,
            table: &mut self.table,
        }
    }

    pub(crate) fn io_view(&mut self) -> IoView<'_> {
        let (capsule, call) = shared_part!(self);
        IoView {
            capsule,
            call,
            table: &mut self.table,
        }
    }

    pub(crate) fn ipc_view(&mut self) -> IpcView<'_> {
        IpcView {
            capsule: &self.capsule,
            call: &mut self.call,
            shared: &self.interfaces.ipc,
            ipc: &mut self.ipc,
            table: &mut self.table,
            run_loop: self.run_loop,
            stdio: &self.stdio,
        }
    }

    pub(crate) fn net_view(&mut self) -> NetView<'_> {
        let (capsule, call) = shared_part!(self);
        NetView {
            capsule,
            call,
            net: &self.interfaces.net,
            table: &mut self.table,
            call_scoped: &mut self.call_scoped,
        }
    }

    pub(crate) fn http_view(&mut self) -> HttpView<'_> {
        let (capsule, call) = shared_part!(self);
        HttpView {
            capsule,
            call,
            net: &self.interfaces.net,
            table: &mut self.table,
            call_scoped: &mut self.call_scoped,
        }
    }
}

/// A store that goes takes its counters into its capsule's retired totals
/// and its linear memory off the capsule's gauge.
impl Drop for HostState {
    fn drop(&mut self) {
        self.capsule.usage.retire(&self.call.usage);
        self.capsule.usage.memory_changed(0, self.limiter.memory);
    }
}

/// `wasi:sockets` counted against the capsule's quotas and resolved by
/// `astrid:net`'s vetted resolver.
impl WasiSocketsHost for HostState {
    fn socket_slots(&mut self) -> &mut WasiSocketSlots {
        &mut self.wasi_sockets
    }

    fn net_quotas(&self) -> &CapsuleNet {
        &self.interfaces.net
    }

    fn socket_checks(&self) -> Option<&WasiSocketsCall> {
        self.stdio.sockets.as_ref()
    }

    fn vetted_lookup(
        &mut self,
        call: &'static str,
        name: &str,
    ) -> Result<Lookup, crate::host::net::bindings::astrid::net::host::ErrorCode> {
        self.net_view().vetted_lookup(call, name)
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
