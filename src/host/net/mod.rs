//! `astrid:net@1.0.0` (host ABI §2.6) and `astrid:request-context@1.0.0`.
//!
//! Sockets are tokio sockets driven from the guest's own thread: reads and
//! writes are non-blocking system calls made directly by the host function,
//! and waits park the thread on a [`Waiter`](crate::signal::Waiter) that the
//! runtime's I/O driver wakes through a [`SignalWaker`]. There is no task
//! in between, so a round trip costs what the socket costs plus one wake-up,
//! and every wait races the call's cancel token and deadline.
//!
//! Every factory runs validation → manifest → gate → airlock → operation →
//! audit through [`Gated::gated`](crate::host::gated::Gated::gated); [`resolve`] is the one place names
//! become addresses, and only vetted addresses are ever contacted.

pub mod conn;
pub mod listen;
pub mod quota;
pub(crate) mod resolve;

use resolve::Lookup;
mod stream;
pub mod udp;

use crate::host::audit::Audited;
use crate::host::audit::{audit_cases, Payload};
use crate::host::call::CallContext;
use crate::host::gated::Gated;
use crate::host::gated::{GatedError, Prepared, Refused};
use crate::host::shared::CapsuleShared;
use crate::host::view::{host_view, CallScopedSet, HostView};
use crate::policy::gate::{GateKind, GateRequest};
use crate::policy::net::{sockets_allow, sockets_allow_any_port, NetHost, SocketGrant};
pub use quota::{
    CapsuleNet, QuotaSlot, MAX_DATAGRAM, MAX_STREAMS, MAX_TCP_LISTENERS, MAX_UDP_SOCKETS,
    MAX_UNIX_LISTENERS,
};
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;
use wasmtime::component::{Linker, Resource, ResourceTable};

pub use conn::TcpStreamHandle;
pub use listen::{TcpListenerHandle, UnixListenerHandle};
pub use udp::UdpHandle;

pub(crate) mod bindings {
    wasmtime::component::bindgen!({
        inline: "package astrid-runtime:net; world imports {
            import astrid:net/host@1.0.0;
            import astrid:request-context/host@1.0.0;
        }",
        path: [
            "wit/astrid-io@1.0.0",
            "wit/astrid-net@1.0.0",
            "wit/astrid-request-context@1.0.0",
        ],
        world: "imports",
        with: {
            "astrid:io/poll": crate::host::io::bindings::astrid::io::poll,
            "astrid:io/streams": crate::host::io::bindings::astrid::io::streams,
            "astrid:io/error": crate::host::io::bindings::astrid::io::error,
            "astrid:net/host.tcp-stream": super::TcpStreamHandle,
            "astrid:net/host.tcp-listener": super::TcpListenerHandle,
            "astrid:net/host.unix-listener": super::UnixListenerHandle,
            "astrid:net/host.udp-socket": super::UdpHandle,
        },
    });
}

use bindings::astrid::net::host::{self, ErrorCode};

/// Longest `poll-accept` wait.
const MAX_POLL_ACCEPT_MS: u64 = 60_000;

/// What `astrid:net` and `astrid:request-context` see of a store: the
/// capsule and the call, the capsule's socket quotas, the resource table,
/// and the sockets the call opened (closed when it ends).
pub(crate) struct NetView<'a> {
    pub(crate) capsule: &'a Arc<CapsuleShared>,
    pub(crate) call: &'a CallContext,
    pub(crate) net: &'a CapsuleNet,
    pub(crate) table: &'a mut ResourceTable,
    pub(crate) call_scoped: &'a mut CallScopedSet,
}

host_view!(NetView, NetData);

pub(crate) fn add_to_linker<T: 'static>(
    linker: &mut Linker<T>,
    view: fn(&mut T) -> NetView<'_>,
) -> wasmtime::Result<()> {
    host::add_to_linker::<T, NetData>(linker, view)?;
    bindings::astrid::request_context::host::add_to_linker::<T, NetData>(linker, view)
}

audit_cases! {
    ErrorCode {
        ErrorCode::WouldBlock => "would-block",
        ErrorCode::Closed => "closed",
        ErrorCode::CapabilityDenied => "capability-denied",
        ErrorCode::AirlockRejected => "airlock-rejected",
        ErrorCode::ConnectionRefused => "connection-refused",
        ErrorCode::ConnectionReset => "connection-reset",
        ErrorCode::Timeout => "timeout",
        ErrorCode::AddressInUse => "address-in-use",
        ErrorCode::AddressNotAvailable => "address-not-available",
        ErrorCode::NameUnresolvable => "name-unresolvable",
        ErrorCode::InvalidHandle => "invalid-handle",
        ErrorCode::NotTcp => "not-tcp",
        ErrorCode::Quota => "quota",
    }
    unknown: ErrorCode::Unknown,
    denials: [ErrorCode::CapabilityDenied, ErrorCode::AirlockRejected]
}

