//! Call-path benchmarks (performance.md method): B02, B03, B08, B16.
//!
//! Every table runs its rows interleaved round-robin in this one process,
//! each row calibrated to a ~20 ms batch, 15 rounds; it prints min and median
//! ns/op and the median of the per-round ratios against the comparator.
//! Run with `scripts/bench.sh` (builds the capsules and the Extism plugin,
//! finds Extism's C library) or `cargo bench --bench call`.

use astrid::ffi::capsule::{astrid_capsule_load, astrid_capsule_t, astrid_capsule_unload};
use astrid::ffi::runtime::{astrid_runtime_free, astrid_runtime_new, astrid_runtime_t};
use astrid::ffi::ASTRID_OK;
use astrid::{CallResult, LoadOptions, Runtime, RuntimeConfig};
use wasmtime::component::{Component, Linker};
use wasmtime::Store;

mod harness;
use harness::{c_call, capsule_dir, table, Row, BATCH, ROUNDS};

/// Extism's C API, loaded from the `extism-sys` wheel's library.
mod extism {
    use std::ffi::{c_char, c_void, CString};

    type New = unsafe extern "C" fn(
        *const u8,
        u64,
        *const *const c_void,
        u64,
        bool,
        *mut *mut c_char,
    ) -> *mut c_void;
    type Call = unsafe extern "C" fn(*mut c_void, *const c_char, *const u8, u64) -> i32;
    type Free = unsafe extern "C" fn(*mut c_void);

    pub struct Plugin {
        plugin: *mut c_void,
        call: Call,
        free: Free,
        func: CString,
    }

    impl Plugin {
        pub fn load(library: &str, wasm: &[u8], func: &str) -> Option<Plugin> {
            let lib = CString::new(library).ok()?;
            // SAFETY: dlopen/dlsym of Extism's documented C symbols.
            unsafe {
                let handle = libc::dlopen(lib.as_ptr(), libc::RTLD_NOW | libc::RTLD_LOCAL);
                if handle.is_null() {
                    return None;
                }
                let new = libc::dlsym(handle, c"extism_plugin_new".as_ptr());
                let call = libc::dlsym(handle, c"extism_plugin_call".as_ptr());
                let free = libc::dlsym(handle, c"extism_plugin_free".as_ptr());
                if new.is_null() || call.is_null() || free.is_null() {
                    return None;
                }
                let new: New = std::mem::transmute(new);
                let mut err = std::ptr::null_mut();
                let plugin = new(
                    wasm.as_ptr(),
                    wasm.len() as u64,
                    std::ptr::null(),
                    0,
                    false,
                    &mut err,
                );
                if plugin.is_null() {
                    return None;
                }
                Some(Plugin {
                    plugin,
                    call: std::mem::transmute::<*mut c_void, Call>(call),
                    free: std::mem::transmute::<*mut c_void, Free>(free),
                    func: CString::new(func).ok()?,
                })
            }
        }

        pub fn call(&self, input: &[u8]) {
            // SAFETY: a live plugin and a valid buffer.
            let rc = unsafe {
                (self.call)(
                    self.plugin,
                    self.func.as_ptr(),
                    input.as_ptr(),
                    input.len() as u64,
                )
            };
            assert_eq!(rc, 0, "extism call failed");
        }
    }

    impl Drop for Plugin {
        fn drop(&mut self) {
            // SAFETY: freed once.
            unsafe { (self.free)(self.plugin) };
        }
    }
}

