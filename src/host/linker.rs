//! The linker every capsule of a runtime is instantiated with: each host
//! interface adds itself with the function that builds its view of a
//! store.

use super::state::HostState;
use super::{fs, http, io, ipc, kv, net, sys, wasi};
use wasmtime::component::Linker;
use wasmtime::Engine;

/// The linker every capsule of a runtime is instantiated with.
pub fn build_linker(engine: &Engine) -> wasmtime::Result<Linker<HostState>> {
    let mut linker = Linker::new(engine);
    wasmtime_wasi::p2::add_to_linker_sync(&mut linker)?;
    wasi::route_name_lookups(&mut linker)?;
    wasi::count_wasi_sockets(&mut linker)?;
    sys::add_to_linker(&mut linker, HostState::sys_view)?;
    fs::add_to_linker(&mut linker, HostState::fs_view)?;
    kv::add_to_linker(&mut linker, HostState::kv_view)?;
    io::add_to_linker(&mut linker, HostState::io_view)?;
    ipc::add_to_linker(&mut linker, HostState::ipc_view)?;
    net::add_to_linker(&mut linker, HostState::net_view)?;
    http::add_to_linker(&mut linker, HostState::http_view)?;
    // `astrid:guest/lifecycle` only declares types the exports use; guests
    // built from the published worlds import it, so it is served empty.
    linker.instance(crate::engine::GUEST_LIFECYCLE)?;
    Ok(linker)
}
