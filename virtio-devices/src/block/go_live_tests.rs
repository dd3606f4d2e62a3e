// Copyright 2026 The ft-cloud-hypervisor authors.
// SPDX-License-Identifier: Apache-2.0

//! A disk built without its backend (or with a backup's own copy) that
//! goes live on a real file.

use std::fs::OpenOptions;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use vm_memory::{Bytes, GuestAddress};

use super::image::Image;
use super::tests::{apply, notify, publish_more, request, status, wait_event, Disk, NoWake, DATA};
use super::*;
use crate::chain::testing::{memory, publish, queue, used};
use crate::output::testing::HoldingSink;
use crate::output::{DroppedOutput, ImmediateOutput};

fn live(sink: Arc<dyn OutputSink>) -> GoLive {
    GoLive {
        waker: Arc::new(NoWake),
        sink,
    }
}

fn event_id(e: &[u8]) -> u64 {
    worker::decode(e).unwrap().0
}

/// Writes `data` into the image at `offset`, as the primary did.
fn write_at(disk: &Disk, offset: u64, data: &[u8]) {
    let f = OpenOptions::new().write(true).open(&disk.path).unwrap();
    std::os::unix::fs::FileExt::write_all_at(&f, data, offset).unwrap();
}

#[test]
fn going_live_issues_the_pending_requests_again_once_each() {
    // A shared image the primary wrote sector 1 of; this device replayed
    // four requests and has the completion of the first one only.
    let disk = Disk::new("gl", 64);
    let a = [0xa1u8; 512];
    write_at(&disk, 512, &a);
    let dropped = Arc::new(DroppedOutput::default());
    let mut b = Block::without_backend(
        "_disk0",
        &disk.path,
        64 * SECTOR_SIZE,
        ImageMode::READ_WRITE,
        None,
        dropped.clone(),
    );
    let mem = memory();
    let mut q = [queue(32, 0)];
    let pattern: Vec<u8> = (0..1024u32).map(|i| (i * 13) as u8).collect();
    mem.write_slice(&a, GuestAddress(DATA)).unwrap();
    mem.write_slice(&pattern, GuestAddress(DATA + 0x2000))
        .unwrap();
    request(&mem, 0, VIRTIO_BLK_T_OUT, 1, 512, 0);
    request(&mem, 3, VIRTIO_BLK_T_IN, 1, 512, 0x1000);
    request(&mem, 6, VIRTIO_BLK_T_OUT, 4, 1024, 0x2000);
    request(&mem, 9, VIRTIO_BLK_T_FLUSH, 0, 0, 0);
    publish(&mem, 0, &[0, 3, 6, 9]);
    assert_eq!(notify(&mut b, &mem, &mut q).unwrap(), 0);
    assert_eq!(dropped.dropped(), 4);
    // The logged completion of request 0 (the first write).
    let logged = worker::encode(0, VIRTIO_BLK_S_OK, &[]);
    assert_eq!(apply(&mut b, &mem, &mut q, &logged).unwrap(), 1);
    std::thread::sleep(Duration::from_millis(20));
    assert!(b.poll_event().is_none(), "a device without backend did I/O");
    let before = std::fs::read(&disk.path).unwrap();
    assert!(before[2048..3072].iter().all(|&x| x == 0));

    let sink = Arc::new(HoldingSink::default());
    b.go_live(&live(sink.clone())).unwrap();
    assert!(b.has_backend());
    // Issued again in their original order, through the new sink; the
    // completed write is not.
    assert_eq!(
        sink.release_all(),
        vec![
            OutputKind::DiskRead {
                offset: 512,
                len: 512
            },
            OutputKind::DiskWrite {
                offset: 2048,
                len: 1024
            },
            OutputKind::DiskFlush,
        ]
    );
    let mut ids = Vec::new();
    for _ in 0..3 {
        let e = wait_event(&mut b);
        ids.push(event_id(&e));
        assert_eq!(apply(&mut b, &mem, &mut q, &e).unwrap(), 1);
    }
    // The same request ids (one disk thread: in order).
    assert_eq!(ids, [1, 2, 3]);
    std::thread::sleep(Duration::from_millis(20));
    assert!(b.poll_event().is_none(), "a request was issued twice");
    for head in [0, 3, 6, 9] {
        assert_eq!(status(&mem, head), VIRTIO_BLK_S_OK, "head {head}");
    }
    assert_eq!(used(&mem, 0), (4, vec![(0, 1), (3, 513), (6, 1), (9, 1)]));
    let mut back = [0u8; 512];
    mem.read_slice(&mut back, GuestAddress(DATA + 0x1000))
        .unwrap();
    assert_eq!(back, a, "the re-issued read");
    let on_disk = std::fs::read(&disk.path).unwrap();
    assert_eq!(&on_disk[2048..3072], &pattern[..], "the re-issued write");
    // Completions for ids already completed (a logged one arriving late,
    // a duplicate) complete nothing.
    for id in [0, 2, 3] {
        let e = worker::encode(id, VIRTIO_BLK_S_OK, &[]);
        assert_eq!(apply(&mut b, &mem, &mut q, &e).unwrap(), 0, "id {id}");
    }
    assert_eq!(used(&mem, 0).0, 4);

    // New requests after go-live are performed by the disk thread, with
    // ids that continue.
    request(&mem, 12, VIRTIO_BLK_T_IN, 4, 1024, 0x4000);
    publish_more(&mem, 4, &[12]);
    notify(&mut b, &mem, &mut q).unwrap();
    assert_eq!(sink.release_all().len(), 1);
    let e = wait_event(&mut b);
    assert_eq!(event_id(&e), 4);
    apply(&mut b, &mem, &mut q, &e).unwrap();
    let mut back = vec![0u8; 1024];
    mem.read_slice(&mut back, GuestAddress(DATA + 0x4000))
        .unwrap();
    assert_eq!(back, pattern);

    // Twice is an error.
    let err = b.go_live(&live(sink.clone())).unwrap_err();
    assert!(matches!(err, GoLiveError::AlreadyLive(_)), "{err}");
    assert_eq!(
        err.to_string(),
        "device _disk0 already has its host backend"
    );
    // So is going live for a device built with its backend.
    let mut opened = tests::open(&disk, false, Arc::new(ImmediateOutput));
    assert!(matches!(
        opened.go_live(&live(Arc::new(ImmediateOutput))),
        Err(GoLiveError::AlreadyLive(_))
    ));
}

