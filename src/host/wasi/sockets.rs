//! `wasi:sockets` behind the manifest, the gate and the airlock: name
//! lookups routed through the host resolver, and socket creation counted
//! against the capsule's quota.

use super::vetting::{WasiSocketSlots, WasiSocketsCall};
use crate::host::net::bindings::astrid::net::host::ErrorCode as NetError;
use crate::host::net::resolve::Lookup;
use crate::host::net::CapsuleNet;
use wasmtime::component::{Linker, Resource, ResourceTable};
use wasmtime::StoreContextMut;
use wasmtime_wasi::WasiView;

/// What the `wasi:sockets` wrappers need of a store besides wasmtime-wasi's
/// own view of it: the quota units its sockets hold, the capsule's socket
/// quotas, the current call's checks, and astrid's vetted resolver.
pub(crate) trait WasiSocketsHost: WasiView + 'static {
    fn socket_slots(&mut self) -> &mut WasiSocketSlots;
    /// The capsule's `astrid:net` quotas, which WASI sockets count against.
    fn net_quotas(&self) -> &CapsuleNet;
    /// The current call's socket checks (`None` when the runtime gives
    /// guests no sockets).
    fn socket_checks(&self) -> Option<&WasiSocketsCall>;
    /// Resolves `name` as `astrid:net` does: manifest, gate, airlock, audit.
    fn vetted_lookup(&mut self, call: &'static str, name: &str) -> Result<Lookup, NetError>;
    fn resource_table(&mut self) -> &mut ResourceTable {
        self.ctx().table
    }
}

/// The WASI version of `wasi:sockets` the linker serves (imports of any
/// 0.2.x match it).
const WASI_NAME_LOOKUP: &str = "wasi:sockets/ip-name-lookup@0.2.12";

/// The answer of a vetted `wasi:sockets` name lookup: the addresses the
/// airlock let through, handed out one by one.
pub struct VettedAddresses(std::vec::IntoIter<std::net::IpAddr>);

#[wasmtime_wasi::async_trait]
impl wasmtime_wasi::p2::Pollable for VettedAddresses {
    /// Resolution finished before the stream was made.
    async fn ready(&mut self) {}
}

/// Serves `wasi:sockets` name lookups with astrid's own (host ABI §0): the
/// name is canonicalised, must pass the `net_connect` manifest entries and
/// the gate's `dns-lookup` (else `access-denied`), is resolved by the host
/// like `lookup-host` (within the call's deadline), and addresses the
/// airlock blocks are left out; none left is `access-denied` and audited
/// as a denial. One audit event per lookup, on the canonical name. Without
/// the runtime flag lookups fail as wasmtime-wasi's disabled lookups do.
pub(crate) fn route_name_lookups<T: WasiSocketsHost>(
    linker: &mut Linker<T>,
) -> wasmtime::Result<()> {
    use wasmtime::component::ResourceType;
    use wasmtime_wasi::p2::bindings::sockets::network::{ErrorCode, IpAddress, Network};
    use wasmtime_wasi::p2::DynPollable;

    fn wasi_error(e: NetError) -> ErrorCode {
        match e {
            NetError::CapabilityDenied | NetError::AirlockRejected => ErrorCode::AccessDenied,
            NetError::NameUnresolvable => ErrorCode::NameUnresolvable,
            NetError::Timeout => ErrorCode::TemporaryResolverFailure,
            _ => ErrorCode::Unknown,
        }
    }

    linker.allow_shadowing(true);
    let mut lookup = linker.instance(WASI_NAME_LOOKUP)?;
    lookup.resource(
        "resolve-address-stream",
        ResourceType::host::<VettedAddresses>(),
        |mut store: StoreContextMut<'_, T>, rep: u32| {
            store
                .data_mut()
                .resource_table()
                .delete(Resource::<VettedAddresses>::new_own(rep))?;
            Ok(())
        },
    )?;
    lookup.func_wrap(
        "resolve-addresses",
        |mut store: StoreContextMut<'_, T>,
         (network, name): (Resource<Network>, String)|
         -> wasmtime::Result<(Result<Resource<VettedAddresses>, ErrorCode>,)> {
            let state = store.data_mut();
            // The network resource is the capability to look names up.
            state.resource_table().get(&network)?;
            if state.socket_checks().is_none() {
                return Ok((Err(ErrorCode::PermanentResolverFailure),));
            }
            let found = match state.vetted_lookup("wasi:sockets.resolve-addresses", &name) {
                Ok(found) => found,
                Err(e) => return Ok((Err(wasi_error(e)),)),
            };
            if let Some(call) = state.socket_checks() {
                call.note_lookup(&found);
            }
            let stream = state
                .resource_table()
                .push(VettedAddresses(found.addrs.into_iter()))?;
            Ok((Ok(stream),))
        },
    )?;
    lookup.func_wrap(
        "[method]resolve-address-stream.resolve-next-address",
        |mut store: StoreContextMut<'_, T>,
         (stream,): (Resource<VettedAddresses>,)|
         -> wasmtime::Result<(Result<Option<IpAddress>, ErrorCode>,)> {
            let next = store.data_mut().resource_table().get_mut(&stream)?.0.next();
            Ok((Ok(next.map(IpAddress::from)),))
        },
    )?;
    lookup.func_wrap(
        "[method]resolve-address-stream.subscribe",
        |mut store: StoreContextMut<'_, T>,
         (stream,): (Resource<VettedAddresses>,)|
         -> wasmtime::Result<(Resource<DynPollable>,)> {
            Ok((wasmtime_wasi::p2::subscribe(
                store.data_mut().resource_table(),
                stream,
            )?,))
        },
    )?;
    linker.allow_shadowing(false);
    Ok(())
}

