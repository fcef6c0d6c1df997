//! Per-call cancellation: a token the embedder fires from any thread to end
//! the calls started with it, leaving other calls on the same capsule alone.

use crate::cancel::CancelToken;
use crate::signal::MutexExt;
use std::sync::{Arc, Mutex};
use wasmtime::{Engine, EngineWeak};

/// Ends the calls it governs: fired from any thread, any number of times.
/// A call started with a fired token returns `Cancelled` without running the
/// guest; a call running when it fires returns `Cancelled` promptly (guest
/// code stops at its next epoch check, waiting host calls return at once).
/// One token may govern many calls, on any capsules and runtimes; clones
/// share it.
#[derive(Clone, Default)]
pub struct CallCancel {
    inner: Arc<Shared>,
}

#[derive(Default)]
struct Shared {
    token: CancelToken,
    /// The engines of the calls it has governed, so a fire can make their
    /// guests check at once rather than at the next epoch tick. Weak: a
    /// token kept after its runtime is gone holds no engine alive.
    engines: Mutex<Vec<EngineWeak>>,
}

impl CallCancel {
    pub fn new() -> Self {
        Self::default()
    }

    /// Fires the token. Never waits for a call to end.
    pub fn fire(&self) {
        let engines: Vec<Engine> = self
            .inner
            .engines
            .locked()
            .iter()
            .filter_map(EngineWeak::upgrade)
            .collect();
        // As capsule-wide cancel does: the epoch moves before the token, so
        // a guest woken from a host call finds its deadline passed, and
        // after, so running guest code sees the cancelled token at once.
        for engine in &engines {
            engine.increment_epoch();
        }
        self.inner.token.cancel();
        for engine in &engines {
            engine.increment_epoch();
        }
    }

    pub fn is_fired(&self) -> bool {
        self.inner.token.is_cancelled()
    }

    /// Puts the call a store is about to run under this token: `store_token`
    /// (the store's own, cancelled by capsule-wide cancel and unload too)
    /// is cancelled when this token fires, until [`detach`](Self::detach).
    pub(crate) fn attach(&self, engine: &Engine, store_token: &CancelToken) {
        {
            let mut engines = self.inner.engines.locked();
            let known = engines
                .iter()
                .filter_map(EngineWeak::upgrade)
                .any(|e| Engine::same(&e, engine));
            if !known {
                engines.retain(|e| e.upgrade().is_some());
                engines.push(engine.weak());
            }
        }
        self.inner.token.adopt(store_token);
    }

    /// Ends what [`attach`](Self::attach) began, as the call ends.
    pub(crate) fn detach(&self, store_token: &CancelToken) {
        self.inner.token.release(store_token);
    }
}

impl std::fmt::Debug for CallCancel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CallCancel")
            .field("fired", &self.is_fired())
            .finish()
    }
}
