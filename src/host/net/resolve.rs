//! Name resolution: the one place a canonical host becomes addresses.
//! Callers vet the result with the airlock and connect only to what they
//! vetted; nothing here resolves twice.

use super::bindings::astrid::net::host::ErrorCode;
use crate::host::view::CallCtx;
use crate::policy::net::{canonical_host, NetHost};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// Longest a name lookup may take.
const LOOKUP_TIMEOUT: Duration = Duration::from_secs(10);

/// A guest's host string (host ABI §2.6) in its canonical spelling, which
/// the manifest, the gate, resolution and the audit all use; a string no
/// reading accepts is `name-unresolvable`.
pub(crate) fn canonical(host: &str) -> Result<NetHost, ErrorCode> {
    canonical_host(host).map_err(|_| ErrorCode::NameUnresolvable)
}

/// What a vetted name lookup found: the canonical name it resolved and
/// the addresses the airlock let through (in order, without repeats).
pub(crate) struct Lookup {
    pub name: NetHost,
    pub addrs: Vec<std::net::IpAddr>,
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

/// Addresses of `host` (an IP is its own answer), with `port`. Races the
/// call's cancel token and deadline.
pub(crate) fn resolve(
    state: CallCtx<'_>,
    host: &NetHost,
    port: u16,
) -> Result<Vec<SocketAddr>, ResolveError> {
    let name = match host {
        NetHost::Ip(ip) => return Ok(vec![SocketAddr::new(*ip, port)]),
        NetHost::Name(name) => name.clone(),
    };
    let token = &state.call.token;
    let deadline = state.call.deadline.min(Instant::now() + LOOKUP_TIMEOUT);
    let lookup = async move {
        tokio::net::lookup_host((name.as_str(), port))
            .await
            .map(|addrs| addrs.collect::<Vec<_>>())
    };
    match crate::wait::run_on(&state.capsule.services.handle, lookup, token, deadline) {
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
        assert_eq!(
            canonical("Example.COM.").unwrap(),
            NetHost::Name("example.com".into())
        );
        assert_eq!(canonical("[::1]").unwrap().to_string(), "::1");
        assert_eq!(canonical("0x7f.1").unwrap().to_string(), "127.0.0.1");
        for bad in ["", "a\0b", &"a".repeat(256), "fe80::1%lo", "1.2.3.09"] {
            assert!(
                matches!(canonical(bad), Err(ErrorCode::NameUnresolvable)),
                "{bad:?}"
            );
        }
    }
}
