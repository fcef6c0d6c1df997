#![allow(unexpected_cfgs)] // `extism_host_read`: see `host_read` below

use extism_pdk::*;

/// Takes the input and returns nothing: the Extism twin of `hello`'s `noop`.
#[plugin_fn]
pub fn noop(input: Vec<u8>) -> FnResult<Vec<u8>> {
    drop(input);
    Ok(Vec::new())
}

/// B11 of the Python binding (bindings/python/bench): an export that calls an
/// embedder-provided host function. Compiled only with
/// `RUSTFLAGS="--cfg extism_host_read"` (bindings/python/bench.sh does that, in
/// its own target directory), because the import it adds would make every
/// embedder that passes no host functions — benches/call.rs — fail to
/// instantiate the default plugin.
#[cfg(extism_host_read)]
mod host_read {
    use extism_pdk::*;

    #[host_fn]
    extern "ExtismHost" {
        /// Provided by the embedder: the contents of `path` (4 KiB there).
        fn host_read(path: String) -> Vec<u8>;
    }

    /// Input `PATH\nCOUNT`: calls the host's `host_read(PATH)` COUNT times and
    /// returns the total bytes read as decimal text — the Extism twin of
    /// fsprobe's `read-loop` (a guest reading a file through an embedder callback).
    #[plugin_fn]
    pub fn host_read_loop(input: String) -> FnResult<String> {
        let (path, count) = input.split_once('\n').unwrap_or((input.as_str(), "1"));
        let count: usize = count.trim().parse().unwrap_or(1);
        let mut total = 0;
        for _ in 0..count {
            total += unsafe { host_read(path.to_string())? }.len();
        }
        Ok(total.to_string())
    }
}
