//! `astrid:sys@1.0.0` (host ABI §2.2): config, caller context, logging,
//! clocks, sleep, randomness and capability queries. Not gated; audited.

use crate::host::audit::audit_cases;
use crate::host::audit::Audited;
use crate::host::call::CallContext;
use crate::host::shared::CapsuleShared;
use crate::host::view::{host_view, HostView};
use crate::services::LogLevel;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use wasmtime::component::Linker;

mod bindings {
    wasmtime::component::bindgen!({
        inline: "package astrid-runtime:sys; world imports { import astrid:sys/host@1.0.0; }",
        path: ["wit/astrid-sys@1.0.0"],
        world: "imports",
    });
}

use bindings::astrid::sys::host::{
    self, CallerContext, CapabilityCheckRequest, CapabilityCheckResponse, ErrorCode,
    LogLevel as WitLevel,
};

pub const MAX_RANDOM_BYTES: u64 = 4096;
pub const MAX_SLEEP_NS: u64 = 60_000_000_000;
pub const MAX_LOG_BYTES: usize = 64 * 1024;

/// What `astrid:sys` sees of a store: the capsule, the call, and whether
/// the store runs the capsule's run loop.
pub(crate) struct SysView<'a> {
    pub(crate) capsule: &'a Arc<CapsuleShared>,
    pub(crate) call: &'a CallContext,
    pub(crate) run_loop: bool,
}

host_view!(SysView, SysData);

pub(crate) fn add_to_linker<T: 'static>(
    linker: &mut Linker<T>,
    view: fn(&mut T) -> SysView<'_>,
) -> wasmtime::Result<()> {
    host::add_to_linker::<T, SysData>(linker, view)
}

audit_cases! {
    ErrorCode {
        ErrorCode::CapabilityDenied => "capability-denied",
        ErrorCode::ConfigKeyReserved => "config-key-reserved",
        ErrorCode::TooLarge => "too-large",
        ErrorCode::RegistryUnavailable => "registry-unavailable",
        ErrorCode::Cancelled => "cancelled",
    }
    unknown: ErrorCode::Unknown,
    denials: [ErrorCode::CapabilityDenied]
}

/// Milliseconds since the epoch as ISO 8601 UTC (`2026-11-25T08:53:12.345Z`).
pub fn iso8601_utc(ms: u64) -> String {
    let secs = ms / 1000;
    let days = secs / 86_400;
    let rem = secs % 86_400;
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        ms % 1000
    )
}

pub fn wall_clock_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

