//! The threads that run embedder callbacks (gate, VFS, KV) away from the
//! guest's thread, so a call can stop waiting for a callback that never
//! returns (the default; `ASTRID_RUNTIME_INLINE_CALLBACKS` turns it off).
//!
//! One host call usually makes several callbacks back to back (a 4 KiB
//! `read-file` asks the gate, then opens, stats, reads twice and closes).
//! Handing each to a sleeping thread would cost two thread wake-ups per
//! callback, tens of microseconds on a loaded machine. So an idle worker spins
//! briefly before it sleeps, and the caller spins briefly before it sleeps
//! (see `signal::spin_until_changed`): a run of callbacks then flows between
//! two awake threads. Both spins are bounded, so an idle runtime sleeps.
//!
//! The pool grows when every worker is busy (a callback that hangs keeps its
//! thread, as it would in any pool) up to `MAX_THREADS`, and a worker idle
//! for `KEEP_ALIVE` exits.

use crate::error::{Code, Error, Result};
use crate::signal::spin_until_changed;
use crate::signal::{CondvarExt, MutexExt};
use std::cell::Cell;
use std::collections::VecDeque;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

type Job = Box<dyn FnOnce() + Send>;

/// Workers beyond this are not started: jobs queue until one is free, and
/// their callers' deadlines still bound the wait.
const MAX_THREADS: usize = 256;
/// How long an idle worker sleeps before it exits.
const KEEP_ALIVE: Duration = Duration::from_secs(10);

#[derive(Default)]
struct Queue {
    jobs: VecDeque<Job>,
    /// Workers spinning or sleeping, ready for a job.
    idle: usize,
    /// Of those, the ones asleep on `work` (they need a notify).
    sleeping: usize,
    threads: usize,
    closed: bool,
}

#[derive(Default)]
struct Shared {
    queue: Mutex<Queue>,
    work: Condvar,
    /// Every worker exit, for `close`.
    exited: Condvar,
    /// Bumped on every job posted, for idle workers that spin.
    posted: AtomicU64,
}

/// A runtime's callback threads.
#[derive(Default)]
pub(crate) struct HandOff {
    shared: Arc<Shared>,
}

impl HandOff {
    /// Queues `job` on a worker; starts one when none is idle. Returns false
    /// (and drops the job) once the pool is closed.
    pub(crate) fn run(&self, job: impl FnOnce() + Send + 'static) -> bool {
        let mut queue = self.shared.queue.locked();
        if queue.closed {
            return false;
        }
        queue.jobs.push_back(Box::new(job));
        self.shared.posted.fetch_add(1, Ordering::Release);
        if queue.idle >= queue.jobs.len() {
            // A spinning worker sees `posted` move; a sleeping one needs a
            // notify, but only when the spinners are not enough.
            let spinning = queue.idle - queue.sleeping;
            if spinning < queue.jobs.len() && queue.sleeping > 0 {
                self.shared.work.notify_one();
            }
            return true;
        }
        if queue.threads < MAX_THREADS {
            // Counted before it starts (so `close` waits for it), started
            // outside the lock (a spawn takes tens of microseconds).
            queue.threads += 1;
            drop(queue);
            let shared = self.shared.clone();
            let started = std::thread::Builder::new()
                .name("astrid-callback".into())
                .spawn(move || work(&shared));
            if started.is_err() {
                // The job waits for a worker a later `run` starts; its
                // caller's deadline bounds that wait.
                let mut queue = self.shared.queue.locked();
                queue.threads -= 1;
                self.shared.exited.notify_all();
            }
        }
        true
    }

    /// Stops taking jobs and waits up to `grace` for the workers to finish
    /// theirs and exit. A worker stuck in a callback is left to it.
    pub(crate) fn close(&self, grace: Duration) {
        let mut queue = self.shared.queue.locked();
        queue.closed = true;
        self.shared.work.notify_all();
        let until = Instant::now() + grace;
        while queue.threads > 0 {
            let now = Instant::now();
            if now >= until {
                return;
            }
            queue = self
                .shared
                .exited
                .wait_timeout_recovered(queue, until - now)
                .0;
        }
    }
}

/// A worker: runs jobs in order; when there are none, spins, then sleeps.
fn work(shared: &Shared) {
    let mut queue = shared.queue.locked();
    loop {
        if let Some(job) = queue.jobs.pop_front() {
            drop(queue);
            // Jobs catch their callback's panic themselves (`run_callback`);
            // this only keeps the worker alive if one did not.
            let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(job));
            queue = shared.queue.locked();
            continue;
        }
        if queue.closed {
            break;
        }
        queue.idle += 1;
        let seen = shared.posted.load(Ordering::Acquire);
        drop(queue);
        spin_until_changed(&shared.posted, seen);
        queue = shared.queue.locked();
        if queue.jobs.is_empty() && !queue.closed {
            queue.sleeping += 1;
            let (woken, timeout) = shared.work.wait_timeout_recovered(queue, KEEP_ALIVE);
            queue = woken;
            queue.sleeping -= 1;
            if timeout.timed_out() && queue.jobs.is_empty() {
                queue.idle -= 1;
                break;
            }
        }
        queue.idle -= 1;
    }
    queue.threads -= 1;
    shared.exited.notify_all();
}

