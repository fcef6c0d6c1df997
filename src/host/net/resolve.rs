//! Host validation and name resolution: the one place a guest's host
//! string becomes addresses. Callers vet the result with the airlock and
//! connect only to what they vetted; nothing here resolves twice.

use super::super::HostState;
use super::bindings::astrid::net::host::ErrorCode;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

/// Longest a name lookup may take.
const LOOKUP_TIMEOUT: Duration = Duration::from_secs(10);

/// Host strings (host ABI §2.6): non-empty, at most 255 bytes, no NUL,
/// IPv6 literals without brackets.
pub(crate) fn validate_host(host: &str) -> Result<(), ErrorCode> {
    if host.is_empty() || host.len() > 255 || host.contains('\0') || host.starts_with('[') {
        return Err(ErrorCode::NameUnresolvable);
    }
    Ok(())
}

pub(crate) enum ResolveError {
    Cancelled,
    Timeout,
    NoSuchName,
}

impl From<ResolveError> for ErrorCode {
    fn from(e: ResolveError) -> Self {
        match e {
            ResolveError::Cancelled => ErrorCode::Closed,
            ResolveError::Timeout => ErrorCode::Timeout,
            ResolveError::NoSuchName => ErrorCode::NameUnresolvable,
        }
    }
}

/// Addresses of `host` (an IP literal is its own answer), with `port`.
/// Races the call's cancel token and deadline.
pub(crate) fn resolve(
    state: &HostState,
    host: &str,
    port: u16,
) -> Result<Vec<SocketAddr>, ResolveError> {
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(vec![SocketAddr::new(ip, port)]);
    }
    let token = &state.call.token;
    let deadline = state.call.deadline.min(Instant::now() + LOOKUP_TIMEOUT);
    let name = host.trim_end_matches('.').to_string();
    let lookup = async move {
        tokio::net::lookup_host((name.as_str(), port))
            .await
            .map(|addrs| addrs.collect::<Vec<_>>())
    };
    match crate::wait::run_on(&state.capsule.runtime.handle, lookup, token, deadline) {
        Some(Ok(addrs)) if !addrs.is_empty() => Ok(addrs),
        Some(_) => Err(ResolveError::NoSuchName),
        None if token.is_cancelled() => Err(ResolveError::Cancelled),
        None => Err(ResolveError::Timeout),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_strings() {
        assert!(validate_host("example.com").is_ok());
        assert!(validate_host("::1").is_ok());
        for bad in ["", "[::1]", "a\0b", &"a".repeat(256)] {
            assert!(validate_host(bad).is_err(), "{bad:?}");
        }
    }
}
