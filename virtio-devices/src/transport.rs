// Copyright 2026 The ft-cloud-hypervisor authors.
// SPDX-License-Identifier: Apache-2.0

//! The virtio-pci modern transport (virtio 1.0+): the common
//! configuration, ISR, device configuration and notification regions and
//! the MSI-X table, all in BAR 0, described by vendor capabilities.
//!
//! Layout of BAR 0 (32-bit memory, [`BAR_SIZE`] bytes):
//!
//! | offset   | region                                   |
//! | -------- | ---------------------------------------- |
//! | `0x0000` | common configuration (`0x38` bytes)      |
//! | `0x1000` | ISR status (1 byte, read clears)         |
//! | `0x2000` | device-specific configuration            |
//! | `0x3000` | notifications, 4 bytes per queue         |
//! | `0x4000` | MSI-X table                              |
//! | `0x5000` | MSI-X pending-bit array                  |
//!
//! The VIRTIO_PCI_CAP_PCI_CFG capability gives the same BAR access through
//! configuration space. A notify write processes the queue at once on the
//! vCPU thread. A
//! malformed ring or chain sets DEVICE_NEEDS_RESET, raises the
//! configuration interrupt and the device ignores its queues until the
//! driver resets it. INTx is not provided: drivers use MSI-X.

use std::sync::{Arc, Mutex};

use devices::async_event::{ApplyError, AsyncEventSource};
use devices::irq::MsiQueue;
use virtio_bindings::virtio_config;
use virtio_queue::{Queue, QueueT};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use crate::device::{EventError, QueueContext, VirtioDevice};
use crate::go_live::{GoLive, GoLiveError};
use crate::pci::config::{Bar, PciConfiguration, PciIds, NUM_REGS};
use crate::pci::msix::Msix;
use crate::pci::root::PciDevice;

/// Size of BAR 0.
pub const BAR_SIZE: u64 = 0x8000;
/// Common configuration offset in BAR 0.
pub const COMMON_OFFSET: u64 = 0x0000;
/// Common configuration length.
pub const COMMON_LEN: u64 = 0x38;
/// ISR offset.
pub const ISR_OFFSET: u64 = 0x1000;
/// Device configuration offset.
pub const DEVICE_CFG_OFFSET: u64 = 0x2000;
/// Device configuration room.
pub const DEVICE_CFG_LEN: u64 = 0x1000;
/// Notification region offset.
pub const NOTIFY_OFFSET: u64 = 0x3000;
/// Bytes between two queues' notification addresses.
pub const NOTIFY_MULTIPLIER: u32 = 4;
/// MSI-X table offset.
pub const MSIX_TABLE_OFFSET: u64 = 0x4000;
/// MSI-X PBA offset.
pub const MSIX_PBA_OFFSET: u64 = 0x5000;

/// Virtio PCI vendor id.
pub const VIRTIO_PCI_VENDOR: u16 = 0x1af4;
/// Modern device ids are 0x1040 + device type.
pub const VIRTIO_PCI_DEVICE_BASE: u16 = 0x1040;
/// "No MSI-X vector".
pub const NO_VECTOR: u16 = 0xffff;
/// Feature bit: virtio 1.0 or later.
pub const VIRTIO_F_VERSION_1: u64 = 1 << virtio_config::VIRTIO_F_VERSION_1;

/// Device status bits.
pub mod status {
    use virtio_bindings::virtio_config;

    /// The guest found the device.
    pub const ACKNOWLEDGE: u8 = virtio_config::VIRTIO_CONFIG_S_ACKNOWLEDGE as u8;
    /// The guest has a driver.
    pub const DRIVER: u8 = virtio_config::VIRTIO_CONFIG_S_DRIVER as u8;
    /// The driver is ready.
    pub const DRIVER_OK: u8 = virtio_config::VIRTIO_CONFIG_S_DRIVER_OK as u8;
    /// Feature negotiation is complete.
    pub const FEATURES_OK: u8 = virtio_config::VIRTIO_CONFIG_S_FEATURES_OK as u8;
    /// The device met an error and needs a reset.
    pub const DEVICE_NEEDS_RESET: u8 = virtio_config::VIRTIO_CONFIG_S_NEEDS_RESET as u8;
    /// The driver gave up.
    pub const FAILED: u8 = virtio_config::VIRTIO_CONFIG_S_FAILED as u8;
}

