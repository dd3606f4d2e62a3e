// Copyright 2026 The ft-cloud-hypervisor authors.
// SPDX-License-Identifier: Apache-2.0

//! PCI segment 0, bus 0: the host bridge and its functions, reached through
//! the legacy configuration ports (0xcf8/0xcfc), through ECAM (MMCONFIG)
//! and, for BAR accesses, through the 32-bit device MMIO window.

use std::fmt::Debug;
use std::sync::{Arc, Mutex, MutexGuard};

use devices::bus::{BusAction, BusDevice};

use super::config::{Bar, PciConfiguration, PciIds};

/// Legacy configuration address port.
pub const PCI_CONFIG_IO_PORT: u64 = 0xcf8;
/// Size of the address and data ports.
pub const PCI_CONFIG_IO_PORT_SIZE: u64 = 8;
/// Devices on bus 0.
pub const MAX_DEVICES: u8 = 32;

/// A PCI function on bus 0.
pub trait PciDevice: Send + Debug {
    /// Reads configuration register `reg` (0..64 for the standard space,
    /// up to 1024 for ECAM's extended space).
    fn config_read(&mut self, reg: usize) -> u32;
    /// Writes `data` at byte `offset` of configuration register `reg`.
    fn config_write(&mut self, reg: usize, offset: u64, data: &[u8]);
    /// The memory BARs, at their current addresses.
    fn bars(&self) -> Vec<Bar>;
    /// Reads at `offset` in BAR `index`.
    fn bar_read(&mut self, index: usize, offset: u64, data: &mut [u8]);
    /// Writes at `offset` in BAR `index` (a virtio notify may process a
    /// queue here, on the vCPU thread).
    fn bar_write(&mut self, index: usize, offset: u64, data: &[u8]);
}

/// A shared PCI function.
pub type SharedPciDevice = Arc<Mutex<dyn PciDevice>>;

fn lock(dev: &SharedPciDevice) -> MutexGuard<'_, dyn PciDevice + 'static> {
    dev.lock().unwrap_or_else(|e| e.into_inner())
}

/// The host bridge at 00:00.0: identity only.
#[derive(Debug)]
pub struct HostBridge {
    config: PciConfiguration,
}

impl Default for HostBridge {
    fn default() -> Self {
        Self::new()
    }
}

impl HostBridge {
    /// Vendor id of the bridge (Intel), as Cloud Hypervisor's.
    pub const VENDOR: u16 = 0x8086;
    /// Device id of the bridge.
    pub const DEVICE: u16 = 0x0d57;

    /// A host bridge (class 06.00.00).
    pub fn new() -> Self {
        HostBridge {
            config: PciConfiguration::new(
                PciIds {
                    vendor: Self::VENDOR,
                    device: Self::DEVICE,
                    revision: 0,
                    class: (0x06, 0x00, 0x00),
                    subsystem_vendor: 0,
                    subsystem: 0,
                },
                0,
            ),
        }
    }
}

impl PciDevice for HostBridge {
    fn config_read(&mut self, reg: usize) -> u32 {
        if reg < super::config::NUM_REGS {
            self.config.read_reg(reg)
        } else {
            0
        }
    }
    fn config_write(&mut self, reg: usize, offset: u64, data: &[u8]) {
        self.config.write_reg(reg, offset, data);
    }
    fn bars(&self) -> Vec<Bar> {
        Vec::new()
    }
    fn bar_read(&mut self, _index: usize, _offset: u64, data: &mut [u8]) {
        data.fill(0xff);
    }
    fn bar_write(&mut self, _index: usize, _offset: u64, _data: &[u8]) {}
}

/// Errors adding a device to the bus.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PciRootError {
    /// Every slot of bus 0 is taken.
    #[error("no free slot on PCI bus 0")]
    NoSlot,
}

/// Bus 0 of segment 0.
#[derive(Debug, Default)]
pub struct PciRoot {
    devices: Vec<(u8, SharedPciDevice)>,
}

