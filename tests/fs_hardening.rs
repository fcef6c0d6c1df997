//! The filesystem classes of the hardening issue, each tried as a capsule
//! would try it, asserting the canary (host memory, host files, timing),
//! not just an error code: huge sizes on in-memory files, in-memory
//! budgets, sparse growth past the write budget, hard links widening
//! grants, special files, long operations past deadline and cancel, link
//! text and resolution errors leaking, and links swapped in between the
//! check and the use.

mod common;

use astrid::vfs::memory::MemoryLimits;
use astrid::{Capsule, LoadOptions, Runtime, RuntimeConfig};
use common::*;
use std::os::unix::fs::symlink;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn load(rt: &Runtime, options: LoadOptions) -> Capsule {
    rt.load_dir(&capsule_dir("fsprobe"), &options).unwrap()
}

fn in_workspace(root: &Path) -> LoadOptions {
    LoadOptions {
        workspace_root: Some(root.to_path_buf()),
        ..LoadOptions::default()
    }
}

/// Resident set size of this process, in bytes.
fn rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    let kib: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    kib * 1024
}

#[test]
fn huge_sizes_on_in_memory_files_are_refused_and_the_host_lives() {
    let rt = runtime();
    let c = load(&rt, LoadOptions::default()); // cwd:// is in memory too
    for path in ["tmp://f", "cwd://ws/f"] {
        if path.starts_with("cwd") {
            ok(&c, "mkdir-all", &["cwd://ws"]);
        }
        // Before the fix each of these made the host allocate the size and
        // abort the process.
        let steps = "len:1099511627776;len:18446744073709551615;w:1099511627776:x;\
                     w:18446744073709551610:x;stat;w:0:ok;stat";
        assert_eq!(
            ok(&c, "handle", &[path, "write", steps]),
            "!quota;!quota;!quota;!quota;file:0;2;file:2",
            "{path}"
        );
    }
    assert_eq!(ok(&c, "read-file", &["tmp://f"]), "ok");
}

#[test]
fn in_memory_mounts_have_a_byte_and_entry_budget() {
    let rt = Runtime::new(RuntimeConfig {
        memfs_limits: MemoryLimits {
            bytes: 4 << 20,
            entries: 64,
        },
        ..RuntimeConfig::default()
    })
    .unwrap();
    let c = load(&rt, LoadOptions::default());
    let before = rss();
    // Bytes: 1 MiB files until the mount is full.
    let mut stored = 0;
    for i in 0..400 {
        match fs(&c, "write-size", &[&format!("tmp://big{i}"), "1048576"]) {
            Ok(_) => stored += 1,
            Err(e) => {
                assert_eq!(e, "quota");
                break;
            }
        }
    }
    assert!(
        (3..=4).contains(&stored),
        "stored {stored} MiB in a 4 MiB mount"
    );
    assert!(rss() < before + (64 << 20), "host memory stayed bounded");
    // Entries: empty files until the count runs out (the failed big file
    // above left an empty entry behind, as a failed write does).
    let mut made = 0;
    while fs(&c, "write-file", &[&format!("tmp://e{made}"), ""]).is_ok() {
        made += 1;
        assert!(made <= 64, "entry budget not enforced");
    }
    assert_eq!(err(&c, "mkdir", &["tmp://d"]), "quota");
    // Freeing space makes room again; the runtime kept serving throughout.
    ok(&c, "unlink", &["tmp://big0"]);
    ok(&c, "write-file", &["tmp://again", "x"]);
    assert_eq!(ok(&c, "read-file", &["tmp://again"]), "x");
    // Every data scope gets its own budget; cwd:// in memory has one too.
    ok(&c, "mkdir", &["cwd://ws"]);
    assert_eq!(
        err(
            &c,
            "write-size",
            &["cwd://ws/huge", &(5u64 << 20).to_string()]
        ),
        "quota"
    );
}

