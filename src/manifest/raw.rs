//! The manifest's raw shapes: exactly the fields `Capsule.toml` may carry
//! (anything else is refused by serde), before validation.

use serde::de::{Deserializer, MapAccess, Visitor};
use serde::Deserialize;
use std::fmt;
use std::marker::PhantomData;
use toml::Spanned;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawManifest {
    pub(crate) package: Spanned<RawPackage>,
    #[serde(default)]
    pub(crate) component: Vec<Spanned<RawComponent>>,
    #[serde(default)]
    pub(crate) capabilities: Option<RawCapabilities>,
    #[serde(default)]
    pub(crate) publish: Ordered<Spanned<RawTopicValue>>,
    #[serde(default)]
    pub(crate) subscribe: Ordered<Spanned<RawSubscribeValue>>,
    #[serde(default)]
    pub(crate) env: Ordered<Spanned<RawEnv>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawPackage {
    pub(crate) name: Spanned<String>,
    pub(crate) version: Spanned<String>,
    #[serde(rename = "astrid-version")]
    pub(crate) astrid_version: Option<Spanned<String>>,
    pub(crate) description: Option<String>,
    #[allow(dead_code)]
    pub(crate) authors: Option<Vec<String>>,
    #[allow(dead_code)]
    pub(crate) license: Option<String>,
    #[allow(dead_code)]
    pub(crate) repository: Option<String>,
    #[allow(dead_code)]
    pub(crate) homepage: Option<String>,
    #[allow(dead_code)]
    pub(crate) keywords: Option<Vec<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawComponent {
    pub(crate) id: Option<String>,
    pub(crate) file: Option<String>,
    pub(crate) hash: Option<Spanned<String>>,
    #[serde(rename = "type")]
    pub(crate) kind: Option<Spanned<String>>,
    pub(crate) capabilities: Option<RawCapabilities>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawCapabilities {
    #[serde(default)]
    pub(crate) net: Vec<Spanned<String>>,
    #[serde(default)]
    pub(crate) net_connect: Vec<Spanned<String>>,
    #[serde(default)]
    pub(crate) net_bind: Vec<Spanned<String>>,
    #[serde(default)]
    pub(crate) fs_read: Vec<Spanned<String>>,
    #[serde(default)]
    pub(crate) fs_write: Vec<Spanned<String>>,
    #[serde(default)]
    pub(crate) uplink: bool,
    #[serde(default)]
    pub(crate) kv: Option<toml::Value>,
    pub(crate) host_process: Option<toml::Value>,
    pub(crate) allow_persistent: Option<toml::Value>,
    pub(crate) identity: Option<toml::Value>,
    pub(crate) bind_workers: Option<toml::Value>,
    pub(crate) allow_prompt_injection: Option<toml::Value>,
}

#[derive(Deserialize)]
#[serde(untagged)]
pub(crate) enum RawTopicValue {
    Schema(String),
    Table(RawSchemaTable),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawSchemaTable {
    pub(crate) wit: Option<String>,
    #[allow(dead_code)]
    pub(crate) version: Option<String>,
}

#[derive(Deserialize)]
#[serde(untagged)]
pub(crate) enum RawSubscribeValue {
    Schema(String),
    Table(RawSubscribeTable),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawSubscribeTable {
    pub(crate) wit: Option<String>,
    #[allow(dead_code)]
    pub(crate) version: Option<String>,
    pub(crate) handler: Option<String>,
    pub(crate) priority: Option<u32>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawEnv {
    #[serde(rename = "type")]
    pub(crate) kind: Option<String>,
    pub(crate) request: Option<String>,
    pub(crate) description: Option<String>,
    pub(crate) default: Option<toml::Value>,
    pub(crate) enum_values: Option<Vec<String>>,
    #[allow(dead_code)]
    pub(crate) placeholder: Option<String>,
}

/// A TOML table read in document order (serde maps would sort it).
pub(crate) struct Ordered<V>(pub(crate) Vec<(String, V)>);

impl<V> Default for Ordered<V> {
    fn default() -> Self {
        Ordered(Vec::new())
    }
}

impl<'de, V: Deserialize<'de>> Deserialize<'de> for Ordered<V> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> std::result::Result<Self, D::Error> {
        struct OrderedVisitor<V>(PhantomData<V>);
        impl<'de, V: Deserialize<'de>> Visitor<'de> for OrderedVisitor<V> {
            type Value = Ordered<V>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a table")
            }
            fn visit_map<A: MapAccess<'de>>(
                self,
                mut map: A,
            ) -> std::result::Result<Self::Value, A::Error> {
                let mut entries = Vec::new();
                while let Some((key, value)) = map.next_entry::<String, V>()? {
                    entries.push((key, value));
                }
                Ok(Ordered(entries))
            }
        }
        deserializer.deserialize_map(OrderedVisitor(PhantomData))
    }
}
