//! `Capsule.toml`: a strict parser (host ABI §6). Unknown tables or fields,
//! wrong types and invalid values fail with an error naming the field and
//! its line. Everything is validated and kept, even sections that later
//! subsystems enforce.

use crate::error::{Error, Result};
use crate::policy::net::{HttpHostGrant, SocketGrant};
use crate::policy::paths::PathGrant;
use crate::policy::topic;
use std::fmt;
use toml::Spanned;

/// The level of the host ABI this runtime serves; `[package] astrid-version`
/// requirements are matched against it.
pub const HOST_ABI_VERSION: semver::Version = semver::Version::new(1, 0, 0);

/// Most `[subscribe]` entries that may carry a `handler`.
pub const MAX_HANDLERS: usize = 64;

/// Capabilities recognised for compatibility but without effect here.
pub const INERT_CAPABILITIES: [&str; 5] = [
    "host_process",
    "allow_persistent",
    "identity",
    "bind_workers",
    "allow_prompt_injection",
];

#[derive(Clone, Debug)]
pub struct Manifest {
    pub name: String,
    pub version: semver::Version,
    pub astrid_version: Option<semver::VersionReq>,
    pub description: Option<String>,
    pub component: Option<ComponentEntry>,
    pub capabilities: Capabilities,
    pub publish: Vec<TopicGrant>,
    pub subscribe: Vec<SubscribeGrant>,
    pub env: Vec<EnvEntry>,
}

#[derive(Clone, Debug)]
pub struct ComponentEntry {
    pub id: Option<String>,
    pub file: Option<String>,
    /// blake3 digest the binary must match.
    pub hash: Option<[u8; 32]>,
}

#[derive(Clone, Debug, Default)]
pub struct Capabilities {
    pub net: Vec<HttpHostGrant>,
    pub net_connect: Vec<SocketGrant>,
    pub net_bind: Vec<SocketGrant>,
    pub fs_read: Vec<PathGrant>,
    pub fs_write: Vec<PathGrant>,
    pub uplink: bool,
    pub kv: bool,
    /// Inert capabilities the manifest sets (logged once at load).
    pub inert: Vec<String>,
}

impl Capabilities {
    /// Capability names as `enumerate-capabilities` reports them.
    pub fn names(&self) -> Vec<String> {
        let mut names = Vec::new();
        let lists: [(&str, bool); 5] = [
            ("net", !self.net.is_empty()),
            ("net_connect", !self.net_connect.is_empty()),
            ("net_bind", !self.net_bind.is_empty()),
            ("fs_read", !self.fs_read.is_empty()),
            ("fs_write", !self.fs_write.is_empty()),
        ];
        for (name, held) in lists {
            if held {
                names.push(name.to_string());
            }
        }
        if self.uplink {
            names.push("uplink".to_string());
        }
        names
    }
}

#[derive(Clone, Debug)]
pub struct TopicGrant {
    pub pattern: String,
    pub schema: Option<String>,
}

#[derive(Clone, Debug)]
pub struct SubscribeGrant {
    pub pattern: String,
    pub schema: Option<String>,
    pub handler: Option<String>,
    pub priority: u32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EnvKind {
    Text,
    Secret,
    Select,
    Array,
}

#[derive(Clone, Debug)]
pub struct EnvEntry {
    pub key: String,
    pub kind: EnvKind,
    /// The default as `get-config` returns it: strings unquoted, others JSON.
    pub default: Option<String>,
    pub enum_values: Vec<String>,
    pub description: Option<String>,
    pub request: Option<String>,
}

mod raw;

use raw::{RawCapabilities, RawManifest, RawSubscribeValue, RawTopicValue};

// ---- parsing and validation ----

struct Source<'a>(&'a str);

impl Source<'_> {
    fn line(&self, offset: usize) -> usize {
        self.0.as_bytes()[..offset.min(self.0.len())]
            .iter()
            .filter(|&&b| b == b'\n')
            .count()
            + 1
    }

    fn err<T>(
        &self,
        span: std::ops::Range<usize>,
        field: &str,
        what: impl fmt::Display,
    ) -> Result<T> {
        Err(Error::manifest(format!(
            "Capsule.toml line {}: `{field}` {what}",
            self.line(span.start)
        )))
    }
}

