//! How a runtime is configured: its limits, timeouts and flags. Plain data,
//! read by every layer above.

use crate::bus::QueueLimits;
use crate::error::{Error, Result};
use std::path::PathBuf;
use std::time::Duration;

/// Lets capsules reach loopback and private addresses (tests, local setups).
pub const FLAG_ALLOW_LOOPBACK: u32 = 1 << 0;
/// Makes `check-capsule-capability` answer `registry-unavailable`.
pub const FLAG_DISABLE_CAPABILITY_REGISTRY: u32 = 1 << 1;
/// Runs gate, VFS and KV callbacks on the thread executing the guest instead
/// of a callback thread (`handoff`): no hand-off cost, but a callback that hangs holds
/// its call (its deadline is then only checked when it returns).
pub const FLAG_INLINE_CALLBACKS: u32 = 1 << 2;
/// Lets `bind-tcp` and `udp-bind` use addresses other than loopback (the
/// manifest and gate still decide which).
pub const FLAG_ALLOW_ANY_BIND: u32 = 1 << 3;
/// Links `wasi:sockets` behind the manifest, gate and airlock (host ABI §0);
/// without it every WASI socket operation is `access-denied`.
pub const FLAG_WASI_SOCKETS: u32 = 1 << 4;
pub const KNOWN_FLAGS: u32 = FLAG_ALLOW_LOOPBACK
    | FLAG_DISABLE_CAPABILITY_REGISTRY
    | FLAG_INLINE_CALLBACKS
    | FLAG_ALLOW_ANY_BIND
    | FLAG_WASI_SOCKETS;

/// The epoch ticker's period: the granularity of wall-clock deadlines.
pub const EPOCH_TICK: Duration = Duration::from_millis(100);
#[derive(Clone, Debug)]
pub struct RuntimeConfig {
    /// Tokio worker threads; 0 = one per core.
    pub worker_threads: usize,
    /// Linear memory ceiling per instance, bytes.
    pub memory_limit: u64,
    /// Wall-clock deadline per interceptor call.
    pub timeout: Duration,
    /// Fuel per interceptor call.
    pub fuel: u64,
    /// Where compiled code is cached on disk; `None` = memory only.
    pub cache_dir: Option<PathBuf>,
    pub flags: u32,
    /// Pooled instances per capsule; 0 = clamp(2 × cores, 8, 64).
    pub pool_size: usize,
    /// Live instances of all capsules together (pooled ones, warm ones and
    /// run loops): the bound of the runtime's instance pool, which reserves
    /// `engine::pool_reservation_bytes(max_instances)` of address space
    /// (about 4 GiB each, none of it committed) when the runtime starts.
    /// Past it, loads and calls that need a new instance fail with
    /// `ResourceLimit`. 0 = max(128, 4 × pool size), at most 1000: about
    /// 516 GiB per runtime, so a process (128 TiB) holds some 250 default
    /// runtimes; lower it to run more.
    pub max_instances: usize,
    /// How long unload and runtime shutdown wait for calls in flight.
    pub unload_grace: Duration,
    /// How long the gate may take to answer (deferred verdicts included);
    /// later counts as a denial.
    pub gate_timeout: Duration,
    /// How long one VFS callback may take; later is `unknown("timeout")`.
    pub vfs_timeout: Duration,
    /// Bounds of every bus subscription queue (host ABI §8.4).
    pub queue_limits: QueueLimits,
    /// Byte budget of each KV namespace in the built-in store.
    pub kv_quota: u64,
    /// Budget of each built-in in-memory mount (`tmp://` per data scope,
    /// `cwd://` without a workspace root).
    pub memfs_limits: crate::vfs::memory::MemoryLimits,
    /// Payload bytes per second one (capsule, principal) may publish
    /// (host ABI §8.6); beyond it the guest gets `rate-limited`.
    pub publish_rate: u64,
}

impl RuntimeConfig {
    /// Refuses unknown flags and zero limits.
    pub fn validate(&self) -> Result<()> {
        if self.flags & !KNOWN_FLAGS != 0 {
            return Err(Error::invalid_argument(format!(
                "unknown runtime flags {:#x}",
                self.flags & !KNOWN_FLAGS
            )));
        }
        if self.memory_limit == 0
            || self.fuel == 0
            || self.timeout.is_zero()
            || self.gate_timeout.is_zero()
            || self.vfs_timeout.is_zero()
            || self.queue_limits.messages == 0
            || self.queue_limits.bytes == 0
            || self.publish_rate == 0
        {
            return Err(Error::invalid_argument(
                "memory limit, fuel, timeouts and queue bounds must be non-zero",
            ));
        }
        Ok(())
    }

    /// Pooled instances per capsule, the default resolved.
    pub fn effective_pool_size(&self) -> usize {
        if self.pool_size > 0 {
            return self.pool_size;
        }
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        (2 * cores).clamp(8, 64)
    }

    /// `max_instances`, the default resolved.
    pub fn effective_max_instances(&self) -> usize {
        if self.max_instances > 0 {
            return self.max_instances;
        }
        (4 * self.effective_pool_size()).clamp(128, 1000)
    }
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        RuntimeConfig {
            worker_threads: 0,
            memory_limit: 64 << 20,
            timeout: Duration::from_secs(30),
            fuel: 500_000_000,
            cache_dir: None,
            flags: 0,
            pool_size: 0,
            max_instances: 0,
            unload_grace: Duration::from_secs(5),
            gate_timeout: Duration::from_secs(5),
            vfs_timeout: Duration::from_secs(10),
            queue_limits: QueueLimits::default(),
            kv_quota: crate::kv::DEFAULT_QUOTA_BYTES,
            memfs_limits: crate::vfs::memory::MemoryLimits::DEFAULT,
            publish_rate: 10 << 20,
        }
    }
}
