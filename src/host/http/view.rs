//! What `astrid:http` sees of a store.

use crate::host::call::CallContext;
use crate::host::net::CapsuleNet;
use crate::host::shared::CapsuleShared;
use crate::host::view::{host_view, CallScopedSet};
use std::sync::Arc;
use wasmtime::component::ResourceTable;

/// What `astrid:http` sees of a store: the capsule and the call, the
/// capsule's socket quotas (HTTP streams count against them), the resource
/// table, and the exchanges the call opened (closed when it ends).
pub(crate) struct HttpView<'a> {
    pub(crate) capsule: &'a Arc<CapsuleShared>,
    pub(crate) call: &'a CallContext,
    pub(crate) net: &'a CapsuleNet,
    pub(crate) table: &'a mut ResourceTable,
    pub(crate) call_scoped: &'a mut CallScopedSet,
}

host_view!(HttpView, HttpData);
