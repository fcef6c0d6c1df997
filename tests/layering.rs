//! The crate's modules form layers (docs/architecture.md): a module may use
//! the modules below it, never one above. This test reads every file under
//! `src/` and checks each `crate::…` path against that order, so an upward
//! import (and with it any import cycle between modules) fails the build's
//! tests, naming the file, the line and the module it reached for.
//!
//! Test modules inside a file (`#[cfg(test)] mod …`) are exempt: a unit test
//! may build a whole runtime to exercise the layer it tests.

use std::path::{Path, PathBuf};

/// Every top-level module of `src/`, lowest layer first. A module may use
/// itself and anything listed before it.
const LAYERS: &[&str] = &[
    "error", "signal", "usage", "policy", "exports", "cancel", "wait", "handoff", "kv", "vfs",
    "manifest", "engine", "runloop", "gate", "bus", "config", "services", "host", "capsule",
    "dispatch", "runtime", "fuzzing", "ffi",
];

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The top-level module a file belongs to (`src/host/fs/calls.rs` → `host`).
fn module_of(src: &Path, file: &Path) -> String {
    let rel = file.strip_prefix(src).unwrap();
    let first = rel
        .components()
        .next()
        .unwrap()
        .as_os_str()
        .to_string_lossy();
    first.trim_end_matches(".rs").to_string()
}

/// The file's text without its test modules.
fn production_code(text: &str) -> &str {
    let mut end = text.len();
    let mut from = 0;
    while let Some(at) = text[from..].find("#[cfg(test)]") {
        let at = from + at;
        let rest = text[at + "#[cfg(test)]".len()..].trim_start();
        if rest.starts_with("mod ") {
            end = at;
            break;
        }
        from = at + 1;
    }
    &text[..end]
}

/// `(line, module)` for every `crate::module` path in `code`, including the
/// members of grouped imports (`use crate::{a, b::c}`).
fn crate_paths(code: &str) -> Vec<(usize, String)> {
    let mut found = Vec::new();
    for (index, line) in code.lines().enumerate() {
        let line_no = index + 1;
        let trimmed = line.trim_start();
        if trimmed.starts_with("//") {
            continue;
        }
        let mut rest = line;
        while let Some(at) = rest.find("crate::") {
            let after = &rest[at + "crate::".len()..];
            if let Some(group) = after.strip_prefix('{') {
                let inner = &group[..group.find('}').unwrap_or(group.len())];
                for item in inner.split(',') {
                    let name: String = item
                        .trim()
                        .chars()
                        .take_while(|c| c.is_alphanumeric() || *c == '_')
                        .collect();
                    if !name.is_empty() {
                        found.push((line_no, name));
                    }
                }
            } else {
                let name: String = after
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect();
                if !name.is_empty() {
                    found.push((line_no, name));
                }
            }
            rest = after;
        }
    }
    found
}

#[test]
fn every_module_uses_only_the_layers_below_it() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    files.sort();
    let rank = |name: &str| LAYERS.iter().position(|m| *m == name);
    let mut problems = Vec::new();
    for file in &files {
        let module = module_of(&src, file);
        if module == "lib" {
            continue; // the crate root declares and re-exports every module
        }
        let Some(own) = rank(&module) else {
            problems.push(format!(
                "{}: module `{module}` has no place in LAYERS",
                file.display()
            ));
            continue;
        };
        let text = std::fs::read_to_string(file).unwrap();
        for (line, target) in crate_paths(production_code(&text)) {
            match rank(&target) {
                Some(theirs) if theirs <= own => {}
                Some(_) => problems.push(format!(
                    "{}:{line}: `{module}` uses `{target}`, a layer above it",
                    file.display()
                )),
                // Names the crate root re-exports (`crate::Code`): use the
                // defining module, so the dependency shows.
                None => problems.push(format!(
                    "{}:{line}: `crate::{target}` goes through the crate root; name its module",
                    file.display()
                )),
            }
        }
    }
    assert!(
        problems.is_empty(),
        "layering broken:\n{}",
        problems.join("\n")
    );
}

#[test]
fn the_layer_list_names_every_module_once() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut modules: Vec<String> = std::fs::read_dir(&src)
        .unwrap()
        .map(|e| {
            e.unwrap()
                .file_name()
                .to_string_lossy()
                .trim_end_matches(".rs")
                .to_string()
        })
        .filter(|m| m != "lib")
        .collect();
    modules.sort();
    let mut listed: Vec<String> = LAYERS.iter().map(|m| m.to_string()).collect();
    listed.sort();
    assert_eq!(modules, listed);
}

#[test]
fn the_checker_sees_grouped_and_inline_paths() {
    let code = "use crate::{bus::Bus, error};\nfn f() { crate::host::x(); }\n// crate::ffi\n";
    let found = crate_paths(code);
    assert_eq!(
        found,
        vec![
            (1, "bus".to_string()),
            (1, "error".to_string()),
            (2, "host".to_string())
        ]
    );
    let with_tests = "use crate::bus;\n#[cfg(test)]\nmod tests { use crate::runtime; }\n";
    assert!(!production_code(with_tests).contains("runtime"));
}
