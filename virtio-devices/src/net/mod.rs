// Copyright 2026 The ft-cloud-hypervisor authors.
// SPDX-License-Identifier: Apache-2.0

//! virtio-net on a tap: one RX and one TX queue, 12-byte headers, no
//! offloads.
//!
//! TX: at a notify (vCPU thread) each frame is copied out of guest memory,
//! its buffer returned, and the frame handed to the [`OutputSink`], which
//! writes it to the tap. RX: a host thread reads frames from the tap into
//! host buffers; each frame is an event (its bytes, header included),
//! applied at an exit: queued in the device's backlog, then copied into
//! the next RX buffers the driver made available.
//!
//! A device built [`without_backend`](Net::without_backend) (replay) opens
//! no tap and starts no thread: its TX frames go to the sink, which drops
//! them, and RX frames come only from the events applied to it. It keeps
//! its tap's name and host address; when it goes live it opens (or
//! creates) the tap, configures it, starts reading it and announces the
//! guest's MAC ([`announce`]).

pub mod announce;
pub mod tap;

use std::collections::VecDeque;
use std::fs::File;
use std::io::{Read, Write};
use std::net::Ipv4Addr;
use std::os::fd::AsRawFd;
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::JoinHandle;

use devices::async_event::Waker;
use virtio_bindings::{virtio_ids, virtio_net};
use vm_migration::{ByteReader, ByteWriter, CodecError};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use crate::chain::{self, ChainError};
use crate::device::{Counters, DeviceFault, EventError, QueueContext, VirtioDevice};
use crate::go_live::{GoLive, GoLiveError};
use crate::output::{Output, OutputKind, OutputSink};
use tap::{Tap, VNET_HDR_LEN};

/// virtio device type of a network device.
pub const VIRTIO_ID_NET: u16 = virtio_ids::VIRTIO_ID_NET as u16;
/// Queue size of both queues.
pub const QUEUE_SIZE: u16 = 256;
/// Largest frame read from the tap or accepted from the guest (header included).
pub const MAX_FRAME: usize = 65_562;
/// Frames waiting for RX buffers, at most; older ones are dropped.
pub const BACKLOG_FRAMES: usize = 256;
/// How long opening a tap waits for the kernel to let frames out of it
/// (its link-watch work runs at most a second after the carrier change).
const TAP_READY_LIMIT: std::time::Duration = std::time::Duration::from_secs(1);
/// Frames read from the tap and not yet polled, at most (host side).
const HOST_QUEUE_FRAMES: usize = 1024;

const RX_QUEUE: usize = 0;
const TX_QUEUE: usize = 1;
const VIRTIO_NET_F_MAC: u64 = 1 << virtio_net::VIRTIO_NET_F_MAC;
const VIRTIO_NET_F_STATUS: u64 = 1 << virtio_net::VIRTIO_NET_F_STATUS;
const VIRTIO_NET_S_LINK_UP: u16 = virtio_net::VIRTIO_NET_S_LINK_UP as u16;

/// Counter names (Cloud Hypervisor's).
pub const COUNTERS: &[&str] = &["rx_bytes", "rx_frames", "tx_bytes", "tx_frames"];
const RX_BYTES: usize = 0;
const RX_FRAMES: usize = 1;
const TX_BYTES: usize = 2;
const TX_FRAMES: usize = 3;