const VIRTIO_PCI_CAP_VENDOR: u8 = 0x09;
const CAP_COMMON: u8 = 1;
const CAP_NOTIFY: u8 = 2;
const CAP_ISR: u8 = 3;
const CAP_DEVICE: u8 = 4;
const CAP_PCI_CFG: u8 = 5;

/// A virtio device on PCI.
#[derive(Debug)]
pub struct VirtioPciDevice {
    id: String,
    config: PciConfiguration,
    msix: Msix,
    msix_cap_reg: usize,
    pci_cfg_reg: usize,
    device: Box<dyn VirtioDevice>,
    mem: GuestMemoryMmap,
    queues: Vec<Queue>,
    queue_vectors: Vec<u16>,
    device_feature_select: u32,
    driver_feature_select: u32,
    driver_features: u64,
    msix_config: u16,
    queue_select: u16,
    status: u8,
    isr: u8,
    live: bool,
}

/// Errors creating the transport.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    /// A queue size the transport cannot offer.
    #[error("invalid queue size {0}")]
    QueueSize(u16),
    /// The configuration space cannot hold the capabilities or the BAR.
    #[error("cannot build the PCI configuration space")]
    Config(#[source] crate::pci::config::ConfigError),
}

impl VirtioPciDevice {
    /// Wraps `device`, with BAR 0 at `bar_base` (aligned to [`BAR_SIZE`]).
    pub fn new(
        id: &str,
        device: Box<dyn VirtioDevice>,
        mem: GuestMemoryMmap,
        msi: Arc<MsiQueue>,
        bar_base: u64,
    ) -> Result<Self, TransportError> {
        let device_type = device.device_type();
        let class = match device_type {
            1 => (0x02, 0x00, 0x00),
            2 => (0x01, 0x80, 0x00),
            _ => (0xff, 0x00, 0x00),
        };
        let mut config = PciConfiguration::new(
            PciIds {
                vendor: VIRTIO_PCI_VENDOR,
                device: VIRTIO_PCI_DEVICE_BASE + device_type,
                revision: 1,
                class,
                subsystem_vendor: VIRTIO_PCI_VENDOR,
                subsystem: 0x40,
            },
            0,
        );
        config
            .add_memory_bar(0, bar_base, BAR_SIZE)
            .map_err(TransportError::Config)?;
        let sizes = device.queue_max_sizes();
        let mut queues = Vec::with_capacity(sizes.len());
        for size in &sizes {
            queues.push(Queue::new(*size).map_err(|_| TransportError::QueueSize(*size))?);
        }
        let msix = Msix::new(sizes.len() as u16 + 1, msi);
        let msix_cap = msix.capability(0, MSIX_TABLE_OFFSET as u32, MSIX_PBA_OFFSET as u32);
        let msix_offset = config
            .add_capability(&msix_cap)
            .map_err(TransportError::Config)?;
        let notify_len = sizes.len() as u64 * u64::from(NOTIFY_MULTIPLIER);
        for (kind, offset, len) in [
            (CAP_COMMON, COMMON_OFFSET, COMMON_LEN),
            (CAP_ISR, ISR_OFFSET, 1),
            (CAP_DEVICE, DEVICE_CFG_OFFSET, DEVICE_CFG_LEN),
            (CAP_NOTIFY, NOTIFY_OFFSET, notify_len),
        ] {
            config
                .add_capability(&virtio_cap(kind, offset as u32, len as u32))
                .map_err(TransportError::Config)?;
        }
        // VIRTIO_PCI_CAP_PCI_CFG: a window onto BAR 0 through configuration
        // space; bar, offset and length are the driver's to write.
        let mut pci_cfg = virtio_cap(CAP_PCI_CFG, 0, 0);
        pci_cfg.extend_from_slice(&[0; 4]);
        pci_cfg[2] = pci_cfg.len() as u8;
        let pci_cfg_offset = config
            .add_capability(&pci_cfg)
            .map_err(TransportError::Config)?;
        let pci_cfg_reg = pci_cfg_offset / 4;
        config.set_writable(pci_cfg_reg + 1, 0x0000_00ff);
        config.set_writable(pci_cfg_reg + 2, 0xffff_ffff);
        config.set_writable(pci_cfg_reg + 3, 0xffff_ffff);
        let queue_vectors = vec![NO_VECTOR; queues.len()];
        Ok(VirtioPciDevice {
            id: id.to_string(),
            config,
            msix,
            msix_cap_reg: msix_offset / 4,
            pci_cfg_reg,
            device,
            mem,
            queues,
            queue_vectors,
            device_feature_select: 0,
            driver_feature_select: 0,
            driver_features: 0,
            msix_config: NO_VECTOR,
            queue_select: 0,
            status: 0,
            isr: 0,
            live: false,
        })
    }

