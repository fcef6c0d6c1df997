//! VFS path spelling (host ABI §5.1) and manifest path grants (§4).
//!
//! A guest path names a mount (`cwd`, `home`, `tmp`) and a list of
//! normalised components. Lexical rules run before any provider is touched.

pub const MAX_PATH_BYTES: usize = 4096;
/// Components a path may have, as spelled and once resolved: each provider
/// operation walks them one by one, and resolution stats every prefix, so
/// the depth bounds the work one host call can cause.
pub const MAX_COMPONENTS: usize = 256;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Mount {
    Cwd,
    Home,
    Tmp,
}

impl Mount {
    pub fn scheme(self) -> &'static str {
        match self {
            Mount::Cwd => "cwd",
            Mount::Home => "home",
            Mount::Tmp => "tmp",
        }
    }
}

/// A resolved, lexically normalised VFS path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VfsPath {
    pub mount: Mount,
    pub components: Vec<String>,
}

impl VfsPath {
    /// The canonical spelling, `cwd://a/b`.
    pub fn spelling(&self) -> String {
        format!("{}://{}", self.mount.scheme(), self.components.join("/"))
    }

    pub fn is_root(&self) -> bool {
        self.components.is_empty()
    }
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    #[error("is longer than 4096 bytes")]
    TooLong,
    #[error("has more than 256 components")]
    TooDeep,
    #[error("contains a NUL byte")]
    Nul,
    #[error("contains a `..` component")]
    ParentComponent,
    #[error("uses a Windows drive, UNC prefix or backslash")]
    WindowsPrefix,
    #[error("uses an unknown scheme")]
    UnknownScheme,
    /// A percent-encoded `..` or separator: never decoded by astrid, but
    /// refused so no provider that decodes names can be walked out.
    #[error("contains a percent-encoded `..` or separator")]
    EncodedTraversal,
}

fn split_scheme(text: &str) -> Result<(Mount, &str), PathError> {
    if let Some((scheme, rest)) = text.split_once("://") {
        let mount = match scheme {
            "cwd" | "workspace" => Mount::Cwd,
            "home" => Mount::Home,
            "tmp" => Mount::Tmp,
            _ => return Err(PathError::UnknownScheme),
        };
        return Ok((mount, rest));
    }
    if text == "/tmp" {
        return Ok((Mount::Tmp, ""));
    }
    if let Some(rest) = text.strip_prefix("/tmp/") {
        return Ok((Mount::Tmp, rest));
    }
    Ok((Mount::Cwd, text))
}

fn has_windows_prefix(text: &str) -> bool {
    let bytes = text.as_bytes();
    text.contains('\\') || (bytes.len() >= 2 && bytes[0].is_ascii_alphabetic() && bytes[1] == b':')
}

/// Whether a component percent-decodes to `..` or holds an encoded `/` or `\\`.
fn is_encoded_traversal(component: &str) -> bool {
    let lower = component.to_ascii_lowercase();
    if lower.contains("%2f") || lower.contains("%5c") {
        return true;
    }
    lower.replace("%2e", ".") == ".."
}

/// Parses a guest path: scheme → mount, then the lexical rules of §5.1.
pub fn parse(text: &str) -> Result<VfsPath, PathError> {
    if text.len() > MAX_PATH_BYTES {
        return Err(PathError::TooLong);
    }
    if text.contains('\0') {
        return Err(PathError::Nul);
    }
    if has_windows_prefix(text) {
        return Err(PathError::WindowsPrefix);
    }
    let (mount, rest) = split_scheme(text)?;
    let mut components = Vec::new();
    for part in rest.split('/') {
        match part {
            "" | "." => {}
            ".." => return Err(PathError::ParentComponent),
            other if other.contains('%') && is_encoded_traversal(other) => {
                return Err(PathError::EncodedTraversal)
            }
            other => components.push(other.to_string()),
        }
        if components.len() > MAX_COMPONENTS {
            return Err(PathError::TooDeep);
        }
    }
    Ok(VfsPath { mount, components })
}

/// One component of a manifest grant.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum GrantComponent {
    /// `*`: exactly one path component.
    Any,
    Literal(String),
}

