//! Exports `astrid-hook-trigger` with the wrong signature; loading it must
//! fail with ASTRID_E_LINK instead of failing every call.

wit_bindgen::generate!({
    inline: "
        package evil:signature;
        world wrong {
            export astrid-hook-trigger: func(action: string) -> string;
        }
    ",
});

struct Wrong;

impl Guest for Wrong {
    fn astrid_hook_trigger(action: String) -> String {
        action
    }
}

export!(Wrong);
