//! Key-value storage behind `astrid:kv` (host ABI §2.4): the backend trait,
//! the key rules, and the built-in in-memory store. The embedder's own
//! backend over C is `src/ffi/kv.rs`.

pub mod memory;

use unicode_normalization::{is_nfc_quick, IsNormalized, UnicodeNormalization};

/// Longest key (and prefix), in bytes.
pub const MAX_KEY_BYTES: usize = 256;
/// Largest value.
pub const MAX_VALUE_BYTES: usize = 1 << 20;
/// Most keys one listing returns (`kv-list-keys`, one page).
pub const MAX_LIST_KEYS: usize = 1024;
/// Default byte budget of one namespace (keys plus values plus 96 bytes per
/// entry) in the built-in store.
pub const DEFAULT_QUOTA_BYTES: u64 = 64 << 20;

/// Whose keys: one namespace per (data scope, capsule id).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Namespace {
    /// The data scope: the call's principal, else the owner, else `system`.
    pub scope: String,
    pub capsule_id: String,
}

/// Why a backend operation failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KvError {
    TooLarge,
    Quota,
    CasMismatch,
    /// The backend failed; the text is generic (shown to the guest).
    Backend(String),
}

/// A storage backend. Every method is called with validated keys and
/// values; `cas` must be atomic per key.
pub trait KvStore: Send + Sync {
    /// True for embedder callbacks, which run under the callback deadline
    /// (and off the guest's thread unless callbacks are inline).
    fn is_callback(&self) -> bool {
        false
    }
    fn get(&self, ns: &Namespace, key: &str) -> Result<Option<Vec<u8>>, KvError>;
    fn set(&self, ns: &Namespace, key: &str, value: &[u8]) -> Result<(), KvError>;
    fn delete(&self, ns: &Namespace, key: &str) -> Result<(), KvError>;
    /// Keys starting with `prefix` that sort (bytewise) after `after`, in
    /// order, at most `limit`.
    fn list(
        &self,
        ns: &Namespace,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<String>, KvError>;
    /// Removes every key starting with `prefix`; returns how many.
    fn clear_prefix(&self, ns: &Namespace, prefix: &str) -> Result<u64, KvError>;
    /// Stores `new` when the current value equals `expected` (`None`: absent).
    fn cas(
        &self,
        ns: &Namespace,
        key: &str,
        expected: Option<&[u8]>,
        new: &[u8],
    ) -> Result<(), KvError>;
    /// Bytes a capsule's namespaces hold (keys, values and bookkeeping, as
    /// the quota counts them), for the usage figures; `None` when the store
    /// cannot tell (an embedder backend).
    fn usage_bytes(&self, capsule_id: &str) -> Option<u64> {
        let _ = capsule_id;
        None
    }
}

/// Why a key or prefix breaks the rules.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyProblem {
    Empty,
    TooLong,
    Control,
    NotNfc,
}

/// Checks a key (or, with `prefix`, a prefix, which may be empty).
pub fn validate_key(key: &str, prefix: bool) -> Result<(), KeyProblem> {
    if key.is_empty() && !prefix {
        return Err(KeyProblem::Empty);
    }
    if key.len() > MAX_KEY_BYTES {
        return Err(KeyProblem::TooLong);
    }
    if key.chars().any(char::is_control) {
        return Err(KeyProblem::Control);
    }
    let nfc = match is_nfc_quick(key.chars()) {
        IsNormalized::Yes => true,
        IsNormalized::No => false,
        IsNormalized::Maybe => key.nfc().eq(key.chars()),
    };
    if !nfc {
        return Err(KeyProblem::NotNfc);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_rules() {
        assert!(validate_key("user.42/profile", false).is_ok());
        assert!(validate_key("caf\u{e9}", false).is_ok());
        assert_eq!(validate_key("cafe\u{301}", false), Err(KeyProblem::NotNfc));
        assert_eq!(validate_key("", false), Err(KeyProblem::Empty));
        assert!(validate_key("", true).is_ok());
        assert_eq!(validate_key("a\0b", false), Err(KeyProblem::Control));
        assert_eq!(validate_key("a\nb", false), Err(KeyProblem::Control));
        assert_eq!(validate_key("a\u{85}", false), Err(KeyProblem::Control));
        assert!(validate_key(&"k".repeat(256), false).is_ok());
        assert_eq!(
            validate_key(&"k".repeat(257), false),
            Err(KeyProblem::TooLong)
        );
        assert_eq!(
            validate_key(&"é".repeat(129), true),
            Err(KeyProblem::TooLong)
        );
    }
}
