//! `udp-socket` (host ABI §2.6). Every new destination passes the
//! `net_connect` entry, the gate's `net-connect` (udp) and the airlock once;
//! the vetted addresses are remembered for the socket's lifetime. An
//! outbound socket (unspecified address, port 0) hears only from peers it
//! was allowed to send to; datagrams from anyone else are dropped unseen.

use super::bindings::astrid::net::host::{ErrorCode, HostUdpSocket, UdpDatagram};
use super::{io_error, resolve, target, Prepared, QuotaSlot, Refused, MAX_DATAGRAM};
use crate::host::audit::Audited;
use crate::host::gated::Gated;
use crate::host::io::push_pollable;
use crate::host::io::Pollable;
use crate::host::net::NetView;
use crate::host::view::CallScoped;
use crate::host::view::HostView;
use crate::policy::net::NetHost;
use crate::signal::{MutexExt, RwLockExt};
use crate::signal::{Readiness, Signal, SignalWaker, Waiter};
use crate::wait::wait_for;
use std::collections::{HashMap, HashSet, VecDeque};
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Waker};
use std::time::{Duration, Instant};
use wasmtime::component::Resource;

/// Datagrams held between the socket and the guest.
const MAX_QUEUED: usize = 64;

pub(crate) struct Udp {
    /// `None` once closed: the port is released even if the guest keeps
    /// its handle.
    socket: std::sync::RwLock<Option<tokio::net::UdpSocket>>,
    /// Bound to the unspecified address with port 0.
    outbound: bool,
    /// Vetted destinations by canonical host and port.
    allowed: Mutex<HashMap<(NetHost, u16), Vec<SocketAddr>>>,
    /// Every vetted address (an outbound socket's receive filter).
    peers: Mutex<HashSet<SocketAddr>>,
    connected: Mutex<Option<SocketAddr>>,
    read_timeout: Mutex<Option<u64>>,
    queue: Mutex<VecDeque<(Vec<u8>, SocketAddr)>>,
    signal: Arc<Signal>,
    read_waker: Waker,
    write_waker: Waker,
    closed: AtomicBool,
    /// Given back when closed: a closed resource the guest keeps does not
    /// count against the quota.
    slot: Mutex<Option<QuotaSlot>>,
}

pub struct UdpHandle(pub(crate) Arc<Udp>);

impl Udp {
    pub(crate) fn bind(
        state: &NetView<'_>,
        addr: SocketAddr,
        outbound: bool,
        slot: QuotaSlot,
    ) -> Result<Arc<Udp>, ErrorCode> {
        let std = std::net::UdpSocket::bind(addr).map_err(|e| io_error(&e))?;
        std.set_nonblocking(true).map_err(|e| io_error(&e))?;
        let _enter = state.capsule.services.handle.enter();
        let socket = tokio::net::UdpSocket::from_std(std).map_err(|e| io_error(&e))?;
        let signal = Arc::new(Signal::default());
        let waker = Waker::from(Arc::new(SignalWaker(signal.clone())));
        Ok(Arc::new(Udp {
            socket: std::sync::RwLock::new(Some(socket)),
            outbound,
            allowed: Mutex::new(HashMap::new()),
            peers: Mutex::new(HashSet::new()),
            connected: Mutex::new(None),
            read_timeout: Mutex::new(None),
            queue: Mutex::new(VecDeque::new()),
            read_waker: waker.clone(),
            write_waker: waker,
            signal,
            closed: AtomicBool::new(false),
            slot: Mutex::new(Some(slot)),
        }))
    }

    fn is_closed(&self) -> bool {
        self.closed.load(Ordering::SeqCst)
    }

    /// Whether a datagram from `peer` may reach the guest.
    fn admits(&self, peer: SocketAddr) -> bool {
        if let Some(connected) = *self.connected.locked() {
            return peer == connected;
        }
        !self.outbound || self.peers.locked().contains(&peer)
    }

