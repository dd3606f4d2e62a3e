// Copyright 2026 The ft-cloud-hypervisor authors.
// SPDX-License-Identifier: Apache-2.0

use std::os::fd::{FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

use virtio_queue::Queue;
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use super::*;
use crate::chain::testing::{desc, memory, publish, queue, used, F_NEXT, F_WRITE};
use crate::output::testing::HoldingSink;
use crate::output::ImmediateOutput;

#[derive(Debug)]
pub(super) struct NoWake;
impl Waker for NoWake {
    fn wake(&self) {}
}

/// The RX queue's rings at offset 0, the TX queue's at RX_BASE.
pub(super) const TX_BASE: u64 = 0x4000;
pub(super) const BUF: u64 = 0x20000;

/// A device on one end of a datagram socket pair (one frame per
/// datagram, as a tap); the other end plays the host network.
fn device(sink: Arc<dyn OutputSink>) -> (Net, File) {
    let mut fds = [0; 2];
    // SAFETY: socketpair writes two fds into the array.
    let r = unsafe {
        libc::socketpair(
            libc::AF_UNIX,
            libc::SOCK_DGRAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            0,
            fds.as_mut_ptr(),
        )
    };
    assert_eq!(r, 0);
    // SAFETY: fds[0] is new and owned by nothing else.
    let a = unsafe { OwnedFd::from_raw_fd(fds[0]) };
    // SAFETY: fds[1] is new and owned by nothing else.
    let b = unsafe { OwnedFd::from_raw_fd(fds[1]) };
    let net = Net::with_file(
        "_net0",
        "test",
        File::from(a),
        [2, 0, 0, 0, 0, 1],
        sink,
        Arc::new(NoWake),
    )
    .unwrap();
    (net, File::from(b))
}

pub(super) fn queues() -> [Queue; 2] {
    [queue(16, 0), queue(16, TX_BASE)]
}

pub(super) fn run(
    net: &mut Net,
    mem: &GuestMemoryMmap,
    q: &mut [Queue],
    index: usize,
) -> Result<u64, DeviceFault> {
    let mut ctx = QueueContext {
        mem,
        queues: q,
        used: 0,
    };
    net.process_queue(index, &mut ctx)?;
    Ok(ctx.used)
}

fn apply(
    net: &mut Net,
    mem: &GuestMemoryMmap,
    q: &mut [Queue],
    e: &[u8],
) -> Result<u64, EventError> {
    let mut ctx = QueueContext {
        mem,
        queues: q,
        used: 0,
    };
    net.apply_event(e, Some(&mut ctx))?;
    Ok(ctx.used)
}

pub(super) fn frame(tag: u8, len: usize) -> Vec<u8> {
    let mut f = vec![0u8; VNET_HDR_LEN];
    f.extend((0..len).map(|i| tag ^ i as u8));
    f
}

pub(super) fn wait_event(net: &mut Net) -> Vec<u8> {
    let start = Instant::now();
    loop {
        if let Some(e) = net.poll_event() {
            return e;
        }
        assert!(start.elapsed() < Duration::from_secs(10), "no RX event");
        std::thread::sleep(Duration::from_millis(1));
    }
}

#[test]
fn config_space() {
    let (net, _peer) = device(Arc::new(ImmediateOutput));
    let mut cfg = [0u8; 10];
    net.read_config(0, &mut cfg);
    assert_eq!(&cfg[..6], &[2, 0, 0, 0, 0, 1]);
    assert_eq!(u16::from_le_bytes([cfg[6], cfg[7]]), VIRTIO_NET_S_LINK_UP);
    assert_eq!(net.queue_max_sizes(), vec![256, 256]);
    assert_eq!(net.features(), VIRTIO_NET_F_MAC | VIRTIO_NET_F_STATUS);
    assert_eq!(net.tap_name(), Some("test"));
}

#[test]
fn tx_frames_leave_through_the_sink() {
    let sink = Arc::new(HoldingSink::default());
    let (mut net, peer) = device(sink.clone());
    let mem = memory();
    let mut q = queues();
    // One frame split over two descriptors.
    let f = frame(0x33, 60);
    mem.write_slice(&f[..20], GuestAddress(BUF)).unwrap();
    mem.write_slice(&f[20..], GuestAddress(BUF + 0x1000))
        .unwrap();
    desc(&mem, TX_BASE, 0, BUF, 20, F_NEXT, 1);
    desc(&mem, TX_BASE, 1, BUF + 0x1000, 52, 0, 0);
    publish(&mem, TX_BASE, &[0]);
    assert_eq!(
        run(&mut net, &mem, &mut q, TX_QUEUE).unwrap(),
        1 << TX_QUEUE
    );
    // The buffer is back at once; the frame waits in the sink.
    assert_eq!(used(&mem, TX_BASE), (1, vec![(0, 0)]));
    let mut buf = [0u8; 256];
    assert!((&peer).read(&mut buf).is_err(), "held");
    assert_eq!(sink.release_all(), vec![OutputKind::NetFrame { len: 60 }]);
    let n = (&peer).read(&mut buf).unwrap();
    assert_eq!(&buf[..n], &f[..]);
    let c = net.counters().snapshot();
    assert_eq!((c["tx_frames"], c["tx_bytes"]), (1, 60));
}

#[test]
fn tx_with_a_writable_buffer_faults() {
    let (mut net, _peer) = device(Arc::new(ImmediateOutput));
    let mem = memory();
    let mut q = queues();
    desc(&mem, TX_BASE, 0, BUF, 64, F_WRITE, 0);
    publish(&mem, TX_BASE, &[0]);
    assert!(matches!(
        run(&mut net, &mem, &mut q, TX_QUEUE),
        Err(DeviceFault::Chain(ChainError::WrongDirection(_)))
    ));
}

#[test]
fn rx_frames_wait_for_buffers() {
    let (mut net, peer) = device(Arc::new(ImmediateOutput));
    let mem = memory();
    let mut q = queues();
    let f = frame(0x44, 100);
    (&peer).write_all(&f).unwrap();
    let e = wait_event(&mut net);
    assert_eq!(e, f);
    // No RX buffer yet: the frame waits in the backlog.
    assert_eq!(apply(&mut net, &mem, &mut q, &e).unwrap(), 0);
    desc(&mem, 0, 0, BUF, 2048, F_WRITE, 0);
    publish(&mem, 0, &[0]);
    assert_eq!(run(&mut net, &mem, &mut q, RX_QUEUE).unwrap(), 1);
    assert_eq!(used(&mem, 0), (1, vec![(0, f.len() as u32)]));
    let mut got = vec![0u8; f.len()];
    mem.read_slice(&mut got, GuestAddress(BUF)).unwrap();
    assert_eq!(&got[12..], &f[12..]);
    assert_eq!(u16::from_le_bytes([got[10], got[11]]), 1, "num_buffers");
    let c = net.counters().snapshot();
    assert_eq!((c["rx_frames"], c["rx_bytes"]), (1, 100));
}

#[test]
fn rx_events_checked_and_backlog_bounded() {
    let (mut net, _peer) = device(Arc::new(ImmediateOutput));
    let mem = memory();
    let mut q = queues();
    assert!(matches!(
        apply(&mut net, &mem, &mut q, &[0; 5]),
        Err(EventError::Malformed(_))
    ));
    for i in 0..BACKLOG_FRAMES + 10 {
        apply(&mut net, &mem, &mut q, &frame(i as u8, 20)).unwrap();
    }
    assert_eq!(net.backlog.len(), BACKLOG_FRAMES);
    // The oldest were dropped.
    assert_eq!(net.backlog[0][VNET_HDR_LEN], 10);
    // While not live, a frame is dropped.
    net.apply_event(&frame(1, 20), None).unwrap();
    assert_eq!(net.backlog.len(), BACKLOG_FRAMES);
    net.reset();
    assert!(net.backlog.is_empty());
    // A device-readable RX buffer faults.
    apply(&mut net, &mem, &mut q, &frame(1, 20)).unwrap();
    desc(&mem, 0, 0, BUF, 2048, 0, 0);
    publish(&mem, 0, &[0]);
    assert!(matches!(
        run(&mut net, &mem, &mut q, RX_QUEUE),
        Err(DeviceFault::Chain(ChainError::WrongDirection(_)))
    ));
}

#[test]
fn backlog_state_round_trips() {
    let (mut net, _peer) = device(Arc::new(ImmediateOutput));
    let mem = memory();
    let mut q = queues();
    apply(&mut net, &mem, &mut q, &frame(1, 30)).unwrap();
    apply(&mut net, &mem, &mut q, &frame(2, 40)).unwrap();
    let mut w = ByteWriter::new();
    net.save_state(&mut w);
    let bytes = w.into_inner();
    let (mut other, _peer2) = device(Arc::new(ImmediateOutput));
    other.restore_state(&mut ByteReader::new(&bytes)).unwrap();
    assert_eq!(other.backlog, net.backlog);
    // A frame too short to hold a header is refused.
    let mut w = ByteWriter::new();
    w.u32(1).bytes(&[0; 4]);
    let bad = w.into_inner();
    assert!(other.restore_state(&mut ByteReader::new(&bad)).is_err());
    assert_eq!(other.backlog.len(), 2);
}

#[test]
fn without_a_backend_tx_is_dropped_and_rx_comes_from_events() {
    let dropped = Arc::new(crate::output::DroppedOutput::default());
    let mut net = Net::without_backend(
        "_net0",
        Some("no-such-tap"),
        None,
        [2, 0, 0, 0, 0, 1],
        dropped.clone(),
    );
    assert!(!net.has_backend());
    assert_eq!(net.tap_name(), Some("no-such-tap"));
    let mem = memory();
    let mut q = queues();
    let f = frame(0x55, 60);
    mem.write_slice(&f, GuestAddress(BUF)).unwrap();
    desc(&mem, TX_BASE, 0, BUF, f.len() as u32, 0, 0);
    publish(&mem, TX_BASE, &[0]);
    assert_eq!(
        run(&mut net, &mem, &mut q, TX_QUEUE).unwrap(),
        1 << TX_QUEUE
    );
    assert_eq!(dropped.dropped(), 1);
    assert_eq!(net.counters().snapshot()["tx_frames"], 1);
    // RX: only what is applied.
    assert!(net.poll_event().is_none());
    desc(&mem, 0, 0, BUF + 0x1000, 2048, F_WRITE, 0);
    publish(&mem, 0, &[0]);
    let rx = frame(0x66, 80);
    assert_eq!(apply(&mut net, &mem, &mut q, &rx).unwrap(), 1);
    let mut got = vec![0u8; rx.len()];
    mem.read_slice(&mut got, GuestAddress(BUF + 0x1000))
        .unwrap();
    assert_eq!(&got[12..], &rx[12..]);
    drop(net);
}
