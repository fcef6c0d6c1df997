//! One HTTP exchange per hop over hyper's HTTP/1.1 client connection: TCP
//! to a vetted address, rustls with the webpki roots for `https`, a byte
//! counter for `wire-bytes`. No pooling: every hop gets its own connection,
//! so an address vetted for one hop is never reused for another origin.

use super::body::UploadBody;
use super::error::HttpError;
use bytes::Bytes;
use hyper::body::{Frame, Incoming, SizeHint};
use hyper_util::rt::TokioIo;
use once_cell::sync::Lazy;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// A request body: bytes the guest gave, or an upload it is writing.
pub(crate) enum ReqBody {
    Empty,
    Full(Option<Bytes>),
    Upload(Arc<UploadBody>),
}

impl hyper::body::Body for ReqBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        match self.get_mut() {
            ReqBody::Empty => Poll::Ready(None),
            ReqBody::Full(data) => Poll::Ready(data.take().map(|d| Ok(Frame::data(d)))),
            ReqBody::Upload(upload) => upload.poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ReqBody::Empty => true,
            ReqBody::Full(data) => data.is_none(),
            ReqBody::Upload(_) => false,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ReqBody::Empty => SizeHint::with_exact(0),
            ReqBody::Full(data) => {
                SizeHint::with_exact(data.as_ref().map_or(0, |d| d.len() as u64))
            }
            ReqBody::Upload(_) => SizeHint::default(),
        }
    }
}

/// Counts the bytes read from the connection (`wire-bytes`).
struct Counted<S> {
    inner: S,
    read: Arc<AtomicU64>,
}

impl<S: AsyncRead + Unpin> AsyncRead for Counted<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let result = Pin::new(&mut self.inner).poll_read(cx, buf);
        let n = buf.filled().len() - before;
        self.read.fetch_add(n as u64, Ordering::Relaxed);
        result
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Counted<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// rustls with the webpki roots and the ring provider (no OpenSSL).
static TLS: Lazy<Option<tokio_rustls::TlsConnector>> = Lazy::new(|| {
    let roots = rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .ok()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Some(tokio_rustls::TlsConnector::from(Arc::new(config)))
});

/// Where one hop goes: vetted addresses and, for `https`, the TLS name.
pub(crate) struct Dial {
    pub addrs: Vec<SocketAddr>,
    pub tls_name: Option<String>,
    pub connect_timeout: Duration,
    /// `None` for an upload: the head is awaited after its body ends.
    pub first_byte_timeout: Option<Duration>,
}

/// What keeps a response's connection going while its body is read.
pub(crate) type Sender = hyper::client::conn::http1::SendRequest<ReqBody>;

/// Connects, sends `request`, and waits for the response head.
pub(crate) async fn exchange(
    dial: Dial,
    request: http::Request<ReqBody>,
    wire: Arc<AtomicU64>,
) -> Result<(http::Response<Incoming>, Sender), HttpError> {
    let tcp = tokio::time::timeout(dial.connect_timeout, connect_any(&dial.addrs))
        .await
        .map_err(|_| HttpError::Timeout)??;
    let _ = tcp.set_nodelay(true);
    let mut sender = match &dial.tls_name {
        None => {
            handshake(Counted {
                inner: tcp,
                read: wire,
            })
            .await?
        }
        Some(name) => {
            let connector = TLS.as_ref().ok_or(HttpError::TlsError)?;
            let server = rustls::pki_types::ServerName::try_from(name.clone())
                .map_err(|_| HttpError::TlsError)?;
            let tls = tokio::time::timeout(dial.connect_timeout, connector.connect(server, tcp))
                .await
                .map_err(|_| HttpError::Timeout)?
                .map_err(|_| HttpError::TlsError)?;
            handshake(Counted {
                inner: tls,
                read: wire,
            })
            .await?
        }
    };
    let sent = sender.send_request(request);
    let response = match dial.first_byte_timeout {
        Some(limit) => tokio::time::timeout(limit, sent)
            .await
            .map_err(|_| HttpError::Timeout)?,
        None => sent.await,
    }
    .map_err(|e| HttpError::from_hyper(&e))?;
    Ok((response, sender))
}

async fn connect_any(addrs: &[SocketAddr]) -> Result<tokio::net::TcpStream, HttpError> {
    for addr in addrs {
        if let Ok(stream) = tokio::net::TcpStream::connect(addr).await {
            return Ok(stream);
        }
    }
    Err(HttpError::ConnectionError)
}

async fn handshake<S>(io: S) -> Result<Sender, HttpError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .map_err(|_| HttpError::ConnectionError)?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(sender)
}
