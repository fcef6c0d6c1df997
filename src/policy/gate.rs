//! What the embedder's gate is asked (c-api §4, host ABI §4) and the rule
//! that puts the manifest above it: a request the manifest does not grant
//! is denied without asking; a granted one is decided by the gate, or
//! allowed when no gate is installed.

use super::net::NetHost;
use super::paths::{PathGrant, VfsPath};
use std::path::PathBuf;
use std::sync::Arc;

/// Kinds of check (values shared with `ASTRID_GATE_*`; append only).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum GateKind {
    FileRead = 1,
    FileWrite = 2,
    HttpRequest = 3,
    NetConnect = 4,
    NetBind = 5,
    DnsLookup = 6,
}

impl GateKind {
    pub fn name(self) -> &'static str {
        match self {
            GateKind::FileRead => "file-read",
            GateKind::FileWrite => "file-write",
            GateKind::HttpRequest => "http-request",
            GateKind::NetConnect => "net-connect",
            GateKind::NetBind => "net-bind",
            GateKind::DnsLookup => "dns-lookup",
        }
    }
}

/// One check, as the gate sees it. Fields a kind does not use are empty.
#[derive(Clone, Debug)]
pub struct GateRequest {
    pub kind: GateKind,
    pub capsule: Arc<str>,
    pub principal: Option<Arc<str>>,
    /// VFS spelling (`cwd://a/b`) for file kinds.
    pub path: Option<String>,
    /// The resolved host path, for host-directory mounts only.
    pub host_path: Option<PathBuf>,
    pub method: Option<String>,
    /// For `http-request`: without userinfo, host canonical.
    pub url: Option<String>,
    /// Canonical spelling ([`NetHost`]): dotted-quad IPv4, RFC 5952 IPv6
    /// without brackets, or a lowercase name without trailing dot.
    pub host: Option<String>,
    pub port: u16,
    /// Transport for socket kinds (`tcp`, `udp`, `unix`).
    pub transport: Option<&'static str>,
    /// The guest call asking (0 when the request is made outside one).
    pub call_id: u64,
}

impl GateRequest {
    pub fn file(
        kind: GateKind,
        capsule: Arc<str>,
        principal: Option<Arc<str>>,
        path: String,
        host_path: Option<PathBuf>,
    ) -> GateRequest {
        GateRequest {
            kind,
            capsule,
            principal,
            path: Some(path),
            host_path,
            method: None,
            url: None,
            host: None,
            port: 0,
            transport: None,
            call_id: 0,
        }
    }
}

impl GateRequest {
    /// A socket check (`net-connect`, `net-bind`, `dns-lookup`).
    pub fn socket(
        kind: GateKind,
        capsule: Arc<str>,
        principal: Option<Arc<str>>,
        transport: Option<&'static str>,
        host: &str,
        port: u16,
    ) -> GateRequest {
        GateRequest {
            kind,
            capsule,
            principal,
            path: None,
            host_path: None,
            method: None,
            url: None,
            host: Some(host.to_string()),
            port,
            transport,
            call_id: 0,
        }
    }

    /// An `http-request` check for one hop; `host` is the URL's host in
    /// its canonical spelling (IPv6 without brackets).
    pub fn http(
        capsule: Arc<str>,
        principal: Option<Arc<str>>,
        method: &str,
        url: &url::Url,
        host: &NetHost,
    ) -> GateRequest {
        GateRequest {
            kind: GateKind::HttpRequest,
            capsule,
            principal,
            path: None,
            host_path: None,
            method: Some(method.to_string()),
            url: Some(url.to_string()),
            host: Some(host.to_string()),
            port: url.port_or_known_default().unwrap_or(0),
            transport: None,
            call_id: 0,
        }
    }
}

/// What the gate answered, with the reason it gave (audit only).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verdict {
    pub allowed: bool,
    pub reason: Option<String>,
}

impl Verdict {
    pub fn allow() -> Verdict {
        Verdict {
            allowed: true,
            reason: None,
        }
    }

    pub fn deny(reason: impl Into<String>) -> Verdict {
        Verdict {
            allowed: false,
            reason: Some(reason.into()),
        }
    }
}

/// Whether any `fs_read` / `fs_write` grant covers `path`.
pub fn manifest_grants(grants: &[PathGrant], path: &VfsPath) -> bool {
    grants.iter().any(|grant| grant.covers(path))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::paths::parse;

    #[test]
    fn undeclared_paths_are_never_granted() {
        let grants = vec![
            PathGrant::parse("cwd://data").unwrap(),
            PathGrant::parse("tmp://").unwrap(),
        ];
        assert!(manifest_grants(&grants, &parse("data/x").unwrap()));
        assert!(manifest_grants(&grants, &parse("/tmp/anything").unwrap()));
        assert!(!manifest_grants(&grants, &parse("database").unwrap()));
        assert!(!manifest_grants(&grants, &parse("home://data").unwrap()));
        assert!(!manifest_grants(&[], &parse("data").unwrap()));
    }
}