    /// Moves waiting datagrams into the queue; arms the wake-up when none.
    fn fill(&self) -> bool {
        thread_local! {
            static BUF: std::cell::RefCell<Vec<u8>> = std::cell::RefCell::new(vec![0; MAX_DATAGRAM + 1]);
        }
        BUF.with(|buf| self.fill_with(&mut buf.borrow_mut()))
    }

    fn fill_with(&self, buf: &mut [u8]) -> bool {
        let mut queue = self.queue.locked();
        let socket = self.socket.read_locked();
        let Some(socket) = socket.as_ref() else {
            return true;
        };
        // Errors left by earlier sends (ICMP) surface here; a few are
        // skipped, then the wake-up is armed so the loop cannot spin.
        let mut errors = 0;
        while queue.len() < MAX_QUEUED && !self.is_closed() {
            match socket.try_recv_from(buf) {
                Ok((n, peer)) => {
                    if self.admits(peer) {
                        queue.push_back((buf[..n.min(MAX_DATAGRAM)].to_vec(), peer));
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock || errors >= 8 => {
                    let mut cx = Context::from_waker(&self.read_waker);
                    if socket.poll_recv_ready(&mut cx).is_pending() || errors >= 8 {
                        break;
                    }
                }
                Err(_) => errors += 1,
            }
        }
        !queue.is_empty() || self.is_closed()
    }

    /// Waits for a datagram under the read timeout; `Ok(None)` when the
    /// timeout passed (`would-block` at 0, `timeout` at the call deadline).
    fn receive(&self, state: &NetView<'_>) -> Result<Option<(Vec<u8>, SocketAddr)>, ErrorCode> {
        let timeout = self.read_timeout.locked().map(Duration::from_millis);
        if !self.fill() {
            if timeout == Some(Duration::ZERO) {
                return Err(ErrorCode::WouldBlock);
            }
            let until = timeout.map_or(state.call.deadline, |t| {
                state.call.deadline.min(Instant::now() + t)
            });
            let got = wait_for(&[&*self.signal], &state.call.token, until, || self.fill());
            if state.call.token.is_cancelled() {
                return Err(ErrorCode::Closed);
            }
            if !got {
                return if Instant::now() >= state.call.deadline {
                    Err(ErrorCode::Timeout)
                } else {
                    Ok(None)
                };
            }
        }
        if self.is_closed() {
            return Err(ErrorCode::Closed);
        }
        Ok(self.queue.locked().pop_front())
    }

    fn send_now(&self, data: &[u8], to: SocketAddr) -> Result<Option<usize>, ErrorCode> {
        let socket = self.socket.read_locked();
        let socket = socket.as_ref().ok_or(ErrorCode::Closed)?;
        loop {
            match socket.try_send_to(data, to) {
                Ok(n) => return Ok(Some(n)),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    let mut cx = Context::from_waker(&self.write_waker);
                    if socket.poll_send_ready(&mut cx).is_pending() {
                        return Ok(None);
                    }
                }
                Err(e) => return Err(io_error(&e)),
            }
        }
    }

    fn send(&self, state: &NetView<'_>, data: &[u8], to: SocketAddr) -> Result<u32, ErrorCode> {
        let mut sent = self.send_now(data, to)?;
        if sent.is_none() {
            let mut failure = None;
            wait_for(
                &[&*self.signal],
                &state.call.token,
                state.call.deadline,
                || {
                    match self.send_now(data, to) {
                        Ok(n) => sent = n,
                        Err(e) => failure = Some(e),
                    }
                    sent.is_some() || failure.is_some()
                },
            );
            if let Some(e) = failure {
                return Err(e);
            }
        }
        match sent {
            Some(n) => Ok(n as u32),
            None if state.call.token.is_cancelled() => Err(ErrorCode::Closed),
            None => Err(ErrorCode::Timeout),
        }
    }

    fn close(&self) {
        self.closed.store(true, Ordering::SeqCst);
        self.socket.write_locked().take();
        self.slot.locked().take();
        self.signal.notify();
    }
}

impl CallScoped for Udp {
    fn close(&self) {
        Udp::close(self);
    }
}

struct UdpReadable(Arc<Udp>);

impl Readiness for UdpReadable {
    fn is_ready(&self) -> bool {
        self.0.fill()
    }
    fn register(&self, waiter: &Arc<Waiter>) {
        self.0.signal.register(waiter);
    }
}

impl NetView<'_> {
    pub(crate) fn push_udp(&mut self, socket: Arc<Udp>) -> Result<Resource<UdpHandle>, ErrorCode> {
        let weak = Arc::downgrade(&socket);
        let handle = self
            .table
            .push(UdpHandle(socket))
            .map_err(|_| ErrorCode::Quota)?;
        self.call_scoped.track(weak);
        Ok(handle)
    }

