//! The host ABI: one module per host interface, each adding itself to the
//! linker ([`linker`]). A store's data is [`state::HostState`]; every host
//! function runs in the audit wrapper ([`audit`]) and, when it reaches
//! anything outside the sandbox, the gated pipeline ([`gated`]). What a
//! capsule's stores share is [`shared::CapsuleShared`].

pub(crate) mod audit;
pub(crate) mod backend;
pub mod fs;
pub(crate) mod gated;
pub mod http;
pub mod io;
pub mod ipc;
pub mod kv;
pub mod linker;
pub mod net;
pub mod shared;
pub mod state;
pub mod sys;
pub mod wasi;

pub use linker::build_linker;
pub use shared::CapsuleShared;
pub use state::{CallContext, HostState, Interrupt, MemoryLimiter};
