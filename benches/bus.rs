//! Host-side bus benchmarks (performance.md method): an embedder publish
//! through `astrid_ipc_publish` delivered to an `astrid_ipc_subscribe` C
//! callback on the subscription's thread, against the same round trip
//! through a plain `tokio::sync::broadcast` channel whose receiver runs on a
//! tokio worker. Both rows signal completion the same way (a std channel),
//! so the difference is the bus itself.
//!
//! Latency rows publish one message and wait for its callback; throughput
//! rows publish a burst of 256 and wait for the last one.

mod harness;

use astrid::ffi::ipc::{astrid_ipc_publish, astrid_ipc_subscribe, astrid_message_t};
use astrid::ffi::runtime::{astrid_runtime_free, astrid_runtime_new, astrid_runtime_t};
use astrid::ffi::ASTRID_OK;
use harness::{table, Row};
use std::sync::mpsc::{channel, Receiver, Sender};

const BURST: usize = 256;

unsafe extern "C" fn signal(user_data: *mut libc::c_void, message: *const astrid_message_t) {
    let done = &*(user_data as *const Sender<usize>);
    let _ = done.send((*message).payload_len);
}

fn publish(rt: *mut astrid_runtime_t, payload: &str) {
    let topic = "bench.topic";
    let status = astrid_ipc_publish(
        rt,
        topic.as_ptr().cast(),
        topic.len(),
        payload.as_ptr().cast(),
        payload.len(),
        std::ptr::null_mut(),
    );
    assert_eq!(status, ASTRID_OK);
}

/// A JSON string of exactly `size` bytes.
fn payload(size: usize) -> String {
    format!("\"{}\"", "x".repeat(size - 2))
}

fn main() {
    let mut rt = std::ptr::null_mut();
    assert_eq!(
        astrid_runtime_new(std::ptr::null(), &mut rt, std::ptr::null_mut()),
        ASTRID_OK
    );
    let (done_tx, done_rx): (Sender<usize>, Receiver<usize>) = channel();
    let done_tx = Box::new(done_tx);
    let mut sub = std::ptr::null_mut();
    let pattern = "bench.*";
    assert_eq!(
        astrid_ipc_subscribe(
            rt,
            pattern.as_ptr().cast(),
            pattern.len(),
            Some(signal),
            (&*done_tx as *const Sender<usize>).cast_mut().cast(),
            None,
            &mut sub,
            std::ptr::null_mut(),
        ),
        ASTRID_OK
    );

    let tokio = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let (bcast_tx, mut bcast_rx) = tokio::sync::broadcast::channel::<String>(1024);
    let (bdone_tx, bdone_rx) = channel::<usize>();
    tokio.spawn(async move {
        while let Ok(message) = bcast_rx.recv().await {
            let _ = bdone_tx.send(message.len());
        }
    });

    println!("Host publish → host subscriber (astrid_ipc_publish → C callback) vs tokio::sync::broadcast");
    for size in [64usize, 4096] {
        let text = payload(size);
        let mut rows = vec![
            Row::new(format!("broadcast round trip, {size} B"), || {
                bcast_tx.send(text.clone()).unwrap();
                assert_eq!(bdone_rx.recv().unwrap(), size);
            }),
            Row::new(format!("astrid bus round trip, {size} B"), || {
                publish(rt, &text);
                assert_eq!(done_rx.recv().unwrap(), size);
            }),
            Row::new(format!("broadcast burst of {BURST}, {size} B"), || {
                for _ in 0..BURST {
                    bcast_tx.send(text.clone()).unwrap();
                }
                for _ in 0..BURST {
                    bdone_rx.recv().unwrap();
                }
            }),
            Row::new(format!("astrid bus burst of {BURST}, {size} B"), || {
                for _ in 0..BURST {
                    publish(rt, &text);
                }
                for _ in 0..BURST {
                    done_rx.recv().unwrap();
                }
            }),
        ];
        let ratios = table(
            &format!("payload {size} B (burst rows: ns per burst)"),
            &mut rows,
            0,
        );
        println!(
            "  latency: astrid / broadcast = {:.2}× (target ≤ 3×); burst throughput: astrid / broadcast = {:.2}×",
            ratios[1],
            ratios[3] / ratios[2]
        );
    }
    astrid::ffi::ipc::astrid_subscription_free(sub);
    astrid_runtime_free(rt);
    drop(done_tx);
}