#[test]
fn the_write_budget_charges_length_growth_not_just_bytes() {
    let root = scratch_dir("budget");
    std::fs::create_dir(root.join("ws")).unwrap();
    let rt = runtime();
    let c = load(
        &rt,
        LoadOptions {
            fs_write_budget: Some(1 << 20),
            ..in_workspace(&root)
        },
    );
    // Sparse growth far past the budget: 1 TiB by set-len or by a write.
    assert_eq!(
        ok(
            &c,
            "handle",
            &[
                "ws/sparse",
                "write",
                "len:1099511627776;w:1099511627776:x;len:4096;w:8192:x;stat"
            ]
        ),
        "!quota;!quota;ok;1;file:8193"
    );
    let meta = std::fs::metadata(root.join("ws/sparse")).unwrap();
    assert_eq!(meta.len(), 8193, "no sparse terabyte on the host");
    // The budget (1 MiB) is now 4096 + 4096 + 1 spent; 1 MiB more is refused.
    assert_eq!(err(&c, "write-size", &["ws/more", "1048576"]), "quota");
    std::fs::remove_dir_all(&root).unwrap();
}

#[test]
fn a_hard_link_needs_write_permission_on_its_source() {
    // fsprobe may read all of cwd:// but write only under ws/ and scratch/.
    let root = scratch_dir("link");
    std::fs::create_dir(root.join("ws")).unwrap();
    std::fs::write(root.join("readonly.txt"), "original").unwrap();
    let rt = runtime();
    let c = load(&rt, in_workspace(&root));
    assert_eq!(
        err(&c, "hard-link", &["readonly.txt", "ws/alias"]),
        "capability-denied"
    );
    assert!(!root.join("ws/alias").exists());
    // Writing through a name that exists is judged on that name's path.
    std::fs::hard_link(root.join("readonly.txt"), root.join("ws/alias")).unwrap();
    ok(&c, "write-file", &["ws/own", "x"]);
    ok(&c, "hard-link", &["ws/own", "ws/own2"]);
    assert_eq!(ok(&c, "read-file", &["ws/own2"]), "x");
    // The rule is the host's, not a provider's: in memory, the same.
    let c = load(&rt, LoadOptions::default());
    ok(&c, "mkdir-all", &["cwd://ws"]);
    ok(&c, "write-file", &["cwd://ws/w", "x"]);
    ok(&c, "hard-link", &["cwd://ws/w", "cwd://ws/w2"]);
    assert_eq!(
        err(&c, "hard-link", &["tmp://nothing", "cwd://ws/x"]),
        "cross-vfs"
    );
    std::fs::remove_dir_all(&root).unwrap();
}

#[test]
fn special_files_are_refused_promptly() {
    let root = scratch_dir("fifo");
    std::fs::create_dir(root.join("ws")).unwrap();
    let made = std::process::Command::new("mkfifo")
        .arg(root.join("ws/pipe"))
        .status()
        .unwrap();
    assert!(made.success());
    let rt = runtime();
    let c = load(&rt, in_workspace(&root));
    let started = Instant::now();
    let refused = "unknown(not a regular file)";
    assert_eq!(err(&c, "read-file", &["ws/pipe"]), refused);
    assert_eq!(err(&c, "write-file", &["ws/pipe", "x"]), refused);
    assert_eq!(err(&c, "append", &["ws/pipe", "x"]), refused);
    assert_eq!(err(&c, "copy", &["ws/pipe", "ws/copy"]), refused);
    assert_eq!(err(&c, "handle", &["ws/pipe", "read", ""]), refused);
    assert_eq!(err(&c, "hard-link", &["ws/pipe", "ws/p2"]), refused);
    assert_eq!(ok(&c, "stat", &["ws/pipe"]), "other:0");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "no call blocked on the FIFO ({:?})",
        started.elapsed()
    );
    std::fs::remove_dir_all(&root).unwrap();
}

