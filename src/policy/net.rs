//! Manifest network entries (host ABI §4): HTTP host entries (`net`) and
//! socket entries (`net_connect`, `net_bind`).

use std::net::IpAddr;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HostPattern {
    /// `*`: any host.
    Any,
    /// `*.example.com`: strict subdomains at any depth.
    Subdomains(String),
    /// An exact name (lowercase, no trailing dot) or IP literal.
    Exact(String),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PortPattern {
    Any,
    Exact(u16),
}

/// A parsed `net_connect` / `net_bind` entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SocketGrant {
    /// `unix:*` (only meaningful in `net_bind`).
    Unix,
    Inet {
        host: HostPattern,
        port: PortPattern,
    },
}

fn valid_hostname(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        })
}

fn normalise_name(name: &str) -> String {
    name.trim_end_matches('.').to_ascii_lowercase()
}

fn parse_host(host: &str) -> Result<HostPattern, String> {
    if host == "*" {
        return Ok(HostPattern::Any);
    }
    if let Some(inner) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        return match inner.parse::<std::net::Ipv6Addr>() {
            Ok(ip) => Ok(HostPattern::Exact(ip.to_string())),
            Err(_) => Err(format!("`{host}` is not a valid bracketed IPv6 address")),
        };
    }
    if let Ok(ip) = host.parse::<IpAddr>() {
        if ip.is_ipv6() {
            return Err(format!("IPv6 address `{host}` must be bracketed"));
        }
        return Ok(HostPattern::Exact(ip.to_string()));
    }
    if let Some(rest) = host.strip_prefix("*.") {
        let name = normalise_name(rest);
        return if valid_hostname(&name) {
            Ok(HostPattern::Subdomains(name))
        } else {
            Err(format!("`{host}` is not a valid wildcard host"))
        };
    }
    let name = normalise_name(host);
    if valid_hostname(&name) {
        Ok(HostPattern::Exact(name))
    } else {
        Err(format!("`{host}` is not a valid host name"))
    }
}

impl SocketGrant {
    /// Parses `host:port`, split at the last `:`; `unix:*` only when
    /// `allow_unix` (the `net_bind` list).
    pub fn parse(entry: &str, allow_unix: bool) -> Result<SocketGrant, String> {
        if entry == "unix:*" {
            return if allow_unix {
                Ok(SocketGrant::Unix)
            } else {
                Err("`unix:*` is only valid in net_bind".to_string())
            };
        }
        let (host, port) = entry
            .rsplit_once(':')
            .ok_or_else(|| format!("`{entry}` is not of the form host:port"))?;
        let port = match port {
            "*" => PortPattern::Any,
            digits if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) => {
                PortPattern::Exact(
                    digits
                        .parse()
                        .map_err(|_| format!("port `{digits}` is out of range"))?,
                )
            }
            other => return Err(format!("port `{other}` is not `*` or a number")),
        };
        Ok(SocketGrant::Inet {
            host: parse_host(host)?,
            port,
        })
    }
}

/// A parsed `net` (HTTP) entry: `*`, or a host covering its subdomains.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HttpHostGrant {
    Any,
    Name(String),
    Ip(IpAddr),
}

impl HttpHostGrant {
    pub fn parse(entry: &str) -> Result<HttpHostGrant, String> {
        if entry == "*" {
            return Ok(HttpHostGrant::Any);
        }
        let bare = entry
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(entry);
        if let Ok(ip) = bare.parse::<IpAddr>() {
            return Ok(HttpHostGrant::Ip(ip));
        }
        let mut name = normalise_name(entry);
        if !name.is_ascii() {
            // Requests are compared in their IDNA (punycode) form.
            if let Ok(url::Host::Domain(ascii)) = url::Host::parse(&name) {
                name = ascii;
            }
        }
        if valid_hostname(&name) {
            Ok(HttpHostGrant::Name(name))
        } else {
            Err(format!(
                "`{entry}` is not a host name (no scheme, port or path)"
            ))
        }
    }
}

/// A guest-supplied host as socket grants compare it: IP literals in
/// canonical form, names lowercase without a trailing dot.
pub fn normalise_request_host(host: &str) -> String {
    match host.parse::<IpAddr>() {
        Ok(ip) => ip.to_string(),
        Err(_) => normalise_name(host),
    }
}

impl HostPattern {
    /// `host` must be normalised with [`normalise_request_host`].
    fn matches(&self, host: &str) -> bool {
        match self {
            HostPattern::Any => true,
            HostPattern::Exact(exact) => exact == host,
            HostPattern::Subdomains(parent) => host
                .strip_suffix(parent.as_str())
                .is_some_and(|rest| rest.len() > 1 && rest.ends_with('.')),
        }
    }
}

impl SocketGrant {
    /// Whether this entry covers `host:port` (`port: None` = any port, for
    /// name lookups). `host` is normalised with [`normalise_request_host`].
    pub fn allows(&self, host: &str, port: Option<u16>) -> bool {
        match self {
            SocketGrant::Unix => false,
            SocketGrant::Inet {
                host: pattern,
                port: ports,
            } => {
                pattern.matches(host)
                    && match (ports, port) {
                        (PortPattern::Any, _) | (_, None) => true,
                        (PortPattern::Exact(p), Some(port)) => *p == port,
                    }
            }
        }
    }
}

/// Whether any entry covers `host:port` (`None`: any port).
pub fn sockets_allow(grants: &[SocketGrant], host: &str, port: Option<u16>) -> bool {
    let host = normalise_request_host(host);
    grants.iter().any(|g| g.allows(&host, port))
}

