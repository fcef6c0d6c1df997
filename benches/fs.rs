//! `astrid:fs` benchmarks (performance.md method): B05 (guest `read-file`
//! 4 KiB / 1 MiB through manifest + C gate callback + C callback VFS), B06
//! (the deny path) and B07 (4 KiB `write-file`). Each astrid row is one
//! capsule call looping the host call N times, so the call's own overhead is
//! amortised; the comparators run the same N.
//!
//! Comparators in the same run: the same gate and VFS callbacks called
//! natively plus one copy of the data, and (B05) a guest `std::fs::read`
//! through wasi:filesystem on a directory preopened for this benchmark only.

mod harness;

use astrid::ffi::capsule::{astrid_capsule_load, astrid_capsule_t};
use astrid::ffi::gate::{
    astrid_gate_kind_t, astrid_gate_request_info, astrid_gate_request_info_t,
    astrid_gate_request_t, astrid_runtime_set_gate, astrid_verdict_t, ASTRID_ALLOW, ASTRID_DENY,
    ASTRID_GATE_FILE_READ, ASTRID_GATE_FILE_WRITE,
};
use astrid::ffi::runtime::{
    astrid_runtime_config_init, astrid_runtime_config_t, astrid_runtime_new, astrid_runtime_t,
    ASTRID_RUNTIME_INLINE_CALLBACKS,
};
use astrid::ffi::vfs::*;
use astrid::ffi::ASTRID_OK;
use astrid::CallResult;
use harness::{c_call, capsule_dir, table, Row};
use wasmtime::component::{Component, Linker, ResourceTable};
use wasmtime::Store;
use wasmtime_wasi::{FsPerms, WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

/// The one file the benchmark VFS serves, whatever the path.
struct OneFile {
    data: Vec<u8>,
}

fn file<'a>(ud: *mut libc::c_void) -> &'a OneFile {
    unsafe { &*(ud as *const OneFile) }
}

/// The gate's decision: reads anywhere, writes only under cwd://ws.
fn decide(kind: astrid_gate_kind_t, path: &[u8]) -> astrid_verdict_t {
    if kind == ASTRID_GATE_FILE_WRITE && !path.starts_with(b"cwd://ws") {
        ASTRID_DENY
    } else {
        ASTRID_ALLOW
    }
}

/// The C gate: reads the request through its accessor, then decides.
unsafe extern "C" fn gate(
    _: *mut libc::c_void,
    req: *mut astrid_gate_request_t,
) -> astrid_verdict_t {
    let mut info: astrid_gate_request_info_t = std::mem::zeroed();
    info.size = std::mem::size_of::<astrid_gate_request_info_t>();
    if astrid_gate_request_info(req, &mut info, std::ptr::null_mut()) != ASTRID_OK {
        return ASTRID_DENY;
    }
    let path = if info.path.is_null() {
        &[][..]
    } else {
        std::slice::from_raw_parts(info.path.cast::<u8>(), info.path_len)
    };
    decide(info.kind, path)
}
unsafe extern "C" fn v_stat(
    ud: *mut libc::c_void,
    _: *const libc::c_char,
    _: usize,
    _: u32,
    out: *mut astrid_vfs_stat_t,
) -> i32 {
    (*out).kind = ASTRID_VFS_KIND_REGULAR;
    (*out).size = file(ud).data.len() as u64;
    ASTRID_VFS_OK
}
unsafe extern "C" fn v_open(
    _: *mut libc::c_void,
    _: *const libc::c_char,
    _: usize,
    _: u32,
    out: *mut u64,
) -> i32 {
    *out = 1;
    ASTRID_VFS_OK
}
unsafe extern "C" fn v_read_at(
    ud: *mut libc::c_void,
    _: u64,
    off: u64,
    buf: *mut u8,
    len: usize,
    out: *mut usize,
) -> i32 {
    let data = &file(ud).data;
    let start = (off as usize).min(data.len());
    let n = len.min(data.len() - start);
    std::ptr::copy_nonoverlapping(data.as_ptr().add(start), buf, n);
    *out = n;
    ASTRID_VFS_OK
}
unsafe extern "C" fn v_write_at(
    _: *mut libc::c_void,
    _: u64,
    _: u64,
    data: *const u8,
    len: usize,
    out: *mut usize,
) -> i32 {
    std::hint::black_box(std::slice::from_raw_parts(data, len));
    *out = len;
    ASTRID_VFS_OK
}
unsafe extern "C" fn v_close(_: *mut libc::c_void, _: u64) -> i32 {
    ASTRID_VFS_OK
}
unsafe extern "C" fn v_fstat(ud: *mut libc::c_void, _: u64, out: *mut astrid_vfs_stat_t) -> i32 {
    v_stat(ud, std::ptr::null(), 0, 1, out)
}

fn ops() -> astrid_vfs_ops_t {
    astrid_vfs_ops_t {
        size: std::mem::size_of::<astrid_vfs_ops_t>(),
        stat: Some(v_stat),
        open: Some(v_open),
        read_at: Some(v_read_at),
        write_at: Some(v_write_at),
        close: Some(v_close),
        sync: None,
        set_len: None,
        fstat: Some(v_fstat),
        read_dir: None,
        mkdir: None,
        remove_file: None,
        remove_dir: None,
        rename: None,
        hard_link: None,
        read_link: None,
    }
}

/// A runtime serving `cwd` from `OneFile` behind the C gate, and fsprobe.
fn astrid_setup(data: *const OneFile, flags: u32) -> *mut astrid_capsule_t {
    let mut cfg: astrid_runtime_config_t = unsafe { std::mem::zeroed() };
    astrid_runtime_config_init(&mut cfg, std::ptr::null_mut());
    cfg.flags = flags;
    let mut rt: *mut astrid_runtime_t = std::ptr::null_mut();
    assert_eq!(
        astrid_runtime_new(&cfg, &mut rt, std::ptr::null_mut()),
        ASTRID_OK
    );
    assert_eq!(
        astrid_runtime_set_gate(
            rt,
            Some(gate),
            std::ptr::null_mut(),
            None,
            std::ptr::null_mut()
        ),
        ASTRID_OK
    );
    let ops = ops();
    let mount = "cwd";
    assert_eq!(
        astrid_runtime_mount_vfs(
            rt,
            mount.as_ptr().cast(),
            3,
            &ops,
            data.cast_mut().cast(),
            None,
            std::ptr::null_mut()
        ),
        ASTRID_OK
    );
    let dir = capsule_dir("fsprobe");
    let dir = dir.to_str().unwrap();
    let mut capsule = std::ptr::null_mut();
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
    capsule
}

/// What astrid's read-file does with the callbacks, called natively, plus
/// the one copy into the result buffer.
fn native_read(ud: *mut libc::c_void, path: &str) -> usize {
    std::hint::black_box(native_read_bytes(ud, path)).len()
}

struct WasiHost {
    ctx: WasiCtx,
    table: ResourceTable,
    /// The `OneFile` the raw `read-file` import serves (see `FsError`).
    file: usize,
}

/// `astrid:fs` `error-code`, mirrored so the comparator store can serve
/// `read-file` as a plain typed host import: the floor any component-model
/// embedding pays for the same callbacks, with none of astrid's policy.
#[derive(
    wasmtime::component::ComponentType, wasmtime::component::Lift, wasmtime::component::Lower,
)]
#[component(variant)]
#[allow(dead_code)]
enum FsError {
    #[component(name = "not-found")]
    NotFound,
    #[component(name = "access")]
    Access,
    #[component(name = "capability-denied")]
    CapabilityDenied,
    #[component(name = "boundary-escape")]
    BoundaryEscape,
    #[component(name = "invalid-path")]
    InvalidPath,
    #[component(name = "would-block")]
    WouldBlock,
    #[component(name = "is-directory")]
    IsDirectory,
    #[component(name = "not-directory")]
    NotDirectory,
    #[component(name = "not-empty")]
    NotEmpty,
    #[component(name = "too-large")]
    TooLarge,
    #[component(name = "quota")]
    Quota,
    #[component(name = "cross-vfs")]
    CrossVfs,
    #[component(name = "already-exists")]
    AlreadyExists,
    #[component(name = "closed")]
    Closed,
    #[component(name = "unknown")]
    Unknown(String),
}

