//! Interceptor dispatch (host ABI §3, §7.4, §8.6): every bus message is
//! matched against the `[subscribe]` handlers of the loaded capsules, then
//! run as one call, as concurrent calls (all priorities equal), or as one
//! sequential chain (`continue` passes a new payload on, `final` and `deny`
//! stop it). Invocations for one (capsule, principal) run in FIFO order on
//! a lane (64 pending at most); a failing interceptor is logged, audited
//! and skipped.

pub use crate::bus::MAX_PENDING_PER_SOURCE;
use crate::bus::{Attribution, Message, PrincipalFilter, Publish, MAX_FAN_OUT};
use crate::capsule::{CallResult, CapsuleInner, Invocation, Platform};
use crate::error::{Code, Result};
use crate::policy::topic;
use crate::services::{AuditEvent, LogLevel, Outcome, Peers, Services};
use crate::signal::MutexExt;
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// Invocations one (capsule, principal) lane holds before refusing more.
pub const LANE_CAPACITY: usize = 64;

/// One matching handler.
pub(crate) struct Target {
    capsule: Arc<CapsuleInner>,
    action: String,
    priority: u32,
}

/// The handlers a message reaches, in dispatch order.
pub(crate) struct Plan {
    targets: Vec<Target>,
}

impl Plan {
    pub(crate) fn len(&self) -> usize {
        self.targets.len()
    }
}

type Job = Box<dyn FnOnce() + Send>;

#[derive(Default)]
struct Lane {
    jobs: VecDeque<Job>,
    running: bool,
}

type LaneKey = (String, Option<String>);

/// Lanes and pending counts of one runtime.
pub(crate) struct Dispatcher {
    platform: Arc<Platform>,
    lanes: Mutex<HashMap<LaneKey, Lane>>,
    /// Invocations queued or running, by the source id that triggered them.
    pending: Mutex<HashMap<Arc<str>, usize>>,
}

impl Dispatcher {
    pub(crate) fn new(platform: Arc<Platform>) -> Dispatcher {
        Dispatcher {
            platform,
            lanes: Mutex::default(),
            pending: Mutex::default(),
        }
    }

    fn services(&self) -> &Services {
        &self.platform.services
    }

    /// Publishes a message already checked with `bus::validate_message` and
    /// starts the interceptors it reaches (they come first in the fan-out
    /// budget, host ABI §8.6). Returns the stamped message once it is queued.
    pub(crate) fn publish_valid(self: &Arc<Self>, publish: Publish<'_>) -> Result<Arc<Message>> {
        let plan = plan(
            &self.platform.live_capsules(),
            publish.topic,
            &publish.attribution,
        );
        let budget = MAX_FAN_OUT - plan.len();
        let message = self.services().bus.publish_valid(publish, budget)?;
        self.dispatch(plan, message.clone());
        Ok(message)
    }

    /// Drops every queued invocation (runtime shutdown): the jobs hold the
    /// runtime, so leaving them would keep it alive.
    pub(crate) fn close(&self) {
        let lanes = std::mem::take(&mut *self.lanes.locked());
        drop(lanes);
        self.pending.locked().clear();
    }

    /// Invocations triggered by `source_id` that have not finished.
    pub(crate) fn pending_for(&self, source_id: &str) -> usize {
        self.pending.locked().get(source_id).copied().unwrap_or(0)
    }

    fn add_pending(&self, source_id: &Arc<str>, delta: isize) {
        let mut pending = self.pending.locked();
        let count = pending.entry(source_id.clone()).or_insert(0);
        *count = count.saturating_add_signed(delta);
        if *count == 0 {
            pending.remove(source_id);
        }
    }
}

/// The handlers of `capsules` that `topic` reaches, sorted by (priority,
/// capsule id, action) and capped at the fan-out limit. Run-loop capsules
/// handle their own subscriptions and are skipped.
pub(crate) fn plan(
    capsules: &[Arc<CapsuleInner>],
    topic_text: &str,
    attribution: &Attribution,
) -> Plan {
    let mut targets = Vec::new();
    for capsule in capsules {
        if !capsule.serves_interceptors() {
            continue;
        }
        // The same principal rule as subscriptions (host ABI §8.4): a
        // capsule with an owner handles that owner's messages and system ones.
        if let Some(owner) = &capsule.shared.owner {
            if !PrincipalFilter::OwnerAndSystem(owner.to_string()).admits(attribution) {
                continue;
            }
        }
        for grant in &capsule.shared.manifest.subscribe {
            let Some(handler) = &grant.handler else {
                continue;
            };
            if topic::matches(&grant.pattern, topic_text) {
                targets.push(Target {
                    capsule: capsule.clone(),
                    action: handler.clone(),
                    priority: grant.priority,
                });
            }
        }
    }
    targets.sort_by(|a, b| {
        (a.priority, &a.capsule.shared.id, &a.action).cmp(&(
            b.priority,
            &b.capsule.shared.id,
            &b.action,
        ))
    });
    targets.truncate(MAX_FAN_OUT);
    Plan { targets }
}