impl PciRoot {
    /// A bus with the host bridge at device 0.
    pub fn new() -> Self {
        PciRoot {
            devices: vec![(0, Arc::new(Mutex::new(HostBridge::new())))],
        }
    }

    /// Adds `device` at the next free device number; returns it.
    pub fn add_device(&mut self, device: SharedPciDevice) -> Result<u8, PciRootError> {
        let number = (0..MAX_DEVICES)
            .find(|n| !self.devices.iter().any(|(d, _)| d == n))
            .ok_or(PciRootError::NoSlot)?;
        self.devices.push((number, device));
        Ok(number)
    }

    fn device(&self, number: u8, function: u8) -> Option<&SharedPciDevice> {
        if function != 0 {
            return None;
        }
        self.devices
            .iter()
            .find(|(d, _)| *d == number)
            .map(|(_, dev)| dev)
    }

    /// Reads a configuration register; absent functions read all ones.
    pub fn config_read(&self, bus: u8, device: u8, function: u8, reg: usize) -> u32 {
        match (bus, self.device(device, function)) {
            (0, Some(dev)) => lock(dev).config_read(reg),
            _ => 0xffff_ffff,
        }
    }

    /// Writes a configuration register; absent functions ignore it.
    pub fn config_write(
        &self,
        bus: u8,
        device: u8,
        function: u8,
        reg: usize,
        offset: u64,
        data: &[u8],
    ) {
        if let (0, Some(dev)) = (bus, self.device(device, function)) {
            lock(dev).config_write(reg, offset, data);
        }
    }

    /// Reads from the BAR that holds `addr`; `false` if none does.
    pub fn mmio_read(&self, addr: u64, data: &mut [u8]) -> bool {
        for (_, dev) in &self.devices {
            let mut dev = lock(dev);
            if let Some((index, offset)) = find_bar(&dev.bars(), addr, data.len()) {
                dev.bar_read(index, offset, data);
                return true;
            }
        }
        false
    }

    /// Writes to the BAR that holds `addr`; `false` if none does.
    pub fn mmio_write(&self, addr: u64, data: &[u8]) -> bool {
        for (_, dev) in &self.devices {
            let mut dev = lock(dev);
            if let Some((index, offset)) = find_bar(&dev.bars(), addr, data.len()) {
                dev.bar_write(index, offset, data);
                return true;
            }
        }
        false
    }
}

fn find_bar(bars: &[Bar], addr: u64, len: usize) -> Option<(usize, u64)> {
    bars.iter().find_map(|bar| {
        let offset = addr.checked_sub(bar.base)?;
        (bar.base != 0 && offset.saturating_add(len as u64) <= bar.size)
            .then_some((bar.index, offset))
    })
}

/// A shared bus 0.
pub type SharedPciRoot = Arc<Mutex<PciRoot>>;

fn lock_root(root: &SharedPciRoot) -> MutexGuard<'_, PciRoot> {
    root.lock().unwrap_or_else(|e| e.into_inner())
}

/// Configuration mechanism #1: the address port 0xcf8 and the data ports
/// 0xcfc..0xd00.
#[derive(Debug)]
pub struct PciConfigIo {
    root: SharedPciRoot,
    address: u32,
}

impl PciConfigIo {
    /// The ports for `root`.
    pub fn new(root: SharedPciRoot) -> Self {
        PciConfigIo { root, address: 0 }
    }

    fn target(&self) -> Option<(u8, u8, u8, usize)> {
        if self.address & 0x8000_0000 == 0 {
            return None;
        }
        let bus = ((self.address >> 16) & 0xff) as u8;
        let device = ((self.address >> 11) & 0x1f) as u8;
        let function = ((self.address >> 8) & 0x7) as u8;
        let reg = ((self.address >> 2) & 0x3f) as usize;
        Some((bus, device, function, reg))
    }
}

