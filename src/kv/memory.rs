//! The built-in KV store: sorted maps in memory, one per namespace, each
//! with a byte budget: keys plus values plus [`ENTRY_OVERHEAD`] per entry,
//! so a flood of empty values costs what it really holds. One lock per store keeps `cas`
//! linearizable and listings consistent.

use super::{KvError, KvStore, Namespace};
use crate::signal::MutexExt;
use std::collections::{BTreeMap, HashMap};
use std::ops::Bound;
use std::sync::Mutex;

#[derive(Default)]
struct Space {
    entries: BTreeMap<String, Vec<u8>>,
    bytes: u64,
}

/// Bytes charged per entry beyond its key and value: the map slot, the
/// key's and value's headers and allocator overhead.
pub const ENTRY_OVERHEAD: u64 = 96;

impl Space {
    fn cost(key: &str, value: &[u8]) -> u64 {
        (key.len() + value.len()) as u64 + ENTRY_OVERHEAD
    }

    /// Replaces (or inserts) within `quota`.
    fn put(&mut self, key: &str, value: &[u8], quota: u64) -> Result<(), KvError> {
        let old = self.entries.get(key).map_or(0, |v| Self::cost(key, v));
        let new_total = self.bytes - old + Self::cost(key, value);
        if new_total > quota {
            return Err(KvError::Quota);
        }
        self.entries.insert(key.to_string(), value.to_vec());
        self.bytes = new_total;
        Ok(())
    }

    fn remove(&mut self, key: &str) -> bool {
        match self.entries.remove(key) {
            Some(value) => {
                self.bytes -= Self::cost(key, &value);
                true
            }
            None => false,
        }
    }

    fn keys_from<'a>(
        &'a self,
        prefix: &'a str,
        after: Option<&str>,
    ) -> impl Iterator<Item = &'a String> + 'a {
        let start = match after {
            Some(after) if after >= prefix => Bound::Excluded(after.to_string()),
            _ => Bound::Included(prefix.to_string()),
        };
        self.entries
            .range::<String, _>((start, Bound::Unbounded))
            .map(|(k, _)| k)
            .take_while(move |k| k.starts_with(prefix))
    }
}

/// Namespaces in memory, each limited to `quota` bytes.
pub struct MemoryKv {
    spaces: Mutex<HashMap<Namespace, Space>>,
    quota: u64,
}

impl MemoryKv {
    pub fn new(quota: u64) -> Self {
        MemoryKv {
            spaces: Mutex::new(HashMap::new()),
            quota,
        }
    }

    fn with<R>(&self, ns: &Namespace, f: impl FnOnce(&mut Space) -> R) -> R {
        let mut spaces = self.spaces.locked();
        match spaces.get_mut(ns) {
            Some(space) => f(space),
            None => {
                let mut space = Space::default();
                let result = f(&mut space);
                if !space.entries.is_empty() {
                    spaces.insert(ns.clone(), space);
                }
                result
            }
        }
    }
}

impl KvStore for MemoryKv {
    fn usage_bytes(&self, capsule_id: &str) -> Option<u64> {
        let spaces = self.spaces.locked();
        Some(
            spaces
                .iter()
                .filter(|(ns, _)| ns.capsule_id == capsule_id)
                .map(|(_, space)| space.bytes)
                .sum(),
        )
    }

    fn get(&self, ns: &Namespace, key: &str) -> Result<Option<Vec<u8>>, KvError> {
        Ok(self.with(ns, |space| space.entries.get(key).cloned()))
    }

    fn set(&self, ns: &Namespace, key: &str, value: &[u8]) -> Result<(), KvError> {
        self.with(ns, |space| space.put(key, value, self.quota))
    }

    fn delete(&self, ns: &Namespace, key: &str) -> Result<(), KvError> {
        self.with(ns, |space| space.remove(key));
        Ok(())
    }