impl Dispatcher {
    /// Starts the invocations of `plan` for `message` and returns at once.
    pub(crate) fn dispatch(self: &Arc<Self>, plan: Plan, message: Arc<Message>) {
        let targets = plan.targets;
        if targets.is_empty() {
            return;
        }
        let principal = match &message.attribution {
            Attribution::Verified(p) => Some(p.clone()),
            _ => None,
        };
        let all_equal = targets.iter().all(|t| t.priority == targets[0].priority);
        if targets.len() == 1 || all_equal {
            for target in targets {
                let message = message.clone();
                let dispatcher = self.clone();
                let capsule = target.capsule.clone();
                self.submit(&capsule, principal.clone(), &message.clone(), move || {
                    dispatcher.run_interceptor(&target, &message, message.payload.as_bytes());
                });
            }
            return;
        }
        // Distinct priorities: one chain. Each step runs on its own
        // capsule's lane (FIFO and the 64 cap hold for every step) and
        // queues the next one when it is done.
        let payload = message.payload.clone().into_bytes();
        self.run_chain(targets.into(), message, payload, principal);
    }

    /// Queues the first step of `steps`; that step queues the rest.
    fn run_chain(
        self: &Arc<Self>,
        mut steps: std::collections::VecDeque<Target>,
        message: Arc<Message>,
        payload: Vec<u8>,
        principal: Option<String>,
    ) {
        let Some(step) = steps.pop_front() else {
            return;
        };
        let capsule = step.capsule.clone();
        let dispatcher = self.clone();
        let queued = message.clone();
        self.submit(&capsule, principal.clone(), &queued, move || {
            let mut payload = payload;
            // A failed step is skipped (already logged and audited).
            if let Some(result) = dispatcher.run_interceptor(&step, &message, &payload) {
                match result.action.as_str() {
                    "continue" => {
                        if let Some(data) = result.data {
                            payload = data.into_bytes();
                        }
                    }
                    "final" | "deny" | "abort" => return,
                    _ => {}
                }
            }
            dispatcher.run_chain(steps, message, payload, principal);
        });
    }