const WASI_TCP: &str = "wasi:sockets/tcp@0.2.12";
const WASI_UDP: &str = "wasi:sockets/udp@0.2.12";
const WASI_TCP_CREATE: &str = "wasi:sockets/tcp-create-socket@0.2.12";
const WASI_UDP_CREATE: &str = "wasi:sockets/udp-create-socket@0.2.12";
/// Live WASI sockets one store may hold, used or not: every quota of
/// `astrid:net` together, so a loop of creates cannot exhaust descriptors.
const MAX_WASI_SOCKETS: usize = crate::host::net::MAX_STREAMS
    + crate::host::net::MAX_TCP_LISTENERS
    + crate::host::net::MAX_UDP_SOCKETS;

/// Counts WASI sockets against the capsule's `astrid:net` quotas (host ABI
/// §0): a TCP socket takes a stream slot when it starts connecting or is
/// accepted, a listener slot when it starts listening, and a UDP socket a
/// UDP slot when it binds; the slot is given back when the guest drops the
/// socket. Over a quota the operation fails with `access-denied` and does
/// nothing (a connection waiting to be accepted stays queued).
pub(crate) fn count_wasi_sockets<T: WasiSocketsHost>(
    linker: &mut Linker<T>,
) -> wasmtime::Result<()> {
    use crate::host::net::{MAX_STREAMS, MAX_TCP_LISTENERS, MAX_UDP_SOCKETS};
    use wasmtime::component::ResourceType;
    use wasmtime_wasi::p2::bindings::sockets::network::{ErrorCode, IpSocketAddress, Network};
    use wasmtime_wasi::p2::bindings::sync::sockets::tcp::HostTcpSocket;
    use wasmtime_wasi::p2::bindings::sync::sockets::udp::HostUdpSocket;
    use wasmtime_wasi::p2::{DynInputStream, DynOutputStream, TcpSocket, UdpSocket};
    use wasmtime_wasi::sockets::WasiSocketsView;

    type Accepted = (
        Resource<TcpSocket>,
        Resource<DynInputStream>,
        Resource<DynOutputStream>,
    );
    use wasmtime_wasi::p2::bindings::sockets::network::IpAddressFamily;

    linker.allow_shadowing(true);
    linker.instance(WASI_TCP_CREATE)?.func_wrap(
        "create-tcp-socket",
        |mut store: StoreContextMut<'_, T>,
         (family,): (IpAddressFamily,)|
         -> wasmtime::Result<(Result<Resource<TcpSocket>, ErrorCode>,)> {
            use wasmtime_wasi::p2::bindings::sockets::tcp_create_socket::Host;
            created(store.data_mut(), |state| {
                Host::create_tcp_socket(&mut state.sockets(), family)
            })
        },
    )?;
    linker.instance(WASI_UDP_CREATE)?.func_wrap(
        "create-udp-socket",
        |mut store: StoreContextMut<'_, T>,
         (family,): (IpAddressFamily,)|
         -> wasmtime::Result<(Result<Resource<UdpSocket>, ErrorCode>,)> {
            use wasmtime_wasi::p2::bindings::sync::sockets::udp_create_socket::Host;
            created(store.data_mut(), |state| {
                Host::create_udp_socket(&mut state.sockets(), family)
            })
        },
    )?;
    let mut tcp = linker.instance(WASI_TCP)?;
    tcp.func_wrap(
        "[method]tcp-socket.start-connect",
        |mut store: StoreContextMut<'_, T>,
         (this, network, remote): (Resource<TcpSocket>, Resource<Network>, IpSocketAddress)|
         -> wasmtime::Result<(Result<(), ErrorCode>,)> {
            let state = store.data_mut();
            let rep = this.rep();
            counted(
                state,
                rep,
                |net| (&net.streams, MAX_STREAMS),
                |state| HostTcpSocket::start_connect(&mut state.sockets(), this, network, remote),
            )
        },
    )?;
    tcp.func_wrap(
        "[method]tcp-socket.start-listen",
        |mut store: StoreContextMut<'_, T>,
         (this,): (Resource<TcpSocket>,)|
         -> wasmtime::Result<(Result<(), ErrorCode>,)> {
            let state = store.data_mut();
            let rep = this.rep();
            counted(
                state,
                rep,
                |net| (&net.tcp_listeners, MAX_TCP_LISTENERS),
                |state| HostTcpSocket::start_listen(&mut state.sockets(), this),
            )
        },
    )?;
    tcp.func_wrap(
        "[method]tcp-socket.accept",
        |mut store: StoreContextMut<'_, T>,
         (this,): (Resource<TcpSocket>,)|
         -> wasmtime::Result<(Result<Accepted, ErrorCode>,)> {
            let state = store.data_mut();
            let Some(slot) = state.net_quotas().claim_stream() else {
                return Ok((Err(ErrorCode::AccessDenied),));
            };
            match HostTcpSocket::accept(&mut state.sockets(), this) {
                Ok(accepted) => {
                    state.socket_slots().quota.insert(accepted.0.rep(), slot);
                    Ok((Ok(accepted),))
                }
                Err(e) => Ok((Err(e.downcast()?),)),
            }
        },
    )?;
    tcp.resource(
        "tcp-socket",
        ResourceType::host::<TcpSocket>(),
        |mut store: StoreContextMut<'_, T>, rep: u32| {
            let state = store.data_mut();
            forget(state, rep);
            HostTcpSocket::drop(&mut state.sockets(), Resource::new_own(rep))
        },
    )?;
    let mut udp = linker.instance(WASI_UDP)?;
    udp.func_wrap(
        "[method]udp-socket.start-bind",
        |mut store: StoreContextMut<'_, T>,
         (this, network, local): (Resource<UdpSocket>, Resource<Network>, IpSocketAddress)|
         -> wasmtime::Result<(Result<(), ErrorCode>,)> {
            let state = store.data_mut();
            let rep = this.rep();
            counted(
                state,
                rep,
                |net| (&net.udp_sockets, MAX_UDP_SOCKETS),
                |state| HostUdpSocket::start_bind(&mut state.sockets(), this, network, local),
            )
        },
    )?;
    udp.resource(
        "udp-socket",
        ResourceType::host::<UdpSocket>(),
        |mut store: StoreContextMut<'_, T>, rep: u32| {
            let state = store.data_mut();
            forget(state, rep);
            HostUdpSocket::drop(&mut state.sockets(), Resource::new_own(rep))
        },
    )?;
    linker.allow_shadowing(false);
    Ok(())
}