    fn udp(&self, this: &Resource<UdpHandle>) -> Result<Arc<Udp>, ErrorCode> {
        if self.call.token.is_cancelled() {
            return Err(ErrorCode::Closed);
        }
        let udp = self
            .table
            .get(this)
            .map(|h| h.0.clone())
            .map_err(|_| ErrorCode::InvalidHandle)?;
        if udp.is_closed() {
            return Err(ErrorCode::Closed);
        }
        Ok(udp)
    }

    /// One UDP call that may reach a new destination: the socket and size
    /// checks, then — unless the destination was vetted on this socket
    /// before — manifest → gate → resolution → airlock, then `op` with the
    /// vetted address. Exactly one audit event.
    fn toward_destination<T: crate::host::audit::Payload>(
        &mut self,
        call: &'static str,
        this: &Resource<UdpHandle>,
        data: Option<&[u8]>,
        host: &str,
        port: u16,
        op: impl FnOnce(&NetView<'_>, &Arc<Udp>, SocketAddr) -> Result<T, ErrorCode>,
    ) -> Result<T, ErrorCode> {
        let bytes = data.map_or(0, |d| d.len() as u64);
        self.gated(
            call,
            &target(host, port),
            bytes,
            |state| {
                let udp = state.udp(this).map_err(Refused::Failed)?;
                if let Some(data) = data {
                    check_size(data).map_err(Refused::Failed)?;
                }
                let host = resolve::canonical(host).map_err(Refused::Failed)?;
                let key = (host, port);
                let known = udp.allowed.locked().get(&key).map(|addrs| addrs[0]);
                if let Some(addr) = known {
                    return Ok(Prepared {
                        target: key.0.with_port(port),
                        asks: Vec::new(),
                        ctx: (udp, Ok(addr)),
                    });
                }
                let checked = state.prepare_connect("udp", key.0, port)?;
                Ok(Prepared {
                    target: checked.target,
                    asks: checked.asks,
                    ctx: (udp, Err(checked.ctx)),
                })
            },
            |state, (udp, known)| {
                let to = match known {
                    Ok(addr) => addr,
                    Err(key) => {
                        let addrs = state.resolve_all_safe(&key.0, key.1)?;
                        udp.peers.locked().extend(addrs.iter().copied());
                        let first = addrs[0];
                        udp.allowed.locked().insert(key, addrs);
                        first
                    }
                };
                op(state, &udp, to)
            },
        )
    }
}

fn check_size(data: &[u8]) -> Result<(), ErrorCode> {
    if data.len() > MAX_DATAGRAM {
        Err(ErrorCode::Quota)
    } else {
        Ok(())
    }
}

impl HostUdpSocket for NetView<'_> {
    fn send_to(
        &mut self,
        this: Resource<UdpHandle>,
        data: Vec<u8>,
        peer_host: String,
        peer_port: u16,
    ) -> Result<u32, ErrorCode> {
        self.toward_destination(
            "net.udp-socket.send-to",
            &this,
            Some(&data),
            &peer_host,
            peer_port,
            |state, udp, to| udp.send(state, &data, to),
        )
    }

