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
        let name = normalise_name(entry);
        if valid_hostname(&name) {
            Ok(HttpHostGrant::Name(name))
        } else {
            Err(format!(
                "`{entry}` is not a host name (no scheme, port or path)"
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        assert!(matches!(
            HttpHostGrant::parse("10.0.0.1"),
            Ok(HttpHostGrant::Ip(_))
        ));
        for bad in ["https://x.com", "x.com/path", "x.com:443", ""] {
            assert!(HttpHostGrant::parse(bad).is_err(), "{bad}");
        }
    }
}
