//! The guest's `tcp-stream` (host ABI §2.6): raw and framed reads and
//! writes, shutdown, options and streams over a connection.

use super::bindings::astrid::net::host::{ErrorCode, HostTcpStream, NetReadStatus, ShutdownHow};
use super::conn::{Conn, ConnReadable, ConnSink, ConnSource, Socket, TcpStreamHandle, MAX_FRAME};
use super::io_error;
use crate::host::audit::Audited;
use crate::host::io::push_input_stream;
use crate::host::io::push_output_stream;
use crate::host::io::push_pollable;
use crate::host::io::{ByteSink, ByteSource, ClosedStream, InputStream, OutputStream, Pollable};
use crate::host::net::NetView;
use crate::host::view::HostView;
use crate::signal::MutexExt;
use crate::signal::Readiness;
use std::io;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use wasmtime::component::Resource;

fn option_failed(_: io::Error) -> ErrorCode {
    ErrorCode::Unknown("the socket rejected the option".into())
}

impl NetView<'_> {
    /// The connection behind a guest handle (`closed` once it was closed).
    pub(crate) fn conn(&self, this: &Resource<TcpStreamHandle>) -> Result<Arc<Conn>, ErrorCode> {
        let conn = self
            .table
            .get(this)
            .map(|h| h.conn.clone())
            .map_err(|_| ErrorCode::InvalidHandle)?;
        Ok(conn)
    }

    /// A new guest `tcp-stream`, closed when the current call ends.
    pub(crate) fn push_conn(
        &mut self,
        conn: Arc<Conn>,
    ) -> Result<Resource<TcpStreamHandle>, ErrorCode> {
        let weak = Arc::downgrade(&conn);
        let handle = self
            .table
            .push(TcpStreamHandle { conn })
            .map_err(|_| ErrorCode::Quota)?;
        self.call_scoped.track(weak);
        Ok(handle)
    }

    /// Runs a `tcp-stream` method: cancel check, the live connection, and
    /// exactly one audit event.
    fn on_conn<T: crate::host::audit::Payload>(
        &mut self,
        call: &'static str,
        this: &Resource<TcpStreamHandle>,
        bytes_in: u64,
        body: impl FnOnce(&NetView<'_>, &Conn) -> Result<T, ErrorCode>,
    ) -> Result<T, ErrorCode> {
        self.audited_io(call, None, bytes_in, |state| {
            if state.call.token.is_cancelled() {
                return Err(ErrorCode::Closed);
            }
            let conn = state.conn(this)?;
            if conn.is_closed() {
                return Err(ErrorCode::Closed);
            }
            body(state, &conn)
        })
    }
}

