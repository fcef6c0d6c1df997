//! A capsule's stdout and stderr as log lines, and the WASI context every
//! store starts with: nothing granted.

use crate::host::shared::CapsuleShared;
use crate::services::LogLevel;
use crate::signal::MutexExt;
use bytes::Bytes;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
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
    pub(crate) sockets: Option<super::vetting::WasiSocketsCall>,
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
        let sockets = (capsule.net_flags & crate::config::FLAG_WASI_SOCKETS != 0)
            .then(super::vetting::WasiSocketsCall::default);
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
        self.state.locked().principal.clone()
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
        self.state.locked().principal = principal.cloned();
    }

    fn write(&self, channel: Channel, mut bytes: &[u8]) {
        let mut lines = Vec::new();
        let principal;
        {
            let mut state = self.state.locked();
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
            let mut state = self.state.locked();
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
    let sockets = capsule.net_flags & crate::config::FLAG_WASI_SOCKETS != 0;
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
                super::vetting::wasi_socket_allowed(
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
