//! One audit event per host call (host ABI §1): the wrappers every host
//! function runs its body in, and how a result becomes an outcome.

use super::view::{CallCtx, HostView};
use crate::services::{AuditEvent, Outcome};
use crate::usage::{interface_of, Channel};
use std::time::Instant;

/// The audit wrappers, for every interface's view. Each also counts the
/// host call in the store's usage (per interface: calls and time) and, for
/// `astrid:fs`, `astrid:net` and `astrid:http`, the bytes it moved.
pub(crate) trait Audited: HostView + Sized {
    /// Runs one host call and records its audit event; `bytes` is what the
    /// guest handed in.
    fn audited<T, E>(
        &mut self,
        call: &'static str,
        target: Option<&str>,
        bytes: u64,
        body: impl FnOnce(&mut Self) -> Result<T, E>,
    ) -> Result<T, E>
    where
        E: AuditCase,
    {
        let started = Instant::now();
        let result = body(self);
        self.ctx()
            .host_call_done(call, target, started, &result, bytes, |_| 0);
        result
    }

    /// [`audited`](Self::audited) for calls that move data: the event's
    /// `bytes` is the payload in plus what the result carries out.
    fn audited_io<T: Payload, E>(
        &mut self,
        call: &'static str,
        target: Option<&str>,
        bytes_in: u64,
        body: impl FnOnce(&mut Self) -> Result<T, E>,
    ) -> Result<T, E>
    where
        E: AuditCase,
    {
        let started = Instant::now();
        let result = body(self);
        self.ctx()
            .host_call_done(call, target, started, &result, bytes_in, |result| {
                result.as_ref().map_or(0, Payload::payload_len)
            });
        result
    }

    /// [`audited_io`](Self::audited_io) for calls whose target is known
    /// only once they ran (an HTTP exchange is audited with the hop it
    /// ended on): `body` fills the target slot; `bytes_out` counts what
    /// the result carries out.
    fn audited_late_target<T, E>(
        &mut self,
        call: &'static str,
        bytes_in: u64,
        body: impl FnOnce(&mut Self, &mut Option<String>) -> Result<T, E>,
        bytes_out: impl FnOnce(&Result<T, E>) -> u64,
    ) -> Result<T, E>
    where
        E: AuditCase,
    {
        let started = Instant::now();
        let mut target = None;
        let result = body(self, &mut target);
        self.ctx().host_call_done(
            call,
            target.as_deref(),
            started,
            &result,
            bytes_in,
            bytes_out,
        );
        result
    }

    /// Records the audit event of a call that cannot fail (one that hands
    /// out a stream or a pollable).
    fn audit_infallible(&mut self, call: &'static str) {
        let _: Result<(), std::convert::Infallible> = self.audited(call, None, 0, |_| Ok(()));
    }
}

impl<V: HostView> Audited for V {}

impl CallCtx<'_> {
    /// Counts a finished host call (interface, time, and the bytes of
    /// `astrid:fs`, `astrid:net` and `astrid:http` calls) and records its
    /// audit event when a sink is installed, outcome and reason taken from
    /// `result`. `bytes_out` runs only when someone needs it.
    pub(crate) fn host_call_done<T, E: AuditCase>(
        &self,
        call: &'static str,
        target: Option<&str>,
        started: Instant,
        result: &Result<T, E>,
        bytes_in: u64,
        bytes_out: impl FnOnce(&Result<T, E>) -> u64,
    ) {
        let sink = self.capsule.services.has_audit_sink();
        let interface = interface_of(call);
        let out = if sink || channel_of(interface).is_some() {
            bytes_out(result)
        } else {
            0
        };
        let elapsed = self.count_host_call(interface, started, result.is_ok(), bytes_in, out);
        if sink {
            let (outcome, reason) = outcome_of(result);
            self.audit(
                call,
                target,
                bytes_in + out,
                outcome,
                reason.as_deref(),
                elapsed,
            );
        }
    }

    /// Counts a host call of `interface` (its [`interface_of`] index) that
    /// began at `started` in the usage figures and returns how long it
    /// took. The bytes of a call that failed are not counted as moved: a
    /// refused write wrote nothing.
    pub(crate) fn count_host_call(
        &self,
        interface: usize,
        started: Instant,
        succeeded: bool,
        bytes_in: u64,
        bytes_out: u64,
    ) -> std::time::Duration {
        let elapsed = started.elapsed();
        self.call.usage.host_call(
            interface,
            u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX),
        );
        if let Some(channel) = channel_of(interface).filter(|_| succeeded) {
            self.capsule.usage.moved(channel, bytes_out, bytes_in);
        }
        elapsed
    }

    /// Records one audit event for a host call (a no-op without a sink).
    pub(crate) fn audit(
        &self,
        call: &'static str,
        target: Option<&str>,
        bytes: u64,
        outcome: Outcome,
        reason: Option<&str>,
        elapsed: std::time::Duration,
    ) {
        let runtime = &self.capsule.services;
        if !runtime.has_audit_sink() {
            return;
        }
        runtime.emit_audit(AuditEvent {
            capsule: self.capsule.name.to_string(),
            capsule_id: self.capsule.id.clone(),
            principal: self
                .call
                .principal
                .as_deref()
                .map_or_else(|| "system".to_string(), str::to_string),
            call: call.to_string(),
            target: target.map(str::to_string),
            bytes,
            outcome,
            reason: reason.map(str::to_string),
            elapsed_us: u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX),
            call_id: self.call.id,
        });
    }
}

