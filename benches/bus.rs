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
use astrid::ffi::runtime::{
    astrid_runtime_config_init, astrid_runtime_config_t, astrid_runtime_free, astrid_runtime_new,
    astrid_runtime_t,
};
use astrid::ffi::ASTRID_OK;
use harness::{table, Row};
use std::sync::mpsc::{channel, Receiver, Sender};

const BURST: usize = 256;
/// Interceptor bursts stay within one lane's 64 pending invocations (more
/// would be dropped by design, host ABI §7.4).
const LANE_BURST: usize = 32;

unsafe extern "C" fn signal(user_data: *mut libc::c_void, message: *const astrid_message_t) {
    let done = &*(user_data as *const Sender<usize>);
    let _ = done.send((*message).payload_len);
}

/// A host subscription whose callback sends each payload's length to `done`.
fn subscribe_signal(
    rt: *mut astrid_runtime_t,
    pattern: &str,
    done: &Sender<usize>,
) -> *mut astrid::ffi::ipc::astrid_subscription_t {
    let mut sub = std::ptr::null_mut();
    assert_eq!(
        astrid_ipc_subscribe(
            rt,
            pattern.as_ptr().cast(),
            pattern.len(),
            Some(signal),
            (done as *const Sender<usize>).cast_mut().cast(),
            None,
            &mut sub,
            std::ptr::null_mut(),
        ),
        ASTRID_OK
    );
    sub
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
    let mut config = std::mem::MaybeUninit::<astrid_runtime_config_t>::uninit();
    assert_eq!(
        astrid_runtime_config_init(config.as_mut_ptr(), std::ptr::null_mut()),
        ASTRID_OK
    );
    // SAFETY: filled by astrid_runtime_config_init.
    let mut config = unsafe { config.assume_init() };
    // The echo capsule republishes every message: lift the 10 MiB/s default
    // so the 4 KiB rows measure the bus, not the rate limit.
    config.ipc_publish_bytes_per_sec = u64::MAX / 2;
    assert_eq!(
        astrid_runtime_new(&config, &mut rt, std::ptr::null_mut()),
        ASTRID_OK
    );
    let (done_tx, done_rx): (Sender<usize>, Receiver<usize>) = channel();
    let done_tx = Box::new(done_tx);
    let sub = subscribe_signal(rt, "bench.*", &done_tx);
    if std::env::args().any(|a| a == "profile") {
        return interceptor_round_trip(rt, &done_rx);
    }

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
    interceptor_round_trip(rt, &done_rx);
    astrid::ffi::ipc::astrid_subscription_free(sub);
    astrid_runtime_free(rt);
    drop(done_tx);
}

/// Host publish → guest interceptor (ipcprobe's `echo`, which republishes
/// the payload on `out.echo`) → host subscriber, against B02: one C call of
/// `hello`'s `noop` with the same payload. A direct call of the same
/// handler publishing where nobody listens shows the part of the round trip
/// no bus design can remove.
fn interceptor_round_trip(rt: *mut astrid_runtime_t, host_done: &Receiver<usize>) {
    let load = |name: &str| {
        let dir = harness::capsule_dir(name);
        let dir = dir.to_str().unwrap();
        let mut capsule = std::ptr::null_mut();
        assert_eq!(
            astrid::ffi::capsule::astrid_capsule_load(
                rt,
                dir.as_ptr().cast(),
                dir.len(),
                std::ptr::null(),
                &mut capsule,
                std::ptr::null_mut(),
            ),
            ASTRID_OK
        );
        capsule
    };
    let hello = load("hello");
    let probe = load("ipcprobe");
    // `cargo bench --bench bus -- profile SIZE N`: N direct publishing calls
    // and nothing else, for callgrind (performance.md).
    let args: Vec<String> = std::env::args().collect();
    if let Some(at) = args.iter().position(|a| a == "profile") {
        let size: usize = args.get(at + 1).and_then(|n| n.parse().ok()).unwrap_or(64);
        let n: usize = args
            .get(at + 2)
            .and_then(|n| n.parse().ok())
            .unwrap_or(1000);
        let text = payload(size);
        for _ in 0..n {
            harness::c_call(probe, "echo-unheard", text.as_bytes());
        }
        return;
    }
    let (echo_tx, echo_rx) = channel::<usize>();
    let echo_tx = Box::new(echo_tx);
    let sub = subscribe_signal(rt, "out.echo", &echo_tx);
    let publish_echo = |payload: &str| {
        let topic = "echo.in";
        assert_eq!(
            astrid_ipc_publish(
                rt,
                topic.as_ptr().cast(),
                topic.len(),
                payload.as_ptr().cast(),
                payload.len(),
                std::ptr::null_mut(),
            ),
            ASTRID_OK
        );
    };
    println!("\nHost publish → guest interceptor → host subscriber vs B02 (C call of a no-op)");
    for size in [64usize, 4096] {
        let text = payload(size);
        // What the interceptor does, minus the bus: a direct call whose guest
        // publishes the payload (on a topic nobody hears). Every message of
        // a lane runs at least this, one after the other.

        let mut rows = vec![
            Row::new(format!("B02 astrid_capsule_call noop, {size} B"), || {
                harness::c_call(hello, "noop", text.as_bytes())
            }),
            Row::new(format!("direct call that publishes, {size} B"), || {
                harness::c_call(probe, "echo-unheard", text.as_bytes())
            }),
            Row::new(format!("host → host bus round trip, {size} B"), || {
                publish(rt, &text);
                assert_eq!(host_done.recv().unwrap(), size);
            }),
            // Every publish checks that its payload is JSON text (host ABI
            // §8.1); a round trip publishes twice (host, then the handler).
            Row::new(format!("JSON check of the payload ×2, {size} B"), || {
                for _ in 0..2 {
                    astrid::bus::validate_payload(std::hint::black_box(&text)).unwrap();
                }
            }),
            Row::new(format!("host → interceptor → host, {size} B"), || {
                publish_echo(&text);
                assert_eq!(echo_rx.recv().unwrap(), size);
            }),
            Row::new(format!("same, burst of {LANE_BURST} (per burst)"), || {
                for _ in 0..LANE_BURST {
                    publish_echo(&text);
                }
                for _ in 0..LANE_BURST {
                    echo_rx.recv().unwrap();
                }
            }),
        ];
        let ratios = table(&format!("payload {size} B"), &mut rows, 0);
        println!(
            "  latency: {:.2}× a call; burst: {:.2}× a call per message (target ≤ 1.5×)\n  \
             parts: the interceptor's own work without the bus {:.2}×, \
             host → host bus round trip {:.2}×, the two JSON checks {:.2}× a call",
            ratios[4],
            ratios[5] / LANE_BURST as f64,
            ratios[1],
            ratios[2],
            ratios[3]
        );
    }
    astrid::ffi::ipc::astrid_subscription_free(sub);
    drop(echo_tx);
}