#[test]
fn going_live_checks_the_image() {
    let mut b = Block::without_backend(
        "_disk0",
        Path::new("/nonexistent/disk.img"),
        4096,
        ImageMode::READ_WRITE,
        None,
        Arc::new(DroppedOutput::default()),
    );
    let err = b.go_live(&live(Arc::new(ImmediateOutput))).unwrap_err();
    assert_eq!(
        crate::transport::error_chain(&err),
        "disk _disk0 cannot go live: cannot open disk image /nonexistent/disk.img \
         (read-write): No such file or directory (os error 2)"
    );
    assert!(!b.has_backend(), "half live after a failure");
    // An image whose size is not the recorded one.
    let disk = Disk::new("gl-size", 4);
    let mut b = Block::without_backend(
        "_disk0",
        &disk.path,
        4096,
        ImageMode::READ_ONLY,
        None,
        Arc::new(DroppedOutput::default()),
    );
    let err = b.go_live(&live(Arc::new(ImmediateOutput))).unwrap_err();
    assert!(
        matches!(
            &err,
            GoLiveError::Disk {
                source: BlockError::SizeMismatch {
                    recorded: 4096,
                    found: 2048,
                    ..
                },
                ..
            }
        ),
        "{err:?}"
    );
    assert!(!b.has_backend());
}

#[test]
fn a_separate_copy_is_written_while_replaying_without_events() {
    let disk = Disk::new("sep", 64);
    let dropped = Arc::new(DroppedOutput::default());
    let mut b = Block::backup_separate(
        "_disk0",
        &disk.path,
        ImageMode::READ_WRITE,
        None,
        64 * SECTOR_SIZE,
        dropped.clone(),
    )
    .unwrap();
    assert!(b.has_copy() && !b.has_backend());
    let mem = memory();
    let mut q = [queue(32, 0)];
    let pattern: Vec<u8> = (0..1024u32).map(|i| (i * 7 + 1) as u8).collect();
    mem.write_slice(&pattern, GuestAddress(DATA)).unwrap();
    request(&mem, 0, VIRTIO_BLK_T_OUT, 2, 1024, 0);
    request(&mem, 3, VIRTIO_BLK_T_FLUSH, 0, 0, 0);
    request(&mem, 6, VIRTIO_BLK_T_IN, 2, 1024, 0x1000);
    publish(&mem, 0, &[0, 3, 6]);
    assert_eq!(notify(&mut b, &mem, &mut q).unwrap(), 0);
    // Written at issue, before any completion; the outputs were dropped
    // and the copy produces no events.
    let on_disk = std::fs::read(&disk.path).unwrap();
    assert_eq!(&on_disk[1024..2048], &pattern[..]);
    assert_eq!(dropped.dropped(), 3);
    std::thread::sleep(Duration::from_millis(20));
    assert!(b.poll_event().is_none());
    // Completions come from the log: the write's.
    let logged = worker::encode(0, VIRTIO_BLK_S_OK, &[]);
    assert_eq!(apply(&mut b, &mem, &mut q, &logged).unwrap(), 1);
    // The guest's read buffer was not touched: reads are not performed.
    let mut back = vec![0u8; 1024];
    mem.read_slice(&mut back, GuestAddress(DATA + 0x1000))
        .unwrap();
    assert!(back.iter().all(|&x| x == 0));

    b.go_live(&live(Arc::new(ImmediateOutput))).unwrap();
    assert!(b.has_backend() && !b.has_copy());
    let mut ids = Vec::new();
    for _ in 0..2 {
        let e = wait_event(&mut b);
        ids.push(event_id(&e));
        assert_eq!(apply(&mut b, &mem, &mut q, &e).unwrap(), 1);
    }
    assert_eq!(ids, [1, 2]);
    mem.read_slice(&mut back, GuestAddress(DATA + 0x1000))
        .unwrap();
    assert_eq!(back, pattern, "the re-issued read of the copy");
    assert_eq!(used(&mem, 0), (3, vec![(0, 1), (3, 1), (6, 1025)]));
}

