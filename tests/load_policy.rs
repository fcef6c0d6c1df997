//! Per-capsule policy at load: network flags for one capsule only, and VFS
//! providers for one capsule's mounts.

mod common;

use astrid::runtime::{FLAG_ALLOW_LOOPBACK, FLAG_INLINE_CALLBACKS};
use astrid::vfs::memory::{MemoryFs, MemoryLimits};
use astrid::vfs::{OpenFlags, Vfs};
use astrid::{Code, LoadOptions};
use common::*;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::PathBuf;
use std::sync::Arc;

fn echo_server() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for mut stream in listener.incoming().flatten() {
            std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                while let Ok(n) = stream.read(&mut buf) {
                    if n == 0 || stream.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
            });
        }
    });
    port
}

#[test]
fn network_flags_apply_to_the_capsule_loaded_with_them_only() {
    let rt = runtime();
    let echo = echo_server().to_string();
    let open = rt
        .load_dir(
            &capsule_dir("netprobe"),
            &LoadOptions {
                net_flags: FLAG_ALLOW_LOOPBACK,
                ..LoadOptions::default()
            },
        )
        .unwrap();
    let closed = rt
        .load_dir(&capsule_dir("netprobe"), &LoadOptions::default())
        .unwrap();
    assert_eq!(
        ok(&open, "tcp-echo", &["127.0.0.1", &echo, "through"]),
        "through"
    );
    assert_eq!(
        err(&closed, "connect", &["127.0.0.1", &echo]),
        "airlock-rejected"
    );
    // Flags that are the runtime's alone are refused.
    let Err(e) = rt.load_dir(
        &capsule_dir("netprobe"),
        &LoadOptions {
            net_flags: FLAG_INLINE_CALLBACKS,
            ..LoadOptions::default()
        },
    ) else {
        panic!("a runtime-only flag was taken per capsule")
    };
    assert_eq!(e.code(), Code::InvalidArgument, "{e}");
}

/// An in-memory filesystem holding `ws/who.txt` = `text`.
fn provider_with(text: &str) -> Arc<dyn Vfs> {
    let fs = MemoryFs::new(MemoryLimits::default());
    fs.mkdir("ws").unwrap();
    let h = fs
        .open(
            "ws/who.txt",
            OpenFlags(OpenFlags::WRITE | OpenFlags::CREATE),
        )
        .unwrap();
    fs.write_at(h, 0, text.as_bytes()).unwrap();
    fs.close(h);
    Arc::new(fs)
}

#[test]
fn each_capsule_reads_its_own_providers_over_the_runtime_mount() {
    let rt = runtime();
    rt.mount_vfs(
        astrid::policy::paths::Mount::Cwd,
        Some(provider_with("runtime")),
    )
    .unwrap();
    let load = |cwd: Option<Arc<dyn Vfs>>, tmp: Option<Arc<dyn Vfs>>| {
        rt.load_dir(
            &capsule_dir("fsprobe"),
            &LoadOptions {
                cwd_vfs: cwd,
                tmp_vfs: tmp,
                ..LoadOptions::default()
            },
        )
        .unwrap()
    };
    let first = load(Some(provider_with("first")), None);
    let second = load(
        Some(provider_with("second")),
        Some(provider_with("scratch")),
    );
    let plain = load(None, None);
    assert_eq!(ok(&first, "read-file", &["ws/who.txt"]), "first");
    assert_eq!(ok(&second, "read-file", &["ws/who.txt"]), "second");
    assert_eq!(ok(&second, "read-file", &["tmp://ws/who.txt"]), "scratch");
    assert_eq!(ok(&plain, "read-file", &["ws/who.txt"]), "runtime");

    // A provider and a host directory for the same mount: refused.
    let Err(e) = rt.load_dir(
        &capsule_dir("fsprobe"),
        &LoadOptions {
            workspace_root: Some(PathBuf::from(env!("CARGO_MANIFEST_DIR"))),
            cwd_vfs: Some(provider_with("x")),
            ..LoadOptions::default()
        },
    ) else {
        panic!("two sources for cwd were taken")
    };
    assert_eq!(e.code(), Code::InvalidArgument, "{e}");
}