fn valid_package_name(name: &str) -> bool {
    let mut chars = name.chars();
    name.len() <= 64
        && chars.next().is_some_and(|c| c.is_ascii_lowercase())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-')
}

fn valid_env_key(key: &str) -> bool {
    let mut chars = key.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// How `get-config` renders a TOML value: strings unquoted, others as JSON.
pub fn render_config_value(value: &toml::Value) -> String {
    match value {
        toml::Value::String(s) => s.clone(),
        other => serde_json::to_string(other).unwrap_or_default(),
    }
}

fn parse_hash(src: &Source, hash: &Spanned<String>) -> Result<[u8; 32]> {
    let text = hash.get_ref();
    let hex = text
        .strip_prefix("blake3:")
        .filter(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()));
    match hex {
        Some(hex) => {
            let mut out = [0u8; 32];
            for (i, byte) in out.iter_mut().enumerate() {
                *byte = u8::from_str_radix(&hex[i * 2..i * 2 + 2], 16).unwrap_or(0);
            }
            Ok(out)
        }
        None => src.err(
            hash.span(),
            "component.hash",
            "must be `blake3:` followed by 64 hex digits",
        ),
    }
}

fn merge_capabilities(
    src: &Source,
    raw: RawCapabilities,
    into: &mut Capabilities,
    prefix: &str,
) -> Result<()> {
    for entry in raw.net {
        match HttpHostGrant::parse(entry.get_ref()) {
            Ok(g) => into.net.push(g),
            Err(e) => return src.err(entry.span(), &format!("{prefix}net"), format!("entry {e}")),
        }
    }
    for (list, out, field, unix) in [
        (raw.net_connect, &mut into.net_connect, "net_connect", false),
        (raw.net_bind, &mut into.net_bind, "net_bind", true),
    ] {
        for entry in list {
            match SocketGrant::parse(entry.get_ref(), unix) {
                Ok(g) => out.push(g),
                Err(e) => {
                    return src.err(
                        entry.span(),
                        &format!("{prefix}{field}"),
                        format!("entry {e}"),
                    )
                }
            }
        }
    }
    for (list, out, field) in [
        (raw.fs_read, &mut into.fs_read, "fs_read"),
        (raw.fs_write, &mut into.fs_write, "fs_write"),
    ] {
        for entry in list {
            match PathGrant::parse(entry.get_ref()) {
                Ok(g) => out.push(g),
                Err(e) => {
                    return src.err(
                        entry.span(),
                        &format!("{prefix}{field}"),
                        format!("entry `{}` {e}", entry.get_ref()),
                    )
                }
            }
        }
    }
    into.uplink |= raw.uplink;
    into.kv |= raw.kv.is_some_and(|v| v.as_bool() != Some(false));
    let inert = [
        ("host_process", raw.host_process),
        ("allow_persistent", raw.allow_persistent),
        ("identity", raw.identity),
        ("bind_workers", raw.bind_workers),
        ("allow_prompt_injection", raw.allow_prompt_injection),
    ];
    for (name, value) in inert {
        if value.is_some() && !into.inert.iter().any(|n| n == name) {
            into.inert.push(name.to_string());
        }
    }
    Ok(())
}

