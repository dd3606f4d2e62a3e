//! virtio 1.x over PCI (the "modern" transport, virtio spec 4.1), driven
//! from user mode: configuration structures in memory BARs (one VM exit
//! per access, used only at setup), split virtqueues in guest memory
//! (no exits), one notification write per batch, and MSI-X interrupts to
//! IDT vectors that the CPL0 stubs count and EOI.

pub mod blk;
pub mod net;
pub mod queue;

use core::ptr::{read_volatile, write_volatile};

use thiserror::Error;

use crate::pci::{Access, Address, Function, PciError};
use queue::{QueueError, Virtqueue};

/// PCI vendor ID of virtio devices.
pub const VENDOR: u16 = 0x1af4;
/// virtio feature bit: virtio 1.0 or later (modern interface).
pub const F_VERSION_1: u64 = 1 << 32;

/// Vendor-specific capability (virtio structures) and MSI-X capability.
const CAP_VENDOR: u8 = 0x09;
const CAP_MSIX: u8 = 0x11;
/// virtio_pci_cap.cfg_type values.
const CFG_COMMON: u8 = 1;
const CFG_NOTIFY: u8 = 2;
const CFG_ISR: u8 = 3;
const CFG_DEVICE: u8 = 4;

/// Common configuration registers (virtio_pci_common_cfg).
const DEVICE_FEATURE_SELECT: usize = 0x00;
const DEVICE_FEATURE: usize = 0x04;
const DRIVER_FEATURE_SELECT: usize = 0x08;
const DRIVER_FEATURE: usize = 0x0c;
const CONFIG_MSIX_VECTOR: usize = 0x10;
const NUM_QUEUES: usize = 0x12;
const DEVICE_STATUS: usize = 0x14;
const QUEUE_SELECT: usize = 0x16;
const QUEUE_SIZE: usize = 0x18;
const QUEUE_MSIX_VECTOR: usize = 0x1a;
const QUEUE_ENABLE: usize = 0x1c;
const QUEUE_NOTIFY_OFF: usize = 0x1e;
const QUEUE_DESC: usize = 0x20;
const QUEUE_DRIVER: usize = 0x28;
const QUEUE_DEVICE: usize = 0x30;

/// Device status bits.
const STATUS_ACKNOWLEDGE: u8 = 1;
const STATUS_DRIVER: u8 = 2;
const STATUS_DRIVER_OK: u8 = 4;
const STATUS_FEATURES_OK: u8 = 8;
const STATUS_NEEDS_RESET: u8 = 0x40;
const STATUS_FAILED: u8 = 0x80;
/// "No MSI-X vector".
const NO_VECTOR: u16 = 0xffff;

/// Most queue entries the guest uses.
const MAX_QUEUE_SIZE: u16 = 256;

