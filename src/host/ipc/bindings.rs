//! The generated `astrid:ipc` bindings and the interface's limits.

pub(crate) mod generated {
    wasmtime::component::bindgen!({
        inline: "package astrid-runtime:ipc; world imports { import astrid:ipc/host@1.0.0; }",
        path: ["wit/astrid-io@1.0.0", "wit/astrid-ipc@1.0.0"],
        world: "imports",
        with: {
            "astrid:io/poll": crate::host::io::bindings::astrid::io::poll,
            "astrid:ipc/host.subscription": crate::host::ipc::shared::GuestSubscription,
        },
    });
}

pub(crate) use generated::astrid::ipc::host::{
    self, ErrorCode, InterceptorBinding, IpcEnvelope, IpcMessage, PrincipalAttribution,
};

/// Deepest a message may be published from within handlers.
pub const MAX_DEPTH: u32 = 8;
/// Longest `recv` wait.
pub const MAX_RECV_MS: u64 = 60_000;
/// Reserved for the host.
pub(crate) const RESERVED_PREFIX: &str = "astrid.";
