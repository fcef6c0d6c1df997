//! The SSRF airlock (host ABI §4): may the host contact this address for a
//! guest? Pure and table-tested; the network host modules ask it for every
//! address they are about to connect to, send to, or hand back from a lookup.
//!
//! IPv6 addresses that carry an IPv4 address (mapped, compatible, NAT64,
//! 6to4, Teredo server and client) are judged by the IPv4 they carry, so no
//! encoding smuggles a private target past the rules. Loopback and the
//! private ranges open only with the runtime's allow-loopback flag;
//! link-local and cloud metadata addresses never do.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Why an address is refused (for the audit log; the guest only sees
/// `airlock-rejected`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Blocked {
    /// 127/8, `::1`.
    #[error("loopback address")]
    Loopback,
    /// 10/8, 172.16/12, 192.168/16, `fc00::/7`.
    #[error("private address")]
    Private,
    /// 169.254/16, `fe80::/10`: never opened.
    #[error("link-local address")]
    LinkLocal,
    /// Cloud instance metadata endpoints: never opened.
    #[error("cloud metadata address")]
    Metadata,
    /// 0/8, `::`, and other addresses that mean "this host / nowhere".
    #[error("unspecified address")]
    Unspecified,
    /// 100.64/10 (carrier-grade NAT).
    #[error("shared address space (CGNAT)")]
    SharedAddressSpace,
    /// 224/4, `ff00::/8`.
    #[error("multicast address")]
    Multicast,
    /// 240/4 (incl. broadcast), 192.0.0/24, 198.18/15, `fec0::/10`, `100::/64`.
    #[error("reserved address")]
    Reserved,
    /// 192.0.2/24, 198.51.100/24, 203.0.113/24, `2001:db8::/32`.
    #[error("documentation address")]
    Documentation,
}

impl Blocked {
    /// Whether `ASTRID_RUNTIME_ALLOW_LOOPBACK` opens this class.
    fn opened_by_allow_loopback(self) -> bool {
        matches!(self, Blocked::Loopback | Blocked::Private)
    }
}

/// Checks one address. `allow_loopback` is the runtime's
/// `ASTRID_RUNTIME_ALLOW_LOOPBACK` flag.
pub fn check(addr: IpAddr, allow_loopback: bool) -> Result<(), Blocked> {
    let verdict = match addr {
        IpAddr::V4(v4) => classify_v4(v4),
        IpAddr::V6(v6) => classify_v6(v6),
    };
    match verdict {
        Some(blocked) if allow_loopback && blocked.opened_by_allow_loopback() => Ok(()),
        Some(blocked) => Err(blocked),
        None => Ok(()),
    }
}

fn in_v4(addr: Ipv4Addr, net: [u8; 4], prefix: u32) -> bool {
    let mask = if prefix == 0 {
        0
    } else {
        u32::MAX << (32 - prefix)
    };
    u32::from(addr) & mask == u32::from(Ipv4Addr::from(net)) & mask
}

fn in_v6(addr: Ipv6Addr, net: Ipv6Addr, prefix: u32) -> bool {
    let mask = if prefix == 0 {
        0
    } else {
        u128::MAX << (128 - prefix)
    };
    u128::from(addr) & mask == u128::from(net) & mask
}

/// The most specific reason an IPv4 address is blocked, if any.
fn classify_v4(addr: Ipv4Addr) -> Option<Blocked> {
    const TABLE: &[([u8; 4], u32, Blocked)] = &[
        ([169, 254, 169, 254], 32, Blocked::Metadata),
        ([0, 0, 0, 0], 8, Blocked::Unspecified),
        ([10, 0, 0, 0], 8, Blocked::Private),
        ([100, 64, 0, 0], 10, Blocked::SharedAddressSpace),
        ([127, 0, 0, 0], 8, Blocked::Loopback),
        ([169, 254, 0, 0], 16, Blocked::LinkLocal),
        ([172, 16, 0, 0], 12, Blocked::Private),
        ([192, 0, 0, 0], 24, Blocked::Reserved),
        ([192, 0, 2, 0], 24, Blocked::Documentation),
        ([192, 168, 0, 0], 16, Blocked::Private),
        ([198, 18, 0, 0], 15, Blocked::Reserved),
        ([198, 51, 100, 0], 24, Blocked::Documentation),
        ([203, 0, 113, 0], 24, Blocked::Documentation),
        ([224, 0, 0, 0], 4, Blocked::Multicast),
        ([240, 0, 0, 0], 4, Blocked::Reserved),
    ];
    TABLE
        .iter()
        .find(|(net, prefix, _)| in_v4(addr, *net, *prefix))
        .map(|(_, _, why)| *why)
}

