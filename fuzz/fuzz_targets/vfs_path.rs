//! VFS path spelling (§5.1), manifest path grants, and the symlink walk
//! (`vfs::resolve`) over a small in-memory tree with links.
//!
//! Input lines: 1) a guest path, 2) a grant entry, then tree entries:
//! `name/` a directory, `name -> target` a link, `name` a file (parents
//! are created as directories; the first spelling of a name wins).

#![no_main]

use astrid::policy::paths::{self, GrantComponent, Mount, PathError, PathGrant, VfsPath};
use astrid::vfs::{
    self, DirEntry, FileKind, OpenFlags, Stat, Vfs, VfsError, VfsResult, MAX_LINK_HOPS,
};
use libfuzzer_sys::fuzz_target;
use std::collections::BTreeMap;

fn check_components(what: &str, components: &[String]) {
    for c in components {
        assert!(
            !c.is_empty() && c != "." && c != ".." && !c.contains('/') && !c.contains('\0'),
            "{what}: bad component {c:?} in {components:?}"
        );
    }
}

fn check_parse(text: &str) -> Option<VfsPath> {
    let parsed = paths::parse(text);
    match &parsed {
        Ok(p) => {
            check_components(text, &p.components);
            assert!(!text.contains('\0') && !text.contains('\\'));
            for c in &p.components {
                let lower = c.to_ascii_lowercase();
                assert!(!lower.contains("%2f") && !lower.contains("%5c"));
                assert_ne!(lower.replace("%2e", "."), "..");
            }
            let spelling = p.spelling();
            match paths::parse(&spelling) {
                Ok(again) => {
                    assert_eq!(&again, p, "{text:?} -> {spelling:?} re-parses differently");
                    assert_eq!(again.spelling(), spelling);
                }
                // The canonical spelling of a path near the length limit can
                // be longer than the text it came from (`a` -> `cwd://a`).
                Err(PathError::TooLong) => assert!(spelling.len() > paths::MAX_PATH_BYTES),
                Err(e) => panic!("{text:?} -> {spelling:?} does not re-parse: {e}"),
            }
        }
        Err(PathError::TooLong) => assert!(text.len() > paths::MAX_PATH_BYTES),
        Err(PathError::Nul) => assert!(text.contains('\0')),
        Err(_) => {}
    }
    parsed.ok()
}

fn check_grant(entry: &str, path: Option<&VfsPath>) {
    let Ok(grant) = PathGrant::parse(entry) else {
        return;
    };
    for c in &grant.components {
        if let GrantComponent::Literal(l) = c {
            check_components(entry, std::slice::from_ref(l));
        }
    }
    // A grant covers the path spelled like it (`*` matches a literal `*`).
    if let Ok(own) = paths::parse(entry) {
        assert!(grant.covers(&own), "{entry:?} does not cover itself");
    }
    if let Some(path) = path {
        let want = grant.mount == path.mount
            && grant.components.len() <= path.components.len()
            && grant
                .components
                .iter()
                .zip(&path.components)
                .all(|(g, c)| match g {
                    GrantComponent::Any => true,
                    GrantComponent::Literal(l) => l == c,
                });
        assert_eq!(grant.covers(path), want, "{entry:?} vs {path:?}");
        // Covering is by whole components: a longer sibling name never is.
        if let Some(last) = path.components.last() {
            let mut sibling = path.clone();
            *sibling.components.last_mut().unwrap() = format!("{last}x");
            if want
                && grant.components.len() == path.components.len()
                && !matches!(grant.components.last(), Some(GrantComponent::Any))
            {
                assert!(!grant.covers(&sibling));
            }
        }
    }
}

#[derive(Clone, Debug)]
enum Node {
    Dir,
    File,
    Link(String),
}

/// A tree keyed by mount-relative path.
struct Tree(BTreeMap<String, Node>);

