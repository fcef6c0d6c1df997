//! `astrid:sys@1.0.0` (host ABI §2.2): config, caller context, logging,
//! clocks, sleep, randomness and capability queries. Not gated; audited.

use super::HostState;
use crate::runtime::{LogLevel, Outcome};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use wasmtime::component::{HasSelf, Linker};

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

pub fn add_to_linker(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    host::add_to_linker::<HostState, HasSelf<HostState>>(linker, |state| state)
}

/// The WIT case name, as audit reasons spell it.
fn case_name(code: &ErrorCode) -> String {
    match code {
        ErrorCode::CapabilityDenied => "capability-denied".into(),
        ErrorCode::ConfigKeyReserved => "config-key-reserved".into(),
        ErrorCode::TooLarge => "too-large".into(),
        ErrorCode::RegistryUnavailable => "registry-unavailable".into(),
        ErrorCode::Cancelled => "cancelled".into(),
        ErrorCode::Unknown(text) => format!("unknown({text})"),
    }
}

fn outcome<T>(result: &Result<T, ErrorCode>) -> (Outcome, Option<String>) {
    match result {
        Ok(_) => (Outcome::Allowed, None),
        Err(code @ ErrorCode::CapabilityDenied) => (Outcome::Denied, Some(case_name(code))),
        Err(code) => (Outcome::Failed, Some(case_name(code))),
    }
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

impl host::Host for HostState {
    fn get_config(&mut self, key: String) -> Result<Option<String>, ErrorCode> {
        let started = Instant::now();
        let result = if key.starts_with("ASTRID_") {
            Err(ErrorCode::ConfigKeyReserved)
        } else {
            self.capsule
                .config_value(
                    &key,
                    self.call.overlay.as_deref(),
                    self.call.principal.as_deref(),
                )
                .map_err(|()| ErrorCode::Unknown("secret provider failed".into()))
        };
        let (out, reason) = outcome(&result);
        self.audit(
            "sys.get-config",
            Some(&key),
            key.len() as u64,
            out,
            reason.as_deref(),
            started,
        );
        result
    }

    fn get_caller(&mut self) -> Result<CallerContext, ErrorCode> {
        let started = Instant::now();
        let context = if self.call.active {
            CallerContext {
                principal: self.call.principal.as_deref().map(str::to_string),
                source_id: self.call.source_id.to_string(),
                timestamp: iso8601_utc(self.call.timestamp_ms),
            }
        } else {
            CallerContext {
                principal: None,
                source_id: String::new(),
                timestamp: iso8601_utc(wall_clock_ms()),
            }
        };
        self.audit("sys.get-caller", None, 0, Outcome::Allowed, None, started);
        Ok(context)
    }

    fn log(&mut self, level: WitLevel, message: String) {
        let started = Instant::now();
        let level = match level {
            WitLevel::Trace => LogLevel::Trace,
            WitLevel::Debug => LogLevel::Debug,
            WitLevel::Info => LogLevel::Info,
            WitLevel::Warn => LogLevel::Warn,
            WitLevel::Error => LogLevel::Error,
        };
        let bytes = message.len() as u64;
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
            self.capsule
                .log(level, self.call.principal.as_deref(), &text);
        } else {
            self.capsule
                .log(level, self.call.principal.as_deref(), &message);
        }
        self.audit("sys.log", None, bytes, Outcome::Allowed, None, started);
    }

    fn signal_ready(&mut self) {
        // Run loops arrive with the event bus; for an interceptor call the
        // contract makes this a no-op.
        let started = Instant::now();
        self.audit("sys.signal-ready", None, 0, Outcome::Allowed, None, started);
    }

    fn clock_ms(&mut self) -> u64 {
        let started = Instant::now();
        let now = wall_clock_ms();
        self.audit("sys.clock-ms", None, 0, Outcome::Allowed, None, started);
        now
    }

    fn clock_monotonic_ns(&mut self) -> u64 {
        let started = Instant::now();
        let elapsed = self.capsule.runtime.monotonic_origin.elapsed();
        self.audit(
            "sys.clock-monotonic-ns",
            None,
            0,
            Outcome::Allowed,
            None,
            started,
        );
        u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX)
    }

    fn sleep_ns(&mut self, duration_ns: u64) -> Result<(), ErrorCode> {
        let started = Instant::now();
        let result = if duration_ns > MAX_SLEEP_NS {
            Err(ErrorCode::TooLarge)
        } else if self.call.token.is_cancelled() {
            Err(ErrorCode::Cancelled)
        } else {
            let wanted = started + Duration::from_nanos(duration_ns);
            // The call's deadline ends the wait early; the guest then traps
            // with "timeout" at its next epoch check.
            // Instantiation sets a deadline too, so this bounds every wait.
            let until = wanted.min(self.call.deadline);
            if self.call.token.wait_until(until) || until < wanted {
                Err(ErrorCode::Cancelled)
            } else {
                Ok(())
            }
        };
        let (out, reason) = outcome(&result);
        self.audit("sys.sleep-ns", None, 0, out, reason.as_deref(), started);
        result
    }

    fn random_bytes(&mut self, length: u64) -> Result<Vec<u8>, ErrorCode> {
        let started = Instant::now();
        let result = if length > MAX_RANDOM_BYTES {
            Err(ErrorCode::TooLarge)
        } else {
            let mut buf = vec![0u8; length as usize];
            getrandom::fill(&mut buf)
                .map(|()| buf)
                .map_err(|_| ErrorCode::Unknown("entropy source failed".into()))
        };
        let (out, reason) = outcome(&result);
        self.audit(
            "sys.random-bytes",
            None,
            length,
            out,
            reason.as_deref(),
            started,
        );
        result
    }

    fn check_capsule_capability(
        &mut self,
        request: CapabilityCheckRequest,
    ) -> Result<CapabilityCheckResponse, ErrorCode> {
        let started = Instant::now();
        let result = self
            .capsule
            .runtime
            .capsule_holds_capability(&request.source_uuid, &request.capability)
            .map(|allowed| CapabilityCheckResponse { allowed })
            .ok_or(ErrorCode::RegistryUnavailable);
        let (out, reason) = outcome(&result);
        self.audit(
            "sys.check-capsule-capability",
            Some(&request.source_uuid),
            0,
            out,
            reason.as_deref(),
            started,
        );
        result
    }

    fn enumerate_capabilities(&mut self) -> Vec<String> {
        let started = Instant::now();
        let names = self.capsule.capability_names.clone();
        self.audit(
            "sys.enumerate-capabilities",
            None,
            0,
            Outcome::Allowed,
            None,
            started,
        );
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
