//! Host and URL parsing, manifest network grants, and the SSRF airlock.
//!
//! Input lines: 1) a host, `host:port` or URL as a guest would give it,
//! 2) a manifest entry (`net`, `net_connect` or `net_bind` spelling).
//!
//! Every IP address any parser reads out of the text is run through the
//! airlock and compared with a reference classifier written from the host
//! ABI §4 list; grants must match deterministically and cover their own
//! canonical host.

#![no_main]

use astrid::policy::airlock::{self, Blocked};
use astrid::policy::net::{
    canonical_host, sockets_allow, sockets_allow_any_port, HostPattern, HttpHostGrant, NetHost,
    PortPattern, SocketGrant,
};
use libfuzzer_sys::fuzz_target;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// The spellings of a guest host the runtime compares or resolves,
/// including the canonical one every path uses (`canonical_host`), which
/// must be a fixed point: canonicalising it again changes nothing.
fn spellings(text: &str) -> Vec<String> {
    let mut out = vec![text.to_string(), text.to_ascii_lowercase()];
    if let Some(inner) = text.strip_prefix('[').and_then(|t| t.strip_suffix(']')) {
        out.push(inner.to_string());
    }
    if let Ok(host) = canonical_host(text) {
        let spelled = host.to_string();
        let again = canonical_host(&spelled).expect("a canonical host is valid");
        assert_eq!(again, host, "canonicalising {text:?} is not idempotent");
        out.push(spelled);
    }
    out
}

fn in_v4(ip: Ipv4Addr, net: [u8; 4], prefix: u32) -> bool {
    let mask = u32::MAX.checked_shl(32 - prefix).unwrap_or(0);
    u32::from(ip) & mask == u32::from(Ipv4Addr::from(net)) & mask
}

/// Reference: must this IPv4 address be refused (without allow-loopback)?
fn reference_v4(ip: Ipv4Addr) -> bool {
    ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_unspecified()
        || ip.octets()[0] == 0
        || ip.is_broadcast()
        || ip.is_multicast()
        || ip.is_documentation()
        || in_v4(ip, [100, 64, 0, 0], 10)
        || in_v4(ip, [192, 0, 0, 0], 24)
        || in_v4(ip, [198, 18, 0, 0], 15)
        || in_v4(ip, [240, 0, 0, 0], 4)
}

/// Never opened, not even with allow-loopback.
fn reference_v4_never(ip: Ipv4Addr) -> bool {
    ip.is_link_local() || ip.octets()[0] == 0 || ip.is_multicast() || ip.is_broadcast()
}

/// IPv4 addresses an IPv6 address carries, by the encodings §4 lists.
fn reference_embedded(ip: Ipv6Addr) -> Vec<Ipv4Addr> {
    let bits = u128::from(ip);
    let low = Ipv4Addr::from(bits as u32);
    let s = ip.segments();
    let mut out = Vec::new();
    if let Some(v4) = ip.to_ipv4_mapped() {
        out.push(v4);
    }
    if bits >> 32 == 0 && bits > 1 {
        out.push(low);
    }
    if s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        out.push(low);
    }
    if s[..3] == [0x64, 0xff9b, 1] {
        out.push(low);
    }
    if s[0] == 0x2002 {
        out.push(Ipv4Addr::from((bits >> 80) as u32));
    }
    if s[0] == 0x2001 && s[1] == 0 {
        out.push(Ipv4Addr::from((bits >> 64) as u32));
        out.push(Ipv4Addr::from(!(bits as u32)));
    }
    out
}

fn reference_v6(ip: Ipv6Addr) -> bool {
    let s = ip.segments();
    ip.is_loopback()
        || ip.is_unspecified()
        || ip.is_multicast()
        || s[0] & 0xfe00 == 0xfc00
        || s[0] & 0xffc0 == 0xfe80
        || s[0] & 0xffc0 == 0xfec0
        || (s[0] == 0x2001 && s[1] == 0xdb8)
        || s[..4] == [0x100, 0, 0, 0]
        || reference_embedded(ip).into_iter().any(reference_v4)
}

