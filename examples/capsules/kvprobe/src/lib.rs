//! Drives `astrid:kv` for the tests: the action names the function, the
//! payload carries its arguments separated by newlines (`-` for an absent
//! optional). The answer's action is `ok` (data: the result as text) or
//! `err` (data: the error case).

wit_bindgen::generate!({
    world: "example:kvprobe/kv-interceptor",
    path: [
        "../../../wit/astrid-kv@1.0.0",
        "../../../wit/astrid-guest@1.0.0",
        "wit",
    ],
    generate_all,
});

use astrid::kv::host::{self as kv, ErrorCode};

struct KvProbe;

fn case(e: &ErrorCode) -> String {
    match e {
        ErrorCode::InvalidKey => "invalid-key".into(),
        ErrorCode::TooLarge => "too-large".into(),
        ErrorCode::Quota => "quota".into(),
        ErrorCode::CasMismatch => "cas-mismatch".into(),
        ErrorCode::Unknown(text) => format!("unknown({text})"),
    }
}

fn optional(arg: &str) -> Option<&str> {
    (arg != "-").then_some(arg)
}

fn run(action: &str, args: &[&str]) -> Result<String, ErrorCode> {
    let arg = |i: usize| args.get(i).copied().unwrap_or("");
    match action {
        "get" => kv::kv_get(arg(0)).map(|v| match v {
            Some(bytes) => format!("some:{}", String::from_utf8_lossy(&bytes)),
            None => "none".into(),
        }),
        "set" => kv::kv_set(arg(0), arg(1).as_bytes()).map(|()| "ok".into()),
        "set-size" => {
            let value = vec![b'v'; arg(1).parse().unwrap()];
            kv::kv_set(arg(0), &value).map(|()| "ok".into())
        }
        "delete" => kv::kv_delete(arg(0)).map(|()| "ok".into()),
        "list" => kv::kv_list_keys(arg(0)).map(|keys| keys.join(",")),
        "page" => kv::kv_list_keys_page(arg(0), optional(arg(1)), arg(2).parse().unwrap())
            .map(|page| format!("{}|{}", page.keys.join(","), page.next_cursor.unwrap_or("-".into()))),
        "count-pages" => {
            // Walks every page of `prefix` with page size `limit`: "pages:keys".
            let (mut pages, mut keys, mut cursor) = (0, 0, None::<String>);
            loop {
                let page = kv::kv_list_keys_page(arg(0), cursor.as_deref(), arg(1).parse().unwrap())?;
                pages += 1;
                keys += page.keys.len();
                match page.next_cursor {
                    Some(next) => cursor = Some(next),
                    None => return Ok(format!("{pages}:{keys}")),
                }
            }
        }
        "fill" => {
            // Sets `count` keys `prefix0000`.. to "x".
            let count: usize = arg(1).parse().unwrap();
            for i in 0..count {
                kv::kv_set(&format!("{}{i:04}", arg(0)), b"x")?;
            }
            Ok("ok".into())
        }
        "clear" => kv::kv_clear_prefix(arg(0)).map(|n| n.to_string()),
        "cas" => kv::kv_cas(arg(0), optional(arg(1)).map(str::as_bytes), arg(2).as_bytes())
            .map(|()| "ok".into()),
        "increment" => {
            // Adds 1 to the decimal counter at `key` `count` times with CAS
            // retries; answers the number of lost races.
            let count: usize = arg(1).parse().unwrap();
            let mut retries = 0;
            for _ in 0..count {
                loop {
                    let current = kv::kv_get(arg(0))?;
                    let n: u64 = current
                        .as_deref()
                        .map_or(0, |b| String::from_utf8_lossy(b).parse().unwrap());
                    match kv::kv_cas(arg(0), current.as_deref(), (n + 1).to_string().as_bytes()) {
                        Ok(()) => break,
                        Err(ErrorCode::CasMismatch) => retries += 1,
                        Err(e) => return Err(e),
                    }
                }
            }
            Ok(retries.to_string())
        }
        other => Ok(format!("unknown action {other}")),
    }
}

impl Guest for KvProbe {
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

export!(KvProbe);
