// Copyright 2026 The ft-cloud-hypervisor authors.
// SPDX-License-Identifier: Apache-2.0

//! Writing the log on a thread of its own.
//!
//! The recording VMM encodes each entry on the vCPU thread (it owns the
//! pages and states) and hands the payload to this thread, which
//! compresses, checksums and writes it. Compression (a long-window zstd
//! stream) costs CPU in proportion to the log's raw bytes; off the vCPU
//! thread it runs beside the guest instead of stopping it. The queue is
//! bounded: a vCPU that produces frames faster than they are written waits.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use crate::channel::Position;
use crate::entry::Entry;
use crate::log::{encode_entry, LogError, LogWriter};

/// What the vCPU thread hands to the log thread.
#[derive(Debug)]
enum Item {
    /// An encoded entry: tag and payload.
    Frame(u8, Vec<u8>),
    /// A stream: every frame before this is sent; tell the peer how far
    /// the guest has run.
    Progress(Position),
}

/// Sends a progress position after the frames before it (the logging
/// channel); an error stops the thread as a write error does.
pub type ProgressSink = Box<dyn FnMut(Position) -> Result<(), LogError> + Send>;

/// Frames waiting for the thread, at most.
const QUEUE: usize = 64;

/// What the thread reports back.
#[derive(Debug, Default)]
struct Shared {
    bytes: AtomicU64,
    raw_bytes: AtomicU64,
    frames: AtomicU64,
    /// The first write error; the thread stops writing after it.
    error: Mutex<Option<LogError>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A [`LogWriter`] running on its own thread.
#[derive(Debug)]
pub struct LogThread {
    path: PathBuf,
    /// The writer's frame limit, checked here before queueing.
    max_frame_len: u32,
    tx: Option<SyncSender<Item>>,
    thread: Option<JoinHandle<Option<LogWriter>>>,
    shared: Arc<Shared>,
}

impl LogThread {
    /// Starts the thread with `writer` (its header, and any frames
    /// appended before, already written to its buffer).
    pub fn spawn(writer: LogWriter) -> Result<Self, LogError> {
        Self::start(writer, None)
    }

    /// Starts the thread for a stream (the logging channel): frames are
    /// flushed as soon as no more are queued, and
    /// [`progress`](Self::progress) positions go to `progress` after the
    /// frames queued before them.
    pub fn spawn_stream(writer: LogWriter, progress: ProgressSink) -> Result<Self, LogError> {
        Self::start(writer, Some(progress))
    }

    fn start(writer: LogWriter, progress: Option<ProgressSink>) -> Result<Self, LogError> {
        let path = writer.path().to_path_buf();
        let shared = Arc::new(Shared::default());
        shared.bytes.store(writer.bytes(), Ordering::Relaxed);
        shared
            .raw_bytes
            .store(writer.raw_bytes(), Ordering::Relaxed);
        shared.frames.store(writer.frames(), Ordering::Relaxed);
        let (tx, rx) = sync_channel(QUEUE);
        let max_frame_len = writer.max_frame_len();
        let s = shared.clone();
        let thread = std::thread::Builder::new()
            .name("ft_log".into())
            .spawn(move || run(writer, rx, progress, &s))
            .map_err(|source| LogError::Io {
                path: path.clone(),
                source,
            })?;
        Ok(LogThread {
            path,
            max_frame_len,
            tx: Some(tx),
            thread: Some(thread),
            shared,
        })
    }

    /// Queues `entry`. Fails at once for an entry above the frame limit
    /// (nothing is queued) or with the first error the thread met.
    pub fn append(&mut self, entry: &Entry) -> Result<(), LogError> {
        if let Some(e) = lock(&self.shared.error).take() {
            return Err(e);
        }
        let payload = encode_entry(&self.path, self.max_frame_len, entry)?;
        let sent = self
            .tx
            .as_ref()
            .map(|tx| tx.send(Item::Frame(entry.tag(), payload)).is_ok());
        if sent != Some(true) {
            return Err(self.stopped());
        }
        Ok(())
    }

    /// Queues a progress position (a stream's; a file ignores it).
    pub fn progress(&mut self, position: Position) -> Result<(), LogError> {
        if let Some(e) = lock(&self.shared.error).take() {
            return Err(e);
        }
        let sent = self
            .tx
            .as_ref()
            .map(|tx| tx.send(Item::Progress(position)).is_ok());
        if sent != Some(true) {
            return Err(self.stopped());
        }
        Ok(())
    }

    /// The error of a thread that is gone.
    fn stopped(&mut self) -> LogError {
        self.tx = None;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        lock(&self.shared.error)
            .take()
            .unwrap_or_else(|| LogError::Io {
                path: self.path.clone(),
                source: std::io::Error::other("the log writer thread stopped"),
            })
    }

    /// Writes every queued frame, flushes the file and stops the thread.
    pub fn finish(&mut self) -> Result<(), LogError> {
        self.tx = None;
        let writer = self.thread.take().and_then(|t| t.join().ok().flatten());
        if let Some(e) = lock(&self.shared.error).take() {
            return Err(e);
        }
        match writer {
            Some(mut w) => w.flush(),
            None => Err(LogError::Io {
                path: self.path.clone(),
                source: std::io::Error::other("the log writer thread stopped"),
            }),
        }
    }

