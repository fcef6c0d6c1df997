//! Cancellation tokens with parent → child propagation, waitable both from
//! plain threads (guest calls run on the embedder's thread) and from async
//! tasks. Cancelling a token cancels every descendant; a child never
//! cancels its parent.

use crate::signal::{CondvarExt, MutexExt};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, Weak};
use std::time::{Duration, Instant};

#[derive(Clone, Default)]
pub struct CancelToken {
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Inner {
    cancelled: AtomicBool,
    children: Mutex<Vec<Weak<Inner>>>,
    wake: Condvar,
    wake_lock: Mutex<()>,
    notify: tokio::sync::Notify,
    /// Multi-source waits (io `poll`, `recv`) that this token must end.
    signal: crate::signal::Signal,
}

impl Inner {
    fn cancel(&self) {
        if self.cancelled.swap(true, Ordering::SeqCst) {
            return;
        }
        {
            // Taking the lock orders the flag store before any waiter's
            // check-then-wait, so no wake-up is lost.
            let _guard = self.wake_lock.locked();
            self.wake.notify_all();
        }
        self.notify.notify_waiters();
        self.signal.notify();
        let children = std::mem::take(&mut *self.children.locked());
        for child in children.iter().filter_map(Weak::upgrade) {
            child.cancel();
        }
    }
}

impl CancelToken {
    pub fn new() -> Self {
        Self::default()
    }

    /// A token cancelled together with `self` (and on its own).
    pub fn child(&self) -> CancelToken {
        let child = CancelToken::new();
        let mut children = self.inner.children.locked();
        if self.is_cancelled() {
            child.inner.cancelled.store(true, Ordering::SeqCst);
        } else {
            children.retain(|w| w.strong_count() > 0);
            children.push(Arc::downgrade(&child.inner));
        }
        child
    }

    /// Makes `child` (an existing token) follow `self` until
    /// [`release`](Self::release): cancelling `self` then cancels it. A
    /// cancelled `self` cancels it at once. A per-call token governs a
    /// store's token this way for the length of one call.
    pub fn adopt(&self, child: &CancelToken) {
        let mut children = self.inner.children.locked();
        // Checked under the lock `cancel` takes after setting the flag: a
        // cancel either sees `child` in the list or is seen here.
        if self.is_cancelled() {
            drop(children);
            child.cancel();
            return;
        }
        children.retain(|w| w.strong_count() > 0);
        children.push(Arc::downgrade(&child.inner));
    }

    /// Undoes [`adopt`](Self::adopt): cancelling `self` no longer reaches
    /// `child`. (A cancel that already reached it stays.)
    pub fn release(&self, child: &CancelToken) {
        let target = Arc::as_ptr(&child.inner);
        self.inner
            .children
            .locked()
            .retain(|w| w.strong_count() > 0 && w.as_ptr() != target);
    }

    pub fn cancel(&self) {
        self.inner.cancel();
    }

    #[inline]
    pub fn is_cancelled(&self) -> bool {
        self.inner.cancelled.load(Ordering::SeqCst)
    }

    /// Blocks the thread until cancelled or `until` passes. Returns true when
    /// the token was cancelled.
    pub fn wait_until(&self, until: Instant) -> bool {
        let mut guard = self.inner.wake_lock.locked();
        loop {
            if self.is_cancelled() {
                return true;
            }
            let now = Instant::now();
            if now >= until {
                return false;
            }
            guard = self.inner.wake.wait_timeout_recovered(guard, until - now).0;
        }
    }

    /// Wakes `waiter` when this token (or an ancestor) is cancelled.
    pub fn register(&self, waiter: &Arc<crate::signal::Waiter>) {
        self.inner.signal.register(waiter);
        if self.is_cancelled() {
            waiter.fire();
        }
    }

    /// Blocks the thread for at most `timeout`; true when cancelled.
    pub fn wait_timeout(&self, timeout: Duration) -> bool {
        self.wait_until(Instant::now() + timeout)
    }

    /// Resolves once the token is cancelled.
    pub async fn cancelled(&self) {
        loop {
            let notified = self.inner.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.is_cancelled() {
                return;
            }
            notified.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn child_follows_parent_not_the_reverse() {
        let parent = CancelToken::new();
        let child = parent.child();
        let grandchild = child.child();
        child.cancel();
        assert!(grandchild.is_cancelled());
        assert!(!parent.is_cancelled());
        let other = parent.child();
        parent.cancel();
        assert!(other.is_cancelled());
        assert!(
            parent.child().is_cancelled(),
            "child of a cancelled token starts cancelled"
        );
    }

    #[test]
    fn wait_wakes_on_cancel_from_another_thread() {
        let token = CancelToken::new();
        let remote = token.clone();
        let start = Instant::now();
        let t = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            remote.cancel();
        });
        assert!(token.wait_timeout(Duration::from_secs(10)));
        assert!(start.elapsed() < Duration::from_secs(5));
        t.join().unwrap();
    }

    #[test]
    fn adopted_tokens_follow_until_released() {
        let call = CancelToken::new();
        let store = CancelToken::new();
        call.adopt(&store);
        call.release(&store);
        call.cancel();
        assert!(!store.is_cancelled(), "released before the cancel");

        let call = CancelToken::new();
        call.adopt(&store);
        call.cancel();
        assert!(store.is_cancelled(), "adopted when cancelled");
        assert!(!call
            .inner
            .children
            .locked()
            .iter()
            .any(|w| w.upgrade().is_some()));

        let fired = CancelToken::new();
        fired.cancel();
        let late = CancelToken::new();
        fired.adopt(&late);
        assert!(
            late.is_cancelled(),
            "adopting into a cancelled token cancels at once"
        );
    }

    #[test]
    fn adopt_races_cancel_without_losing_it() {
        for _ in 0..200 {
            let call = CancelToken::new();
            let store = CancelToken::new();
            let firing = call.clone();
            let t = std::thread::spawn(move || firing.cancel());
            call.adopt(&store);
            t.join().unwrap();
            assert!(store.is_cancelled());
        }
    }

    #[test]
    fn wait_times_out_without_cancel() {
        let token = CancelToken::new();
        assert!(!token.wait_timeout(Duration::from_millis(20)));
    }
}
