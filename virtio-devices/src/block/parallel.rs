// Copyright 2026 The ft-cloud-hypervisor authors.
// SPDX-License-Identifier: Apache-2.0

//! Disk I/O on an `O_DIRECT` image: reads and writes run on a few threads
//! at once, as the device queue would on real hardware.
//!
//! Through the page cache a write returns at memory speed and reads are
//! helped by read-ahead, so one thread keeps up; with `O_DIRECT` every
//! request waits for the device, and one at a time leaves the device's
//! queue empty. Here the disk thread dispatches reads and writes to
//! [`HELPERS`] helper threads (each with its own handle on the image and
//! its own bounce buffer) and completes them in the order they finish.
//!
//! The result on the file is still that of performing the requests one by
//! one in issue order (so a backup's own copy, written in issue order,
//! ends equal): a request waits, and the ones after it with it, until no
//! request in flight touches one of its `O_DIRECT` blocks (their ranges
//! widened as [`super::image`] widens them, so two read-modify-writes of
//! one block never interleave). A flush waits for every request before it
//! to finish, then runs fdatasync.

use std::collections::VecDeque;
use std::sync::mpsc::Receiver;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;

use devices::async_event::Waker;

use super::image::Image;
use super::worker::{encode, perform, Completions, Job, Op};
use super::written::WrittenBlocks;

/// Reads and writes in flight at once.
pub const HELPERS: usize = 4;

#[derive(Debug, Default)]
struct State {
    /// Dispatched, not yet taken by a helper.
    queue: VecDeque<Job>,
    /// Byte ranges (widened to blocks) of the requests queued or running.
    busy: Vec<(u64, u64)>,
    /// No more work: helpers end once the queue is empty.
    closed: bool,
}

