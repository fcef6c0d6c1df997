//! WASI 0.2 as astrid links it: deny by default (host ABI §0). No preopens,
//! no sockets, no environment, empty stdin; stdout and stderr become log
//! lines for the embedder's log callback (stdout at info, stderr at warn).

pub mod sockets;
pub mod stdio;
pub mod vetting;

pub use sockets::VettedAddresses;
pub(crate) use sockets::{count_wasi_sockets, route_name_lookups};
pub use stdio::{deny_by_default_ctx, StdioLog, MAX_LINE_BYTES};
pub use vetting::WasiSocketsCall;