/// Creates a WASI socket within the store's cap of live sockets.
fn created<T: WasiSocketsHost, R: 'static>(
    state: &mut T,
    create: impl FnOnce(&mut T) -> Result<Resource<R>, wasmtime_wasi::p2::SocketError>,
) -> wasmtime::Result<(
    Result<Resource<R>, wasmtime_wasi::p2::bindings::sockets::network::ErrorCode>,
)> {
    use wasmtime_wasi::p2::bindings::sockets::network::ErrorCode;
    if state.socket_slots().created.len() >= MAX_WASI_SOCKETS {
        return Ok((Err(ErrorCode::NewSocketLimit),));
    }
    match create(state) {
        Ok(socket) => {
            state.socket_slots().created.insert(socket.rep());
            Ok((Ok(socket),))
        }
        Err(e) => Ok((Err(e.downcast()?),)),
    }
}

/// A WASI socket is being dropped: its quota unit and its place under the
/// cap go with it.
fn forget<T: WasiSocketsHost>(state: &mut T, rep: u32) {
    state.socket_slots().quota.remove(&rep);
    state.socket_slots().created.remove(&rep);
}

/// Runs a WASI socket operation under one unit of a capsule quota, kept
/// for the socket `rep` when the operation succeeds.
fn counted<T: WasiSocketsHost>(
    state: &mut T,
    rep: u32,
    quota: impl FnOnce(
        &crate::host::net::CapsuleNet,
    ) -> (&std::sync::Arc<std::sync::atomic::AtomicUsize>, usize),
    operation: impl FnOnce(&mut T) -> Result<(), wasmtime_wasi::p2::SocketError>,
) -> wasmtime::Result<(Result<(), wasmtime_wasi::p2::bindings::sockets::network::ErrorCode>,)> {
    use wasmtime_wasi::p2::bindings::sockets::network::ErrorCode;
    let slot = if state.socket_slots().quota.contains_key(&rep) {
        // Already counted (a retried connect, a listen after a failed one).
        None
    } else {
        let (counter, max) = quota(state.net_quotas());
        match crate::host::net::QuotaSlot::claim(counter, max) {
            Some(slot) => Some(slot),
            None => return Ok((Err(ErrorCode::AccessDenied),)),
        }
    };
    match operation(state) {
        Ok(()) => {
            if let Some(slot) = slot {
                state.socket_slots().quota.insert(rep, slot);
            }
            Ok((Ok(()),))
        }
        Err(e) => Ok((Err(e.downcast()?),)),
    }
}
