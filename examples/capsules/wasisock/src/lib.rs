//! Talks TCP through Rust's `std::net`, which the wasm32-wasip2 target
//! maps onto `wasi:sockets`. Actions: `echo` (addr, message) connects,
//! writes and reads the message back; `bind` (addr) opens a listener;
//! `connect-many` / `listen-many` / `udp-many` (addr, n) hold n sockets;
//! `create-many` (n) holds n unconnected ones.
//! Answers `ok` with the text, or `err` with the `std::io::ErrorKind`.

wit_bindgen::generate!({
    world: "example:wasisock/wasi-sockets-user",
    path: ["../../../wit/astrid-guest@1.0.0", "wit"],
    generate_all,
});

use std::io::{Read, Write};

struct WasiSock;

fn run(action: &str, payload: &str) -> std::io::Result<String> {
    let args: Vec<&str> = payload.split('\n').collect();
    let arg = |i: usize| args.get(i).copied().unwrap_or("");
    match action {
        "echo" => {
            let mut stream = std::net::TcpStream::connect(arg(0))?;
            stream.write_all(arg(1).as_bytes())?;
            let mut back = vec![0u8; arg(1).len()];
            stream.read_exact(&mut back)?;
            Ok(String::from_utf8_lossy(&back).into_owned())
        }
        "bind" => {
            let listener = std::net::TcpListener::bind(arg(0))?;
            Ok(listener.local_addr()?.to_string())
        }
        // Holds up to `n` sockets of one kind: "N", or "K then <ErrorKind>".
        "connect-many" | "listen-many" | "udp-many" => {
            let n: usize = arg(1).parse().map_err(std::io::Error::other)?;
            let mut held: Vec<Box<dyn std::any::Any>> = Vec::new();
            for _ in 0..n {
                let opened: std::io::Result<Box<dyn std::any::Any>> = match action {
                    "connect-many" => std::net::TcpStream::connect(arg(0)).map(|s| Box::new(s) as _),
                    "listen-many" => std::net::TcpListener::bind(arg(0)).map(|s| Box::new(s) as _),
                    _ => std::net::UdpSocket::bind(arg(0)).map(|s| Box::new(s) as _),
                };
                match opened {
                    Ok(socket) => held.push(socket),
                    Err(e) => return Ok(format!("{} then {:?}", held.len(), e.kind())),
                }
            }
            Ok(held.len().to_string())
        }
        // Creates `n` unconnected TCP sockets through the raw WASI bindings.
        "create-many" => {
            let n: usize = arg(0).parse().map_err(std::io::Error::other)?;
            let mut held = Vec::new();
            for _ in 0..n {
                let family = wasip2::sockets::network::IpAddressFamily::Ipv4;
                match wasip2::sockets::tcp_create_socket::create_tcp_socket(family) {
                    Ok(socket) => held.push(socket),
                    Err(e) => return Ok(format!("{} then {e:?}", held.len())),
                }
            }
            Ok(held.len().to_string())
        }
        other => Err(std::io::Error::other(format!("unknown action {other}"))),
    }
}

impl Guest for WasiSock {
    fn astrid_hook_trigger(action: String, payload: Vec<u8>) -> CapsuleResult {
        let payload = String::from_utf8_lossy(&payload);
        let (action, data) = match run(&action, &payload) {
            Ok(text) => ("ok", text),
            Err(e) => ("err", format!("{:?}", e.kind())),
        };
        CapsuleResult {
            action: action.into(),
            data: Some(data),
        }
    }
}

export!(WasiSock);
