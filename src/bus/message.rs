//! What travels on the bus: messages as published and as delivered, and
//! who they speak for.

use std::sync::Arc;

/// Who a message speaks for (§8.5).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Attribution {
    System,
    Verified(String),
    Claimed(String),
}

impl Attribution {
    pub fn principal(&self) -> Option<&str> {
        match self {
            Attribution::System => None,
            Attribution::Verified(p) | Attribution::Claimed(p) => Some(p),
        }
    }
}

/// One bus message, shared by every queue it was delivered to.
#[derive(Debug)]
pub struct Message {
    pub topic: String,
    /// JSON text.
    pub payload: String,
    /// The publishing capsule's id, or the embedder's id for host publishes.
    pub source_id: Arc<str>,
    pub attribution: Attribution,
    /// Runtime-wide publish order.
    pub sequence: u64,
    pub timestamp_ms: u64,
    /// 0 for host publishes; a message published while handling one of
    /// depth `d` has depth `d + 1`.
    pub depth: u32,
}

/// A message as a subscriber takes it, with the losses since the previous take.
#[derive(Debug)]
pub struct Delivery {
    pub message: Arc<Message>,
    /// Matched but never queued (byte budget or fan-out cap).
    pub dropped: u64,
    /// Queued but evicted unread because the queue was full.
    pub lagged: u64,
}

/// A publish, before the bus stamps it.
pub struct Publish<'a> {
    pub topic: &'a str,
    pub payload: &'a str,
    pub source_id: Arc<str>,
    pub attribution: Attribution,
    pub depth: u32,
    pub timestamp_ms: u64,
}

/// Handler of a host subscription: runs on the subscription's thread.
pub type DeliveryHandler = Box<dyn FnMut(&Delivery) + Send>;
