//! The IPC bus (host ABI §8): topics, bounded per-subscription queues with
//! `dropped` / `lagged` accounting, the fan-out cap, and host-side
//! subscriptions delivered in order on their own worker thread.
//!
//! Publishing never runs a subscriber: it validates, stamps a sequence
//! number and enqueues into every matching queue under one lock, so queues
//! see messages in sequence order. Delivery happens on the subscriber's side
//! (a host subscription's thread here; a guest's `recv` / `poll`).

mod message;
mod queue;

pub use message::{Attribution, Delivery, DeliveryHandler, Message, Publish};
pub use queue::{
    PrincipalFilter, QueueLimits, SubscriptionQueue, Take, DEFAULT_QUEUE_BYTES,
    DEFAULT_QUEUE_MESSAGES,
};

use crate::error::{Code, Error, Result};
use crate::handoff::{in_callback, run_callback};
use crate::policy::topic;
use crate::signal::{CondvarExt, MutexExt, RwLockExt};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, RwLock, Weak};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Interceptor invocations a publisher may have triggered before its publishes
/// fail with `backpressure`.
pub const MAX_PENDING_PER_SOURCE: usize = 1024;

/// Largest payload one message may carry (§8.1).
pub const MAX_PAYLOAD_BYTES: usize = 1 << 20;
/// One publish reaches at most this many queues (§8.6).
pub const MAX_FAN_OUT: usize = 256;

/// The bus of one runtime.
pub struct Bus {
    /// Live queues in creation order (the delivery order of §8.6).
    queues: RwLock<Vec<Arc<SubscriptionQueue>>>,
    /// Serialises sequence numbering and enqueueing so every queue sees
    /// messages in sequence order.
    publish_lock: Mutex<()>,
    sequence: AtomicU64,
    host_subscriptions: Mutex<Vec<Weak<HostSubscriptionInner>>>,
    closed: AtomicBool,
    limits: QueueLimits,
}

impl Bus {
    pub fn new(limits: QueueLimits) -> Self {
        Bus {
            queues: RwLock::new(Vec::new()),
            publish_lock: Mutex::new(()),
            sequence: AtomicU64::new(0),
            host_subscriptions: Mutex::new(Vec::new()),
            closed: AtomicBool::new(false),
            limits,
        }
    }

    fn check_open(&self) -> Result<()> {
        if self.closed.load(Ordering::SeqCst) {
            return Err(Error::closed("the runtime has been shut down"));
        }
        Ok(())
    }

    /// Validates and enqueues a message into every matching queue whose
    /// principal filter admits it, at most `fan_out` of them (the rest count
    /// it as dropped). Never runs a subscriber.
    pub fn publish(&self, publish: Publish<'_>, fan_out: usize) -> Result<Arc<Message>> {
        validate_message(publish.topic, publish.payload)?;
        self.publish_valid(publish, fan_out)
    }

    /// [`Bus::publish`] for a message whose topic and payload the caller
    /// has already checked with [`validate_message`] (guest publishes check
    /// it in the order of host ABI §2.5; parsing 1 MiB of JSON twice is waste).
    pub(crate) fn publish_valid(
        &self,
        publish: Publish<'_>,
        fan_out: usize,
    ) -> Result<Arc<Message>> {
        self.check_open()?;
        let _order = self.publish_lock.locked();
        let sequence = self.sequence.fetch_add(1, Ordering::Relaxed) + 1;
        let message = Arc::new(Message {
            topic: publish.topic.to_string(),
            payload: publish.payload.to_string(),
            source_id: publish.source_id,
            attribution: publish.attribution,
            sequence,
            timestamp_ms: publish.timestamp_ms,
            depth: publish.depth,
        });
        let queues = self.queues.read_locked();
        let mut reached = 0usize;
        for queue in queues.iter().filter(|q| {
            q.filter.admits(&message.attribution) && topic::matches(&q.pattern, &message.topic)
        }) {
            if reached < fan_out {
                queue.offer(&message);
                reached += 1;
            } else {
                queue.count_dropped();
            }
        }
        drop(queues);
        Ok(message)
    }

    /// Adds a queue for `pattern` (validated) at the end of the delivery order.
    pub fn add_queue(
        &self,
        pattern: &str,
        filter: PrincipalFilter,
    ) -> Result<Arc<SubscriptionQueue>> {
        self.check_open()?;
        topic::validate_pattern(pattern)
            .map_err(|e| Error::invalid_argument(format!("topic pattern `{pattern}` {e}")))?;
        let queue = Arc::new(SubscriptionQueue::new(
            pattern.to_string(),
            filter,
            self.limits,
        ));
        let mut queues = self.queues.write_locked();
        // Checked under the lock so close() cannot miss the new queue.
        self.check_open()?;
        queues.push(queue.clone());
        Ok(queue)
    }

