//! Wake-ups between plain threads: a [`Waiter`] registers with every
//! [`Signal`] it cares about and any of them firing wakes it. Sources keep
//! only weak references, so a finished wait leaves nothing behind but a
//! pruned slot. Also the bounded spins and the poison-tolerant lock the
//! runtime's hand-overs use. Nothing here knows about cancellation or
//! calls: `cancel` and `wait` build on it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{
    Arc, Condvar, Mutex, MutexGuard, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard,
    WaitTimeoutResult, Weak,
};
use std::time::{Duration, Instant};

/// Polls a [`spin_until`] makes before giving up.
const SPIN_POLLS: u32 = 2048;

/// Polls `ready` for a short while (tens of microseconds, yielding the CPU
/// every 64 polls); true as soon as it holds. Two threads handing work back
/// and forth would otherwise pay a wake-up system call and a context switch
/// per item; the spin lets a steady exchange flow without either, and its
/// bound lets an idle thread go to sleep.
pub fn spin_until(mut ready: impl FnMut() -> bool) -> bool {
    for i in 0..SPIN_POLLS {
        if ready() {
            return true;
        }
        if i % 64 == 63 {
            std::thread::yield_now();
        } else {
            std::hint::spin_loop();
        }
    }
    ready()
}

/// [`spin_until`] `version` moves past `seen`.
pub fn spin_until_changed(version: &AtomicU64, seen: u64) -> bool {
    spin_until(|| version.load(Ordering::Acquire) != seen)
}

/// Poison-tolerant locking, the one way this crate takes a lock. A lock is
/// poisoned when a holder panicked; every state guarded in this crate stays
/// consistent between statements, so the next holder takes it over instead
/// of failing (a panic in an embedder callback must not wedge the runtime).
pub trait MutexExt<T: ?Sized> {
    fn locked(&self) -> MutexGuard<'_, T>;
    /// `get_mut`, taking over a poisoned lock.
    fn get_mut_recovered(&mut self) -> &mut T;
}

impl<T: ?Sized> MutexExt<T> for Mutex<T> {
    #[inline]
    fn locked(&self) -> MutexGuard<'_, T> {
        self.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn get_mut_recovered(&mut self) -> &mut T {
        self.get_mut().unwrap_or_else(PoisonError::into_inner)
    }
}

/// [`MutexExt`] for reader-writer locks.
pub trait RwLockExt<T: ?Sized> {
    fn read_locked(&self) -> RwLockReadGuard<'_, T>;
    fn write_locked(&self) -> RwLockWriteGuard<'_, T>;
}

impl<T: ?Sized> RwLockExt<T> for RwLock<T> {
    #[inline]
    fn read_locked(&self) -> RwLockReadGuard<'_, T> {
        self.read().unwrap_or_else(PoisonError::into_inner)
    }

    #[inline]
    fn write_locked(&self) -> RwLockWriteGuard<'_, T> {
        self.write().unwrap_or_else(PoisonError::into_inner)
    }
}

/// [`MutexExt`] for condition variables: waits that take over a poisoned lock.
pub trait CondvarExt {
    fn wait_recovered<'a, T>(&self, guard: MutexGuard<'a, T>) -> MutexGuard<'a, T>;
    fn wait_timeout_recovered<'a, T>(
        &self,
        guard: MutexGuard<'a, T>,
        timeout: Duration,
    ) -> (MutexGuard<'a, T>, WaitTimeoutResult);
}

impl CondvarExt for Condvar {
    fn wait_recovered<'a, T>(&self, guard: MutexGuard<'a, T>) -> MutexGuard<'a, T> {
        self.wait(guard).unwrap_or_else(PoisonError::into_inner)
    }

    fn wait_timeout_recovered<'a, T>(
        &self,
        guard: MutexGuard<'a, T>,
        timeout: Duration,
    ) -> (MutexGuard<'a, T>, WaitTimeoutResult) {
        self.wait_timeout(guard, timeout)
            .unwrap_or_else(PoisonError::into_inner)
    }
}

/// One thread's wait.
#[derive(Default)]
pub struct Waiter {
    fired: Mutex<bool>,
    wake: Condvar,
}

impl Waiter {
    pub fn new() -> Arc<Waiter> {
        Arc::new(Waiter::default())
    }

    pub fn fire(&self) {
        *self.fired.locked() = true;
        self.wake.notify_all();
    }

    /// Forgets earlier firings; call before re-checking the sources.
    pub fn reset(&self) {
        *self.fired.locked() = false;
    }

    /// Blocks until fired (since the last reset) or `until` passes.
    /// Returns whether it was fired.
    pub fn wait_until(&self, until: Instant) -> bool {
        let mut fired = self.fired.locked();
        loop {
            if *fired {
                return true;
            }
            let now = Instant::now();
            if now >= until {
                return false;
            }
            fired = self.wake.wait_timeout_recovered(fired, until - now).0;
        }
    }
}

/// Something that changes state: wakes every registered waiter.
#[derive(Default)]
pub struct Signal {
    waiters: Mutex<Vec<Weak<Waiter>>>,
}

impl Signal {
    pub fn register(&self, waiter: &Arc<Waiter>) {
        let mut waiters = self.waiters.locked();
        waiters.retain(|w| w.strong_count() > 0);
        waiters.push(Arc::downgrade(waiter));
    }

    pub fn notify(&self) {
        let waiters = self.waiters.locked();
        if waiters.is_empty() {
            return;
        }
        for waiter in waiters.iter().filter_map(Weak::upgrade) {
            waiter.fire();
        }
    }
}

/// A bare signal as a wait source (the caller checks readiness itself).
impl Readiness for Signal {
    fn is_ready(&self) -> bool {
        false
    }
    fn register(&self, waiter: &Arc<Waiter>) {
        Signal::register(self, waiter);
    }
}

/// What a pollable reports on: is it ready now, and whom to tell when it
/// might have become ready.
pub trait Readiness: Send + Sync {
    fn is_ready(&self) -> bool;
    fn register(&self, waiter: &Arc<Waiter>);
}

/// A task waker that notifies a [`Signal`]: lets a socket's readiness
/// (reported by the runtime's I/O driver) wake plain-thread waiters.
pub struct SignalWaker(pub Arc<Signal>);

impl std::task::Wake for SignalWaker {
    fn wake(self: Arc<Self>) {
        self.0.notify();
    }
    fn wake_by_ref(self: &Arc<Self>) {
        self.0.notify();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_signal_wakes_a_registered_waiter_and_not_a_dropped_one() {
        let signal = Arc::new(Signal::default());
        let waiter = Waiter::new();
        signal.register(&waiter);
        let notifier = {
            let signal = signal.clone();
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(20));
                signal.notify();
            })
        };
        assert!(waiter.wait_until(Instant::now() + Duration::from_secs(5)));
        notifier.join().unwrap();
        waiter.reset();
        assert!(!waiter.wait_until(Instant::now() + Duration::from_millis(10)));
        drop(waiter);
        signal.notify(); // a dead waiter is skipped
        assert_eq!(signal.waiters.lock().unwrap().len(), 1);
        signal.register(&Waiter::new());
        assert_eq!(
            signal.waiters.lock().unwrap().len(),
            1,
            "dead slots are pruned"
        );
    }
}