#[derive(Debug, Default)]
struct Shared {
    state: Mutex<State>,
    /// Work queued, a range freed, or closed.
    cv: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Where completions go.
#[derive(Clone)]
struct Sink {
    done: Completions,
    waker: Arc<dyn Waker>,
    written: Arc<WrittenBlocks>,
}

impl Sink {
    fn perform(&self, image: &mut Image, job: Job) {
        let wrote = match &job.op {
            Op::Write { offset, data } => Some((*offset, data.len() as u64)),
            _ => None,
        };
        let (status, data) = perform(image, job.op);
        if let Some((offset, len)) = wrote {
            self.written.mark(offset, len);
        }
        self.done
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push_back(encode(job.id, status, &data));
        self.waker.wake();
    }
}

/// The block-aligned byte range `op` touches (`None` for a flush).
fn range(op: &Op, block: u64) -> Option<(u64, u64)> {
    let (offset, len) = match op {
        Op::Read { offset, len } => (*offset, *len as u64),
        Op::Write { offset, data } => (*offset, data.len() as u64),
        Op::Flush => return None,
    };
    let start = offset - offset % block;
    let end = offset
        .saturating_add(len)
        .div_ceil(block)
        .saturating_mul(block);
    Some((start, end))
}

fn overlaps(a: (u64, u64), b: (u64, u64)) -> bool {
    a.0 < b.1 && b.0 < a.1
}

/// The disk thread for `image` (open with `O_DIRECT`) and its helpers; it
/// ends, after them, when every sender of `jobs` is gone.
pub fn spawn(
    name: &str,
    image: Image,
    jobs: Receiver<Job>,
    done: Completions,
    waker: Arc<dyn Waker>,
    written: Arc<WrittenBlocks>,
) -> std::io::Result<JoinHandle<()>> {
    let block = image
        .alignment()
        .map_or(super::image::DEFAULT_ALIGN, |a| a.offset);
    let shared = Arc::new(Shared::default());
    let sink = Sink {
        done,
        waker,
        written,
    };
    let mut helpers = Vec::with_capacity(HELPERS);
    for i in 0..HELPERS {
        let mut mine = image.try_clone()?;
        let (pool, out) = (shared.clone(), sink.clone());
        let helper = std::thread::Builder::new()
            .name(format!("{name}-io{i}"))
            .spawn(move || loop {
                let job = {
                    let mut s = pool.lock();
                    loop {
                        if let Some(job) = s.queue.pop_front() {
                            break job;
                        }
                        if s.closed {
                            return;
                        }
                        s = pool.cv.wait(s).unwrap_or_else(|e| e.into_inner());
                    }
                };
                let r = range(&job.op, block);
                out.perform(&mut mine, job);
                let mut s = pool.lock();
                if let Some(i) = s.busy.iter().position(|b| Some(*b) == r) {
                    s.busy.swap_remove(i);
                }
                drop(s);
                pool.cv.notify_all();
            });
        match helper {
            Ok(h) => helpers.push(h),
            Err(e) => {
                shared.lock().closed = true;
                shared.cv.notify_all();
                return Err(e);
            }
        }
    }
    let mut image = image;
    std::thread::Builder::new()
        .name(format!("{name}-io"))
        .spawn(move || {
            while let Ok(job) = jobs.recv() {
                let r = range(&job.op, block);
                let mut s = shared.lock();
                // A flush waits for everything before it; a read or write
                // for the requests in flight on its blocks.
                while match r {
                    None => !s.busy.is_empty(),
                    Some(r) => s.busy.iter().any(|b| overlaps(*b, r)),
                } {
                    s = shared.cv.wait(s).unwrap_or_else(|e| e.into_inner());
                }
                match r {
                    None => {
                        drop(s);
                        sink.perform(&mut image, job);
                    }
                    Some(r) => {
                        s.busy.push(r);
                        s.queue.push_back(job);
                        drop(s);
                        shared.cv.notify_all();
                    }
                }
            }
            shared.lock().closed = true;
            shared.cv.notify_all();
            for h in helpers {
                let _ = h.join();
            }
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_are_widened_to_blocks_and_overlap_by_block() {
        let w = |offset, len| Op::Write {
            offset,
            data: vec![0u8; len].into(),
        };
        assert_eq!(range(&w(512, 512), 4096), Some((0, 4096)));
        assert_eq!(
            range(
                &Op::Read {
                    offset: 4096,
                    len: 8192
                },
                4096
            ),
            Some((4096, 12288))
        );
        assert_eq!(range(&Op::Flush, 512), None);
        // Two sectors of one 4 KiB block conflict; neighbours do not.
        let a = range(&w(0, 512), 4096).unwrap();
        let b = range(&w(3584, 512), 4096).unwrap();
        assert!(overlaps(a, b));
        let c = range(&w(4096, 512), 4096).unwrap();
        assert!(!overlaps(a, c));
        assert!(!overlaps(
            range(&w(0, 512), 512).unwrap(),
            range(&w(512, 512), 512).unwrap()
        ));
    }
}

#[cfg(test)]
mod concurrency_tests {
    use std::sync::mpsc;
    use std::time::{Duration, Instant};

    use super::*;
    use crate::block::image::ImageMode;
    use crate::block::worker::{decode, VIRTIO_BLK_S_OK};

    #[derive(Debug)]
    struct NoWake;
    impl Waker for NoWake {
        fn wake(&self) {}
    }

    /// Many overlapping writes, reads and flushes in flight at once give
    /// what performing them one by one in issue order gives: every read
    /// sees exactly the writes issued before it, and the file ends equal.
    #[test]
    fn in_flight_requests_act_as_if_performed_in_issue_order() {
        const SIZE: usize = 64 << 10;
        let path = std::env::temp_dir().join(format!("vd-parallel-{}", std::process::id()));
        std::fs::write(&path, vec![0u8; SIZE]).unwrap();
        let mode = ImageMode {
            readonly: false,
            direct: true,
        };
        let (image, _) = Image::open(&path, mode).unwrap();
        // Sectors of one 4 KiB block are read-modify-written.
        let image = image.with_offset_alignment(4096);
        let (tx, rx) = mpsc::channel();
        let done = Completions::default();
        let thread = spawn(
            "t",
            image,
            rx,
            done.clone(),
            Arc::new(NoWake),
            WrittenBlocks::new(),
        )
        .unwrap();
        let mut model = vec![0u8; SIZE];
        let mut expected_reads = std::collections::BTreeMap::new();
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let n = 600u64;
        for id in 0..n {
            let sectors = (next() % 16 + 1) as usize;
            let len = sectors * 512;
            let offset = (next() % ((SIZE - len) as u64 / 512 + 1)) * 512;
            let op = match next() % 10 {
                0 => Op::Flush,
                1..=3 => {
                    expected_reads.insert(id, model[offset as usize..][..len].to_vec());
                    Op::Read { offset, len }
                }
                _ => {
                    let data: Vec<u8> = (0..len).map(|_| next() as u8).collect();
                    model[offset as usize..][..len].copy_from_slice(&data);
                    Op::Write {
                        offset,
                        data: data.into(),
                    }
                }
            };
            tx.send(Job { id, op }).unwrap();
        }
        drop(tx);
        let deadline = Instant::now() + Duration::from_secs(60);
        while done.lock().unwrap().len() < n as usize {
            assert!(Instant::now() < deadline, "requests never completed");
            std::thread::sleep(Duration::from_millis(5));
        }
        thread.join().unwrap();
        for event in done.lock().unwrap().iter() {
            let (id, status, data) = decode(event).unwrap();
            assert_eq!(status, VIRTIO_BLK_S_OK, "request {id}");
            if let Some(want) = expected_reads.get(&id) {
                assert!(data == &want[..], "read {id} saw other data");
            }
        }
        assert!(std::fs::read(&path).unwrap() == model, "the file differs");
        std::fs::remove_file(&path).unwrap();
    }
}
