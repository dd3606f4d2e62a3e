//! virtio-net driver (virtio spec 5.1) as a smoltcp [`Device`].
//!
//! Receive buffers stay posted on queue 0; each frame the device fills is
//! copied out to smoltcp and its buffer re-posted at once. Transmitted
//! frames go on queue 1 without a notification; [`Net::flush`] notifies
//! each queue once per batch (the only exits of the data path besides the
//! interrupts), unless the device suppressed notifications (it does for
//! RX while it has buffers to spare). Queue 1 asks for no interrupts: its
//! buffers are reclaimed by polling.

use alloc::vec;
use alloc::vec::Vec;

use smoltcp::phy::{self, Device, DeviceCapabilities, Medium};
use smoltcp::time::Instant;
use thiserror::Error;

use super::queue::{Buffer, Virtqueue};
use super::{VirtioError, VirtioPci};
use crate::pci::Access;

/// Modern and transitional PCI device IDs of virtio-net.
const DEVICE_ID: u16 = 0x1041;
const TRANSITIONAL_ID: u16 = 0x1000;
/// Feature bit: the device has a MAC address in its configuration.
const F_MAC: u64 = 1 << 5;
/// The virtio-net header (virtio 1.x: 12 bytes, all zero for us).
const HEADER: usize = 12;
/// Buffer size: header plus an Ethernet frame without FCS.
const BUFFER: usize = 2048;
/// Largest Ethernet frame (without FCS) the guest sends or accepts.
const MTU: usize = 1514;
/// Queue sizes the guest asks for.
const QUEUE_SIZE: u16 = 128;

/// A virtio-net device that cannot be used.
#[derive(Debug, Error)]
pub enum NetError {
    /// No virtio-net device on bus 0.
    #[error("no virtio-net device found on PCI bus 0")]
    NotFound,
    /// Transport problem.
    #[error("virtio-net")]
    Virtio(#[source] VirtioError),
}

/// A virtio-net device.
#[derive(Debug)]
pub struct Net {
    pci: VirtioPci,
    rx: Virtqueue,
    tx: Virtqueue,
    /// One receive buffer per rx descriptor (single-descriptor chains).
    rx_buffers: Vec<Vec<u8>>,
    /// One transmit buffer per tx descriptor.
    tx_buffers: Vec<Vec<u8>>,
    mac: [u8; 6],
    /// Frames received and sent.
    pub rx_frames: u64,
    /// Frames sent.
    pub tx_frames: u64,
}

impl Net {
    /// Finds and initialises the first virtio-net device; receive
    /// interrupts arrive on IDT `rx_vector`, transmit completions on
    /// `tx_vector`.
    pub fn open(access: &Access, rx_vector: u8, tx_vector: u8) -> Result<Net, NetError> {
        let function = super::find(access, DEVICE_ID, TRANSITIONAL_ID).ok_or(NetError::NotFound)?;
        let pci = VirtioPci::probe(access, &function).map_err(NetError::Virtio)?;
        let features = pci.negotiate(0, F_MAC).map_err(NetError::Virtio)?;
        let rx = pci
            .setup_queue(0, QUEUE_SIZE, 0, rx_vector)
            .map_err(NetError::Virtio)?;
        let mut tx = pci
            .setup_queue(1, QUEUE_SIZE, 1, tx_vector)
            .map_err(NetError::Virtio)?;
        // Sent buffers are reclaimed by polling (`reclaim_tx`): an
        // interrupt per frame would only cost the guest an exit.
        tx.suppress_interrupts();
        let mut mac = [0x52, 0x54, 0x00, 0x12, 0x34, 0x56];
        if features & F_MAC != 0 {
            for (i, byte) in mac.iter_mut().enumerate() {
                *byte = pci.config8(i);
            }
        }
        let mut net = Net {
            rx_buffers: (0..rx.size()).map(|_| vec![0u8; BUFFER]).collect(),
            tx_buffers: (0..tx.size()).map(|_| vec![0u8; BUFFER]).collect(),
            pci,
            rx,
            tx,
            mac,
            rx_frames: 0,
            tx_frames: 0,
        };
        for id in 0..net.rx.size() {
            net.post_rx(id);
        }
        net.pci.driver_ok().map_err(NetError::Virtio)?;
        net.rx.kick_always();
        Ok(net)
    }

