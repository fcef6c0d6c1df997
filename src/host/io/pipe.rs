//! An in-memory byte pipe for tests: one side writes, the other reads, with
//! a bounded buffer, standing in for the producers net and http provide.

use super::resources::{ByteSink, ByteSource, StreamFailure};
use crate::signal::MutexExt;
use crate::signal::{Readiness, Signal, Waiter};
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

/// An in-memory byte pipe: one side writes, the other reads, with a
/// bounded buffer. The in-memory producer for streams, and what tests use.
pub struct Pipe {
    state: Mutex<PipeState>,
    signal: Signal,
    capacity: usize,
}

#[derive(Default)]
struct PipeState {
    buffer: VecDeque<u8>,
    writer_closed: bool,
    reader_closed: bool,
}

impl Pipe {
    pub fn new(capacity: usize) -> Arc<Pipe> {
        Arc::new(Pipe {
            state: Mutex::new(PipeState::default()),
            signal: Signal::default(),
            capacity,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, PipeState> {
        self.state.locked()
    }

    /// No more bytes will be written: the reader sees `closed` after the rest.
    pub fn close_writer(&self) {
        self.lock().writer_closed = true;
        self.signal.notify();
    }

    /// The reader is gone: writes fail with `closed`.
    pub fn close_reader(&self) {
        let mut state = self.lock();
        state.reader_closed = true;
        state.buffer.clear();
        drop(state);
        self.signal.notify();
    }
}

/// The reading end of a [`Pipe`].
pub struct PipeReader(pub Arc<Pipe>);
/// The writing end of a [`Pipe`].
pub struct PipeWriter(pub Arc<Pipe>);

struct PipeReadable(Arc<Pipe>);
struct PipeWritable(Arc<Pipe>);

impl Readiness for PipeReadable {
    fn is_ready(&self) -> bool {
        let state = self.0.lock();
        !state.buffer.is_empty() || state.writer_closed || state.reader_closed
    }
    fn register(&self, waiter: &Arc<Waiter>) {
        self.0.signal.register(waiter);
    }
}

impl Readiness for PipeWritable {
    fn is_ready(&self) -> bool {
        let state = self.0.lock();
        state.buffer.len() < self.0.capacity || state.reader_closed || state.writer_closed
    }
    fn register(&self, waiter: &Arc<Waiter>) {
        self.0.signal.register(waiter);
    }
}

impl ByteSource for PipeReader {
    fn read(&self, max: usize) -> Result<Vec<u8>, StreamFailure> {
        let mut state = self.0.lock();
        if state.reader_closed || (state.buffer.is_empty() && state.writer_closed) {
            return Err(StreamFailure::Closed);
        }
        let n = max.min(state.buffer.len());
        let bytes: Vec<u8> = state.buffer.drain(..n).collect();
        drop(state);
        if n > 0 {
            self.0.signal.notify();
        }
        Ok(bytes)
    }

    fn readiness(&self) -> Arc<dyn Readiness> {
        Arc::new(PipeReadable(self.0.clone()))
    }
}

impl ByteSink for PipeWriter {
    fn check_write(&self) -> Result<usize, StreamFailure> {
        let state = self.0.lock();
        if state.reader_closed || state.writer_closed {
            return Err(StreamFailure::Closed);
        }
        Ok(self.0.capacity - state.buffer.len())
    }

    fn write(&self, bytes: &[u8]) -> Result<(), StreamFailure> {
        let mut state = self.0.lock();
        if state.reader_closed || state.writer_closed {
            return Err(StreamFailure::Closed);
        }
        if state.buffer.len() + bytes.len() > self.0.capacity {
            return Err(StreamFailure::Failed("the stream's buffer is full".into()));
        }
        state.buffer.extend(bytes);
        drop(state);
        self.0.signal.notify();
        Ok(())
    }

    fn flush(&self) -> Result<(), StreamFailure> {
        if self.0.lock().reader_closed {
            return Err(StreamFailure::Closed);
        }
        Ok(())
    }

    fn readiness(&self) -> Arc<dyn Readiness> {
        Arc::new(PipeWritable(self.0.clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pipe_reads_what_was_written_then_closed() {
        let pipe = Pipe::new(8);
        let (reader, writer) = (PipeReader(pipe.clone()), PipeWriter(pipe.clone()));
        assert_eq!(reader.read(4).unwrap(), b"");
        assert!(!reader.readiness().is_ready());
        assert_eq!(writer.check_write().unwrap(), 8);
        writer.write(b"hello").unwrap();
        assert_eq!(writer.check_write().unwrap(), 3);
        assert!(writer.write(b"toolong").is_err(), "beyond the permit");
        assert!(reader.readiness().is_ready());
        assert_eq!(reader.read(3).unwrap(), b"hel");
        pipe.close_writer();
        assert_eq!(reader.read(10).unwrap(), b"lo");
        assert_eq!(reader.read(10), Err(StreamFailure::Closed));
        assert_eq!(writer.check_write(), Err(StreamFailure::Closed));
    }
}

/// The stream and poll host functions exercised on a real capsule's store
/// state, with in-memory pipes standing in for the producers that arrive
/// with net/http.
#[cfg(test)]
mod host_tests {
    use super::*;
    use crate::cancel::CancelToken;
    use crate::host::call::CallContext;
    use crate::host::io::bindings::astrid::io::{error, poll, streams};
    use crate::host::io::IoView;
    use crate::host::io::{InputStream, OutputStream, MAX_POLL_LIST};
    use crate::{Capsule, LoadOptions, Runtime, RuntimeConfig};
    use poll::ErrorCode;
    use poll::{Host as _, HostPollable as _};
    use std::time::{Duration, Instant};
    use streams::StreamError;
    use streams::{HostInputStream as _, HostOutputStream as _};
    use wasmtime::component::{Resource, ResourceTable};

    /// What an `astrid:io` view is built from: a real capsule, a call
    /// with ten seconds to go, and an empty resource table.
    struct Store {
        _rt: Runtime,
        capsule: Capsule,
        call: CallContext,
        table: ResourceTable,
    }

    impl Store {
        fn new() -> Store {
            let rt = Runtime::new(RuntimeConfig::default()).unwrap();
            let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("build/capsules/hello");
            let capsule = rt
                .load_dir(&dir, &LoadOptions::default())
                .expect("build the capsules first (scripts/build-capsules.sh)");
            let mut call = CallContext::idle(CancelToken::new(), Default::default());
            call.deadline = Instant::now() + Duration::from_secs(10);
            Store {
                _rt: rt,
                capsule,
                call,
                table: ResourceTable::new(),
            }
        }

        fn view(&mut self) -> IoView<'_> {
            IoView {
                capsule: &self.capsule.inner.shared,
                call: &self.call,
                table: &mut self.table,
            }
        }
    }

    fn input(state: &mut IoView<'_>, pipe: &Arc<Pipe>) -> Resource<InputStream> {
        let source: Arc<dyn ByteSource> = Arc::new(PipeReader(pipe.clone()));
        state.table.push(InputStream::new(source)).unwrap()
    }

    fn output(state: &mut IoView<'_>, pipe: &Arc<Pipe>) -> Resource<OutputStream> {
        let sink: Arc<dyn ByteSink> = Arc::new(PipeWriter(pipe.clone()));
        state.table.push(OutputStream::new(sink)).unwrap()
    }

    fn again<T: 'static>(r: &Resource<T>) -> Resource<T> {
        Resource::new_borrow(r.rep())
    }

    #[test]
    fn input_streams_read_wait_end_and_close_on_cancel() {
        let mut store = Store::new();
        let mut state = store.view();
        let pipe = Pipe::new(4 << 20);
        let stream = input(&mut state, &pipe);
        assert_eq!(state.read(again(&stream), 10).unwrap(), b"");
        PipeWriter(pipe.clone())
            .write(&vec![7u8; (2 << 20) + 5])
            .unwrap();
        // One read moves at most 1 MiB, whatever the guest asks for.
        assert_eq!(state.read(again(&stream), u64::MAX).unwrap().len(), 1 << 20);
        assert_eq!(state.skip(again(&stream), 1 << 20).unwrap(), 1 << 20);
        assert_eq!(state.read(again(&stream), 100).unwrap(), vec![7u8; 5]);
        // blocking-read waits for a writer on another thread.
        let writer = {
            let pipe = pipe.clone();
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(30));
                PipeWriter(pipe).write(b"late").unwrap();
            })
        };
        assert_eq!(state.blocking_read(again(&stream), 100).unwrap(), b"late");
        writer.join().unwrap();
        // Readiness through a pollable and `poll`.
        let ready = streams::HostInputStream::subscribe(&mut state, again(&stream));
        assert!(!state.ready(again(&ready)));
        PipeWriter(pipe.clone()).write(b"x").unwrap();
        assert_eq!(
            state.poll(vec![again(&ready), again(&ready)]).unwrap(),
            vec![0, 1]
        );
        // End of data is `closed`, after what was written.
        pipe.close_writer();
        assert_eq!(state.read(again(&stream), 10).unwrap(), b"x");
        assert!(matches!(
            state.read(again(&stream), 10),
            Err(StreamError::Closed)
        ));
        // Once cancelled, every operation answers `closed`, blocking or not.
        let other = Pipe::new(16);
        let fresh = input(&mut state, &other);
        state.call.token.cancel();
        assert!(matches!(
            state.read(again(&fresh), 1),
            Err(StreamError::Closed)
        ));
        let started = Instant::now();
        assert!(matches!(
            state.blocking_read(again(&fresh), 1),
            Err(StreamError::Closed)
        ));
        assert!(started.elapsed() < Duration::from_secs(1));
        // And every pollable reads as ready.
        let pollable = streams::HostInputStream::subscribe(&mut state, again(&fresh));
        assert!(state.ready(again(&pollable)));
        assert!(matches!(
            state.block(again(&pollable)),
            Err(ErrorCode::Cancelled)
        ));
    }

    #[test]
    fn output_streams_honour_check_write_permits() {
        let mut store = Store::new();
        let mut state = store.view();
        let pipe = Pipe::new(8);
        let stream = output(&mut state, &pipe);
        // No permit yet: a write fails with last-operation-failed.
        match state.write(again(&stream), b"abc".to_vec()) {
            Err(StreamError::LastOperationFailed(error)) => {
                let text = error::HostError::to_debug_string(&mut state, error);
                assert!(text.contains("check-write"), "{text}");
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(state.check_write(again(&stream)).unwrap(), 8);
        state.write(again(&stream), b"abcde".to_vec()).unwrap();
        // The permit shrinks by what was written.
        assert!(state.write(again(&stream), b"wxyz".to_vec()).is_err());
        assert_eq!(state.check_write(again(&stream)).unwrap(), 3);
        assert!(state.write_zeroes(again(&stream), (1 << 20) + 1).is_err());
        // A blocking write waits for the reader to make room.
        let reader = {
            let pipe = pipe.clone();
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(30));
                PipeReader(pipe).read(8).unwrap()
            })
        };
        state
            .blocking_write_and_flush(again(&stream), b"0123456".to_vec())
            .unwrap();
        // It filled the room there was, waited, then wrote the rest.
        assert_eq!(reader.join().unwrap(), b"abcde012");
        assert_eq!(PipeReader(pipe.clone()).read(16).unwrap(), b"3456");
        assert!(state
            .blocking_write_and_flush(again(&stream), vec![0; 4097])
            .is_err());
        // Splice moves bytes from an input stream into this one.
        let source_pipe = Pipe::new(64);
        let source = input(&mut state, &source_pipe);
        PipeWriter(source_pipe.clone()).write(b"spliced!").unwrap();
        assert_eq!(
            state.splice(again(&stream), again(&source), 100).unwrap(),
            8
        );
        assert_eq!(PipeReader(pipe.clone()).read(16).unwrap(), b"spliced!");
        // A closed reader ends the output stream.
        pipe.close_reader();
        assert!(matches!(
            state.check_write(again(&stream)),
            Err(StreamError::Closed)
        ));
    }

    #[test]
    fn poll_limits() {
        let mut store = Store::new();
        let pipe = Pipe::new(8);
        let ready = {
            let mut state = store.view();
            assert!(matches!(
                state.poll(Vec::new()),
                Err(ErrorCode::InvalidInput)
            ));
            let stream = input(&mut state, &pipe);
            let ready = streams::HostInputStream::subscribe(&mut state, again(&stream));
            let many: Vec<_> = (0..=MAX_POLL_LIST).map(|_| again(&ready)).collect();
            assert!(matches!(state.poll(many), Err(ErrorCode::TooLarge)));
            ready
        };
        // Nothing ready: poll gives up with `cancelled` at the call's deadline.
        store.call.deadline = Instant::now() + Duration::from_millis(50);
        let mut state = store.view();
        assert!(matches!(
            state.poll(vec![again(&ready)]),
            Err(ErrorCode::Cancelled)
        ));
    }
}