#[test]
fn remove_dir_all_stops_at_the_deadline_and_on_cancel() {
    let root = scratch_dir("tree");
    let tree = root.join("ws/tree");
    let count = 20_000;
    for d in 0..20 {
        std::fs::create_dir_all(tree.join(format!("d{d}"))).unwrap();
        for f in 0..count / 20 {
            std::fs::write(tree.join(format!("d{d}/f{f}")), "").unwrap();
        }
    }
    let left = |tree: &Path| -> usize {
        std::fs::read_dir(tree)
            .map(|dirs| {
                dirs.map(|d| std::fs::read_dir(d.unwrap().path()).unwrap().count())
                    .sum()
            })
            .unwrap_or(0)
    };
    // Deadline: a 100 ms call cannot run for the whole tree.
    let rt = runtime_with(100, 500_000_000);
    let c = load(&rt, in_workspace(&root));
    let started = Instant::now();
    let result = c.call("remove-dir-all", b"ws/tree", None);
    let took = started.elapsed();
    assert!(
        took < Duration::from_millis(600),
        "ran {took:?} past a 100 ms deadline"
    );
    assert!(result.is_err() || result.unwrap().action != "ok");
    let after_deadline = left(&tree);
    assert!(after_deadline > 0, "it stopped before the end");
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(
        left(&tree),
        after_deadline,
        "nothing kept deleting after the call ended"
    );

    // Cancel: the capsule-wide cancel stops it between entries.
    let rt = runtime();
    let c = Arc::new(load(&rt, in_workspace(&root)));
    let worker = {
        let c = c.clone();
        std::thread::spawn(move || c.call("remove-dir-all", b"ws/tree", None))
    };
    std::thread::sleep(Duration::from_millis(20));
    c.cancel();
    let cancelled_at = Instant::now();
    let _ = worker.join().unwrap();
    assert!(cancelled_at.elapsed() < Duration::from_millis(500));
    let after_cancel = left(&tree);
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(
        left(&tree),
        after_cancel,
        "nothing kept deleting after cancel"
    );
    std::fs::remove_dir_all(&root).unwrap();
}

#[test]
fn link_text_leaving_the_root_is_never_shown() {
    let root = scratch_dir("readlink");
    std::fs::create_dir(root.join("ws")).unwrap();
    std::fs::write(root.join("ws/a.txt"), "a").unwrap();
    symlink("../../../../etc/passwd", root.join("ws/rel_out")).unwrap();
    symlink("..", root.join("ws/up_ok")).unwrap();
    symlink("../..", root.join("ws/up_out")).unwrap();
    symlink(&root, root.join("ws/root_abs")).unwrap();
    symlink("/etc", root.join("ws/host_abs")).unwrap();
    let host = root.to_str().unwrap().to_string();
    let rt = runtime();
    let c = load(&rt, in_workspace(&root));
    for link in ["ws/rel_out", "ws/up_out", "ws/host_abs"] {
        let answer = fs(&c, "read-link", &[link]);
        assert_eq!(answer, Err("boundary-escape".into()), "{link}");
    }
    assert_eq!(ok(&c, "read-link", &["ws/up_ok"]), "..");
    assert_eq!(ok(&c, "read-link", &["ws/root_abs"]), "cwd://");
    for path in ["ws/rel_out", "ws/root_abs", "ws/host_abs", "ws/nothing"] {
        for action in ["read-link", "canonicalize", "stat", "read-file"] {
            let (Ok(text) | Err(text)) = fs(&c, action, &[path]);
            assert!(!text.contains(&host), "{action} {path} showed {text}");
        }
    }
    std::fs::remove_dir_all(&root).unwrap();
}