    fn recv_from(
        &mut self,
        this: Resource<UdpHandle>,
        max_bytes: u32,
    ) -> Result<Option<UdpDatagram>, ErrorCode> {
        let result = self.audited_io("net.udp-socket.recv-from", None, 0, |state| {
            let udp = state.udp(&this)?;
            Ok(udp.receive(state)?.map(|(mut data, peer)| {
                data.truncate(max_bytes as usize);
                UdpDatagram {
                    data,
                    peer_host: peer.ip().to_string(),
                    peer_port: peer.port(),
                }
            }))
        });
        self.ctx().note_waited();
        result
    }

    fn connect(
        &mut self,
        this: Resource<UdpHandle>,
        peer_host: String,
        peer_port: u16,
    ) -> Result<(), ErrorCode> {
        self.toward_destination(
            "net.udp-socket.connect",
            &this,
            None,
            &peer_host,
            peer_port,
            |_, udp, to| {
                *udp.connected.locked() = Some(to);
                // Datagrams queued from other peers no longer belong to the guest.
                udp.queue.locked().retain(|(_, peer)| *peer == to);
                Ok(())
            },
        )
    }

    fn disconnect(&mut self, this: Resource<UdpHandle>) -> Result<(), ErrorCode> {
        self.audited("net.udp-socket.disconnect", None, 0, |state| {
            *state.udp(&this)?.connected.locked() = None;
            Ok(())
        })
    }

    fn send(&mut self, this: Resource<UdpHandle>, data: Vec<u8>) -> Result<u32, ErrorCode> {
        self.audited("net.udp-socket.send", None, data.len() as u64, |state| {
            let udp = state.udp(&this)?;
            check_size(&data)?;
            let to = (*udp.connected.locked()).ok_or(ErrorCode::AddressNotAvailable)?;
            udp.send(state, &data, to)
        })
    }

    fn recv(
        &mut self,
        this: Resource<UdpHandle>,
        max_bytes: u32,
    ) -> Result<Option<Vec<u8>>, ErrorCode> {
        let result = self.audited_io("net.udp-socket.recv", None, 0, |state| {
            let udp = state.udp(&this)?;
            if udp.connected.locked().is_none() {
                return Err(ErrorCode::AddressNotAvailable);
            }
            Ok(udp.receive(state)?.map(|(mut data, _)| {
                data.truncate(max_bytes as usize);
                data
            }))
        });
        self.ctx().note_waited();
        result
    }

    fn peer_addr(&mut self, this: Resource<UdpHandle>) -> Result<Option<String>, ErrorCode> {
        self.audited("net.udp-socket.peer-addr", None, 0, |state| {
            Ok(state.udp(&this)?.connected.locked().map(|a| a.to_string()))
        })
    }

    fn set_read_timeout(
        &mut self,
        this: Resource<UdpHandle>,
        timeout_ms: Option<u64>,
    ) -> Result<(), ErrorCode> {
        self.audited("net.udp-socket.set-read-timeout", None, 0, |state| {
            *state.udp(&this)?.read_timeout.locked() = timeout_ms;
            Ok(())
        })
    }

    fn local_addr(&mut self, this: Resource<UdpHandle>) -> Result<String, ErrorCode> {
        self.audited("net.udp-socket.local-addr", None, 0, |state| {
            let udp = state.udp(&this)?;
            let socket = udp.socket.read_locked();
            socket
                .as_ref()
                .ok_or(ErrorCode::Closed)?
                .local_addr()
                .map(|a| a.to_string())
                .map_err(|e| io_error(&e))
        })
    }

    fn subscribe_readable(&mut self, this: Resource<UdpHandle>) -> Resource<Pollable> {
        let source: Arc<dyn Readiness> = match self.table.get(&this) {
            Ok(h) => Arc::new(UdpReadable(h.0.clone())),
            Err(_) => Arc::new(crate::host::io::AlwaysReady),
        };
        self.audit_infallible("net.udp-socket.subscribe-readable");
        push_pollable(self.table, source)
    }

    fn drop(&mut self, this: Resource<UdpHandle>) -> wasmtime::Result<()> {
        self.table.delete(this)?.0.close();
        Ok(())
    }
}

impl crate::host::audit::Payload for UdpDatagram {
    fn payload_len(&self) -> u64 {
        self.data.len() as u64
    }
}
