//! The wasmtime engine as astrid configures it, compilation with an
//! in-memory cache keyed by content hash (plus wasmtime's on-disk cache when
//! the embedder names a directory), and the import check that turns an
//! unsupported import into `ASTRID_E_LINK` naming it.

use crate::error::{Code, Error, Result};
use crate::signal::MutexExt;
use std::collections::HashMap;
use std::path::Path;
use std::sync::Mutex;
use wasmtime::component::{types::ComponentItem, Component};
use wasmtime::{Config, Enabled, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

/// The types-only interface of the guest export contract.
pub const GUEST_LIFECYCLE: &str = "astrid:guest/lifecycle@1.0.0";

/// Packages this runtime links, matched by exact (package, version) for
/// `astrid:*`; WASI 0.2 is matched semver-compatibly by wasmtime's linker.
pub const SERVED_ASTRID_INTERFACES: &[&str] = &[
    "astrid:sys/host@1.0.0",
    "astrid:fs/host@1.0.0",
    "astrid:kv/host@1.0.0",
    "astrid:io/error@1.0.0",
    "astrid:io/poll@1.0.0",
    "astrid:io/streams@1.0.0",
    "astrid:ipc/host@1.0.0",
    "astrid:net/host@1.0.0",
    "astrid:request-context/host@1.0.0",
    "astrid:http/host@1.0.0",
    "astrid:http/host@1.1.0",
    GUEST_LIFECYCLE,
];

/// Host ABI packages published by the SDK but deliberately not linked in this
/// version (host ABI §0).
const DEFERRED_PACKAGES: &[&str] = &[
    "astrid:process",
    "astrid:identity",
    "astrid:approval",
    "astrid:elicit",
    "astrid:uplink",
];

/// Bytes of each pooled linear memory kept resident between instances.
pub const KEEP_RESIDENT_BYTES: usize = 512 << 10;

/// Virtual address space each linear memory reserves: the 4 GiB static
/// reservation (compiled code then needs no bounds checks for 32-bit
/// addresses) plus a 32 MiB guard region. Reserved, not committed: it costs
/// no memory, only address space (128 TiB per process on x86-64 Linux).
pub const MEMORY_RESERVATION_BYTES: u64 = 4 << 30;
pub const MEMORY_GUARD_BYTES: u64 = 32 << 20;

/// Address space the instance pool of a runtime reserves up front for
/// `max_instances` linear memories (plus the guard before the first slot).
pub fn pool_reservation_bytes(max_instances: usize) -> u64 {
    (max_instances as u64).saturating_mul(MEMORY_RESERVATION_BYTES + MEMORY_GUARD_BYTES)
        + MEMORY_GUARD_BYTES
}

/// Whether `error` comes from the host running out of memory or address
/// space (`ENOMEM` anywhere in its chain): a resource limit, not a fault of
/// the guest or of its bytes.
pub fn is_out_of_memory(error: &wasmtime::Error) -> bool {
    // wasmtime's mmap errors are rustix errnos, which only say so in text.
    let marker = format!("(os error {})", libc::ENOMEM);
    error.chain().any(|cause| {
        cause.is::<wasmtime::OutOfMemory>()
            || cause
                .downcast_ref::<std::io::Error>()
                .is_some_and(|e| e.raw_os_error() == Some(libc::ENOMEM))
            || cause.to_string().contains(&marker)
    })
}

/// Builds the engine. Speed choices: component-model concurrency support
/// off (it triples the cost of every call and nothing here needs it), the
/// pooling allocator for fast instantiation, copy-on-write memory images.
/// Safety choices: fuel and epoch interruption always on.
///
/// The pool holds `max_instances` live instances over all capsules of the
/// runtime and reserves their address space now:
/// `pool_reservation_bytes(max_instances)`. When the process has no room
/// left for it, that is `ResourceLimit`, never a silent fallback.
pub fn build_engine(cache_dir: Option<&Path>, max_instances: usize) -> Result<Engine> {
    let max = u32::try_from(max_instances.max(1)).map_err(|_| {
        Error::invalid_argument(format!("max_instances {max_instances} is too large"))
    })?;
    let mut config = base_config(cache_dir)?;
    let mut pooling = PoolingAllocationConfig::new();
    pooling
        // Per component instance: up to four core instances (adapters and
        // shims), one memory and two tables, as the components built by
        // the guest SDKs have.
        .total_component_instances(max)
        .total_core_instances(max.saturating_mul(4))
        .total_memories(max)
        .total_tables(max.saturating_mul(2))
        // Calls run synchronously, never on fibers: no stack pool. (Its
        // default, 1000 stacks with a guard page each, costs 2000 memory
        // mappings per runtime; a process has 65530 by default.)
        .total_stacks(0)
        // A fresh instance mostly touches the first pages of its memory
        // (stack, data, early heap): keeping them resident and resetting them
        // in place beats page faults plus madvise per instance.
        .linear_memory_keep_resident(KEEP_RESIDENT_BYTES)
        .table_keep_resident(64 << 10)
        // Batch the decommits of freed slots instead of one madvise each.
        .decommit_batch_size(16)
        // Where the kernel has PAGEMAP_SCAN (Linux 6.7+), reset only the
        // pages an instance dirtied.
        .pagemap_scan(Enabled::Auto);
    config.allocation_strategy(InstanceAllocationStrategy::Pooling(pooling));
    match Engine::new(&config) {
        Ok(engine) => Ok(engine),
        Err(pool_err) if is_out_of_memory(&pool_err) => {
            let bytes = pool_reservation_bytes(max_instances);
            Err(Error::new(
                Code::ResourceLimit,
                format!(
                    "out of address space: cannot reserve {} GiB for an instance pool of {max_instances} (max_instances × {} MiB); the process's address space, its limit (ulimit -v) or its memory mappings (vm.max_map_count) are used up: free other runtimes or lower max_instances",
                    bytes.div_ceil(1 << 30),
                    (MEMORY_RESERVATION_BYTES + MEMORY_GUARD_BYTES) >> 20
                ),
            )
            .caused_by(format!("{pool_err:#}")))
        }
        Err(pool_err) => {
            // Some hosts refuse the large virtual reservations the pool makes;
            // fall back to on-demand allocation rather than failing.
            tracing::warn!("pooling allocator unavailable, using on-demand: {pool_err}");
            let config = base_config(cache_dir)?;
            Engine::new(&config).map_err(|e| {
                if is_out_of_memory(&e) {
                    Error::new(
                        Code::ResourceLimit,
                        "out of memory or address space: cannot create the wasm engine",
                    )
                    .caused_by(e)
                } else {
                    Error::new(Code::Internal, "cannot create the wasm engine").caused_by(e)
                }
            })
        }
    }
}

fn base_config(cache_dir: Option<&Path>) -> Result<Config> {
    let mut config = Config::new();
    config
        .wasm_component_model(true)
        .concurrency_support(false)
        .consume_fuel(true)
        .epoch_interruption(true)
        .memory_init_cow(true)
        .memory_reservation(MEMORY_RESERVATION_BYTES)
        .memory_guard_size(MEMORY_GUARD_BYTES);
    if let Some(dir) = cache_dir {
        std::fs::create_dir_all(dir).map_err(|e| {
            Error::new(Code::Io, "cannot create the compiled-code cache directory").caused_by(e)
        })?;
        let mut cache_config = wasmtime::CacheConfig::new();
        cache_config.with_directory(dir);
        let cache = wasmtime::Cache::new(cache_config).map_err(|e| {
            Error::new(Code::Io, "cannot open the compiled-code cache").caused_by(e)
        })?;
        config.cache(Some(cache));
    }
    Ok(config)
}

/// The content hash used for the in-memory cache and capsule ids.
pub type ContentHash = [u8; 32];

pub fn content_hash(bytes: &[u8]) -> ContentHash {
    *blake3::hash(bytes).as_bytes()
}

/// Compiled components by content hash, shared by every load in a runtime.
#[derive(Default)]
pub struct CompileCache {
    components: Mutex<HashMap<ContentHash, Component>>,
}

impl CompileCache {
    pub fn compile(&self, engine: &Engine, bytes: &[u8], hash: &ContentHash) -> Result<Component> {
        if let Some(found) = self.components.locked().get(hash) {
            return Ok(found.clone());
        }
        check_component_header(bytes)?;
        let component = Component::new(engine, bytes).map_err(|e| {
            if is_out_of_memory(&e) {
                return Error::new(
                    Code::ResourceLimit,
                    "out of memory or address space while compiling the component",
                )
                .caused_by(e);
            }
            // Every level of the chain: the top one only says "failed to
            // parse", the next one says which feature or section is wrong.
            e.chain().fold(
                Error::new(
                    Code::Compile,
                    "the bytes are not a valid WebAssembly component",
                ),
                |error, cause| error.caused_by(cause),
            )
        })?;
        self.components.locked().insert(*hash, component.clone());
        Ok(component)
    }
}

/// Distinguishes the common wrong inputs before compiling, for clearer errors.
fn check_component_header(bytes: &[u8]) -> Result<()> {
    if bytes.is_empty() {
        return Err(Error::new(
            Code::Compile,
            "the component is empty (0 bytes)",
        ));
    }
    if bytes.len() < 8 || &bytes[..4] != b"\0asm" {
        return Err(Error::new(
            Code::Compile,
            "the bytes are not WebAssembly (bad magic number)",
        ));
    }
    // Bytes 4..8: version (u16) then layer (u16); layer 0 is a core module.
    if bytes[6] == 0 && bytes[7] == 0 {
        return Err(Error::new(
            Code::Compile,
            "the bytes are a core WebAssembly module, not a component (build for wasm32-wasip2 or run `wasm-tools component new`)",
        ));
    }
    Ok(())
}

/// Whether the component imports any WASI interface.
pub fn imports_wasi(engine: &Engine, component: &Component) -> bool {
    component
        .component_type()
        .imports(engine)
        .any(|(name, _)| name.starts_with("wasi:"))
}

/// Rejects imports this runtime does not serve, naming the first one.
pub fn check_imports(engine: &Engine, component: &Component) -> Result<()> {
    for (name, item) in component.component_type().imports(engine) {
        let is_instance = matches!(item.ty, ComponentItem::ComponentInstance(_));
        if let Some(package) = DEFERRED_PACKAGES
            .iter()
            .find(|p| name.starts_with(&format!("{p}/")))
        {
            return Err(Error::new(
                Code::Link,
                format!("import `{name}`: {package} is not served by this runtime version"),
            ));
        }
        if name.starts_with("astrid:") {
            if !is_instance || !SERVED_ASTRID_INTERFACES.contains(&name) {
                return Err(Error::new(
                    Code::Link,
                    format!("import `{name}` is not served by this runtime"),
                ));
            }
            continue;
        }
        let wasi_02 = name.starts_with("wasi:")
            && name
                .split_once('@')
                .is_some_and(|(_, version)| version.starts_with("0.2."));
        if !wasi_02 || name.starts_with("wasi:http/") {
            return Err(Error::new(
                Code::Link,
                format!("import `{name}` is not served by this runtime"),
            ));
        }
    }
    Ok(())
}
