//! Generates the C header from `src/ffi` with cbindgen.
//!
//! The fresh header always goes to `$OUT_DIR/astrid.h`; outside CI it is also
//! written to `include/astrid.h`. The `header_is_current` test compares the
//! two, so a committed header that drifted from the code fails CI.

use std::path::PathBuf;

fn main() {
    let crate_dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR"));
    let out_dir = PathBuf::from(std::env::var("OUT_DIR").expect("OUT_DIR"));
    println!("cargo:rerun-if-changed=src/ffi");
    println!("cargo:rerun-if-changed=cbindgen.toml");
    println!("cargo:rerun-if-env-changed=CI");

    let config =
        cbindgen::Config::from_file(crate_dir.join("cbindgen.toml")).expect("cbindgen.toml");
    let bindings = cbindgen::Builder::new()
        .with_src(crate_dir.join("src/ffi/mod.rs"))
        .with_config(config)
        .generate()
        .expect("cbindgen could not generate include/astrid.h");
    let generated = out_dir.join("astrid.h");
    bindings.write_to_file(&generated);

    if std::env::var_os("CI").is_none() {
        let committed = crate_dir.join("include").join("astrid.h");
        let fresh = std::fs::read(&generated).expect("generated header");
        if std::fs::read(&committed).ok().as_deref() != Some(fresh.as_slice()) {
            std::fs::create_dir_all(crate_dir.join("include")).expect("include/");
            std::fs::write(&committed, fresh).expect("write include/astrid.h");
        }
    }
}
