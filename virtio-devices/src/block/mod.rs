// Copyright 2026 The ft-cloud-hypervisor authors.
// SPDX-License-Identifier: Apache-2.0

//! virtio-blk on a raw file: read, write, flush and get-id.
//!
//! At a notify (vCPU thread) each request is checked; get-id, unsupported
//! types, out-of-range and read-only writes complete at once. Reads,
//! writes (their data copied out of guest memory there) and flushes go
//! through the [`OutputSink`] to the disk thread; each result comes back as
//! an event, applied at a later exit: read data copied into guest memory,
//! status written, used ring updated, interrupt sent.
//!
//! A device built [`without_backend`](Block::without_backend) (replay) has
//! no file and no thread: its outputs still go to the sink, which drops
//! them, and its results come only from the events applied to it. It keeps
//! its image's path, and opens it when it goes live (see [`backup`]).
//!
//! The image is opened through the host's page cache, or with `O_DIRECT`
//! (`--disk direct=on`): see [`image`].
//!
//! The disk thread marks the blocks each write changed in the device's
//! [`written::WrittenBlocks`] (for a copy of the image made while the
//! guest runs: FT VMotion with `disks=separate`).

pub mod backup;
pub mod digest;
pub mod image;
mod parallel;
pub mod worker;
pub mod written;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::Arc;
use std::thread::JoinHandle;

use devices::async_event::Waker;
use virtio_bindings::virtio_blk::{
    self, VIRTIO_BLK_T_FLUSH, VIRTIO_BLK_T_GET_ID, VIRTIO_BLK_T_IN, VIRTIO_BLK_T_OUT,
};
use virtio_bindings::virtio_ids;
use vm_memory::{Bytes, GuestAddress};
use vm_migration::{ByteReader, ByteWriter, CodecError};

use crate::chain::{self, Buffer, Chain, ChainError};
use crate::device::{Counters, DeviceFault, EventError, QueueContext, VirtioDevice};
use crate::go_live::{GoLive, GoLiveError};
use crate::output::{Output, OutputKind, OutputSink};
pub use digest::image_digest;
use image::Image;
pub use image::ImageMode;
use worker::{
    Completions, Job, JobSender, Op, VIRTIO_BLK_S_IOERR, VIRTIO_BLK_S_OK, VIRTIO_BLK_S_UNSUPP,
};
use written::WrittenBlocks;

/// Sector size.
pub const SECTOR_SIZE: u64 = 512;
/// virtio device type of a block device.
pub const VIRTIO_ID_BLOCK: u16 = virtio_ids::VIRTIO_ID_BLOCK as u16;
/// Queue size.
pub const QUEUE_SIZE: u16 = 128;
/// Largest request (data bytes) accepted; larger ones complete with
/// VIRTIO_BLK_S_IOERR (this bounds the host memory a request may take).
pub const MAX_REQUEST_BYTES: u64 = 4 << 20;
/// Segments per request advertised (VIRTIO_BLK_F_SEG_MAX): the queue size
/// less the header and status descriptors.
pub const SEG_MAX: u32 = QUEUE_SIZE as u32 - 2;
/// Length of the get-id answer.
pub const ID_BYTES: usize = 20;

const VIRTIO_BLK_F_SEG_MAX: u64 = 1 << virtio_blk::VIRTIO_BLK_F_SEG_MAX;
const VIRTIO_BLK_F_RO: u64 = 1 << virtio_blk::VIRTIO_BLK_F_RO;
const VIRTIO_BLK_F_FLUSH: u64 = 1 << virtio_blk::VIRTIO_BLK_F_FLUSH;
const HEADER_LEN: usize = 16;

/// Counter names (Cloud Hypervisor's).
pub const COUNTERS: &[&str] = &["read_bytes", "read_ops", "write_bytes", "write_ops"];
const READ_BYTES: usize = 0;
const READ_OPS: usize = 1;
const WRITE_BYTES: usize = 2;
const WRITE_OPS: usize = 3;

