//! Calls into an embedder backend (a VFS provider or a KV store installed
//! through the C API), the one way every interface makes them: bounded by
//! the callback deadline and the call's cancel token, on a hand-off thread
//! unless the runtime runs callbacks inline. (Built-in backends are called
//! directly; they cannot hang.)

use crate::handoff::Bounded;
use crate::host::view::CallCtx;

impl CallCtx<'_> {
    /// Runs `op`, a call into an embedder backend. `cleanup` ones (a provider `close`) run even for a call
    /// that was cancelled, without being waited for then. Each interface
    /// maps the [`Bounded`] outcomes onto its own error cases.
    pub(crate) fn backend_call<R: Send + 'static>(
        &self,
        cleanup: bool,
        op: impl FnOnce() -> R + Send + 'static,
    ) -> Bounded<R> {
        let services = &self.capsule.services;
        services.run_handed_off(
            services.config.vfs_timeout,
            self.call.deadline,
            &self.call.token,
            cleanup,
            op,
        )
    }
}
