//! Entry points for the cargo-fuzz targets in `fuzz/` (feature `fuzzing`).
//! Not an API: it exists so crate-private pieces (the HTTP body pump and
//! content decoders) can be driven with fuzzer input without making them
//! public. The pure policy modules are already public and used directly.

use crate::host::http::body::Body;
use crate::host::http::decode::Decoder;
use crate::host::http::error::HttpError;
use crate::host::http::options::{GuestOptions, Options};
use hyper_util::rt::TokioIo;
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A content decoder (`gzip`, `x-gzip`, `deflate`, `br`) stepped by hand.
pub struct ContentDecoder(Decoder);

impl ContentDecoder {
    /// `None` for an encoding astrid does not decode.
    pub fn new(encoding: &str) -> Option<ContentDecoder> {
        Decoder::for_encoding(encoding).map(ContentDecoder)
    }

    /// One bounded step: (input bytes used, output bytes made), or the
    /// error text.
    pub fn step(&mut self, input: &[u8], out: &mut [u8]) -> Result<(usize, usize), String> {
        self.0.step(input, out).map_err(|e| format!("{e:?}"))
    }

    pub fn finished(&self) -> bool {
        self.0.finished()
    }
}

/// How one fuzzed response is read: the knobs of `astrid:http` that change
/// what the body pump enforces.
#[derive(Clone, Debug)]
pub struct HttpCase {
    /// `astrid:http@1.0.0` rules (decoded bytes count against the body cap).
    pub legacy: bool,
    /// `http-request` (whole body) rather than `http-stream-start`.
    pub buffered: bool,
    pub max_response_bytes: Option<u64>,
    pub max_decompressed_bytes: Option<u64>,
    pub auto_decompress: bool,
    /// The response is written to the connection in pieces of these sizes
    /// (cycled; 0 is read as 1).
    pub pieces: Vec<usize>,
}

/// What the guest would have seen.
#[derive(Clone, Debug, Default)]
pub struct HttpOutcome {
    /// `None`: the response head was refused.
    pub status: Option<u16>,
    /// The `content-encoding` the pump decoded, if it decoded one.
    pub decoded_encoding: Option<String>,
    /// The cap on the bytes received, as the pump applied it.
    pub max_wire: Option<u64>,
    /// The cap on the bytes delivered, as the pump applied it.
    pub max_decoded: Option<u64>,
    /// Every byte the guest could read.
    pub body: Vec<u8>,
    /// The error the body ended with (Debug spelling of the host error).
    pub error: Option<String>,
    /// The error is `body-too-large` or `decompression-bomb`.
    pub cap_error: bool,
}

fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("fuzz runtime")
    })
}

/// Sends `GET /` over an in-memory connection whose server answers with the
/// bytes of `raw`, then reads the response the way astrid's HTTP host does:
/// hyper's HTTP/1.1 client parses head, length and chunking; the pump
/// decodes, caps and buffers the body; the guest side drains it.
pub fn http_exchange(raw: &[u8], case: &HttpCase) -> HttpOutcome {
    runtime().block_on(exchange(raw.to_vec(), case.clone()))
}

async fn exchange(raw: Vec<u8>, case: HttpCase) -> HttpOutcome {
    let mut outcome = HttpOutcome::default();
    let (client, mut server) = tokio::io::duplex(16 << 10);
    let Ok((mut sender, connection)) =
        hyper::client::conn::http1::handshake::<_, String>(TokioIo::new(client)).await
    else {
        return outcome;
    };
    let connection = tokio::spawn(async move {
        let _ = connection.await;
    });
    let pieces = case.pieces.clone();
    let server_task = tokio::spawn(async move {
        let mut rest = &raw[..];
        let mut i = 0;
        while !rest.is_empty() {
            let size = pieces
                .get(i % pieces.len().max(1))
                .copied()
                .unwrap_or(rest.len());
            let n = size.clamp(1, rest.len());
            if server.write_all(&rest[..n]).await.is_err() {
                return;
            }
            rest = &rest[n..];
            i += 1;
            tokio::task::yield_now().await;
        }
        let _ = server.shutdown().await;
        // Keep the request side open until the client is done.
        let mut sink = [0u8; 1024];
        while matches!(server.read(&mut sink).await, Ok(n) if n > 0) {}
    });

    let request = http::Request::get("/")
        .header(http::header::HOST, "fuzz.example")
        .body(String::new())
        .expect("static request");
    let response =
        match tokio::time::timeout(Duration::from_secs(5), sender.send_request(request)).await {
            Ok(Ok(response)) => Some(response),
            _ => None,
        };
    if let Some(response) = response {
        outcome.status = Some(response.status().as_u16());
        read_body(response, &case, sender, &mut outcome).await;
    }
    server_task.abort();
    connection.abort();
    outcome
}

async fn read_body(
    response: http::Response<hyper::body::Incoming>,
    case: &HttpCase,
    sender: hyper::client::conn::http1::SendRequest<String>,
    outcome: &mut HttpOutcome,
) {
    let opts = if case.legacy {
        Options::legacy(case.buffered)
    } else {
        let guest = GuestOptions {
            max_response_bytes: case.max_response_bytes,
            max_decompressed_bytes: case.max_decompressed_bytes,
            auto_decompress: Some(case.auto_decompress),
            between_bytes_ms: Some(5_000),
            ..GuestOptions::default()
        };
        match Options::current(guest, case.buffered) {
            Ok(opts) => opts,
            Err(e) => {
                outcome.error = Some(format!("{e:?}"));
                return;
            }
        }
    };
    let (parts, incoming) = response.into_parts();
    let encoding = parts
        .headers
        .get(http::header::CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok());
    let rules = opts.pump_rules(encoding, case.buffered, None);
    if rules.decoder.is_some() {
        outcome.decoded_encoding = encoding.map(str::to_string);
    }
    outcome.max_wire = rules.max_wire;
    outcome.max_decoded = rules.max_decoded.as_ref().map(|(cap, _)| *cap);
    let body = Arc::new(Body::default());
    let pump = body.clone().pump(incoming, rules, sender);
    let drain = async {
        loop {
            match body.take(usize::MAX) {
                Ok(Some(chunk)) if chunk.is_empty() => return None,
                Ok(Some(chunk)) => outcome.body.extend_from_slice(&chunk),
                Ok(None) => tokio::task::yield_now().await,
                Err(e) => return Some(e),
            }
        }
    };
    let ((), error) = tokio::join!(pump, drain);
    if let Some(error) = error {
        outcome.cap_error = matches!(
            error,
            HttpError::BodyTooLarge | HttpError::DecompressionBomb
        );
        outcome.error = Some(format!("{error:?}"));
    }
}
