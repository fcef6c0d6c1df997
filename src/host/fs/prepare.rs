//! Path preparation: validation, the manifest on the lexical and the
//! canonical path, and the gate questions, for every path argument of a
//! call (host ABI §4, §5.1).

use super::bindings::ErrorCode;
use super::errors::{map, path_error, resolve_refusal};
use super::targets::{PathArg, Target};
use crate::host::audit::Payload;
use crate::host::fs::FsView;
use crate::host::gated::Gated;
use crate::host::gated::{Prepared, Refused};
use crate::policy::gate::{manifest_grants, GateKind, GateRequest};
use crate::policy::paths::{self, VfsPath};
use crate::vfs;

impl FsView<'_> {
    /// Validation, manifest (lexical, then canonical) and the gate requests
    /// for every path argument of a call.
    pub(super) fn prepare_paths(
        &self,
        args: &[PathArg<'_>],
    ) -> Result<Prepared<Vec<Target>>, Refused<ErrorCode>> {
        let manifest = &self.capsule.manifest.capabilities;
        let runtime = &self.capsule.services;
        let (asking, auditing) = (runtime.has_gate(), runtime.has_audit_sink());
        let mut prepared = Prepared {
            target: String::new(),
            asks: Vec::new(),
            ctx: Vec::with_capacity(args.len()),
        };
        for arg in args {
            let path = paths::parse(arg.text).map_err(path_error)?;
            let granted = |p: &VfsPath| {
                arg.need.kinds().iter().all(|kind| match kind {
                    GateKind::FileRead => manifest_grants(&manifest.fs_read, p),
                    _ => manifest_grants(&manifest.fs_write, p),
                })
            };
            if !granted(&path) {
                return Err("not granted by the manifest".into());
            }
            let vfs = self
                .mount(path.mount)
                .ok_or_else(|| Refused::from("no home mount for this data scope"))?;
            let components = if vfs.has_symlinks() {
                let lexical = path.components.clone();
                let follow = arg.follow;
                let walked = self.vfs_call(&vfs, move |v| Ok(vfs::resolve(v, &lexical, follow)));
                match walked.map_err(|e| Refused::Failed(map(e)))? {
                    Ok(components) => components,
                    Err(failure) => {
                        return Err(resolve_refusal(failure, |reached| {
                            granted(&VfsPath {
                                mount: path.mount,
                                components: reached,
                            })
                        }))
                    }
                }
            } else {
                path.components
            };
            let canonical = VfsPath {
                mount: path.mount,
                components,
            };
            if !granted(&canonical) {
                return Err("a link leads outside the granted paths".into());
            }
            let target = Target {
                mount: canonical.mount,
                rel: vfs::join(&canonical.components),
                vfs,
            };
            // The spelling is only for the gate and the audit log: without
            // either, the hot path builds no strings.
            if asking || auditing {
                let spelling = target.spelling();
                if auditing {
                    if !prepared.target.is_empty() {
                        prepared.target.push_str(" -> ");
                    }
                    prepared.target.push_str(&spelling);
                }
                if asking {
                    let request = |kind: GateKind, path: String| {
                        GateRequest::file(
                            kind,
                            self.capsule.name.clone(),
                            self.call.principal.clone(),
                            path,
                            target.vfs.host_path(&target.rel),
                        )
                    };
                    // The last request takes the spelling itself.
                    if let Some((last, rest)) = arg.need.kinds().split_last() {
                        for kind in rest {
                            prepared.asks.push(request(*kind, spelling.clone()));
                        }
                        prepared.asks.push(request(*last, spelling));
                    }
                }
            }
            prepared.ctx.push(target);
        }
        Ok(prepared)
    }

    /// One gated fs call: `args` are checked, then `op` runs on the targets.
    pub(super) fn fs_call<T: Payload>(
        &mut self,
        call: &'static str,
        args: &[PathArg<'_>],
        bytes_in: u64,
        op: impl FnOnce(&mut Self, Vec<Target>) -> Result<T, ErrorCode>,
    ) -> Result<T, ErrorCode> {
        let fallback = args.first().map_or("", |a| a.text).to_string();
        self.gated(
            call,
            &fallback,
            bytes_in,
            |state| state.prepare_paths(args),
            op,
        )
    }
}