impl Tree {
    fn build(lines: &[&str]) -> Tree {
        let mut tree = BTreeMap::new();
        for line in lines.iter().take(24) {
            let (name, node) = match line.split_once(" -> ") {
                Some((name, target)) => (name, Node::Link(target.to_string())),
                None => match line.strip_suffix('/') {
                    Some(name) => (name, Node::Dir),
                    None => (*line, Node::File),
                },
            };
            let parts: Vec<&str> = name
                .split('/')
                .filter(|p| !p.is_empty() && *p != "." && *p != "..")
                .collect();
            let bad_target = matches!(&node, Node::Link(t) if t.contains('\0'));
            if parts.is_empty() || bad_target || parts.iter().any(|p| p.contains('\0')) {
                continue;
            }
            let mut at = String::new();
            let mut blocked = false;
            for (i, part) in parts.iter().enumerate() {
                if !at.is_empty() {
                    at.push('/');
                }
                at.push_str(part);
                let last = i + 1 == parts.len();
                match tree.get(&at) {
                    None if last => {
                        tree.insert(at.clone(), node.clone());
                    }
                    None => {
                        tree.insert(at.clone(), Node::Dir);
                    }
                    Some(Node::Dir) => {}
                    Some(_) => {
                        blocked = !last;
                        break;
                    }
                }
            }
            let _ = blocked;
        }
        Tree(tree)
    }

    /// Looks a provider path up. The walk hands providers only paths whose
    /// parents it has resolved, so a link or file in the middle is an error.
    fn lookup(&self, path: &str) -> VfsResult<Option<&Node>> {
        if path.is_empty() {
            return Ok(Some(&Node::Dir));
        }
        let parts: Vec<&str> = path.split('/').collect();
        check_components(
            path,
            &parts.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
        );
        let mut at = String::new();
        for (i, part) in parts.iter().enumerate() {
            if i > 0 {
                at.push('/');
            }
            at.push_str(part);
            let node = self.0.get(&at);
            if i + 1 == parts.len() {
                return Ok(node);
            }
            match node {
                None => return Err(VfsError::NotFound),
                Some(Node::Dir) => {}
                Some(Node::File) => return Err(VfsError::NotDirectory),
                Some(Node::Link(_)) => {
                    panic!("provider asked for {path:?}, which passes through link {at:?}")
                }
            }
        }
        unreachable!()
    }

    fn kind(&self, path: &str) -> VfsResult<FileKind> {
        match self.lookup(path)? {
            None => Err(VfsError::NotFound),
            Some(Node::Dir) => Ok(FileKind::Directory),
            Some(Node::File) => Ok(FileKind::Regular),
            Some(Node::Link(_)) => Ok(FileKind::Symlink),
        }
    }
}

impl Vfs for Tree {
    fn stat(&self, path: &str, follow: bool) -> VfsResult<Stat> {
        assert!(!follow, "the walk inspects links itself");
        Ok(Stat {
            size: 0,
            kind: self.kind(path)?,
            mode: 0,
            modified: None,
            created: None,
            accessed: None,
        })
    }
    fn open(&self, _: &str, _: OpenFlags) -> VfsResult<u64> {
        Err(VfsError::NotSupported)
    }
    fn read_at(&self, _: u64, _: u64, _: usize, _: &mut Vec<u8>) -> VfsResult<()> {
        Err(VfsError::Closed)
    }
    fn write_at(&self, _: u64, _: u64, _: &[u8]) -> VfsResult<usize> {
        Err(VfsError::Closed)
    }
    fn sync(&self, _: u64, _: bool) -> VfsResult<()> {
        Err(VfsError::Closed)
    }
    fn set_len(&self, _: u64, _: u64) -> VfsResult<()> {
        Err(VfsError::Closed)
    }
    fn fstat(&self, _: u64) -> VfsResult<Stat> {
        Err(VfsError::Closed)
    }
    fn close(&self, _: u64) {}
    fn read_dir(&self, _: &str, _: &mut dyn FnMut(DirEntry) -> bool) -> VfsResult<()> {
        Err(VfsError::NotSupported)
    }
    fn mkdir(&self, _: &str) -> VfsResult<()> {
        Err(VfsError::NotSupported)
    }
    fn remove_file(&self, _: &str) -> VfsResult<()> {
        Err(VfsError::NotSupported)
    }
    fn remove_dir(&self, _: &str) -> VfsResult<()> {
        Err(VfsError::NotSupported)
    }
    fn rename(&self, _: &str, _: &str) -> VfsResult<()> {
        Err(VfsError::NotSupported)
    }
    fn hard_link(&self, _: &str, _: &str) -> VfsResult<()> {
        Err(VfsError::NotSupported)
    }
    fn read_link(&self, path: &str) -> VfsResult<String> {
        match self.lookup(path)? {
            Some(Node::Link(target)) => Ok(target.clone()),
            Some(_) => Err(VfsError::InvalidPath),
            None => Err(VfsError::NotFound),
        }
    }
    fn has_symlinks(&self) -> bool {
        true
    }
}

