//! Drives `astrid:fs` for the tests: the action names the function, the
//! payload carries its arguments separated by newlines. The answer's action
//! is `ok` (data: the result as text) or `err` (data: the error case).

wit_bindgen::generate!({
    world: "example:fsprobe/fs-interceptor",
    path: [
        "../../../wit/astrid-sys@1.0.0",
        "../../../wit/astrid-fs@1.0.0",
        "../../../wit/astrid-guest@1.0.0",
        "wit",
    ],
    generate_all,
});

use astrid::fs::host::{self as fs, ErrorCode, FileHandle, FileStat, FileType, OpenMode};
use std::cell::RefCell;

struct FsProbe;

thread_local! {
    /// A handle kept across calls, to see it closed when its call ended.
    static KEPT: RefCell<Option<FileHandle>> = const { RefCell::new(None) };
}

fn case(e: &ErrorCode) -> String {
    match e {
        ErrorCode::NotFound => "not-found".into(),
        ErrorCode::Access => "access".into(),
        ErrorCode::CapabilityDenied => "capability-denied".into(),
        ErrorCode::BoundaryEscape => "boundary-escape".into(),
        ErrorCode::InvalidPath => "invalid-path".into(),
        ErrorCode::WouldBlock => "would-block".into(),
        ErrorCode::IsDirectory => "is-directory".into(),
        ErrorCode::NotDirectory => "not-directory".into(),
        ErrorCode::NotEmpty => "not-empty".into(),
        ErrorCode::TooLarge => "too-large".into(),
        ErrorCode::Quota => "quota".into(),
        ErrorCode::CrossVfs => "cross-vfs".into(),
        ErrorCode::AlreadyExists => "already-exists".into(),
        ErrorCode::Closed => "closed".into(),
        ErrorCode::Unknown(text) => format!("unknown({text})"),
    }
}

fn kind(stat: &FileStat) -> &'static str {
    match stat.kind {
        FileType::Regular => "file",
        FileType::Directory => "dir",
        FileType::Symlink => "symlink",
        _ => "other",
    }
}

fn mode(text: &str) -> OpenMode {
    match text {
        "write" => OpenMode::Write,
        "append" => OpenMode::Append,
        "read-write" => OpenMode::ReadWrite,
        _ => OpenMode::Read,
    }
}

/// Runs `;`-separated handle steps: `r:OFF:MAX`, `w:OFF:TEXT`, `len:N`,
/// `stat`, `sync`, `big-r`, `big-w`. Each step's result joins the answer.
fn handle_steps(file: &FileHandle, steps: &str) -> String {
    let mut out = Vec::new();
    for step in steps.split(';').filter(|s| !s.is_empty()) {
        let parts: Vec<&str> = step.splitn(3, ':').collect();
        let result = match parts[0] {
            "r" => file
                .read_at(parts[1].parse().unwrap(), parts[2].parse().unwrap())
                .map(|d| String::from_utf8_lossy(&d).into_owned()),
            "w" => file
                .write_at(parts[1].parse().unwrap(), parts[2].as_bytes())
                .map(|n| n.to_string()),
            "len" => file.set_len(parts[1].parse().unwrap()).map(|()| "ok".into()),
            "stat" => file.stat().map(|s| format!("{}:{}", kind(&s), s.size)),
            "sync" => file
                .sync_data()
                .and_then(|()| file.sync_all())
                .map(|()| "ok".into()),
            "big-r" => file.read_at(0, (1 << 20) + 1).map(|d| d.len().to_string()),
            "big-w" => file.write_at(0, &vec![0; (1 << 20) + 1]).map(|n| n.to_string()),
            other => Ok(format!("bad step {other}")),
        };
        out.push(result.unwrap_or_else(|e| format!("!{}", case(&e))));
    }
    out.join(";")
}

