//! WASI 0.2 as astrid links it: deny by default (host ABI §0). No preopens,
//! no sockets, no environment, empty stdin; stdout and stderr become log
//! lines for the embedder's log callback (stdout at info, stderr at warn).

use super::HostState;
use crate::host::shared::CapsuleShared;
use crate::services::LogLevel;
use bytes::Bytes;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use wasmtime::component::{Linker, Resource};
use wasmtime::StoreContextMut;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamResult};
use wasmtime_wasi::{WasiCtx, WasiCtxBuilder};

/// Longest line passed on; longer output is cut into marked pieces.
pub const MAX_LINE_BYTES: usize = 64 * 1024;

#[derive(Clone, Copy)]
enum Channel {
    Stdout = 0,
    Stderr = 1,
}

/// Line buffers for one store's stdout and stderr.
pub struct StdioLog {
    capsule: Arc<CapsuleShared>,
    /// The call `wasi:sockets` checks run for (only when the runtime
    /// enables WASI sockets).
    pub(crate) sockets: Option<crate::host::net::WasiSocketsCall>,
    state: Mutex<StdioState>,
    /// Set while an unterminated line waits in a buffer, so the flush at the
    /// end of every call costs no lock when there is nothing to flush.
    partial: AtomicBool,
}

struct StdioState {
    principal: Option<Arc<str>>,
    pending: [Vec<u8>; 2],
}

impl StdioLog {
    pub fn new(capsule: Arc<CapsuleShared>) -> Self {
        let sockets = (capsule.services.config.flags & crate::config::FLAG_WASI_SOCKETS != 0)
            .then(crate::host::net::WasiSocketsCall::default);
        StdioLog {
            sockets,
            capsule,
            state: Mutex::new(StdioState {
                principal: None,
                pending: [Vec::new(), Vec::new()],
            }),
            partial: AtomicBool::new(false),
        }
    }

    /// The principal of the call being served.
    pub fn principal(&self) -> Option<Arc<str>> {
        self.state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .principal
            .clone()
    }

    /// Starts a call for the `wasi:sockets` checks: its cancel token and
    /// deadline, and no destinations vetted yet. Free when sockets are off.
    pub fn begin_call(&self, token: &crate::cancel::CancelToken, deadline: std::time::Instant) {
        if let Some(sockets) = &self.sockets {
            sockets.begin(token, deadline);
        }
    }

    /// Tags the lines written from now on with the call's principal.
    pub fn set_principal(&self, principal: Option<&Arc<str>>) {
        self.state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .principal = principal.cloned();
    }

    fn write(&self, channel: Channel, mut bytes: &[u8]) {
        let mut lines = Vec::new();
        let principal;
        {
            let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
            principal = state.principal.clone();
            let pending = &mut state.pending[channel as usize];
            while !bytes.is_empty() {
                match bytes.iter().position(|&b| b == b'\n') {
                    Some(pos) => {
                        pending.extend_from_slice(&bytes[..pos]);
                        lines.push(std::mem::take(pending));
                        bytes = &bytes[pos + 1..];
                    }
                    None => {
                        pending.extend_from_slice(bytes);
                        bytes = &[];
                    }
                }
                if pending.len() >= MAX_LINE_BYTES {
                    let mut piece: Vec<u8> = pending.drain(..MAX_LINE_BYTES).collect();
                    piece.extend_from_slice(b" [line truncated]");
                    lines.push(piece);
                }
            }
            let partial = state.pending.iter().any(|p| !p.is_empty());
            self.partial.store(partial, Ordering::Release);
        }
        // Emit outside the lock: the callback may be slow.
        for line in lines {
            self.emit(channel, principal.as_deref(), &line);
        }
    }

    /// Emits what is left of unterminated lines (at the end of every call).
    pub fn flush(&self) {
        // A plain load first: the swap's locked write is skipped when there
        // is nothing to flush, which is almost every call.
        if !self.partial.load(Ordering::Acquire) || !self.partial.swap(false, Ordering::AcqRel) {
            return;
        }
        let (principal, rests) = {
            let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
            let rests = [
                std::mem::take(&mut state.pending[0]),
                std::mem::take(&mut state.pending[1]),
            ];
            (state.principal.clone(), rests)
        };
        for (channel, rest) in [
            (Channel::Stdout, rests[0].as_slice()),
            (Channel::Stderr, rests[1].as_slice()),
        ] {
            if !rest.is_empty() {
                self.emit(channel, principal.as_deref(), rest);
            }
        }
    }

