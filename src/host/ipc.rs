//! `astrid:ipc@1.0.0` (host ABI §2.5, §8): publishing under the manifest's
//! `[publish]` ACL with depth, rate and backpressure limits, `publish-as`
//! for `uplink` capsules, subscriptions under `[subscribe]` with their
//! readiness pollable, and the capsule's interceptor bindings. Audited;
//! the ACL plays the gate's role for the bus (no embedder gate kind).

use super::io::Pollable;
use crate::bus::{
    Attribution, PrincipalFilter, Publish, SubscriptionQueue, Take, MAX_PENDING_PER_SOURCE,
};
use crate::host::audit::AuditCase;
use crate::host::state::HostState;

use crate::policy::topic;
use std::sync::Arc;
use std::time::{Duration, Instant};
use wasmtime::component::{HasSelf, Linker, Resource};

mod bindings {
    wasmtime::component::bindgen!({
        inline: "package astrid-runtime:ipc; world imports { import astrid:ipc/host@1.0.0; }",
        path: ["wit/astrid-io@1.0.0", "wit/astrid-ipc@1.0.0"],
        world: "imports",
        with: {
            "astrid:io/poll": crate::host::io::bindings::astrid::io::poll,
            "astrid:ipc/host.subscription": super::GuestSubscription,
        },
    });
}

use bindings::astrid::ipc::host::{
    self, ErrorCode, InterceptorBinding, IpcEnvelope, IpcMessage, PrincipalAttribution,
};

/// Live subscriptions per capsule, over all its instances.
pub const MAX_SUBSCRIPTIONS: usize = 128;
/// Deepest a message may be published from within handlers.
pub const MAX_DEPTH: u32 = 8;
/// Longest `recv` wait.
pub const MAX_RECV_MS: u64 = 60_000;
/// Reserved for the host.
const RESERVED_PREFIX: &str = "astrid.";

pub fn add_to_linker(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    host::add_to_linker::<HostState, HasSelf<HostState>>(linker, |state| state)
}

impl crate::host::shared::CapsuleShared {
    /// A bus queue for a new guest subscription, within the capsule's quota.
    fn claim_subscription(
        &self,
        pattern: &str,
        filter: PrincipalFilter,
    ) -> Result<Arc<SubscriptionQueue>, ErrorCode> {
        let mut live = self.subscriptions.lock().unwrap_or_else(|e| e.into_inner());
        // Checked under the lock `close_subscriptions` takes: a subscription
        // cannot slip in after unload closed the others.
        if self.unload_token.is_cancelled() {
            return Err(ErrorCode::Closed);
        }
        live.retain(|q| q.strong_count() > 0);
        if live.len() >= MAX_SUBSCRIPTIONS {
            return Err(ErrorCode::Quota);
        }
        let queue = self
            .services
            .bus
            .add_queue(pattern, filter)
            .map_err(|e| match e.code() {
                crate::error::Code::Closed => ErrorCode::Closed,
                _ => ErrorCode::InvalidInput,
            })?;
        live.push(Arc::downgrade(&queue));
        Ok(queue)
    }

    fn release_subscription(&self, queue: &Arc<SubscriptionQueue>) {
        self.services.bus.remove_queue(queue);
        self.subscriptions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|q| q.upgrade().is_some_and(|q| !Arc::ptr_eq(&q, queue)));
    }

    /// Closes every subscription of the capsule (unload): a `recv` blocked
    /// in a run loop wakes up with `closed`.
    pub(crate) fn close_subscriptions(&self) {
        let live =
            std::mem::take(&mut *self.subscriptions.lock().unwrap_or_else(|e| e.into_inner()));
        for queue in live.iter().filter_map(std::sync::Weak::upgrade) {
            self.services.bus.remove_queue(&queue);
        }
    }

    fn refund_publish_budget(&self, scope: &str, bytes: usize) {
        let rate = self.services.config.publish_rate as f64;
        let mut buckets = self
            .publish_buckets
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if let Some(bucket) = buckets.get_mut(scope) {
            bucket.0 = (bucket.0 + bytes as f64).min(rate);
        }
    }

    /// Takes `bytes` from the (capsule, scope) publish budget: a token
    /// bucket refilled at the runtime's publish rate, one second deep.
    fn take_publish_budget(&self, scope: &str, bytes: usize) -> bool {
        let rate = self.services.config.publish_rate as f64;
        let mut buckets = self
            .publish_buckets
            .lock()
            .unwrap_or_else(|e| e.into_inner());
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
    queue: Option<Arc<SubscriptionQueue>>,
    capsule: Arc<crate::host::shared::CapsuleShared>,
}

