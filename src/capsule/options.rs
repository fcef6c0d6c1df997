//! What the embedder passes in and gets back: load and call options, the
//! interceptor's answer, and the checks on guest-bound arguments.

use super::cancel::CallCancel;
use crate::error::{Error, Result};
use crate::vfs::Vfs;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use wasmtime::component::{ComponentType, Lift};

/// What the embedder may set per capsule at load.
#[derive(Clone, Default)]
pub struct LoadOptions {
    /// The capsule's owner (its data scope outside calls).
    pub principal: Option<String>,
    /// Host directory served as the workspace (`cwd`) mount.
    pub workspace_root: Option<PathBuf>,
    /// Host directory served as the owner's `home` mount.
    pub home_root: Option<PathBuf>,
    pub memory_limit: Option<u64>,
    pub timeout: Option<Duration>,
    pub fuel: Option<u64>,
    /// Values for the manifest's `[env]` keys.
    pub config: Vec<(String, String)>,
    /// Cumulative bytes the capsule may write through `astrid:fs`; `None`
    /// = unlimited. Exhausted → `quota`.
    pub fs_write_budget: Option<u64>,
    /// The run-loop watchdog (host ABI §7.2); only the embedder can turn it off.
    pub watchdog: Watchdog,
    /// The socket path `bind-unix` binds for this capsule (never shown to
    /// the guest); `None`: the one assigned to the capsule's name with
    /// `Runtime::assign_unix_socket`, else `bind-unix` fails with
    /// `address-not-available`.
    pub unix_socket_path: Option<PathBuf>,
    /// The runtime's network flags for this capsule only, on top of the
    /// runtime's own: `FLAG_ALLOW_LOOPBACK`, `FLAG_ALLOW_ANY_BIND`,
    /// `FLAG_WASI_SOCKETS` (others are an invalid argument).
    pub net_flags: u32,
    /// Providers for this capsule's `cwd`, `home` and `tmp` mounts, in place
    /// of the runtime's mounts and the built-in ones. A provider together
    /// with `workspace_root` (for `cwd`) or `home_root` (for `home`) is an
    /// invalid argument.
    pub cwd_vfs: Option<Arc<dyn Vfs>>,
    pub home_vfs: Option<Arc<dyn Vfs>>,
    pub tmp_vfs: Option<Arc<dyn Vfs>>,
}

impl std::fmt::Debug for LoadOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let provider = |p: &Option<Arc<dyn Vfs>>| p.as_ref().map(|_| "<provider>");
        f.debug_struct("LoadOptions")
            .field("principal", &self.principal)
            .field("workspace_root", &self.workspace_root)
            .field("home_root", &self.home_root)
            .field("memory_limit", &self.memory_limit)
            .field("timeout", &self.timeout)
            .field("fuel", &self.fuel)
            .field(
                "config_keys",
                &self.config.iter().map(|(k, _)| k).collect::<Vec<_>>(),
            )
            .field("fs_write_budget", &self.fs_write_budget)
            .field("watchdog", &self.watchdog)
            .field("unix_socket_path", &self.unix_socket_path)
            .field("net_flags", &self.net_flags)
            .field("cwd_vfs", &provider(&self.cwd_vfs))
            .field("home_vfs", &provider(&self.home_vfs))
            .field("tmp_vfs", &provider(&self.tmp_vfs))
            .finish()
    }
}

/// The run-loop watchdog of a capsule.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Watchdog {
    /// Three windows of five seconds.
    #[default]
    Default,
    /// Three windows of this length.
    Window(Duration),
    /// Exempt: the loop may run without waiting host calls.
    Off,
}

/// What the embedder may set per call.
#[derive(Clone, Debug, Default)]
pub struct CallOptions {
    /// The invoking principal (the call's context principal).
    pub principal: Option<String>,
    /// Config values that take precedence over load-time values.
    pub config_overlay: Vec<(String, String)>,
    /// A deadline for this call: it can only shorten the capsule's timeout
    /// (a longer one is the capsule's).
    pub timeout: Option<Duration>,
    /// Fuel for this call in place of the capsule's (more or less).
    pub fuel: Option<u64>,
    /// A token that ends this call when fired (see [`CallCancel`]).
    pub cancel: Option<CallCancel>,
}

/// The most bytes an argument handed to the guest may have: a wasm32 guest
/// addresses at most 4 GiB, and the canonical ABI's lengths are `u32`.
pub const MAX_GUEST_BYTES: usize = u32::MAX as usize;

/// Refuses an argument longer than a wasm32 guest can address. Checked
/// before the argument is read, copied or handed to the guest.
/// `usize::MAX` passes: it is `ASTRID_NTS` ("measure a NUL-terminated
/// string") at the C boundary, and `Capsule::call` checks the measured length.
pub(crate) fn check_guest_len(len: usize, what: &str) -> Result<()> {
    if len > MAX_GUEST_BYTES && len != usize::MAX {
        return Err(Error::invalid_argument(format!(
            "`{what}` is {len} bytes; a wasm32 guest addresses at most 4 GiB, so the limit is {MAX_GUEST_BYTES} bytes"
        )));
    }
    Ok(())
}

/// The interceptor's answer (`astrid:guest/lifecycle.capsule-result`).
#[derive(ComponentType, Lift, Clone, Debug, PartialEq, Eq)]
#[component(record)]
pub struct CallResult {
    pub action: String,
    pub data: Option<String>,
}

/// Who a pooled call runs for and what triggered it.
pub(crate) struct Invocation {
    /// The context principal (`None`: none, e.g. a `system` message).
    pub principal: Option<Arc<str>>,
    pub overlay: Option<Arc<HashMap<String, String>>>,
    /// The publishing capsule's id for bus messages; `None`: the embedder's
    /// (a direct call, which then clones no `Arc`).
    pub source_id: Option<Arc<str>>,
    /// When the triggering call or message was made; `None`: now.
    pub timestamp_ms: Option<u64>,
    /// Depth of the triggering message (0 for embedder calls).
    pub depth: u32,
    /// The embedder's per-call limits and token (`None` for bus messages).
    pub control: Option<CallControl>,
}

/// An embedder call's own deadline, fuel and cancel token.
pub(crate) struct CallControl {
    pub timeout: Option<Duration>,
    pub fuel: Option<u64>,
    pub cancel: Option<CallCancel>,
}

pub(crate) fn validate_principal(principal: &str) -> Result<()> {
    if principal.is_empty() || principal.len() > 128 || principal.chars().any(char::is_control) {
        return Err(Error::invalid_argument(
            "a principal must be 1..=128 bytes without control characters",
        ));
    }
    // `system` is the data scope of calls without a principal; a principal
    // with that name would share its KV namespace, tmp mount and budgets.
    if principal == "system" {
        return Err(Error::invalid_argument(
            "`system` is reserved for calls without a principal",
        ));
    }
    Ok(())
}
