//! The call a store serves: who asked, on whose behalf, until when. Every
//! interface's view shares it.

use crate::cancel::CancelToken;
use crate::usage::StoreUsage;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

/// The call a store is serving: who asked, on whose behalf, until when.
#[derive(Clone)]
pub struct CallContext {
    pub principal: Option<Arc<str>>,
    pub source_id: Arc<str>,
    /// When the triggering call or message was made (ms since the epoch).
    pub timestamp_ms: u64,
    pub token: CancelToken,
    pub deadline: Instant,
    /// Per-call config overlay (`get-config` step 2).
    pub overlay: Option<Arc<HashMap<String, String>>>,
    /// False between calls: `get-caller` then reports no caller.
    pub active: bool,
    /// Depth of the message being handled (0 for embedder calls); the
    /// guest's own publishes get one more (host ABI §8.6).
    pub depth: u32,
    /// The call's id, unique within the runtime (0 between calls).
    pub id: u64,
    /// The store's usage counters (one writer: the thread holding the store).
    pub usage: Arc<StoreUsage>,
}

impl CallContext {
    /// A context for no call yet, counting into `usage`.
    pub fn idle(token: CancelToken, usage: Arc<StoreUsage>) -> Self {
        CallContext {
            principal: None,
            source_id: Arc::from(""),
            timestamp_ms: 0,
            token,
            deadline: Instant::now(),
            overlay: None,
            active: false,
            depth: 0,
            id: 0,
            usage,
        }
    }
}