    /// Closes a queue and forgets it.
    pub fn remove_queue(&self, queue: &Arc<SubscriptionQueue>) {
        queue.close();
        self.queues
            .write_locked()
            .retain(|q| !Arc::ptr_eq(q, queue));
    }

    /// Number of live queues (guest and host).
    pub fn queue_count(&self) -> usize {
        self.queues.read_locked().len()
    }

    /// A host subscription: `handler` receives each message in order on a
    /// dedicated thread until the subscription is closed.
    pub fn subscribe_host(
        self: &Arc<Self>,
        pattern: &str,
        handler: DeliveryHandler,
    ) -> Result<HostSubscription> {
        let queue = self.add_queue(pattern, PrincipalFilter::All)?;
        let inner = Arc::new(HostSubscriptionInner {
            queue: queue.clone(),
            bus: Arc::downgrade(self),
            thread: Mutex::new(None),
            thread_id: Mutex::new(None),
            finished: Mutex::new(false),
            finished_changed: Condvar::new(),
        });
        let worker_queue = queue.clone();
        let worker_inner = Arc::downgrade(&inner);
        let mut handler = handler;
        let spawned = std::thread::Builder::new()
            .name("astrid-subscriber".into())
            .spawn(move || {
                while let Some(delivery) = worker_queue.take_blocking() {
                    if run_callback(|| handler(&delivery)).is_none() {
                        tracing::warn!(
                            pattern = worker_queue.pattern(),
                            "a subscription callback panicked; delivery continues"
                        );
                    }
                }
                // The handler (and the embedder's finalizer inside it) is
                // dropped here, after the last callback.
                drop(handler);
                if let Some(inner) = worker_inner.upgrade() {
                    *inner.finished.locked() = true;
                    inner.finished_changed.notify_all();
                }
            });
        let thread = match spawned {
            Ok(thread) => thread,
            Err(e) => {
                self.remove_queue(&queue);
                return Err(
                    Error::new(Code::Io, "cannot start the subscription's thread").caused_by(e),
                );
            }
        };
        *inner.thread_id.locked() = Some(thread.thread().id());
        *inner.thread.locked() = Some(thread);
        let mut list = self.host_subscriptions.locked();
        list.retain(|w| w.strong_count() > 0);
        list.push(Arc::downgrade(&inner));
        drop(list);
        if self.closed.load(Ordering::SeqCst) {
            // close() ran between add_queue and registration: undo.
            inner.close();
            return Err(Error::closed("the runtime has been shut down"));
        }
        Ok(HostSubscription { inner })
    }

    /// Closes every queue and stops every host subscription, waiting for
    /// callbacks in flight (and their finalizers). Idempotent.
    pub fn close(&self) {
        self.close_within(None);
    }

    /// `close`, waiting at most `grace` in all for host subscription
    /// callbacks in flight (runtime shutdown). A callback still running then
    /// is left to finish on its own thread: delivery has stopped, and its
    /// handler (the embedder's finalizer) is dropped there once it returns.
    pub fn close_within(&self, grace: Option<Duration>) {
        let until = grace.map(|grace| Instant::now() + grace);
        if self.closed.swap(true, Ordering::SeqCst) {
            return;
        }
        let queues: Vec<_> = self.queues.write_locked().drain(..).collect();
        for queue in &queues {
            queue.close();
        }
        let subscriptions: Vec<_> = self.host_subscriptions.locked().drain(..).collect();
        for subscription in subscriptions.iter().filter_map(Weak::upgrade) {
            subscription.close_until(until);
        }
    }
}

/// Checks a published topic and payload (§8.1): grammar, no `*`, JSON text
/// of at most 1 MiB.
pub fn validate_message(topic_text: &str, payload: &str) -> Result<()> {
    topic::validate_topic(topic_text)
        .map_err(|e| Error::invalid_argument(format!("topic `{topic_text}` {e}")))?;
    validate_payload(payload)
}

/// The payload half of [`validate_message`]: at most 1 MiB of JSON text.
pub fn validate_payload(payload: &str) -> Result<()> {
    if payload.len() > MAX_PAYLOAD_BYTES {
        return Err(Error::invalid_argument(format!(
            "payload is {} bytes; the limit is 1 MiB",
            payload.len()
        )));
    }
    serde_json::from_str::<serde::de::IgnoredAny>(payload)
        .map_err(|e| Error::invalid_argument("payload is not JSON text").caused_by(e))?;
    Ok(())
}

