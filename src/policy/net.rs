//! Manifest network entries (host ABI §4): HTTP host entries (`net`) and
//! socket entries (`net_connect`, `net_bind`), and the one canonical
//! spelling of a host ([`canonical_host`]) that the manifest check, the
//! gate, resolution and the audit all see.

use std::fmt;
use std::net::{IpAddr, Ipv6Addr};

/// Longest host string a guest may pass (host ABI §2.6).
pub const MAX_HOST_BYTES: usize = 255;

/// A host in its canonical spelling (see [`canonical_host`]).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum NetHost {
    /// IPv4, or IPv6 that is not IPv4-mapped.
    Ip(IpAddr),
    /// A DNS name: ASCII (IDNA-converted), lowercase, no trailing dot.
    Name(String),
}

/// A host string no reading accepts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InvalidHost;

impl fmt::Display for NetHost {
    /// The canonical spelling: dotted-quad IPv4, RFC 5952 IPv6 without
    /// brackets, or the name.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NetHost::Ip(ip) => ip.fmt(f),
            NetHost::Name(name) => f.write_str(name),
        }
    }
}

impl NetHost {
    /// The address, for an IP host.
    pub fn ip(&self) -> Option<IpAddr> {
        match self {
            NetHost::Ip(ip) => Some(*ip),
            NetHost::Name(_) => None,
        }
    }

    /// The spelling inside a URL or a `host:port` pair: IPv6 bracketed.
    pub fn url_host(&self) -> String {
        match self {
            NetHost::Ip(IpAddr::V6(ip)) => format!("[{ip}]"),
            other => other.to_string(),
        }
    }

    /// `host:port` (`[v6]:port`), as socket audit targets show it.
    pub fn with_port(&self, port: u16) -> String {
        format!("{}:{port}", self.url_host())
    }
}

/// An address as every check sees it: an IPv4-mapped IPv6 address
/// (`::ffff:a.b.c.d`, which a dual-stack socket reaches over IPv4) is its
/// IPv4 address; everything else is itself.
pub fn canonical_ip(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(v6),
        },
        v4 => v4,
    }
}

/// Reads a guest-supplied host the way resolvers and the WHATWG URL
/// standard do, and returns its one canonical spelling:
///
/// - IPv4 in every form `inet_aton` and URL parsers accept — 1 to 4
///   parts, each decimal, octal (`0` prefix) or hex (`0x` prefix), a
///   single trailing dot — becomes the dotted quad (`2130706433`,
///   `127.1`, `0x7f.1`, `0177.0.0.1.` → `127.0.0.1`). A host whose last
///   label looks numeric but is no valid IPv4 (`1.2.3.09`, `1.2.3.4.5`,
///   `a.0x1`) is rejected rather than handed to a resolver that might read
///   it either way.
/// - IPv6 with or without brackets, any case, any zero compression,
///   becomes RFC 5952 text without brackets (`[0:0::1]` → `::1`); an
///   IPv4-mapped address becomes its IPv4 address (`::ffff:7f00:1` →
///   `127.0.0.1`). Zone identifiers are rejected.
/// - Names are IDNA-converted and lowercased, percent-escapes decoded, one
///   trailing dot removed (`LocalHost.` → `localhost`); they must then be
///   valid DNS names (labels of letters, digits, `-`, `_`, at most 63
///   bytes, 253 in all).
///
/// Empty strings, strings over 255 bytes and anything else are
/// [`InvalidHost`].
pub fn canonical_host(input: &str) -> Result<NetHost, InvalidHost> {
    if input.is_empty() || input.len() > MAX_HOST_BYTES {
        return Err(InvalidHost);
    }
    // Bare IPv6 (the URL host parser wants brackets).
    if let Ok(v6) = input.parse::<Ipv6Addr>() {
        return Ok(NetHost::Ip(canonical_ip(IpAddr::V6(v6))));
    }
    match url::Host::parse(input).map_err(|_| InvalidHost)? {
        url::Host::Ipv4(v4) => Ok(NetHost::Ip(IpAddr::V4(v4))),
        url::Host::Ipv6(v6) => Ok(NetHost::Ip(canonical_ip(IpAddr::V6(v6)))),
        url::Host::Domain(name) => {
            let name = name.strip_suffix('.').unwrap_or(&name);
            if valid_hostname(name) {
                Ok(NetHost::Name(name.to_string()))
            } else {
                Err(InvalidHost)
            }
        }
    }
}

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

