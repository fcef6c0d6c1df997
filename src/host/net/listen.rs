//! `tcp-listener` and `unix-listener` (host ABI §2.6). Connections are
//! taken from the OS only when the capsule has room for another stream, so
//! over the quota they stay queued in the kernel. Unix peers must run as
//! this process's user and pass the embedder's accept verifier; refused
//! peers are closed before the guest sees them.

use super::bindings::astrid::net::host::{ErrorCode, HostTcpListener, HostUnixListener};
use super::conn::{Conn, Identity, Socket};
use super::{clamp_poll_ms, io_error, QuotaSlot, MAX_STREAMS};
use crate::gate::{AcceptRequest, AcceptVerdict};
use crate::host::audit::Audited;
use crate::host::io::push_pollable;
use crate::host::io::Pollable;
use crate::host::net::NetView;
use crate::host::shared::CapsuleShared;
use crate::host::view::CallScoped;
use crate::host::view::HostView;
use crate::services::Services;
use crate::signal::MutexExt;
use crate::signal::{Readiness, Signal, SignalWaker, Waiter};
use crate::wait::wait_for;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};
use wasmtime::component::Resource;

enum Kind {
    Tcp(tokio::net::TcpListener),
    Unix {
        listener: tokio::net::UnixListener,
        path: PathBuf,
        /// This process's user: peers must match it.
        uid: u32,
    },
}

/// A connection the OS handed over, not yet given to the guest.
enum Accepted {
    Tcp(tokio::net::TcpStream),
    Unix(tokio::net::UnixStream, Identity),
}

pub(crate) struct Listener {
    /// Taken on close, which releases the address (and the socket file).
    kind: Mutex<Option<Kind>>,
    capsule: Arc<CapsuleShared>,
    signal: Arc<Signal>,
    waker: Waker,
    /// At most one accepted connection waiting for a guest `accept`.
    ready: Mutex<Option<Accepted>>,
    closed: AtomicBool,
    /// Given back when closed: a closed resource the guest keeps does not
    /// count against the quota.
    slot: Mutex<Option<QuotaSlot>>,
}

pub struct TcpListenerHandle(pub(crate) Arc<Listener>);
pub struct UnixListenerHandle(pub(crate) Arc<Listener>);

impl Listener {
    fn new(kind: Kind, capsule: Arc<CapsuleShared>, slot: QuotaSlot) -> Arc<Listener> {
        let signal = Arc::new(Signal::default());
        Arc::new(Listener {
            kind: Mutex::new(Some(kind)),
            capsule,
            waker: Waker::from(Arc::new(SignalWaker(signal.clone()))),
            signal,
            ready: Mutex::new(None),
            closed: AtomicBool::new(false),
            slot: Mutex::new(Some(slot)),
        })
    }

    pub(crate) fn bind_tcp(
        state: &NetView<'_>,
        addr: std::net::SocketAddr,
        slot: QuotaSlot,
    ) -> Result<Arc<Listener>, ErrorCode> {
        let std = std::net::TcpListener::bind(addr).map_err(|e| io_error(&e))?;
        std.set_nonblocking(true).map_err(|e| io_error(&e))?;
        let _enter = state.capsule.services.handle.enter();
        let listener = tokio::net::TcpListener::from_std(std).map_err(|e| io_error(&e))?;
        Ok(Listener::new(
            Kind::Tcp(listener),
            state.capsule.clone(),
            slot,
        ))
    }

    /// Binds the embedder-assigned path. A stale socket left there is
    /// replaced; any other file is `address-in-use`.
    pub(crate) fn bind_unix(
        state: &NetView<'_>,
        path: &Path,
        slot: QuotaSlot,
    ) -> Result<Arc<Listener>, ErrorCode> {
        if let Ok(meta) = std::fs::symlink_metadata(path) {
            if !meta.file_type().is_socket() {
                return Err(ErrorCode::AddressInUse);
            }
            std::fs::remove_file(path).map_err(|_| ErrorCode::AddressInUse)?;
        }
        let _enter = state.capsule.services.handle.enter();
        let listener = tokio::net::UnixListener::bind(path).map_err(|e| io_error(&e))?;
        let uid = std::fs::metadata(path)
            .map_err(|_| ErrorCode::AddressNotAvailable)?
            .uid();
        let kind = Kind::Unix {
            listener,
            path: path.to_path_buf(),
            uid,
        };
        Ok(Listener::new(kind, state.capsule.clone(), slot))
    }