impl Manifest {
    /// Parses and validates manifest text. `require_file` is set for
    /// directory loads, where `[[component]] file` names the binary.
    pub fn parse(text: &str, require_file: bool) -> Result<Manifest> {
        let src = Source(text);
        let raw: RawManifest = toml::from_str(text).map_err(|e| {
            let line = e
                .span()
                .map(|s| format!(" line {}", src.line(s.start)))
                .unwrap_or_default();
            Error::manifest(format!("Capsule.toml{line}: {}", e.message().trim()))
        })?;

        let package_span = raw.package.span();
        let package = raw.package.into_inner();
        if !valid_package_name(package.name.get_ref()) {
            return src.err(
                package.name.span(),
                "package.name",
                "must match [a-z][a-z0-9_-]* and be at most 64 bytes",
            );
        }
        let version = semver::Version::parse(package.version.get_ref()).or_else(|e| {
            src.err(
                package.version.span(),
                "package.version",
                format!("is not a semantic version ({e})"),
            )
        })?;
        let astrid_version = match &package.astrid_version {
            None => None,
            Some(req) => {
                let parsed = semver::VersionReq::parse(req.get_ref()).or_else(|e| {
                    src.err(
                        req.span(),
                        "package.astrid-version",
                        format!("is not a version requirement ({e})"),
                    )
                })?;
                if !parsed.matches(&HOST_ABI_VERSION) {
                    return src.err(
                        req.span(),
                        "package.astrid-version",
                        format!(
                            "`{}` does not accept this runtime's host ABI {HOST_ABI_VERSION}",
                            req.get_ref()
                        ),
                    );
                }
                Some(parsed)
            }
        };

        let mut capabilities = Capabilities::default();
        if let Some(caps) = raw.capabilities {
            merge_capabilities(&src, caps, &mut capabilities, "capabilities.")?;
        }

        if raw.component.len() > 1 {
            return src.err(
                raw.component[1].span(),
                "component",
                "appears twice: exactly one [[component]] is allowed",
            );
        }
        let component = match raw.component.into_iter().next() {
            None if require_file => {
                return src.err(
                    package_span,
                    "component",
                    "is missing: exactly one [[component]] is required",
                )
            }
            None => None,
            Some(spanned) => {
                let span = spanned.span();
                let c = spanned.into_inner();
                if let Some(kind) = &c.kind {
                    if kind.get_ref() != "executable" {
                        return src.err(kind.span(), "component.type", "must be \"executable\"");
                    }
                }
                if require_file && c.file.as_deref().is_none_or(str::is_empty) {
                    return src.err(span, "component.file", "is required");
                }
                let hash = c.hash.as_ref().map(|h| parse_hash(&src, h)).transpose()?;
                if let Some(caps) = c.capabilities {
                    merge_capabilities(&src, caps, &mut capabilities, "component.capabilities.")?;
                }
                Some(ComponentEntry {
                    id: c.id,
                    file: c.file,
                    hash,
                })
            }
        };

        let mut publish = Vec::new();
        for (pattern, value) in raw.publish.0 {
            if let Err(e) = topic::validate_pattern(&pattern) {
                return src.err(
                    value.span(),
                    &format!("publish.\"{pattern}\""),
                    format!("topic pattern {e}"),
                );
            }
            let schema = match value.into_inner() {
                RawTopicValue::Schema(s) => Some(s),
                RawTopicValue::Table(t) => t.wit,
            };
            publish.push(TopicGrant { pattern, schema });
        }

        let mut subscribe = Vec::new();
        let mut handlers = 0;
        for (pattern, value) in raw.subscribe.0 {
            let span = value.span();
            let field = format!("subscribe.\"{pattern}\"");
            if let Err(e) = topic::validate_pattern(&pattern) {
                return src.err(span, &field, format!("topic pattern {e}"));
            }
            let grant = match value.into_inner() {
                RawSubscribeValue::Schema(s) => SubscribeGrant {
                    pattern,
                    schema: Some(s),
                    handler: None,
                    priority: 100,
                },
                RawSubscribeValue::Table(t) => {
                    if t.priority.is_some() && t.handler.is_none() {
                        return src.err(span, &field, "sets `priority` without `handler`");
                    }
                    if t.handler.as_deref() == Some("") {
                        return src.err(span, &field, "has an empty `handler`");
                    }
                    SubscribeGrant {
                        pattern,
                        schema: t.wit,
                        handler: t.handler,
                        priority: t.priority.unwrap_or(100),
                    }
                }
            };
            if grant.handler.is_some() {
                handlers += 1;
                if handlers > MAX_HANDLERS {
                    return src.err(
                        span,
                        &field,
                        "exceeds the limit of 64 entries with a handler",
                    );
                }
            }
            subscribe.push(grant);
        }

        let mut env = Vec::new();
        for (key, value) in raw.env.0 {
            let span = value.span();
            let field = format!("env.{key}");
            if !valid_env_key(&key) {
                return src.err(span, &field, "key must match [A-Za-z_][A-Za-z0-9_]*");
            }
            if key.starts_with("ASTRID_") {
                return src.err(span, &field, "key uses the reserved ASTRID_ prefix");
            }
            let raw_env = value.into_inner();
            let kind = match raw_env.kind.as_deref() {
                None | Some("text") => EnvKind::Text,
                Some("secret") => EnvKind::Secret,
                Some("select") => EnvKind::Select,
                Some("array") => EnvKind::Array,
                Some(other) => {
                    return src.err(
                        span,
                        &format!("{field}.type"),
                        format!("`{other}` is not one of text, secret, select, array"),
                    )
                }
            };
            let enum_values = raw_env.enum_values.unwrap_or_default();
            if kind == EnvKind::Select && enum_values.is_empty() {
                return src.err(
                    span,
                    &format!("{field}.enum_values"),
                    "is required for type select",
                );
            }
            if let Some(default) = &raw_env.default {
                let fits = match kind {
                    EnvKind::Array => default.is_array(),
                    EnvKind::Select => default
                        .as_str()
                        .is_some_and(|d| enum_values.iter().any(|v| v == d)),
                    EnvKind::Secret => false,
                    EnvKind::Text => !default.is_array() && !default.is_table(),
                };
                if !fits {
                    return src.err(
                        span,
                        &format!("{field}.default"),
                        "does not fit the entry's type",
                    );
                }
            }
            env.push(EnvEntry {
                key,
                kind,
                default: raw_env.default.as_ref().map(render_config_value),
                enum_values,
                description: raw_env.description,
                request: raw_env.request,
            });
        }

        Ok(Manifest {
            name: package.name.into_inner(),
            version,
            astrid_version,
            description: package.description,
            component,
            capabilities,
            publish,
            subscribe,
            env,
        })
    }

