use extism_pdk::*;

/// Takes the input and returns nothing: the Extism twin of `hello`'s `noop`.
#[plugin_fn]
pub fn noop(input: Vec<u8>) -> FnResult<Vec<u8>> {
    drop(input);
    Ok(Vec::new())
}