    /// The device id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The device status register.
    pub fn status(&self) -> u8 {
        self.status
    }

    fn reset(&mut self) {
        self.device.reset();
        for q in &mut self.queues {
            q.reset();
        }
        self.queue_vectors.fill(NO_VECTOR);
        self.device_feature_select = 0;
        self.driver_feature_select = 0;
        self.driver_features = 0;
        self.msix_config = NO_VECTOR;
        self.queue_select = 0;
        self.status = 0;
        self.isr = 0;
        self.live = false;
    }

    fn common_snapshot(&self) -> [u8; COMMON_LEN as usize] {
        let mut b = [0u8; COMMON_LEN as usize];
        let features = self.device.features() | VIRTIO_F_VERSION_1;
        let device_features = match self.device_feature_select {
            0 => features as u32,
            1 => (features >> 32) as u32,
            _ => 0,
        };
        let driver_features = match self.driver_feature_select {
            0 => self.driver_features as u32,
            1 => (self.driver_features >> 32) as u32,
            _ => 0,
        };
        b[0x00..0x04].copy_from_slice(&self.device_feature_select.to_le_bytes());
        b[0x04..0x08].copy_from_slice(&device_features.to_le_bytes());
        b[0x08..0x0c].copy_from_slice(&self.driver_feature_select.to_le_bytes());
        b[0x0c..0x10].copy_from_slice(&driver_features.to_le_bytes());
        b[0x10..0x12].copy_from_slice(&self.msix_config.to_le_bytes());
        b[0x12..0x14].copy_from_slice(&(self.queues.len() as u16).to_le_bytes());
        b[0x14] = self.status;
        b[0x15] = 0;
        b[0x16..0x18].copy_from_slice(&self.queue_select.to_le_bytes());
        let qs = usize::from(self.queue_select);
        if let Some(q) = self.queues.get(qs) {
            b[0x18..0x1a].copy_from_slice(&q.size().to_le_bytes());
            b[0x1a..0x1c].copy_from_slice(&self.queue_vectors[qs].to_le_bytes());
            b[0x1c..0x1e].copy_from_slice(&u16::from(q.ready()).to_le_bytes());
            b[0x1e..0x20].copy_from_slice(&self.queue_select.to_le_bytes());
            b[0x20..0x28].copy_from_slice(&q.desc_table().to_le_bytes());
            b[0x28..0x30].copy_from_slice(&q.avail_ring().to_le_bytes());
            b[0x30..0x38].copy_from_slice(&q.used_ring().to_le_bytes());
        }
        b
    }

    fn common_write(&mut self, offset: u64, data: &[u8]) {
        let mut v = [0u8; 8];
        let n = data.len().min(8);
        v[..n].copy_from_slice(&data[..n]);
        let value = u64::from_le_bytes(v);
        let v32 = value as u32;
        let v16 = value as u16;
        let qs = usize::from(self.queue_select);
        let queue_writable = self
            .queues
            .get(qs)
            .is_some_and(|q| !q.ready() && self.status & status::DRIVER_OK == 0);
        match (offset, data.len()) {
            (0x00, 4) => self.device_feature_select = v32,
            (0x08, 4) => self.driver_feature_select = v32,
            (0x0c, 4) => {
                if self.status & status::FEATURES_OK == 0 {
                    match self.driver_feature_select {
                        0 => {
                            self.driver_features =
                                (self.driver_features & !0xffff_ffff) | u64::from(v32)
                        }
                        1 => {
                            self.driver_features =
                                (self.driver_features & 0xffff_ffff) | (u64::from(v32) << 32)
                        }
                        _ => {}
                    }
                }
            }
            (0x10, 2) => self.msix_config = self.checked_vector(v16),
            (0x14, 1) => self.write_status(data[0]),
            (0x16, 2) => self.queue_select = v16,
            (0x18, 2) if queue_writable => self.queues[qs].set_size(v16),
            (0x1a, 2) if qs < self.queues.len() => {
                self.queue_vectors[qs] = self.checked_vector(v16)
            }
            (0x1c, 2) if queue_writable => {
                if v16 == 1 {
                    self.queues[qs].set_ready(true);
                }
            }
            (0x20, 4) | (0x20, 8) if queue_writable => {
                self.queues[qs].set_desc_table_address(Some(v32), hi(data))
            }
            (0x24, 4) if queue_writable => self.queues[qs].set_desc_table_address(None, Some(v32)),
            (0x28, 4) | (0x28, 8) if queue_writable => {
                self.queues[qs].set_avail_ring_address(Some(v32), hi(data))
            }
            (0x2c, 4) if queue_writable => self.queues[qs].set_avail_ring_address(None, Some(v32)),
            (0x30, 4) | (0x30, 8) if queue_writable => {
                self.queues[qs].set_used_ring_address(Some(v32), hi(data))
            }
            (0x34, 4) if queue_writable => self.queues[qs].set_used_ring_address(None, Some(v32)),
            _ => log::debug!(
                "{}: ignored common config write at {offset:#x} ({} bytes)",
                self.id,
                data.len()
            ),
        }
    }