impl BusDevice for PciConfigIo {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        if offset < 4 {
            let bytes = self.address.to_le_bytes();
            copy_from(&bytes, offset as usize, data);
            return;
        }
        let value = match self.target() {
            Some((b, d, f, r)) => lock_root(&self.root).config_read(b, d, f, r),
            None => 0xffff_ffff,
        };
        copy_from(&value.to_le_bytes(), (offset - 4) as usize, data);
    }

    fn write(&mut self, offset: u64, data: &[u8]) -> BusAction {
        if offset < 4 {
            if offset == 0 && data.len() == 4 {
                let mut b = [0u8; 4];
                b.copy_from_slice(data);
                self.address = u32::from_le_bytes(b);
            }
            return BusAction::None;
        }
        let byte = offset - 4;
        if byte as usize + data.len() <= 4 {
            if let Some((b, d, f, r)) = self.target() {
                lock_root(&self.root).config_write(b, d, f, r, byte, data);
            }
        }
        BusAction::None
    }
}

/// Copies `data.len()` bytes of `src` from `offset`, all ones past its end.
fn copy_from(src: &[u8], offset: usize, data: &mut [u8]) {
    for (i, d) in data.iter_mut().enumerate() {
        *d = src.get(offset + i).copied().unwrap_or(0xff);
    }
}

/// ECAM (PCI Express enhanced configuration, MMCONFIG): 4 KiB of
/// configuration space per function, bus in bits 20..28.
#[derive(Debug)]
pub struct PciConfigMmio {
    root: SharedPciRoot,
}

impl PciConfigMmio {
    /// The ECAM window for `root`.
    pub fn new(root: SharedPciRoot) -> Self {
        PciConfigMmio { root }
    }

    fn decode(offset: u64) -> (u8, u8, u8, usize, u64) {
        let bus = ((offset >> 20) & 0xff) as u8;
        let device = ((offset >> 15) & 0x1f) as u8;
        let function = ((offset >> 12) & 0x7) as u8;
        let reg = ((offset & 0xfff) >> 2) as usize;
        (bus, device, function, reg, offset & 3)
    }
}

impl BusDevice for PciConfigMmio {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        let (b, d, f, r, byte) = Self::decode(offset);
        if byte as usize + data.len() > 4 {
            data.fill(0xff);
            return;
        }
        let value = lock_root(&self.root).config_read(b, d, f, r);
        copy_from(&value.to_le_bytes(), byte as usize, data);
    }

    fn write(&mut self, offset: u64, data: &[u8]) -> BusAction {
        let (b, d, f, r, byte) = Self::decode(offset);
        if byte as usize + data.len() <= 4 {
            lock_root(&self.root).config_write(b, d, f, r, byte, data);
        }
        BusAction::None
    }
}

/// The 32-bit device MMIO window: accesses go to the BAR that holds them,
/// wherever the guest programmed it inside the window.
#[derive(Debug)]
pub struct PciMmioWindow {
    root: SharedPciRoot,
    base: u64,
}

impl PciMmioWindow {
    /// The window starting at guest address `base` (bus offsets are
    /// relative to it).
    pub fn new(root: SharedPciRoot, base: u64) -> Self {
        PciMmioWindow { root, base }
    }
}

