//! Capsules: loading one ([`load`]), its instances ([`instance`]) and the
//! pool calls lease them from ([`pool`]), the call path ([`call`]), the run
//! loop's thread ([`run_loop`]), the owner handle ([`handle`]), and what the
//! capsules of a runtime share ([`platform`]).

mod call;
mod cancel;
mod handle;
mod instance;
pub(crate) mod load;
mod options;
mod platform;
mod pool;
mod run_loop;
mod stats;

pub use cancel::CallCancel;
pub use handle::Capsule;
pub use options::{CallOptions, CallResult, LoadOptions, Watchdog, MAX_GUEST_BYTES};
pub use pool::{CapsuleInner, IDLE_INSTANCE_TTL};
pub use stats::CapsuleStats;

pub(crate) use options::{check_guest_len, validate_principal, Invocation};
pub(crate) use platform::Platform;