    fn checked_vector(&self, vector: u16) -> u16 {
        if usize::from(vector) < self.msix.len() {
            vector
        } else {
            NO_VECTOR
        }
    }

    fn write_status(&mut self, value: u8) {
        if value == 0 {
            self.reset();
            return;
        }
        let sticky = self.status & status::DEVICE_NEEDS_RESET;
        let newly = value & !self.status;
        let mut value = value | sticky;
        if newly & status::FEATURES_OK != 0 {
            let offered = self.device.features() | VIRTIO_F_VERSION_1;
            let ok = self.driver_features & !offered == 0
                && self.driver_features & VIRTIO_F_VERSION_1 != 0;
            if !ok {
                log::warn!(
                    "{}: refusing driver features {:#x} (offered {offered:#x})",
                    self.id,
                    self.driver_features
                );
                value &= !status::FEATURES_OK;
            }
        }
        self.status = value;
        if newly & status::DRIVER_OK != 0 && !self.live {
            if value & status::FEATURES_OK == 0 {
                self.fault("DRIVER_OK without FEATURES_OK");
                return;
            }
            if let Some(i) = self
                .queues
                .iter()
                .position(|q| q.ready() && !q.is_valid(&self.mem))
            {
                self.fault(&format!("queue {i} is not valid (size or ring addresses)"));
                return;
            }
            self.device.activate(self.driver_features);
            self.live = true;
        }
    }

    /// Marks the device broken until reset and tells the driver.
    fn fault(&mut self, why: &str) {
        log::warn!("{}: device needs reset: {why}", self.id);
        self.status |= status::DEVICE_NEEDS_RESET;
        self.live = false;
        self.isr |= 2;
        self.msix.trigger(self.msix_config);
    }

    fn serving(&self) -> bool {
        self.live && self.status & status::DEVICE_NEEDS_RESET == 0
    }

    fn signal_used(&mut self, used: u64) {
        for i in 0..self.queues.len() {
            if used & (1 << i) == 0 {
                continue;
            }
            let q = &mut self.queues[i];
            // EVENT_IDX is not offered: virtio-queue then always asks for
            // an interrupt, and the driver's VRING_AVAIL_F_NO_INTERRUPT
            // (virtio 1.2, 2.7.7.2: the device SHOULD NOT interrupt when
            // it is set) is honoured here: a driver that polls its used
            // ring (a transmit queue) costs no interrupt per buffer.
            let notify = q.needs_notification(&self.mem).unwrap_or(true)
                && (q.event_idx_enabled() || !interrupts_suppressed(&self.mem, q));
            if notify {
                self.isr |= 1;
                self.msix.trigger(self.queue_vectors[i]);
            }
        }
    }

    fn notify(&mut self, index: usize) {
        if !self.serving() || index >= self.queues.len() {
            return;
        }
        let mut ctx = QueueContext {
            mem: &self.mem,
            queues: &mut self.queues,
            used: 0,
        };
        let result = self.device.process_queue(index, &mut ctx);
        let used = ctx.used;
        self.signal_used(used);
        if let Err(e) = result {
            self.fault(&format!("queue {index}: {}", error_chain(&e)));
        }
    }

