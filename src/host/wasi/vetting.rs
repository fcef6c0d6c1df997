//! Vetting `wasi:sockets` (host ABI §0): the same manifest entries, gate
//! kinds and airlock as `astrid:net`, judged per call on the addresses WASI
//! hands over, with the names vetted lookups resolved remembered for the
//! call.

use crate::host::net::quota::QuotaSlot;
use crate::host::net::resolve::Lookup;
use crate::host::shared::CapsuleShared;
use crate::policy::gate::{GateKind, GateRequest};
use crate::policy::net::{sockets_allow, sockets_allow_any_port, NetHost};
use crate::signal::MutexExt;
use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

/// The call a store's `wasi:sockets` checks belong to: its cancel token
/// and deadline, and the UDP destinations already vetted in it (datagrams
/// are checked per destination, not per datagram). Reset at every call, so
/// no decision outlives the call (and principal) it was made for.
#[derive(Default)]
pub struct WasiSocketsCall {
    call: std::sync::Mutex<Option<(crate::cancel::CancelToken, Instant)>>,
    peers: std::sync::Mutex<std::collections::HashSet<std::net::SocketAddr>>,
    udp_server: std::sync::atomic::AtomicBool,
    /// The (canonical) names each address a vetted lookup answered came
    /// from: a connect to that address is then matched against the name
    /// the guest asked for, as `astrid:net` does.
    resolved: std::sync::Mutex<std::collections::HashMap<std::net::IpAddr, Vec<NetHost>>>,
}

impl WasiSocketsCall {
    pub(crate) fn begin(&self, token: &crate::cancel::CancelToken, deadline: Instant) {
        *self.call.locked() = Some((token.clone(), deadline));
        self.peers.locked().clear();
        self.udp_server.store(false, Ordering::SeqCst);
        self.resolved.locked().clear();
    }

    /// A vetted lookup answered `lookup.addrs` for `lookup.name`.
    pub(crate) fn note_lookup(&self, lookup: &Lookup) {
        let mut resolved = self.resolved.locked();
        for ip in &lookup.addrs {
            let names = resolved.entry(*ip).or_default();
            if !names.contains(&lookup.name) {
                names.push(lookup.name.clone());
            }
        }
    }

    /// The names a vetted lookup in this call resolved to `ip`.
    fn names_of(&self, ip: std::net::IpAddr) -> Vec<NetHost> {
        let resolved = self.resolved.locked();
        resolved.get(&ip).cloned().unwrap_or_default()
    }

    /// The current call's token and deadline (a cancelled token between calls).
    fn current(&self) -> (crate::cancel::CancelToken, Instant) {
        self.call.locked().clone().unwrap_or_else(|| {
            let token = crate::cancel::CancelToken::new();
            token.cancel();
            (token, Instant::now())
        })
    }
}

