//! The audit trail (host ABI §1): every host call becomes an [`AuditEvent`]
//! that a dedicated thread hands to the embedder's sink, in order, without
//! holding up the guest (unless the queue is full: events are not dropped
//! while the runtime runs).

use crate::error::{Code, Error, Result};
use crate::handoff::run_callback;
use crate::signal::{MutexExt, RwLockExt};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{sync_channel, SyncSender};
use std::sync::{Arc, Mutex, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Events queued for the sink before `emit` waits.
const AUDIT_QUEUE: usize = 4096;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum Outcome {
    Allowed = 0,
    /// A policy refusal; for a bus-dispatched handler (`guest.<action>`),
    /// its `deny` answer (the reason is the answer's data).
    Denied = 1,
    Failed = 2,
    /// A bus-dispatched handler answered `continue`.
    Continue = 3,
    /// A bus-dispatched handler answered `final`.
    Final = 4,
}

/// One host call, as the audit sink sees it (host ABI §1).
#[derive(Clone, Debug)]
pub struct AuditEvent {
    pub capsule: String,
    pub capsule_id: String,
    /// The context principal `p`, `system`, or `claimed(p)`.
    pub principal: String,
    /// `interface.function`, e.g. `sys.get-config`.
    pub call: String,
    pub target: Option<String>,
    pub bytes: u64,
    pub outcome: Outcome,
    pub reason: Option<String>,
    pub elapsed_us: u64,
    /// The call the event belongs to (0: outside any call).
    pub call_id: u64,
}

pub type AuditSink = Arc<dyn Fn(&AuditEvent) + Send + Sync>;

/// The sink, the queue in front of it and the thread that drains it.
pub(crate) struct Audit {
    sink: Arc<RwLock<Option<AuditSink>>>,
    /// Whether a sink is installed: read on every host call, without a lock.
    has_sink: AtomicBool,
    tx: RwLock<Option<SyncSender<AuditEvent>>>,
    thread: Mutex<Option<JoinHandle<()>>>,
    /// Set when shutdown stops waiting for the thread: it delivers nothing
    /// more and drops the sink itself.
    abandoned: Arc<AtomicBool>,
}

impl Audit {
    /// Starts the delivery thread.
    pub(crate) fn start() -> Result<Audit> {
        let sink: Arc<RwLock<Option<AuditSink>>> = Arc::new(RwLock::new(None));
        let abandoned = Arc::new(AtomicBool::new(false));
        let (tx, rx) = sync_channel::<AuditEvent>(AUDIT_QUEUE);
        let thread = {
            let sink = sink.clone();
            let abandoned = abandoned.clone();
            std::thread::Builder::new()
                .name("astrid-audit".into())
                .spawn(move || {
                    for event in rx {
                        if abandoned.load(Ordering::SeqCst) {
                            break;
                        }
                        let current = sink.read_locked().clone();
                        if let Some(sink) = current {
                            run_callback(|| sink(&event));
                        }
                    }
                    // Left behind by shutdown: the sink's finalizer runs
                    // here, after the callback that held shutdown returned.
                    if abandoned.load(Ordering::SeqCst) {
                        drop(sink.write_locked().take());
                    }
                })
                .map_err(|e| Error::new(Code::Io, "cannot start the audit thread").caused_by(e))?
        };
        Ok(Audit {
            sink,
            has_sink: AtomicBool::new(false),
            tx: RwLock::new(Some(tx)),
            thread: Mutex::new(Some(thread)),
            abandoned,
        })
    }

    /// Installs (or with `None` removes) the sink.
    pub(crate) fn set_sink(&self, sink: Option<AuditSink>) {
        let present = sink.is_some();
        *self.sink.write_locked() = sink;
        self.has_sink.store(present, Ordering::SeqCst);
    }

    #[inline]
    pub(crate) fn has_sink(&self) -> bool {
        self.has_sink.load(Ordering::Relaxed)
    }

    /// Queues an event; waits when the queue is full (events are never
    /// dropped while the runtime runs; at shutdown, those queued behind an
    /// audit callback that outlives the unload grace are).
    pub(crate) fn emit(&self, event: AuditEvent) {
        let tx = self.tx.read_locked().clone();
        if let Some(tx) = tx {
            let _ = tx.send(event);
        }
    }

    /// Closing the channel lets the thread drain what is queued and exit.
    /// An embedder's audit callback that blocks gets `grace` of its own:
    /// after it the thread is abandoned; it starts no further delivery and
    /// drops the sink (running its finalizer) itself once the callback in
    /// flight returns.
    pub(crate) fn shut_down(&self, grace: Duration) {
        self.tx.write_locked().take();
        let thread = self.thread.locked().take();
        let ended = match thread {
            Some(t) => join_within(t, grace),
            None => true,
        };
        if ended {
            self.sink.write_locked().take();
        } else {
            self.abandoned.store(true, Ordering::SeqCst);
        }
        self.has_sink.store(false, Ordering::SeqCst);
    }
}

/// Joins `thread` if it ends within `grace` (true); otherwise leaves it
/// running, detached, so that shutdown stays bounded (false).
fn join_within(thread: JoinHandle<()>, grace: Duration) -> bool {
    let deadline = Instant::now() + grace;
    while !thread.is_finished() {
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    let _ = thread.join();
    true
}
