// Copyright 2026 The ft-cloud-hypervisor authors.
// SPDX-License-Identifier: Apache-2.0

//! The disk I/O thread: performs reads, writes and flushes on the raw file
//! into host buffers, and posts each result as event bytes.
//!
//! A small write, or a flush with little written since the last one, that
//! finds the thread idle is performed at once by the caller instead
//! ([`Backend::submit`]; on the vCPU thread at a notify): handing it over
//! costs two thread switches and a vCPU wake-up per request, the latency
//! of a request that the guest waits for anyway. (Measured on the
//! development machines: an `fdatasync` issued right after another
//! thread's `pwrite` of the same file took 4x longer than from the writing
//! thread, so writes and flushes stay on one thread.) The result is posted
//! the same way, as an event the vCPU applies at a later exit. Reads
//! (which may wait for the device), large writes and large flushes go to
//! the thread, and jobs keep their order: nothing is performed at once
//! while the thread has work.
//!
//! Event bytes: request id (u64 LE), virtio status (u8), then the data read
//! (reads that succeeded only).

use std::collections::VecDeque;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use devices::async_event::Waker;

use virtio_bindings::virtio_blk;

/// Request completed.
pub const VIRTIO_BLK_S_OK: u8 = virtio_blk::VIRTIO_BLK_S_OK as u8;
/// Request failed.
pub const VIRTIO_BLK_S_IOERR: u8 = virtio_blk::VIRTIO_BLK_S_IOERR as u8;
/// Request type not supported.
pub const VIRTIO_BLK_S_UNSUPP: u8 = virtio_blk::VIRTIO_BLK_S_UNSUPP as u8;

/// Bytes before the data in an event.
pub const EVENT_HEADER: usize = 9;
/// Largest write performed by the submitter when the thread is idle.
pub const INLINE_WRITE_MAX: usize = 64 << 10;
/// A flush is performed by the submitter only if at most this many bytes
/// were written since the previous flush (it bounds how long the vCPU may
/// wait for the host's disk).
pub const INLINE_FLUSH_MAX_UNFLUSHED: u64 = 1 << 20;

/// What the thread does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// Read `len` bytes at `offset`.
    Read {
        /// Byte offset.
        offset: u64,
        /// Bytes.
        len: usize,
    },
    /// Write `data` at `offset`.
    Write {
        /// Byte offset.
        offset: u64,
        /// The bytes.
        data: Vec<u8>,
    },
    /// fdatasync.
    Flush,
}

/// One request for the thread.
#[derive(Debug)]
pub struct Job {
    /// The device's request id.
    pub id: u64,
    /// What to do.
    pub op: Op,
}

/// Finished work, as event bytes, waiting for the vCPU.
pub type Completions = Arc<Mutex<VecDeque<Vec<u8>>>>;

/// Encodes a completion.
pub fn encode(id: u64, status: u8, data: &[u8]) -> Vec<u8> {
    let mut e = Vec::with_capacity(EVENT_HEADER + data.len());
    e.extend_from_slice(&id.to_le_bytes());
    e.push(status);
    e.extend_from_slice(data);
    e
}

/// Decodes a completion: id, status, data.
pub fn decode(event: &[u8]) -> Option<(u64, u8, &[u8])> {
    if event.len() < EVENT_HEADER {
        return None;
    }
    let mut id = [0u8; 8];
    id.copy_from_slice(&event[..8]);
    Some((u64::from_le_bytes(id), event[8], &event[EVENT_HEADER..]))
}

fn perform(file: &File, op: Op) -> (u8, Vec<u8>) {
    match op {
        Op::Read { offset, len } => {
            let mut buf = vec![0u8; len];
            match file.read_exact_at(&mut buf, offset) {
                Ok(()) => (VIRTIO_BLK_S_OK, buf),
                Err(e) => {
                    log::warn!("disk read of {len} bytes at {offset} failed: {e}");
                    (VIRTIO_BLK_S_IOERR, Vec::new())
                }
            }
        }
        Op::Write { offset, data } => match file.write_all_at(&data, offset) {
            Ok(()) => (VIRTIO_BLK_S_OK, Vec::new()),
            Err(e) => {
                log::warn!("disk write of {} bytes at {offset} failed: {e}", data.len());
                (VIRTIO_BLK_S_IOERR, Vec::new())
            }
        },
        Op::Flush => match file.sync_data() {
            Ok(()) => (VIRTIO_BLK_S_OK, Vec::new()),
            Err(e) => {
                log::warn!("disk flush failed: {e}");
                (VIRTIO_BLK_S_IOERR, Vec::new())
            }
        },
    }
}