/// The `wasi:sockets` check (host ABI §0): the same manifest entries, gate
/// kinds and airlock as `astrid:net`, judged on the address WASI hands
/// over (an IP literal: WASI resolves nothing by itself here). One audit
/// event per connect, bind and new destination; any refusal reaches the
/// guest as `access-denied`.
pub(crate) fn wasi_socket_allowed(
    capsule: &Arc<CapsuleShared>,
    principal: Option<Arc<str>>,
    vetted: &WasiSocketsCall,
    addr: std::net::SocketAddr,
    usage: wasmtime_wasi::sockets::SocketAddrUse,
) -> bool {
    use wasmtime_wasi::sockets::SocketAddrUse as Use;
    let wildcard = addr.ip().is_unspecified() && addr.port() == 0;
    let known = || vetted.peers.locked().contains(&addr);
    let (call, kind, transport) = match usage {
        // Inbound connections on a listener that passed its bind check.
        Use::TcpAccept => return true,
        // Datagrams from peers the socket may talk to (a bound server
        // socket hears anyone, as its bind was checked).
        Use::UdpReceive => return vetted.udp_server.load(Ordering::SeqCst) || known(),
        // The OS picking a local address for an outbound socket.
        Use::TcpBind | Use::UdpBind if wildcard => return true,
        // Listening on an address `bind` already checked.
        Use::TcpListen if !addr.ip().is_unspecified() => return true,
        Use::TcpConnect => ("wasi:sockets.connect", GateKind::NetConnect, "tcp"),
        Use::UdpSend => ("wasi:sockets.send", GateKind::NetConnect, "udp"),
        Use::TcpBind | Use::TcpListen => ("wasi:sockets.bind", GateKind::NetBind, "tcp"),
        Use::UdpBind => ("wasi:sockets.bind", GateKind::NetBind, "udp"),
    };
    let connect = kind == GateKind::NetConnect;
    if matches!(usage, Use::UdpSend) && known() {
        return true;
    }
    let (token, deadline) = vetted.current();
    let started = Instant::now();
    // The address as every check and the audit spell it (an IPv4-mapped
    // address is its IPv4 address).
    let ip = crate::policy::net::canonical_ip(addr.ip());
    let host = NetHost::Ip(ip);
    let runtime = &capsule.services;
    let flags = capsule.net_flags;
    let caps = &capsule.manifest.capabilities;
    let verdict: Result<(), String> = (|| {
        if token.is_cancelled() {
            return Err("cancelled".into());
        }
        let granted = match (connect, addr.port()) {
            (true, port) => {
                sockets_allow(&caps.net_connect, &host, Some(port))
                    || vetted
                        .names_of(ip)
                        .iter()
                        .any(|name| sockets_allow(&caps.net_connect, name, Some(port)))
            }
            (false, 0) => sockets_allow_any_port(&caps.net_bind, &host),
            (false, port) => sockets_allow(&caps.net_bind, &host, Some(port)),
        };
        if !granted {
            return Err("manifest: no entry covers the address".into());
        }
        let mut request = GateRequest::socket(
            kind,
            capsule.name.clone(),
            principal.clone(),
            Some(transport),
            &host.to_string(),
            addr.port(),
        );
        request.call_id = crate::handoff::current_call_id();
        match runtime.ask_gate(request, &token, deadline) {
            Ok(v) if v.allowed => {}
            Ok(v) => {
                return Err(format!(
                    "gate: {}",
                    v.reason.unwrap_or_else(|| "denied by the gate".into())
                ))
            }
            Err(_) => return Err("cancelled".into()),
        }
        let allowed_ip = if connect {
            crate::policy::airlock::check(ip, flags & crate::config::FLAG_ALLOW_LOOPBACK != 0)
                .is_ok()
        } else {
            ip.is_loopback() || flags & crate::config::FLAG_ALLOW_ANY_BIND != 0
        };
        if !allowed_ip {
            return Err("airlock-rejected".into());
        }
        Ok(())
    })();
    if verdict.is_ok() {
        if connect {
            vetted.peers.locked().insert(addr);
        } else if transport == "udp" {
            vetted.udp_server.store(true, Ordering::SeqCst);
        }
    }
    if runtime.has_audit_sink() {
        let (outcome, reason) = match &verdict {
            Ok(()) => (crate::services::Outcome::Allowed, None),
            Err(reason) => (crate::services::Outcome::Denied, Some(reason.clone())),
        };
        runtime.emit_audit(crate::services::AuditEvent {
            capsule: capsule.name.to_string(),
            capsule_id: capsule.id.clone(),
            principal: principal.as_deref().unwrap_or("system").to_string(),
            call: call.to_string(),
            target: Some(host.with_port(addr.port())),
            bytes: 0,
            outcome,
            reason,
            elapsed_us: u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX),
            call_id: crate::handoff::current_call_id(),
        });
    }
    verdict.is_ok()
}

/// The `wasi:sockets` resources of one store and the capsule quota units
/// they hold, by resource rep.
#[derive(Default)]
pub struct WasiSocketSlots {
    /// Quota units held by WASI sockets.
    pub(crate) quota: HashMap<u32, QuotaSlot>,
    /// WASI sockets created and not yet dropped (at most 16 per store).
    pub(crate) created: HashSet<u32>,
}