fn v4_at(bits: u128, shift: u32) -> Ipv4Addr {
    Ipv4Addr::from((bits >> shift) as u32)
}

/// The IPv4 addresses an IPv6 address carries (all must pass).
fn embedded_v4(addr: Ipv6Addr) -> Vec<Ipv4Addr> {
    let bits = u128::from(addr);
    let p = |text: &str| text.parse::<Ipv6Addr>().expect("constant prefix");
    if let Some(v4) = addr.to_ipv4_mapped() {
        return vec![v4];
    }
    // IPv4-compatible ::a.b.c.d (`::` and `::1` are judged as themselves).
    if bits >> 32 == 0 && bits > 1 {
        return vec![v4_at(bits, 0)];
    }
    if in_v6(addr, p("64:ff9b::"), 96) {
        return vec![v4_at(bits, 0)];
    }
    if in_v6(addr, p("64:ff9b:1::"), 48) {
        // The local-use NAT64 prefix may be used at /48 (IPv4 in bits
        // 48..64 and 72..88, RFC 6052) or at /96 (the last 32 bits): both
        // readings must pass.
        let high = ((bits >> 64) & 0xffff) as u32;
        let low = ((bits >> 40) & 0xffff) as u32;
        return vec![Ipv4Addr::from(high << 16 | low), v4_at(bits, 0)];
    }
    if in_v6(addr, p("2002::"), 16) {
        return vec![v4_at(bits, 80)];
    }
    if in_v6(addr, p("2001::"), 32) {
        // Teredo: the server at bits 32..64, the client inverted in the last 32.
        let server = v4_at(bits, 64);
        let client = Ipv4Addr::from(!((bits & 0xffff_ffff) as u32));
        return vec![server, client];
    }
    Vec::new()
}

