//! What every store of one capsule shares and every interface's view
//! reaches: who the capsule is, its manifest and configuration, and the
//! runtime's services. (What each interface keeps per capsule is apart, in
//! [`InterfaceShared`](super::state::InterfaceShared).)

use crate::cancel::CancelToken;
use crate::manifest::{EnvKind, Manifest};
use crate::runloop::RunLoop;
use crate::services::{LogLevel, LogRecord, SecretRequest, Services};
use crate::usage::CapsuleUsage;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

/// Capsule facts shared with its stores (no reference back to the pool).
pub struct CapsuleShared {
    pub(crate) services: Arc<Services>,
    pub name: Arc<str>,
    /// UUIDv5 of the name and the component hash.
    pub id: String,
    pub manifest: Manifest,
    pub(crate) capability_names: Vec<String>,
    pub(crate) owner: Option<Arc<str>>,
    /// Load-time `[env]` values (embedder key-values, else defaults).
    pub(crate) config: HashMap<String, String>,
    /// Fires on unload: permanent, wins over everything.
    pub(crate) unload_token: CancelToken,
    pub(crate) unloaded: AtomicBool,
    /// Runtime clock (ms) of the run loop's last waiting host call.
    pub(crate) waited_at_ms: AtomicU64,
    /// The id as bus messages carry it.
    pub(crate) source_id: Arc<str>,
    /// Set when the capsule exports `run` (a real one, not an SDK
    /// placeholder): bus handlers are then the loop's own business, not
    /// dispatched as interceptors.
    pub(crate) run_loop: Option<Arc<RunLoop>>,
    /// What the capsule's calls cost and did.
    pub(crate) usage: Arc<CapsuleUsage>,
    /// The network flags that apply to it: the runtime's, and those given
    /// at its load (`FLAG_ALLOW_LOOPBACK`, `FLAG_ALLOW_ANY_BIND`,
    /// `FLAG_WASI_SOCKETS`).
    pub(crate) net_flags: u32,
}

impl CapsuleShared {
    /// `get-config` lookup order of host ABI §2.2: secrets from the
    /// embedder's provider (absent without one), then the per-call overlay,
    /// then load-time values. `Err` when the secret provider failed.
    pub(crate) fn config_value(
        &self,
        key: &str,
        overlay: Option<&HashMap<String, String>>,
        principal: Option<&str>,
    ) -> Result<Option<String>, ()> {
        let Some(entry) = self.manifest.env_entry(key) else {
            return Ok(None);
        };
        if entry.kind == EnvKind::Secret {
            return self.services.secret(&SecretRequest {
                capsule: &self.name,
                capsule_id: &self.id,
                principal,
                key,
            });
        }
        if let Some(value) = overlay.and_then(|o| o.get(key)) {
            return Ok(Some(value.clone()));
        }
        Ok(self.config.get(key).cloned())
    }

    pub(crate) fn note_waited(&self) {
        let now = self.services.coarse_ms();
        self.waited_at_ms.store(now, Ordering::Relaxed);
    }

    /// Sends a line to the embedder's log sink unless the capsule is gone.
    pub(crate) fn log(&self, level: LogLevel, principal: Option<&str>, message: &str) {
        if self.unloaded.load(Ordering::SeqCst) {
            return;
        }
        self.services.log(&LogRecord {
            call_id: crate::handoff::current_call_id(),
            level,
            capsule: &self.name,
            principal,
            message,
        });
    }
}