    fn emit(&self, channel: Channel, principal: Option<&str>, line: &[u8]) {
        let level = match channel {
            Channel::Stdout => LogLevel::Info,
            Channel::Stderr => LogLevel::Warn,
        };
        let text = String::from_utf8_lossy(line);
        let text = text.strip_suffix('\r').unwrap_or(&text);
        self.capsule.log(level, principal, text);
    }
}

/// One of the two output channels, as WASI sees it.
struct StdioPipe {
    log: Arc<StdioLog>,
    channel: Channel,
}

impl IsTerminal for StdioPipe {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for StdioPipe {
    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(StdioPipe {
            log: self.log.clone(),
            channel: self.channel,
        })
    }

    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(StdioPipe {
            log: self.log.clone(),
            channel: self.channel,
        })
    }
}

impl OutputStream for StdioPipe {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        self.log.write(self.channel, &bytes);
        Ok(())
    }

    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        Ok(MAX_LINE_BYTES)
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for StdioPipe {
    async fn ready(&mut self) {}
}

impl tokio::io::AsyncWrite for StdioPipe {
    fn poll_write(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.log.write(self.channel, buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

/// A WASI context that grants nothing but clocks, randomness and log output
/// — and, when the runtime enables `wasi:sockets`, TCP, UDP and name
/// lookups through the same manifest, gate and airlock checks as
/// `astrid:net` (lookups through [`route_name_lookups`]).
pub fn deny_by_default_ctx(log: &Arc<StdioLog>) -> WasiCtx {
    let capsule = log.capsule.clone();
    let sockets = capsule.services.config.flags & crate::config::FLAG_WASI_SOCKETS != 0;
    let mut builder = WasiCtxBuilder::new();
    builder
        .stdout(StdioPipe {
            log: log.clone(),
            channel: Channel::Stdout,
        })
        .stderr(StdioPipe {
            log: log.clone(),
            channel: Channel::Stderr,
        })
        .allow_tcp(sockets)
        .allow_udp(sockets)
        .allow_ip_name_lookup(sockets);
    if sockets {
        let log = log.clone();
        builder.socket_addr_check(move |addr, usage| {
            let allowed = log.sockets.as_ref().is_some_and(|call| {
                crate::host::net::wasi_socket_allowed(
                    &log.capsule,
                    log.principal(),
                    call,
                    addr,
                    usage,
                )
            });
            Box::pin(async move { allowed })
        });
    } else {
        builder.socket_addr_check(|_, _| Box::pin(async { false }));
    }
    builder.build()
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
pub fn route_name_lookups(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    use crate::host::net::bindings::astrid::net::host::ErrorCode as NetError;
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
        |mut store: StoreContextMut<'_, HostState>, rep: u32| {
            store
                .data_mut()
                .table
                .delete(Resource::<VettedAddresses>::new_own(rep))?;
            Ok(())
        },
    )?;
    lookup.func_wrap(
        "resolve-addresses",
        |mut store: StoreContextMut<'_, HostState>,
         (network, name): (Resource<Network>, String)|
         -> wasmtime::Result<(Result<Resource<VettedAddresses>, ErrorCode>,)> {
            let state = store.data_mut();
            // The network resource is the capability to look names up.
            state.table.get(&network)?;
            if state.stdio.sockets.is_none() {
                return Ok((Err(ErrorCode::PermanentResolverFailure),));
            }
            let found = match state.vetted_lookup("wasi:sockets.resolve-addresses", &name) {
                Ok(found) => found,
                Err(e) => return Ok((Err(wasi_error(e)),)),
            };
            if let Some(call) = &state.stdio.sockets {
                call.note_lookup(&found);
            }
            let stream = state.table.push(VettedAddresses(found.addrs.into_iter()))?;
            Ok((Ok(stream),))
        },
    )?;
    lookup.func_wrap(
        "[method]resolve-address-stream.resolve-next-address",
        |mut store: StoreContextMut<'_, HostState>,
         (stream,): (Resource<VettedAddresses>,)|
         -> wasmtime::Result<(Result<Option<IpAddress>, ErrorCode>,)> {
            let next = store.data_mut().table.get_mut(&stream)?.0.next();
            Ok((Ok(next.map(IpAddress::from)),))
        },
    )?;
    lookup.func_wrap(
        "[method]resolve-address-stream.subscribe",
        |mut store: StoreContextMut<'_, HostState>,
         (stream,): (Resource<VettedAddresses>,)|
         -> wasmtime::Result<(Resource<DynPollable>,)> {
            Ok((wasmtime_wasi::p2::subscribe(
                &mut store.data_mut().table,
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
pub fn count_wasi_sockets(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
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
        |mut store: StoreContextMut<'_, HostState>,
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
        |mut store: StoreContextMut<'_, HostState>,
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
        |mut store: StoreContextMut<'_, HostState>,
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
        |mut store: StoreContextMut<'_, HostState>,
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
        |mut store: StoreContextMut<'_, HostState>,
         (this,): (Resource<TcpSocket>,)|
         -> wasmtime::Result<(Result<Accepted, ErrorCode>,)> {
            let state = store.data_mut();
            let Some(slot) = state.capsule.net.claim_stream() else {
                return Ok((Err(ErrorCode::AccessDenied),));
            };
            match HostTcpSocket::accept(&mut state.sockets(), this) {
                Ok(accepted) => {
                    state.wasi_sockets.insert(accepted.0.rep(), slot);
                    Ok((Ok(accepted),))
                }
                Err(e) => Ok((Err(e.downcast()?),)),
            }
        },
    )?;
    tcp.resource(
        "tcp-socket",
        ResourceType::host::<TcpSocket>(),
        |mut store: StoreContextMut<'_, HostState>, rep: u32| {
            let state = store.data_mut();
            forget(state, rep);
            HostTcpSocket::drop(&mut state.sockets(), Resource::new_own(rep))
        },
    )?;
    let mut udp = linker.instance(WASI_UDP)?;
    udp.func_wrap(
        "[method]udp-socket.start-bind",
        |mut store: StoreContextMut<'_, HostState>,
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
        |mut store: StoreContextMut<'_, HostState>, rep: u32| {
            let state = store.data_mut();
            forget(state, rep);
            HostUdpSocket::drop(&mut state.sockets(), Resource::new_own(rep))
        },
    )?;
    linker.allow_shadowing(false);
    Ok(())
}

/// Creates a WASI socket within the store's cap of live sockets.
fn created<R: 'static>(
    state: &mut HostState,
    create: impl FnOnce(&mut HostState) -> Result<Resource<R>, wasmtime_wasi::p2::SocketError>,
) -> wasmtime::Result<(
    Result<Resource<R>, wasmtime_wasi::p2::bindings::sockets::network::ErrorCode>,
)> {
    use wasmtime_wasi::p2::bindings::sockets::network::ErrorCode;
    if state.wasi_created.len() >= MAX_WASI_SOCKETS {
        return Ok((Err(ErrorCode::NewSocketLimit),));
    }
    match create(state) {
        Ok(socket) => {
            state.wasi_created.insert(socket.rep());
            Ok((Ok(socket),))
        }
        Err(e) => Ok((Err(e.downcast()?),)),
    }
}

/// A WASI socket is being dropped: its quota unit and its place under the
/// cap go with it.
fn forget(state: &mut HostState, rep: u32) {
    state.wasi_sockets.remove(&rep);
    state.wasi_created.remove(&rep);
}

/// Runs a WASI socket operation under one unit of a capsule quota, kept
/// for the socket `rep` when the operation succeeds.
fn counted(
    state: &mut HostState,
    rep: u32,
    quota: impl FnOnce(
        &crate::host::net::CapsuleNet,
    ) -> (&std::sync::Arc<std::sync::atomic::AtomicUsize>, usize),
    operation: impl FnOnce(&mut HostState) -> Result<(), wasmtime_wasi::p2::SocketError>,
) -> wasmtime::Result<(Result<(), wasmtime_wasi::p2::bindings::sockets::network::ErrorCode>,)> {
    use wasmtime_wasi::p2::bindings::sockets::network::ErrorCode;
    let slot = if state.wasi_sockets.contains_key(&rep) {
        // Already counted (a retried connect, a listen after a failed one).
        None
    } else {
        let (counter, max) = quota(&state.capsule.net);
        match crate::host::net::QuotaSlot::claim(counter, max) {
            Some(slot) => Some(slot),
            None => return Ok((Err(ErrorCode::AccessDenied),)),
        }
    };
    match operation(state) {
        Ok(()) => {
            if let Some(slot) = slot {
                state.wasi_sockets.insert(rep, slot);
            }
            Ok((Ok(()),))
        }
        Err(e) => Ok((Err(e.downcast()?),)),
    }
}
