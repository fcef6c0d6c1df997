//! `astrid:ipc@1.0.0` (host ABI §2.5, §8): publishing under the manifest's
//! `[publish]` ACL with depth, rate and backpressure limits, `publish-as`
//! for `uplink` capsules, subscriptions under `[subscribe]` with their
//! readiness pollable, and the capsule's interceptor bindings. Audited;
//! the ACL plays the gate's role for the bus (no embedder gate kind).

mod bindings;
mod host;
pub mod shared;

pub use bindings::{MAX_DEPTH, MAX_RECV_MS};
pub(crate) use host::add_to_linker;
pub(crate) use host::IpcView;
pub use shared::{GuestSubscription, MAX_SUBSCRIPTIONS};