    fn is_closed(&self) -> bool {
        self.closed.load(Ordering::SeqCst)
    }

    /// Takes one connection from the OS into `ready` if there is one,
    /// screening unix peers; otherwise arms the wake-up.
    fn poll_one(&self) -> bool {
        let mut ready = self.ready.locked();
        if ready.is_some() {
            return true;
        }
        if self.is_closed() {
            return false;
        }
        let _enter = self.capsule.services.handle.enter();
        let mut cx = Context::from_waker(&self.waker);
        let kind = self.kind.locked();
        let Some(kind) = kind.as_ref() else {
            return false;
        };
        // Errors such as EMFILE leave the listener ready; a few retries,
        // then give up until the next wake-up instead of spinning.
        for _ in 0..8 {
            match kind {
                Kind::Tcp(listener) => match listener.poll_accept(&mut cx) {
                    Poll::Ready(Ok((stream, _))) => {
                        *ready = Some(Accepted::Tcp(stream));
                        return true;
                    }
                    Poll::Ready(Err(_)) => {}
                    Poll::Pending => return false,
                },
                Kind::Unix { listener, uid, .. } => match listener.poll_accept(&mut cx) {
                    Poll::Ready(Ok((stream, _))) => {
                        if let Some(identity) = self.screen(&stream, *uid) {
                            *ready = Some(Accepted::Unix(stream, identity));
                            return true;
                        }
                        // Refused: dropping the stream closes it.
                    }
                    Poll::Ready(Err(_)) => {}
                    Poll::Pending => return false,
                },
            }
        }
        false
    }

    /// The peer-credential check and the embedder's verifier.
    fn screen(&self, stream: &tokio::net::UnixStream, uid: u32) -> Option<Identity> {
        let cred = stream.peer_cred().ok()?;
        if cred.uid() != uid {
            tracing::debug!(capsule = %self.capsule.name, "unix peer of another user refused");
            return None;
        }
        let principal = match self.capsule.services.accept_verifier() {
            None => None,
            Some(verifier) => {
                let request = AcceptRequest {
                    capsule: &self.capsule.name,
                    pid: cred.pid(),
                    uid: cred.uid(),
                    gid: cred.gid(),
                };
                let verdict =
                    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| verifier(&request)))
                        .unwrap_or(AcceptVerdict::Refuse);
                match verdict {
                    AcceptVerdict::Allow { principal } => principal,
                    AcceptVerdict::Refuse => return None,
                }
            }
        };
        Some(Identity {
            owner: self.capsule.owner.as_deref().map(str::to_string),
            principal,
        })
    }

    /// Waits for a connection under the capsule's stream quota. `Ok(None)`
    /// when `until` passed first.
    fn accept(&self, state: &NetView<'_>, until: Instant) -> Result<Option<Arc<Conn>>, ErrorCode> {
        if self.is_closed() {
            return Err(ErrorCode::Closed);
        }
        let slot = QuotaSlot::claim(&state.net.streams, MAX_STREAMS).ok_or(ErrorCode::Quota)?;
        let got = wait_for(&[&*self.signal], &state.call.token, until, || {
            self.poll_one() || self.is_closed()
        });
        if state.call.token.is_cancelled() || self.is_closed() {
            return Err(ErrorCode::Closed);
        }
        if !got {
            return Ok(None);
        }
        let Some(accepted) = self.ready.locked().take() else {
            return Ok(None);
        };
        Ok(Some(match accepted {
            Accepted::Tcp(stream) => Conn::new(Socket::Tcp(stream), slot, None),
            Accepted::Unix(stream, identity) => {
                let principal = identity.principal.clone();
                let conn = Conn::new(Socket::Unix(stream), slot, Some(identity));
                let runtime = self.capsule.services.clone();
                announce(&runtime, "client.v1.connect", principal.as_deref());
                conn.set_on_close(Box::new(move || {
                    announce(&runtime, "client.v1.disconnect", principal.as_deref());
                }));
                conn
            }
        }))
    }

    fn close(&self) {
        if self.closed.swap(true, Ordering::SeqCst) {
            return;
        }
        self.ready.locked().take();
        release(self.kind.locked().take());
        self.slot.locked().take();
        self.signal.notify();
    }
}

