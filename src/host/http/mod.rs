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
mod view;

use wasmtime::component::Linker;

pub(crate) use view::HttpView;

/// Links both published versions of `astrid:http`.
pub(crate) fn add_to_linker<T: 'static>(
    linker: &mut Linker<T>,
    view: fn(&mut T) -> HttpView<'_>,
) -> wasmtime::Result<()> {
    v1_0::bindings::astrid::http::host::add_to_linker::<T, view::HttpData>(linker, view)?;
    v1_1::bindings::astrid::http::host::add_to_linker::<T, view::HttpData>(linker, view)
}