impl host::Host for SysView<'_> {
    fn get_config(&mut self, key: String) -> Result<Option<String>, ErrorCode> {
        self.audited("sys.get-config", Some(&key), key.len() as u64, |state| {
            if key.starts_with("ASTRID_") {
                return Err(ErrorCode::ConfigKeyReserved);
            }
            state
                .capsule
                .config_value(
                    &key,
                    state.call.overlay.as_deref(),
                    state.call.principal.as_deref(),
                )
                .map_err(|()| ErrorCode::Unknown("secret provider failed".into()))
        })
    }

    fn get_caller(&mut self) -> Result<CallerContext, ErrorCode> {
        self.audited("sys.get-caller", None, 0, |state| {
            Ok(if state.call.active {
                CallerContext {
                    principal: state.call.principal.as_deref().map(str::to_string),
                    source_id: state.call.source_id.to_string(),
                    timestamp: iso8601_utc(state.call.timestamp_ms),
                }
            } else {
                CallerContext {
                    principal: None,
                    source_id: String::new(),
                    timestamp: iso8601_utc(wall_clock_ms()),
                }
            })
        })
    }

    fn log(&mut self, level: WitLevel, message: String) {
        let level = match level {
            WitLevel::Trace => LogLevel::Trace,
            WitLevel::Debug => LogLevel::Debug,
            WitLevel::Info => LogLevel::Info,
            WitLevel::Warn => LogLevel::Warn,
            WitLevel::Error => LogLevel::Error,
        };
        let Ok(()) = self.audited("sys.log", None, message.len() as u64, |state| {
            let principal = state.call.principal.as_deref();
            if message.len() > MAX_LOG_BYTES {
                let mut cut = MAX_LOG_BYTES;
                while !message.is_char_boundary(cut) {
                    cut -= 1;
                }
                let text = format!(
                    "{} [truncated {} bytes]",
                    &message[..cut],
                    message.len() - cut
                );
                state.capsule.log(level, principal, &text);
            } else {
                state.capsule.log(level, principal, &message);
            }
            Ok::<_, Infallible>(())
        });
    }

    fn signal_ready(&mut self) {
        // Marks a run loop ready; from an interceptor call it changes nothing.
        let Ok(()) = self.audited("sys.signal-ready", None, 0, |state| {
            if state.run_loop {
                if let Some(run) = &state.capsule.run_loop {
                    run.mark_ready();
                }
            }
            Ok::<_, Infallible>(())
        });
    }

    fn clock_ms(&mut self) -> u64 {
        let Ok(now) = self.audited("sys.clock-ms", None, 0, |_| {
            Ok::<_, Infallible>(wall_clock_ms())
        });
        now
    }

    fn clock_monotonic_ns(&mut self) -> u64 {
        let Ok(ns) = self.audited("sys.clock-monotonic-ns", None, 0, |state| {
            let elapsed = state.capsule.services.monotonic_origin.elapsed();
            Ok::<_, Infallible>(u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX))
        });
        ns
    }

    fn sleep_ns(&mut self, duration_ns: u64) -> Result<(), ErrorCode> {
        let result = self.audited("sys.sleep-ns", None, 0, |state| {
            if duration_ns > MAX_SLEEP_NS {
                return Err(ErrorCode::TooLarge);
            }
            if state.call.token.is_cancelled() {
                return Err(ErrorCode::Cancelled);
            }
            let wanted = Instant::now() + Duration::from_nanos(duration_ns);
            // The call's deadline (instantiation sets one too) ends the wait
            // early; the guest then traps with "timeout" at its next epoch check.
            let until = wanted.min(state.call.deadline);
            if state.call.token.wait_until(until) || until < wanted {
                Err(ErrorCode::Cancelled)
            } else {
                Ok(())
            }
        });
        self.ctx().note_waited();
        result
    }

    fn random_bytes(&mut self, length: u64) -> Result<Vec<u8>, ErrorCode> {
        self.audited("sys.random-bytes", None, length, |_| {
            if length > MAX_RANDOM_BYTES {
                return Err(ErrorCode::TooLarge);
            }
            let mut buf = vec![0u8; length as usize];
            getrandom::fill(&mut buf)
                .map(|()| buf)
                .map_err(|_| ErrorCode::Unknown("entropy source failed".into()))
        })
    }

    fn check_capsule_capability(
        &mut self,
        request: CapabilityCheckRequest,
    ) -> Result<CapabilityCheckResponse, ErrorCode> {
        let target = Some(request.source_uuid.as_str());
        self.audited("sys.check-capsule-capability", target, 0, |state| {
            state
                .capsule
                .services
                .peers()
                .and_then(|peers| {
                    peers.capsule_holds_capability(&request.source_uuid, &request.capability)
                })
                .map(|allowed| CapabilityCheckResponse { allowed })
                .ok_or(ErrorCode::RegistryUnavailable)
        })
    }

    fn enumerate_capabilities(&mut self) -> Vec<String> {
        let Ok(names) = self.audited("sys.enumerate-capabilities", None, 0, |state| {
            Ok::<_, Infallible>(state.capsule.capability_names.clone())
        });
        names
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iso8601_dates() {
        assert_eq!(iso8601_utc(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(iso8601_utc(951_782_400_000), "2000-02-29T00:00:00.000Z");
        assert_eq!(iso8601_utc(1_795_600_392_345), "2026-11-25T09:53:12.345Z");
    }
}