/// `native_read`, returning the bytes (the one copy) instead of their count.
fn native_read_bytes(ud: *mut libc::c_void, path: &str) -> Vec<u8> {
    unsafe {
        assert_eq!(decide(ASTRID_GATE_FILE_READ, path.as_bytes()), ASTRID_ALLOW);
        let mut h = 0;
        v_open(ud, path.as_ptr().cast(), path.len(), 1, &mut h);
        let mut st = astrid_vfs_stat_t::default();
        v_fstat(ud, h, &mut st);
        let mut out = Vec::with_capacity(st.size as usize);
        let mut n = 0;
        v_read_at(ud, h, 0, out.as_mut_ptr(), st.size as usize, &mut n);
        out.set_len(n);
        let mut end = 0;
        v_read_at(ud, h, n as u64, out.as_mut_ptr(), 0, &mut end);
        v_close(ud, h);
        out
    }
}

impl WasiView for WasiHost {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.ctx,
            table: &mut self.table,
        }
    }
}

fn main() {
    let only: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a.starts_with('B'))
        .collect();
    let wanted = |id: &str| only.is_empty() || only.iter().any(|o| o == id);
    let preopen = std::env::temp_dir().join(format!("astrid-bench-{}", std::process::id()));
    std::fs::create_dir_all(&preopen).unwrap();

    // The wasi:filesystem comparator: fsprobe in a plain wasmtime store whose
    // WASI has the benchmark directory preopened at `/`.
    let engine = astrid::engine::build_engine(None, 1000).unwrap();
    let wasm = std::fs::read(capsule_dir("fsprobe").join("fsprobe.wasm")).unwrap();
    let component = Component::new(&engine, &wasm).unwrap();
    let mut linker = Linker::<WasiHost>::new(&engine);
    wasmtime_wasi::p2::add_to_linker_sync(&mut linker).unwrap();
    // The astrid imports are never called on this path: traps stand in.
    use wasmtime::component::types::ComponentItem;
    for (name, item) in component.component_type().imports(&engine) {
        let ComponentItem::ComponentInstance(instance) = item.ty else {
            continue;
        };
        if !name.starts_with("astrid:") {
            continue;
        }
        let mut defined = linker.instance(name).unwrap();
        for (export, kind) in instance.exports(&engine) {
            match kind.ty {
                ComponentItem::ComponentFunc(_)
                    if name.starts_with("astrid:fs/host") && export == "read-file" =>
                {
                    defined
                        .func_wrap(
                            export,
                            |store: wasmtime::StoreContextMut<'_, WasiHost>,
                             (path,): (String,)|
                             -> wasmtime::Result<(Result<Vec<u8>, FsError>,)> {
                                let ud = store.data().file as *mut libc::c_void;
                                Ok((Ok(native_read_bytes(ud, &path)),))
                            },
                        )
                        .unwrap()
                }
                ComponentItem::ComponentFunc(_) => defined
                    .func_new(export, |_, _, _, _| {
                        Err(wasmtime::format_err!("not served here"))
                    })
                    .unwrap(),
                ComponentItem::Resource(_) => defined
                    .resource(
                        export,
                        wasmtime::component::ResourceType::host::<()>(),
                        |_, _| Ok(()),
                    )
                    .unwrap(),
                _ => {}
            }
        }
    }
    let ctx = WasiCtxBuilder::new()
        .preopened_dir(&preopen, "/", FsPerms::ReadWrite)
        .unwrap()
        .build();
    let mut store = Store::new(
        &engine,
        WasiHost {
            ctx,
            table: ResourceTable::new(),
            file: 0,
        },
    );
    store.set_fuel(u64::MAX / 2).unwrap();
    store.set_epoch_deadline(u64::MAX / 2);
    let instance = linker.instantiate(&mut store, &component).unwrap();
    let hook = instance
        .get_typed_func::<(&str, &[u8]), (CallResult,)>(&mut store, "astrid-hook-trigger")
        .unwrap();
    // Two rows call into this store.
    let store = std::cell::RefCell::new(store);

    // `cargo bench --bench fs -- profile N` makes one inline-callback call
    // looping N 4 KiB read-files and nothing else, for callgrind
    // (performance.md): two values of N give the instructions per read.
    let args: Vec<String> = std::env::args().collect();
    if let Some(at) = args.iter().position(|a| a == "profile") {
        let n: usize = args
            .get(at + 1)
            .and_then(|n| n.parse().ok())
            .unwrap_or(1000);
        let one = Box::leak(Box::new(OneFile {
            data: vec![7u8; 4096],
        }));
        let inline = astrid_setup(one, ASTRID_RUNTIME_INLINE_CALLBACKS);
        c_call(inline, "read-loop", format!("f\n{n}").as_bytes());
        return;
    }

    println!("astrid fs benchmarks: rows interleaved; each row = one call looping N host calls");
    for (size, n, label) in [(4096usize, 200usize, "4 KiB"), (1 << 20, 4, "1 MiB")] {
        if !wanted("B05") {
            break;
        }
        let one = Box::leak(Box::new(OneFile {
            data: vec![7u8; size],
        }));
        let ud = (one as *mut OneFile).cast::<libc::c_void>();
        let inline = astrid_setup(one, ASTRID_RUNTIME_INLINE_CALLBACKS);
        let handoff = astrid_setup(one, 0);
        std::fs::write(preopen.join("f"), &one.data).unwrap();
        let payload = format!("f\n{n}");
        store.borrow_mut().data_mut().file = ud as usize;
        let mut rows = vec![
            Row::new(format!("native gate + VFS callbacks + copy ×{n}"), || {
                for _ in 0..n {
                    native_read(ud, "cwd://f");
                }
            }),
            Row::new(format!("astrid read-file, inline callbacks ×{n}"), || {
                c_call(inline, "read-loop", payload.as_bytes())
            }),
            Row::new(
                format!("raw wasmtime import read-file, same callbacks ×{n}"),
                || {
                    let (r,) = hook
                        .call(&mut *store.borrow_mut(), ("read-loop", payload.as_bytes()))
                        .unwrap();
                    assert_eq!(r.action, "ok", "{r:?}");
                },
            ),
            Row::new(format!("astrid read-file, default hand-off ×{n}"), || {
                c_call(handoff, "read-loop", payload.as_bytes())
            }),
            Row::new(
                format!("guest std::fs::read via wasi:filesystem ×{n}"),
                || {
                    let (r,) = hook
                        .call(
                            &mut *store.borrow_mut(),
                            ("std-read-loop", payload.as_bytes()),
                        )
                        .unwrap();
                    assert_eq!(r.action, "ok", "{r:?}");
                },
            ),
        ];
        table(
            &format!("B05: read-file {label} (targets: row 2 ≤ 3× row 1; row 5 ≥ 50× row 2; row 3 is the floor)"),
            &mut rows,
            0,
        );
    }
    if wanted("B06") || wanted("B07") {
        let one = Box::leak(Box::new(OneFile {
            data: vec![7u8; 4096],
        }));
        let ud = (one as *mut OneFile).cast::<libc::c_void>();
        let inline = astrid_setup(one, ASTRID_RUNTIME_INLINE_CALLBACKS);
        let n = 200;
        let deny = format!("elsewhere/f\n{n}");
        let write = format!("ws/f\n{n}\n4096");
        let data = vec![b'w'; 4096];
        let mut rows = vec![
            Row::new(format!("native gate (deny) ×{n}"), || {
                for _ in 0..n {
                    let path = std::hint::black_box(b"cwd://x");
                    std::hint::black_box(decide(ASTRID_GATE_FILE_WRITE, path));
                }
            }),
            Row::new(format!("B06 astrid denied write-file ×{n}"), || {
                c_call(inline, "deny-loop", deny.as_bytes())
            }),
            Row::new(
                format!("native gate + open + write 4 KiB + close ×{n}"),
                || {
                    for _ in 0..n {
                        let path = std::hint::black_box("cwd://ws/f");
                        std::hint::black_box(decide(ASTRID_GATE_FILE_WRITE, path.as_bytes()));
                        unsafe {
                            let mut h = 0;
                            v_open(ud, path.as_ptr().cast(), path.len(), 14, &mut h);
                            let copy = data.clone();
                            let mut w = 0;
                            v_write_at(ud, h, 0, copy.as_ptr(), copy.len(), &mut w);
                            v_close(ud, h);
                        }
                    }
                },
            ),
            Row::new(format!("B07 astrid write-file 4 KiB ×{n}"), || {
                c_call(inline, "write-loop", write.as_bytes())
            }),
        ];
        table(
            "B06 / B07: deny path and 4 KiB write (ratios against row 1)",
            &mut rows,
            0,
        );
    }
    let _ = std::fs::remove_dir_all(&preopen);
}