    pub fn env_entry(&self, key: &str) -> Option<&EnvEntry> {
        self.env.iter().find(|e| e.key == key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
[package]
name = "weather"
version = "0.3.1"
astrid-version = ">=1.0"

[[component]]
id = "weather"
file = "weather.wasm"

[capabilities]
net = ["api.weather.example"]
net_connect = ["cache.internal.example:6379"]
fs_read = ["cwd://cities"]
fs_write = ["tmp://"]

[publish]
"weather.v1.report.*" = "opaque"

[subscribe]
"tool.v1.execute.forecast" = { wit = "opaque", handler = "forecast", priority = 50 }
"weather.v1.refresh" = "opaque"
"a.first" = { handler = "first" }

[env.API_TOKEN]
type = "secret"
request = "Token for the forecast API"

[env.UNITS]
default = "metric"

[env.CITIES]
type = "array"
default = ["Oslo", "Lima"]
"#;

    fn err(text: &str) -> String {
        Manifest::parse(text, true)
            .unwrap_err()
            .message()
            .to_string()
    }

    #[test]
    fn parses_the_spec_example() {
        let m = Manifest::parse(GOOD, true).unwrap();
        assert_eq!(m.name, "weather");
        assert_eq!(
            m.capabilities.names(),
            ["net", "net_connect", "fs_read", "fs_write"]
        );
        assert_eq!(m.subscribe.len(), 3);
        assert_eq!(m.subscribe[0].handler.as_deref(), Some("forecast"));
        assert_eq!(m.subscribe[0].priority, 50);
        assert_eq!(m.subscribe[2].pattern, "a.first", "document order is kept");
        assert_eq!(m.subscribe[2].priority, 100);
        assert_eq!(
            m.env_entry("UNITS").unwrap().default.as_deref(),
            Some("metric")
        );
        assert_eq!(
            m.env_entry("CITIES").unwrap().default.as_deref(),
            Some(r#"["Oslo","Lima"]"#)
        );
        assert_eq!(m.env_entry("API_TOKEN").unwrap().kind, EnvKind::Secret);
    }

    #[test]
    fn unknown_field_names_field_and_line() {
        let text = GOOD
            .replace("homepage_x = 1", "")
            .replace("[capabilities]\n", "[capabilities]\nteleport = true\n");
        let e = err(&text);
        assert!(e.contains("teleport") && e.contains("line 12"), "{e}");
        let e = err("[package]\nname = \"a\"\nversion = \"1.0.0\"\nfoo = 1\n[[component]]\nfile = \"a.wasm\"\n");
        assert!(e.contains("foo") && e.contains("line 4"), "{e}");
        let e = err("[package]\nname = \"a\"\nversion = \"1.0.0\"\n[[component]]\nfile = \"a.wasm\"\n[extras]\n");
        assert!(e.contains("extras"), "{e}");
    }

    #[test]
    fn wrong_types_and_values() {
        let base =
            "[package]\nname = \"a\"\nversion = \"1.0.0\"\n[[component]]\nfile = \"a.wasm\"\n";
        assert!(err(&format!("{base}[capabilities]\nuplink = \"yes\"\n")).contains("line 7"));
        assert!(err("[package]\nname = \"A\"\nversion = \"1.0.0\"\n").contains("package.name"));
        assert!(err("[package]\nname = \"a\"\nversion = \"one\"\n").contains("package.version"));
        assert!(
            err("[package]\nname = \"a\"\nversion = \"1.0.0\"\nastrid-version = \">=2\"\n")
                .contains("astrid-version")
        );
        assert!(err("[package]\nname = \"a\"\nversion = \"1.0.0\"\n").contains("[[component]]"));
        let two = format!("{base}[[component]]\nfile = \"b.wasm\"\n");
        let e = err(&two);
        assert!(e.contains("line 6") && e.contains("exactly one"), "{e}");
        let e = err(&format!("{base}[subscribe]\n\"a.b*\" = \"x\"\n"));
        assert!(
            e.contains("subscribe.\"a.b*\"") && e.contains("line 7"),
            "{e}"
        );
        let e = err(&format!(
            "{base}[capabilities]\nfs_read = [\"cwd://a/../b\"]\n"
        ));
        assert!(e.contains("fs_read") && e.contains(".."), "{e}");
        assert!(err(&format!(
            "{base}[capabilities]\nnet_connect = [\"nohost\"]\n"
        ))
        .contains("net_connect"));
        assert!(err(&format!("{base}[env.ASTRID_X]\ndefault = \"1\"\n")).contains("reserved"));
        assert!(err(&format!("{base}[env.\"1BAD\"]\ndefault = \"1\"\n")).contains("env.1BAD"));
        assert!(err(&format!(
            "{base}[subscribe]\n\"a.b\" = {{ priority = 3 }}\n"
        ))
        .contains("priority"));
        assert!(err(&format!(
            "{base}[[component]]\nfile=\"x\"\nhash = \"md5:00\"\n"
        ))
        .contains("appears twice"));
        let e = Manifest::parse(&format!("{base}hash = \"md5:00\"\n"), true).unwrap_err();
        assert!(e.message().contains("component.hash"), "{e}");
        let mut many = base.to_string() + "[subscribe]\n";
        for i in 0..65 {
            many.push_str(&format!("\"t.h{i}\" = {{ handler = \"h{i}\" }}\n"));
        }
        assert!(err(&many).contains("64"));
    }

    #[test]
    fn bytes_loads_may_omit_the_component() {
        let m = Manifest::parse("[package]\nname = \"a\"\nversion = \"1.0.0\"\n", false).unwrap();
        assert!(m.component.is_none());
    }

    #[test]
    fn inert_capabilities_are_recorded() {
        let m = Manifest::parse(
            "[package]\nname = \"a\"\nversion = \"1.0.0\"\n[capabilities]\nhost_process = [\"ls\"]\nuplink = true\n",
            false,
        )
        .unwrap();
        assert_eq!(m.capabilities.inert, ["host_process"]);
        assert_eq!(m.capabilities.names(), ["uplink"]);
    }
}