fn parse_host(host: &str) -> Result<HostPattern, String> {
    if host == "*" {
        return Ok(HostPattern::Any);
    }
    if host.parse::<Ipv6Addr>().is_ok() {
        return Err(format!("IPv6 address `{host}` must be bracketed"));
    }
    if let Some(rest) = host.strip_prefix("*.") {
        return match canonical_host(rest) {
            Ok(NetHost::Name(name)) => Ok(HostPattern::Subdomains(name)),
            _ => Err(format!("`{host}` is not a valid wildcard host")),
        };
    }
    // Entries are read like requests, so `127.1` names 127.0.0.1.
    match canonical_host(host) {
        Ok(canonical) => Ok(HostPattern::Exact(canonical.to_string())),
        Err(InvalidHost) => Err(format!("`{host}` is not a valid host name")),
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
        let host = parse_host(host)?;
        // A TCP/UDP host named `unix` (`UNIX:*`, `unix.:80`) would read as
        // the unix-socket entry to anyone auditing the manifest.
        if matches!(&host, HostPattern::Exact(name) if name == "unix") {
            return Err(format!(
                "`{entry}` names a host `unix`, which reads as the unix-socket entry (spelled `unix:*`, lowercase, in net_bind only)"
            ));
        }
        Ok(SocketGrant::Inet { host, port })
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
        // Entries are read like request hosts: IDNA, case, trailing dot
        // and numeric IPv4 forms.
        match canonical_host(entry) {
            Ok(NetHost::Ip(ip)) => Ok(HttpHostGrant::Ip(ip)),
            Ok(NetHost::Name(name)) => Ok(HttpHostGrant::Name(name)),
            Err(InvalidHost) => Err(format!(
                "`{entry}` is not a host name (no scheme, port or path)"
            )),
        }
    }
}

