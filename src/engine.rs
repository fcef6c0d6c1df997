//! The wasmtime engine as astrid configures it, compilation with an
//! in-memory cache keyed by content hash (plus wasmtime's on-disk cache when
//! the embedder names a directory), and the import check that turns an
//! unsupported import into `ASTRID_E_LINK` naming it.

use crate::error::{Code, Error, Result};
use std::collections::HashMap;
use std::path::Path;
use std::sync::Mutex;
use wasmtime::component::{types::ComponentItem, Component};
use wasmtime::{Config, Enabled, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

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
    crate::host::GUEST_LIFECYCLE,
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

/// Builds the engine. Speed choices: component-model concurrency support
/// off (it triples the cost of every call and nothing here needs it), the
/// pooling allocator for fast instantiation, copy-on-write memory images.
/// Safety choices: fuel and epoch interruption always on.
pub fn build_engine(cache_dir: Option<&Path>) -> Result<Engine> {
    let mut config = base_config(cache_dir)?;
    let mut pooling = PoolingAllocationConfig::new();
    pooling
        .total_component_instances(1000)
        .total_core_instances(4000)
        .total_memories(1000)
        .total_tables(2000)
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
        Err(pool_err) => {
            // Some hosts refuse the large virtual reservations the pool makes;
            // fall back to on-demand allocation rather than failing.
            tracing::warn!("pooling allocator unavailable, using on-demand: {pool_err}");
            let config = base_config(cache_dir)?;
            Engine::new(&config).map_err(|e| {
                Error::new(Code::Internal, "cannot create the wasm engine").caused_by(e)
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
        .memory_init_cow(true);
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
        if let Some(found) = self
            .components
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(hash)
        {
            return Ok(found.clone());
        }
        check_component_header(bytes)?;
        let component = Component::new(engine, bytes).map_err(|e| {
            Error::new(
                Code::Compile,
                "the bytes are not a valid WebAssembly component",
            )
            .caused_by(e)
        })?;
        self.components
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(*hash, component.clone());
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