pub struct HostSubscriptionInner {
    queue: Arc<SubscriptionQueue>,
    bus: Weak<Bus>,
    thread: Mutex<Option<JoinHandle<()>>>,
    thread_id: Mutex<Option<std::thread::ThreadId>>,
    /// Set by the delivery thread once its handler (and the embedder's
    /// finalizer) is gone, so every closer can wait, not just the joiner.
    finished: Mutex<bool>,
    finished_changed: Condvar,
}

impl HostSubscriptionInner {
    fn close(&self) {
        self.close_until(None);
    }

    /// Stops delivery and waits for the callback in flight, until `until`
    /// at most; past it the delivery thread is left to end on its own (a
    /// later unbounded close still waits for it).
    fn close_until(&self, until: Option<Instant>) {
        match self.bus.upgrade() {
            Some(bus) => bus.remove_queue(&self.queue),
            None => self.queue.close(),
        }
        let own_thread = *self.thread_id.locked() == Some(std::thread::current().id());
        // From inside any astrid callback, waiting could deadlock (two
        // subscriptions freeing each other); delivery still stops after the
        // running callback and the thread ends on its own.
        if own_thread || in_callback() {
            return;
        }
        if let Some(until) = until {
            let mut finished = self.finished.locked();
            while !*finished {
                let now = Instant::now();
                if now >= until {
                    return; // Left running; a later unbounded close still joins it.
                }
                finished = self
                    .finished_changed
                    .wait_timeout_recovered(finished, until - now)
                    .0;
            }
        }
        let thread = self.thread.locked().take();
        if let Some(thread) = thread {
            let _ = thread.join();
            return;
        }
        // Another closer took the join handle: wait for the same end.
        let mut finished = self.finished.locked();
        while !*finished && self.thread_id.lock().is_ok_and(|id| id.is_some()) {
            finished = self.finished_changed.wait_recovered(finished);
        }
    }
}

/// Owner of a host subscription. Closing (or dropping) it stops delivery
/// and returns once no callback for it runs.
pub struct HostSubscription {
    inner: Arc<HostSubscriptionInner>,
}

impl HostSubscription {
    pub fn pattern(&self) -> &str {
        self.inner.queue.pattern()
    }

    /// Stops delivery and waits for a callback in flight (not when called
    /// from inside an astrid callback). Idempotent.
    pub fn close(&self) {
        self.inner.close();
    }
}

