//! `astrid:http@1.0.0` and `astrid:http@1.1.0` (host ABI §2.7). Both
//! versions share one engine; they differ only in defaults and in how
//! errors are spelled (`v1_0`, `v1_1`).
//!
//! Every hop, the first included: scheme → manifest `net` host → gate
//! `http-request` → resolution through the airlock → connect and TLS. A
//! hop to another origin loses `Authorization`, `Cookie` and
//! `Proxy-Authorization`. One audit event per host call, whatever the
//! number of hops.

pub(crate) mod body;
mod client;
pub(crate) mod decode;
pub(crate) mod error;
mod exchange;
mod fetch;
mod headers;
pub(crate) mod options;
mod resources;
#[macro_use]
mod versions;
mod v1_0;
mod v1_1;

use crate::host::state::HostState;
use wasmtime::component::Linker;

/// Links both published versions of `astrid:http`.
pub fn add_to_linker(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    v1_0::add_to_linker(linker)?;
    v1_1::add_to_linker(linker)
}