impl BusDevice for PciMmioWindow {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        if !lock_root(&self.root).mmio_read(self.base + offset, data) {
            data.fill(0xff);
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) -> BusAction {
        lock_root(&self.root).mmio_write(self.base + offset, data);
        BusAction::None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct Fake {
        config: PciConfiguration,
        last_write: Option<(usize, u64, Vec<u8>)>,
    }

    impl PciDevice for Fake {
        fn config_read(&mut self, reg: usize) -> u32 {
            self.config.read_reg(reg)
        }
        fn config_write(&mut self, reg: usize, offset: u64, data: &[u8]) {
            self.config.write_reg(reg, offset, data);
        }
        fn bars(&self) -> Vec<Bar> {
            self.config.bars().collect()
        }
        fn bar_read(&mut self, index: usize, offset: u64, data: &mut [u8]) {
            data.fill((index as u8) ^ (offset as u8));
        }
        fn bar_write(&mut self, index: usize, offset: u64, data: &[u8]) {
            self.last_write = Some((index, offset, data.to_vec()));
        }
    }

    fn setup() -> (SharedPciRoot, Arc<Mutex<Fake>>) {
        let mut config = PciConfiguration::new(
            PciIds {
                vendor: 0x1af4,
                device: 0x1041,
                revision: 1,
                class: (2, 0, 0),
                subsystem_vendor: 0x1af4,
                subsystem: 0x40,
            },
            0,
        );
        config.add_memory_bar(0, 0xc000_0000, 0x1000).unwrap();
        let fake = Arc::new(Mutex::new(Fake {
            config,
            last_write: None,
        }));
        let mut root = PciRoot::new();
        assert_eq!(root.add_device(fake.clone()).unwrap(), 1);
        (Arc::new(Mutex::new(root)), fake)
    }

    fn io_read(io: &mut PciConfigIo, bdf_reg: u32, port_off: u64, len: usize) -> u32 {
        io.write(0, &(0x8000_0000 | bdf_reg).to_le_bytes());
        let mut d = vec![0u8; len];
        io.read(port_off, &mut d);
        d.resize(4, 0);
        u32::from_le_bytes([d[0], d[1], d[2], d[3]])
    }

    #[test]
    fn config_through_ports() {
        let (root, _) = setup();
        let mut io = PciConfigIo::new(root);
        assert_eq!(io_read(&mut io, 0, 4, 4), 0x0d57_8086);
        assert_eq!(io_read(&mut io, 1 << 11, 4, 4), 0x1041_1af4);
        assert_eq!(io_read(&mut io, 1 << 11, 6, 2), 0x1041);
        assert_eq!(io_read(&mut io, 2 << 11, 4, 4), 0xffff_ffff);
        assert_eq!(io_read(&mut io, (1 << 16) | (1 << 11), 4, 4), 0xffff_ffff);
        assert_eq!(io_read(&mut io, (1 << 11) | (1 << 8), 4, 4), 0xffff_ffff);
        // The address register reads back.
        let mut d = [0u8; 4];
        io.read(0, &mut d);
        assert_eq!(u32::from_le_bytes(d), 0x8000_0000 | (1 << 11) | (1 << 8));
        // Disabled: all ones.
        io.write(0, &(1u32 << 11).to_le_bytes());
        io.read(4, &mut d);
        assert_eq!(d, [0xff; 4]);
    }

    #[test]
    fn config_through_ecam_and_bar_dispatch() {
        let (root, fake) = setup();
        let mut ecam = PciConfigMmio::new(root.clone());
        let mut d = [0u8; 4];
        ecam.read(1 << 15, &mut d);
        assert_eq!(u32::from_le_bytes(d), 0x1041_1af4);
        let mut w = [0u8; 2];
        ecam.read((1 << 15) + 2, &mut w);
        assert_eq!(u16::from_le_bytes(w), 0x1041);
        ecam.read(3 << 15, &mut d);
        assert_eq!(d, [0xff; 4]);
        // Move BAR 0 through ECAM, then access it through the window.
        ecam.write((1 << 15) + 0x10, &0xc010_0000u32.to_le_bytes());
        let mut window = PciMmioWindow::new(root, 0xc000_0000);
        let mut b = [0u8; 1];
        window.read(0x10_0004, &mut b);
        assert_eq!(b[0], 4);
        window.write(0x10_0008, &[7]);
        assert_eq!(fake.lock().unwrap().last_write, Some((0, 8, vec![7])));
        window.read(0, &mut b);
        assert_eq!(b[0], 0xff);
        // An access straddling the BAR's end is not dispatched.
        let mut q = [0u8; 8];
        window.read(0x10_0ffc, &mut q);
        assert_eq!(q, [0xff; 8]);
    }
}
