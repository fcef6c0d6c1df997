//! `tcp-stream` (host ABI §2.6) for TCP and unix connections: framed
//! messages, raw bytes, peek, options, shutdown, and `astrid:io` views.
//! Framed, raw and stream reads share one receive buffer, so mixing them
//! consumes bytes in call order.

use super::bindings::astrid::net::host::{ErrorCode, NetReadStatus};
use super::{io_error, QuotaSlot};
use crate::host::io::{ByteSink, ByteSource, StreamFailure};
use crate::host::net::NetView;
use crate::host::view::CallScoped;
use crate::signal::{MutexExt, RwLockExt};
use crate::signal::{Readiness, Signal, SignalWaker, Waiter};
use crate::wait::wait_for;
use std::collections::VecDeque;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

/// Largest frame `read` / `write` accept (host ABI §1 payload ceiling).
pub const MAX_FRAME: usize = 10 << 20;
/// Most bytes one raw read returns.
pub(crate) const MAX_RAW_READ: usize = 1 << 20;
/// How long `read` waits for a frame header.
pub(crate) const FRAME_HEADER_WAIT: Duration = Duration::from_millis(50);
/// Bytes read from the socket at a time.
pub(crate) const READ_CHUNK: usize = 64 << 10;
/// Bytes an output-stream view buffers before `check-write` reports no room.
pub(crate) const WRITE_BUFFER: usize = 256 << 10;
/// Longest a connect may take over all resolved addresses.
pub(crate) const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

pub(crate) enum Socket {
    Tcp(tokio::net::TcpStream),
    Unix(tokio::net::UnixStream),
    /// After `close`: the OS socket is gone, even if the guest keeps its handle.
    Closed,
}

fn gone() -> io::Error {
    io::Error::from(io::ErrorKind::NotConnected)
}

impl Socket {
    pub(crate) fn try_read(&self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Socket::Tcp(s) => s.try_read(buf),
            Socket::Unix(s) => s.try_read(buf),
            Socket::Closed => Err(gone()),
        }
    }

    pub(crate) fn try_write(&self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Socket::Tcp(s) => s.try_write(buf),
            Socket::Unix(s) => s.try_write(buf),
            Socket::Closed => Err(gone()),
        }
    }

    pub(crate) fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self {
            Socket::Tcp(s) => s.poll_read_ready(cx),
            Socket::Unix(s) => s.poll_read_ready(cx),
            Socket::Closed => Poll::Ready(Err(gone())),
        }
    }

    pub(crate) fn poll_write_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self {
            Socket::Tcp(s) => s.poll_write_ready(cx),
            Socket::Unix(s) => s.poll_write_ready(cx),
            Socket::Closed => Poll::Ready(Err(gone())),
        }
    }

    pub(crate) fn sock_ref(&self) -> Result<socket2::SockRef<'_>, ErrorCode> {
        match self {
            Socket::Tcp(s) => Ok(socket2::SockRef::from(s)),
            Socket::Unix(s) => Ok(socket2::SockRef::from(s)),
            Socket::Closed => Err(ErrorCode::Closed),
        }
    }

    pub(crate) fn tcp(&self) -> Result<&tokio::net::TcpStream, ErrorCode> {
        match self {
            Socket::Tcp(s) => Ok(s),
            Socket::Unix(_) => Err(ErrorCode::NotTcp),
            Socket::Closed => Err(ErrorCode::Closed),
        }
    }
}

/// Who an accepted local connection belongs to (`astrid:request-context`).
pub(crate) struct Identity {
    pub owner: Option<String>,
    pub principal: Option<String>,
}

#[derive(Default)]
struct Rx {
    buf: Vec<u8>,
    /// Bytes of `buf` before this were consumed.
    start: usize,
    eof: bool,
    reset: bool,
}

impl Rx {
    pub(crate) fn available(&self) -> usize {
        self.buf.len() - self.start
    }

    pub(crate) fn bytes(&self) -> &[u8] {
        &self.buf[self.start..]
    }

    pub(crate) fn take(&mut self, n: usize) -> Vec<u8> {
        let out = self.buf[self.start..self.start + n].to_vec();
        self.start += n;
        if self.start == self.buf.len() {
            self.buf.clear();
            self.start = 0;
        }
        out
    }