/// Whether an ephemeral bind (port 0) is covered: it needs a port `*` entry.
pub fn sockets_allow_any_port(grants: &[SocketGrant], host: &str) -> bool {
    let host = normalise_request_host(host);
    grants.iter().any(|g| match g {
        SocketGrant::Inet {
            host: pattern,
            port: PortPattern::Any,
        } => pattern.matches(&host),
        _ => false,
    })
}

impl HttpHostGrant {
    /// Whether this entry covers a URL host (as the URL parser produced
    /// it: IDNA-converted, lowercase, IPv6 without brackets).
    pub fn allows(&self, host: &url::Host<&str>) -> bool {
        match (self, host) {
            (HttpHostGrant::Any, _) => true,
            (HttpHostGrant::Ip(ip), url::Host::Ipv4(v4)) => *ip == IpAddr::V4(*v4),
            (HttpHostGrant::Ip(ip), url::Host::Ipv6(v6)) => *ip == IpAddr::V6(*v6),
            (HttpHostGrant::Name(name), url::Host::Domain(domain)) => {
                let domain = domain.trim_end_matches('.');
                domain == name
                    || domain
                        .strip_suffix(name.as_str())
                        .is_some_and(|rest| rest.ends_with('.'))
            }
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn socket_matching() {
        let grants: Vec<SocketGrant> = [
            "cache.example:6379",
            "*.svc.example:*",
            "[::1]:80",
            "10.0.0.1:*",
        ]
        .iter()
        .map(|e| SocketGrant::parse(e, false).unwrap())
        .collect();
        for (host, port, allowed) in [
            ("cache.example", Some(6379), true),
            ("CACHE.example.", Some(6379), true),
            ("cache.example", Some(6380), false),
            ("cache.example", None, true),
            ("x.cache.example", Some(6379), false),
            ("a.svc.example", Some(1), true),
            ("a.b.svc.example", Some(1), true),
            ("svc.example", Some(1), false),
            ("evilsvc.example", Some(1), false),
            ("::1", Some(80), true),
            ("0:0:0:0:0:0:0:1", Some(80), true),
            ("::1", Some(81), false),
            ("10.0.0.1", Some(9), true),
            ("10.0.0.2", Some(9), false),
        ] {
            assert_eq!(
                sockets_allow(&grants, host, port),
                allowed,
                "{host}:{port:?}"
            );
        }
        assert!(sockets_allow_any_port(&grants, "10.0.0.1"));
        assert!(!sockets_allow_any_port(&grants, "cache.example"));
        assert!(!sockets_allow(&[SocketGrant::Unix], "localhost", None));
    }

    #[test]
    fn http_host_matching() {
        let grants: Vec<HttpHostGrant> = ["example.com", "10.0.0.1", "[::1]"]
            .iter()
            .map(|e| HttpHostGrant::parse(e).unwrap())
            .collect();
        let allowed = |url: &str| {
            let url = url::Url::parse(url).unwrap();
            let host = url.host().unwrap();
            grants.iter().any(|g| g.allows(&host))
        };
        assert!(allowed("https://example.com/x"));
        assert!(allowed("https://API.Example.com./x"));
        assert!(!allowed("https://notexample.com/"));
        assert!(!allowed("https://example.com.evil.net/"));
        assert!(allowed("http://10.0.0.1:8080/"));
        // The URL parser reads a decimal-integer host as the IPv4 address.
        assert!(allowed("http://167772161/"));
        assert!(allowed("http://[::1]/"));
        assert!(!allowed("http://127.0.0.1/"));
        assert!(HttpHostGrant::Any.allows(&url::Host::Domain("anything")));
    }

    #[test]
    fn socket_entries() {
        assert_eq!(
            SocketGrant::parse("cache.example:6379", false),
            Ok(SocketGrant::Inet {
                host: HostPattern::Exact("cache.example".into()),
                port: PortPattern::Exact(6379)
            })
        );
        assert_eq!(
            SocketGrant::parse("[::1]:*", false),
            Ok(SocketGrant::Inet {
                host: HostPattern::Exact("::1".into()),
                port: PortPattern::Any
            })
        );
        assert!(matches!(
            SocketGrant::parse("*.Example.COM:80", false),
            Ok(SocketGrant::Inet { host: HostPattern::Subdomains(h), .. }) if h == "example.com"
        ));
        assert_eq!(SocketGrant::parse("unix:*", true), Ok(SocketGrant::Unix));
        for bad in [
            "unix:*",
            "host",
            "host:70000",
            "host:x",
            "::1:80",
            "bad host:1",
            ":80",
        ] {
            assert!(SocketGrant::parse(bad, false).is_err(), "{bad}");
        }
    }

    #[test]
    fn http_entries() {
        assert_eq!(
            HttpHostGrant::parse("API.example.com."),
            Ok(HttpHostGrant::Name("api.example.com".into()))
        );
        assert_eq!(HttpHostGrant::parse("*"), Ok(HttpHostGrant::Any));
        assert_eq!(
            HttpHostGrant::parse("bücher.example"),
            Ok(HttpHostGrant::Name("xn--bcher-kva.example".into()))
        );
        assert!(matches!(
            HttpHostGrant::parse("10.0.0.1"),
            Ok(HttpHostGrant::Ip(_))
        ));
        for bad in ["https://x.com", "x.com/path", "x.com:443", ""] {
            assert!(HttpHostGrant::parse(bad).is_err(), "{bad}");
        }
    }
}
