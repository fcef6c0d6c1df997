//! astrid: an embeddable runtime for Astrid capsules (WebAssembly components
//! speaking the Astrid host ABI), with a C API in `include/astrid.h`.
//!
//! The Rust API (`Runtime`, `Capsule`) is what the C API wraps; everything
//! `unsafe` and `extern "C"` lives in [`ffi`] (the lint below enforces it).

#![deny(unsafe_code)]

pub mod bus;
pub mod cancel;
pub mod capsule;
pub mod config;
pub mod dispatch;
pub mod engine;
pub mod error;
pub mod exports;
#[allow(unsafe_code)]
pub mod ffi;
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing;
pub mod gate;
mod handoff;
pub mod host;
pub mod kv;
pub mod manifest;
pub mod policy;
pub mod runloop;
pub mod runtime;
pub mod services;
pub mod signal;
pub mod usage;
pub mod vfs;
pub mod wait;

pub use capsule::{
    CallCancel, CallOptions, CallResult, Capsule, CapsuleStats, LoadOptions, Watchdog,
};
pub use error::{Code, Error, Result};
pub use runtime::{AuditEvent, LogLevel, LogRecord, Outcome, Runtime, RuntimeConfig, RuntimeStats};
pub use usage::UsageTotals;
