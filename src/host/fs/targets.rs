//! A path argument's way from guest text to provider call: which checks
//! it needs, and the checked target on its mount.

use crate::policy::gate::GateKind;
use crate::policy::paths::Mount;
use crate::vfs::Vfs;
use std::sync::Arc;

/// A checked path on its mount, ready for the provider.
pub(super) struct Target {
    pub(super) mount: Mount,
    pub(super) vfs: Arc<dyn Vfs>,
    /// Provider spelling: mount-relative, `/`-separated.
    pub(super) rel: String,
}

impl Target {
    pub(super) fn spelling(&self) -> String {
        let scheme = self.mount.scheme();
        let mut text = String::with_capacity(scheme.len() + 3 + self.rel.len());
        text.push_str(scheme);
        text.push_str("://");
        text.push_str(&self.rel);
        text
    }
}

/// Which checks a path needs.
#[derive(Clone, Copy)]
pub(super) struct Modes {
    pub(super) readable: bool,
    pub(super) writable: bool,
}

#[derive(Clone, Copy)]
pub(super) enum Need {
    Read,
    Write,
    ReadWrite,
}

impl Need {
    pub(super) fn kinds(self) -> &'static [GateKind] {
        match self {
            Need::Read => &[GateKind::FileRead],
            Need::Write => &[GateKind::FileWrite],
            Need::ReadWrite => &[GateKind::FileRead, GateKind::FileWrite],
        }
    }
}

/// One path argument of a call: its text, the checks it needs, and whether
/// a final symlink is followed.
pub(super) struct PathArg<'a> {
    pub(super) text: &'a str,
    pub(super) need: Need,
    pub(super) follow: bool,
}

pub(super) fn read(text: &str) -> PathArg<'_> {
    PathArg {
        text,
        need: Need::Read,
        follow: true,
    }
}

pub(super) fn write(text: &str) -> PathArg<'_> {
    PathArg {
        text,
        need: Need::Write,
        follow: true,
    }
}

impl<'a> PathArg<'a> {
    pub(super) fn no_follow(mut self) -> PathArg<'a> {
        self.follow = false;
        self
    }
}
