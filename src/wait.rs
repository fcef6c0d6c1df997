//! Waiting from a plain thread (guest calls run on the embedder's thread)
//! on several sources at once, racing the call's cancel token and deadline,
//! and collecting results of tasks started on the runtime's tokio runtime.

use crate::cancel::CancelToken;
use crate::signal::MutexExt;
use crate::signal::{Readiness, Signal, Waiter};
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// Waits until `ready()` holds, `source` signals, or the call ends. False
/// when the call was cancelled or reached its deadline first.
pub fn wait_for(
    sources: &[&dyn Readiness],
    token: &CancelToken,
    deadline: Instant,
    mut ready: impl FnMut() -> bool,
) -> bool {
    // Cancellation first (host ABI §1): a cancelled wait never reports ready.
    if token.is_cancelled() {
        return false;
    }
    if ready() {
        return true;
    }
    let waiter = Waiter::new();
    for source in sources {
        source.register(&waiter);
    }
    token.register(&waiter);
    loop {
        waiter.reset();
        if token.is_cancelled() {
            return false;
        }
        if ready() {
            return true;
        }
        if !waiter.wait_until(deadline) && Instant::now() >= deadline {
            return ready();
        }
    }
}

/// A result slot a task fills from the runtime and a plain thread waits on.
struct Slot<T> {
    value: Mutex<Option<T>>,
    filled: Signal,
}

impl<T: Send> Readiness for Slot<T> {
    fn is_ready(&self) -> bool {
        self.value.locked().is_some()
    }
    fn register(&self, waiter: &Arc<Waiter>) {
        self.filled.register(waiter);
    }
}

/// A task started on the runtime whose result a plain thread collects
/// later. Dropping it aborts the task.
pub struct Pending<T> {
    slot: Arc<Slot<T>>,
    task: tokio::task::JoinHandle<()>,
}

impl<T: Send + 'static> Pending<T> {
    pub fn spawn<F>(handle: &tokio::runtime::Handle, future: F) -> Pending<T>
    where
        F: std::future::Future<Output = T> + Send + 'static,
    {
        let slot = Arc::new(Slot {
            value: Mutex::new(None),
            filled: Signal::default(),
        });
        let task = {
            let slot = slot.clone();
            handle.spawn(async move {
                let value = future.await;
                *slot.value.locked() = Some(value);
                slot.filled.notify();
            })
        };
        Pending { slot, task }
    }

    /// Waits for the result, racing `token` and `deadline` (host ABI §1:
    /// waiting calls end as soon as the token fires). `None` when they won.
    pub fn wait(&self, token: &CancelToken, deadline: Instant) -> Option<T> {
        let slot = &self.slot;
        if !wait_for(&[&**slot], token, deadline, || slot.is_ready()) {
            return None;
        }
        let value = slot.value.locked().take();
        value
    }
}

impl<T> Drop for Pending<T> {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Runs `future` on the runtime and waits for it from this plain thread,
/// racing `token` and `deadline`. `None` when they won; the task is then
/// aborted.
pub fn run_on<F>(
    handle: &tokio::runtime::Handle,
    future: F,
    token: &CancelToken,
    deadline: Instant,
) -> Option<F::Output>
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    Pending::spawn(handle, future).wait(token, deadline)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::Duration;

    #[test]
    fn wait_for_wakes_on_a_signal_a_cancel_or_the_deadline() {
        let signal = Arc::new(Signal::default());
        let flag = Arc::new(AtomicBool::new(false));
        let ready = || flag.load(Ordering::SeqCst);
        let token = CancelToken::new();
        let far = Instant::now() + Duration::from_secs(10);
        let setter = {
            let (signal, flag) = (signal.clone(), flag.clone());
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(20));
                flag.store(true, Ordering::SeqCst);
                signal.notify();
            })
        };
        assert!(wait_for(&[&*signal], &token, far, ready));
        setter.join().unwrap();
        flag.store(false, Ordering::SeqCst);

        let canceller = {
            let token = token.clone();
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(20));
                token.cancel();
            })
        };
        let started = Instant::now();
        assert!(!wait_for(&[&*signal], &token, far, ready));
        assert!(started.elapsed() < Duration::from_secs(5));
        canceller.join().unwrap();

        let fresh = CancelToken::new();
        let soon = Instant::now() + Duration::from_millis(30);
        assert!(!wait_for(&[&*signal], &fresh, soon, ready));
        assert!(
            Instant::now() >= soon,
            "a timed-out wait ends at its deadline, not before"
        );
    }
}
