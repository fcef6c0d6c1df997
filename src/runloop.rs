//! Run loops (host ABI §3, §7.2): a capsule that really exports `run` gets
//! one dedicated store, never pooled or reset, driven by its own thread.
//! `signal-ready` marks it ready (`Capsule::wait_ready`); returning from
//! `run` or trapping marks it failed (no restart); the watchdog interrupts a
//! loop that goes three windows without a waiting host call; unload wakes
//! whatever it waits on and waits (bounded) for the thread.

use crate::error::{Code, Error, Result};
use crate::signal::{CondvarExt, MutexExt};
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

/// Default watchdog window.
pub const DEFAULT_WATCHDOG: Duration = Duration::from_secs(5);

#[derive(Clone, Debug)]
pub(crate) enum RunState {
    Starting,
    Ready,
    /// `run` returned or failed; the error says which.
    Failed(Error),
    /// Ended by unload.
    Stopped,
}

/// The shared state of one capsule's run loop.
pub(crate) struct RunLoop {
    state: Mutex<RunState>,
    changed: Condvar,
    /// Set when the thread has dropped the store.
    finished: Mutex<bool>,
    finished_changed: Condvar,
}

impl RunLoop {
    pub(crate) fn new() -> Self {
        RunLoop {
            state: Mutex::new(RunState::Starting),
            changed: Condvar::new(),
            finished: Mutex::new(false),
            finished_changed: Condvar::new(),
        }
    }

    pub(crate) fn set(&self, next: RunState) {
        let mut state = self.state.locked();
        // Ready only from Starting; terminal states never change.
        let allowed = matches!(
            (&*state, &next),
            (RunState::Starting, _) | (RunState::Ready, RunState::Failed(_) | RunState::Stopped)
        );
        if allowed {
            *state = next;
            self.changed.notify_all();
        }
    }

    /// `signal-ready` from the loop.
    pub(crate) fn mark_ready(&self) {
        self.set(RunState::Ready);
    }

    /// Waits until the loop is ready (Ok), failed or stopped (Err), or
    /// `timeout` passes (`Timeout`).
    pub(crate) fn wait_ready(&self, timeout: Duration) -> Result<()> {
        let until = Instant::now() + timeout;
        let mut state = self.state.locked();
        loop {
            match &*state {
                RunState::Ready => return Ok(()),
                RunState::Failed(e) => {
                    return Err(Error::new(
                        e.code(),
                        format!("the run loop failed: {}", e.message()),
                    ))
                }
                RunState::Stopped => return Err(Error::closed("the capsule was unloaded")),
                RunState::Starting => {}
            }
            let now = Instant::now();
            if now >= until {
                return Err(Error::new(
                    Code::Timeout,
                    format!(
                        "the run loop did not signal ready within {} ms",
                        timeout.as_millis()
                    ),
                ));
            }
            state = self.changed.wait_timeout_recovered(state, until - now).0;
        }
    }

    /// Waits up to `grace` for the loop's thread to drop its store.
    pub(crate) fn wait_finished(&self, grace: Duration) -> bool {
        let until = Instant::now() + grace;
        let mut finished = self.finished.locked();
        while !*finished {
            let now = Instant::now();
            if now >= until {
                return false;
            }
            finished = self
                .finished_changed
                .wait_timeout_recovered(finished, until - now)
                .0;
        }
        true
    }

    pub(crate) fn mark_finished(&self) {
        *self.finished.locked() = true;
        self.finished_changed.notify_all();
    }
}