#[test]
fn a_separate_copy_of_another_size_is_refused() {
    let disk = Disk::new("sep-size", 8);
    let err = Block::backup_separate(
        "_disk0",
        &disk.path,
        ImageMode::READ_WRITE,
        None,
        16 * SECTOR_SIZE,
        Arc::new(DroppedOutput::default()),
    )
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "disk image {} has 4096 bytes, the recording has 8192",
            disk.path.display()
        )
    );
    assert!(matches!(
        Block::backup_separate(
            "_disk0",
            Path::new("/nonexistent/copy.img"),
            ImageMode::READ_WRITE,
            None,
            4096,
            Arc::new(DroppedOutput::default()),
        ),
        Err(BlockError::Open { .. })
    ));
}

#[derive(Debug, Default)]
struct CountWake(AtomicUsize);
impl Waker for CountWake {
    fn wake(&self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

#[test]
fn restored_requests_keep_what_this_device_issued() {
    // A checkpoint's device state restored over the device's own: the
    // requests it issued itself keep what is needed to issue them again.
    let disk = Disk::new("gl-restore", 8);
    write_at(&disk, 0, &[0x77; 512]);
    let mut b = Block::without_backend(
        "_disk0",
        &disk.path,
        8 * SECTOR_SIZE,
        ImageMode::READ_WRITE,
        None,
        Arc::new(DroppedOutput::default()),
    );
    let mem = memory();
    let mut q = [queue(8, 0)];
    request(&mem, 0, VIRTIO_BLK_T_IN, 0, 512, 0);
    publish(&mem, 0, &[0]);
    notify(&mut b, &mem, &mut q).unwrap();
    let mut w = ByteWriter::new();
    b.save_state(&mut w);
    let state = w.into_inner();
    b.restore_state(&mut ByteReader::new(&state)).unwrap();
    let mut w = ByteWriter::new();
    b.save_state(&mut w);
    assert_eq!(w.into_inner(), state, "the saved state changed");
    // A state with a second request (a flush, id 1) this device never
    // issued: it cannot be issued again, and completes with an I/O error.
    let mut w = ByteWriter::new();
    w.u64(2).u32(2);
    w.u64(0).u32(0).u64(tests::STATUS).u8(0).u64(512).u32(1);
    w.u64(DATA).u32(512);
    w.u64(1).u32(3).u64(tests::STATUS + 3).u8(2);
    let two = w.into_inner();
    b.restore_state(&mut ByteReader::new(&two)).unwrap();
    let waker = Arc::new(CountWake::default());
    b.go_live(&GoLive {
        waker: waker.clone(),
        sink: Arc::new(ImmediateOutput),
    })
    .unwrap();
    // The I/O error is an event like any completion: the vCPU is woken.
    assert!(waker.0.load(Ordering::SeqCst) >= 1);
    let mut got = Vec::new();
    for _ in 0..2 {
        let e = wait_event(&mut b);
        let (id, st, _) = worker::decode(&e).unwrap();
        got.push((id, st));
        apply(&mut b, &mem, &mut q, &e).unwrap();
    }
    got.sort_unstable();
    assert_eq!(got, [(0, VIRTIO_BLK_S_OK), (1, VIRTIO_BLK_S_IOERR)]);
    assert_eq!(status(&mem, 0), VIRTIO_BLK_S_OK);
    assert_eq!(status(&mem, 3), VIRTIO_BLK_S_IOERR);
    let mut back = [0u8; 512];
    mem.read_slice(&mut back, GuestAddress(DATA)).unwrap();
    assert_eq!(back, [0x77; 512]);
}

#[test]
fn a_copy_that_missed_a_write_refuses_to_go_live() {
    let disk = Disk::new("sep-fail", 8);
    let mut b = Block::backup_separate(
        "_disk0",
        &disk.path,
        ImageMode::READ_WRITE,
        None,
        8 * SECTOR_SIZE,
        Arc::new(DroppedOutput::default()),
    )
    .unwrap();
    // The copy's descriptor turns read-only: the next write fails (EBADF).
    b.copy = Some(Image::open(&disk.path, ImageMode::READ_ONLY).unwrap().0);
    let mem = memory();
    let mut q = [queue(8, 0)];
    request(&mem, 0, VIRTIO_BLK_T_OUT, 0, 512, 0);
    publish(&mem, 0, &[0]);
    notify(&mut b, &mem, &mut q).unwrap();
    let err = b.go_live(&live(Arc::new(ImmediateOutput))).unwrap_err();
    assert!(
        matches!(
            &err,
            GoLiveError::Disk {
                source: BlockError::Copy { .. },
                ..
            }
        ),
        "{err:?}"
    );
    assert!(
        crate::transport::error_chain(&err).contains("failed a write or flush"),
        "{err}"
    );
    assert!(!b.has_backend());
}
