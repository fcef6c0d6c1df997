//! Bad capsules and manifests get typed errors naming the problem, and the
//! runtime keeps serving afterwards.

mod common;

use astrid::{Code, LoadOptions};
use common::*;

const MANIFEST: &str = "[package]\nname = \"t\"\nversion = \"1.0.0\"\n";

fn load_bytes_err(rt: &astrid::Runtime, wasm: &[u8], manifest: &str) -> astrid::Error {
    rt.load_bytes(wasm, manifest, &LoadOptions::default())
        .err()
        .expect("load must fail")
}

fn runtime_still_serves(rt: &astrid::Runtime) {
    let hello = load(rt, "hello");
    hello.call("noop", b"", None).unwrap();
}

#[test]
fn wrong_binaries() {
    let rt = runtime();
    let e = load_bytes_err(&rt, b"", MANIFEST);
    assert_eq!(e.code(), Code::Compile);
    assert!(e.message().contains("empty"), "{e}");
    let e = load_bytes_err(&rt, b"garbage bytes, not wasm at all", MANIFEST);
    assert_eq!(e.code(), Code::Compile);
    assert!(e.message().contains("magic"), "{e}");
    // A minimal core module: magic, version 1, layer 0.
    let e = load_bytes_err(&rt, b"\0asm\x01\0\0\0", MANIFEST);
    assert_eq!(e.code(), Code::Compile);
    assert!(e.message().contains("core WebAssembly module"), "{e}");
    let mut truncated = wasm_of("hello");
    truncated.truncate(truncated.len() / 2);
    let e = load_bytes_err(&rt, &truncated, MANIFEST);
    assert_eq!(e.code(), Code::Compile, "{e}");
    runtime_still_serves(&rt);
}

#[test]
fn unknown_import_names_it() {
    let rt = runtime();
    let e = rt
        .load_dir(&capsule_dir("bad-import"), &LoadOptions::default())
        .err()
        .unwrap();
    assert_eq!(e.code(), Code::Link, "{e}");
    assert!(e.message().contains("evil:thing/api@1.0.0"), "{e}");
    runtime_still_serves(&rt);
}

#[test]
fn manifest_problems() {
    let rt = runtime();
    let wasm = wasm_of("hello");
    let e = load_bytes_err(&rt, &wasm, &format!("{MANIFEST}surprise = true\n"));
    assert_eq!(e.code(), Code::Manifest);
    assert!(
        e.message().contains("surprise") && e.message().contains("line 4"),
        "{e}"
    );
    let e = load_bytes_err(&rt, &wasm, "[package]\nname = 5\nversion = \"1.0.0\"\n");
    assert_eq!(e.code(), Code::Manifest);
    assert!(e.message().contains("line 2"), "{e}");
    let e = load_bytes_err(
        &rt,
        &wasm,
        &format!("{MANIFEST}[subscribe]\n\"bad..topic\" = \"x\"\n"),
    );
    assert_eq!(e.code(), Code::Manifest);
    assert!(e.message().contains("bad..topic"), "{e}");
    let e = load_bytes_err(
        &rt,
        &wasm,
        &format!("{MANIFEST}[capabilities]\nfs_write = [\"../etc\"]\n"),
    );
    assert_eq!(e.code(), Code::Manifest);
    assert!(e.message().contains("fs_write"), "{e}");
    let e = load_bytes_err(
        &rt,
        &wasm,
        &format!(
            "{MANIFEST}[[component]]\nhash = \"blake3:{}\"\n",
            "0".repeat(64)
        ),
    );
    assert_eq!(e.code(), Code::Manifest);
    assert!(e.message().contains("does not match"), "{e}");
    let good_hash = blake3::hash(&wasm).to_hex();
    rt.load_bytes(
        &wasm,
        &format!("{MANIFEST}[[component]]\nhash = \"blake3:{good_hash}\"\n"),
        &LoadOptions::default(),
    )
    .expect("a matching hash loads");
    runtime_still_serves(&rt);
}