    /// Bytes written so far (header included; queued frames not yet).
    pub fn bytes(&self) -> u64 {
        self.shared.bytes.load(Ordering::Relaxed)
    }

    /// The same, uncompressed (see [`LogWriter::raw_bytes`]).
    pub fn raw_bytes(&self) -> u64 {
        self.shared.raw_bytes.load(Ordering::Relaxed)
    }

    /// Frames written so far.
    pub fn frames(&self) -> u64 {
        self.shared.frames.load(Ordering::Relaxed)
    }
}

impl Drop for LogThread {
    fn drop(&mut self) {
        self.tx = None;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The thread: writes frames until the sender is gone or a write fails;
/// returns the writer for the final flush. A stream is flushed whenever
/// the queue runs dry, and before each progress position.
fn run(
    mut writer: LogWriter,
    rx: Receiver<Item>,
    mut progress: Option<ProgressSink>,
    shared: &Shared,
) -> Option<LogWriter> {
    let fail = |e| {
        *lock(&shared.error) = Some(e);
        None
    };
    let mut next = None;
    loop {
        let item = match next.take() {
            Some(i) => i,
            None => match rx.recv() {
                Ok(i) => i,
                Err(_) => break,
            },
        };
        match item {
            Item::Frame(tag, payload) => {
                if let Err(e) = writer.write_payload(tag, &payload) {
                    return fail(e);
                }
                shared.bytes.store(writer.bytes(), Ordering::Relaxed);
                shared
                    .raw_bytes
                    .store(writer.raw_bytes(), Ordering::Relaxed);
                shared.frames.store(writer.frames(), Ordering::Relaxed);
            }
            Item::Progress(p) => {
                if let Some(send) = progress.as_mut() {
                    if let Err(e) = writer.flush().and_then(|()| send(p)) {
                        return fail(e);
                    }
                }
            }
        }
        if progress.is_some() {
            match rx.try_recv() {
                Ok(i) => next = Some(i),
                Err(std::sync::mpsc::TryRecvError::Empty) => {
                    if let Err(e) = writer.flush() {
                        return fail(e);
                    }
                }
                Err(std::sync::mpsc::TryRecvError::Disconnected) => break,
            }
        }
    }
    if let Err(e) = writer.flush() {
        return fail(e);
    }
    Some(writer)
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::entry::{Checkpoint, EndReason, ExitId, Setup};
    use crate::log::{LogHeader, LogReader, WriterOptions};

    fn entries() -> Vec<Entry> {
        let mut v = vec![Entry::Setup(Setup::default())];
        for seq in 1..=30u64 {
            v.push(Entry::ClockRead {
                exit: seq,
                value: seq * 1000,
            });
            v.push(Entry::Checkpoint(Box::new(Checkpoint {
                exit: seq,
                at: ExitId::default(),
                seq,
                pages: vec![(0x1000, vec![seq as u8; 4096]), (0x3000, vec![0; 4096])],
                vcpu: vec![3; 500],
                devices: vec![],
                ready_for_interrupt: true,
                digest: None,
                start_registers: None,
            })));
        }
        v.push(Entry::End {
            exit: 31,
            reason: EndReason::Shutdown,
            digest: 2,
        });
        v
    }

    const HEADER: LogHeader = LogHeader {
        config_digest: 8,
        max_delay_us: 2000,
    };

    #[test]
    fn the_thread_writes_what_the_writer_writes() {
        let dir = std::env::temp_dir().join(format!("ft-thread-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (a, b) = (dir.join("direct.log"), dir.join("thread.log"));
        let mut w = LogWriter::create(&a, HEADER).unwrap();
        for e in entries() {
            w.append(&e).unwrap();
        }
        w.flush().unwrap();
        let mut w = LogWriter::create(&b, HEADER).unwrap();
        w.append(&entries()[0]).unwrap();
        let mut t = LogThread::spawn(w).unwrap();
        for e in &entries()[1..] {
            t.append(e).unwrap();
        }
        t.finish().unwrap();
        let (da, db) = (std::fs::read(&a).unwrap(), std::fs::read(&b).unwrap());
        assert_eq!(da, db);
        assert_eq!(t.bytes(), db.len() as u64);
        assert_eq!(t.frames(), entries().len() as u64);
        assert_eq!(LogReader::open(&b, Some(8)).unwrap().entries, entries());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn refusals_and_write_errors_reach_the_caller() {
        let dir = std::env::temp_dir().join(format!("ft-thread-err-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let options = WriterOptions {
            compress: true,
            max_frame_len: 1000,
        };
        let w = LogWriter::create_with(&dir.join("small.log"), HEADER, options).unwrap();
        let mut t = LogThread::spawn(w).unwrap();
        assert!(matches!(
            t.append(&entries()[2]),
            Err(LogError::TooLarge { .. })
        ));
        t.append(&entries()[1]).unwrap();
        t.finish().unwrap();
        // A device that takes nothing: the error comes back, at the
        // latest when the log is finished.
        let w = LogWriter::create(Path::new("/dev/full"), HEADER).unwrap();
        let mut t = LogThread::spawn(w).unwrap();
        let mut failed = false;
        for _ in 0..400 {
            if t.append(&entries()[2]).is_err() {
                failed = true;
                break;
            }
        }
        let end = t.finish();
        assert!(failed || end.is_err(), "a lost log reported success");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