    pub(crate) fn compact(&mut self) {
        if self.start > 0 && self.start >= self.buf.len() / 2 {
            self.buf.drain(..self.start);
            self.start = 0;
        }
    }
}

/// One connection, shared by the guest resource and its io views.
pub(crate) struct Conn {
    pub(crate) socket: std::sync::RwLock<Socket>,
    rx: Mutex<Rx>,
    /// Bytes the output-stream view accepted that the socket has not taken.
    pub(crate) tx: Mutex<VecDeque<u8>>,
    pub(crate) readable: Arc<Signal>,
    pub(crate) read_waker: Waker,
    pub(crate) writable: Arc<Signal>,
    pub(crate) write_waker: Waker,
    pub(crate) closed: AtomicBool,
    pub(crate) read_timeout: Mutex<Option<u64>>,
    pub(crate) write_timeout: Mutex<Option<u64>>,
    pub(crate) read_view_taken: AtomicBool,
    pub(crate) write_view_taken: AtomicBool,
    pub(crate) identity: Option<Identity>,
    /// Runs once when the connection closes (unix `client.v1.disconnect`).
    pub(crate) on_close: Mutex<Option<Box<dyn FnOnce() + Send>>>,
    /// Given back when closed: a closed resource the guest keeps does not
    /// count against the quota.
    pub(crate) slot: Mutex<Option<QuotaSlot>>,
}

/// The guest's `tcp-stream`.
pub struct TcpStreamHandle {
    pub(crate) conn: Arc<Conn>,
}

impl Conn {
    pub(crate) fn new(socket: Socket, slot: QuotaSlot, identity: Option<Identity>) -> Arc<Conn> {
        let readable = Arc::new(Signal::default());
        let writable = Arc::new(Signal::default());
        Arc::new(Conn {
            socket: std::sync::RwLock::new(socket),
            rx: Mutex::new(Rx::default()),
            tx: Mutex::new(VecDeque::new()),
            read_waker: Waker::from(Arc::new(SignalWaker(readable.clone()))),
            readable,
            write_waker: Waker::from(Arc::new(SignalWaker(writable.clone()))),
            writable,
            closed: AtomicBool::new(false),
            read_timeout: Mutex::new(None),
            write_timeout: Mutex::new(None),
            read_view_taken: AtomicBool::new(false),
            write_view_taken: AtomicBool::new(false),
            identity,
            on_close: Mutex::new(None),
            slot: Mutex::new(Some(slot)),
        })
    }

    pub(crate) fn set_on_close(&self, hook: Box<dyn FnOnce() + Send>) {
        *self.on_close.locked() = Some(hook);
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.closed.load(Ordering::SeqCst)
    }

