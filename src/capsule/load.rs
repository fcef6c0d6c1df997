//! Loading a capsule: manifest and component checks, config resolution,
//! mounts, compilation (cached), linking, the first instance, registration,
//! and the run loop's start.

use super::handle::Capsule;
use super::instance::{InstanceFactory, Limits};
use super::options::{validate_principal, LoadOptions, Watchdog};
use super::platform::Platform;
use super::pool::{CapsuleInner, Pool, LOADED};
use crate::cancel::CancelToken;
use crate::engine::{self, ContentHash};
use crate::error::{Code, Error, Result};
use crate::host::fs::shared::FsShared;
use crate::host::ipc::shared::IpcShared;
use crate::host::shared::CapsuleShared;
use crate::host::state::InterfaceShared;
use crate::manifest::{EnvKind, Manifest};
use crate::policy::paths::Mount;
use crate::runloop::RunLoop;
use crate::services::{LogLevel, Services};
use crate::vfs::host_dir::HostDir;
use crate::vfs::memory::MemoryFs;
use crate::vfs::{CapsuleMounts, Vfs};
use crossbeam_utils::atomic::AtomicCell;
use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, AtomicUsize};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

/// Loads a capsule directory: `Capsule.toml` and the component it names.
pub(crate) fn load_dir(
    platform: &Arc<Platform>,
    dir: &Path,
    options: &LoadOptions,
) -> Result<Capsule> {
    let manifest_path = dir.join("Capsule.toml");
    let text = read_file(&manifest_path, "the manifest")?;
    let text = String::from_utf8(text).map_err(|_| {
        Error::new(
            Code::Utf8,
            format!("`{}` is not valid UTF-8", manifest_path.display()),
        )
    })?;
    let manifest = Manifest::parse(&text, true)?;
    let file = manifest
        .component
        .as_ref()
        .and_then(|c| c.file.clone())
        .unwrap_or_default();
    let relative = Path::new(&file);
    if relative.is_absolute()
        || relative
            .components()
            .any(|c| !matches!(c, std::path::Component::Normal(_)))
    {
        return Err(Error::manifest(format!(
            "`component.file` must be a plain path inside the capsule directory, got `{file}`"
        )));
    }
    let wasm = read_file(&dir.join(relative), "the component")?;
    load(platform, &wasm, manifest, options)
}

/// Loads a capsule from memory: component bytes plus manifest text.
pub(crate) fn load_bytes(
    platform: &Arc<Platform>,
    wasm: &[u8],
    manifest: &str,
    options: &LoadOptions,
) -> Result<Capsule> {
    let manifest = Manifest::parse(manifest, false)?;
    load(platform, wasm, manifest, options)
}