fn check_ip(ip: IpAddr, spelled: &str) {
    let strict = airlock::check(ip, false);
    let open = airlock::check(ip, true);
    // Deterministic.
    assert_eq!(strict, airlock::check(ip, false));
    let must_block = match ip {
        IpAddr::V4(v4) => reference_v4(v4),
        IpAddr::V6(v6) => reference_v6(v6),
    };
    if must_block {
        assert!(strict.is_err(), "{spelled:?} = {ip} passes the airlock");
    }
    // Loopback and private by std's own reading are always refused.
    let private = match ip {
        IpAddr::V4(v4) => v4.is_loopback() || v4.is_private(),
        IpAddr::V6(v6) => {
            v6.is_loopback()
                || v6.segments()[0] & 0xfe00 == 0xfc00
                || v6
                    .to_ipv4_mapped()
                    .is_some_and(|v4| v4.is_loopback() || v4.is_private())
        }
    };
    if private {
        assert!(
            strict.is_err(),
            "{spelled:?} = {ip} (loopback/private) passes"
        );
    }
    // allow-loopback opens exactly loopback and private.
    let expect_open = match strict {
        Err(Blocked::Loopback | Blocked::Private) => Ok(()),
        other => other,
    };
    assert_eq!(open, expect_open, "{ip}: allow-loopback verdict");
    let never = match ip {
        IpAddr::V4(v4) => reference_v4_never(v4),
        IpAddr::V6(v6) => {
            v6.segments()[0] & 0xffc0 == 0xfe80
                || v6.is_multicast()
                || reference_embedded(v6).into_iter().any(reference_v4_never)
        }
    };
    if never {
        assert!(open.is_err(), "{ip} opened by allow-loopback");
    }
    // An IPv4 address judged the same in every IPv6 wrapping.
    if let IpAddr::V4(v4) = ip {
        let n = u32::from(v4) as u128;
        let mapped = IpAddr::V6(v4.to_ipv6_mapped());
        assert_eq!(airlock::check(mapped, false), strict, "{ip} vs {mapped}");
        if strict.is_err() {
            for wrapped in [
                (0x0064_ff9b_u128 << 96) | n,
                (0x2002_u128 << 112) | (n << 80) | 1,
                (0x2001_0000_u128 << 96) | (0x0808_0808_u128 << 64) | u128::from(!(n as u32)),
                (0x2001_0000_u128 << 96) | (n << 64) | u128::from(!0x0808_0808_u32),
            ] {
                let wrapped = IpAddr::V6(Ipv6Addr::from(wrapped));
                assert!(
                    airlock::check(wrapped, false).is_err(),
                    "{ip} as {wrapped} passes"
                );
            }
        }
    }
}

/// Every address a parser can read out of `text`.
fn ips_in(text: &str) -> Vec<IpAddr> {
    let mut ips = Vec::new();
    for spelling in spellings(text) {
        if let Ok(ip) = spelling.parse::<IpAddr>() {
            ips.push(ip);
        }
        match url::Host::parse(&spelling) {
            Ok(url::Host::Ipv4(v4)) => ips.push(IpAddr::V4(v4)),
            Ok(url::Host::Ipv6(v6)) => ips.push(IpAddr::V6(v6)),
            _ => {}
        }
        for scheme in ["http", "https"] {
            if let Ok(url) = url::Url::parse(&format!("{scheme}://{spelling}/")) {
                match url.host() {
                    Some(url::Host::Ipv4(v4)) => ips.push(IpAddr::V4(v4)),
                    Some(url::Host::Ipv6(v6)) => ips.push(IpAddr::V6(v6)),
                    _ => {}
                }
            }
        }
    }
    ips
}

fn check_http_grant(entry: &str, url: Option<&url::Url>) {
    let parsed = HttpHostGrant::parse(entry);
    assert_eq!(parsed, HttpHostGrant::parse(entry));
    let Some(url_host) = url.and_then(|u| u.host_str()) else {
        return;
    };
    // Requests are matched on the canonical host, as every path does.
    let Ok(host) = canonical_host(url_host) else {
        return;
    };
    // The URL's own host, as a manifest entry, covers it.
    if let Ok(grant) = HttpHostGrant::parse(url_host) {
        assert!(
            grant.allows(&host),
            "entry {url_host:?} does not cover its own URL host"
        );
    }
    let Ok(grant) = parsed else {
        return;
    };
    let allowed = grant.allows(&host);
    assert_eq!(allowed, grant.allows(&host));
    let want = match (&grant, &host) {
        (HttpHostGrant::Any, _) => true,
        (HttpHostGrant::Ip(ip), NetHost::Ip(h)) => ip == h,
        (HttpHostGrant::Name(name), NetHost::Name(d)) => {
            d == name || d.ends_with(&format!(".{name}"))
        }
        _ => false,
    };
    assert_eq!(allowed, want, "{grant:?} vs {host:?}");
}