    pub(crate) fn socket(&self) -> std::sync::RwLockReadGuard<'_, Socket> {
        self.socket.read_locked()
    }

    /// Reads from the socket until `want` bytes are buffered, the stream
    /// ends, or nothing more is there; in that case it asks the I/O driver
    /// to wake `readable` when more arrives.
    fn fill(&self, rx: &mut Rx, want: usize) {
        while rx.available() < want && !rx.eof && !rx.reset && !self.is_closed() {
            rx.compact();
            let len = rx.buf.len();
            rx.buf.resize(len + READ_CHUNK, 0);
            let result = self.socket().try_read(&mut rx.buf[len..]);
            rx.buf.truncate(len + *result.as_ref().unwrap_or(&0));
            match result {
                Ok(0) => rx.eof = true,
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    let mut cx = Context::from_waker(&self.read_waker);
                    if self.socket().poll_read_ready(&mut cx).is_pending() {
                        return;
                    }
                }
                Err(_) => rx.reset = true,
            }
        }
    }

    /// Whether a read wanting `want` bytes can answer now.
    pub(crate) fn can_read(&self, want: usize) -> bool {
        let mut rx = self.rx.locked();
        self.fill(&mut rx, want);
        rx.available() >= want || rx.eof || rx.reset || self.is_closed()
    }

    /// Waits until `want` bytes are buffered (or the stream ended), under
    /// the read timeout: `Some(0)` never waits (`would-block`); expiry and
    /// the call deadline are `timeout`; cancel is `closed`.
    pub(crate) fn wait_readable(
        &self,
        state: &NetView<'_>,
        want: usize,
        timeout: Option<Duration>,
    ) -> Result<(), ErrorCode> {
        if self.can_read(want) {
            return Ok(());
        }
        if timeout == Some(Duration::ZERO) {
            return Err(ErrorCode::WouldBlock);
        }
        let until = timeout.map_or(state.call.deadline, |t| {
            state.call.deadline.min(Instant::now() + t)
        });
        if wait_for(&[&*self.readable], &state.call.token, until, || {
            self.can_read(want)
        }) {
            Ok(())
        } else if state.call.token.is_cancelled() {
            Err(ErrorCode::Closed)
        } else {
            Err(ErrorCode::Timeout)
        }
    }

    pub(crate) fn read_timeout(&self) -> Option<Duration> {
        self.read_timeout.locked().map(Duration::from_millis)
    }

    pub(crate) fn write_timeout(&self) -> Option<Duration> {
        self.write_timeout.locked().map(Duration::from_millis)
    }

    /// Pushes out bytes the output-stream view buffered; arms `writable`
    /// when the socket is full.
    pub(crate) fn drain(&self, tx: &mut VecDeque<u8>) -> Result<(), StreamFailure> {
        while !tx.is_empty() {
            let (front, _) = tx.as_slices();
            match self.socket().try_write(front) {
                Ok(n) => {
                    tx.drain(..n);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    let mut cx = Context::from_waker(&self.write_waker);
                    if self.socket().poll_write_ready(&mut cx).is_pending() {
                        return Ok(());
                    }
                }
                Err(_) => {
                    tx.clear();
                    return Err(StreamFailure::Failed("connection reset".into()));
                }
            }
        }
        Ok(())
    }

    /// Writes what the socket takes now (0 when it is full and armed).
    pub(crate) fn write_now(&self, data: &[u8]) -> Result<usize, ErrorCode> {
        if self.is_closed() {
            return Err(ErrorCode::Closed);
        }
        let mut tx = self.tx.locked();
        self.drain(&mut tx)
            .map_err(|_| ErrorCode::ConnectionReset)?;
        if !tx.is_empty() {
            return Ok(0);
        }
        loop {
            match self.socket().try_write(data) {
                Ok(n) => return Ok(n),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    let mut cx = Context::from_waker(&self.write_waker);
                    if self.socket().poll_write_ready(&mut cx).is_pending() {
                        return Ok(0);
                    }
                }
                Err(e) => return Err(io_error(&e)),
            }
        }
    }

    /// Writes at least one byte of `data`, waiting under the write timeout.
    pub(crate) fn write_some(&self, state: &NetView<'_>, data: &[u8]) -> Result<usize, ErrorCode> {
        let mut outcome = self.write_now(data);
        if !matches!(outcome, Ok(0)) || data.is_empty() {
            return outcome;
        }
        let timeout = self.write_timeout();
        if timeout == Some(Duration::ZERO) {
            return Err(ErrorCode::WouldBlock);
        }
        let until = timeout.map_or(state.call.deadline, |t| {
            state.call.deadline.min(Instant::now() + t)
        });
        let done = wait_for(&[&*self.writable], &state.call.token, until, || {
            outcome = self.write_now(data);
            !matches!(outcome, Ok(0))
        });
        if done {
            outcome
        } else if state.call.token.is_cancelled() {
            Err(ErrorCode::Closed)
        } else {
            Err(ErrorCode::Timeout)
        }
    }

    /// Writes a whole frame. The write timeout applies to its first byte;
    /// a frame that cannot be finished (cancel, deadline, reset) closes the
    /// stream, since the peer could never find the next frame boundary.
    pub(crate) fn write_frame(&self, state: &NetView<'_>, frame: &[u8]) -> Result<(), ErrorCode> {
        let mut rest = &frame[self.write_some(state, frame)?..];
        while !rest.is_empty() {
            match self.write_now(rest) {
                Ok(0) => {
                    let done = wait_for(
                        &[&*self.writable],
                        &state.call.token,
                        state.call.deadline,
                        || self.is_closed() || self.can_write(),
                    );
                    if !done {
                        self.close();
                        return Err(if state.call.token.is_cancelled() {
                            ErrorCode::Closed
                        } else {
                            ErrorCode::Timeout
                        });
                    }
                }
                Ok(n) => rest = &rest[n..],
                Err(e) => {
                    self.close();
                    return Err(e);
                }
            }
        }
        Ok(())
    }

    /// Whether the socket takes bytes now (arms `writable` when not).
    pub(crate) fn can_write(&self) -> bool {
        let socket = self.socket();
        let mut cx = Context::from_waker(&self.write_waker);
        !matches!(socket.poll_write_ready(&mut cx), Poll::Pending)
    }

    pub(crate) fn read_frame(&self, state: &NetView<'_>) -> Result<NetReadStatus, ErrorCode> {
        match self.wait_readable(state, 4, Some(FRAME_HEADER_WAIT)) {
            Ok(()) => {}
            Err(ErrorCode::Timeout | ErrorCode::WouldBlock) => {
                if Instant::now() >= state.call.deadline {
                    return Err(ErrorCode::Timeout);
                }
                if self.rx.locked().available() == 0 {
                    return Ok(NetReadStatus::Pending);
                }
                // A header has begun: the rest comes under the read timeout.
                self.wait_readable(state, 4, self.read_timeout())?;
            }
            Err(e) => return Err(e),
        }
        let len = {
            let rx = self.rx.locked();
            if rx.available() < 4 {
                return self.ended(&rx, true);
            }
            let header = rx.bytes();
            u32::from_be_bytes([header[0], header[1], header[2], header[3]]) as usize
        };
        if len > MAX_FRAME {
            // The stream cannot be resynchronised past a frame we refuse.
            self.close();
            return Err(ErrorCode::Quota);
        }
        self.wait_readable(state, 4 + len, self.read_timeout())?;
        let mut rx = self.rx.locked();
        if rx.available() < 4 + len {
            return self.ended(&rx, true);
        }
        rx.take(4);
        Ok(NetReadStatus::Data(rx.take(len)))
    }

    /// The answer of a read that found the stream over.
    fn ended(&self, rx: &Rx, framed: bool) -> Result<NetReadStatus, ErrorCode> {
        if rx.reset {
            Err(ErrorCode::ConnectionReset)
        } else if framed && rx.available() > 0 {
            // A frame cut short by the end of the stream.
            Err(ErrorCode::ConnectionReset)
        } else {
            Ok(NetReadStatus::Closed)
        }
    }

    pub(crate) fn read_raw(
        &self,
        state: &NetView<'_>,
        max: u32,
        consume: bool,
    ) -> Result<Vec<u8>, ErrorCode> {
        let max = (max as usize).min(MAX_RAW_READ);
        if max == 0 {
            return Ok(Vec::new());
        }
        self.wait_readable(state, 1, self.read_timeout())?;
        let mut rx = self.rx.locked();
        if rx.available() == 0 {
            if rx.reset {
                return Err(ErrorCode::ConnectionReset);
            }
            if self.is_closed() && !rx.eof {
                return Err(ErrorCode::Closed);
            }
            return Ok(Vec::new());
        }
        let n = rx.available().min(max);
        Ok(if consume {
            rx.take(n)
        } else {
            rx.bytes()[..n].to_vec()
        })
    }

    /// Shuts the socket and wakes every waiter; idempotent.
    pub(crate) fn close(&self) {
        if self.closed.swap(true, Ordering::SeqCst) {
            return;
        }
        if let Ok(sock) = self.socket().sock_ref() {
            let _ = sock.shutdown(std::net::Shutdown::Both);
        }
        // Drop the OS socket now: a guest keeping the handle past its call
        // must not keep the descriptor.
        *self.socket.write_locked() = Socket::Closed;
        self.slot.locked().take();
        self.readable.notify();
        self.writable.notify();
        if let Some(hook) = self.on_close.locked().take() {
            hook();
        }
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        if let Some(hook) = self.on_close.locked().take() {
            hook();
        }
    }
}

