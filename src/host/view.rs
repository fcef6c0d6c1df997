//! What a host interface sees of a store. Each interface is linked with a
//! view of its own (`KvView`, `FsView`, …), built from the store's data by
//! [`HostState`](super::state::HostState) and holding only that interface's
//! state plus the [`CallCtx`] every interface shares: the capsule's
//! identity and the runtime's services, and the call being served. The
//! audit and gate pipelines run over any view ([`HostView`]).

use super::call::CallContext;
use super::shared::CapsuleShared;
use std::sync::{Arc, Weak};

/// What every host call may use whatever its interface: the capsule (its
/// identity, manifest and the runtime's services) and the call it serves
/// (principal, cancel token, deadline).
#[derive(Clone, Copy)]
pub(crate) struct CallCtx<'a> {
    pub capsule: &'a Arc<CapsuleShared>,
    pub call: &'a CallContext,
}

impl CallCtx<'_> {
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
        self.data_scope_principal().unwrap_or("system")
    }

    /// Whether the runtime lets capsules reach loopback and private ranges.
    pub(crate) fn allow_loopback(&self) -> bool {
        self.capsule.net_flags & crate::config::FLAG_ALLOW_LOOPBACK != 0
    }

    /// Tells the run-loop watchdog that the guest came back to a waiting
    /// host call (host ABI §7.2).
    pub(crate) fn note_waited(&self) {
        self.capsule.note_waited();
    }
}

/// An interface's view of the store: what the audit and gate pipelines
/// ([`Audited`](super::audit::Audited), [`Gated`](super::gated::Gated))
/// need of it.
pub(crate) trait HostView {
    fn ctx(&self) -> CallCtx<'_>;
}

/// A host object bound to the call that opened it (a socket, a listener,
/// an HTTP exchange): closed when a pooled call ends, so none outlives it
/// into another caller's call.
pub(crate) trait CallScoped: Send + Sync {
    /// Releases the underlying socket or request; later use reports closed.
    fn close(&self);
}

/// The call-scoped objects the current call opened.
#[derive(Default)]
pub(crate) struct CallScopedSet {
    objects: Vec<Weak<dyn CallScoped>>,
}

impl CallScopedSet {
    /// Remembers an object to close when the current call ends.
    pub(crate) fn track(&mut self, object: Weak<dyn CallScoped>) {
        self.objects.retain(|o| o.strong_count() > 0);
        self.objects.push(object);
    }
}

impl EndOfCall for CallScopedSet {
    fn end_call(&mut self) {
        for object in std::mem::take(&mut self.objects) {
            if let Some(object) = object.upgrade() {
                object.close();
            }
        }
    }
}

/// What an interface does when a pooled call ends: close everything the
/// call opened (file handles, subscriptions, sockets, HTTP streams), so
/// none outlives it into another caller's call. The guest's resources
/// stay, answering `closed`.
pub(crate) trait EndOfCall {
    fn end_call(&mut self);
}

/// Implements [`HostView`] for an interface's view (a struct whose first
/// fields are `capsule: &Arc<CapsuleShared>` and `call: &CallContext` or
/// `&mut CallContext`) and declares the [`HasData`] marker it is linked
/// with.
///
/// [`HasData`]: wasmtime::component::HasData
macro_rules! host_view {
    ($view:ident, $data:ident) => {
        impl $crate::host::view::HostView for $view<'_> {
            fn ctx(&self) -> $crate::host::view::CallCtx<'_> {
                $crate::host::view::CallCtx {
                    capsule: self.capsule,
                    call: &*self.call,
                }
            }
        }

        /// Links the interface's bindings with its view.
        pub(crate) struct $data;

        impl wasmtime::component::HasData for $data {
            type Data<'a> = $view<'a>;
        }
    };
}
pub(crate) use host_view;
