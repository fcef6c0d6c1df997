//! What the capsules of one runtime share, and the registry of the loaded
//! ones (dispatch, the capability registry, housekeeping and shutdown walk it).

use super::pool::{CapsuleInner, IDLE_INSTANCE_TTL};
use crate::config::FLAG_DISABLE_CAPABILITY_REGISTRY;
use crate::engine::CompileCache;
use crate::error::Result;
use crate::host::state::HostState;
use crate::services::Services;
use crate::signal::MutexExt;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;
use wasmtime::component::Linker;
use wasmtime::Engine;

/// What the capsules of one runtime share: the runtime's services, the
/// engine and linker they are compiled and instantiated with, the compile
/// cache, and the registry of loaded capsules (weakly held: a capsule lives
/// as long as its owner handle or a call in flight).
pub(crate) struct Platform {
    pub(crate) services: Arc<Services>,
    pub(crate) engine: Engine,
    pub(crate) linker: Linker<HostState>,
    pub(crate) compile_cache: CompileCache,
    capsules: Mutex<Vec<Weak<CapsuleInner>>>,
}

impl Platform {
    pub(crate) fn new(
        services: Arc<Services>,
        engine: Engine,
        linker: Linker<HostState>,
        compile_cache: CompileCache,
    ) -> Platform {
        Platform {
            services,
            engine,
            linker,
            compile_cache,
            capsules: Mutex::new(Vec::new()),
        }
    }

    /// Adds a capsule; entries of capsules gone or fully unloaded are
    /// pruned (one still unloading stays, so shutdown waits for it).
    pub(crate) fn register(&self, capsule: &Arc<CapsuleInner>) -> Result<()> {
        let mut list = self.capsules.locked();
        // Checked under the registry lock so shutdown cannot miss it.
        self.services.check_open()?;
        // Unloaded capsules stay listed while something holds them (their
        // figures count in the runtime's until they go, then they join the
        // retired totals); entries of capsules gone are dropped. No strong
        // reference is taken here, so none can be the last one freed under
        // the lock.
        list.retain(|w| w.strong_count() > 0);
        list.push(Arc::downgrade(capsule));
        Ok(())
    }

    /// Every capsule not yet gone, loaded or not, strongly held for the
    /// caller's use.
    pub(crate) fn held_capsules(&self) -> Vec<Arc<CapsuleInner>> {
        self.capsules
            .locked()
            .iter()
            .filter_map(Weak::upgrade)
            .collect()
    }

    /// The capsules loaded or still unloading (the registry's view until
    /// unload finishes), strongly held for the caller's use.
    pub(crate) fn live_capsules(&self) -> Vec<Arc<CapsuleInner>> {
        let held: Vec<_> = self
            .capsules
            .locked()
            .iter()
            .filter_map(Weak::upgrade)
            .collect();
        // Filtered after the lock is released: dropping one of these may
        // free a capsule (see `register`).
        held.into_iter().filter(|c| !c.has_unloaded()).collect()
    }

    /// Frees pooled instances idle for longer than their TTL.
    pub(crate) fn trim_idle_instances(&self) {
        for capsule in self.live_capsules() {
            capsule.trim_idle_older_than(IDLE_INSTANCE_TTL);
        }
    }

    /// Unloads every capsule (runtime shutdown): all are cancelled first,
    /// then each waits up to `grace` for its calls in flight.
    pub(crate) fn unload_all(&self, grace: Duration) {
        let capsules: Vec<_> = self.capsules.locked().drain(..).collect();
        for capsule in capsules.iter().filter_map(Weak::upgrade) {
            capsule.begin_unload();
        }
        for capsule in capsules.iter().filter_map(Weak::upgrade) {
            capsule.finish_unload(grace);
        }
    }

    /// `None` when the embedder disabled registry lookups.
    pub(crate) fn capsule_holds_capability(&self, id: &str, capability: &str) -> Option<bool> {
        if self.services.config.flags & FLAG_DISABLE_CAPABILITY_REGISTRY != 0 {
            return None;
        }
        let found = self
            .live_capsules()
            .into_iter()
            .find(|c| c.shared.id == id)
            .is_some_and(|c| c.shared.capability_names.iter().any(|n| n == capability));
        Some(found)
    }
}
