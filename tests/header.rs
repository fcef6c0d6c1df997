//! The committed C header must be exactly what cbindgen generates now.

#[test]
fn header_is_current() {
    let committed = include_str!("../include/astrid.h");
    let generated = include_str!(concat!(env!("OUT_DIR"), "/astrid.h"));
    assert!(
        committed == generated,
        "include/astrid.h is stale: run `cargo build` outside CI and commit the regenerated header"
    );
}