#[test]
fn resolution_errors_do_not_describe_ungranted_places() {
    // Writes are granted under ws/ only; private/ holds a file and nothing
    // else. Through a link, "is there a file called f in private/?" must
    // get the same answer whether or not there is.
    let root = scratch_dir("oracle");
    std::fs::create_dir_all(root.join("ws")).unwrap();
    std::fs::create_dir_all(root.join("private")).unwrap();
    std::fs::write(root.join("private/f"), "").unwrap();
    symlink("../private", root.join("ws/l")).unwrap();
    let rt = runtime();
    let c = load(&rt, in_workspace(&root));
    let exists = err(&c, "write-file", &["ws/l/f/x", "x"]);
    let absent = err(&c, "write-file", &["ws/l/g/x", "x"]);
    assert_eq!(exists, "capability-denied");
    assert_eq!(absent, "capability-denied");
    assert_eq!(err(&c, "mkdir-all", &["ws/l/f/y"]), "capability-denied");
    // On the guest's own spelling the error is still the real one.
    ok(&c, "write-file", &["ws/file", "x"]);
    assert_eq!(err(&c, "write-file", &["ws/file/x", "x"]), "not-directory");
    std::fs::remove_dir_all(&root).unwrap();
}

/// Two calls of one capsule race: one keeps swapping a directory and a
/// link to an ungranted directory inside the root (renames, as a guest
/// can), the other keeps writing through the directory's name. The write
/// must land in the directory or fail; never in the ungranted place.
#[test]
fn renames_racing_writes_never_reach_an_ungranted_directory() {
    let root = scratch_dir("race-rename");
    std::fs::create_dir_all(root.join("ws/race")).unwrap();
    std::fs::create_dir_all(root.join("private")).unwrap();
    symlink("../private", root.join("ws/link")).unwrap();
    let rt = runtime();
    let c = Arc::new(load(&rt, in_workspace(&root)));
    let stop = Arc::new(AtomicBool::new(false));
    let swapper = {
        let (c, stop) = (c.clone(), stop.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::SeqCst) {
                let _ = fs(&c, "rename", &["ws/race", "ws/parked"]);
                let _ = fs(&c, "rename", &["ws/link", "ws/race"]);
                let _ = fs(&c, "rename", &["ws/race", "ws/link"]);
                let _ = fs(&c, "rename", &["ws/parked", "ws/race"]);
            }
        })
    };
    let mut outcomes = std::collections::BTreeMap::new();
    let deadline = Instant::now() + Duration::from_secs(3);
    let mut writes = 0;
    while Instant::now() < deadline && writes < 3000 {
        let outcome = match fs(&c, "write-file", &["ws/race/x", "x"]) {
            Ok(_) => "ok".to_string(),
            Err(e) => e,
        };
        *outcomes.entry(outcome).or_insert(0) += 1;
        writes += 1;
    }
    stop.store(true, Ordering::SeqCst);
    swapper.join().unwrap();
    assert_eq!(
        std::fs::read_dir(root.join("private")).unwrap().count(),
        0,
        "a write reached private/ ({outcomes:?})"
    );
    for outcome in outcomes.keys() {
        assert!(
            ["ok", "capability-denied", "not-found", "invalid-path"].contains(&outcome.as_str()),
            "{outcome} ({outcomes:?})"
        );
    }
    std::fs::remove_dir_all(&root).unwrap();
}

#[test]
fn paths_deeper_than_256_components_are_refused_before_any_walk() {
    let rt = runtime();
    let c = load(&rt, LoadOptions::default());
    let at_limit = vec!["a"; 256].join("/");
    ok(&c, "mkdir-all", &[&format!("tmp://{at_limit}")]);
    let too_deep = vec!["a"; 257].join("/");
    assert_eq!(
        err(&c, "mkdir-all", &[&format!("tmp://{too_deep}")]),
        "invalid-path"
    );
    // A link cannot make a resolved path deeper than a spelled one may be.
    let root = scratch_dir("deep");
    std::fs::create_dir_all(root.join("ws")).unwrap();
    symlink(vec!["x"; 200].join("/"), root.join("ws/long")).unwrap();
    let c = load(&rt, in_workspace(&root));
    let through = format!("ws/long/{}", vec!["y"; 100].join("/"));
    assert_eq!(err(&c, "write-file", &[&through, "x"]), "invalid-path");
    std::fs::remove_dir_all(&root).unwrap();
}