    /// Queues a job on a (capsule, principal) lane and makes sure a worker
    /// drains it.
    fn submit(
        self: &Arc<Self>,
        capsule: &Arc<CapsuleInner>,
        principal: Option<String>,
        message: &Arc<Message>,
        job: impl FnOnce() + Send + 'static,
    ) {
        let key = (capsule.shared.id.clone(), principal);
        let source = message.source_id.clone();
        let mut lanes = self.lanes.locked();
        let lane = lanes.entry(key.clone()).or_default();
        if lane.jobs.len() >= LANE_CAPACITY {
            drop(lanes);
            self.note_dropped_invocation(capsule, message);
            return;
        }
        self.add_pending(&source, 1);
        let dispatcher = Arc::downgrade(self);
        lane.jobs.push_back(Box::new(move || {
            // A panic in a host function must not stall the lane or leak
            // the publisher's pending count.
            let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(job));
            if let Some(dispatcher) = dispatcher.upgrade() {
                dispatcher.add_pending(&source, -1);
            }
        }));
        if lane.running {
            return;
        }
        lane.running = true;
        drop(lanes);
        let dispatcher = self.clone();
        self.services()
            .handle
            .spawn_blocking(move || dispatcher.drain_lane(key));
    }

    fn drain_lane(&self, key: LaneKey) {
        loop {
            let job = {
                let mut lanes = self.lanes.locked();
                let Some(lane) = lanes.get_mut(&key) else {
                    return;
                };
                match lane.jobs.pop_front() {
                    Some(job) => job,
                    None => {
                        lanes.remove(&key);
                        return;
                    }
                }
            };
            job();
        }
    }

    /// Calls one handler; `None` when the call failed (logged and audited).
    fn run_interceptor(
        &self,
        target: &Target,
        message: &Message,
        payload: &[u8],
    ) -> Option<CallResult> {
        let capsule = &target.capsule;
        let principal = match &message.attribution {
            Attribution::Verified(p) => Some(Arc::from(p.as_str())),
            _ => None,
        };
        let started = self.services().has_audit_sink().then(Instant::now);
        let outcome = capsule.invoke(
            &target.action,
            payload,
            Invocation {
                control: None,
                principal,
                overlay: None,
                source_id: Some(message.source_id.clone()),
                timestamp_ms: Some(message.timestamp_ms),
                depth: message.depth,
            },
        );
        if matches!(&outcome, Err(e) if e.code() == Code::Closed) {
            // Unloaded meanwhile: nothing is reported for a capsule that is gone.
            return None;
        }
        let call_id = match &outcome {
            Ok((_, id)) => *id,
            Err(e) => e.call_id(),
        };
        let _serving = crate::handoff::serve_call(call_id);
        if let Err(e) = &outcome {
            let text = e.to_string();
            capsule.shared.log(
                LogLevel::Warn,
                message.attribution.principal(),
                &format!(
                    "interceptor `{}` for `{}` failed and was skipped: {text}",
                    target.action, message.topic
                ),
            );
        }
        if let Some(started) = started {
            let (outcome, reason) = answer_outcome(&outcome);
            self.services().emit_audit(AuditEvent {
                capsule: capsule.shared.name.to_string(),
                capsule_id: capsule.shared.id.clone(),
                principal: attribution_text(&message.attribution),
                call: format!("guest.{}", target.action),
                target: Some(message.topic.clone()),
                bytes: payload.len() as u64,
                outcome,
                reason,
                elapsed_us: u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX),
                call_id,
            });
        }
        outcome.ok().map(|(result, _)| result)
    }

    fn note_dropped_invocation(&self, capsule: &CapsuleInner, message: &Message) {
        capsule.shared.usage.dispatch_dropped();
        capsule.shared.log(
            LogLevel::Warn,
            message.attribution.principal(),
            &format!(
                "more than {LANE_CAPACITY} invocations pending; one for `{}` was dropped",
                message.topic
            ),
        );
        if !self.services().has_audit_sink() {
            return;
        }
        self.services().emit_audit(AuditEvent {
            capsule: capsule.shared.name.to_string(),
            capsule_id: capsule.shared.id.clone(),
            principal: attribution_text(&message.attribution),
            call: "ipc.dispatch".into(),
            target: Some(message.topic.clone()),
            bytes: message.payload.len() as u64,
            outcome: Outcome::Failed,
            reason: Some(format!(
                "more than {LANE_CAPACITY} invocations pending for this capsule and principal"
            )),
            elapsed_us: 0,
            call_id: 0,
        });
    }
}

/// What a bus-dispatched handler answered, as its audit event says it:
/// `continue` and `final` as such, `deny` with its data as the reason, any
/// other action allowed with the action named, and a failure with its cause
/// (`timeout: …`, `guest trap: …`, `out of fuel: …`).
fn answer_outcome(outcome: &Result<(CallResult, u64)>) -> (Outcome, Option<String>) {
    match outcome {
        Ok((answer, _)) => match answer.action.as_str() {
            "continue" => (Outcome::Continue, None),
            "final" => (Outcome::Final, None),
            "deny" => (
                Outcome::Denied,
                Some(answer.data.clone().unwrap_or_else(|| "deny".into())),
            ),
            other => (Outcome::Allowed, Some(format!("answered `{other}`"))),
        },
        Err(e) => (Outcome::Failed, Some(e.to_string())),
    }
}

/// A guest's publishes reach the other capsules through the dispatcher.
impl Peers for Dispatcher {
    fn publish(self: Arc<Self>, publish: Publish<'_>) -> Result<Arc<Message>> {
        self.publish_valid(publish)
    }

    fn pending_for(&self, source_id: &str) -> usize {
        Dispatcher::pending_for(self, source_id)
    }

    fn capsule_holds_capability(&self, id: &str, capability: &str) -> Option<bool> {
        self.platform.capsule_holds_capability(id, capability)
    }
}

/// How audit events spell an attribution.
pub fn attribution_text(attribution: &Attribution) -> String {
    match attribution {
        Attribution::System => "system".into(),
        Attribution::Verified(p) => p.clone(),
        Attribution::Claimed(p) => format!("claimed({p})"),
    }
}