    /// The device's MAC address.
    pub fn mac(&self) -> [u8; 6] {
        self.mac
    }

    /// Whether received frames wait to be taken.
    pub fn rx_pending(&self) -> bool {
        self.rx.has_used()
    }

    /// Notifies the device of what was queued since the last call: frames
    /// to send and re-posted receive buffers (at most one exit per queue,
    /// none when the device suppresses notifications).
    pub fn flush(&mut self) {
        self.tx.kick();
        self.rx.kick();
    }

    /// Posts receive buffer `id` (its descriptor is free).
    fn post_rx(&mut self, id: u16) {
        let Some(buffer) = self.rx_buffers.get_mut(usize::from(id)) else {
            return;
        };
        let chain = [Buffer::writable(buffer)];
        // A single free descriptor always fits.
        let _ = self.rx.push(&chain);
    }

    /// Takes back the transmit descriptors the device is done with.
    fn reclaim_tx(&mut self) {
        while self.tx.pop_used().is_some() {}
    }
}

/// A received frame, copied out of its buffer.
#[derive(Debug)]
pub struct RxToken(Vec<u8>);

impl phy::RxToken for RxToken {
    fn consume<R, F>(self, f: F) -> R
    where
        F: FnOnce(&[u8]) -> R,
    {
        f(&self.0)
    }
}

/// Permission to send one frame.
#[derive(Debug)]
pub struct TxToken<'a>(&'a mut Net);

impl phy::TxToken for TxToken<'_> {
    fn consume<R, F>(self, len: usize, f: F) -> R
    where
        F: FnOnce(&mut [u8]) -> R,
    {
        let net = self.0;
        let len = len.min(MTU);
        // `transmit` checked that a descriptor is free; its buffer is ours
        // because free descriptors are exactly the unused buffers (each
        // chain is one descriptor, pushed in LIFO order of the free list).
        let mut scratch = [0u8; 0];
        let id = net.tx.next_free();
        let Some(buffer) = id.and_then(|id| net.tx_buffers.get_mut(usize::from(id))) else {
            return f(&mut scratch);
        };
        buffer[..HEADER].fill(0);
        let result = f(&mut buffer[HEADER..HEADER + len]);
        let chain = [Buffer::readable(&buffer[..HEADER + len])];
        if net.tx.push(&chain).is_some() {
            net.tx_frames += 1;
        }
        result
    }
}

impl Device for Net {
    type RxToken<'a> = RxToken;
    type TxToken<'a> = TxToken<'a>;

    fn receive(&mut self, _timestamp: Instant) -> Option<(RxToken, TxToken<'_>)> {
        self.reclaim_tx();
        if self.tx.free_descriptors() == 0 {
            return None;
        }
        let (id, written) = self.rx.pop_used()?;
        let frame = self.rx_buffers.get(usize::from(id)).map(|buffer| {
            let end = (written as usize).clamp(HEADER, buffer.len());
            buffer[HEADER..end].to_vec()
        });
        self.post_rx(id);
        self.rx_frames += 1;
        Some((RxToken(frame.unwrap_or_default()), TxToken(self)))
    }

    fn transmit(&mut self, _timestamp: Instant) -> Option<TxToken<'_>> {
        self.reclaim_tx();
        (self.tx.free_descriptors() > 0).then_some(TxToken(self))
    }

    fn capabilities(&self) -> DeviceCapabilities {
        let mut caps = DeviceCapabilities::default();
        caps.medium = Medium::Ethernet;
        caps.max_transmission_unit = MTU;
        caps.max_burst_size = Some(usize::from(self.tx.size()));
        caps
    }
}
