//! Which optional guest exports a component really offers (host ABI §3).
//!
//! Guest SDK builds export `run`, `astrid-install` and `astrid-upgrade`
//! even when the capsule implements none of them; optimised, the three are
//! one shared empty core function. An export that lifts the same core
//! function as another of these exports is such a placeholder and counts as
//! not offered. This module follows each export to the core function it
//! lifts (through core-instance aliases into the module's export table).

use wasmparser::{
    CanonicalFunction, ComponentAlias, ComponentExternalKind, ComponentTypeRef, ExternalKind,
    Instance, Parser, Payload,
};

/// The optional exports whose placeholders are detected.
pub const OPTIONAL_EXPORTS: [&str; 3] = ["run", "astrid-install", "astrid-upgrade"];

/// Where a core function comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
enum CoreFunc {
    /// `(instance, export name)` of a core instance.
    InstanceExport(u32, String),
    Other(usize),
}

/// Where a component function comes from.
#[derive(Clone, Debug)]
enum ComponentFunc {
    Lift(u32),
    Other,
}

/// A resolved identity for a core function: (module index, function index)
/// when it is a module's export, else a unique marker.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Identity {
    Module(u32, u32),
    Opaque(usize),
}

/// The optional exports the component offers for real, by name.
pub fn offered_optional_exports(wasm: &[u8]) -> Vec<&'static str> {
    let Some(identities) = lifted_identities(wasm) else {
        return Vec::new();
    };
    OPTIONAL_EXPORTS
        .iter()
        .copied()
        .filter(|name| {
            let Some((_, mine)) = identities.iter().find(|(n, _)| n == name) else {
                return false;
            };
            !identities
                .iter()
                .any(|(other, id)| other != name && id == mine)
        })
        .collect()
}

/// Each top-level optional export with the identity of the core function
/// it lifts; `None` when the binary cannot be parsed.
fn lifted_identities(wasm: &[u8]) -> Option<Vec<(&'static str, Identity)>> {
    let mut component_funcs: Vec<ComponentFunc> = Vec::new();
    let mut core_funcs: Vec<CoreFunc> = Vec::new();
    let mut core_instances: Vec<Option<u32>> = Vec::new();
    let mut module_exports: Vec<Vec<(String, u32)>> = Vec::new();
    let mut exports: Vec<(&'static str, u32)> = Vec::new();
    // 0 = the top-level component; modules and nested components push.
    let mut depth = 0usize;
    let mut in_top_module = false;
    let mut opaque = 0usize;

    for payload in Parser::new(0).parse_all(wasm) {
        let payload = payload.ok()?;
        match payload {
            Payload::ModuleSection { .. } => {
                if depth == 0 {
                    in_top_module = true;
                    module_exports.push(Vec::new());
                }
                depth += 1;
            }
            Payload::ComponentSection { .. } => depth += 1,
            Payload::End(_) => {
                if depth == 0 {
                    break;
                }
                depth -= 1;
                if depth == 0 {
                    in_top_module = false;
                }
            }
            Payload::ExportSection(reader) if in_top_module && depth == 1 => {
                let table = module_exports.last_mut()?;
                for export in reader {
                    let export = export.ok()?;
                    if export.kind == ExternalKind::Func {
                        table.push((export.name.to_string(), export.index));
                    }
                }
            }
            _ if depth != 0 => {}
            Payload::ComponentImportSection(reader) => {
                for import in reader {
                    if matches!(import.ok()?.ty, ComponentTypeRef::Func(_)) {
                        component_funcs.push(ComponentFunc::Other);
                    }
                }
            }
            Payload::ComponentAliasSection(reader) => {
                for alias in reader {
                    match alias.ok()? {
                        ComponentAlias::InstanceExport {
                            kind: ComponentExternalKind::Func,
                            ..
                        } => component_funcs.push(ComponentFunc::Other),
                        ComponentAlias::CoreInstanceExport {
                            kind: ExternalKind::Func,
                            instance_index,
                            name,
                        } => core_funcs.push(CoreFunc::InstanceExport(instance_index, name.into())),
                        _ => {}
                    }
                }
            }
            Payload::ComponentCanonicalSection(reader) => {
                for function in reader {
                    match function.ok()? {
                        CanonicalFunction::Lift {
                            core_func_index, ..
                        } => component_funcs.push(ComponentFunc::Lift(core_func_index)),
                        _ => {
                            opaque += 1;
                            core_funcs.push(CoreFunc::Other(opaque));
                        }
                    }
                }
            }
            Payload::InstanceSection(reader) => {
                for instance in reader {
                    core_instances.push(match instance.ok()? {
                        Instance::Instantiate { module_index, .. } => Some(module_index),
                        Instance::FromExports(_) => None,
                    });
                }
            }
            Payload::ComponentExportSection(reader) => {
                for export in reader {
                    let export = export.ok()?;
                    if export.kind != ComponentExternalKind::Func {
                        continue;
                    }
                    if let Some(name) = OPTIONAL_EXPORTS.iter().find(|n| **n == export.name.name) {
                        exports.push((name, export.index));
                    }
                    // An export is a new item in the function index space.
                    let aliased = component_funcs.get(export.index as usize)?.clone();
                    component_funcs.push(aliased);
                }
            }
            _ => {}
        }
    }

    let identity = |core_func: u32| -> Identity {
        match core_funcs.get(core_func as usize) {
            Some(CoreFunc::InstanceExport(instance, name)) => {
                let module = core_instances.get(*instance as usize).copied().flatten();
                let index = module.and_then(|m| {
                    module_exports
                        .get(m as usize)?
                        .iter()
                        .find(|(n, _)| n == name)
                        .map(|(_, i)| (m, *i))
                });
                match index {
                    Some((m, i)) => Identity::Module(m, i),
                    None => Identity::Opaque(usize::MAX - core_func as usize),
                }
            }
            Some(CoreFunc::Other(n)) => Identity::Opaque(*n),
            None => Identity::Opaque(usize::MAX - core_func as usize),
        }
    };
    Some(
        exports
            .into_iter()
            .filter_map(|(name, index)| match component_funcs.get(index as usize)? {
                ComponentFunc::Lift(core) => Some((name, identity(*core))),
                ComponentFunc::Other => None,
            })
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn capsule_wasm(name: &str) -> Option<Vec<u8>> {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("build/capsules")
            .join(name);
        let file = std::fs::read_dir(dir)
            .ok()?
            .filter_map(|e| e.ok())
            .map(|e| e.path())
            .find(|p| p.extension().is_some_and(|x| x == "wasm"))?;
        std::fs::read(file).ok()
    }

    #[test]
    fn sdk_placeholders_are_not_offered() {
        let Some(wasm) = capsule_wasm("sdk-hello") else {
            panic!("build the capsules first (scripts/build-capsules.sh)");
        };
        // The SDK exports all three, as one shared empty function.
        let identities = lifted_identities(&wasm).expect("parses");
        assert_eq!(identities.len(), 3, "{identities:?}");
        assert!(offered_optional_exports(&wasm).is_empty());
    }

    #[test]
    fn garbage_offers_nothing() {
        assert!(offered_optional_exports(b"\0asm garbage").is_empty());
        assert!(offered_optional_exports(&[]).is_empty());
    }
}