impl GatedError for ErrorCode {
    fn denied() -> Self {
        ErrorCode::CapabilityDenied
    }
    fn cancelled() -> Self {
        ErrorCode::Closed
    }
}

impl Payload for Resource<TcpStreamHandle> {}
impl Payload for Resource<TcpListenerHandle> {}
impl Payload for Resource<UnixListenerHandle> {}
impl Payload for Resource<UdpHandle> {}
impl Payload for Vec<std::net::SocketAddr> {}

/// Maps an OS error of a socket operation to the guest's case. Texts stay
/// generic: no address or path ever reaches the guest this way.
pub(crate) fn io_error(e: &std::io::Error) -> ErrorCode {
    use std::io::ErrorKind as K;
    match e.kind() {
        K::ConnectionRefused => ErrorCode::ConnectionRefused,
        K::ConnectionReset | K::ConnectionAborted | K::BrokenPipe | K::UnexpectedEof => {
            ErrorCode::ConnectionReset
        }
        K::TimedOut => ErrorCode::Timeout,
        K::AddrInUse => ErrorCode::AddressInUse,
        K::AddrNotAvailable => ErrorCode::AddressNotAvailable,
        K::WouldBlock => ErrorCode::WouldBlock,
        K::PermissionDenied => ErrorCode::CapabilityDenied,
        K::NotConnected => ErrorCode::Closed,
        _ => ErrorCode::Unknown("socket operation failed".into()),
    }
}

/// A `host:port` audit target for a guest's host string that is no valid
/// host (valid ones are shown canonical, [`NetHost::with_port`]).
pub(crate) fn target(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// What a bind asks for: transport, canonical host, port.
struct BindRequest {
    transport: &'static str,
    host: NetHost,
    port: u16,
}

/// What `udp-bind` opens: an outbound socket on the unspecified address,
/// or a checked bind.
enum UdpBind {
    Outbound(std::net::SocketAddr),
    Bind(BindRequest),
}

impl NetView<'_> {
    fn gate_socket(
        &self,
        kind: GateKind,
        transport: Option<&'static str>,
        host: &str,
        port: u16,
    ) -> GateRequest {
        GateRequest::socket(
            kind,
            self.capsule.name.clone(),
            self.call.principal.clone(),
            transport,
            host,
            port,
        )
    }

    /// The `prepare` step of an outbound socket check (`connect-tcp`, UDP
    /// destinations): the `net_connect` manifest entry and the gate's
    /// `net-connect`, both on the canonical host (which the caller
    /// resolves and audits too).
    pub(crate) fn prepare_connect<E>(
        &self,
        transport: &'static str,
        host: NetHost,
        port: u16,
    ) -> Result<Prepared<(NetHost, u16)>, Refused<E>> {
        if !sockets_allow(
            &self.capsule.manifest.capabilities.net_connect,
            &host,
            Some(port),
        ) {
            return Err("manifest: no net_connect entry covers the address".into());
        }
        let spelled = host.to_string();
        Ok(Prepared {
            target: host.with_port(port),
            asks: vec![self.gate_socket(GateKind::NetConnect, Some(transport), &spelled, port)],
            ctx: (host, port),
        })
    }

    /// The `prepare` step of a TCP or UDP bind: the `net_bind` entry (port 0
    /// needs a port `*` entry) and the gate's `net-bind`, on the canonical
    /// host.
    fn prepare_bind(
        &self,
        transport: &'static str,
        host: NetHost,
        port: u16,
    ) -> Result<Prepared<BindRequest>, Refused<ErrorCode>> {
        let grants = &self.capsule.manifest.capabilities.net_bind;
        let granted = if port == 0 {
            sockets_allow_any_port(grants, &host)
        } else {
            sockets_allow(grants, &host, Some(port))
        };
        if !granted {
            return Err("manifest: no net_bind entry covers the address".into());
        }
        let spelled = host.to_string();
        Ok(Prepared {
            target: host.with_port(port),
            asks: vec![self.gate_socket(GateKind::NetBind, Some(transport), &spelled, port)],
            ctx: BindRequest {
                transport,
                host,
                port,
            },
        })
    }

    /// The address a bind may use: loopback only, unless the embedder
    /// allowed other bind addresses (`airlock-rejected` otherwise).
    fn bind_address(&self, host: &NetHost, port: u16) -> Result<std::net::SocketAddr, ErrorCode> {
        let ip = match host {
            NetHost::Ip(ip) => *ip,
            NetHost::Name(name) if name == "localhost" => {
                std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST)
            }
            NetHost::Name(_) => return Err(ErrorCode::NameUnresolvable),
        };
        let any_bind = self.capsule.net_flags & crate::config::FLAG_ALLOW_ANY_BIND != 0;
        if !ip.is_loopback() && !any_bind {
            return Err(ErrorCode::AirlockRejected);
        }
        Ok(std::net::SocketAddr::new(ip, port))
    }

    /// Resolves `host` for an outbound connection and vets every address
    /// (TCP and UDP connects fail when any result is unsafe).
    pub(crate) fn resolve_all_safe(
        &self,
        host: &NetHost,
        port: u16,
    ) -> Result<Vec<std::net::SocketAddr>, ErrorCode> {
        let addrs = resolve::resolve(self.ctx(), host, port)?;
        let allow = self.ctx().allow_loopback();
        if addrs
            .iter()
            .any(|a| crate::policy::airlock::check(a.ip(), allow).is_err())
        {
            return Err(ErrorCode::AirlockRejected);
        }
        Ok(addrs)
    }

    fn claim(&self, counter: &Arc<AtomicUsize>, max: usize) -> Result<QuotaSlot, ErrorCode> {
        QuotaSlot::claim(counter, max).ok_or(ErrorCode::Quota)
    }
}

