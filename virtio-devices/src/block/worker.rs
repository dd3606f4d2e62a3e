// Copyright 2026 The ft-cloud-hypervisor authors.
// SPDX-License-Identifier: Apache-2.0

//! The disk I/O thread: performs reads, writes and flushes on the raw image
//! (through the page cache or with `O_DIRECT`: [`super::image`]) into
//! host buffers, and posts each result as event bytes.
//!
//! Event bytes: request id (u64 LE), virtio status (u8), then the data read
//! (reads that succeeded only).

use std::collections::VecDeque;
use std::sync::mpsc::{Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use devices::async_event::Waker;

use virtio_bindings::virtio_blk;

use super::image::Image;
use super::written::WrittenBlocks;

/// Request completed.
pub const VIRTIO_BLK_S_OK: u8 = virtio_blk::VIRTIO_BLK_S_OK as u8;
/// Request failed.
pub const VIRTIO_BLK_S_IOERR: u8 = virtio_blk::VIRTIO_BLK_S_IOERR as u8;
/// Request type not supported.
pub const VIRTIO_BLK_S_UNSUPP: u8 = virtio_blk::VIRTIO_BLK_S_UNSUPP as u8;

/// Bytes before the data in an event.
pub const EVENT_HEADER: usize = 9;

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
        /// The bytes (shared with the request in flight, which keeps them
        /// to issue it again at go-live).
        data: Arc<Vec<u8>>,
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

/// Performs `op` on `image`: the virtio status and the data read.
pub(crate) fn perform(image: &mut Image, op: Op) -> (u8, Vec<u8>) {
    match op {
        Op::Read { offset, len } => match image.read_at(offset, len) {
            Ok(buf) => (VIRTIO_BLK_S_OK, buf),
            Err(e) => {
                log::warn!("disk read of {len} bytes at {offset} failed: {e}");
                (VIRTIO_BLK_S_IOERR, Vec::new())
            }
        },
        Op::Write { offset, data } => match image.write_at(&data, offset) {
            Ok(()) => (VIRTIO_BLK_S_OK, Vec::new()),
            Err(e) => {
                log::warn!("disk write of {} bytes at {offset} failed: {e}", data.len());
                (VIRTIO_BLK_S_IOERR, Vec::new())
            }
        },
        Op::Flush => match image.sync_data() {
            Ok(()) => (VIRTIO_BLK_S_OK, Vec::new()),
            Err(e) => {
                log::warn!("disk flush failed: {e}");
                (VIRTIO_BLK_S_IOERR, Vec::new())
            }
        },
    }
}

/// Starts the thread for `image` (with helpers for an `O_DIRECT` image:
/// [`super::parallel`]); it ends when every sender of `jobs` is
/// gone. Each write's blocks are marked in `written` once it is done
/// (failed writes too: the file may have changed).
pub fn spawn(
    name: &str,
    mut image: Image,
    jobs: Receiver<Job>,
    done: Completions,
    waker: Arc<dyn Waker>,
    written: Arc<WrittenBlocks>,
) -> std::io::Result<JoinHandle<()>> {
    if image.is_direct() {
        return super::parallel::spawn(name, image, jobs, done, waker, written);
    }
    std::thread::Builder::new()
        .name(format!("{name}-io"))
        .spawn(move || {
            while let Ok(job) = jobs.recv() {
                let wrote = match &job.op {
                    Op::Write { offset, data } => Some((*offset, data.len() as u64)),
                    _ => None,
                };
                let (status, data) = perform(&mut image, job.op);
                if let Some((offset, len)) = wrote {
                    written.mark(offset, len);
                }
                done.lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push_back(encode(job.id, status, &data));
                waker.wake();
            }
        })
}

/// A channel to the thread.
pub type JobSender = Sender<Job>;

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
        use super::super::image::ImageMode;
        for direct in [false, true] {
            let path =
                std::env::temp_dir().join(format!("vd-worker-{direct}-{}", std::process::id()));
            std::fs::write(&path, vec![0u8; 4096]).unwrap();
            let mode = ImageMode {
                readonly: false,
                direct,
            };
            let (mut image, size) = Image::open(&path, mode).unwrap();
            assert_eq!((size, image.is_direct()), (4096, direct));
            assert_eq!(
                perform(
                    &mut image,
                    Op::Write {
                        offset: 512,
                        data: vec![9; 512].into()
                    }
                ),
                (VIRTIO_BLK_S_OK, vec![])
            );
            assert_eq!(perform(&mut image, Op::Flush).0, VIRTIO_BLK_S_OK);
            assert_eq!(
                perform(
                    &mut image,
                    Op::Read {
                        offset: 512,
                        len: 512
                    }
                ),
                (VIRTIO_BLK_S_OK, vec![9; 512])
            );
            // Past the end of the file.
            assert_eq!(
                perform(
                    &mut image,
                    Op::Read {
                        offset: 3800,
                        len: 512
                    }
                )
                .0,
                VIRTIO_BLK_S_IOERR
            );
            std::fs::remove_file(&path).unwrap();
        }
    }
}
