//! What `astrid:ipc` keeps per capsule, over all its instances (its live
//! subscriptions, at most 128, and its publish budgets), per store for the
//! call it serves, and the guest's `subscription` resource.

use crate::bus::{Bus, PrincipalFilter, SubscriptionQueue};
use crate::cancel::CancelToken;
use crate::error::Code;
use crate::signal::MutexExt;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::Instant;

/// Live guest subscriptions per capsule.
pub const MAX_SUBSCRIPTIONS: usize = 128;

pub struct IpcShared {
    bus: Arc<Bus>,
    /// Payload bytes per second one (capsule, data scope) may publish.
    publish_rate: f64,
    /// The capsule's unload token: no subscription starts after unload.
    unload_token: CancelToken,
    subscriptions: Mutex<Vec<Weak<SubscriptionQueue>>>,
    /// Token buckets per data scope: (bytes available, refilled at).
    publish_buckets: Mutex<HashMap<String, (f64, Instant)>>,
}

/// What `astrid:ipc` keeps for the call a store serves.
#[derive(Default)]
pub struct IpcCall {
    /// `subscription` resources made by the current call (table reps),
    /// closed when it ends.
    pub(crate) open_subscriptions: Vec<u32>,
}

/// Why a subscription could not start.
pub(crate) enum SubscribeRefusal {
    /// The capsule is unloading or the bus is closed.
    Closed,
    /// The capsule holds `MAX_SUBSCRIPTIONS` already.
    Quota,
    /// The pattern is not a valid topic pattern.
    Invalid,
}

impl IpcShared {
    pub(crate) fn new(bus: Arc<Bus>, publish_rate: u64, unload_token: CancelToken) -> IpcShared {
        IpcShared {
            bus,
            publish_rate: publish_rate as f64,
            unload_token,
            subscriptions: Mutex::new(Vec::new()),
            publish_buckets: Mutex::new(HashMap::new()),
        }
    }

    /// A bus queue for a new guest subscription, within the capsule's quota.
    pub(crate) fn claim_subscription(
        &self,
        pattern: &str,
        filter: PrincipalFilter,
    ) -> Result<Arc<SubscriptionQueue>, SubscribeRefusal> {
        let mut live = self.subscriptions.locked();
        // Checked under the lock `close_subscriptions` takes: a subscription
        // cannot slip in after unload closed the others.
        if self.unload_token.is_cancelled() {
            return Err(SubscribeRefusal::Closed);
        }
        live.retain(|q| q.strong_count() > 0);
        if live.len() >= MAX_SUBSCRIPTIONS {
            return Err(SubscribeRefusal::Quota);
        }
        let queue = self
            .bus
            .add_queue(pattern, filter)
            .map_err(|e| match e.code() {
                Code::Closed => SubscribeRefusal::Closed,
                _ => SubscribeRefusal::Invalid,
            })?;
        live.push(Arc::downgrade(&queue));
        Ok(queue)
    }

    pub(crate) fn release_subscription(&self, queue: &Arc<SubscriptionQueue>) {
        self.bus.remove_queue(queue);
        self.subscriptions
            .locked()
            .retain(|q| q.upgrade().is_some_and(|q| !Arc::ptr_eq(&q, queue)));
    }

    /// Closes every subscription of the capsule (unload): a `recv` blocked
    /// in a run loop wakes up with `closed`.
    pub(crate) fn close_subscriptions(&self) {
        let live = std::mem::take(&mut *self.subscriptions.locked());
        for queue in live.iter().filter_map(std::sync::Weak::upgrade) {
            self.bus.remove_queue(&queue);
        }
    }

    pub(crate) fn refund_publish_budget(&self, scope: &str, bytes: usize) {
        let rate = self.publish_rate;
        let mut buckets = self.publish_buckets.locked();
        if let Some(bucket) = buckets.get_mut(scope) {
            bucket.0 = (bucket.0 + bytes as f64).min(rate);
        }
    }

    /// Takes `bytes` from the (capsule, scope) publish budget: a token
    /// bucket refilled at the runtime's publish rate, one second deep.
    pub(crate) fn take_publish_budget(&self, scope: &str, bytes: usize) -> bool {
        let rate = self.publish_rate;
        let mut buckets = self.publish_buckets.locked();
        let now = Instant::now();
        let bucket = buckets.entry(scope.to_string()).or_insert((rate, now));
        let refill = now.duration_since(bucket.1).as_secs_f64() * rate;
        bucket.0 = (bucket.0 + refill).min(rate);
        bucket.1 = now;
        if bucket.0 < bytes as f64 {
            return false;
        }
        bucket.0 -= bytes as f64;
        true
    }
}

/// A guest `subscription`: its bus queue, `None` once closed.
pub struct GuestSubscription {
    pub(crate) queue: Option<Arc<SubscriptionQueue>>,
    pub(crate) ipc: Arc<IpcShared>,
}

impl GuestSubscription {
    /// Takes the queue off the bus; the resource then answers `closed`.
    pub(crate) fn release(&mut self) {
        if let Some(queue) = self.queue.take() {
            self.ipc.release_subscription(&queue);
        }
    }
}

/// Whatever drops the resource (the guest, the end of its call, or the
/// store itself when a run loop ends) takes its queue off the bus.
impl Drop for GuestSubscription {
    fn drop(&mut self) {
        self.release();
    }
}
