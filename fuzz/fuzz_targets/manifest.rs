//! `Capsule.toml` parser: never panics, is deterministic, and everything it
//! accepts satisfies the grammar the rest of the runtime relies on.

#![no_main]

use astrid::manifest::{EnvKind, Manifest, HOST_ABI_VERSION, MAX_HANDLERS};
use astrid::policy::net::{HostPattern, HttpHostGrant, PortPattern, SocketGrant};
use astrid::policy::paths::{GrantComponent, PathGrant};
use astrid::policy::topic;
use libfuzzer_sys::fuzz_target;
use toml::{Table, Value};

/// Writes an accepted manifest back as `Capsule.toml` text: every parsed
/// field in its canonical spelling (component capabilities merged into the
/// top-level table). `None` when a default cannot be written back (a JSON
/// rendering with `null`, from a non-finite float).
fn emit(m: &Manifest) -> Option<String> {
    let s = |text: &str| Value::String(text.to_string());
    let list = |items: Vec<String>| Value::Array(items.into_iter().map(Value::String).collect());
    let mut doc = Table::new();

    let mut package = Table::new();
    package.insert("name".into(), s(&m.name));
    package.insert("version".into(), s(&m.version.to_string()));
    if let Some(req) = &m.astrid_version {
        package.insert("astrid-version".into(), s(&req.to_string()));
    }
    if let Some(d) = &m.description {
        package.insert("description".into(), s(d));
    }
    doc.insert("package".into(), Value::Table(package));

    if let Some(c) = &m.component {
        let mut t = Table::new();
        if let Some(id) = &c.id {
            t.insert("id".into(), s(id));
        }
        if let Some(file) = &c.file {
            t.insert("file".into(), s(file));
        }
        if let Some(hash) = &c.hash {
            let hex: String = hash.iter().map(|b| format!("{b:02x}")).collect();
            t.insert("hash".into(), s(&format!("blake3:{hex}")));
        }
        doc.insert("component".into(), Value::Array(vec![Value::Table(t)]));
    }

    let caps = &m.capabilities;
    let mut c = Table::new();
    let http = |g: &HttpHostGrant| match g {
        HttpHostGrant::Any => "*".to_string(),
        HttpHostGrant::Name(n) => n.clone(),
        HttpHostGrant::Ip(ip) => ip.to_string(),
    };
    let socket = |g: &SocketGrant| match g {
        SocketGrant::Unix => "unix:*".to_string(),
        SocketGrant::Inet { host, port } => {
            let host = match host {
                HostPattern::Any => "*".to_string(),
                HostPattern::Subdomains(p) => format!("*.{p}"),
                HostPattern::Exact(h) if h.contains(':') => format!("[{h}]"),
                // Fixed finding: a host named `unix` (`UNIX:*`) read as the
                // unix-socket entry; the parser now refuses it.
                HostPattern::Exact(h) if h == "unix" => panic!("a host named unix was accepted"),
                HostPattern::Exact(h) => h.clone(),
            };
            match port {
                PortPattern::Any => format!("{host}:*"),
                PortPattern::Exact(p) => format!("{host}:{p}"),
            }
        }
    };
    let path = |g: &PathGrant| {
        let parts: Vec<&str> = g
            .components
            .iter()
            .map(|c| match c {
                GrantComponent::Any => "*",
                GrantComponent::Literal(l) => l.as_str(),
            })
            .collect();
        format!("{}://{}", g.mount.scheme(), parts.join("/"))
    };
    c.insert("net".into(), list(caps.net.iter().map(http).collect()));
    c.insert(
        "net_connect".into(),
        list(caps.net_connect.iter().map(socket).collect()),
    );
    c.insert(
        "net_bind".into(),
        list(caps.net_bind.iter().map(socket).collect()),
    );
    c.insert(
        "fs_read".into(),
        list(caps.fs_read.iter().map(path).collect()),
    );
    c.insert(
        "fs_write".into(),
        list(caps.fs_write.iter().map(path).collect()),
    );
    c.insert("uplink".into(), Value::Boolean(caps.uplink));
    c.insert("kv".into(), Value::Boolean(caps.kv));
    for name in &caps.inert {
        c.insert(name.clone(), Value::Boolean(true));
    }
    doc.insert("capabilities".into(), Value::Table(c));

    // The bus and env tables keep document order, which the serializer
    // would not (it moves sub-tables last): write them by hand, inline.
    let key = |k: &str| s(k).to_string();
    let inline = |pairs: Vec<(&str, Value)>| {
        let body: Vec<String> = pairs.iter().map(|(k, v)| format!("{k} = {v}")).collect();
        if body.is_empty() {
            "{}".to_string()
        } else {
            format!("{{ {} }}", body.join(", "))
        }
    };
    let mut text = doc.to_string();
    text.push_str("\n[publish]\n");
    for g in &m.publish {
        let value = match &g.schema {
            Some(schema) => s(schema).to_string(),
            None => inline(Vec::new()),
        };
        text.push_str(&format!("{} = {value}\n", key(&g.pattern)));
    }
    text.push_str("\n[subscribe]\n");
    for g in &m.subscribe {
        let value = match (&g.schema, &g.handler) {
            (Some(schema), None) => s(schema).to_string(),
            (schema, handler) => {
                let mut pairs = Vec::new();
                if let Some(schema) = schema {
                    pairs.push(("wit", s(schema)));
                }
                if let Some(handler) = handler {
                    pairs.push(("handler", s(handler)));
                    pairs.push(("priority", Value::Integer(g.priority.into())));
                }
                inline(pairs)
            }
        };
        text.push_str(&format!("{} = {value}\n", key(&g.pattern)));
    }
    text.push_str("\n[env]\n");
    for e in &m.env {
        let kind = match e.kind {
            EnvKind::Text => "text",
            EnvKind::Secret => "secret",
            EnvKind::Select => "select",
            EnvKind::Array => "array",
        };
        let mut pairs = vec![("type", s(kind))];
        if let Some(default) = &e.default {
            let value = match e.kind {
                // Rendered JSON: read it back as TOML data.
                EnvKind::Array => serde_json::from_str::<Value>(default).ok()?,
                // Text renders to itself (as a string it renders the same).
                _ => s(default),
            };
            pairs.push(("default", value));
        }
        if !e.enum_values.is_empty() {
            pairs.push(("enum_values", list(e.enum_values.clone())));
        }
        if let Some(d) = &e.description {
            pairs.push(("description", s(d)));
        }
        if let Some(r) = &e.request {
            pairs.push(("request", s(r)));
        }
        text.push_str(&format!("{} = {}\n", key(&e.key), inline(pairs)));
    }
    Some(text)
}

/// Debug form for comparing two parses; inert capability names are a set.
fn canonical(m: &Manifest) -> String {
    let mut m = m.clone();
    m.capabilities.inert.sort();
    format!("{m:?}")
}

/// An accepted manifest, written back canonically, parses to itself.
fn check_round_trip(text: &str, m: &Manifest, require_file: bool) {
    let Some(emitted) = emit(m) else {
        return;
    };
    match Manifest::parse(&emitted, require_file) {
        Ok(again) => assert_eq!(
            canonical(&again),
            canonical(m),
            "round trip changed the manifest\n--- input\n{text}\n--- emitted\n{emitted}"
        ),
        Err(e) => panic!(
            "written-back manifest is refused: {e}\n--- input\n{text}\n--- emitted\n{emitted}"
        ),
    }
}

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
            check_round_trip(text, d, true);
        }
        (Err(_), Ok(b)) => {
            check_accepted(text, b);
            check_round_trip(text, b, false);
        }
        (Ok(_), Err(e)) => panic!("directory form accepted, bytes form refused: {e}"),
        (Err(_), Err(_)) => {}
    }
    for r in [&dir, &bytes] {
        if let Err(e) = r {
            check_refused(text, e.message());
        }
    }
});