impl GuestSubscription {
    /// Takes the queue off the bus; the resource then answers `closed`.
    fn release(&mut self) {
        if let Some(queue) = self.queue.take() {
            self.capsule.release_subscription(&queue);
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

fn case_name(code: &ErrorCode) -> String {
    match code {
        ErrorCode::CapabilityDenied => "capability-denied".into(),
        ErrorCode::InvalidInput => "invalid-input".into(),
        ErrorCode::Closed => "closed".into(),
        ErrorCode::RateLimited => "rate-limited".into(),
        ErrorCode::Backpressure => "backpressure".into(),
        ErrorCode::Quota => "quota".into(),
        ErrorCode::Timeout => "timeout".into(),
        ErrorCode::Unknown(text) => format!("unknown({text})"),
    }
}

impl AuditCase for ErrorCode {
    fn case(&self) -> String {
        case_name(self)
    }

    fn is_denial(&self) -> bool {
        matches!(self, ErrorCode::CapabilityDenied)
    }
}

fn to_wit(attribution: &Attribution) -> PrincipalAttribution {
    match attribution {
        Attribution::System => PrincipalAttribution::System,
        Attribution::Verified(p) => PrincipalAttribution::Verified(p.clone()),
        Attribution::Claimed(p) => PrincipalAttribution::Claimed(p.clone()),
    }
}

impl HostState {
    /// In a run loop the context principal is the verified principal of the
    /// message delivered last (host ABI §1); other messages clear it.
    fn deliver(&mut self, take: Take) -> Result<IpcEnvelope, ErrorCode> {
        if self.run_loop {
            if let Take::Message(delivery) = &take {
                let principal = match &delivery.message.attribution {
                    Attribution::Verified(p) => Some(Arc::from(p.as_str())),
                    _ => None,
                };
                if principal.as_deref() != self.call.principal.as_deref() {
                    self.stdio.set_principal(principal.as_ref());
                    self.call.principal = principal;
                }
                // What the loop publishes next is one deeper than this
                // message, and get-caller describes it.
                let message = &delivery.message;
                self.call.depth = message.depth;
                self.call.source_id = message.source_id.clone();
                self.call.timestamp_ms = message.timestamp_ms;
            }
        }
        envelope(take)
    }
}

fn envelope(take: Take) -> Result<IpcEnvelope, ErrorCode> {
    match take {
        Take::Message(delivery) => {
            let m = &delivery.message;
            Ok(IpcEnvelope {
                messages: vec![IpcMessage {
                    topic: m.topic.clone(),
                    payload: m.payload.clone(),
                    source_id: m.source_id.to_string(),
                    principal: to_wit(&m.attribution),
                }],
                dropped: delivery.dropped,
                lagged: delivery.lagged,
            })
        }
        Take::Empty { dropped, lagged } => Ok(IpcEnvelope {
            messages: Vec::new(),
            dropped,
            lagged,
        }),
        Take::Closed => Err(ErrorCode::Closed),
    }
}

impl HostState {
    /// Checks in the order of host ABI §2.5, then publishes.
    fn guest_publish(
        &mut self,
        topic_text: &str,
        payload: &str,
        attribution: Attribution,
    ) -> Result<(), ErrorCode> {
        if self.call.token.is_cancelled() {
            return Err(ErrorCode::Closed);
        }
        topic::validate_topic(topic_text).map_err(|_| ErrorCode::InvalidInput)?;
        let manifest = &self.capsule.manifest;
        let granted = manifest
            .publish
            .iter()
            .any(|grant| topic::matches(&grant.pattern, topic_text));
        if !granted || topic_text.starts_with(RESERVED_PREFIX) {
            return Err(ErrorCode::CapabilityDenied);
        }
        // The topic was checked above.
        crate::bus::validate_payload(payload).map_err(|_| ErrorCode::InvalidInput)?;
        let scope = self.data_scope().to_string();
        if !self.capsule.take_publish_budget(&scope, payload.len()) {
            return Err(ErrorCode::RateLimited);
        }
        // A publish refused after this point gives its bytes back.
        let refund = |e: ErrorCode| {
            self.capsule.refund_publish_budget(&scope, payload.len());
            e
        };
        let depth = self.call.depth + 1;
        if depth > MAX_DEPTH {
            return Err(refund(ErrorCode::Quota));
        }
        let Some(peers) = self.capsule.services.peers() else {
            return Err(refund(ErrorCode::Closed));
        };
        if peers.pending_for(&self.capsule.id) >= MAX_PENDING_PER_SOURCE {
            return Err(refund(ErrorCode::Backpressure));
        }
        peers
            .publish(Publish {
                topic: topic_text,
                payload,
                source_id: self.capsule.source_id.clone(),
                attribution,
                depth,
                timestamp_ms: crate::host::sys::wall_clock_ms(),
            })
            .map(drop)
            .map_err(|e| {
                refund(match e.code() {
                    crate::error::Code::Closed => ErrorCode::Closed,
                    _ => ErrorCode::InvalidInput,
                })
            })
    }

    /// Which principals' messages a subscription made now receives (§8.4).
    fn subscription_filter(&self) -> PrincipalFilter {
        match (&self.call.principal, &self.capsule.owner) {
            (Some(p), Some(owner)) if p == owner => PrincipalFilter::OwnerAndSystem(p.to_string()),
            (Some(p), _) if self.call.active && !self.run_loop => {
                PrincipalFilter::Only(p.to_string())
            }
            (_, Some(owner)) => PrincipalFilter::OwnerAndSystem(owner.to_string()),
            (_, None) => PrincipalFilter::All,
        }
    }

    fn queue_of(
        &self,
        this: &Resource<GuestSubscription>,
    ) -> Result<Arc<SubscriptionQueue>, ErrorCode> {
        if self.call.token.is_cancelled() {
            return Err(ErrorCode::Closed);
        }
        self.table
            .get(this)
            .ok()
            .and_then(|s| s.queue.clone())
            .ok_or(ErrorCode::Closed)
    }

    /// Closes every subscription the current call made (end of a pooled
    /// call, cancel, unload). The guest's resources stay, answering `closed`.
    pub(crate) fn close_call_subscriptions(&mut self) {
        for rep in std::mem::take(&mut self.open_subscriptions) {
            let resource = Resource::<GuestSubscription>::new_borrow(rep);
            if let Ok(subscription) = self.table.get_mut(&resource) {
                subscription.release();
            }
        }
    }
}

impl host::HostSubscription for HostState {
    fn poll(&mut self, this: Resource<GuestSubscription>) -> Result<IpcEnvelope, ErrorCode> {
        self.audited("ipc.subscription.poll", None, 0, |state| {
            let take = state.queue_of(&this)?.try_take();
            state.deliver(take)
        })
    }

    fn recv(
        &mut self,
        this: Resource<GuestSubscription>,
        timeout_ms: u64,
    ) -> Result<IpcEnvelope, ErrorCode> {
        let result = self.audited("ipc.subscription.recv", None, 0, |state| {
            let queue = state.queue_of(&this)?;
            if timeout_ms == 0 {
                return state.deliver(queue.try_take());
            }
            let wait = Duration::from_millis(timeout_ms.min(MAX_RECV_MS));
            let until = (Instant::now() + wait).min(state.call.deadline);
            let token = state.call.token.clone();
            crate::wait::wait_for(&[&*queue], &token, until, || queue.is_ready());
            if token.is_cancelled() {
                return Err(ErrorCode::Closed);
            }
            state.deliver(queue.try_take())
        });
        self.note_waited();
        result
    }

    fn subscribe_readiness(&mut self, this: Resource<GuestSubscription>) -> Resource<Pollable> {
        let source: Arc<dyn crate::signal::Readiness> =
            match self.table.get(&this).ok().and_then(|s| s.queue.clone()) {
                Some(queue) => queue,
                None => Arc::new(super::io::AlwaysReady),
            };
        self.push_pollable(source)
    }

    fn drop(&mut self, this: Resource<GuestSubscription>) -> wasmtime::Result<()> {
        let rep = this.rep();
        // Dropping it releases its queue.
        drop(self.table.delete(this)?);
        self.open_subscriptions.retain(|r| *r != rep);
        Ok(())
    }
}

impl host::Host for HostState {
    fn publish(&mut self, topic: String, payload: String) -> Result<(), ErrorCode> {
        self.audited("ipc.publish", Some(&topic), payload.len() as u64, |state| {
            let attribution = match state.data_scope_principal() {
                Some(p) => Attribution::Verified(p.to_string()),
                None => Attribution::System,
            };
            state.guest_publish(&topic, &payload, attribution)
        })
    }

    fn publish_as(
        &mut self,
        topic: String,
        payload: String,
        principal: String,
    ) -> Result<(), ErrorCode> {
        self.audited(
            "ipc.publish-as",
            Some(&topic),
            payload.len() as u64,
            |state| {
                if state.call.token.is_cancelled() {
                    return Err(ErrorCode::Closed);
                }
                if !state.capsule.manifest.capabilities.uplink {
                    return Err(ErrorCode::CapabilityDenied);
                }
                if principal.is_empty()
                    || principal.len() > 128
                    || principal.chars().any(char::is_control)
                {
                    return Err(ErrorCode::InvalidInput);
                }
                state.guest_publish(&topic, &payload, Attribution::Claimed(principal.clone()))
            },
        )
    }

    fn subscribe(
        &mut self,
        topic_pattern: String,
    ) -> Result<Resource<GuestSubscription>, ErrorCode> {
        self.audited("ipc.subscribe", Some(&topic_pattern), 0, |state| {
            if state.call.token.is_cancelled() {
                return Err(ErrorCode::Closed);
            }
            topic::validate_pattern(&topic_pattern).map_err(|_| ErrorCode::InvalidInput)?;
            // The request, read as a topic with literal `*`, must match a grant.
            let covered = state
                .capsule
                .manifest
                .subscribe
                .iter()
                .any(|grant| topic::matches(&grant.pattern, &topic_pattern));
            if !covered {
                return Err(ErrorCode::CapabilityDenied);
            }
            let filter = state.subscription_filter();
            let queue = state.capsule.claim_subscription(&topic_pattern, filter)?;
            let resource = state
                .table
                .push(GuestSubscription {
                    queue: Some(queue),
                    capsule: state.capsule.clone(),
                })
                .map_err(|_| ErrorCode::Quota)?;
            state.open_subscriptions.push(resource.rep());
            Ok(resource)
        })
    }

    fn get_interceptor_bindings(&mut self) -> Result<Vec<InterceptorBinding>, ErrorCode> {
        self.audited("ipc.get-interceptor-bindings", None, 0, |state| {
            if state.call.token.is_cancelled() {
                return Err(ErrorCode::Closed);
            }
            Ok(state
                .capsule
                .manifest
                .subscribe
                .iter()
                .filter_map(|g| g.handler.as_ref().map(|h| (g, h)))
                .zip(0u64..)
                .map(|((grant, handler), handle_id)| InterceptorBinding {
                    handle_id,
                    action: handler.clone(),
                    topic: grant.pattern.clone(),
                })
                .collect())
        })
    }
}
