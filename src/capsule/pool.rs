//! A loaded capsule's pool of instances that calls lease exclusively: the
//! instance returned last waits in a lock-free cell, the others in a
//! mutex-guarded list; leases wait (bounded) when all are busy; cancel
//! generations, idle trimming and unload.

use super::instance::{interrupt_guests, InstanceFactory, PooledInstance};
use crate::cancel::CancelToken;
use crate::error::{Code, Error, Result};
use crate::host::shared::CapsuleShared;
use crate::signal::{CondvarExt, MutexExt};
use crossbeam_utils::atomic::AtomicCell;
use std::sync::atomic::{AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// Idle instances unused this long are freed by the runtime's housekeeping.
pub const IDLE_INSTANCE_TTL: Duration = Duration::from_secs(30);

/// Idle instances other than the one in `CapsuleInner::hot`. Instances in
/// use are `live` minus the idle ones (here and in `hot`).
pub(crate) struct Pool {
    /// Idle instances. Boxed, because they move to and from `hot` (one
    /// pointer wide) on every call.
    #[allow(clippy::vec_box)]
    pub(crate) idle: Vec<Box<PooledInstance>>,
    pub(crate) live: usize,
    /// Threads waiting on `pool_changed`; notifying costs a syscall, so it
    /// happens only when someone waits. Mirrored in `pool_waiters`.
    pub(crate) waiters: usize,
}

/// Load states of a capsule.
pub(crate) const LOADED: u8 = 0;
const UNLOADING: u8 = 1;
const UNLOADED: u8 = 2;

/// A loaded capsule behind its owner handle (shared with calls in flight,
/// the dispatcher and the run loop): its instance pool and lifecycle.
pub struct CapsuleInner {
    pub(crate) shared: Arc<CapsuleShared>,
    pub(crate) factory: InstanceFactory,
    /// Token of the current call generation; `cancel` replaces it and bumps
    /// `call_generation` under this lock.
    pub(crate) call_token: Mutex<CancelToken>,
    /// Read without the lock by every call to find out whether the token
    /// its instance holds is still the current one.
    pub(crate) call_generation: AtomicU64,
    /// The instance returned last, parked outside the pool's lock: a thread
    /// calling one capsule over and over takes and returns it with one
    /// atomic swap each way. Every other path goes through `pool`, and the
    /// swaps (acquire-release on this one cell) order a parked instance
    /// against unloading and against waiters: see `release`.
    pub(crate) hot: AtomicCell<Option<Box<PooledInstance>>>,
    pub(crate) pool: Mutex<Pool>,
    /// `pool.waiters`, readable without the lock.
    pub(crate) pool_waiters: AtomicUsize,
    pub(crate) pool_changed: Condvar,
    pub(crate) pool_max: usize,
    pub(crate) state: AtomicU8,
}

impl CapsuleInner {
    /// A new pooled instance holding the current call token.
    pub(super) fn new_worker(&self) -> Result<Box<PooledInstance>> {
        let (generation, token) = self.current_token();
        // Each store has a token of its own under the generation's, which
        // a per-call token may cancel without touching other stores.
        self.factory.new_pooled(generation, token.child())
    }

    /// Whether the capsule is loaded (not unloading or unloaded).
    pub(crate) fn is_loaded(&self) -> bool {
        self.state.load(Ordering::SeqCst) == LOADED
    }

    /// Whether unloading has finished (calls drained, instances freed).
    pub(crate) fn has_unloaded(&self) -> bool {
        self.state.load(Ordering::SeqCst) == UNLOADED
    }

    /// Cancels the calls in flight now; later calls are unaffected.
    pub(crate) fn cancel_calls(&self) {
        let fresh = self.shared.unload_token.child();
        let old = {
            let mut current = self.call_token.locked();
            self.call_generation.fetch_add(1, Ordering::AcqRel);
            std::mem::replace(&mut *current, fresh)
        };
        interrupt_guests(&self.factory.engine, || old.cancel());
    }

    /// Whether bus messages may be dispatched to this capsule's handlers:
    /// loaded, exporting `astrid-hook-trigger`, and not a run loop.
    pub(crate) fn serves_interceptors(&self) -> bool {
        self.factory.hook.is_some()
            && self.state.load(Ordering::SeqCst) == LOADED
            && self.shared.run_loop.is_none()
    }

    pub(super) fn pool_lock(&self) -> std::sync::MutexGuard<'_, Pool> {
        self.pool.locked()
    }

    /// The current call token and its generation, read together.
    pub(super) fn current_token(&self) -> (u64, CancelToken) {
        let token = self.call_token.locked();
        (self.call_generation.load(Ordering::Acquire), token.clone())
    }

    pub(super) fn check_loaded(&self) -> Result<()> {
        self.shared.services.check_open()?;
        if self.state.load(Ordering::SeqCst) != LOADED {
            return Err(Error::closed(format!(
                "capsule `{}` has been unloaded",
                self.shared.name
            )));
        }
        Ok(())
    }

    /// Takes an idle instance, creates one, or waits for one to come back.
    /// `generation` is the cancel generation the call started in: a cancel
    /// since then ends the wait.
    pub(super) fn lease(&self, generation: u64, deadline: Instant) -> Result<Box<PooledInstance>> {
        self.check_lease(generation)?;
        if let Some(worker) = self.hot.take() {
            return Ok(worker);
        }
        let mut pool = self.pool_lock();
        loop {
            self.check_lease(generation)?;
            if let Some(worker) = self.hot.take().or_else(|| pool.idle.pop()) {
                return Ok(worker);
            }
            if pool.live < self.pool_max {
                pool.live += 1;
                drop(pool);
                return self.new_worker().inspect_err(|_| {
                    let mut pool = self.pool_lock();
                    pool.live -= 1;
                    self.wake_waiters(pool);
                });
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(Error::new(
                    Code::Timeout,
                    "every pooled instance stayed busy until the call's deadline",
                ));
            }
            pool = self.wait_pool(pool, (deadline - now).min(crate::config::EPOCH_TICK));
        }
    }

    /// What a lease checks before it takes an instance.
    pub(super) fn check_lease(&self, generation: u64) -> Result<()> {
        self.check_loaded()?;
        if self.call_generation.load(Ordering::Acquire) != generation {
            return Err(Error::new(
                Code::Cancelled,
                "the call was cancelled before it started",
            ));
        }
        Ok(())
    }

    /// Waits for the pool to change (or the timeout), counted in `waiters`.
    /// An instance parked in `hot` before the count went up is moved into the
    /// pool instead; one parked after it sees the count (see `release`).
    pub(super) fn wait_pool<'a>(
        &self,
        mut pool: MutexGuard<'a, Pool>,
        timeout: Duration,
    ) -> MutexGuard<'a, Pool> {
        pool.waiters += 1;
        self.pool_waiters.store(pool.waiters, Ordering::SeqCst);
        if let Some(worker) = self.hot.take() {
            pool.idle.push(worker);
        } else {
            pool = self.pool_changed.wait_timeout_recovered(pool, timeout).0;
        }
        pool.waiters -= 1;
        self.pool_waiters.store(pool.waiters, Ordering::SeqCst);
        pool
    }

    /// Releases the lock and wakes the waiters, if there are any.
    pub(super) fn wake_waiters(&self, pool: MutexGuard<'_, Pool>) {
        let waiting = pool.waiters > 0;
        drop(pool);
        if waiting {
            self.pool_changed.notify_all();
        }
    }

    /// Returns a leased instance, dated now for the idle TTL.
    ///
    /// A reusable one is parked in `hot` (the one parked there before goes
    /// into the pool). The swap is an acquire-release RMW on `hot`, as are
    /// the takes in `wait_pool` and `finish_unload`, which follow a store
    /// of the waiter count or of the unloading state: whichever of the two
    /// RMWs comes second sees what preceded the first. So either the waiter
    /// or unloader takes this instance, or the checks after the swap below
    /// see it waiting or unloading.
    pub(super) fn release(&self, mut worker: Box<PooledInstance>, reusable: bool) {
        if !reusable || self.state.load(Ordering::SeqCst) != LOADED {
            self.discard(worker);
            return;
        }
        worker.idle_since = self.shared.services.coarse_now();
        if let Some(previous) = self.hot.swap(Some(worker)) {
            self.park_in_pool(previous);
        }
        if self.state.load(Ordering::SeqCst) != LOADED {
            if let Some(parked) = self.hot.take() {
                self.discard(parked);
            }
        }
        if self.pool_waiters.load(Ordering::SeqCst) > 0 {
            self.wake_waiters(self.pool_lock());
        }
    }

    /// Puts an idle instance in the pool, or frees it once unloading has
    /// begun: checked under the lock `finish_unload` drains the pool with,
    /// so an instance never lands there after the drain.
    pub(super) fn park_in_pool(&self, worker: Box<PooledInstance>) {
        let mut pool = self.pool_lock();
        if self.state.load(Ordering::SeqCst) == LOADED {
            pool.idle.push(worker);
            self.wake_waiters(pool);
        } else {
            pool.live -= 1;
            self.wake_waiters(pool);
            drop(worker);
        }
    }

    /// Frees an instance that will not be used again.
    pub(super) fn discard(&self, worker: Box<PooledInstance>) {
        let mut pool = self.pool_lock();
        pool.live -= 1;
        self.wake_waiters(pool);
        drop(worker); // freeing a store is not done under the lock
    }

    /// Frees idle instances returned longer than `ttl` ago.
    pub(crate) fn trim_idle_older_than(&self, ttl: Duration) -> usize {
        let mut pool = self.pool_lock();
        if let Some(worker) = self.hot.take() {
            pool.idle.push(worker);
        }
        let (expired, kept): (Vec<_>, Vec<_>) = std::mem::take(&mut pool.idle)
            .into_iter()
            .partition(|worker| worker.idle_since.elapsed() >= ttl);
        pool.idle = kept;
        pool.live -= expired.len();
        drop(pool);
        expired.len()
    }

    /// Marks the capsule unloading and cancels everything it runs.
    pub(crate) fn begin_unload(&self) {
        if self
            .state
            .compare_exchange(LOADED, UNLOADING, Ordering::SeqCst, Ordering::SeqCst)
            .is_err()
        {
            return;
        }
        interrupt_guests(&self.factory.engine, || self.shared.unload_token.cancel());
        self.factory.interfaces.ipc.close_subscriptions();
        self.wake_waiters(self.pool_lock());
    }

    /// Waits up to `grace` for calls in flight, then frees the instances.
    pub(crate) fn finish_unload(&self, grace: Duration) {
        let until = Instant::now() + grace;
        if let Some(run) = &self.shared.run_loop {
            // Abandoned after the grace: the thread ends at the guest's next
            // epoch check and drops the store itself.
            run.wait_finished(grace);
        }
        let mut pool = self.pool_lock();
        loop {
            if let Some(worker) = self.hot.take() {
                pool.idle.push(worker);
            }
            if pool.live == pool.idle.len() {
                break; // none in use
            }
            let now = Instant::now();
            if now >= until {
                break; // Abandoned: those stores are freed when their calls end.
            }
            pool = self.wait_pool(pool, (until - now).min(crate::config::EPOCH_TICK));
        }
        let idle = std::mem::take(&mut pool.idle);
        pool.live -= idle.len();
        drop(pool);
        drop(idle);
        if self.state.swap(UNLOADED, Ordering::SeqCst) != UNLOADED {
            self.shared.unloaded.store(true, Ordering::SeqCst);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_parked_instance_slot_is_a_plain_atomic() {
        // Otherwise `AtomicCell` falls back to a global lock and the fast
        // path would cost more than the pool's own mutex.
        assert!(AtomicCell::<Option<Box<PooledInstance>>>::is_lock_free());
    }
}