#[test]
fn capsule_directory_problems() {
    let rt = runtime();
    let dir = std::env::temp_dir().join(format!("astrid-bad-dir-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let e = rt.load_dir(&dir, &LoadOptions::default()).err().unwrap();
    assert_eq!(e.code(), Code::NotFound, "{e}");
    assert!(e.message().contains("Capsule.toml"), "{e}");
    std::fs::write(
        dir.join("Capsule.toml"),
        format!("{MANIFEST}[[component]]\nfile = \"../hello.wasm\"\n"),
    )
    .unwrap();
    let e = rt.load_dir(&dir, &LoadOptions::default()).err().unwrap();
    assert_eq!(e.code(), Code::Manifest, "{e}");
    std::fs::write(
        dir.join("Capsule.toml"),
        format!("{MANIFEST}[[component]]\nfile = \"absent.wasm\"\n"),
    )
    .unwrap();
    let e = rt.load_dir(&dir, &LoadOptions::default()).err().unwrap();
    assert_eq!(e.code(), Code::NotFound, "{e}");
    std::fs::write(dir.join("Capsule.toml"), b"[package]\nname = \"\xff\"\n").unwrap();
    let e = rt.load_dir(&dir, &LoadOptions::default()).err().unwrap();
    assert_eq!(e.code(), Code::Utf8, "{e}");
    std::fs::remove_dir_all(&dir).unwrap();
    runtime_still_serves(&rt);
}

#[test]
fn missing_export_is_not_found() {
    let rt = runtime();
    // A component with no exports at all (the smallest valid component).
    let e = rt
        .load_bytes(b"\0asm\x0d\0\x01\0", MANIFEST, &LoadOptions::default())
        .unwrap()
        .call("x", b"", None)
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound, "{e}");
}

/// Loading the same bytes twice works (the second load comes from the
/// compile cache, whose speed B16 measures) and gives the same id.
#[test]
fn same_name_and_binary_give_the_same_id() {
    let rt = runtime();
    let wasm = wasm_of("hello");
    let a = rt
        .load_bytes(&wasm, MANIFEST, &LoadOptions::default())
        .unwrap();
    let b = rt
        .load_bytes(&wasm, MANIFEST, &LoadOptions::default())
        .unwrap();
    assert_eq!(a.id(), b.id(), "same name and binary, same id");
}

#[test]
fn compiled_code_is_cached_on_disk_when_asked() {
    let dir = std::env::temp_dir().join(format!("astrid-cache-test-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let config = || astrid::RuntimeConfig {
        cache_dir: Some(dir.clone()),
        ..astrid::RuntimeConfig::default()
    };
    let count_files = |dir: &std::path::Path| -> usize {
        fn walk(p: &std::path::Path) -> usize {
            std::fs::read_dir(p).map_or(0, |entries| {
                entries
                    .filter_map(|e| e.ok())
                    .map(|e| {
                        if e.path().is_dir() {
                            walk(&e.path())
                        } else {
                            1
                        }
                    })
                    .sum()
            })
        }
        walk(dir)
    };
    {
        let rt = astrid::Runtime::new(config()).unwrap();
        load(&rt, "hello").call("noop", b"", None).unwrap();
    }
    let files = count_files(&dir);
    assert!(
        files >= 1,
        "the compiled component was written to the cache directory"
    );
    {
        let rt = astrid::Runtime::new(config()).unwrap();
        load(&rt, "hello").call("noop", b"", None).unwrap();
    }
    assert_eq!(
        count_files(&dir),
        files,
        "a second runtime reuses the cached artifact"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn missing_workspace_root_fails_the_load() {
    let rt = runtime();
    let e = rt
        .load_dir(
            &capsule_dir("hello"),
            &LoadOptions {
                workspace_root: Some("/nonexistent/astrid/workspace".into()),
                ..LoadOptions::default()
            },
        )
        .err()
        .unwrap();
    assert_eq!(e.code(), Code::NotFound, "{e}");
    assert!(e.message().contains("workspace root"), "{e}");
}

#[test]
fn interceptor_export_with_the_wrong_signature_fails_the_load() {
    let rt = runtime();
    let e = rt
        .load_dir(&capsule_dir("bad-signature"), &LoadOptions::default())
        .err()
        .unwrap();
    assert_eq!(e.code(), Code::Link, "{e}");
    assert!(e.message().contains("astrid-hook-trigger"), "{e}");
}

/// Components that use wasm features this build of wasmtime leaves out
/// (threads, GC structs) are refused at load with a compile error whose
/// causes name the feature. Function subtyping is accepted: a component
/// whose start function makes an indirect call that needs the subtype test
/// runs it on the first call's instantiation, passing it or trapping, and
/// the host lives either way. (wasmtime before 48.0.9 reached a libcall
/// compiled out of builds without `gc` here and could abort the process:
/// GHSA-rc4p-x33f-vpr2; GHSA-2674-w29h-wqvj is the threads counterpart.)
#[test]
fn components_using_features_left_out_of_this_build_never_abort_the_host() {
    let rt = runtime();
    for (name, wasm, feature) in [
        (
            "shared-memory",
            &include_bytes!("fixtures/shared-memory.wasm")[..],
            "threads",
        ),
        (
            "gc-struct",
            &include_bytes!("fixtures/gc-struct.wasm")[..],
            "gc",
        ),
    ] {
        let e = load_bytes_err(&rt, wasm, MANIFEST);
        assert_eq!(e.code(), Code::Compile, "{name}: {e}");
        assert!(
            e.causes().iter().any(|c| c.contains(feature)),
            "{name}: the causes name `{feature}`: {:?}",
            e.causes()
        );
    }
    // Loading instantiates a first instance, which runs the start function.
    // The subtype test passes: the load completes, and a call then finds no
    // entry point.
    let capsule = rt
        .load_bytes(
            include_bytes!("fixtures/func-subtype.wasm"),
            MANIFEST,
            &LoadOptions::default(),
        )
        .expect("function subtyping loads");
    let e = capsule.call("noop", b"", None).expect_err("no entry point");
    assert!(matches!(e.code(), Code::NotFound | Code::Link), "{e}");
    // The subtype test fails: the start function traps (so the test ran),
    // reported as the load's error.
    let e = load_bytes_err(
        &rt,
        include_bytes!("fixtures/func-subtype-mismatch.wasm"),
        MANIFEST,
    );
    assert_eq!(e.code(), Code::Trap, "{e}");
    assert!(
        e.causes()
            .iter()
            .any(|c| c.contains("indirect call type mismatch")),
        "{:?}",
        e.message()
    );
    runtime_still_serves(&rt);
}