/// Where results go: the completion queue the vCPU polls, and its waker.
#[derive(Debug, Clone)]
struct Poster {
    done: Completions,
    waker: Arc<dyn Waker>,
}

impl Poster {
    fn post(&self, id: u64, status: u8, data: &[u8]) {
        self.done
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push_back(encode(id, status, data));
        self.waker.wake();
    }
}

/// The host side of a disk: its file and I/O thread. Cloned into each
/// output's closure; the thread ends when every clone is gone.
#[derive(Debug, Clone)]
pub struct Backend {
    file: Arc<File>,
    jobs: Sender<Job>,
    /// Jobs sent to the thread and not yet posted.
    in_flight: Arc<AtomicUsize>,
    /// Bytes written (or submitted) since the last flush was submitted.
    unflushed: Arc<AtomicU64>,
    poster: Poster,
}

impl Backend {
    /// Performs `job`: on the calling thread if it is a small write or a
    /// small flush and the I/O thread is idle, else on the I/O thread.
    /// Either way the result is posted to the completion queue and the
    /// vCPU woken. Jobs of one device must be submitted from one thread at
    /// a time (the output seam's order).
    pub fn submit(&self, job: Job) {
        let small = match &job.op {
            Op::Read { .. } => false,
            Op::Write { data, .. } => {
                self.unflushed
                    .fetch_add(data.len() as u64, Ordering::Relaxed);
                data.len() <= INLINE_WRITE_MAX
            }
            Op::Flush => self.unflushed.swap(0, Ordering::Relaxed) <= INLINE_FLUSH_MAX_UNFLUSHED,
        };
        if small && self.in_flight.load(Ordering::SeqCst) == 0 {
            let (status, data) = perform(&self.file, job.op);
            self.poster.post(job.id, status, &data);
            return;
        }
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        if self.jobs.send(job).is_err() {
            // The thread is gone (it ended with its last receiver): the
            // request never completes, as with a dead disk.
            self.in_flight.fetch_sub(1, Ordering::SeqCst);
        }
    }
}

/// Starts the thread for `file`; it ends when every clone of the
/// returned [`Backend`] is gone.
pub fn spawn(
    name: &str,
    file: File,
    done: Completions,
    waker: Arc<dyn Waker>,
) -> std::io::Result<(Backend, JoinHandle<()>)> {
    let (tx, jobs) = mpsc::channel::<Job>();
    let file = Arc::new(file);
    let in_flight = Arc::new(AtomicUsize::new(0));
    let poster = Poster { done, waker };
    let backend = Backend {
        file: file.clone(),
        jobs: tx,
        in_flight: in_flight.clone(),
        unflushed: Arc::new(AtomicU64::new(0)),
        poster: poster.clone(),
    };
    let thread = std::thread::Builder::new()
        .name(format!("{name}-io"))
        .spawn(move || run(&file, &jobs, &in_flight, &poster))?;
    Ok((backend, thread))
}

fn run(file: &File, jobs: &Receiver<Job>, in_flight: &AtomicUsize, poster: &Poster) {
    while let Ok(job) = jobs.recv() {
        let (status, data) = perform(file, job.op);
        // Counted down only once posted: a write submitted after this
        // point cannot complete before this job.
        poster.post(job.id, status, &data);
        in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_round_trip() {
        let e = encode(7, VIRTIO_BLK_S_OK, b"abc");
        assert_eq!(decode(&e), Some((7, 0, &b"abc"[..])));
        assert_eq!(decode(&e[..8]), None);
    }

    #[test]
    fn operations_on_a_file() {
        let dir = std::env::temp_dir().join(format!("vd-worker-{}", std::process::id()));
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&dir)
            .unwrap();
        file.set_len(1024).unwrap();
        assert_eq!(
            perform(
                &file,
                Op::Write {
                    offset: 512,
                    data: vec![9; 512]
                }
            ),
            (VIRTIO_BLK_S_OK, vec![])
        );
        assert_eq!(perform(&file, Op::Flush).0, VIRTIO_BLK_S_OK);
        assert_eq!(
            perform(
                &file,
                Op::Read {
                    offset: 512,
                    len: 512
                }
            ),
            (VIRTIO_BLK_S_OK, vec![9; 512])
        );
        assert_eq!(
            perform(
                &file,
                Op::Read {
                    offset: 1000,
                    len: 512
                }
            )
            .0,
            VIRTIO_BLK_S_IOERR
        );
        std::fs::remove_file(&dir).unwrap();
    }
}