/// Errors creating a network device.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    /// The tap.
    #[error("tap device")]
    Tap(#[source] tap::TapError),
    /// The reader thread or its stop event.
    #[error("cannot start the tap reader")]
    Thread(#[source] std::io::Error),
    /// The announcement of the guest's MAC cannot be sent.
    #[error("cannot announce the guest's MAC on the tap")]
    Announce(#[source] std::io::Error),
}

type Frames = Arc<Mutex<VecDeque<Vec<u8>>>>;

/// A virtio-net device.
#[derive(Debug)]
pub struct Net {
    id: String,
    tap_name: Option<String>,
    address: Option<(Ipv4Addr, Ipv4Addr)>,
    mac: [u8; 6],
    tap: Option<Arc<File>>,
    /// The tap as TX outputs see it when they are performed: empty until
    /// the device has a tap, so that a frame produced while replaying and
    /// kept by the sink is written if it is performed after go-live.
    tx_tap: Arc<OnceLock<Arc<File>>>,
    sink: Arc<dyn OutputSink>,
    host_frames: Frames,
    backlog: VecDeque<Vec<u8>>,
    counters: Arc<Counters>,
    stop: Option<EventFd>,
    thread: Option<JoinHandle<()>>,
}

impl Net {
    /// Opens (or creates) tap `tap_name`, sets `address` on it if given,
    /// brings it up and starts reading it.
    pub fn new(
        id: &str,
        tap_name: Option<&str>,
        address: Option<(Ipv4Addr, Ipv4Addr)>,
        mac: [u8; 6],
        sink: Arc<dyn OutputSink>,
        waker: Arc<dyn Waker>,
    ) -> Result<Self, NetError> {
        let mut net = Self::without_backend(id, tap_name, address, mac, sink);
        net.open_tap(waker)?;
        Ok(net)
    }

    /// Opens (or creates) the tap by its name, sets its address if any,
    /// brings it up and starts reading it.
    fn open_tap(&mut self, waker: Arc<dyn Waker>) -> Result<(), NetError> {
        let tap = Tap::open(self.tap_name.as_deref()).map_err(NetError::Tap)?;
        if let Some((ip, mask)) = self.address {
            tap.set_address(ip, mask).map_err(NetError::Tap)?;
        }
        tap.up().map_err(NetError::Tap)?;
        // Frames written before the kernel lets them out would be lost: at
        // go-live, the announcement and the frames the replay produced.
        if !tap.wait_ready(TAP_READY_LIMIT).map_err(NetError::Tap)? {
            log::warn!(
                "{}: tap {} did not start forwarding within {TAP_READY_LIMIT:?}; \
                 going on (frames sent until it does are lost)",
                self.id,
                tap.name()
            );
        }
        // The kernel's choice when no name was given.
        self.tap_name = Some(tap.name().to_string());
        self.start(tap.into_file(), waker)
    }

    /// A device on `file`, which reads and writes one frame (with its
    /// 12-byte header) per call and is non-blocking.
    #[cfg(test)]
    pub(crate) fn with_file(
        id: &str,
        tap_name: &str,
        file: File,
        mac: [u8; 6],
        sink: Arc<dyn OutputSink>,
        waker: Arc<dyn Waker>,
    ) -> Result<Self, NetError> {
        let mut net = Self::without_backend(id, Some(tap_name), None, mac, sink);
        net.start(file, waker)?;
        Ok(net)
    }

    /// Starts reading `file`.
    fn start(&mut self, file: File, waker: Arc<dyn Waker>) -> Result<(), NetError> {
        let file = Arc::new(file);
        let stop = EventFd::new(EFD_NONBLOCK).map_err(NetError::Thread)?;
        let thread = spawn_reader(
            &self.id,
            file.clone(),
            stop.try_clone().map_err(NetError::Thread)?,
            self.host_frames.clone(),
            waker,
        )
        .map_err(NetError::Thread)?;
        // A device starts once: it is built with its tap or goes live once.
        let _ = self.tx_tap.set(file.clone());
        self.tap = Some(file);
        self.stop = Some(stop);
        self.thread = Some(thread);
        Ok(())
    }

    /// A device with no host side: no tap is opened (or created) and no
    /// thread started. TX frames are still handed to `sink` as outputs (to
    /// be dropped: performing them does nothing), and RX frames come only
    /// through events applied to the device. For replay, where the events
    /// come from the log. `tap_name` (`None`: the kernel picks one) and
    /// `address` (the host side's IPv4 address and mask) are what the
    /// device uses if it goes live.
    pub fn without_backend(
        id: &str,
        tap_name: Option<&str>,
        address: Option<(Ipv4Addr, Ipv4Addr)>,
        mac: [u8; 6],
        sink: Arc<dyn OutputSink>,
    ) -> Self {
        Net {
            id: id.to_string(),
            tap_name: tap_name.map(str::to_string),
            address,
            mac,
            tap: None,
            tx_tap: Arc::default(),
            sink,
            host_frames: Frames::default(),
            backlog: VecDeque::new(),
            counters: Arc::new(Counters::new(COUNTERS)),
            stop: None,
            thread: None,
        }
    }

    /// Whether the device has a host side (a tap and its reader thread).
    pub fn has_backend(&self) -> bool {
        self.tap.is_some()
    }

    /// The tap's interface name (`None`: not opened yet and left to the
    /// kernel's choice).
    pub fn tap_name(&self) -> Option<&str> {
        self.tap_name.as_deref()
    }

    /// Announces the guest's MAC on the tap once (see [`announce`]). An
    /// error without a tap.
    pub fn announce(&self) -> Result<(), NetError> {
        let tap = self.tap.as_ref().ok_or_else(|| {
            NetError::Announce(std::io::Error::new(
                std::io::ErrorKind::NotConnected,
                "the device has no tap",
            ))
        })?;
        announce::announce_once(tap, self.mac).map_err(NetError::Announce)
    }

    /// Goes live: opens the tap, starts reading it, sends outputs to the
    /// new sink, then announces the guest's MAC: once now, and
    /// [`announce::ANNOUNCE_COUNT`] - 1 more times from a thread,
    /// [`announce::ANNOUNCE_INTERVAL`] apart. The device is live once its
    /// tap is open: an announcement that cannot be sent is logged, not an
    /// error (the bridges then learn the port from the guest's next frame).
    fn attach(&mut self, live: &GoLive) -> Result<(), NetError> {
        self.open_tap(live.waker.clone())?;
        self.sink = live.sink.clone();
        let sent = self.announce().and_then(|()| match &self.tap {
            Some(tap) => announce::repeat_announcements(&self.id, tap.clone(), self.mac)
                .map_err(NetError::Thread),
            None => Ok(()),
        });
        if let Err(e) = sent {
            log::warn!("{}: {}", self.id, crate::transport::error_chain(&e));
        }
        Ok(())
    }

    /// The device's counters.
    pub fn counters(&self) -> Arc<Counters> {
        self.counters.clone()
    }

    /// Fills RX buffers with waiting frames. The driver's notifications
    /// of new RX buffers are only needed while frames wait for buffers:
    /// they are suppressed (VRING_USED_F_NO_NOTIFY) whenever the backlog
    /// is empty, which spares the guest an exit each time it re-posts a
    /// buffer.
    fn deliver_backlog(&mut self, ctx: &mut QueueContext) -> Result<(), ChainError> {
        loop {
            self.fill_rx(ctx)?;
            let wanted = !self.backlog.is_empty();
            // Buffers posted after the last look are found by looking again.
            if !ctx.set_notification(RX_QUEUE, wanted)? || !wanted {
                return Ok(());
            }
        }
    }

    fn fill_rx(&mut self, ctx: &mut QueueContext) -> Result<(), ChainError> {
        while let Some(frame) = self.backlog.front() {
            let Some(chain) = ctx.pop(RX_QUEUE, MAX_FRAME as u64 * 2)? else {
                break;
            };
            if !chain.readable.is_empty() {
                return Err(ChainError::WrongDirection(
                    "device-readable buffer in the RX queue",
                ));
            }
            let n = chain::write_buffers(ctx.mem, &chain.writable, 0, frame)?;
            ctx.add_used(RX_QUEUE, chain.head, n as u32)?;
            self.counters
                .add(RX_BYTES, frame.len().saturating_sub(VNET_HDR_LEN) as u64);
            self.counters.add(RX_FRAMES, 1);
            self.backlog.pop_front();
        }
        Ok(())
    }

    fn transmit(&mut self, ctx: &mut QueueContext) -> Result<(), ChainError> {
        while let Some(chain) = ctx.pop(TX_QUEUE, MAX_FRAME as u64)? {
            if !chain.writable.is_empty() {
                return Err(ChainError::WrongDirection(
                    "device-writable buffer in the TX queue",
                ));
            }
            let len = chain::total_len(&chain.readable) as usize;
            let mut frame = vec![0u8; len];
            chain::read_buffers(ctx.mem, &chain.readable, 0, &mut frame)?;
            ctx.add_used(TX_QUEUE, chain.head, 0)?;
            if len <= VNET_HDR_LEN {
                continue;
            }
            self.counters.add(TX_BYTES, (len - VNET_HDR_LEN) as u64);
            self.counters.add(TX_FRAMES, 1);
            let tap = self.tx_tap.clone();
            self.sink.submit(Output::new(
                &self.id,
                OutputKind::NetFrame {
                    len: len - VNET_HDR_LEN,
                },
                Box::new(move || {
                    // A full tap queue drops the frame, as a wire would.
                    // Without a tap there is nothing to perform.
                    if let Some(tap) = tap.get() {
                        if let Err(e) = (&**tap).write(&frame) {
                            log::debug!("tap write failed: {e}");
                        }
                    }
                }),
            ));
        }
        Ok(())
    }
}

fn spawn_reader(
    id: &str,
    tap: Arc<File>,
    stop: EventFd,
    frames: Frames,
    waker: Arc<dyn Waker>,
) -> std::io::Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name(format!("{id}-rx"))
        .spawn(move || {
            let mut buf = vec![0u8; MAX_FRAME];
            loop {
                let mut fds = [
                    libc::pollfd {
                        fd: tap.as_raw_fd(),
                        events: libc::POLLIN,
                        revents: 0,
                    },
                    libc::pollfd {
                        fd: stop.as_raw_fd(),
                        events: libc::POLLIN,
                        revents: 0,
                    },
                ];
                // SAFETY: `fds` is a valid array of two pollfd for the call.
                let r = unsafe { libc::poll(fds.as_mut_ptr(), 2, -1) };
                if r < 0 {
                    if std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted {
                        continue;
                    }
                    return;
                }
                if fds[1].revents != 0 {
                    return;
                }
                let mut got = false;
                loop {
                    match (&*tap).read(&mut buf) {
                        Ok(n) if n > VNET_HDR_LEN => {
                            let mut q = frames.lock().unwrap_or_else(|e| e.into_inner());
                            if q.len() < HOST_QUEUE_FRAMES {
                                q.push_back(buf[..n].to_vec());
                                got = true;
                            }
                        }
                        Ok(_) => {}
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                        Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                        Err(e) => {
                            log::warn!("tap read failed, RX stops: {e}");
                            return;
                        }
                    }
                }
                if got {
                    waker.wake();
                }
            }
        })
}

impl Drop for Net {
    fn drop(&mut self) {
        if let Some(stop) = &self.stop {
            let _ = stop.write(1);
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl VirtioDevice for Net {
    fn device_type(&self) -> u16 {
        VIRTIO_ID_NET
    }

    fn queue_max_sizes(&self) -> Vec<u16> {
        vec![QUEUE_SIZE, QUEUE_SIZE]
    }

    fn features(&self) -> u64 {
        VIRTIO_NET_F_MAC | VIRTIO_NET_F_STATUS
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        // mac[6], status (u16), max_virtqueue_pairs (u16).
        let mut cfg = [0u8; 10];
        cfg[..6].copy_from_slice(&self.mac);
        cfg[6..8].copy_from_slice(&VIRTIO_NET_S_LINK_UP.to_le_bytes());
        cfg[8..10].copy_from_slice(&1u16.to_le_bytes());
        for (i, d) in data.iter_mut().enumerate() {
            *d = cfg.get(offset as usize + i).copied().unwrap_or(0);
        }
    }

    fn activate(&mut self, _features: u64) {}

    fn reset(&mut self) {
        self.backlog.clear();
    }

    fn process_queue(&mut self, index: usize, ctx: &mut QueueContext) -> Result<(), DeviceFault> {
        match index {
            RX_QUEUE => self.deliver_backlog(ctx)?,
            TX_QUEUE => self.transmit(ctx)?,
            _ => {}
        }
        Ok(())
    }

    fn save_state(&self, w: &mut ByteWriter) {
        w.u32(self.backlog.len() as u32);
        for frame in &self.backlog {
            w.bytes(frame);
        }
    }

    fn restore_state(&mut self, r: &mut ByteReader<'_>) -> Result<(), CodecError> {
        let n = r.u32()? as usize;
        if n > BACKLOG_FRAMES {
            return Err(r.bad(format!("{n} frames waiting")));
        }
        let mut backlog = VecDeque::with_capacity(n);
        for _ in 0..n {
            let frame = r.bytes()?;
            if frame.len() <= VNET_HDR_LEN || frame.len() > MAX_FRAME {
                return Err(r.bad("frame length"));
            }
            backlog.push_back(frame.to_vec());
        }
        self.backlog = backlog;
        Ok(())
    }

    fn go_live(&mut self, live: &GoLive) -> Result<(), GoLiveError> {
        if self.has_backend() {
            return Err(GoLiveError::AlreadyLive(self.id.clone()));
        }
        self.attach(live).map_err(|source| GoLiveError::Net {
            id: self.id.clone(),
            source,
        })
    }

    /// Once now and [`announce::ANNOUNCE_COUNT`] - 1 more times from a
    /// thread, as at go-live.
    fn announce(&self) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        Net::announce(self)?;
        if let Some(tap) = &self.tap {
            announce::repeat_announcements(&self.id, tap.clone(), self.mac)?;
        }
        Ok(())
    }

    fn poll_event(&mut self) -> Option<Vec<u8>> {
        self.host_frames
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .pop_front()
    }

    fn apply_event(
        &mut self,
        event: &[u8],
        ctx: Option<&mut QueueContext>,
    ) -> Result<(), EventError> {
        if event.len() <= VNET_HDR_LEN || event.len() > MAX_FRAME {
            return Err(EventError::Malformed(format!(
                "RX frame of {} bytes",
                event.len()
            )));
        }
        // Not live: the frame is lost, as on a link that is down.
        let Some(ctx) = ctx else {
            return Ok(());
        };
        let mut frame = event.to_vec();
        // No mergeable buffers: each frame fills exactly one chain.
        frame[10..12].copy_from_slice(&1u16.to_le_bytes());
        if self.backlog.len() == BACKLOG_FRAMES {
            self.backlog.pop_front();
        }
        self.backlog.push_back(frame);
        self.deliver_backlog(ctx).map_err(DeviceFault::from)?;
        Ok(())
    }
}

#[cfg(test)]
#[path = "tests.rs"]
mod tests;

#[cfg(test)]
#[path = "go_live_tests.rs"]
mod go_live_tests;