impl Drop for HostSubscription {
    fn drop(&mut self) {
        self.inner.close();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;
    use std::time::Duration;

    fn publish<'a>(topic: &'a str, payload: &'a str) -> Publish<'a> {
        Publish {
            topic,
            payload,
            source_id: Arc::from("test"),
            attribution: Attribution::System,
            depth: 0,
            timestamp_ms: 0,
        }
    }

    fn drain(queue: &SubscriptionQueue) -> (Vec<u64>, u64, u64) {
        let (mut seqs, mut dropped, mut lagged) = (Vec::new(), 0, 0);
        loop {
            match queue.try_take() {
                Take::Message(d) => {
                    seqs.push(d.message.sequence);
                    dropped += d.dropped;
                    lagged += d.lagged;
                }
                Take::Empty {
                    dropped: d,
                    lagged: l,
                } => return (seqs, dropped + d, lagged + l),
                Take::Closed => return (seqs, dropped, lagged),
            }
        }
    }

    #[test]
    fn publishes_reach_matching_queues_in_order() {
        let bus = Bus::new(QueueLimits::default());
        let all = bus.add_queue("a.*", PrincipalFilter::All).unwrap();
        let exact = bus.add_queue("a.b", PrincipalFilter::All).unwrap();
        let other = bus.add_queue("z", PrincipalFilter::All).unwrap();
        for topic in ["a.b", "a.c.d", "a.b", "a"] {
            bus.publish(publish(topic, "{}"), MAX_FAN_OUT).unwrap();
        }
        assert_eq!(drain(&all).0, vec![1, 2, 3]);
        assert_eq!(drain(&exact).0, vec![1, 3]);
        assert!(drain(&other).0.is_empty());
    }

    #[test]
    fn refuses_bad_topics_and_payloads() {
        let bus = Bus::new(QueueLimits::default());
        for (topic, payload) in [
            ("a.*", "{}"),
            ("a..b", "{}"),
            ("", "{}"),
            ("a", "not json"),
            ("a", "{\"open\": "),
        ] {
            let err = bus
                .publish(publish(topic, payload), MAX_FAN_OUT)
                .unwrap_err();
            assert_eq!(err.code(), Code::InvalidArgument, "{topic} {payload}");
        }
        let big = format!("\"{}\"", "x".repeat(MAX_PAYLOAD_BYTES));
        let err = bus.publish(publish("a", &big), MAX_FAN_OUT).unwrap_err();
        assert!(err.message().contains("1 MiB"), "{}", err.message());
        assert_eq!(
            bus.add_queue("a.b*", PrincipalFilter::All)
                .map(|_| ())
                .unwrap_err()
                .code(),
            Code::InvalidArgument
        );
    }

    #[test]
    fn full_queue_evicts_oldest_and_counts_lag_exactly() {
        let bus = Bus::new(QueueLimits {
            messages: 4,
            bytes: 1 << 20,
        });
        let queue = bus.add_queue("t", PrincipalFilter::All).unwrap();
        for _ in 0..10 {
            bus.publish(publish("t", "1"), MAX_FAN_OUT).unwrap();
        }
        let (seqs, dropped, lagged) = drain(&queue);
        assert_eq!(seqs, vec![7, 8, 9, 10]);
        assert_eq!((dropped, lagged), (0, 6));
        // Counts were reported once and reset.
        assert!(matches!(
            queue.try_take(),
            Take::Empty {
                dropped: 0,
                lagged: 0
            }
        ));
    }

    #[test]
    fn byte_budget_drops_what_does_not_fit() {
        let bus = Bus::new(QueueLimits {
            messages: 100,
            bytes: 10,
        });
        let queue = bus.add_queue("t", PrincipalFilter::All).unwrap();
        for _ in 0..5 {
            bus.publish(publish("t", "\"abc\""), MAX_FAN_OUT).unwrap(); // 5 bytes each
        }
        let (seqs, dropped, lagged) = drain(&queue);
        assert_eq!(seqs, vec![1, 2]);
        assert_eq!((dropped, lagged), (3, 0));
    }

    #[test]
    fn fan_out_is_capped_and_the_rest_count_drops() {
        let bus = Bus::new(QueueLimits::default());
        let queues: Vec<_> = (0..MAX_FAN_OUT + 3)
            .map(|_| bus.add_queue("t", PrincipalFilter::All).unwrap())
            .collect();
        bus.publish(publish("t", "{}"), MAX_FAN_OUT).unwrap();
        for (i, queue) in queues.iter().enumerate() {
            let (seqs, dropped, _) = drain(queue);
            if i < MAX_FAN_OUT {
                assert_eq!((seqs.len(), dropped), (1, 0), "queue {i}");
            } else {
                assert_eq!((seqs.len(), dropped), (0, 1), "queue {i}");
            }
        }
    }

    #[test]
    fn host_subscription_delivers_in_order_and_stops_on_close() {
        let bus = Arc::new(Bus::new(QueueLimits::default()));
        let (tx, rx) = mpsc::channel();
        let sub = bus
            .subscribe_host(
                "x.*",
                Box::new(move |d: &Delivery| {
                    tx.send(d.message.payload.clone()).unwrap();
                }),
            )
            .unwrap();
        for i in 0..100 {
            bus.publish(publish("x.y", &i.to_string()), MAX_FAN_OUT)
                .unwrap();
        }
        let got: Vec<String> = (0..100)
            .map(|_| rx.recv_timeout(Duration::from_secs(5)).unwrap())
            .collect();
        assert_eq!(got, (0..100).map(|i| i.to_string()).collect::<Vec<_>>());
        sub.close();
        assert_eq!(bus.queue_count(), 0);
        bus.publish(publish("x.y", "1"), MAX_FAN_OUT).unwrap();
        // The handler (and its sender) is gone once close returned.
        assert!(rx.recv_timeout(Duration::from_millis(50)).is_err());
    }

    #[test]
    fn closing_the_bus_ends_subscriptions_and_refuses_new_work() {
        let bus = Arc::new(Bus::new(QueueLimits::default()));
        let (tx, rx) = mpsc::channel::<()>();
        let _sub = bus
            .subscribe_host(
                "t",
                Box::new(move |_: &Delivery| {
                    let _ = &tx;
                }),
            )
            .unwrap();
        bus.close();
        // The handler owned the sender: it was dropped when the thread ended.
        assert!(matches!(
            rx.recv_timeout(Duration::from_secs(5)),
            Err(mpsc::RecvTimeoutError::Disconnected)
        ));
        assert_eq!(
            bus.publish(publish("t", "{}"), MAX_FAN_OUT)
                .unwrap_err()
                .code(),
            Code::Closed
        );
        assert_eq!(
            bus.add_queue("t", PrincipalFilter::All)
                .map(|_| ())
                .unwrap_err()
                .code(),
            Code::Closed
        );
    }
}