    fn list(
        &self,
        ns: &Namespace,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<String>, KvError> {
        Ok(self.with(ns, |space| {
            space
                .keys_from(prefix, after)
                .take(limit)
                .cloned()
                .collect()
        }))
    }

    fn clear_prefix(&self, ns: &Namespace, prefix: &str) -> Result<u64, KvError> {
        Ok(self.with(ns, |space| {
            let doomed: Vec<String> = space.keys_from(prefix, None).cloned().collect();
            for key in &doomed {
                space.remove(key);
            }
            doomed.len() as u64
        }))
    }

    fn cas(
        &self,
        ns: &Namespace,
        key: &str,
        expected: Option<&[u8]>,
        new: &[u8],
    ) -> Result<(), KvError> {
        self.with(ns, |space| {
            if space.entries.get(key).map(Vec::as_slice) != expected {
                return Err(KvError::CasMismatch);
            }
            space.put(key, new, self.quota)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ns(scope: &str) -> Namespace {
        Namespace {
            scope: scope.into(),
            capsule_id: "c".into(),
        }
    }

    #[test]
    fn namespaces_are_separate() {
        let kv = MemoryKv::new(1 << 20);
        kv.set(&ns("alice"), "k", b"a").unwrap();
        assert_eq!(kv.get(&ns("bob"), "k").unwrap(), None);
        assert_eq!(kv.get(&ns("alice"), "k").unwrap(), Some(b"a".to_vec()));
    }

    #[test]
    fn listing_is_sorted_prefixed_and_paged() {
        let kv = MemoryKv::new(1 << 20);
        let n = ns("s");
        for key in ["b2", "a", "b1", "b10", "c", "b"] {
            kv.set(&n, key, b"").unwrap();
        }
        assert_eq!(
            kv.list(&n, "b", None, 10).unwrap(),
            ["b", "b1", "b10", "b2"]
        );
        assert_eq!(kv.list(&n, "b", Some("b1"), 2).unwrap(), ["b10", "b2"]);
        assert_eq!(kv.list(&n, "b", Some("a"), 1).unwrap(), ["b"]);
        assert!(kv.list(&n, "b", Some("b2"), 5).unwrap().is_empty());
        assert_eq!(kv.clear_prefix(&n, "b1").unwrap(), 2);
        assert_eq!(kv.clear_prefix(&n, "").unwrap(), 4);
    }

    #[test]
    fn quota_counts_keys_values_overhead_and_replacements() {
        let kv = MemoryKv::new(2 * ENTRY_OVERHEAD + 11);
        let n = ns("s");
        kv.set(&n, "k", b"123456789").unwrap(); // 10 bytes + overhead
        kv.set(&n, "j", b"").unwrap(); // 1 byte + overhead
        assert_eq!(kv.set(&n, "i", b""), Err(KvError::Quota));
        assert_eq!(kv.set(&n, "j", b"1"), Err(KvError::Quota));
        kv.set(&n, "k", b"1").unwrap(); // replacing frees the old bytes
        kv.set(&n, "j", b"1234567").unwrap();
        kv.delete(&n, "k").unwrap();
        kv.set(&n, "i", b"").unwrap();
    }

    #[test]
    fn empty_values_are_not_free() {
        let kv = MemoryKv::new(1000 * (ENTRY_OVERHEAD + 4));
        let n = ns("s");
        let stored = (0..100_000)
            .take_while(|i| kv.set(&n, &format!("{i:04}"), b"").is_ok())
            .count();
        assert_eq!(stored, 1000);
    }

    #[test]
    fn cas_semantics() {
        let kv = MemoryKv::new(1 << 20);
        let n = ns("s");
        kv.cas(&n, "k", None, b"1").unwrap();
        assert_eq!(kv.cas(&n, "k", None, b"2"), Err(KvError::CasMismatch));
        assert_eq!(kv.cas(&n, "k", Some(b"0"), b"2"), Err(KvError::CasMismatch));
        kv.cas(&n, "k", Some(b"1"), b"2").unwrap();
        assert_eq!(kv.get(&n, "k").unwrap(), Some(b"2".to_vec()));
    }
}
