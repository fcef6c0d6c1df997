//! The thread that drives a run loop (host ABI §3, §7.2).

use super::pool::CapsuleInner;
use crate::error::{Code, Error, Result};
use crate::runloop::RunState;
use crate::services::LogLevel;
use std::sync::Arc;
use std::time::Duration;

/// Starts the loop's thread. The store is built on it, so a failing
/// instantiation shows up as a failed loop, not a hung load.
pub(crate) fn start(capsule: &Arc<CapsuleInner>, watchdog: Option<Duration>) -> Result<()> {
    let run = capsule
        .shared
        .run_loop
        .clone()
        .ok_or_else(|| Error::new(Code::Internal, "not a run-loop capsule"))?;
    let worker = capsule.clone();
    let name = format!("astrid-run-{}", capsule.shared.name);
    std::thread::Builder::new()
        .name(name)
        .spawn(move || {
            let outcome = worker.factory.drive_run_loop(watchdog);
            let unloading = worker.shared.unload_token.is_cancelled();
            match outcome {
                _ if unloading => run.set(RunState::Stopped),
                Ok(()) => {
                    let error = Error::new(Code::Trap, "`run` returned; run loops must not return");
                    worker.shared.log(LogLevel::Error, None, error.message());
                    run.set(RunState::Failed(error));
                }
                Err(error) => {
                    worker.shared.log(
                        LogLevel::Error,
                        None,
                        &format!("the run loop failed and will not be restarted: {error}"),
                    );
                    run.set(RunState::Failed(error));
                }
            }
            run.mark_finished();
        })
        .map(drop)
        .map_err(|e| Error::new(Code::Io, "cannot start the run loop's thread").caused_by(e))
}
