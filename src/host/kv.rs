//! `astrid:kv@1.0.0` (host ABI §2.4): the capsule's own namespace in the
//! runtime's KV backend. Not gated (it touches nothing but the capsule's
//! namespace); every call audited with the key or prefix as its target.

use crate::handoff::Bounded;
use crate::host::audit::audit_cases;
use crate::host::audit::Audited;
use crate::host::call::CallContext;
use crate::host::shared::CapsuleShared;
use crate::host::view::{host_view, HostView};
use crate::kv::{self, KvError, KvStore, Namespace};
use std::sync::Arc;
use wasmtime::component::Linker;

mod bindings {
    wasmtime::component::bindgen!({
        inline: "package astrid-runtime:kv; world imports { import astrid:kv/host@1.0.0; }",
        path: ["wit/astrid-kv@1.0.0"],
        world: "imports",
    });
}

use bindings::astrid::kv::host::{self, ErrorCode, KeyPage};

/// What `astrid:kv` sees of a store: the capsule and the call (the
/// namespace follows from them).
pub(crate) struct KvView<'a> {
    pub(crate) capsule: &'a Arc<CapsuleShared>,
    pub(crate) call: &'a CallContext,
}

host_view!(KvView, KvData);

pub(crate) fn add_to_linker<T: 'static>(
    linker: &mut Linker<T>,
    view: fn(&mut T) -> KvView<'_>,
) -> wasmtime::Result<()> {
    host::add_to_linker::<T, KvData>(linker, view)
}

audit_cases! {
    ErrorCode {
        ErrorCode::InvalidKey => "invalid-key",
        ErrorCode::TooLarge => "too-large",
        ErrorCode::Quota => "quota",
        ErrorCode::CasMismatch => "cas-mismatch",
    }
    unknown: ErrorCode::Unknown,
    denials: []
}

impl From<KvError> for ErrorCode {
    fn from(e: KvError) -> Self {
        match e {
            KvError::TooLarge => ErrorCode::TooLarge,
            KvError::Quota => ErrorCode::Quota,
            KvError::CasMismatch => ErrorCode::CasMismatch,
            KvError::Backend(text) => ErrorCode::Unknown(text),
        }
    }
}

fn check_value(value: &[u8]) -> Result<(), ErrorCode> {
    if value.len() > kv::MAX_VALUE_BYTES {
        return Err(ErrorCode::TooLarge);
    }
    Ok(())
}

impl KvView<'_> {
    /// Cancellation first (host ABI §1), then the key rules.
    fn valid_key(&self, key: &str, prefix: bool) -> Result<(), ErrorCode> {
        if self.call.token.is_cancelled() {
            return Err(ErrorCode::Unknown("cancelled".into()));
        }
        kv::validate_key(key, prefix).map_err(|_| ErrorCode::InvalidKey)
    }

    /// The namespace of the current data scope.
    fn kv_namespace(&self) -> Namespace {
        Namespace {
            scope: self.ctx().data_scope().to_string(),
            capsule_id: self.capsule.id.clone(),
        }
    }

    /// Runs one backend operation for the current call: cancel check first,
    /// then the built-in store inline, or an embedder backend under the
    /// callback deadline and the call's cancel token.
    fn kv_call<R: Send + 'static>(
        &self,
        op: impl FnOnce(&dyn KvStore, &Namespace) -> Result<R, KvError> + Send + 'static,
    ) -> Result<R, ErrorCode> {
        let cancelled = || ErrorCode::Unknown("cancelled".into());
        if self.call.token.is_cancelled() {
            return Err(cancelled());
        }
        let store = self.capsule.services.kv_store();
        let ns = self.kv_namespace();
        if !store.is_callback() {
            return op(&*store, &ns).map_err(Into::into);
        }
        match self.ctx().backend_call(false, move || op(&*store, &ns)) {
            Bounded::Done(result) => result.map_err(Into::into),
            Bounded::Panicked => Err(ErrorCode::Unknown("storage failed".into())),
            Bounded::Overran => Err(ErrorCode::Unknown("timeout".into())),
            Bounded::Cancelled => Err(cancelled()),
        }
    }

    fn list_page(
        &self,
        prefix: &str,
        cursor: Option<String>,
        limit: usize,
    ) -> Result<KeyPage, ErrorCode> {
        let prefix_owned = prefix.to_string();
        // One more than asked tells whether another page follows.
        let mut keys = self.kv_call(move |store, ns| {
            store.list(ns, &prefix_owned, cursor.as_deref(), limit + 1)
        })?;
        let more = keys.len() > limit;
        keys.truncate(limit);
        let next_cursor = if more { keys.last().cloned() } else { None };
        Ok(KeyPage { keys, next_cursor })
    }
}

