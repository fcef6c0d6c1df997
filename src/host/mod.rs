//! The host ABI: one module per host interface, each adding itself to the
//! linker ([`linker`]) with a view of the store ([`view`]) that holds its
//! own state and the call context every interface shares. A store's data
//! is [`state::HostState`], which builds the views; every host function
//! runs in the audit wrapper ([`audit`]) and, when it reaches anything
//! outside the sandbox, the gated pipeline ([`gated`]). What a capsule's
//! stores share is [`shared::CapsuleShared`], and per interface
//! [`state::InterfaceShared`].

pub(crate) mod audit;
pub(crate) mod backend;
pub mod call;
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
pub(crate) mod view;
pub mod wasi;

pub use call::CallContext;
pub use linker::build_linker;
pub use shared::CapsuleShared;
pub use state::{HostState, InterfaceShared, Interrupt, MemoryLimiter};