/// Errors opening a disk.
#[derive(Debug, thiserror::Error)]
pub enum BlockError {
    /// The file cannot be opened.
    #[error("cannot open disk image {path} ({mode})")]
    Open {
        /// The file.
        path: PathBuf,
        /// "read-only" or "read-write".
        mode: &'static str,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// `direct=on`, and the image's file system refuses `O_DIRECT`.
    #[error(
        "disk image {path} cannot be opened with O_DIRECT (direct=on): its file system refuses direct I/O"
    )]
    DirectRefused {
        /// The file.
        path: PathBuf,
        /// What the system said.
        #[source]
        source: std::io::Error,
    },
    /// `direct=on`, and the image's size is not a whole number of the
    /// blocks `O_DIRECT` needs on its file system.
    #[error(
        "disk image {path} has {size} bytes, not a multiple of {align}, the block size O_DIRECT (direct=on) needs on its file system"
    )]
    DirectSize {
        /// The file.
        path: PathBuf,
        /// Bytes in the file.
        size: u64,
        /// The file system's O_DIRECT offset alignment.
        align: u64,
    },
    /// The file's size cannot be read or it is not a regular file.
    #[error("disk image {path} is not a usable regular file")]
    NotAFile {
        /// The file.
        path: PathBuf,
    },
    /// The I/O thread cannot start.
    #[error("cannot start the disk I/O thread")]
    Thread(#[source] std::io::Error),
    /// The image's size is not the one the guest was given (the
    /// recording's).
    #[error("disk image {path} has {found} bytes, the recording has {recorded}")]
    SizeMismatch {
        /// The file.
        path: PathBuf,
        /// Bytes in the recording.
        recorded: u64,
        /// Bytes in the file.
        found: u64,
    },
    /// A backup's own copy of the image missed a write or flush while
    /// replaying: it no longer equals the primary's disk.
    #[error("the backup's copy {path} of the disk image failed a write or flush")]
    Copy {
        /// The file.
        path: PathBuf,
        /// Why (the first failure).
        #[source]
        source: std::io::Error,
    },
    /// The image cannot be read (computing its digest).
    #[error("cannot read disk image {path}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

#[derive(Debug)]
enum Kind {
    Read { buffers: Vec<Buffer>, len: usize },
    Write { len: usize },
    Flush,
}

#[derive(Debug)]
struct Pending {
    head: u16,
    status: GuestAddress,
    kind: Kind,
    /// What was issued, to issue it again at go-live (host memory only:
    /// not part of the saved state). `None` for a request restored from a
    /// state this device did not issue itself.
    op: Option<Op>,
}

/// A virtio-blk device.
#[derive(Debug)]
pub struct Block {
    id: String,
    path: PathBuf,
    size: u64,
    capacity: u64,
    mode: ImageMode,
    serial: [u8; ID_BYTES],
    sink: Arc<dyn OutputSink>,
    jobs: Option<JobSender>,
    done: Completions,
    pending: BTreeMap<u64, Pending>,
    next_request: u64,
    counters: Arc<Counters>,
    thread: Option<JoinHandle<()>>,
    /// A backup's own copy of the image (`disks=separate`), written at
    /// issue while replaying.
    copy: Option<Image>,
    /// The first write or flush the copy failed.
    copy_error: Option<(std::io::ErrorKind, String)>,
    /// The blocks the disk thread wrote, for a copy of the image made
    /// while the guest runs.
    written: Arc<WrittenBlocks>,
}

impl Block {
    /// Opens `path` as `mode` says (read-only, `O_DIRECT`) as device
    /// `id`; get-id answers `serial` (the id when absent), cut to 20 bytes.
    pub fn open(
        id: &str,
        path: &Path,
        mode: ImageMode,
        serial: Option<&str>,
        sink: Arc<dyn OutputSink>,
        waker: Arc<dyn Waker>,
    ) -> Result<Self, BlockError> {
        let (image, size) = Image::open(path, mode)?;
        let mut block = Self::without_backend(id, path, size, mode, serial, sink);
        block.start(image, waker)?;
        Ok(block)
    }

    /// Starts the disk thread on `image`.
    fn start(&mut self, image: Image, waker: Arc<dyn Waker>) -> Result<(), BlockError> {
        let (tx, rx) = mpsc::channel();
        let thread = worker::spawn(
            &self.id,
            image,
            rx,
            self.done.clone(),
            waker,
            self.written.clone(),
        )
        .map_err(BlockError::Thread)?;
        self.jobs = Some(tx);
        self.thread = Some(thread);
        Ok(())
    }

    /// A device of `size` bytes with no host side: no file is opened and
    /// no thread started. Requests are still handed to `sink` as outputs
    /// (to be dropped: performing them does nothing), and complete only
    /// through events applied to the device. For replay, where the events
    /// come from the log. `path` is the image it opens (as `mode` says)
    /// if it goes live.
    pub fn without_backend(
        id: &str,
        path: &Path,
        size: u64,
        mode: ImageMode,
        serial: Option<&str>,
        sink: Arc<dyn OutputSink>,
    ) -> Self {
        let mut id_bytes = [0u8; ID_BYTES];
        for (d, s) in id_bytes.iter_mut().zip(serial.unwrap_or(id).bytes()) {
            *d = s;
        }
        Block {
            id: id.to_string(),
            path: path.to_path_buf(),
            size,
            capacity: size / SECTOR_SIZE,
            mode,
            serial: id_bytes,
            sink,
            jobs: None,
            done: Completions::default(),
            pending: BTreeMap::new(),
            next_request: 0,
            counters: Arc::new(Counters::new(COUNTERS)),
            thread: None,
            copy: None,
            copy_error: None,
            written: WrittenBlocks::new(),
        }
    }

    /// Whether the device has a host side (a file and its I/O thread).
    pub fn has_backend(&self) -> bool {
        self.jobs.is_some()
    }

    /// The image size in bytes the device was built with.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The blocks its disk thread writes ([`written`]).
    pub fn written_blocks(&self) -> Arc<WrittenBlocks> {
        self.written.clone()
    }

    /// The device's counters.
    pub fn counters(&self) -> Arc<Counters> {
        self.counters.clone()
    }

    /// Capacity in sectors.
    pub fn capacity(&self) -> u64 {
        self.capacity
    }

    /// Issues a new request: its output goes to the sink (and, on a
    /// backup with its own copy of the image, a write or flush is
    /// performed on the copy now).
    fn submit(&mut self, mut pending: Pending, op: Op) {
        let id = self.next_request;
        self.next_request += 1;
        self.perform_on_copy(&op);
        pending.op = Some(op.clone());
        self.pending.insert(id, pending);
        self.issue(id, op);
    }

    /// Hands request `id` to the sink; performing it sends it to the disk
    /// thread, if there is one.
    fn issue(&self, id: u64, op: Op) {
        let kind = match &op {
            Op::Read { offset, len } => OutputKind::DiskRead {
                offset: *offset,
                len: *len,
            },
            Op::Write { offset, data } => OutputKind::DiskWrite {
                offset: *offset,
                len: data.len(),
            },
            Op::Flush => OutputKind::DiskFlush,
        };
        let tx = self.jobs.clone();
        self.sink.submit(Output::new(
            &self.id,
            kind,
            Box::new(move || {
                // The thread ends only when the device is dropped; without
                // a backend there is nothing to perform.
                if let Some(tx) = tx {
                    let _ = tx.send(Job { id, op });
                }
            }),
        ));
    }

    fn in_range(&self, sector: u64, len: u64) -> bool {
        len % SECTOR_SIZE == 0
            && len <= MAX_REQUEST_BYTES
            && sector
                .checked_add(len / SECTOR_SIZE)
                .is_some_and(|end| end <= self.capacity)
    }

    /// Handles one request chain: completes it at once (status written,
    /// used ring updated) or hands it to the disk thread.
    fn request(&mut self, chain: &Chain, ctx: &mut QueueContext) -> Result<(), ChainError> {
        let (status, data_out) = split_status(chain)?;
        let complete = |ctx: &mut QueueContext, status_byte: u8, len: u32| {
            ctx.mem
                .write_obj(status_byte, status)
                .map_err(|_| ChainError::OutOfRange {
                    addr: status.0,
                    len: 1,
                })?;
            crate::dirty::mark(status.0, 1);
            ctx.add_used(0, chain.head, len + 1)
        };
        let mut header = [0u8; HEADER_LEN];
        if chain::total_len(&chain.readable) < HEADER_LEN as u64 {
            return complete(ctx, VIRTIO_BLK_S_IOERR, 0);
        }
        chain::read_buffers(ctx.mem, &chain.readable, 0, &mut header)?;
        let kind = u32::from_le_bytes([header[0], header[1], header[2], header[3]]);
        let mut s = [0u8; 8];
        s.copy_from_slice(&header[8..16]);
        let sector = u64::from_le_bytes(s);
        let in_len = chain::total_len(&data_out);
        let out_len = chain::total_len(&chain.readable) - HEADER_LEN as u64;
        let pending = |kind| Pending {
            head: chain.head,
            status,
            kind,
            op: None,
        };
        match kind {
            VIRTIO_BLK_T_IN => {
                if !self.in_range(sector, in_len) {
                    return complete(ctx, VIRTIO_BLK_S_IOERR, 0);
                }
                let len = in_len as usize;
                self.submit(
                    pending(Kind::Read {
                        buffers: data_out,
                        len,
                    }),
                    Op::Read {
                        offset: sector * SECTOR_SIZE,
                        len,
                    },
                );
                Ok(())
            }
            VIRTIO_BLK_T_OUT => {
                if self.mode.readonly || !self.in_range(sector, out_len) {
                    return complete(ctx, VIRTIO_BLK_S_IOERR, 0);
                }
                let mut data = vec![0u8; out_len as usize];
                chain::read_buffers(ctx.mem, &chain.readable, HEADER_LEN as u64, &mut data)?;
                self.submit(
                    pending(Kind::Write { len: data.len() }),
                    Op::Write {
                        offset: sector * SECTOR_SIZE,
                        data: Arc::new(data),
                    },
                );
                Ok(())
            }
            VIRTIO_BLK_T_FLUSH => {
                self.submit(pending(Kind::Flush), Op::Flush);
                Ok(())
            }
            VIRTIO_BLK_T_GET_ID => {
                let n = chain::write_buffers(ctx.mem, &data_out, 0, &self.serial)?;
                complete(ctx, VIRTIO_BLK_S_OK, n as u32)
            }
            _ => complete(ctx, VIRTIO_BLK_S_UNSUPP, 0),
        }
    }
}

/// The status byte (last byte of the last device-writable buffer) and the
/// writable data buffers before it.
fn split_status(chain: &Chain) -> Result<(GuestAddress, Vec<Buffer>), ChainError> {
    let mut data: Vec<Buffer> = chain
        .writable
        .iter()
        .copied()
        .filter(|b| b.len > 0)
        .collect();
    let Some(last) = data.pop() else {
        return Err(ChainError::WrongDirection(
            "block request without a device-writable status byte",
        ));
    };
    let status = GuestAddress(last.addr.0 + u64::from(last.len) - 1);
    if last.len > 1 {
        data.push(Buffer {
            addr: last.addr,
            len: last.len - 1,
        });
    }
    Ok((status, data))
}

impl Drop for Block {
    fn drop(&mut self) {
        // The thread ends once every sender is gone (a sink may still hold
        // outputs with one): it is not joined here.
        self.jobs = None;
        self.thread = None;
    }
}

impl VirtioDevice for Block {
    fn device_type(&self) -> u16 {
        VIRTIO_ID_BLOCK
    }

    fn queue_max_sizes(&self) -> Vec<u16> {
        vec![QUEUE_SIZE]
    }

    fn features(&self) -> u64 {
        let mut f = VIRTIO_BLK_F_FLUSH | VIRTIO_BLK_F_SEG_MAX;
        if self.mode.readonly {
            f |= VIRTIO_BLK_F_RO;
        }
        f
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        // capacity (u64) at 0, size_max (u32, not offered) at 8, seg_max
        // (u32) at 12; the rest of virtio_blk_config reads zero.
        let mut cfg = [0u8; 16];
        cfg[..8].copy_from_slice(&self.capacity.to_le_bytes());
        cfg[12..16].copy_from_slice(&SEG_MAX.to_le_bytes());
        for (i, d) in data.iter_mut().enumerate() {
            *d = cfg.get(offset as usize + i).copied().unwrap_or(0);
        }
    }

    fn activate(&mut self, _features: u64) {}

    fn reset(&mut self) {
        // Results of requests in flight are dropped when they arrive.
        self.pending.clear();
    }

    fn process_queue(&mut self, index: usize, ctx: &mut QueueContext) -> Result<(), DeviceFault> {
        if index != 0 {
            return Ok(());
        }
        // Lengths are checked per request (an error status), not per chain.
        while let Some(chain) = ctx.pop(0, u64::MAX)? {
            self.request(&chain, ctx)?;
        }
        Ok(())
    }

    fn save_state(&self, w: &mut ByteWriter) {
        w.u64(self.next_request).u32(self.pending.len() as u32);
        for (id, p) in &self.pending {
            w.u64(*id).u32(u32::from(p.head)).u64(p.status.0);
            match &p.kind {
                Kind::Read { buffers, len } => {
                    w.u8(0).u64(*len as u64).u32(buffers.len() as u32);
                    for b in buffers {
                        w.u64(b.addr.0).u32(b.len);
                    }
                }
                Kind::Write { len } => {
                    w.u8(1).u64(*len as u64);
                }
                Kind::Flush => {
                    w.u8(2);
                }
            }
        }
    }

    fn restore_state(&mut self, r: &mut ByteReader<'_>) -> Result<(), CodecError> {
        let next_request = r.u64()?;
        let count = r.u32()?;
        let mut pending = BTreeMap::new();
        for _ in 0..count {
            let id = r.u64()?;
            let head = u16::try_from(r.u32()?).map_err(|_| r.bad("descriptor head"))?;
            let status = GuestAddress(r.u64()?);
            let kind = match r.u8()? {
                0 => {
                    let len = usize::try_from(r.u64()?).map_err(|_| r.bad("read length"))?;
                    let n = r.u32()?;
                    if u64::from(n) > u64::from(QUEUE_SIZE) || len as u64 > MAX_REQUEST_BYTES {
                        return Err(r.bad("read request"));
                    }
                    let mut buffers = Vec::with_capacity(n as usize);
                    for _ in 0..n {
                        buffers.push(Buffer {
                            addr: GuestAddress(r.u64()?),
                            len: r.u32()?,
                        });
                    }
                    Kind::Read { buffers, len }
                }
                1 => Kind::Write {
                    len: usize::try_from(r.u64()?).map_err(|_| r.bad("write length"))?,
                },
                2 => Kind::Flush,
                k => return Err(r.bad(format!("request kind {k}"))),
            };
            // What this device issued itself under the same id and head
            // (a replay that reached the checkpoint's point) keeps what is
            // needed to issue it again.
            let op = self
                .pending
                .get(&id)
                .filter(|p| p.head == head && p.status == status)
                .and_then(|p| p.op.clone());
            pending.insert(
                id,
                Pending {
                    head,
                    status,
                    kind,
                    op,
                },
            );
        }
        self.next_request = next_request;
        self.pending = pending;
        Ok(())
    }

    fn go_live(&mut self, live: &GoLive) -> Result<(), GoLiveError> {
        self.attach(live)
    }

    fn in_flight(&self) -> usize {
        self.pending.len()
    }

    fn poll_event(&mut self) -> Option<Vec<u8>> {
        self.done
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .pop_front()
    }

    fn apply_event(
        &mut self,
        event: &[u8],
        ctx: Option<&mut QueueContext>,
    ) -> Result<(), EventError> {
        let (id, status, data) = worker::decode(event)
            .ok_or_else(|| EventError::Malformed(format!("{} bytes", event.len())))?;
        if status > VIRTIO_BLK_S_UNSUPP {
            return Err(EventError::Malformed(format!("status {status}")));
        }
        let Some(p) = self.pending.remove(&id) else {
            // Issued before a device reset: nothing to complete.
            return Ok(());
        };
        let Some(ctx) = ctx else {
            return Ok(());
        };
        let mut len = 0u32;
        match (&p.kind, status) {
            (Kind::Read { buffers, len: want }, VIRTIO_BLK_S_OK) => {
                if data.len() != *want {
                    return Err(EventError::Malformed(format!(
                        "read of {want} bytes completed with {}",
                        data.len()
                    )));
                }
                let n =
                    chain::write_buffers(ctx.mem, buffers, 0, data).map_err(DeviceFault::from)?;
                len = n as u32;
                self.counters.add(READ_BYTES, n as u64);
                self.counters.add(READ_OPS, 1);
            }
            (Kind::Write { len: n }, VIRTIO_BLK_S_OK) => {
                self.counters.add(WRITE_BYTES, *n as u64);
                self.counters.add(WRITE_OPS, 1);
            }
            _ => {}
        }
        ctx.mem.write_obj(status, p.status).map_err(|_| {
            DeviceFault::from(ChainError::OutOfRange {
                addr: p.status.0,
                len: 1,
            })
        })?;
        crate::dirty::mark(p.status.0, 1);
        ctx.add_used(0, p.head, len + 1)
            .map_err(DeviceFault::from)?;
        Ok(())
    }
}

#[cfg(test)]
#[path = "tests.rs"]
mod tests;

#[cfg(test)]
#[path = "go_live_tests.rs"]
mod go_live_tests;