    /// Applies one event of the device (see [`VirtioDevice::apply_event`]).
    pub fn apply_event(&mut self, event: &[u8]) -> Result<(), ApplyError> {
        let serving = self.serving();
        let mut ctx = QueueContext {
            mem: &self.mem,
            queues: &mut self.queues,
            used: 0,
        };
        let result = self
            .device
            .apply_event(event, if serving { Some(&mut ctx) } else { None });
        let used = ctx.used;
        self.signal_used(used);
        match result {
            Ok(()) => Ok(()),
            Err(EventError::Fault(e)) => {
                self.fault(&error_chain(&e));
                Ok(())
            }
            Err(EventError::Malformed(reason)) => Err(ApplyError::Malformed {
                device: self.id.clone(),
                reason,
            }),
        }
    }

    /// The device attaches its host backend (see [`crate::go_live`]).
    /// Guest-visible state is unchanged: the transport only forwards.
    pub fn go_live(&mut self, live: &GoLive) -> Result<(), GoLiveError> {
        self.device.go_live(live)
    }

    /// Announces the guest on the network after a live migration (see
    /// [`VirtioDevice::announce`]).
    pub fn announce(&self) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        self.device.announce()
    }

    /// Host operations issued and not yet applied (a snapshot waits until
    /// there are none: see [`VirtioDevice::in_flight`]).
    pub fn in_flight(&self) -> usize {
        self.device.in_flight()
    }

    /// Takes the device's next finished host work.
    pub fn poll_event(&mut self) -> Option<Vec<u8>> {
        self.device.poll_event()
    }

    /// The BAR access the VIRTIO_PCI_CAP_PCI_CFG window describes, if valid.
    fn pci_cfg_window(&self) -> Option<(u64, usize)> {
        let bar = self.config.read_reg(self.pci_cfg_reg + 1) & 0xff;
        let offset = u64::from(self.config.read_reg(self.pci_cfg_reg + 2));
        let len = self.config.read_reg(self.pci_cfg_reg + 3) as usize;
        (bar == 0 && matches!(len, 1 | 2 | 4) && offset % len as u64 == 0).then_some((offset, len))
    }

    fn sync_msix_control(&mut self) {
        let reg = self.config.read_reg(self.msix_cap_reg);
        let value = (reg & 0xffff) | (u32::from(self.msix.message_control()) << 16);
        self.config.set_reg(self.msix_cap_reg, value);
    }
}

/// Whether the driver set VRING_AVAIL_F_NO_INTERRUPT in the queue's
/// available ring (its first 16-bit field). An unreadable ring counts as
/// not suppressed: the interrupt is sent.
fn interrupts_suppressed(mem: &GuestMemoryMmap, q: &Queue) -> bool {
    // `needs_notification` ordered the used ring's writes before this read.
    mem.read_obj::<u16>(GuestAddress(q.avail_ring()))
        .is_ok_and(|flags| u16::from_le(flags) & VRING_AVAIL_F_NO_INTERRUPT != 0)
}

const VRING_AVAIL_F_NO_INTERRUPT: u16 =
    virtio_bindings::virtio_ring::VRING_AVAIL_F_NO_INTERRUPT as u16;

fn hi(data: &[u8]) -> Option<u32> {
    (data.len() == 8).then(|| u32::from_le_bytes([data[4], data[5], data[6], data[7]]))
}

/// An error and its sources, on one line.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

fn virtio_cap(kind: u8, offset: u32, length: u32) -> Vec<u8> {
    let len: u8 = if kind == CAP_NOTIFY { 20 } else { 16 };
    let mut cap = vec![0u8; usize::from(len)];
    cap[0] = VIRTIO_PCI_CAP_VENDOR;
    cap[2] = len;
    cap[3] = kind;
    cap[4] = 0; // BAR 0
    cap[8..12].copy_from_slice(&offset.to_le_bytes());
    cap[12..16].copy_from_slice(&length.to_le_bytes());
    if kind == CAP_NOTIFY {
        cap[16..20].copy_from_slice(&NOTIFY_MULTIPLIER.to_le_bytes());
    }
    cap
}