impl HostTcpStream for NetView<'_> {
    fn read(&mut self, this: Resource<TcpStreamHandle>) -> Result<NetReadStatus, ErrorCode> {
        let result = self.on_conn("net.tcp-stream.read", &this, 0, |state, conn| {
            conn.read_frame(state)
        });
        self.ctx().note_waited();
        result
    }

    fn write(&mut self, this: Resource<TcpStreamHandle>, data: Vec<u8>) -> Result<(), ErrorCode> {
        self.on_conn(
            "net.tcp-stream.write",
            &this,
            data.len() as u64,
            |state, conn| {
                if data.len() > MAX_FRAME {
                    return Err(ErrorCode::Quota);
                }
                let mut frame = Vec::with_capacity(4 + data.len());
                frame.extend_from_slice(&(data.len() as u32).to_be_bytes());
                frame.extend_from_slice(&data);
                conn.write_frame(state, &frame)
            },
        )
    }

    fn read_bytes(
        &mut self,
        this: Resource<TcpStreamHandle>,
        max_bytes: u32,
    ) -> Result<Vec<u8>, ErrorCode> {
        let result = self.on_conn("net.tcp-stream.read-bytes", &this, 0, |state, conn| {
            conn.read_raw(state, max_bytes, true)
        });
        self.ctx().note_waited();
        result
    }

    fn write_bytes(
        &mut self,
        this: Resource<TcpStreamHandle>,
        data: Vec<u8>,
    ) -> Result<u32, ErrorCode> {
        self.on_conn(
            "net.tcp-stream.write-bytes",
            &this,
            data.len() as u64,
            |state, conn| {
                if data.len() > MAX_FRAME {
                    return Err(ErrorCode::Quota);
                }
                if data.is_empty() {
                    return Ok(0);
                }
                conn.write_some(state, &data).map(|n| n as u32)
            },
        )
    }

    fn peek(
        &mut self,
        this: Resource<TcpStreamHandle>,
        max_bytes: u32,
    ) -> Result<Vec<u8>, ErrorCode> {
        let result = self.on_conn("net.tcp-stream.peek", &this, 0, |state, conn| {
            conn.read_raw(state, max_bytes, false)
        });
        self.ctx().note_waited();
        result
    }

    fn shutdown(
        &mut self,
        this: Resource<TcpStreamHandle>,
        how: ShutdownHow,
    ) -> Result<(), ErrorCode> {
        self.on_conn("net.tcp-stream.shutdown", &this, 0, |_, conn| {
            let how = match how {
                ShutdownHow::Receive => std::net::Shutdown::Read,
                ShutdownHow::Send => std::net::Shutdown::Write,
                ShutdownHow::Both => std::net::Shutdown::Both,
            };
            if how != std::net::Shutdown::Read {
                let mut tx = conn.tx.locked();
                let _ = conn.drain(&mut tx);
            }
            let socket = conn.socket();
            socket.sock_ref()?.shutdown(how).map_err(|e| io_error(&e))
        })
    }

    fn peer_addr(&mut self, this: Resource<TcpStreamHandle>) -> Result<String, ErrorCode> {
        self.on_conn(
            "net.tcp-stream.peer-addr",
            &this,
            0,
            |_, conn| match &*conn.socket() {
                Socket::Tcp(s) => s
                    .peer_addr()
                    .map(|a| a.to_string())
                    .map_err(|e| io_error(&e)),
                Socket::Unix(_) => Ok("unix".into()),
                Socket::Closed => Err(ErrorCode::Closed),
            },
        )
    }

    fn local_addr(&mut self, this: Resource<TcpStreamHandle>) -> Result<String, ErrorCode> {
        self.on_conn(
            "net.tcp-stream.local-addr",
            &this,
            0,
            |_, conn| match &*conn.socket() {
                Socket::Tcp(s) => s
                    .local_addr()
                    .map(|a| a.to_string())
                    .map_err(|e| io_error(&e)),
                Socket::Unix(_) => Ok("unix".into()),
                Socket::Closed => Err(ErrorCode::Closed),
            },
        )
    }

    fn set_nodelay(
        &mut self,
        this: Resource<TcpStreamHandle>,
        nodelay: bool,
    ) -> Result<(), ErrorCode> {
        self.on_conn("net.tcp-stream.set-nodelay", &this, 0, |_, conn| {
            conn.socket()
                .tcp()?
                .set_nodelay(nodelay)
                .map_err(option_failed)
        })
    }

    fn nodelay(&mut self, this: Resource<TcpStreamHandle>) -> Result<bool, ErrorCode> {
        self.on_conn("net.tcp-stream.nodelay", &this, 0, |_, conn| {
            let socket = conn.socket();
            socket.tcp()?.nodelay().map_err(option_failed)
        })
    }

    fn set_read_timeout(
        &mut self,
        this: Resource<TcpStreamHandle>,
        timeout_ms: Option<u64>,
    ) -> Result<(), ErrorCode> {
        self.on_conn("net.tcp-stream.set-read-timeout", &this, 0, |_, conn| {
            *conn.read_timeout.locked() = timeout_ms;
            Ok(())
        })
    }

    fn read_timeout(&mut self, this: Resource<TcpStreamHandle>) -> Result<Option<u64>, ErrorCode> {
        self.on_conn("net.tcp-stream.read-timeout", &this, 0, |_, conn| {
            Ok(*conn.read_timeout.locked())
        })
    }

    fn set_write_timeout(
        &mut self,
        this: Resource<TcpStreamHandle>,
        timeout_ms: Option<u64>,
    ) -> Result<(), ErrorCode> {
        self.on_conn("net.tcp-stream.set-write-timeout", &this, 0, |_, conn| {
            *conn.write_timeout.locked() = timeout_ms;
            Ok(())
        })
    }

    fn write_timeout(&mut self, this: Resource<TcpStreamHandle>) -> Result<Option<u64>, ErrorCode> {
        self.on_conn("net.tcp-stream.write-timeout", &this, 0, |_, conn| {
            Ok(*conn.write_timeout.locked())
        })
    }

    fn set_hop_limit(
        &mut self,
        this: Resource<TcpStreamHandle>,
        hops: u32,
    ) -> Result<(), ErrorCode> {
        self.on_conn("net.tcp-stream.set-hop-limit", &this, 0, |_, conn| {
            let socket = conn.socket();
            let tcp = socket.tcp()?;
            let v6 = tcp.local_addr().map_err(option_failed)?.is_ipv6();
            let sock = socket.sock_ref()?;
            if v6 {
                sock.set_unicast_hops_v6(hops).map_err(option_failed)
            } else {
                tcp.set_ttl(hops).map_err(option_failed)
            }
        })
    }

    fn hop_limit(&mut self, this: Resource<TcpStreamHandle>) -> Result<u32, ErrorCode> {
        self.on_conn("net.tcp-stream.hop-limit", &this, 0, |_, conn| {
            let socket = conn.socket();
            let tcp = socket.tcp()?;
            let v6 = tcp.local_addr().map_err(option_failed)?.is_ipv6();
            if v6 {
                socket.sock_ref()?.unicast_hops_v6().map_err(option_failed)
            } else {
                tcp.ttl().map_err(option_failed)
            }
        })
    }

    fn set_keepalive(
        &mut self,
        this: Resource<TcpStreamHandle>,
        keepalive_secs: Option<u64>,
    ) -> Result<(), ErrorCode> {
        self.on_conn("net.tcp-stream.set-keepalive", &this, 0, |_, conn| {
            let socket = conn.socket();
            socket.tcp()?;
            let sock = socket.sock_ref()?;
            match keepalive_secs {
                None => sock.set_keepalive(false).map_err(option_failed),
                Some(secs) => {
                    let params =
                        socket2::TcpKeepalive::new().with_time(Duration::from_secs(secs.max(1)));
                    sock.set_tcp_keepalive(&params).map_err(option_failed)
                }
            }
        })
    }

    fn keepalive(&mut self, this: Resource<TcpStreamHandle>) -> Result<Option<u64>, ErrorCode> {
        self.on_conn("net.tcp-stream.keepalive", &this, 0, |_, conn| {
            let socket = conn.socket();
            socket.tcp()?;
            let sock = socket.sock_ref()?;
            if !sock.keepalive().map_err(option_failed)? {
                return Ok(None);
            }
            Ok(Some(
                sock.tcp_keepalive_time().map_err(option_failed)?.as_secs(),
            ))
        })
    }

    fn set_linger(
        &mut self,
        this: Resource<TcpStreamHandle>,
        linger_ms: Option<u64>,
    ) -> Result<(), ErrorCode> {
        self.on_conn("net.tcp-stream.set-linger", &this, 0, |_, conn| {
            let socket = conn.socket();
            socket.tcp()?;
            socket
                .sock_ref()?
                .set_linger(linger_ms.map(Duration::from_millis))
                .map_err(option_failed)
        })
    }

    fn linger(&mut self, this: Resource<TcpStreamHandle>) -> Result<Option<u64>, ErrorCode> {
        self.on_conn("net.tcp-stream.linger", &this, 0, |_, conn| {
            let socket = conn.socket();
            socket.tcp()?;
            let linger = socket.sock_ref()?.linger().map_err(option_failed)?;
            Ok(linger.map(|d| d.as_millis() as u64))
        })
    }

    fn set_reuseaddr(
        &mut self,
        this: Resource<TcpStreamHandle>,
        reuse: bool,
    ) -> Result<(), ErrorCode> {
        self.on_conn("net.tcp-stream.set-reuseaddr", &this, 0, |_, conn| {
            let socket = conn.socket();
            socket.tcp()?;
            socket
                .sock_ref()?
                .set_reuse_address(reuse)
                .map_err(option_failed)
        })
    }

    fn reuseaddr(&mut self, this: Resource<TcpStreamHandle>) -> Result<bool, ErrorCode> {
        self.on_conn("net.tcp-stream.reuseaddr", &this, 0, |_, conn| {
            let socket = conn.socket();
            socket.tcp()?;
            socket.sock_ref()?.reuse_address().map_err(option_failed)
        })
    }

    fn subscribe_readable(&mut self, this: Resource<TcpStreamHandle>) -> Resource<Pollable> {
        let source: Arc<dyn Readiness> = match self.conn(&this) {
            Ok(conn) => Arc::new(ConnReadable(conn)),
            Err(_) => Arc::new(crate::host::io::AlwaysReady),
        };
        self.audit_infallible("net.tcp-stream.subscribe-readable");
        push_pollable(self.table, source)
    }

    fn read_stream(&mut self, this: Resource<TcpStreamHandle>) -> Resource<InputStream> {
        let source: Arc<dyn ByteSource> = match self.conn(&this) {
            Ok(conn) if !conn.read_view_taken.swap(true, Ordering::SeqCst) => {
                Arc::new(ConnSource(conn))
            }
            _ => Arc::new(ClosedStream),
        };
        self.audit_infallible("net.tcp-stream.read-stream");
        push_input_stream(self.table, source)
    }

    fn write_stream(&mut self, this: Resource<TcpStreamHandle>) -> Resource<OutputStream> {
        let sink: Arc<dyn ByteSink> = match self.conn(&this) {
            Ok(conn) if !conn.write_view_taken.swap(true, Ordering::SeqCst) => {
                Arc::new(ConnSink(conn))
            }
            _ => Arc::new(ClosedStream),
        };
        self.audit_infallible("net.tcp-stream.write-stream");
        push_output_stream(self.table, sink)
    }

    fn drop(&mut self, this: Resource<TcpStreamHandle>) -> wasmtime::Result<()> {
        let handle = self.table.delete(this)?;
        // The io views keep the socket alive; dropping the stream closes them.
        handle.conn.close();
        Ok(())
    }
}

impl crate::host::audit::Payload for NetReadStatus {
    fn payload_len(&self) -> u64 {
        match self {
            NetReadStatus::Data(data) => data.len() as u64,
            _ => 0,
        }
    }
}