fn run(action: &str, args: &[&str]) -> Result<String, ErrorCode> {
    let arg = |i: usize| args.get(i).copied().unwrap_or("");
    match action {
        "read-file" => fs::read_file(arg(0)).map(|d| String::from_utf8_lossy(&d).into_owned()),
        "read-size" => fs::read_file(arg(0)).map(|d| d.len().to_string()),
        "write-file" => fs::write_file(arg(0), arg(1).as_bytes()).map(|()| "ok".into()),
        "write-size" => {
            let size: usize = arg(1).parse().unwrap();
            fs::write_file(arg(0), &vec![b'x'; size]).map(|()| "ok".into())
        }
        "append" => fs::fs_append(arg(0), arg(1).as_bytes()).map(|()| "ok".into()),
        "exists" => fs::fs_exists(arg(0)).map(|b| b.to_string()),
        "mkdir" => fs::fs_mkdir(arg(0)).map(|()| "ok".into()),
        "mkdir-all" => fs::fs_mkdir_all(arg(0)).map(|()| "ok".into()),
        "readdir" => fs::fs_readdir(arg(0)).map(|names| names.join(",")),
        "stat" => fs::fs_stat(arg(0)).map(|s| format!("{}:{}", kind(&s), s.size)),
        "stat-symlink" => fs::fs_stat_symlink(arg(0)).map(|s| format!("{}:{}", kind(&s), s.size)),
        "stat-times" => fs::fs_stat(arg(0)).map(|s| s.modified.is_some().to_string()),
        "unlink" => fs::fs_unlink(arg(0)).map(|()| "ok".into()),
        "copy" => fs::fs_copy(arg(0), arg(1)).map(|()| "ok".into()),
        "rename" => fs::fs_rename(arg(0), arg(1)).map(|()| "ok".into()),
        "remove-dir-all" => fs::fs_remove_dir_all(arg(0)).map(|n| n.to_string()),
        "canonicalize" => fs::fs_canonicalize(arg(0)),
        "read-link" => fs::fs_read_link(arg(0)),
        "hard-link" => fs::fs_hard_link(arg(0), arg(1)).map(|()| "ok".into()),
        "handle" => {
            let file = fs::fs_open(arg(0), mode(arg(1)))?;
            Ok(handle_steps(&file, arg(2)))
        }
        "keep" => {
            let file = fs::fs_open(arg(0), OpenMode::Read)?;
            KEPT.with(|k| *k.borrow_mut() = Some(file));
            Ok("kept".into())
        }
        "use-kept" => KEPT.with(|k| match k.borrow().as_ref() {
            Some(file) => Ok(handle_steps(file, "r:0:16")),
            None => Ok("none".into()),
        }),
        "flood" => {
            // Opens until refused; reports how many opened and why it stopped.
            let mut open = Vec::new();
            loop {
                match fs::fs_open(arg(0), OpenMode::Read) {
                    Ok(file) => open.push(file),
                    Err(e) => return Ok(format!("{}:{}", open.len(), case(&e))),
                }
                if open.len() > 64 {
                    return Ok("unbounded".into());
                }
            }
        }
        "open-then-sleep" => {
            let file = fs::fs_open(arg(0), OpenMode::Read)?;
            astrid::sys::host::sleep_ns(arg(1).parse::<u64>().unwrap() * 1_000_000).ok();
            Ok(handle_steps(&file, "r:0:4"))
        }
        // Benchmark loops: the host call repeated `count` times in one call,
        // so the call's own overhead is amortised away.
        "read-loop" => {
            let count: usize = arg(1).parse().unwrap();
            let mut total = 0;
            for _ in 0..count {
                total += fs::read_file(arg(0))?.len();
            }
            Ok(total.to_string())
        }
        "write-loop" => {
            let count: usize = arg(1).parse().unwrap();
            let data = vec![b'w'; arg(2).parse().unwrap()];
            for _ in 0..count {
                fs::write_file(arg(0), &data)?;
            }
            Ok("ok".into())
        }
        "deny-loop" => {
            let count: usize = arg(1).parse().unwrap();
            let mut denied = 0;
            for _ in 0..count {
                denied += usize::from(matches!(fs::write_file(arg(0), b"x"), Err(ErrorCode::CapabilityDenied)));
            }
            Ok(denied.to_string())
        }
        // wasi:filesystem through std (astrid links no preopens, so this only
        // works in the benchmark's own preopened comparator store).
        "std-read-loop" => {
            let count: usize = arg(1).parse().unwrap();
            let mut total = 0;
            for _ in 0..count {
                total += std::fs::read(arg(0)).map_err(|e| ErrorCode::Unknown(e.to_string()))?.len();
            }
            Ok(total.to_string())
        }
        other => Ok(format!("unknown action {other}")),
    }
}

impl Guest for FsProbe {
    fn astrid_hook_trigger(action: String, payload: Vec<u8>) -> CapsuleResult {
        let text = String::from_utf8_lossy(&payload).into_owned();
        let args: Vec<&str> = text.split('\n').collect();
        match run(&action, &args) {
            Ok(data) => CapsuleResult {
                action: "ok".into(),
                data: Some(data),
            },
            Err(e) => CapsuleResult {
                action: "err".into(),
                data: Some(case(&e)),
            },
        }
    }
}

export!(FsProbe);
