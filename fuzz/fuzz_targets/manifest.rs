//! `Capsule.toml` parser: never panics, is deterministic, and everything it
//! accepts satisfies the grammar the rest of the runtime relies on.

#![no_main]

use astrid::manifest::{EnvKind, Manifest, HOST_ABI_VERSION, MAX_HANDLERS};
use astrid::policy::net::HttpHostGrant;
use astrid::policy::paths::GrantComponent;
use astrid::policy::topic;
use libfuzzer_sys::fuzz_target;

fn check_accepted(text: &str, m: &Manifest) {
    // [package] name grammar.
    let mut chars = m.name.chars();
    assert!(m.name.len() <= 64, "{text:?}");
    assert!(chars.next().is_some_and(|c| c.is_ascii_lowercase()));
    assert!(chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-'));
    if let Some(req) = &m.astrid_version {
        assert!(
            req.matches(&HOST_ABI_VERSION),
            "accepted {req} for {text:?}"
        );
    }
    for grant in &m.publish {
        assert!(
            topic::validate_pattern(&grant.pattern).is_ok(),
            "{:?}",
            grant.pattern
        );
    }
    let mut handlers = 0;
    for grant in &m.subscribe {
        assert!(
            topic::validate_pattern(&grant.pattern).is_ok(),
            "{:?}",
            grant.pattern
        );
        match &grant.handler {
            Some(h) => {
                assert!(!h.is_empty());
                handlers += 1;
            }
            None => assert_eq!(grant.priority, 100, "priority without handler"),
        }
    }
    assert!(handlers <= MAX_HANDLERS);
    for (i, env) in m.env.iter().enumerate() {
        let mut k = env.key.chars();
        assert!(k
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_'));
        assert!(k.all(|c| c.is_ascii_alphanumeric() || c == '_'));
        assert!(!env.key.starts_with("ASTRID_"));
        assert!(
            m.env[..i].iter().all(|e| e.key != env.key),
            "duplicate env key"
        );
        match env.kind {
            EnvKind::Select => {
                assert!(!env.enum_values.is_empty());
                if let Some(d) = &env.default {
                    assert!(env.enum_values.contains(d), "select default not in enum");
                }
            }
            EnvKind::Secret => assert!(env.default.is_none(), "secret with a default"),
            EnvKind::Array => {
                if let Some(d) = &env.default {
                    assert!(d.starts_with('['), "array default {d:?}");
                }
            }
            EnvKind::Text => {}
        }
    }
    let caps = &m.capabilities;
    for grant in caps.fs_read.iter().chain(&caps.fs_write) {
        for c in &grant.components {
            if let GrantComponent::Literal(l) = c {
                assert!(!l.is_empty() && l != "." && l != ".." && l != "*");
                assert!(!l.contains('/') && !l.contains('\0') && !l.contains('\\'));
            }
        }
    }
    for grant in &caps.net {
        if let HttpHostGrant::Name(n) = grant {
            assert!(!n.is_empty() && n.is_ascii() && !n.ends_with('.'));
            assert_eq!(n, &n.to_ascii_lowercase());
        }
    }
    for name in caps.names() {
        assert!(
            [
                "net",
                "net_connect",
                "net_bind",
                "fs_read",
                "fs_write",
                "uplink"
            ]
            .contains(&name.as_str()),
            "{name}"
        );
    }
}

fn check_refused(text: &str, message: &str) {
    assert!(message.starts_with("Capsule.toml"), "{message}");
    // A line number, when given, points into the document.
    let lines = text.bytes().filter(|&b| b == b'\n').count() + 1;
    if let Some(rest) = message.split("line ").nth(1) {
        let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
        if let Ok(n) = digits.parse::<usize>() {
            if message.starts_with(&format!("Capsule.toml line {n}")) {
                assert!(n >= 1 && n <= lines, "line {n} of {lines}: {message}");
            }
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let dir = Manifest::parse(text, true);
    let bytes = Manifest::parse(text, false);
    // Deterministic.
    assert_eq!(
        format!("{dir:?}"),
        format!("{:?}", Manifest::parse(text, true)),
        "parse is not deterministic"
    );
    match (&dir, &bytes) {
        (Ok(d), Ok(b)) => {
            // A directory load only adds the `[[component]] file` requirement.
            assert_eq!(format!("{d:?}"), format!("{b:?}"));
            assert!(d
                .component
                .as_ref()
                .is_some_and(|c| c.file.as_deref().is_some_and(|f| !f.is_empty())));
            check_accepted(text, d);
        }
        (Err(_), Ok(b)) => check_accepted(text, b),
        (Ok(_), Err(e)) => panic!("directory form accepted, bytes form refused: {e}"),
        (Err(_), Err(_)) => {}
    }
    for r in [&dir, &bytes] {
        if let Err(e) = r {
            check_refused(text, e.message());
        }
    }
});