/// A virtio device that cannot be driven.
#[derive(Debug, Error)]
pub enum VirtioError {
    /// PCI access failed.
    #[error("PCI")]
    Pci(#[source] PciError),
    /// A required virtio capability is missing.
    #[error("{0}: no {1} capability (not a virtio 1.x device?)")]
    MissingCapability(Address, &'static str),
    /// The device lacks a feature the driver needs.
    #[error("{0}: the device does not offer feature bit {1}")]
    MissingFeature(Address, u32),
    /// The device refused the negotiated features.
    #[error("{0}: the device did not accept the features (FEATURES_OK stays clear)")]
    FeaturesRefused(Address),
    /// The device does not have the queue.
    #[error("{0}: queue {1} is not available")]
    NoQueue(Address, u16),
    /// The device did not take an MSI-X vector.
    #[error("{0}: the device refused MSI-X vector {1}")]
    VectorRefused(Address, u16),
    /// The MSI-X table is too small for the vectors needed.
    #[error("{0}: MSI-X table has {1} entries, {2} needed")]
    FewVectors(Address, u16, u16),
    /// The queue memory could not be set up.
    #[error("{0}: queue setup")]
    Queue(Address, #[source] QueueError),
    /// The device reports an error state.
    #[error("{0}: the device needs a reset (status {1:#x})")]
    NeedsReset(Address, u8),
}

/// A memory-mapped register block (identity-mapped, uncached).
#[derive(Debug, Clone, Copy)]
struct Regs(usize);

impl Regs {
    fn read8(self, offset: usize) -> u8 {
        // SAFETY: `self.0 + offset` lies in a virtio structure of a
        // memory BAR (mapped uncached, user-accessible); device register
        // reads touch no guest memory.
        unsafe { read_volatile((self.0 + offset) as *const u8) }
    }
    fn read16(self, offset: usize) -> u16 {
        // SAFETY: as in `read8`, naturally aligned.
        unsafe { read_volatile((self.0 + offset) as *const u16) }
    }
    fn read32(self, offset: usize) -> u32 {
        // SAFETY: as in `read8`, naturally aligned.
        unsafe { read_volatile((self.0 + offset) as *const u32) }
    }
    fn write8(self, offset: usize, value: u8) {
        // SAFETY: as in `read8`; the driver chose the register and value.
        unsafe { write_volatile((self.0 + offset) as *mut u8, value) }
    }
    fn write16(self, offset: usize, value: u16) {
        // SAFETY: as in `write8`, naturally aligned.
        unsafe { write_volatile((self.0 + offset) as *mut u16, value) }
    }
    fn write32(self, offset: usize, value: u32) {
        // SAFETY: as in `write8`, naturally aligned.
        unsafe { write_volatile((self.0 + offset) as *mut u32, value) }
    }
    /// A 64-bit field written as two 32-bit halves (allowed by the spec).
    fn write64(self, offset: usize, value: u64) {
        self.write32(offset, value as u32);
        self.write32(offset + 4, (value >> 32) as u32);
    }
}

/// A virtio-pci device whose structures have been located.
#[derive(Debug)]
pub struct VirtioPci {
    address: Address,
    common: Regs,
    device: Regs,
    notify_base: usize,
    notify_multiplier: u32,
    msix_table: Regs,
    msix_entries: u16,
}

impl VirtioPci {
    /// Locates the structures of `function`, enables memory decoding, DMA
    /// and MSI-X.
    pub fn probe(access: &Access, function: &Function) -> Result<VirtioPci, VirtioError> {
        let address = function.address;
        access.enable_memory_and_dma(address);
        let caps = access.capabilities(address).map_err(VirtioError::Pci)?;
        let mut common = None;
        let mut device = None;
        let mut notify = None;
        let mut isr = false;
        let mut msix = None;
        for &(offset, id) in &caps {
            match id {
                CAP_VENDOR => {
                    let cfg_type = access.read8(address, offset + 3);
                    let bar = access.read8(address, offset + 4);
                    let start = access.read32(address, offset + 8);
                    let location = || -> Result<usize, VirtioError> {
                        let base = access.memory_bar(address, bar).map_err(VirtioError::Pci)?;
                        Ok((base + u64::from(start)) as usize)
                    };
                    match cfg_type {
                        CFG_COMMON if common.is_none() => common = Some(Regs(location()?)),
                        CFG_DEVICE if device.is_none() => device = Some(Regs(location()?)),
                        CFG_NOTIFY if notify.is_none() => {
                            let multiplier = access.read32(address, offset + 16);
                            notify = Some((location()?, multiplier));
                        }
                        CFG_ISR => isr = true,
                        _ => {}
                    }
                }
                CAP_MSIX => msix = Some(offset),
                _ => {}
            }
        }
        let missing = |what| VirtioError::MissingCapability(address, what);
        let common = common.ok_or(missing("common configuration"))?;
        let (notify_base, notify_multiplier) = notify.ok_or(missing("notification"))?;
        if !isr {
            return Err(missing("ISR"));
        }
        let msix = msix.ok_or(missing("MSI-X"))?;
        let control = access.read16(address, msix + 2);
        let table = access.read32(address, msix + 4);
        let table_base = access
            .memory_bar(address, (table & 7) as u8)
            .map_err(VirtioError::Pci)?;
        // Enable MSI-X (bit 15), clear the function mask (bit 14).
        access.write16(address, msix + 2, (control | 0x8000) & !0x4000);
        Ok(VirtioPci {
            address,
            common,
            device: device.unwrap_or(Regs(0)),
            notify_base,
            notify_multiplier,
            msix_table: Regs((table_base + u64::from(table & !7)) as usize),
            msix_entries: (control & 0x7ff) + 1,
        })
    }

    /// Resets the device and negotiates features: `required` must all be
    /// offered; `optional` are taken when offered. VIRTIO_F_VERSION_1 is
    /// always required. Returns the negotiated set. The device is left in
    /// FEATURES_OK, ready for queue setup and [`VirtioPci::driver_ok`].
    pub fn negotiate(&self, required: u64, optional: u64) -> Result<u64, VirtioError> {
        let c = self.common;
        c.write8(DEVICE_STATUS, 0);
        while c.read8(DEVICE_STATUS) != 0 {}
        c.write8(DEVICE_STATUS, STATUS_ACKNOWLEDGE);
        c.write8(DEVICE_STATUS, STATUS_ACKNOWLEDGE | STATUS_DRIVER);
        let mut offered = 0u64;
        for select in 0..2u32 {
            c.write32(DEVICE_FEATURE_SELECT, select);
            offered |= u64::from(c.read32(DEVICE_FEATURE)) << (32 * select);
        }
        let required = required | F_VERSION_1;
        if let Some(bit) =
            (0..64).find(|bit| required & (1 << bit) != 0 && offered & (1 << bit) == 0)
        {
            c.write8(DEVICE_STATUS, STATUS_FAILED);
            return Err(VirtioError::MissingFeature(self.address, bit));
        }
        let features = required | (optional & offered);
        for select in 0..2u32 {
            c.write32(DRIVER_FEATURE_SELECT, select);
            c.write32(DRIVER_FEATURE, (features >> (32 * select)) as u32);
        }
        let status = STATUS_ACKNOWLEDGE | STATUS_DRIVER | STATUS_FEATURES_OK;
        c.write8(DEVICE_STATUS, status);
        if c.read8(DEVICE_STATUS) & STATUS_FEATURES_OK == 0 {
            c.write8(DEVICE_STATUS, STATUS_FAILED);
            return Err(VirtioError::FeaturesRefused(self.address));
        }
        c.write16(CONFIG_MSIX_VECTOR, NO_VECTOR);
        Ok(features)
    }

    /// Sets up queue `index` (at most `max_size` entries) with its
    /// interrupts on MSI-X table entry `entry`, delivered as IDT `vector`.
    pub fn setup_queue(
        &self,
        index: u16,
        max_size: u16,
        entry: u16,
        vector: u8,
    ) -> Result<Virtqueue, VirtioError> {
        let c = self.common;
        if index >= c.read16(NUM_QUEUES) {
            return Err(VirtioError::NoQueue(self.address, index));
        }
        if entry >= self.msix_entries {
            return Err(VirtioError::FewVectors(
                self.address,
                self.msix_entries,
                entry + 1,
            ));
        }
        // MSI-X table entry: address (local APIC 0, fixed delivery), data
        // (the vector), vector control 0 (unmasked).
        let e = 16 * usize::from(entry);
        self.msix_table.write32(e, 0xfee0_0000);
        self.msix_table.write32(e + 4, 0);
        self.msix_table.write32(e + 8, u32::from(vector));
        self.msix_table.write32(e + 12, 0);

        c.write16(QUEUE_SELECT, index);
        let device_max = c.read16(QUEUE_SIZE);
        if device_max == 0 {
            return Err(VirtioError::NoQueue(self.address, index));
        }
        // The largest power of two within both limits.
        let limit = device_max.min(max_size).min(MAX_QUEUE_SIZE);
        let size = 1u16 << (15 - limit.leading_zeros().min(15));
        let notify_off = usize::from(c.read16(QUEUE_NOTIFY_OFF));
        let notify = self.notify_base + notify_off * self.notify_multiplier as usize;
        let queue = Virtqueue::new(index, size, notify as *mut u16)
            .map_err(|e| VirtioError::Queue(self.address, e))?;
        c.write16(QUEUE_SIZE, size);
        c.write16(QUEUE_MSIX_VECTOR, entry);
        if c.read16(QUEUE_MSIX_VECTOR) != entry {
            return Err(VirtioError::VectorRefused(self.address, entry));
        }
        let (desc, driver, device) = queue.addresses();
        c.write64(QUEUE_DESC, desc);
        c.write64(QUEUE_DRIVER, driver);
        c.write64(QUEUE_DEVICE, device);
        c.write16(QUEUE_ENABLE, 1);
        Ok(queue)
    }

    /// Tells the device the driver is ready (DRIVER_OK).
    pub fn driver_ok(&self) -> Result<(), VirtioError> {
        let c = self.common;
        let status = STATUS_ACKNOWLEDGE | STATUS_DRIVER | STATUS_FEATURES_OK | STATUS_DRIVER_OK;
        c.write8(DEVICE_STATUS, status);
        self.check_status()
    }

    /// The device status register.
    pub fn status(&self) -> u8 {
        self.common.read8(DEVICE_STATUS)
    }

    /// Fails when the device reports DEVICE_NEEDS_RESET or FAILED.
    pub fn check_status(&self) -> Result<(), VirtioError> {
        let status = self.common.read8(DEVICE_STATUS);
        if status & (STATUS_NEEDS_RESET | STATUS_FAILED) != 0 {
            return Err(VirtioError::NeedsReset(self.address, status));
        }
        Ok(())
    }

    /// Reads a byte of the device-specific configuration (0 if the device
    /// has none).
    pub fn config8(&self, offset: usize) -> u8 {
        if self.device.0 == 0 {
            return 0;
        }
        self.device.read8(offset)
    }

    /// Reads a 32-bit field of the device-specific configuration.
    pub fn config32(&self, offset: usize) -> u32 {
        if self.device.0 == 0 {
            return 0;
        }
        self.device.read32(offset)
    }
}

/// The first virtio function on bus 0 with modern device ID `modern_id`
/// (0x1040 + type) or transitional ID `transitional_id`.
pub fn find(access: &Access, modern_id: u16, transitional_id: u16) -> Option<Function> {
    access
        .enumerate()
        .find(|f| f.vendor == VENDOR && (f.device == modern_id || f.device == transitional_id))
}
