//! A subscription's bounded queue (host ABI §8.4): which principals' messages
//! it admits, `dropped` / `lagged` accounting, and taking from it.

use super::message::{Attribution, Delivery, Message};
use crate::signal::{CondvarExt, MutexExt};
use crate::signal::{Readiness, Signal, Waiter};
use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};

/// Bounds of one subscription queue.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QueueLimits {
    pub messages: usize,
    pub bytes: usize,
}

/// Default queue bounds (§8.4).
pub const DEFAULT_QUEUE_MESSAGES: usize = 1024;
pub const DEFAULT_QUEUE_BYTES: usize = 4 << 20;

impl Default for QueueLimits {
    fn default() -> Self {
        QueueLimits {
            messages: DEFAULT_QUEUE_MESSAGES,
            bytes: DEFAULT_QUEUE_BYTES,
        }
    }
}

#[derive(Default)]
pub(crate) struct QueueState {
    pub(crate) items: VecDeque<Arc<Message>>,
    pub(crate) bytes: usize,
    pub(crate) dropped: u64,
    pub(crate) lagged: u64,
    pub(crate) closed: bool,
    /// Threads blocked in `take_blocking`: publishers skip the wake-up
    /// system call when nobody waits.
    pub(crate) waiters: usize,
}

/// Which principals' messages a subscription receives (§8.4).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PrincipalFilter {
    /// Every message (host subscriptions, capsules loaded without an owner).
    All,
    /// Messages verified for the owner, and `system` ones.
    OwnerAndSystem(String),
    /// Only messages verified for this principal (subscriptions made during
    /// a call for that principal).
    Only(String),
}

impl PrincipalFilter {
    pub fn admits(&self, attribution: &Attribution) -> bool {
        match (self, attribution) {
            (PrincipalFilter::All, _) => true,
            (PrincipalFilter::OwnerAndSystem(_), Attribution::System) => true,
            (
                PrincipalFilter::OwnerAndSystem(p) | PrincipalFilter::Only(p),
                Attribution::Verified(v),
            ) => p == v,
            _ => false,
        }
    }
}

/// A bounded FIFO of one subscription (§8.4). Shared by the bus (which
/// fills it) and the subscriber (which drains it).
pub struct SubscriptionQueue {
    pub(crate) pattern: String,
    pub(crate) filter: PrincipalFilter,
    pub(crate) limits: QueueLimits,
    /// Wakes multi-source waits (`poll`, `recv`) on every change.
    pub(crate) signal: Signal,
    pub(crate) state: Mutex<QueueState>,
    pub(crate) changed: Condvar,
    /// Bumped on every enqueue and on close, for waiters that spin.
    pub(crate) version: AtomicU64,
}

impl QueueState {
    pub(crate) fn wake(&self, changed: &Condvar) {
        if self.waiters > 0 {
            changed.notify_all();
        }
    }
}

/// What a non-blocking take found.
pub enum Take {
    /// A message, with the counts accumulated since the previous take.
    Message(Delivery),
    /// Nothing queued; losses may still be pending (reported and reset).
    Empty {
        dropped: u64,
        lagged: u64,
    },
    Closed,
}

impl SubscriptionQueue {
    pub(crate) fn new(pattern: String, filter: PrincipalFilter, limits: QueueLimits) -> Self {
        SubscriptionQueue {
            pattern,
            filter,
            limits,
            signal: Signal::default(),
            state: Mutex::new(QueueState::default()),
            changed: Condvar::new(),
            version: AtomicU64::new(0),
        }
    }

    pub fn pattern(&self) -> &str {
        &self.pattern
    }

    pub(crate) fn lock(&self) -> std::sync::MutexGuard<'_, QueueState> {
        self.state.locked()
    }

    pub(crate) fn offer(&self, message: &Arc<Message>) {
        let mut state = self.lock();
        if state.closed {
            return;
        }
        let size = message.payload.len();
        if state.bytes + size > self.limits.bytes {
            // Counted as never queued (§8.4); evicting older messages to make
            // room would hide a byte overflow as lag.
            state.dropped += 1;
            state.wake(&self.changed);
            drop(state);
            self.signal.notify();
            return;
        }
        if state.items.len() >= self.limits.messages {
            if let Some(old) = state.items.pop_front() {
                state.bytes -= old.payload.len();
                state.lagged += 1;
            }
        }
        state.bytes += size;
        state.items.push_back(message.clone());
        self.version.fetch_add(1, Ordering::Release);
        state.wake(&self.changed);
        drop(state);
        self.signal.notify();
    }

    pub(crate) fn count_dropped(&self) {
        let mut state = self.lock();
        if !state.closed {
            state.dropped += 1;
            state.wake(&self.changed);
            drop(state);
            self.signal.notify();
        }
    }

    pub(crate) fn take_locked(state: &mut QueueState) -> Take {
        if state.closed {
            return Take::Closed;
        }
        let dropped = std::mem::take(&mut state.dropped);
        let lagged = std::mem::take(&mut state.lagged);
        match state.items.pop_front() {
            Some(message) => {
                state.bytes -= message.payload.len();
                Take::Message(Delivery {
                    message,
                    dropped,
                    lagged,
                })
            }
            None => Take::Empty { dropped, lagged },
        }
    }

    /// Takes the oldest message without waiting.
    pub fn try_take(&self) -> Take {
        Self::take_locked(&mut self.lock())
    }

    /// Waits until a message is queued, losses are pending, or the queue closes.
    /// `None` when it closed.
    pub(crate) fn take_blocking(&self) -> Option<Delivery> {
        let mut state = self.lock();
        loop {
            if state.closed {
                return None;
            }
            if let Some(message) = state.items.pop_front() {
                state.bytes -= message.payload.len();
                return Some(Delivery {
                    message,
                    dropped: std::mem::take(&mut state.dropped),
                    lagged: std::mem::take(&mut state.lagged),
                });
            }
            // A subscriber that keeps up finds its queue empty after each
            // message; blocking at once would make every publish pay a
            // wake-up system call and a context switch. Spin briefly first.
            let seen = self.version.load(Ordering::Acquire);
            drop(state);
            crate::signal::spin_until_changed(&self.version, seen);
            state = self.lock();
            if state.items.is_empty() && !state.closed {
                state.waiters += 1;
                state = self.changed.wait_recovered(state);
                state.waiters -= 1;
            }
        }
    }

    /// Whether a take would return at once (a message, losses or closed).
    pub fn is_ready(&self) -> bool {
        let state = self.lock();
        state.closed || !state.items.is_empty() || state.dropped > 0 || state.lagged > 0
    }

    /// Stops the queue: pending messages are discarded, waiters wake.
    pub fn close(&self) {
        let mut state = self.lock();
        state.closed = true;
        state.items.clear();
        state.bytes = 0;
        self.version.fetch_add(1, Ordering::Release);
        self.changed.notify_all();
        drop(state);
        self.signal.notify();
    }
}

impl Readiness for SubscriptionQueue {
    fn is_ready(&self) -> bool {
        SubscriptionQueue::is_ready(self)
    }

    fn register(&self, waiter: &Arc<Waiter>) {
        self.signal.register(waiter);
    }
}