/// A parsed `fs_read` / `fs_write` entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PathGrant {
    pub mount: Mount,
    pub components: Vec<GrantComponent>,
}

impl PathGrant {
    /// Parses a manifest entry. `*` alone is the whole workspace mount.
    pub fn parse(entry: &str) -> Result<PathGrant, PathError> {
        if entry == "*" {
            return Ok(PathGrant {
                mount: Mount::Cwd,
                components: Vec::new(),
            });
        }
        let path = parse(entry)?;
        let components = path
            .components
            .into_iter()
            .map(|c| {
                if c == "*" {
                    GrantComponent::Any
                } else {
                    GrantComponent::Literal(c)
                }
            })
            .collect();
        Ok(PathGrant {
            mount: path.mount,
            components,
        })
    }

    /// True when the grant's components are a component-wise prefix of the
    /// (canonical) path on the same mount.
    pub fn covers(&self, path: &VfsPath) -> bool {
        self.mount == path.mount
            && self.components.len() <= path.components.len()
            && self
                .components
                .iter()
                .zip(&path.components)
                .all(|(g, c)| match g {
                    GrantComponent::Any => true,
                    GrantComponent::Literal(l) => l == c,
                })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schemes_and_normalisation() {
        let p = parse("cwd://a//./b/").unwrap();
        assert_eq!(p.spelling(), "cwd://a/b");
        assert_eq!(parse("workspace://x").unwrap().spelling(), "cwd://x");
        assert_eq!(parse("/tmp").unwrap().spelling(), "tmp://");
        assert_eq!(parse("/tmp/x/y").unwrap().spelling(), "tmp://x/y");
        assert_eq!(parse("/etc/passwd").unwrap().spelling(), "cwd://etc/passwd");
        assert_eq!(parse("src/data").unwrap().spelling(), "cwd://src/data");
        assert_eq!(parse("home://notes").unwrap().mount, Mount::Home);
        assert!(parse("cwd://").unwrap().is_root());
    }

    #[test]
    fn lexical_refusals() {
        for bad in ["..", "a/../b", "cwd://a/..", "/tmp/..", "home://../x"] {
            assert_eq!(parse(bad), Err(PathError::ParentComponent), "{bad}");
        }
        assert_eq!(parse("a\0b"), Err(PathError::Nul));
        assert_eq!(parse("C:/Windows"), Err(PathError::WindowsPrefix));
        assert_eq!(parse("\\\\server\\share"), Err(PathError::WindowsPrefix));
        assert_eq!(parse("ftp://x"), Err(PathError::UnknownScheme));
        assert_eq!(parse(&"a/".repeat(2049)), Err(PathError::TooLong));
        // Percent-encoding is never decoded, but encoded traversal is refused.
        for bad in ["%2e%2e/x", "a/%2E./b", ".%2e", "a%2fb", "a%5C..", "%2E%2E"] {
            assert_eq!(parse(bad), Err(PathError::EncodedTraversal), "{bad}");
        }
        assert_eq!(parse("100%25/x").unwrap().components, vec!["100%25", "x"]);
    }

    #[test]
    fn grants_match_whole_components() {
        let ws = PathGrant::parse("cwd://ws").unwrap();
        assert!(ws.covers(&parse("cwd://ws").unwrap()));
        assert!(ws.covers(&parse("cwd://ws/a/b").unwrap()));
        assert!(!ws.covers(&parse("cwd://ws-evil").unwrap()));
        assert!(!ws.covers(&parse("tmp://ws").unwrap()));
        let star = PathGrant::parse("*").unwrap();
        assert!(star.covers(&parse("anything/here").unwrap()));
        assert!(!star.covers(&parse("tmp://x").unwrap()));
        let mid = PathGrant::parse("cwd://users/*/inbox").unwrap();
        assert!(mid.covers(&parse("cwd://users/ann/inbox/1").unwrap()));
        assert!(!mid.covers(&parse("cwd://users/ann/outbox").unwrap()));
        assert_eq!(
            PathGrant::parse("cwd://a/../b"),
            Err(PathError::ParentComponent)
        );
        assert!(PathGrant::parse("tmp://")
            .unwrap()
            .covers(&parse("/tmp/x").unwrap()));
    }
}