fn check_resolve(tree: &Tree, path: &VfsPath, follow_last: bool) {
    let result = vfs::resolve(tree, &path.components, follow_last);
    let resolved = match result {
        Ok(resolved) => resolved,
        Err(failure) => {
            assert!(
                matches!(
                    failure.error,
                    VfsError::BoundaryEscape
                        | VfsError::NotFound
                        | VfsError::NotDirectory
                        | VfsError::InvalidPath
                ),
                "{failure:?}"
            );
            // Where the walk stopped is a normalised path too, and before any
            // link was followed it is a prefix of what the guest spelled.
            check_components("reached", &failure.reached);
            if !failure.via_link {
                assert!(
                    path.components.starts_with(&failure.reached),
                    "{failure:?} is not on {path:?}"
                );
            }
            return;
        }
    };
    check_components("resolved", &resolved);
    // Every parent on the way exists as a directory, or is missing and so is
    // everything under it; the last component is no link when followed.
    let mut missing = false;
    for i in 1..=resolved.len() {
        let prefix = vfs::join(&resolved[..i]);
        let last = i == resolved.len();
        match tree.kind(&prefix) {
            Err(VfsError::NotFound) => missing = true,
            Ok(kind) => {
                assert!(!missing, "{prefix:?} exists under a missing parent");
                if !last {
                    // Without following, the last component is never
                    // looked at, so its parent may be a file: the operation
                    // on it fails at the provider.
                    let unchecked = !follow_last && i + 1 == resolved.len();
                    assert!(
                        kind == FileKind::Directory || (unchecked && kind != FileKind::Symlink),
                        "parent {prefix:?} of {resolved:?} is {kind:?}"
                    );
                    if kind != FileKind::Directory {
                        break;
                    }
                } else if follow_last {
                    assert_ne!(kind, FileKind::Symlink, "{resolved:?} ends in a link");
                }
            }
            Err(e) => panic!("{prefix:?} of a resolved path: {e:?}"),
        }
    }
    // Resolving the result again changes nothing.
    assert_eq!(
        vfs::resolve(tree, &resolved, follow_last),
        Ok(resolved.clone()),
        "resolve is not idempotent on {path:?}"
    );
    // Without links, resolution is the identity.
    if !path.components.iter().enumerate().any(|(i, _)| {
        matches!(
            tree.0.get(&vfs::join(&path.components[..=i])),
            Some(Node::Link(_))
        )
    }) {
        assert_eq!(resolved, path.components);
    }
    let _ = MAX_LINK_HOPS;
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let lines: Vec<&str> = text.split('\n').collect();
    let path = check_parse(lines[0]);
    let grant = lines.get(1).copied().unwrap_or(lines[0]);
    check_parse(grant);
    check_grant(grant, path.as_ref());
    if let Some(path) = path {
        if path.mount == Mount::Cwd || lines.len() > 2 {
            let tree = Tree::build(lines.get(2..).unwrap_or(&[]));
            check_resolve(&tree, &path, true);
            check_resolve(&tree, &path, false);
        }
    }
});