fn net(text: &str) -> NetHost {
    canonical_host(text).unwrap_or_else(|_| panic!("{text:?} should be a valid host"))
}

fn check_socket_grant(entry: &str, text: &str) {
    let host = canonical_host(text).ok();
    for unix in [false, true] {
        let parsed = SocketGrant::parse(entry, unix);
        assert_eq!(parsed, SocketGrant::parse(entry, unix));
        let Ok(grant) = parsed else {
            continue;
        };
        let grants = [grant.clone()];
        match &grant {
            SocketGrant::Unix => {
                assert!(unix && entry == "unix:*");
                if let Some(host) = &host {
                    assert!(!sockets_allow(&grants, host, None));
                }
            }
            SocketGrant::Inet {
                host: pattern,
                port,
            } => {
                let p = match port {
                    PortPattern::Exact(p) => Some(*p),
                    PortPattern::Any => None,
                };
                match pattern {
                    HostPattern::Any => {
                        if let Some(host) = &host {
                            assert!(sockets_allow(&grants, host, p));
                        }
                    }
                    HostPattern::Exact(h) => {
                        let h = net(h.trim_start_matches('[').trim_end_matches(']'));
                        assert!(sockets_allow(&grants, &h, p), "{entry:?} misses {h:?}");
                        if let Some(p) = p {
                            assert!(!sockets_allow(&grants, &h, Some(p ^ 1)));
                            assert!(!sockets_allow_any_port(&grants, &h));
                        }
                    }
                    HostPattern::Subdomains(parent) => {
                        for child in [format!("x.{parent}"), format!("a.B.{parent}.")] {
                            // (a child may be too long to be a host at all)
                            if let Ok(child) = canonical_host(&child) {
                                assert!(
                                    sockets_allow(&grants, &child, p),
                                    "{entry:?} misses {child}"
                                );
                            }
                        }
                        assert!(
                            !sockets_allow(&grants, &net(parent), p),
                            "{entry:?} covers its parent"
                        );
                        if let Ok(glued) = canonical_host(&format!("x{parent}")) {
                            assert!(!sockets_allow(&grants, &glued, p));
                        }
                    }
                }
                // Case and a trailing dot do not change the canonical host.
                if let Some(host) = &host {
                    if text.is_ascii() && !text.ends_with('.') && text.parse::<IpAddr>().is_err() {
                        let upper = canonical_host(&text.to_ascii_uppercase());
                        assert_eq!(upper.as_ref().ok(), Some(host), "{text:?} upper-cased");
                        let dotted = canonical_host(&format!("{text}."));
                        if let Ok(dotted) = dotted {
                            assert_eq!(&dotted, host, "{text:?} with a trailing dot");
                        }
                    }
                    // An IP is matched by value, however it is spelled.
                    if let NetHost::Ip(ip) = host {
                        let canonical = match ip {
                            IpAddr::V4(v4) => format!("{v4}:*"),
                            IpAddr::V6(v6) => format!("[{v6}]:*"),
                        };
                        let by_value =
                            SocketGrant::parse(&canonical, false).expect("canonical IP entry");
                        assert!(
                            sockets_allow(&[by_value], host, Some(1)),
                            "{canonical} vs {text:?}"
                        );
                    }
                }
            }
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (target, entry) = text.split_once('\n').unwrap_or((text, text));
    let entry = entry.lines().next().unwrap_or("");

    for ip in ips_in(target) {
        check_ip(ip, target);
    }
    // Raw address bytes too: every 4 / 16 byte window.
    if data.len() >= 16 {
        let v6: [u8; 16] = data[..16].try_into().unwrap();
        check_ip(IpAddr::V6(Ipv6Addr::from(v6)), "bytes");
    }
    if data.len() >= 4 {
        let v4: [u8; 4] = data[..4].try_into().unwrap();
        check_ip(IpAddr::V4(Ipv4Addr::from(v4)), "bytes");
    }

    let url = url::Url::parse(target)
        .ok()
        .or_else(|| url::Url::parse(&format!("http://{target}/")).ok())
        // Only http and https reach the grants (other schemes are refused
        // first, and their hosts are opaque strings).
        .filter(|u| matches!(u.scheme(), "http" | "https"));
    check_http_grant(entry, url.as_ref());
    for host in spellings(target) {
        check_socket_grant(entry, &host);
    }
    if let Some(url) = &url {
        if let (Some(host), Some(port)) = (url.host_str(), url.port_or_known_default()) {
            check_socket_grant(&format!("{host}:{port}"), host);
        }
    }
});