impl CallScoped for Conn {
    fn close(&self) {
        Conn::close(self);
    }
}

/// Connects to the vetted `addrs` in order, 10 s in total.
pub(crate) fn connect(
    state: &NetView<'_>,
    addrs: Vec<SocketAddr>,
    slot: QuotaSlot,
) -> Result<Arc<Conn>, ErrorCode> {
    let token = &state.call.token;
    let deadline = state.call.deadline.min(Instant::now() + CONNECT_TIMEOUT);
    let attempt = async move {
        let mut last = ErrorCode::ConnectionRefused;
        for addr in addrs {
            match tokio::net::TcpStream::connect(addr).await {
                Ok(stream) => return Ok(stream),
                Err(e) => last = io_error(&e),
            }
        }
        Err(last)
    };
    match crate::wait::run_on(&state.capsule.services.handle, attempt, token, deadline) {
        Some(Ok(stream)) => Ok(Conn::new(Socket::Tcp(stream), slot, None)),
        Some(Err(e)) => Err(e),
        None if token.is_cancelled() => Err(ErrorCode::Closed),
        None => Err(ErrorCode::Timeout),
    }
}

/// Readable when a read of one byte would answer now.
pub(crate) struct ConnReadable(pub(crate) Arc<Conn>);

impl Readiness for ConnReadable {
    fn is_ready(&self) -> bool {
        self.0.can_read(1)
    }
    fn register(&self, waiter: &Arc<Waiter>) {
        self.0.readable.register(waiter);
    }
}

