//! Many runtimes in one process (hardening item 11): each runtime's
//! instance pool reserves address space for `max_instances` linear memories
//! only, so a thousand runtimes can be alive at once; a pool that does not
//! fit is `ResourceLimit` with a message that says so.
//!
//! `cargo test --release --test many_runtimes -- --nocapture` prints the
//! address space per runtime and the time taken.

mod common;

use astrid::{Code, LoadOptions, Runtime, RuntimeConfig};
use common::{capsule_dir, tempdir};
use std::time::Instant;

/// A `kB` line of /proc/self/status (`VmSize`, `VmRSS`), in KiB.
fn status_kib(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("{field} in /proc/self/status"))
}

fn vm_size_kib() -> u64 {
    status_kib("VmSize")
}

/// Memory mappings of this process (bounded by vm.max_map_count).
fn mappings() -> usize {
    std::fs::read_to_string("/proc/self/maps")
        .unwrap()
        .lines()
        .count()
}

#[test]
fn a_thousand_runtimes_alive_at_once_each_loading_and_calling_a_capsule() {
    const RUNTIMES: usize = 1000;
    let config = RuntimeConfig {
        worker_threads: 1,
        pool_size: 1,
        max_instances: 2,
        // One compilation, then every runtime loads the compiled code.
        cache_dir: Some(tempdir("many-runtimes-cache")),
        ..RuntimeConfig::default()
    };
    let dir = capsule_dir("hello");
    let started = Instant::now();
    let vm_before = vm_size_kib();
    let mut alive = Vec::with_capacity(RUNTIMES);
    for i in 0..RUNTIMES {
        let rt = Runtime::new(config.clone()).unwrap_or_else(|e| panic!("runtime {i}: {e}"));
        let capsule = rt
            .load_dir(&dir, &LoadOptions::default())
            .unwrap_or_else(|e| panic!("load in runtime {i}: {e}"));
        let payload = format!(r#"{{"name":"rt{i}"}}"#);
        let result = capsule
            .call("greet", payload.as_bytes(), None)
            .unwrap_or_else(|e| panic!("call in runtime {i}: {e}"));
        let data = result.data.unwrap_or_default();
        assert!(data.contains(&format!("Hello, rt{i}!")), "{data}");
        alive.push((rt, capsule));
        if i == 0 {
            eprintln!(
                "first runtime: {} MiB of address space",
                (vm_size_kib() - vm_before) >> 10
            );
        }
    }
    let vm_all = vm_size_kib();
    let created = started.elapsed();
    eprintln!(
        "resident {} MiB, {} memory mappings",
        status_kib("VmRSS") >> 10,
        mappings()
    );
    // Every one of them still answers.
    for (i, (_, capsule)) in alive.iter().enumerate() {
        let payload = format!(r#"{{"name":"again{i}"}}"#);
        let result = capsule.call("greet", payload.as_bytes(), None).unwrap();
        assert!(result.data.unwrap_or_default().contains("again"));
    }
    eprintln!(
        "{RUNTIMES} runtimes alive: {} GiB of address space ({} MiB per runtime); created, loaded and called in {:.1} s, all called again after {:.1} s",
        (vm_all - vm_before) >> 20,
        ((vm_all - vm_before) / RUNTIMES as u64) >> 10,
        created.as_secs_f64(),
        started.elapsed().as_secs_f64()
    );
    for (rt, capsule) in alive.drain(..) {
        drop(capsule);
        drop(rt);
    }
    eprintln!("and freed after {:.1} s", started.elapsed().as_secs_f64());
}

#[test]
fn an_instance_pool_too_large_for_the_address_space_is_a_resource_limit() {
    // 1 000 000 × (4 GiB + 32 MiB) ≈ 3.9 PiB: more than any process has.
    let error = Runtime::new(RuntimeConfig {
        max_instances: 1_000_000,
        ..RuntimeConfig::default()
    })
    .err()
    .expect("no process has 4 PiB of address space");
    assert_eq!(error.code(), Code::ResourceLimit, "{error}");
    let text = error.full_message();
    assert!(text.contains("out of address space"), "{text}");
    assert!(text.contains("max_instances"), "{text}");
}

#[test]
fn a_full_instance_pool_is_a_resource_limit_naming_max_instances() {
    let rt = Runtime::new(RuntimeConfig {
        max_instances: 2,
        pool_size: 4,
        ..RuntimeConfig::default()
    })
    .unwrap();
    let dir = capsule_dir("hello");
    let one = rt.load_dir(&dir, &LoadOptions::default()).unwrap();
    let two = rt.load_dir(&dir, &LoadOptions::default()).unwrap();
    let error = rt
        .load_dir(&dir, &LoadOptions::default())
        .err()
        .expect("a third instance does not fit");
    assert_eq!(error.code(), Code::ResourceLimit, "{error}");
    assert!(error.full_message().contains("max_instances"), "{error}");
    // The loaded ones are unaffected.
    assert!(one.call("greet", b"{}", None).is_ok());
    assert!(two.call("greet", b"{}", None).is_ok());
}