fn load(
    platform: &Arc<Platform>,
    wasm: &[u8],
    manifest: Manifest,
    options: &LoadOptions,
) -> Result<Capsule> {
    let rt = &*platform.services;
    let hash = engine::content_hash(wasm);
    if let Some(expected) = manifest.component.as_ref().and_then(|c| c.hash) {
        if expected != hash {
            return Err(Error::manifest(
                "`component.hash` does not match the component binary",
            ));
        }
    }
    let config = resolve_config(&manifest, &options.config)?;
    let limits = Limits {
        memory: options
            .memory_limit
            .filter(|&m| m > 0)
            .unwrap_or(rt.config.memory_limit),
        timeout: options
            .timeout
            .filter(|t| !t.is_zero())
            .unwrap_or(rt.config.timeout),
        fuel: options.fuel.filter(|&f| f > 0).unwrap_or(rt.config.fuel),
    };
    if let Some(p) = &options.principal {
        validate_principal(p)?;
    }
    let per_capsule = crate::config::FLAG_ALLOW_LOOPBACK
        | crate::config::FLAG_ALLOW_ANY_BIND
        | crate::config::FLAG_WASI_SOCKETS;
    if options.net_flags & !per_capsule != 0 {
        return Err(Error::invalid_argument(format!(
            "net_flags {:#x} names flags that are not per capsule (allow-loopback, allow-any-bind and wasi-sockets are)",
            options.net_flags
        )));
    }
    if options.workspace_root.is_some() && options.cwd_vfs.is_some() {
        return Err(Error::invalid_argument(
            "a workspace root and a cwd provider cannot both serve cwd",
        ));
    }
    if options.home_root.is_some() && options.home_vfs.is_some() {
        return Err(Error::invalid_argument(
            "a home root and a home provider cannot both serve home",
        ));
    }
    for (root, what) in [
        (&options.workspace_root, "workspace root"),
        (&options.home_root, "home root"),
    ] {
        if let Some(root) = root {
            if !root.is_dir() {
                return Err(Error::new(
                    Code::NotFound,
                    format!("the {what} `{}` is not a directory", root.display()),
                ));
            }
        }
    }

    let mounts = build_mounts(rt, options)?;
    let component = platform
        .compile_cache
        .compile(&platform.engine, wasm, &hash)?;
    engine::check_imports(&platform.engine, &component)?;
    let pre = platform.linker.instantiate_pre(&component).map_err(|e| {
        Error::new(Code::Link, "the component's imports cannot be satisfied").caused_by(e)
    })?;
    let hook = component.get_export_index(None, "astrid-hook-trigger");
    let runs_loop = crate::exports::offered_optional_exports(wasm).contains(&"run");
    let uses_wasi = engine::imports_wasi(&platform.engine, &component);

    let id = capsule_id(&manifest.name, &hash);
    let unload_token = CancelToken::new();
    let interfaces = Arc::new(InterfaceShared {
        fs: FsShared::new(mounts, options.fs_write_budget),
        ipc: Arc::new(IpcShared::new(
            rt.bus.clone(),
            rt.config.publish_rate,
            unload_token.clone(),
        )),
        net: crate::host::net::CapsuleNet::new(
            options
                .unix_socket_path
                .clone()
                .or_else(|| rt.unix_socket_for(&manifest.name)),
        ),
    });
    let shared = Arc::new(CapsuleShared {
        services: platform.services.clone(),
        source_id: Arc::from(id.as_str()),
        run_loop: runs_loop.then(|| Arc::new(RunLoop::new())),
        usage: Default::default(),
        net_flags: (rt.config.flags & per_capsule) | options.net_flags,
        id,
        name: Arc::from(manifest.name.as_str()),
        capability_names: manifest.capabilities.names(),
        owner: options.principal.as_deref().map(Arc::from),
        manifest,
        config,
        unload_token,
        unloaded: AtomicBool::new(false),
        waited_at_ms: AtomicU64::new(0),
    });
    let inner = Arc::new(CapsuleInner {
        call_token: Mutex::new(shared.unload_token.child()),
        call_generation: AtomicU64::new(0),
        factory: InstanceFactory {
            engine: platform.engine.clone(),
            shared: shared.clone(),
            interfaces,
            pre,
            hook,
            uses_wasi,
            limits,
        },
        shared,
        hot: AtomicCell::new(None),
        pool: Mutex::new(Pool {
            idle: Vec::new(),
            live: 0,
            waiters: 0,
        }),
        pool_waiters: AtomicUsize::new(0),
        pool_changed: Condvar::new(),
        pool_max: rt.config.effective_pool_size(),
        state: AtomicU8::new(LOADED),
    });
    // Counted from now on; its figures join the runtime's retired totals
    // when `inner` goes, even if the load fails below.
    rt.track_usage(&inner.shared.usage);

    // One instance now: a component that cannot be instantiated (start
    // code that traps, memory above the ceiling) fails the load, and the
    // first call finds a warm instance.
    let worker = inner.new_worker()?;
    {
        let mut pool = inner.pool_lock();
        pool.idle.push(worker);
        pool.live = 1;
    }
    platform.register(&inner)?;
    if runs_loop {
        let watchdog = match options.watchdog {
            Watchdog::Default => Some(crate::runloop::DEFAULT_WATCHDOG),
            Watchdog::Window(window) => Some(window),
            Watchdog::Off => None,
        };
        if let Err(e) = super::run_loop::start(&inner, watchdog) {
            inner.begin_unload();
            inner.finish_unload(Duration::ZERO);
            return Err(e);
        }
    }
    for name in &inner.shared.manifest.capabilities.inert {
        inner.shared.log(
            LogLevel::Warn,
            None,
            &format!("capability `{name}` is recognised but has no effect in this runtime"),
        );
    }
    Ok(Capsule { inner })
}