/// The `read-stream` view.
pub(crate) struct ConnSource(pub(crate) Arc<Conn>);

impl ByteSource for ConnSource {
    fn channel(&self) -> Option<crate::usage::Channel> {
        Some(crate::usage::Channel::Net)
    }

    fn read(&self, max: usize) -> Result<Vec<u8>, StreamFailure> {
        let conn = &self.0;
        let mut rx = conn.rx.locked();
        conn.fill(&mut rx, 1);
        if rx.available() > 0 {
            let n = rx.available().min(max);
            return Ok(rx.take(n));
        }
        if rx.reset {
            Err(StreamFailure::Failed("connection reset".into()))
        } else if rx.eof || conn.is_closed() {
            Err(StreamFailure::Closed)
        } else {
            Ok(Vec::new())
        }
    }

    fn readiness(&self) -> Arc<dyn Readiness> {
        Arc::new(ConnReadable(self.0.clone()))
    }
}

/// Writable while the view's buffer has room.
pub(crate) struct ConnWritable(pub(crate) Arc<Conn>);

impl Readiness for ConnWritable {
    fn is_ready(&self) -> bool {
        let conn = &self.0;
        let mut tx = conn.tx.locked();
        conn.drain(&mut tx).is_err() || tx.len() < WRITE_BUFFER || conn.is_closed()
    }
    fn register(&self, waiter: &Arc<Waiter>) {
        self.0.writable.register(waiter);
    }
}

/// The `write-stream` view.
pub(crate) struct ConnSink(pub(crate) Arc<Conn>);

impl ByteSink for ConnSink {
    fn channel(&self) -> Option<crate::usage::Channel> {
        Some(crate::usage::Channel::Net)
    }

    fn check_write(&self) -> Result<usize, StreamFailure> {
        let conn = &self.0;
        if conn.is_closed() {
            return Err(StreamFailure::Closed);
        }
        let mut tx = conn.tx.locked();
        conn.drain(&mut tx)?;
        Ok(WRITE_BUFFER - tx.len().min(WRITE_BUFFER))
    }

    fn write(&self, bytes: &[u8]) -> Result<(), StreamFailure> {
        let conn = &self.0;
        if conn.is_closed() {
            return Err(StreamFailure::Closed);
        }
        let mut tx = conn.tx.locked();
        tx.extend(bytes);
        conn.drain(&mut tx)
    }

    fn flush(&self) -> Result<(), StreamFailure> {
        let conn = &self.0;
        if conn.is_closed() {
            return Err(StreamFailure::Closed);
        }
        conn.drain(&mut conn.tx.locked())
    }

    fn flushed(&self) -> bool {
        let conn = &self.0;
        let mut tx = conn.tx.locked();
        conn.drain(&mut tx).is_err() || tx.is_empty() || conn.is_closed()
    }

    fn readiness(&self) -> Arc<dyn Readiness> {
        Arc::new(ConnWritable(self.0.clone()))
    }
}
