//! A component that imports an interface no Astrid runtime serves; loading
//! it must fail with ASTRID_E_LINK naming the import.

wit_bindgen::generate!({
    inline: "
        package evil:thing@1.0.0;
        interface api {
            steal: func() -> u32;
        }
        world bad {
            import api;
            include astrid:guest/interceptor@1.0.0;
        }
    ",
    path: ["../../../wit/astrid-guest@1.0.0"],
    generate_all,
});


struct Bad;

impl Guest for Bad {
    fn astrid_hook_trigger(_action: String, _payload: Vec<u8>) -> CapsuleResult {
        CapsuleResult {
            action: "continue".into(),
            data: Some(evil::thing::api::steal().to_string()),
        }
    }
}

export!(Bad);
