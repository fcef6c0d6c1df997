//! A capsule's usage figures, read from its stores' counters.

use super::pool::CapsuleInner;
use crate::usage::UsageTotals;

/// What a capsule's calls cost and did since it was loaded: monotonic
/// counters (`totals`) and gauges.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CapsuleStats {
    pub totals: UsageTotals,
    /// Instances alive now: pooled ones, and the run loop's.
    pub instances_live: u64,
    /// Of those, the pooled ones waiting for a call.
    pub instances_idle: u64,
    /// Linear memory of the live instances (bytes), and its highest value.
    pub memory_bytes: u64,
    pub memory_peak_bytes: u64,
    /// Bytes the capsule's KV namespaces hold in the built-in store; `None`
    /// with an embedder backend, which keeps its own account.
    pub kv_bytes: Option<u64>,
}

impl CapsuleInner {
    pub(crate) fn stats(&self) -> CapsuleStats {
        let usage = &self.shared.usage;
        let (totals, live, busy) = usage.snapshot();
        let (memory_bytes, memory_peak_bytes) = usage.memory();
        CapsuleStats {
            totals,
            instances_live: live,
            instances_idle: live.saturating_sub(busy),
            memory_bytes,
            memory_peak_bytes,
            kv_bytes: self.shared.services.kv_store().usage_bytes(&self.shared.id),
        }
    }
}

/// A capsule's counters join the runtime's retired totals when it goes, so
/// the runtime's figures stay monotonic across unloads. (Its stores are
/// still alive while this runs, and counted.)
impl Drop for CapsuleInner {
    fn drop(&mut self) {
        self.shared.services.retire_usage(&self.shared.usage);
    }
}
