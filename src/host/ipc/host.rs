//! The `astrid:ipc/host` functions and the `subscription` methods.

use super::bindings::{
    host, ErrorCode, InterceptorBinding, IpcEnvelope, IpcMessage, PrincipalAttribution, MAX_DEPTH,
    MAX_RECV_MS, RESERVED_PREFIX,
};
use super::shared::{GuestSubscription, SubscribeRefusal};
use super::shared::{IpcCall, IpcShared};
use crate::bus::{
    Attribution, PrincipalFilter, Publish, SubscriptionQueue, Take, MAX_PENDING_PER_SOURCE,
};
use crate::host::audit::audit_cases;
use crate::host::audit::Audited;
use crate::host::call::CallContext;
use crate::host::io::push_pollable;
use crate::host::io::Pollable;
use crate::host::shared::CapsuleShared;
use crate::host::view::{host_view, EndOfCall, HostView};
use crate::host::wasi::stdio::StdioLog;

use crate::policy::topic;
use std::sync::Arc;
use std::time::{Duration, Instant};
use wasmtime::component::{Linker, Resource, ResourceTable};

/// What `astrid:ipc` sees of a store: the capsule, the call (a run loop's
/// delivery sets its principal and origin, host ABI §1), the capsule's
/// subscriptions and publish budget, the subscriptions the call made, the
/// resource table, and the store's stdio (whose lines carry the principal).
pub(crate) struct IpcView<'a> {
    pub(crate) capsule: &'a Arc<CapsuleShared>,
    pub(crate) call: &'a mut CallContext,
    pub(crate) shared: &'a Arc<IpcShared>,
    pub(crate) ipc: &'a mut IpcCall,
    pub(crate) table: &'a mut ResourceTable,
    pub(crate) run_loop: bool,
    pub(crate) stdio: &'a StdioLog,
}

host_view!(IpcView, IpcData);

pub(crate) fn add_to_linker<T: 'static>(
    linker: &mut Linker<T>,
    view: fn(&mut T) -> IpcView<'_>,
) -> wasmtime::Result<()> {
    host::add_to_linker::<T, IpcData>(linker, view)
}

audit_cases! {
    ErrorCode {
        ErrorCode::CapabilityDenied => "capability-denied",
        ErrorCode::InvalidInput => "invalid-input",
        ErrorCode::Closed => "closed",
        ErrorCode::RateLimited => "rate-limited",
        ErrorCode::Backpressure => "backpressure",
        ErrorCode::Quota => "quota",
        ErrorCode::Timeout => "timeout",
    }
    unknown: ErrorCode::Unknown,
    denials: [ErrorCode::CapabilityDenied]
}

fn to_wit(attribution: &Attribution) -> PrincipalAttribution {
    match attribution {
        Attribution::System => PrincipalAttribution::System,
        Attribution::Verified(p) => PrincipalAttribution::Verified(p.clone()),
        Attribution::Claimed(p) => PrincipalAttribution::Claimed(p.clone()),
    }
}

impl IpcView<'_> {
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
                let call_id = self.capsule.services.reserve_call_ids(1);
                self.call.id = call_id;
                crate::handoff::switch_call(call_id);
                self.call.depth = message.depth;
                self.call.source_id = message.source_id.clone();
                self.call.timestamp_ms = message.timestamp_ms;
            }
        }
        let usage = &self.call.usage;
        match &take {
            Take::Message(delivery) => usage.delivered(1, delivery.dropped, delivery.lagged),
            Take::Empty { dropped, lagged } => usage.delivered(0, *dropped, *lagged),
            Take::Closed => {}
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

impl IpcView<'_> {
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
        let scope = self.ctx().data_scope().to_string();
        if !self.shared.take_publish_budget(&scope, payload.len()) {
            return Err(ErrorCode::RateLimited);
        }
        // A publish refused after this point gives its bytes back.
        let refund = |e: ErrorCode| {
            self.shared.refund_publish_budget(&scope, payload.len());
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
            .map(|_| self.call.usage.published())
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
}

/// Closes every subscription the current call made.
impl EndOfCall for IpcView<'_> {
    fn end_call(&mut self) {
        for rep in std::mem::take(&mut self.ipc.open_subscriptions) {
            let resource = Resource::<GuestSubscription>::new_borrow(rep);
            if let Ok(subscription) = self.table.get_mut(&resource) {
                subscription.release();
            }
        }
    }
}

impl host::HostSubscription for IpcView<'_> {
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
        self.ctx().note_waited();
        result
    }

    fn subscribe_readiness(&mut self, this: Resource<GuestSubscription>) -> Resource<Pollable> {
        let source: Arc<dyn crate::signal::Readiness> =
            match self.table.get(&this).ok().and_then(|s| s.queue.clone()) {
                Some(queue) => queue,
                None => Arc::new(crate::host::io::AlwaysReady),
            };
        push_pollable(self.table, source)
    }

    fn drop(&mut self, this: Resource<GuestSubscription>) -> wasmtime::Result<()> {
        let rep = this.rep();
        // Dropping it releases its queue.
        drop(self.table.delete(this)?);
        self.ipc.open_subscriptions.retain(|r| *r != rep);
        Ok(())
    }
}

impl host::Host for IpcView<'_> {
    fn publish(&mut self, topic: String, payload: String) -> Result<(), ErrorCode> {
        self.audited("ipc.publish", Some(&topic), payload.len() as u64, |state| {
            let attribution = match state.ctx().data_scope_principal() {
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
            let ipc = state.shared.clone();
            let queue = ipc
                .claim_subscription(&topic_pattern, filter)
                .map_err(|refusal| match refusal {
                    SubscribeRefusal::Closed => ErrorCode::Closed,
                    SubscribeRefusal::Quota => ErrorCode::Quota,
                    SubscribeRefusal::Invalid => ErrorCode::InvalidInput,
                })?;
            let resource = state
                .table
                .push(GuestSubscription {
                    queue: Some(queue),
                    ipc,
                })
                .map_err(|_| ErrorCode::Quota)?;
            state.ipc.open_subscriptions.push(resource.rep());
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