impl HostPattern {
    /// `host` is a canonical spelling ([`NetHost`]'s `Display`).
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
    /// name lookups). `host` is a canonical spelling ([`NetHost`]'s
    /// `Display`).
    fn allows(&self, host: &str, port: Option<u16>) -> bool {
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
pub fn sockets_allow(grants: &[SocketGrant], host: &NetHost, port: Option<u16>) -> bool {
    let host = host.to_string();
    grants.iter().any(|g| g.allows(&host, port))
}

/// Whether an ephemeral bind (port 0) is covered: it needs a port `*` entry.
pub fn sockets_allow_any_port(grants: &[SocketGrant], host: &NetHost) -> bool {
    let host = host.to_string();
    grants.iter().any(|g| match g {
        SocketGrant::Inet {
            host: pattern,
            port: PortPattern::Any,
        } => pattern.matches(&host),
        _ => false,
    })
}

impl HttpHostGrant {
    /// Whether this entry covers a request host (canonical, see
    /// [`canonical_host`]).
    pub fn allows(&self, host: &NetHost) -> bool {
        match (self, host) {
            (HttpHostGrant::Any, _) => true,
            (HttpHostGrant::Ip(ip), NetHost::Ip(requested)) => ip == requested,
            (HttpHostGrant::Name(name), NetHost::Name(domain)) => {
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

    /// Every reading a resolver or URL parser accepts lands on one
    /// spelling; what none accepts (or reads two ways) is refused.
    #[test]
    fn canonical_host_table() {
        let long_label = format!("{}.example", "a".repeat(64));
        let too_long = "a.".repeat(128);
        for (input, canonical) in [
            // IPv4: decimal, octal, hex, 1-4 parts, trailing dot.
            ("127.0.0.1", Some("127.0.0.1")),
            ("2130706433", Some("127.0.0.1")),
            ("127.1", Some("127.0.0.1")),
            ("127.0.1", Some("127.0.0.1")),
            ("0x7f000001", Some("127.0.0.1")),
            ("0X7F000001", Some("127.0.0.1")),
            ("0x7f.1", Some("127.0.0.1")),
            ("0x7f.0x0.0x0.0x1", Some("127.0.0.1")),
            ("0177.0.0.1", Some("127.0.0.1")),
            ("017700000001", Some("127.0.0.1")),
            ("0177.1", Some("127.0.0.1")),
            ("127.0.0.1.", Some("127.0.0.1")),
            ("2130706433.", Some("127.0.0.1")),
            ("127.000.000.001", Some("127.0.0.1")),
            ("0", Some("0.0.0.0")),
            ("0x0", Some("0.0.0.0")),
            ("10.0.0.1", Some("10.0.0.1")),
            ("167772161", Some("10.0.0.1")),
            ("4294967295", Some("255.255.255.255")),
            ("169.254.43518", Some("169.254.169.254")),
            // Percent-escapes are decoded first, as URL parsers do.
            ("127%2e0%2e0%2e1", Some("127.0.0.1")),
            // Numeric last label that is no IPv4: refused, not looked up.
            ("4294967296", None),
            ("256.0.0.1", None),
            ("1.2.3.4.5", None),
            ("1.2.3.09", None),
            ("08", None),
            ("0x7g.1", None),
            ("example.123", None),
            ("example.0x1", None),
            ("127.0.0.1..", None),
            // IPv6: brackets, case, zero compression, RFC 5952 output.
            ("::1", Some("::1")),
            ("[::1]", Some("::1")),
            ("0:0:0:0:0:0:0:1", Some("::1")),
            ("[0000:0000::0001]", Some("::1")),
            ("2001:DB8:0:0:1:0:0:1", Some("2001:db8::1:0:0:1")),
            ("[2001:db8::A]", Some("2001:db8::a")),
            ("fe80:0:0:0:0:0:0:1", Some("fe80::1")),
            ("::", Some("::")),
            ("[::]", Some("::")),
            // IPv4-mapped IPv6 is the IPv4 address; other embeddings stay.
            ("::ffff:127.0.0.1", Some("127.0.0.1")),
            ("[::ffff:7f00:1]", Some("127.0.0.1")),
            ("::FFFF:a9fe:a9fe", Some("169.254.169.254")),
            ("64:ff9b::7f00:1", Some("64:ff9b::7f00:1")),
            ("::127.0.0.1", Some("::7f00:1")),
            // IPv6 forms nothing accepts.
            ("fe80::1%eth0", None),
            ("[fe80::1%25eth0]", None),
            ("[::1", None),
            ("::1]", None),
            ("[127.0.0.1]", None),
            ("[localhost]", None),
            ("1::2::3", None),
            ("::1:80", Some("::1:80")),
            // Names: case, one trailing dot, IDNA.
            ("localhost", Some("localhost")),
            ("LocalHost.", Some("localhost")),
            ("API.Example.COM", Some("api.example.com")),
            ("bücher.example", Some("xn--bcher-kva.example")),
            ("_srv.example", Some("_srv.example")),
            ("1.2.3.example", Some("1.2.3.example")),
            ("0x7f.example", Some("0x7f.example")),
            ("example..com", None),
            ("example.com..", None),
            (".", None),
            ("", None),
            ("a b", None),
            ("a\0b", None),
            ("host:80", None),
            ("user@host", None),
            ("a/b", None),
            ("*.example", None),
            ("-bad.example", None),
            (long_label.as_str(), None),
            (too_long.as_str(), None),
        ] {
            assert_eq!(
                canonical_host(input).ok().map(|h| h.to_string()).as_deref(),
                canonical,
                "{input:?}"
            );
        }
        // The canonical spelling reads back as itself.
        for input in [
            "2130706433",
            "[::ffff:7f00:1]",
            "[::1]",
            "LocalHost.",
            "0x7f.1",
        ] {
            let once = canonical_host(input).unwrap();
            assert_eq!(canonical_host(&once.to_string()), Ok(once.clone()));
            assert_eq!(canonical_host(&once.url_host()), Ok(once));
        }
        let v6 = canonical_host("[0::1]").unwrap();
        assert_eq!(
            (v6.url_host().as_str(), v6.with_port(80).as_str()),
            ("[::1]", "[::1]:80")
        );
        let v4 = canonical_host("127.1").unwrap();
        assert_eq!(v4.with_port(80), "127.0.0.1:80");
        assert_eq!(v4.ip(), Some(IpAddr::V4(std::net::Ipv4Addr::LOCALHOST)));
        assert_eq!(canonical_host("localhost.").unwrap().ip(), None);
    }

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
            let host = canonical_host(host).unwrap();
            assert_eq!(
                sockets_allow(&grants, &host, port),
                allowed,
                "{host}:{port:?}"
            );
        }
        let host = |h: &str| canonical_host(h).unwrap();
        assert!(sockets_allow_any_port(&grants, &host("10.0.0.1")));
        assert!(sockets_allow_any_port(&grants, &host("167772161")));
        assert!(!sockets_allow_any_port(&grants, &host("cache.example")));
        assert!(!sockets_allow(
            &[SocketGrant::Unix],
            &host("localhost"),
            None
        ));
    }

    #[test]
    fn http_host_matching() {
        let grants: Vec<HttpHostGrant> = ["example.com", "10.0.0.1", "[::1]"]
            .iter()
            .map(|e| HttpHostGrant::parse(e).unwrap())
            .collect();
        let allowed = |url: &str| {
            let url = url::Url::parse(url).unwrap();
            let host = canonical_host(url.host_str().unwrap()).unwrap();
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
        assert!(allowed("http://[::ffff:10.0.0.1]/"));
        assert!(allowed("http://0x0a.1/"));
        assert!(HttpHostGrant::Any.allows(&NetHost::Name("anything".into())));
    }

    #[test]
    fn a_host_named_unix_is_refused() {
        for entry in ["UNIX:*", "Unix:80", "unix.:*", "unix:443"] {
            assert!(SocketGrant::parse(entry, true).is_err(), "{entry}");
            assert!(SocketGrant::parse(entry, false).is_err(), "{entry}");
        }
        assert_eq!(SocketGrant::parse("unix:*", true), Ok(SocketGrant::Unix));
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