/// The byte channel an interface's calls count in (its index in
/// [`INTERFACES`](super::usage::INTERFACES)).
fn channel_of(interface: usize) -> Option<Channel> {
    match interface {
        1 => Some(Channel::Fs),
        5 => Some(Channel::Net),
        6 => Some(Channel::Http),
        _ => None,
    }
}

/// Bytes a result carries back to the guest, for the audit event.
pub(crate) trait Payload {
    fn payload_len(&self) -> u64 {
        0
    }
}

impl Payload for () {}
impl Payload for bool {}
impl Payload for u64 {}
impl Payload for u32 {}
impl Payload for String {
    fn payload_len(&self) -> u64 {
        self.len() as u64
    }
}
impl Payload for Vec<u8> {
    fn payload_len(&self) -> u64 {
        self.len() as u64
    }
}
impl<T: Payload> Payload for Option<T> {
    fn payload_len(&self) -> u64 {
        self.as_ref().map_or(0, Payload::payload_len)
    }
}
impl Payload for Vec<String> {
    fn payload_len(&self) -> u64 {
        self.iter().map(|s| s.len() as u64).sum()
    }
}

/// A WIT error variant as the audit log names it: the one vocabulary every
/// interface's error speaks (the gated pipeline adds `GatedError` on top).
pub(crate) trait AuditCase {
    /// The case name as the WIT spells it (`capability-denied`, `unknown(text)`).
    fn case(&self) -> String;
    /// Whether it is a policy refusal (audited `denied` rather than `failed`).
    fn is_denial(&self) -> bool {
        false
    }
}

/// The audit outcome and reason of a host call's result.
pub(crate) fn outcome_of<T, E: AuditCase>(result: &Result<T, E>) -> (Outcome, Option<String>) {
    match result {
        Ok(_) => (Outcome::Allowed, None),
        Err(e) if e.is_denial() => (Outcome::Denied, Some(e.case())),
        Err(e) => (Outcome::Failed, Some(e.case())),
    }
}

/// Implements [`AuditCase`] for an interface's WIT error from its case
/// table: each case's pattern with its WIT name, the `unknown(text)`
/// catch-all if the variant has one, and the cases that are refusals.
macro_rules! audit_cases {
    (
        $ty:ty {
            $($case:pat => $name:literal,)+
        }
        $(unknown: $unknown:path,)?
        denials: [$($denial:pat),* $(,)?]
    ) => {
        impl $crate::host::audit::AuditCase for $ty {
            fn case(&self) -> String {
                match self {
                    $($case => $name.into(),)+
                    $($unknown(text) => format!("unknown({text})"),)?
                }
            }

            fn is_denial(&self) -> bool {
                false $(|| matches!(self, $denial))*
            }
        }
    };
}
pub(crate) use audit_cases;

/// Infallible host functions are always `allowed`.
impl AuditCase for std::convert::Infallible {
    fn case(&self) -> String {
        match *self {}
    }
}
