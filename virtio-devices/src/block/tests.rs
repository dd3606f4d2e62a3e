// Copyright 2026 The ft-cloud-hypervisor authors.
// SPDX-License-Identifier: Apache-2.0

use std::fs::File;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use super::*;
use virtio_queue::Queue;

use crate::chain::testing::{desc, memory, publish, queue, used, AVAIL, F_NEXT, F_WRITE};
use crate::output::testing::HoldingSink;
use crate::output::ImmediateOutput;

#[derive(Debug)]
pub(super) struct NoWake;
impl Waker for NoWake {
    fn wake(&self) {}
}

pub(super) const HDR: u64 = 0x10000;
pub(super) const DATA: u64 = 0x20000;
pub(super) const STATUS: u64 = 0x30000;

pub(super) struct Disk {
    pub(super) path: PathBuf,
}

impl Disk {
    pub(super) fn new(tag: &str, sectors: u64) -> Self {
        let path = std::env::temp_dir().join(format!("vd-blk-{tag}-{}", std::process::id()));
        let f = File::create(&path).unwrap();
        f.set_len(sectors * SECTOR_SIZE).unwrap();
        Disk { path }
    }
}

impl Drop for Disk {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

pub(super) fn open(disk: &Disk, readonly: bool, sink: Arc<dyn OutputSink>) -> Block {
    Block::open(
        "_disk0",
        &disk.path,
        if readonly {
            ImageMode::READ_ONLY
        } else {
            ImageMode::READ_WRITE
        },
        Some("serial-1"),
        sink,
        Arc::new(NoWake),
    )
    .unwrap()
}

/// Lays out request `head` (descriptors head, head+1, head+2): header,
/// data of `len` bytes at DATA + off (device-writable for reads), status.
pub(super) fn request(
    mem: &GuestMemoryMmap,
    head: u16,
    kind: u32,
    sector: u64,
    len: u32,
    off: u64,
) {
    let mut h = [0u8; 16];
    h[0..4].copy_from_slice(&kind.to_le_bytes());
    h[8..16].copy_from_slice(&sector.to_le_bytes());
    let hdr = HDR + u64::from(head) * 16;
    mem.write_slice(&h, GuestAddress(hdr)).unwrap();
    let data_flags = if kind == VIRTIO_BLK_T_OUT {
        F_NEXT
    } else {
        F_NEXT | F_WRITE
    };
    desc(mem, 0, head, hdr, 16, F_NEXT, head + 1);
    if len > 0 {
        desc(mem, 0, head + 1, DATA + off, len, data_flags, head + 2);
    } else {
        desc(mem, 0, head + 1, DATA + off, 0, data_flags, head + 2);
    }
    desc(mem, 0, head + 2, STATUS + u64::from(head), 1, F_WRITE, 0);
    mem.write_obj(0xffu8, GuestAddress(STATUS + u64::from(head)))
        .unwrap();
}

pub(super) fn status(mem: &GuestMemoryMmap, head: u16) -> u8 {
    mem.read_obj(GuestAddress(STATUS + u64::from(head)))
        .unwrap()
}

pub(super) fn wait_event(block: &mut Block) -> Vec<u8> {
    let start = Instant::now();
    loop {
        if let Some(e) = block.poll_event() {
            return e;
        }
        assert!(start.elapsed() < Duration::from_secs(10), "no completion");
        std::thread::sleep(Duration::from_millis(1));
    }
}

pub(super) fn notify(
    block: &mut Block,
    mem: &GuestMemoryMmap,
    q: &mut [Queue],
) -> Result<u64, DeviceFault> {
    let mut ctx = QueueContext {
        mem,
        queues: q,
        used: 0,
    };
    block.process_queue(0, &mut ctx)?;
    Ok(ctx.used)
}

pub(super) fn apply(
    block: &mut Block,
    mem: &GuestMemoryMmap,
    q: &mut [Queue],
    event: &[u8],
) -> Result<u64, EventError> {
    let mut ctx = QueueContext {
        mem,
        queues: q,
        used: 0,
    };
    block.apply_event(event, Some(&mut ctx))?;
    Ok(ctx.used)
}

#[test]
fn config_and_features() {
    let disk = Disk::new("cfg", 8);
    let b = open(&disk, true, Arc::new(ImmediateOutput));
    assert_eq!(b.capacity(), 8);
    assert_eq!(
        b.features(),
        VIRTIO_BLK_F_FLUSH | VIRTIO_BLK_F_SEG_MAX | VIRTIO_BLK_F_RO
    );
    let mut cap = [0u8; 8];
    b.read_config(0, &mut cap);
    assert_eq!(u64::from_le_bytes(cap), 8);
    let mut tail = [0xffu8; 4];
    b.read_config(8, &mut tail);
    assert_eq!(tail, [0; 4]);
    b.read_config(12, &mut tail);
    assert_eq!(u32::from_le_bytes(tail), 126);
    b.read_config(16, &mut tail);
    assert_eq!(tail, [0; 4]);
    assert!(matches!(
        Block::open(
            "x",
            &PathBuf::from("/nonexistent/disk"),
            ImageMode::READ_WRITE,
            None,
            Arc::new(ImmediateOutput),
            Arc::new(NoWake)
        ),
        Err(BlockError::Open { .. })
    ));
    assert!(matches!(
        Block::open(
            "x",
            &PathBuf::from("/"),
            ImageMode::READ_ONLY,
            None,
            Arc::new(ImmediateOutput),
            Arc::new(NoWake)
        ),
        Err(BlockError::NotAFile { .. })
    ));
}

#[test]
fn write_flush_read_through_the_output_seam() {
    let disk = Disk::new("rw", 64);
    let sink = Arc::new(HoldingSink::default());
    let mut b = open(&disk, false, sink.clone());
    let mem = memory();
    let mut q = [queue(16, 0)];
    let pattern: Vec<u8> = (0..1024u32).map(|i| (i * 7) as u8).collect();
    mem.write_slice(&pattern, GuestAddress(DATA)).unwrap();
    request(&mem, 0, VIRTIO_BLK_T_OUT, 4, 1024, 0);
    request(&mem, 3, VIRTIO_BLK_T_FLUSH, 0, 0, 0);
    publish(&mem, 0, &[0, 3]);
    assert_eq!(
        notify(&mut b, &mem, &mut q).unwrap(),
        0,
        "nothing completes before I/O"
    );
    // Held by the sink: nothing reaches the disk thread yet.
    std::thread::sleep(Duration::from_millis(20));
    assert!(b.poll_event().is_none());
    assert_eq!(
        sink.release_all(),
        vec![
            OutputKind::DiskWrite {
                offset: 2048,
                len: 1024
            },
            OutputKind::DiskFlush
        ]
    );
    for _ in 0..2 {
        let e = wait_event(&mut b);
        assert_eq!(apply(&mut b, &mem, &mut q, &e).unwrap(), 1);
    }
    assert_eq!(status(&mem, 0), VIRTIO_BLK_S_OK);
    assert_eq!(status(&mem, 3), VIRTIO_BLK_S_OK);
    assert_eq!(used(&mem, 0), (2, vec![(0, 1), (3, 1)]));
    let on_disk = std::fs::read(&disk.path).unwrap();
    assert_eq!(&on_disk[2048..3072], &pattern[..]);

    // Read it back into another buffer.
    request(&mem, 6, VIRTIO_BLK_T_IN, 4, 1024, 0x4000);
    publish_more(&mem, 2, &[6]);
    notify(&mut b, &mem, &mut q).unwrap();
    assert_eq!(
        sink.release_all(),
        vec![OutputKind::DiskRead {
            offset: 2048,
            len: 1024
        }]
    );
    let e = wait_event(&mut b);
    apply(&mut b, &mem, &mut q, &e).unwrap();
    let mut back = vec![0u8; 1024];
    mem.read_slice(&mut back, GuestAddress(DATA + 0x4000))
        .unwrap();
    assert_eq!(back, pattern);
    assert_eq!(used(&mem, 0).1[2], (6, 1025));
    let c = b.counters().snapshot();
    assert_eq!(
        (
            c["write_ops"],
            c["write_bytes"],
            c["read_ops"],
            c["read_bytes"]
        ),
        (1, 1024, 1, 1024)
    );
}

/// Adds `heads` to the available ring after `already` entries.
pub(super) fn publish_more(mem: &GuestMemoryMmap, already: u16, heads: &[u16]) {
    for (i, h) in heads.iter().enumerate() {
        let slot = u64::from(already) + i as u64;
        mem.write_obj(*h, GuestAddress(AVAIL + 4 + 2 * slot))
            .unwrap();
    }
    mem.write_obj(already + heads.len() as u16, GuestAddress(AVAIL + 2))
        .unwrap();
}

#[test]
fn immediate_completions() {
    let disk = Disk::new("imm", 8);
    let mut b = open(&disk, true, Arc::new(ImmediateOutput));
    let mem = memory();
    let mut q = [queue(32, 0)];
    // Write on a read-only disk, read past the end, odd length, get-id,
    // an unknown type.
    request(&mem, 0, VIRTIO_BLK_T_OUT, 0, 512, 0);
    request(&mem, 3, VIRTIO_BLK_T_IN, 7, 1024, 0);
    request(&mem, 6, VIRTIO_BLK_T_IN, 0, 100, 0);
    request(&mem, 9, VIRTIO_BLK_T_GET_ID, 0, 20, 0x1000);
    request(&mem, 12, 99, 0, 0, 0);
    publish(&mem, 0, &[0, 3, 6, 9, 12]);
    assert_eq!(notify(&mut b, &mem, &mut q).unwrap(), 1);
    assert_eq!(status(&mem, 0), VIRTIO_BLK_S_IOERR);
    assert_eq!(status(&mem, 3), VIRTIO_BLK_S_IOERR);
    assert_eq!(status(&mem, 6), VIRTIO_BLK_S_IOERR);
    assert_eq!(status(&mem, 9), VIRTIO_BLK_S_OK);
    assert_eq!(status(&mem, 12), VIRTIO_BLK_S_UNSUPP);
    let mut id = [0u8; 20];
    mem.read_slice(&mut id, GuestAddress(DATA + 0x1000))
        .unwrap();
    assert_eq!(&id[..8], b"serial-1");
    assert_eq!(id[8], 0);
    let (n, entries) = used(&mem, 0);
    assert_eq!(n, 5);
    assert_eq!(entries[3], (9, 21));
    // A read larger than MAX_REQUEST_BYTES (9 x 512 KiB over one buffer).
    let mut q = [queue(32, 0)];
    let disk2 = Disk::new("big", 16384);
    let sink = Arc::new(HoldingSink::default());
    let mut big = open(&disk2, false, sink.clone());
    let mut h = [0u8; 16];
    h[0] = VIRTIO_BLK_T_IN as u8;
    mem.write_slice(&h, GuestAddress(HDR)).unwrap();
    desc(&mem, 0, 0, HDR, 16, F_NEXT, 1);
    for i in 1..10u16 {
        desc(&mem, 0, i, 0x80000, 512 << 10, F_NEXT | F_WRITE, i + 1);
    }
    desc(&mem, 0, 10, STATUS, 1, F_WRITE, 0);
    // Status 0 is still IOERR from the first request above: reset it.
    mem.write_obj(0xffu8, GuestAddress(STATUS)).unwrap();
    publish(&mem, 0, &[0]);
    assert_eq!(notify(&mut big, &mem, &mut q).unwrap(), 1);
    assert_eq!(status(&mem, 0), VIRTIO_BLK_S_IOERR);
    let (n, entries) = used(&mem, 0);
    assert_eq!(
        (n, entries[0]),
        (1, (0, 1)),
        "completed at once, status only"
    );
    // Nothing went to the sink (so nothing to the disk thread), and no
    // completion will come.
    assert!(
        sink.release_all().is_empty(),
        "the oversized read was submitted"
    );
    std::thread::sleep(Duration::from_millis(20));
    assert!(big.poll_event().is_none());
    assert_eq!(big.counters().snapshot()["read_ops"], 0);
}

#[test]
fn malformed_requests_fault() {
    let disk = Disk::new("bad", 8);
    let mut b = open(&disk, false, Arc::new(ImmediateOutput));
    let mem = memory();
    let mut q = [queue(8, 0)];
    // No device-writable byte for the status.
    desc(&mem, 0, 0, HDR, 16, 0, 0);
    publish(&mem, 0, &[0]);
    assert_eq!(
        notify(&mut b, &mem, &mut q),
        Err(DeviceFault::Chain(ChainError::WrongDirection(
            "block request without a device-writable status byte"
        )))
    );
    // A loop.
    let mut q = [queue(8, 0)];
    desc(&mem, 0, 0, HDR, 16, F_NEXT, 1);
    desc(&mem, 0, 1, STATUS, 1, F_NEXT | F_WRITE, 1);
    assert_eq!(
        notify(&mut b, &mem, &mut q),
        Err(DeviceFault::Chain(ChainError::Loop(0)))
    );
    // A data buffer outside guest memory.
    let mut q = [queue(8, 0)];
    request(&mem, 0, VIRTIO_BLK_T_IN, 0, 512, 0);
    desc(&mem, 0, 1, 0x8000_0000, 512, F_NEXT | F_WRITE, 2);
    assert!(matches!(
        notify(&mut b, &mem, &mut q),
        Err(DeviceFault::Chain(ChainError::OutOfRange { .. }))
    ));
    // A short header completes with an error status.
    let mut q = [queue(8, 0)];
    desc(&mem, 0, 0, HDR, 8, F_NEXT, 1);
    desc(&mem, 0, 1, STATUS, 1, F_WRITE, 0);
    notify(&mut b, &mem, &mut q).unwrap();
    assert_eq!(status(&mem, 0), VIRTIO_BLK_S_IOERR);
}

#[test]
fn events_are_checked_and_stale_ones_dropped() {
    let disk = Disk::new("ev", 8);
    let mut b = open(&disk, false, Arc::new(ImmediateOutput));
    let mem = memory();
    let mut q = [queue(8, 0)];
    assert!(matches!(
        apply(&mut b, &mem, &mut q, &[1, 2]),
        Err(EventError::Malformed(_))
    ));
    // Unknown request id: issued before a reset, nothing to do.
    assert_eq!(
        apply(&mut b, &mem, &mut q, &worker::encode(42, 0, &[])).unwrap(),
        0
    );
    assert!(matches!(
        apply(&mut b, &mem, &mut q, &worker::encode(0, 9, &[])),
        Err(EventError::Malformed(_))
    ));
    request(&mem, 0, VIRTIO_BLK_T_IN, 0, 512, 0);
    publish(&mem, 0, &[0]);
    notify(&mut b, &mem, &mut q).unwrap();
    let e = wait_event(&mut b);
    // Wrong data length for the read.
    let mut short = e.clone();
    short.truncate(100);
    assert!(matches!(
        apply(&mut b, &mem, &mut q, &short),
        Err(EventError::Malformed(_))
    ));
    // The request is gone after that malformed event: even the right bytes do nothing.
    assert_eq!(apply(&mut b, &mem, &mut q, &e).unwrap(), 0);

    // Reset drops requests in flight.
    let mut q = [queue(8, 0)];
    request(&mem, 0, VIRTIO_BLK_T_IN, 0, 512, 0);
    publish(&mem, 0, &[0]);
    notify(&mut b, &mem, &mut q).unwrap();
    b.reset();
    let e = wait_event(&mut b);
    assert_eq!(apply(&mut b, &mem, &mut q, &e).unwrap(), 0);
    assert_eq!(used(&mem, 0).0, 0);
}

#[test]
fn replaying_event_bytes_reproduces_guest_memory() {
    // A primary does the read; a "backup" with an empty disk applies the
    // primary's event bytes: the guest sees the same data, no host read.
    let disk = Disk::new("rep-a", 8);
    std::fs::write(&disk.path, vec![0x5a; 4096]).unwrap();
    let empty = Disk::new("rep-b", 8);
    let mut primary = open(&disk, false, Arc::new(ImmediateOutput));
    let hold = Arc::new(HoldingSink::default());
    let mut backup = open(&empty, false, hold.clone());
    let (mem_a, mem_b) = (memory(), memory());
    let (mut qa, mut qb) = ([queue(8, 0)], [queue(8, 0)]);
    for (m, q, b) in [
        (&mem_a, &mut qa, &mut primary),
        (&mem_b, &mut qb, &mut backup),
    ] {
        request(m, 0, VIRTIO_BLK_T_IN, 1, 1024, 0);
        publish(m, 0, &[0]);
        notify(b, m, q).unwrap();
    }
    let e = wait_event(&mut primary);
    apply(&mut primary, &mem_a, &mut qa, &e).unwrap();
    apply(&mut backup, &mem_b, &mut qb, &e).unwrap();
    let (mut a, mut b) = (vec![0u8; 0x40000], vec![0u8; 0x40000]);
    mem_a.read_slice(&mut a, GuestAddress(0)).unwrap();
    mem_b.read_slice(&mut b, GuestAddress(0)).unwrap();
    assert!(a == b, "guest memory differs");
    assert_eq!(&a[DATA as usize..DATA as usize + 4], &[0x5a; 4]);
    // The backup's own read never ran: its sink still holds it.
    assert_eq!(hold.held.lock().unwrap().len(), 1);
}

#[test]
fn pending_state_is_checked_on_restore() {
    let disk = Disk::new("st", 8);
    let mut b = open(&disk, false, Arc::new(ImmediateOutput));
    let mut w = ByteWriter::new();
    w.u64(5).u32(1).u64(4).u32(0).u64(STATUS).u8(7);
    let bad = w.into_inner();
    assert!(b.restore_state(&mut ByteReader::new(&bad)).is_err());
    let mut w = ByteWriter::new();
    w.u64(5).u32(1).u64(4).u32(0).u64(STATUS).u8(2);
    let flush = w.into_inner();
    b.restore_state(&mut ByteReader::new(&flush)).unwrap();
    let mut w = ByteWriter::new();
    b.save_state(&mut w);
    assert_eq!(w.into_inner(), flush);
    // The restored flush completes from its event.
    let mem = memory();
    let mut q = [queue(8, 0)];
    assert_eq!(
        apply(&mut b, &mem, &mut q, &worker::encode(4, 0, &[])).unwrap(),
        1
    );
    assert_eq!(status(&mem, 0), VIRTIO_BLK_S_OK);
}

#[test]
fn without_a_backend_outputs_are_dropped_and_events_complete_requests() {
    // The recording VM's device does the I/O; a replaying one has no file
    // at all, drops its outputs and completes from the same event bytes.
    let disk = Disk::new("nob-a", 8);
    std::fs::write(&disk.path, vec![0x3c; 4096]).unwrap();
    let mut primary = open(&disk, false, Arc::new(ImmediateOutput));
    let dropped = Arc::new(crate::output::DroppedOutput::default());
    let mut replica = Block::without_backend(
        "_disk0",
        Path::new("/nonexistent"),
        4096,
        ImageMode::READ_WRITE,
        Some("serial-1"),
        dropped.clone(),
    );
    assert!(primary.has_backend() && !replica.has_backend());
    assert_eq!((replica.size(), replica.capacity()), (4096, 8));
    let (mem_a, mem_b) = (memory(), memory());
    let (mut qa, mut qb) = ([queue(16, 0)], [queue(16, 0)]);
    mem_a.write_slice(&[7u8; 512], GuestAddress(DATA)).unwrap();
    mem_b.write_slice(&[7u8; 512], GuestAddress(DATA)).unwrap();
    for (m, q, b) in [
        (&mem_a, &mut qa, &mut primary),
        (&mem_b, &mut qb, &mut replica),
    ] {
        request(m, 0, VIRTIO_BLK_T_IN, 1, 1024, 0x1000);
        request(m, 3, VIRTIO_BLK_T_OUT, 0, 512, 0);
        request(m, 6, VIRTIO_BLK_T_FLUSH, 0, 0, 0);
        publish(m, 0, &[0, 3, 6]);
        assert_eq!(notify(b, m, q).unwrap(), 0);
    }
    assert_eq!(dropped.dropped(), 3);
    for _ in 0..3 {
        let e = wait_event(&mut primary);
        apply(&mut primary, &mem_a, &mut qa, &e).unwrap();
        apply(&mut replica, &mem_b, &mut qb, &e).unwrap();
    }
    // Nothing came from a host thread on the replica.
    std::thread::sleep(Duration::from_millis(20));
    assert!(replica.poll_event().is_none());
    let (mut a, mut b) = (vec![0u8; 0x40000], vec![0u8; 0x40000]);
    mem_a.read_slice(&mut a, GuestAddress(0)).unwrap();
    mem_b.read_slice(&mut b, GuestAddress(0)).unwrap();
    assert!(a == b, "guest memory differs");
    assert_eq!(used(&mem_b, 0).0, 3);
    assert_eq!(status(&mem_b, 3), VIRTIO_BLK_S_OK);
    let on_disk = std::fs::read(&disk.path).unwrap();
    assert_eq!(&on_disk[..512], &[7u8; 512][..]);
}