thread_local! {
    static CALLBACK_DEPTH: Cell<u32> = const { Cell::new(0) };
    /// The call this thread serves (see `current_call_id`).
    static CALL_ID: Cell<u64> = const { Cell::new(0) };
}

/// The id of the call this thread serves: set on the guest's thread for
/// the length of a call (or a run loop's message), and on a hand-off thread
/// while it runs one of that call's callbacks. 0 outside any call.
pub fn current_call_id() -> u64 {
    CALL_ID.try_with(Cell::get).unwrap_or(0)
}

/// Marks this thread as serving call `id` until the guard drops, which
/// puts back what was there before.
pub(crate) fn serve_call(id: u64) -> ServingCall {
    ServingCall(CALL_ID.try_with(|c| c.replace(id)).unwrap_or(0))
}

/// See [`serve_call`].
pub(crate) struct ServingCall(u64);

impl Drop for ServingCall {
    fn drop(&mut self) {
        let _ = CALL_ID.try_with(|c| c.set(self.0));
    }
}

/// Moves this thread on to call `id` (a run loop taking its next message)
/// without a guard: the loop's own guard restores the thread at its end.
pub(crate) fn switch_call(id: u64) {
    let _ = CALL_ID.try_with(|c| c.set(id));
}

/// True while this thread runs an embedder callback: blocking API calls made
/// from there return `Reentrant` instead of risking a deadlock.
pub fn in_callback() -> bool {
    CALLBACK_DEPTH.with(Cell::get) > 0
}

/// Runs an embedder callback, marking the thread and containing panics.
pub fn run_callback<R>(f: impl FnOnce() -> R) -> Option<R> {
    CALLBACK_DEPTH.with(|d| d.set(d.get() + 1));
    let result = catch_unwind(AssertUnwindSafe(f));
    CALLBACK_DEPTH.with(|d| d.set(d.get() - 1));
    result.ok()
}

/// Fails with `Reentrant` when called from inside an embedder callback.
pub fn refuse_reentry(what: &str) -> Result<()> {
    if in_callback() {
        return Err(Error::new(
            Code::Reentrant,
            format!("{what} cannot be called from inside an astrid callback"),
        ));
    }
    Ok(())
}

/// How a deadline-bounded embedder callback ended.
pub(crate) enum Bounded<R> {
    Done(R),
    Panicked,
    /// Still running (or finished) past its own deadline.
    Overran,
    /// The call was cancelled or passed its deadline first.
    Cancelled,
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc::channel;

    #[test]
    fn runs_jobs_and_grows_past_a_blocked_worker() {
        let pool = HandOff::default();
        let (release_tx, release_rx) = channel::<()>();
        let (done_tx, done_rx) = channel::<u32>();
        // The first job holds its worker until released.
        let first = done_tx.clone();
        assert!(pool.run(move || {
            release_rx.recv().unwrap();
            first.send(1).unwrap();
        }));
        // The second still runs: the pool starts another worker.
        assert!(pool.run(move || done_tx.send(2).unwrap()));
        assert_eq!(done_rx.recv_timeout(Duration::from_secs(5)), Ok(2));
        release_tx.send(()).unwrap();
        assert_eq!(done_rx.recv_timeout(Duration::from_secs(5)), Ok(1));
        pool.close(Duration::from_secs(5));
        assert_eq!(pool.shared.queue.locked().threads, 0);
        assert!(!pool.run(|| {}), "a closed pool takes no jobs");
    }

    #[test]
    fn a_panicking_job_keeps_its_worker() {
        let pool = HandOff::default();
        assert!(pool.run(|| panic!("callback panic")));
        let (tx, rx) = channel();
        assert!(pool.run(move || tx.send(()).unwrap()));
        assert!(rx.recv_timeout(Duration::from_secs(5)).is_ok());
        pool.close(Duration::from_secs(5));
        assert_eq!(pool.shared.queue.locked().threads, 0);
    }

    #[test]
    fn close_gives_up_on_a_stuck_worker_after_the_grace() {
        let pool = HandOff::default();
        let (_hold, stuck) = channel::<()>();
        assert!(pool.run(move || {
            let _ = stuck.recv_timeout(Duration::from_secs(30));
        }));
        std::thread::sleep(Duration::from_millis(20));
        let started = Instant::now();
        pool.close(Duration::from_millis(100));
        assert!(started.elapsed() < Duration::from_secs(5));
        assert_eq!(pool.shared.queue.locked().threads, 1);
    }
}