fn classify_v6(addr: Ipv6Addr) -> Option<Blocked> {
    let p = |text: &str| text.parse::<Ipv6Addr>().expect("constant prefix");
    // Metadata first: it sits inside fc00::/7, which allow-loopback opens.
    if addr == p("fd00:ec2::254") {
        return Some(Blocked::Metadata);
    }
    if addr.is_unspecified() {
        return Some(Blocked::Unspecified);
    }
    if addr.is_loopback() {
        return Some(Blocked::Loopback);
    }
    let embedded = embedded_v4(addr);
    if !embedded.is_empty() {
        // The most severe reason wins: a never-opened class must not be
        // hidden behind one allow-loopback opens.
        let mut reasons: Vec<Blocked> = embedded.into_iter().filter_map(classify_v4).collect();
        reasons.sort_by_key(|b| b.opened_by_allow_loopback());
        return reasons.first().copied();
    }
    const TABLE: &[(&str, u32, Blocked)] = &[
        ("fc00::", 7, Blocked::Private),
        ("fe80::", 10, Blocked::LinkLocal),
        ("fec0::", 10, Blocked::Reserved),
        ("ff00::", 8, Blocked::Multicast),
        ("2001:db8::", 32, Blocked::Documentation),
        ("100::", 64, Blocked::Reserved),
    ];
    TABLE
        .iter()
        .find(|(net, prefix, _)| in_v6(addr, p(net), *prefix))
        .map(|(_, _, why)| *why)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn verdict(text: &str, allow_loopback: bool) -> Result<(), Blocked> {
        check(text.parse().unwrap(), allow_loopback)
    }

    #[test]
    fn ipv4_table() {
        use Blocked::*;
        let cases: &[(&str, Result<(), Blocked>)] = &[
            ("8.8.8.8", Ok(())),
            ("1.1.1.1", Ok(())),
            ("0.0.0.0", Err(Unspecified)),
            ("0.1.2.3", Err(Unspecified)),
            ("10.0.0.1", Err(Private)),
            ("10.255.255.255", Err(Private)),
            ("100.64.0.1", Err(SharedAddressSpace)),
            ("100.127.255.255", Err(SharedAddressSpace)),
            ("100.128.0.0", Ok(())),
            ("127.0.0.1", Err(Loopback)),
            ("127.255.0.9", Err(Loopback)),
            ("169.254.0.1", Err(LinkLocal)),
            ("169.254.169.254", Err(Metadata)),
            ("172.15.255.255", Ok(())),
            ("172.16.0.1", Err(Private)),
            ("172.31.255.255", Err(Private)),
            ("172.32.0.0", Ok(())),
            ("192.0.0.8", Err(Reserved)),
            ("192.0.2.1", Err(Documentation)),
            ("192.168.1.1", Err(Private)),
            ("198.18.0.1", Err(Reserved)),
            ("198.19.255.255", Err(Reserved)),
            ("198.20.0.0", Ok(())),
            ("198.51.100.7", Err(Documentation)),
            ("203.0.113.9", Err(Documentation)),
            ("224.0.0.1", Err(Multicast)),
            ("239.255.255.255", Err(Multicast)),
            ("240.0.0.1", Err(Reserved)),
            ("255.255.255.255", Err(Reserved)),
        ];
        for (addr, want) in cases {
            assert_eq!(verdict(addr, false), *want, "{addr}");
        }
    }

    #[test]
    fn ipv6_table() {
        use Blocked::*;
        let cases: &[(&str, Result<(), Blocked>)] = &[
            ("2606:4700::1111", Ok(())),
            ("::", Err(Unspecified)),
            ("::1", Err(Loopback)),
            ("fc00::1", Err(Private)),
            ("fdff:ffff::1", Err(Private)),
            ("fe80::1", Err(LinkLocal)),
            ("febf::1", Err(LinkLocal)),
            ("fec0::1", Err(Reserved)),
            ("ff02::1", Err(Multicast)),
            ("2001:db8::1", Err(Documentation)),
            ("100::1", Err(Reserved)),
            ("100:0:0:1::1", Ok(())),
            ("fd00:ec2::254", Err(Metadata)),
        ];
        for (addr, want) in cases {
            assert_eq!(verdict(addr, false), *want, "{addr}");
        }
    }

    #[test]
    fn ipv6_carrying_ipv4_is_judged_by_the_ipv4() {
        use Blocked::*;
        let cases: &[(&str, Result<(), Blocked>)] = &[
            // IPv4-mapped and IPv4-compatible.
            ("::ffff:127.0.0.1", Err(Loopback)),
            ("::ffff:169.254.169.254", Err(Metadata)),
            ("::ffff:8.8.8.8", Ok(())),
            ("::127.0.0.1", Err(Loopback)),
            ("::10.1.2.3", Err(Private)),
            ("::8.8.8.8", Ok(())),
            // NAT64, well-known and local-use prefixes.
            ("64:ff9b::7f00:1", Err(Loopback)),
            ("64:ff9b::a9fe:a9fe", Err(Metadata)),
            ("64:ff9b::808:808", Ok(())),
            ("64:ff9b:1:808:8:800:7f00:1", Err(Loopback)), // /96 reading 127.0.0.1
            // /48 layout 127.0.0.1, /96 reading 8.8.8.8: blocked by the first.
            ("64:ff9b:1:7f00:0:100:808:808", Err(Loopback)),
            // Both readings 8.8.8.8.
            ("64:ff9b:1:808:8:800:808:808", Ok(())),
            // /48 layout 8.8.8.8, /96 reading 0.0.0.0.
            ("64:ff9b:1:808:8:800::", Err(Unspecified)),
            // 6to4 carries the IPv4 in bits 16..48.
            ("2002:7f00:1::1", Err(Loopback)),
            ("2002:c0a8:101::1", Err(Private)),
            ("2002:a9fe:a9fe::1", Err(Metadata)),
            ("2002:808:808::1", Ok(())),
            // Teredo: server in bits 32..64, client inverted in the last 32.
            ("2001:0:7f00:1::f7f7:f7f7", Err(Loopback)), // server 127.0.0.1, client 8.8.8.8
            ("2001:0:808:808::80ff:fffe", Err(Loopback)), // client !0x80fffffe = 127.0.0.1
            ("2001:0:808:808::5601:5656", Err(LinkLocal)), // client 169.254.169.169
            ("2001:0:808:808::f7f7:f7f7", Ok(())),       // server and client 8.8.8.8
        ];
        for (addr, want) in cases {
            assert_eq!(verdict(addr, false), *want, "{addr}");
        }
    }

    #[test]
    fn allow_loopback_opens_loopback_and_private_only() {
        for open in [
            "127.0.0.1",
            "10.1.1.1",
            "172.16.5.4",
            "192.168.0.10",
            "::1",
            "fd12::1",
            "::ffff:127.0.0.1",
            "64:ff9b::a00:1",
        ] {
            assert_eq!(verdict(open, true), Ok(()), "{open}");
            assert!(verdict(open, false).is_err(), "{open}");
        }
        for closed in [
            "169.254.169.254",
            "169.254.1.1",
            "fe80::1",
            "fd00:ec2::254",
            "::ffff:169.254.169.254",
            "2002:a9fe:a9fe::1",
            "0.0.0.0",
            "::",
            "100.64.0.1",
            "224.0.0.1",
            "ff02::1",
        ] {
            assert!(verdict(closed, true).is_err(), "{closed}");
        }
        // A Teredo address whose server is loopback but whose client is the
        // metadata address stays blocked even with allow-loopback.
        assert_eq!(
            verdict("2001:0:7f00:1::5601:5601", true),
            Err(Blocked::Metadata)
        );
    }
}