impl PciDevice for VirtioPciDevice {
    fn config_read(&mut self, reg: usize) -> u32 {
        if reg >= NUM_REGS {
            return 0;
        }
        if reg == self.msix_cap_reg {
            self.sync_msix_control();
        }
        if reg == self.pci_cfg_reg + 4 {
            let mut data = [0u8; 4];
            if let Some((offset, len)) = self.pci_cfg_window() {
                self.bar_read(0, offset, &mut data[..len]);
            }
            return u32::from_le_bytes(data);
        }
        self.config.read_reg(reg)
    }

    fn config_write(&mut self, reg: usize, offset: u64, data: &[u8]) {
        if reg == self.msix_cap_reg {
            // Only the message control half (bytes 2..4) is writable.
            let mut bytes = self.config.read_reg(reg).to_le_bytes();
            for (i, b) in data.iter().enumerate() {
                if let Some(slot) = bytes.get_mut(offset as usize + i) {
                    *slot = *b;
                }
            }
            if offset as usize + data.len() > 2 {
                self.msix
                    .set_message_control(u16::from_le_bytes([bytes[2], bytes[3]]));
                self.sync_msix_control();
            }
            return;
        }
        if reg == self.pci_cfg_reg + 4 {
            if let Some((bar_offset, len)) = self.pci_cfg_window() {
                if offset == 0 && data.len() >= len {
                    self.bar_write(0, bar_offset, &data[..len]);
                }
            }
            return;
        }
        self.config.write_reg(reg, offset, data);
    }

    fn bars(&self) -> Vec<Bar> {
        self.config.bars().collect()
    }

    fn bar_read(&mut self, index: usize, offset: u64, data: &mut [u8]) {
        data.fill(0);
        if index != 0 {
            return;
        }
        match offset {
            o if o < COMMON_OFFSET + COMMON_LEN => {
                let snap = self.common_snapshot();
                for (i, d) in data.iter_mut().enumerate() {
                    *d = snap.get(o as usize + i).copied().unwrap_or(0);
                }
            }
            ISR_OFFSET => {
                data[0] = self.isr;
                self.isr = 0;
            }
            o if (DEVICE_CFG_OFFSET..DEVICE_CFG_OFFSET + DEVICE_CFG_LEN).contains(&o) => {
                self.device.read_config(o - DEVICE_CFG_OFFSET, data);
            }
            o if (MSIX_TABLE_OFFSET..MSIX_PBA_OFFSET).contains(&o) => {
                self.msix.table_read(o - MSIX_TABLE_OFFSET, data);
            }
            o if (MSIX_PBA_OFFSET..BAR_SIZE).contains(&o) => {
                self.msix.pba_read(o - MSIX_PBA_OFFSET, data);
            }
            _ => {}
        }
    }

    fn bar_write(&mut self, index: usize, offset: u64, data: &[u8]) {
        if index != 0 {
            return;
        }
        match offset {
            o if o < COMMON_OFFSET + COMMON_LEN => self.common_write(o, data),
            o if (NOTIFY_OFFSET..MSIX_TABLE_OFFSET).contains(&o) => {
                let index = (o - NOTIFY_OFFSET) / u64::from(NOTIFY_MULTIPLIER);
                self.notify(index as usize);
            }
            o if (MSIX_TABLE_OFFSET..MSIX_PBA_OFFSET).contains(&o) => {
                self.msix.table_write(o - MSIX_TABLE_OFFSET, data);
            }
            // The device configurations here are read-only.
            _ => {}
        }
    }
}

/// The [`AsyncEventSource`] face of a virtio-pci device.
#[derive(Debug)]
pub struct VirtioPciEvents {
    id: String,
    device: Arc<Mutex<VirtioPciDevice>>,
}

impl VirtioPciEvents {
    /// Events of `device`.
    pub fn new(device: Arc<Mutex<VirtioPciDevice>>) -> Self {
        let id = device.lock().unwrap_or_else(|e| e.into_inner()).id.clone();
        VirtioPciEvents { id, device }
    }
}

impl AsyncEventSource for VirtioPciEvents {
    fn id(&self) -> &str {
        &self.id
    }

    fn poll_event(&mut self) -> Option<Vec<u8>> {
        self.device
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .poll_event()
    }

    fn apply_event(&mut self, event: &[u8]) -> Result<(), ApplyError> {
        self.device
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .apply_event(event)
    }
}

#[path = "transport_state.rs"]
mod state;
pub use state::StateError;

#[cfg(test)]
#[path = "transport_tests.rs"]
mod tests;