fn main() {
    let hello_dir = capsule_dir("hello");
    assert!(
        hello_dir.join("hello.wasm").exists(),
        "run scripts/build-capsules.sh first (scripts/bench.sh does)"
    );
    let wasm = std::fs::read(hello_dir.join("hello.wasm")).unwrap();
    let payload64 = [b'x'; 64];

    // The C API, called exactly as a C program calls it.
    let mut rt: *mut astrid_runtime_t = std::ptr::null_mut();
    assert_eq!(
        astrid_runtime_new(std::ptr::null(), &mut rt, std::ptr::null_mut()),
        ASTRID_OK
    );
    let dir = hello_dir.to_str().unwrap();
    let mut capsule: *mut astrid_capsule_t = std::ptr::null_mut();
    assert_eq!(
        astrid_capsule_load(
            rt,
            dir.as_ptr().cast(),
            dir.len(),
            std::ptr::null(),
            &mut capsule,
            std::ptr::null_mut()
        ),
        ASTRID_OK
    );

    // Raw wasmtime: the same component and export, same engine config, typed call.
    let engine = astrid::engine::build_engine(None, 1000).unwrap();
    let component = Component::new(&engine, &wasm).unwrap();
    let mut linker = Linker::<()>::new(&engine);
    linker.define_unknown_imports_as_traps(&component).unwrap();
    let mut store = Store::new(&engine, ());
    store.set_fuel(u64::MAX / 2).unwrap();
    store.set_epoch_deadline(u64::MAX / 2);
    let instance = linker.instantiate(&mut store, &component).unwrap();
    let raw = instance
        .get_typed_func::<(&str, &[u8]), (CallResult,)>(&mut store, "astrid-hook-trigger")
        .unwrap();

    let extism_lib = std::env::var("EXTISM_LIB").ok();
    let extism_wasm = std::env::var("EXTISM_PLUGIN")
        .ok()
        .and_then(|p| std::fs::read(p).ok());
    let plugin = match (&extism_lib, &extism_wasm) {
        (Some(lib), Some(w)) => extism::Plugin::load(lib, w, "noop"),
        _ => None,
    };

    // `cargo bench --bench call -- profile ROW N` runs one B02 row N times and
    // nothing else, for instruction counts under callgrind (performance.md).
    let args: Vec<String> = std::env::args().collect();
    if let Some(at) = args.iter().position(|a| a == "profile") {
        let row = args.get(at + 1).map(String::as_str).unwrap_or("c");
        let n: u64 = args
            .get(at + 2)
            .and_then(|n| n.parse().ok())
            .unwrap_or(100_000);
        for _ in 0..n {
            match row {
                "c" => c_call(capsule, "noop", &payload64),
                "raw" => {
                    raw.call(&mut store, ("noop", &payload64)).unwrap();
                }
                other => panic!("unknown profile row {other}: c or raw"),
            }
        }
        astrid_capsule_unload(capsule, std::ptr::null_mut());
        astrid_runtime_free(rt);
        return;
    }

    println!(
        "astrid call benchmarks: {ROUNDS} rounds, ~{} ms batches, interleaved",
        BATCH.as_millis()
    );

    let only: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a.starts_with('B'))
        .collect();
    let wanted = |id: &str| only.is_empty() || only.iter().any(|o| o == id);

    // Rust API on the same kind of runtime, for the FFI layer's share.
    let rust_runtime = Runtime::new(RuntimeConfig::default()).unwrap();
    let rust_hello = rust_runtime
        .load_dir(&hello_dir, &LoadOptions::default())
        .unwrap();

    // B02
    if wanted("B02") {
        let mut rows = vec![
            Row::new("astrid_capsule_call noop 64 B (C API)", || {
                c_call(capsule, "noop", &payload64)
            }),
            Row::new("Capsule::call noop 64 B (Rust API)", || {
                rust_hello.call("noop", &payload64, None).unwrap();
            }),
            Row::new("raw wasmtime typed call noop 64 B", || {
                let (r,) = raw.call(&mut store, ("noop", &payload64)).unwrap();
                assert_eq!(r.action, "continue");
            }),
        ];
        if let Some(p) = &plugin {
            rows.push(Row::new("Extism extism_plugin_call noop 64 B", move || {
                p.call(&payload64)
            }));
        }
        // What usage counting adds to every call path, alone: the busy flag,
        // the fuel read, three single-writer counters, the coarse clock.
        let counted = astrid::usage::CapsuleUsage::default();
        let store_usage = counted.register();
        let mut fuel_store = Store::new(&engine, ());
        fuel_store.set_fuel(u64::MAX / 2).unwrap();
        let coarse_clock = std::sync::atomic::AtomicU64::new(0);
        rows.push(Row::new("usage counting alone, per call", move || {
            store_usage.call_started();
            let left = fuel_store.get_fuel().unwrap_or(0);
            let ticks = coarse_clock.load(std::sync::atomic::Ordering::Relaxed);
            store_usage.call_ended(
                astrid::usage::CallEnd::Ok,
                std::hint::black_box(left),
                ticks,
            );
        }));
        let ratios = table(
            "B02: call overhead (target ≤ 1.3× raw wasmtime, ≥ 10× faster than Extism)",
            &mut rows,
            2,
        );
        drop(rows);
        println!(
            "   usage counting is {:.1}% of astrid's C call",
            100.0 * ratios[ratios.len() - 1] / ratios[0]
        );
        if plugin.is_some() {
            println!(
                "   astrid is {:.2}× raw wasmtime; Extism is {:.1}× slower than astrid",
                ratios[0],
                ratios[3] / ratios[0]
            );
        } else {
            println!(
                "   Extism row skipped: set EXTISM_LIB and EXTISM_PLUGIN (scripts/bench.sh does)"
            );
        }
    }

    // B03
    for size in [64usize, 4 << 10, 64 << 10, 1 << 20] {
        if !wanted("B03") {
            break;
        }
        let payload = vec![b'p'; size];
        // Offset so source and destination do not alias on 4 KiB boundaries.
        let mut sink_buffer = vec![0u8; size + 64];
        let sink = &mut sink_buffer[64..];
        let store = &mut store;
        let mut rows = vec![
            Row::new(format!("astrid_capsule_call echo-len {size} B"), || {
                c_call(capsule, "echo-len", &payload)
            }),
            Row::new(format!("memcpy {size} B"), || {
                sink.copy_from_slice(std::hint::black_box(&payload));
                std::hint::black_box(&*sink);
            }),
            // The floor any wasmtime embedding pays: the same export called
            // raw. Where this row is above the target, no runtime on
            // wasmtime can meet it.
            Row::new(format!("raw wasmtime typed call echo-len {size} B"), || {
                let (r,) = raw.call(&mut *store, ("echo-len", &payload)).unwrap();
                assert!(r.data.is_some());
            }),
        ];
        let ratios = table(
            &format!("B03: payload {size} B (target ≤ 1.1× memcpy from 64 KiB)"),
            &mut rows,
            1,
        );
        println!(
            "   astrid is {:.2}× memcpy and {:.2}× the raw wasmtime floor ({:.2}× memcpy)",
            ratios[0],
            ratios[0] / ratios[2],
            ratios[2]
        );
    }

    // B08 and B16 use the Rust API (the same code paths behind the C API).
    let runtime = rust_runtime;
    let hello = rust_hello;
    if wanted("B08") {
        // Each iteration first frees the idle instance, so the row is an upper
        // bound: it pays for recycling a pool slot as well as for the new one.
        let mut rows = vec![
            Row::new("free idle instance + instantiate + noop call", || {
                hello.trim_idle();
                hello.call("noop", &payload64, None).unwrap();
            }),
            Row::new("pooled warm instance: noop call", || {
                hello.call("noop", &payload64, None).unwrap();
            }),
        ];
        table(
            "B08: first call on a fresh pooled instance (target ≤ 20 µs)",
            &mut rows,
            1,
        );
    }

    let manifest = "[package]\nname = \"bench\"\nversion = \"1.0.0\"\n";
    if wanted("B16") {
        let mut rows = vec![
            Row::new("load_bytes with a warm compile cache + unload", || {
                let c = runtime
                    .load_bytes(&wasm, manifest, &LoadOptions::default())
                    .unwrap();
                c.unload().unwrap();
            }),
            Row::new("cold compile (Component::new, same engine config)", || {
                std::hint::black_box(Component::new(&engine, &wasm).unwrap());
            }),
        ];
        let ratios = table(
            "B16: warm-cache load vs cold compile (target ≥ 50×)",
            &mut rows,
            0,
        );
        println!(
            "   a cold compile costs {:.0}× a warm-cache load",
            ratios[1]
        );
    }

    astrid_capsule_unload(capsule, std::ptr::null_mut());
    astrid_runtime_free(rt);
}