/// Closes a listener's socket; a unix listener's file goes with it.
fn release(kind: Option<Kind>) {
    if let Some(Kind::Unix { path, .. }) = &kind {
        let _ = std::fs::remove_file(path);
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        release(self.kind.get_mut_recovered().take());
    }
}

impl CallScoped for Listener {
    fn close(&self) {
        Listener::close(self);
    }
}

/// Publishes a unix connection event with system attribution (host ABI
/// §2.6); the payload names the connection's verified principal.
fn announce(services: &Services, topic: &str, principal: Option<&str>) {
    let Some(peers) = services.peers() else {
        return; // the runtime is shutting down
    };
    let payload = serde_json::json!({ "principal": principal }).to_string();
    let _ = peers.publish(crate::bus::Publish {
        topic,
        payload: &payload,
        source_id: services.host_source_id.clone(),
        attribution: crate::bus::Attribution::System,
        depth: 0,
        timestamp_ms: crate::host::sys::wall_clock_ms(),
    });
}

struct ListenerReady(Arc<Listener>);

impl Readiness for ListenerReady {
    fn is_ready(&self) -> bool {
        self.0.poll_one() || self.0.is_closed()
    }
    fn register(&self, waiter: &Arc<Waiter>) {
        self.0.signal.register(waiter);
    }
}

impl NetView<'_> {
    pub(crate) fn push_tcp_listener(
        &mut self,
        listener: Arc<Listener>,
    ) -> Result<Resource<TcpListenerHandle>, ErrorCode> {
        let weak = Arc::downgrade(&listener);
        let handle = self
            .table
            .push(TcpListenerHandle(listener))
            .map_err(|_| ErrorCode::Quota)?;
        self.call_scoped.track(weak);
        Ok(handle)
    }

    pub(crate) fn push_unix_listener(
        &mut self,
        listener: Arc<Listener>,
    ) -> Result<Resource<UnixListenerHandle>, ErrorCode> {
        let weak = Arc::downgrade(&listener);
        let handle = self
            .table
            .push(UnixListenerHandle(listener))
            .map_err(|_| ErrorCode::Quota)?;
        self.call_scoped.track(weak);
        Ok(handle)
    }

    /// `accept` (no limit but the call deadline, then `timeout`) and
    /// `poll-accept` (`Some(ms)`: `none` when nothing came in time).
    fn accept_on(
        &mut self,
        call: &'static str,
        listener: Result<Arc<Listener>, ErrorCode>,
        wait: Option<u64>,
    ) -> Result<Option<Resource<super::TcpStreamHandle>>, ErrorCode> {
        let result = self.audited(call, None, 0, |state| {
            if state.call.token.is_cancelled() {
                return Err(ErrorCode::Closed);
            }
            let listener = listener?;
            let until = match wait {
                Some(ms) => state
                    .call
                    .deadline
                    .min(Instant::now() + Duration::from_millis(clamp_poll_ms(ms))),
                None => state.call.deadline,
            };
            match listener.accept(state, until)? {
                Some(conn) => state.push_conn(conn).map(Some),
                None if wait.is_none() => Err(ErrorCode::Timeout),
                None => Ok(None),
            }
        });
        self.ctx().note_waited();
        result
    }
}

/// Both listener handles, for the methods they share.
trait ListenerHandle: Send + 'static {
    fn listener(&self) -> &Arc<Listener>;
}

impl ListenerHandle for TcpListenerHandle {
    fn listener(&self) -> &Arc<Listener> {
        &self.0
    }
}