impl host::Host for NetView<'_> {
    fn bind_unix(&mut self) -> Result<Resource<UnixListenerHandle>, ErrorCode> {
        self.gated(
            "net.bind-unix",
            "unix",
            0,
            |state| {
                let grants = &state.capsule.manifest.capabilities.net_bind;
                if !grants.contains(&SocketGrant::Unix) {
                    return Err("manifest: no `unix:*` entry in net_bind".into());
                }
                Ok(Prepared {
                    target: "unix".into(),
                    asks: vec![state.gate_socket(GateKind::NetBind, Some("unix"), "", 0)],
                    ctx: (),
                })
            },
            |state, ()| {
                let path = state
                    .net
                    .unix_path
                    .clone()
                    .ok_or(ErrorCode::AddressNotAvailable)?;
                let slot = QuotaSlot::claim(&state.net.unix_listeners, MAX_UNIX_LISTENERS)
                    .ok_or(ErrorCode::AddressInUse)?;
                let listener = listen::Listener::bind_unix(state, &path, slot)?;
                state.push_unix_listener(listener)
            },
        )
    }

    fn bind_tcp(
        &mut self,
        host: String,
        port: u16,
    ) -> Result<Resource<TcpListenerHandle>, ErrorCode> {
        self.gated(
            "net.bind-tcp",
            &target(&host, port),
            0,
            |state| {
                let host = resolve::canonical(&host).map_err(Refused::Failed)?;
                state.prepare_bind("tcp", host, port)
            },
            |state, bind| {
                let addr = state.bind_address(&bind.host, bind.port)?;
                let slot = state.claim(&state.net.tcp_listeners.clone(), MAX_TCP_LISTENERS)?;
                let listener = listen::Listener::bind_tcp(state, addr, slot)?;
                state.push_tcp_listener(listener)
            },
        )
    }

    fn connect_tcp(
        &mut self,
        host: String,
        port: u16,
    ) -> Result<Resource<TcpStreamHandle>, ErrorCode> {
        self.gated(
            "net.connect-tcp",
            &target(&host, port),
            0,
            |state| {
                let host = resolve::canonical(&host).map_err(Refused::Failed)?;
                state.prepare_connect("tcp", host, port)
            },
            |state, (host, port)| {
                let slot = state.claim(&state.net.streams.clone(), MAX_STREAMS)?;
                let addrs = state.resolve_all_safe(&host, port)?;
                let conn = conn::connect(state, addrs, slot)?;
                state.push_conn(conn)
            },
        )
    }

    fn udp_bind(&mut self, host: String, port: u16) -> Result<Resource<UdpHandle>, ErrorCode> {
        self.gated(
            "net.udp-bind",
            &target(&host, port),
            0,
            |state| {
                let host = resolve::canonical(&host).map_err(Refused::Failed)?;
                match host.ip() {
                    // An outbound socket binds nothing the world can reach:
                    // each destination is checked when it is first used.
                    Some(ip) if port == 0 && ip.is_unspecified() => Ok(Prepared {
                        target: host.with_port(port),
                        asks: Vec::new(),
                        ctx: UdpBind::Outbound(std::net::SocketAddr::new(ip, 0)),
                    }),
                    _ => state.prepare_bind("udp", host, port).map(|p| Prepared {
                        target: p.target,
                        asks: p.asks,
                        ctx: UdpBind::Bind(p.ctx),
                    }),
                }
            },
            |state, bind| {
                let (addr, outbound) = match bind {
                    UdpBind::Outbound(addr) => (addr, true),
                    UdpBind::Bind(bind) => {
                        debug_assert_eq!(bind.transport, "udp");
                        (state.bind_address(&bind.host, bind.port)?, false)
                    }
                };
                let slot = state.claim(&state.net.udp_sockets.clone(), MAX_UDP_SOCKETS)?;
                let socket = udp::Udp::bind(state, addr, outbound, slot)?;
                state.push_udp(socket)
            },
        )
    }

    fn lookup_host(&mut self, host: String) -> Result<Vec<String>, ErrorCode> {
        let found = self.vetted_lookup("net.lookup-host", &host)?;
        Ok(found.addrs.iter().map(ToString::to_string).collect())
    }
}