impl host::Host for KvView<'_> {
    fn kv_get(&mut self, key: String) -> Result<Option<Vec<u8>>, ErrorCode> {
        self.audited("kv.kv-get", Some(&key), 0, |state| {
            state.valid_key(&key, false)?;
            let owned = key.clone();
            let value = state.kv_call(move |store, ns| store.get(ns, &owned))?;
            Ok(value)
        })
    }

    fn kv_set(&mut self, key: String, value: Vec<u8>) -> Result<(), ErrorCode> {
        let bytes = value.len() as u64;
        self.audited("kv.kv-set", Some(&key), bytes, |state| {
            state.valid_key(&key, false)?;
            check_value(&value)?;
            let owned = key.clone();
            state.kv_call(move |store, ns| store.set(ns, &owned, &value))
        })
    }

    fn kv_delete(&mut self, key: String) -> Result<(), ErrorCode> {
        self.audited("kv.kv-delete", Some(&key), 0, |state| {
            state.valid_key(&key, false)?;
            let owned = key.clone();
            state.kv_call(move |store, ns| store.delete(ns, &owned))
        })
    }

    fn kv_list_keys(&mut self, prefix: String) -> Result<Vec<String>, ErrorCode> {
        self.audited("kv.kv-list-keys", Some(&prefix), 0, |state| {
            state.valid_key(&prefix, true)?;
            let page = state.list_page(&prefix, None, kv::MAX_LIST_KEYS)?;
            if page.next_cursor.is_some() {
                return Err(ErrorCode::TooLarge);
            }
            Ok(page.keys)
        })
    }

    fn kv_list_keys_page(
        &mut self,
        prefix: String,
        cursor: Option<String>,
        limit: u32,
    ) -> Result<KeyPage, ErrorCode> {
        self.audited("kv.kv-list-keys-page", Some(&prefix), 0, |state| {
            state.valid_key(&prefix, true)?;
            if let Some(cursor) = &cursor {
                state.valid_key(cursor, false)?;
            }
            let limit = match limit as usize {
                0 => kv::MAX_LIST_KEYS,
                n => n.min(kv::MAX_LIST_KEYS),
            };
            state.list_page(&prefix, cursor, limit)
        })
    }

    fn kv_clear_prefix(&mut self, prefix: String) -> Result<u64, ErrorCode> {
        self.audited("kv.kv-clear-prefix", Some(&prefix), 0, |state| {
            state.valid_key(&prefix, true)?;
            let owned = prefix.clone();
            state.kv_call(move |store, ns| store.clear_prefix(ns, &owned))
        })
    }

    fn kv_cas(
        &mut self,
        key: String,
        expected: Option<Vec<u8>>,
        new: Vec<u8>,
    ) -> Result<(), ErrorCode> {
        let bytes = (new.len() + expected.as_ref().map_or(0, Vec::len)) as u64;
        self.audited("kv.kv-cas", Some(&key), bytes, |state| {
            state.valid_key(&key, false)?;
            check_value(&new)?;
            if let Some(expected) = &expected {
                check_value(expected)?;
            }
            let owned = key.clone();
            state.kv_call(move |store, ns| store.cas(ns, &owned, expected.as_deref(), &new))
        })
    }
}

/// The built-in store for a runtime whose config names `quota` bytes per namespace.
pub fn default_store(quota: u64) -> Arc<dyn KvStore> {
    Arc::new(kv::memory::MemoryKv::new(quota))
}