impl ListenerHandle for UnixListenerHandle {
    fn listener(&self) -> &Arc<Listener> {
        &self.0
    }
}

impl NetView<'_> {
    fn listener_of<H: ListenerHandle>(
        &self,
        this: &Resource<H>,
    ) -> Result<Arc<Listener>, ErrorCode> {
        self.table
            .get(this)
            .map(|h| h.listener().clone())
            .map_err(|_| ErrorCode::InvalidHandle)
    }

    fn listener_readiness<H: ListenerHandle>(
        &mut self,
        call: &'static str,
        this: &Resource<H>,
    ) -> Resource<Pollable> {
        let source: Arc<dyn Readiness> = match self.listener_of(this) {
            Ok(listener) => Arc::new(ListenerReady(listener)),
            Err(_) => Arc::new(crate::host::io::AlwaysReady),
        };
        self.audit_infallible(call);
        push_pollable(self.table, source)
    }

    fn drop_listener<H: ListenerHandle>(&mut self, this: Resource<H>) -> wasmtime::Result<()> {
        self.table.delete(this)?.listener().close();
        Ok(())
    }
}

impl HostUnixListener for NetView<'_> {
    fn accept(
        &mut self,
        this: Resource<UnixListenerHandle>,
    ) -> Result<Resource<super::TcpStreamHandle>, ErrorCode> {
        let listener = self.listener_of(&this);
        self.accept_on("net.unix-listener.accept", listener, None)
            .and_then(|c| c.ok_or(ErrorCode::Timeout))
    }

    fn poll_accept(
        &mut self,
        this: Resource<UnixListenerHandle>,
        timeout_ms: u64,
    ) -> Result<Option<Resource<super::TcpStreamHandle>>, ErrorCode> {
        let listener = self.listener_of(&this);
        self.accept_on("net.unix-listener.poll-accept", listener, Some(timeout_ms))
    }

    fn subscribe_readiness(&mut self, this: Resource<UnixListenerHandle>) -> Resource<Pollable> {
        self.listener_readiness("net.unix-listener.subscribe-readiness", &this)
    }

    fn drop(&mut self, this: Resource<UnixListenerHandle>) -> wasmtime::Result<()> {
        self.drop_listener(this)
    }
}

impl HostTcpListener for NetView<'_> {
    fn accept(
        &mut self,
        this: Resource<TcpListenerHandle>,
    ) -> Result<Resource<super::TcpStreamHandle>, ErrorCode> {
        let listener = self.listener_of(&this);
        self.accept_on("net.tcp-listener.accept", listener, None)
            .and_then(|c| c.ok_or(ErrorCode::Timeout))
    }

    fn poll_accept(
        &mut self,
        this: Resource<TcpListenerHandle>,
        timeout_ms: u64,
    ) -> Result<Option<Resource<super::TcpStreamHandle>>, ErrorCode> {
        let listener = self.listener_of(&this);
        self.accept_on("net.tcp-listener.poll-accept", listener, Some(timeout_ms))
    }

    fn local_addr(&mut self, this: Resource<TcpListenerHandle>) -> Result<String, ErrorCode> {
        self.audited("net.tcp-listener.local-addr", None, 0, |state| {
            if state.call.token.is_cancelled() {
                return Err(ErrorCode::Closed);
            }
            let listener = state.listener_of(&this)?;
            let kind = listener.kind.locked();
            let addr = match kind.as_ref() {
                Some(Kind::Tcp(l)) => l
                    .local_addr()
                    .map(|a| a.to_string())
                    .map_err(|e| io_error(&e)),
                Some(Kind::Unix { .. }) => Ok("unix".into()),
                None => Err(ErrorCode::Closed),
            };
            addr
        })
    }

    fn subscribe_readiness(&mut self, this: Resource<TcpListenerHandle>) -> Resource<Pollable> {
        self.listener_readiness("net.tcp-listener.subscribe-readiness", &this)
    }

    fn drop(&mut self, this: Resource<TcpListenerHandle>) -> wasmtime::Result<()> {
        self.drop_listener(this)
    }
}