impl Payload for Lookup {
    fn payload_len(&self) -> u64 {
        self.addrs.iter().map(|a| a.to_string().len() as u64).sum()
    }
}

impl NetView<'_> {
    /// A name lookup (`lookup-host`, `wasi:sockets` name lookups): the
    /// canonical host, a `net_connect` entry whose host matches it (any
    /// port), the gate's `dns-lookup`, resolution, then the airlock drops
    /// unsafe addresses; none left is `airlock-rejected`, audited as a
    /// denial. Exactly one audit event, on the canonical host.
    pub(crate) fn vetted_lookup(
        &mut self,
        call: &'static str,
        host: &str,
    ) -> Result<Lookup, ErrorCode> {
        self.gated(
            call,
            host,
            host.len() as u64,
            |state| {
                let name = resolve::canonical(host).map_err(Refused::Failed)?;
                if !sockets_allow(
                    &state.capsule.manifest.capabilities.net_connect,
                    &name,
                    None,
                ) {
                    return Err("manifest: no net_connect entry covers the host".into());
                }
                let spelled = name.to_string();
                Ok(Prepared {
                    target: spelled.clone(),
                    asks: vec![state.gate_socket(GateKind::DnsLookup, None, &spelled, 0)],
                    ctx: name,
                })
            },
            |state, name| {
                let found = resolve::resolve(state.ctx(), &name, 0)?;
                let allow = state.ctx().allow_loopback();
                let mut addrs: Vec<std::net::IpAddr> = Vec::new();
                for addr in found {
                    let ip = addr.ip();
                    if crate::policy::airlock::check(ip, allow).is_ok() && !addrs.contains(&ip) {
                        addrs.push(ip);
                    }
                }
                if addrs.is_empty() {
                    return Err(ErrorCode::AirlockRejected);
                }
                Ok(Lookup { name, addrs })
            },
        )
    }
}

impl bindings::astrid::request_context::host::Host for NetView<'_> {
    fn connection_owner(
        &mut self,
        connection: Resource<TcpStreamHandle>,
    ) -> Result<Option<String>, ErrorCode> {
        self.connection_identity("request-context.connection-owner", &connection, |i| {
            i.owner.clone()
        })
    }

    fn connection_principal(
        &mut self,
        connection: Resource<TcpStreamHandle>,
    ) -> Result<Option<String>, ErrorCode> {
        self.connection_identity("request-context.connection-principal", &connection, |i| {
            i.principal.clone()
        })
    }
}

impl NetView<'_> {
    /// One field of what a unix listener learned about a connection's peer
    /// (`None` for connections without an identity).
    fn connection_identity(
        &mut self,
        call: &'static str,
        connection: &Resource<TcpStreamHandle>,
        field: impl FnOnce(&conn::Identity) -> Option<String>,
    ) -> Result<Option<String>, ErrorCode> {
        self.audited(call, None, 0, |state| {
            if state.call.token.is_cancelled() {
                return Err(ErrorCode::Closed);
            }
            let conn = state.conn(connection)?;
            Ok(conn.identity.as_ref().and_then(field))
        })
    }
}

/// Longest wait a `poll-accept` may ask for.
pub(crate) fn clamp_poll_ms(ms: u64) -> u64 {
    ms.min(MAX_POLL_ACCEPT_MS)
}
