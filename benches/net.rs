//! Network benchmarks (performance.md method, issue 5's targets): the
//! netprobe capsule against native Rust clients doing the same work in the
//! same process, on loopback.
//!
//! - TCP echo, 64 B round trips: one connection, 200 round trips per op
//!   (guest: one capsule call), against `std::net::TcpStream`. Target ≤ 2×.
//! - TCP bulk, 1 MiB echoed through in 64 KiB pieces per op, against the
//!   same with `std::net::TcpStream`. Target ≥ 0.5× native throughput,
//!   i.e. ≤ 2× native time.
//! - HTTP GET of 4 KiB and 1 MiB, 10 sequential requests per op, each on a
//!   new connection, against hyper's HTTP/1.1 client connection (the crate
//!   astrid uses) on a tokio runtime. Target ≤ 2× native.

mod harness;

use astrid::runtime::FLAG_ALLOW_LOOPBACK;
use astrid::{Capsule, LoadOptions, Runtime, RuntimeConfig};
use bytes::Bytes;
use harness::{table, Row};
use hyper::body::Body as _;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::pin::Pin;
use std::thread;
use std::time::Duration;

const ROUND_TRIPS: usize = 200;
const BULK: usize = 1 << 20;
const PIECE: usize = 64 << 10;
const GETS: usize = 10;

fn echo_server() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    thread::spawn(move || {
        for mut s in listener.incoming().flatten() {
            let _ = s.set_nodelay(true);
            thread::spawn(move || {
                let mut buf = vec![0u8; 256 << 10];
                while let Ok(n) = s.read(&mut buf) {
                    if n == 0 || s.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
            });
        }
    });
    port
}

/// Answers every request on `/<n>` with `n` bytes, then closes.
fn http_server() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    thread::spawn(move || {
        for s in listener.incoming().flatten() {
            thread::spawn(move || {
                let _ = s.set_nodelay(true);
                let mut reader = BufReader::new(s.try_clone().unwrap());
                let mut line = String::new();
                if reader.read_line(&mut line).is_err() {
                    return;
                }
                let size: usize = line
                    .split_whitespace()
                    .nth(1)
                    .and_then(|p| p.trim_start_matches('/').parse().ok())
                    .unwrap_or(0);
                loop {
                    let mut h = String::new();
                    if reader.read_line(&mut h).is_err() || h.trim().is_empty() {
                        break;
                    }
                }
                let mut s = s;
                let head = format!(
                    "HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: {size}\r\n\r\n"
                );
                let mut out = head.into_bytes();
                out.resize(out.len() + size, b'h');
                let _ = s.write_all(&out);
            });
        }
    });
    port
}

fn native_round_trips(port: u16, size: usize) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_nodelay(true).unwrap();
    let msg = vec![7u8; size];
    let mut back = vec![0u8; size];
    for _ in 0..ROUND_TRIPS {
        s.write_all(&msg).unwrap();
        s.read_exact(&mut back).unwrap();
    }
}

fn native_bulk(port: u16) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    let piece = vec![7u8; PIECE];
    let mut back = vec![0u8; PIECE];
    let mut moved = 0;
    while moved < BULK {
        s.write_all(&piece).unwrap();
        s.read_exact(&mut back).unwrap();
        moved += PIECE;
    }
}

/// One GET with hyper's client connection, body read to the end.
async fn native_get(port: u16, size: usize) -> usize {
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    tcp.set_nodelay(true).unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake::<_, Empty>(hyper_util::rt::TokioIo::new(tcp))
            .await
            .unwrap();
    tokio::spawn(conn);
    let request = http::Request::get(format!("/{size}"))
        .header("host", format!("127.0.0.1:{port}"))
        .body(Empty)
        .unwrap();
    let mut body = sender.send_request(request).await.unwrap().into_body();
    let mut got = 0;
    while let Some(frame) = std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await {
        if let Ok(data) = frame.unwrap().into_data() {
            got += data.len();
        }
    }
    got
}

struct Empty;

impl hyper::body::Body for Empty {
    type Data = Bytes;
    type Error = std::convert::Infallible;
    fn poll_frame(
        self: Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, Self::Error>>> {
        std::task::Poll::Ready(None)
    }
    fn is_end_stream(&self) -> bool {
        true
    }
}

fn guest(c: &Capsule, action: &str, args: &[String]) {
    let r = c.call(action, args.join("\n").as_bytes(), None).unwrap();
    assert_eq!(r.action, "ok", "{action}: {:?}", r.data);
}

fn main() {
    let rt = Runtime::new(RuntimeConfig {
        flags: FLAG_ALLOW_LOOPBACK,
        timeout: Duration::from_secs(60),
        fuel: u64::MAX / 4,
        ..RuntimeConfig::default()
    })
    .unwrap();
    let dir = harness::capsule_dir("netprobe");
    let c = rt.load_dir(&dir, &LoadOptions::default()).unwrap();
    let echo = echo_server();
    let web = http_server();
    let tokio = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let host = "127.0.0.1".to_string();

    let rtt = table(
        &format!("TCP echo, {ROUND_TRIPS} round trips of 64 B per op"),
        &mut [
            Row::new("native std::net::TcpStream", || {
                native_round_trips(echo, 64)
            }),
            Row::new("guest astrid:net tcp-stream", || {
                guest(
                    &c,
                    "bench-rtt",
                    &[
                        host.clone(),
                        echo.to_string(),
                        ROUND_TRIPS.to_string(),
                        "64".into(),
                    ],
                )
            }),
        ],
        0,
    );
    let bulk = table(
        "TCP bulk, 1 MiB echoed in 64 KiB pieces per op",
        &mut [
            Row::new("native std::net::TcpStream", || native_bulk(echo)),
            Row::new("guest astrid:net tcp-stream", || {
                guest(
                    &c,
                    "bench-bulk",
                    &[host.clone(), echo.to_string(), BULK.to_string()],
                )
            }),
        ],
        0,
    );
    let mut http_ratios = Vec::new();
    for size in [4 << 10, 1 << 20] {
        let url = format!("http://127.0.0.1:{web}/{size}");
        let ratios = table(
            &format!("HTTP GET of {} KiB, {GETS} requests per op", size >> 10),
            &mut [
                Row::new("native hyper http1 client", || {
                    tokio.block_on(async {
                        for _ in 0..GETS {
                            assert_eq!(native_get(web, size).await, size);
                        }
                    })
                }),
                Row::new("guest astrid:http@1.1.0 http-request", || {
                    guest(&c, "bench-http", &[url.clone(), GETS.to_string()])
                }),
            ],
            0,
        );
        http_ratios.push((size, ratios[1]));
    }
    println!("\nsummary (guest ÷ native time; targets: latency ≤ 2.0, bulk throughput ≥ 0.5 i.e. time ≤ 2.0)");
    println!("  tcp 64 B round trip: {:.2}", rtt[1]);
    println!(
        "  tcp 1 MiB bulk:      {:.2} (throughput {:.2}× native)",
        bulk[1],
        1.0 / bulk[1]
    );
    for (size, ratio) in http_ratios {
        println!("  http GET {:>4} KiB:   {:.2}", size >> 10, ratio);
    }
}