/// The capsule's mounts: a host root from the load options wins, then a
/// provider the embedder mounted on the runtime, then the built-in memory
/// filesystem (`cwd`, `tmp`) or nothing (`home`).
fn build_mounts(rt: &Services, options: &LoadOptions) -> Result<CapsuleMounts> {
    let host_dir = |root: &Path, what: &str| -> Result<Arc<dyn Vfs>> {
        let dir = HostDir::open(root).map_err(|e| {
            Error::new(Code::Io, format!("cannot open the {what} as a sandbox")).caused_by(e)
        })?;
        Ok(Arc::new(dir))
    };
    // A provider given at load wins over the runtime's mount, which wins
    // over the built-in one.
    let cwd = match (&options.workspace_root, &options.cwd_vfs) {
        (Some(root), _) => host_dir(root, "workspace root")?,
        (None, Some(provider)) => provider.clone(),
        (None, None) => rt
            .mounted(Mount::Cwd)
            .unwrap_or_else(|| Arc::new(MemoryFs::new(rt.config.memfs_limits))),
    };
    let home = match (&options.home_root, &options.home_vfs) {
        (Some(root), _) => Some(host_dir(root, "home root")?),
        (None, Some(provider)) => Some(provider.clone()),
        (None, None) => rt.mounted(Mount::Home),
    };
    Ok(CapsuleMounts::new(
        cwd,
        home,
        options.tmp_vfs.clone().or_else(|| rt.mounted(Mount::Tmp)),
        rt.config.memfs_limits,
    ))
}

fn read_file(path: &Path, what: &str) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| {
        let code = if e.kind() == std::io::ErrorKind::NotFound {
            Code::NotFound
        } else {
            Code::Io
        };
        Error::new(code, format!("cannot read {what} `{}`", path.display())).caused_by(e)
    })
}

fn capsule_id(name: &str, hash: &ContentHash) -> String {
    let mut seed = name.as_bytes().to_vec();
    seed.push(b':');
    seed.extend_from_slice(hash);
    uuid::Uuid::new_v5(&uuid::Uuid::NAMESPACE_OID, &seed).to_string()
}

/// Load-time `[env]` values: the embedder's value, else the manifest default.
/// Every non-secret key needs one; keys the manifest does not declare are
/// ignored (one config set may serve several capsules).
fn resolve_config(
    manifest: &Manifest,
    given: &[(String, String)],
) -> Result<HashMap<String, String>> {
    let mut values = HashMap::new();
    for entry in &manifest.env {
        if entry.kind == EnvKind::Secret {
            continue;
        }
        let value = given
            .iter()
            .rev()
            .find(|(k, _)| *k == entry.key)
            .map(|(_, v)| v.clone());
        let value = match value.or_else(|| entry.default.clone()) {
            Some(v) => v,
            None => {
                return Err(Error::manifest(format!(
                "`env.{}` has no value: pass it in the load options' config or give it a default",
                entry.key
            )))
            }
        };
        if entry.kind == EnvKind::Select && !entry.enum_values.contains(&value) {
            return Err(Error::invalid_argument(format!(
                "config value for `{}` is not one of its enum_values",
                entry.key
            )));
        }
        values.insert(entry.key.clone(), value);
    }
    Ok(values)
}
