//! A capsule that misbehaves on request, for the tests: each action is one
//! way a guest can try to hurt its host.

wit_bindgen::generate!({
    world: "example:capsules/sys-interceptor",
    path: ["../../../wit/astrid-sys@1.0.0", "../../../wit/astrid-guest@1.0.0", "../wit"],
    generate_all,
});

use std::hint::black_box;

struct Hostile;

fn spin_forever() -> ! {
    let mut x: u64 = 0;
    loop {
        x = black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
    }
}

impl Guest for Hostile {
    fn astrid_hook_trigger(action: String, _payload: Vec<u8>) -> CapsuleResult {
        match action.as_str() {
            "loop" => spin_forever(),
            "membomb" => {
                let mut hoard: Vec<Vec<u8>> = Vec::new();
                loop {
                    let mut chunk = vec![0u8; 1 << 20];
                    chunk[0] = 1;
                    hoard.push(black_box(chunk));
                }
            }
            "trap" => core::arch::wasm32::unreachable(),
            "panic" => panic!("hostile capsule panicked on purpose"),
            "flood" => loop {
                println!("flooding stdout with a line that never ends well");
            },
            "longline" => {
                print!("{}", "x".repeat(200_000));
                CapsuleResult { action: "continue".into(), data: None }
            }
            "exit" => std::process::exit(3),
            "recurse" => {
                #[allow(unconditional_recursion)]
                fn deep(n: u64) -> u64 {
                    black_box(deep(black_box(n + 1))) + 1
                }
                CapsuleResult { action: "continue".into(), data: Some(deep(0).to_string()) }
            }
            "sleep" => {
                // Waits in a host call: cancellation must wake it.
                let r = astrid::sys::host::sleep_ns(50_000_000_000);
                CapsuleResult { action: "continue".into(), data: Some(format!("{r:?}")) }
            }
            _ => CapsuleResult { action: "continue".into(), data: Some("harmless".into()) },
        }
    }
}

export!(Hostile);
