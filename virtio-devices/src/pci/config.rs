// Copyright 2026 The ft-cloud-hypervisor authors.
// SPDX-License-Identifier: Apache-2.0

//! A type-0 PCI configuration space: 256 bytes of registers with write
//! masks, memory BARs with size probing, and a capability list.

/// Number of 32-bit registers in the configuration space.
pub const NUM_REGS: usize = 64;
/// Offset of the first capability.
const FIRST_CAPABILITY: usize = 0x40;
/// Register index of BAR 0.
const BAR0_REG: usize = 4;
/// Number of BARs of a type-0 header.
pub const NUM_BARS: usize = 6;
/// Status register bit: the capability list exists.
const STATUS_CAP_LIST: u32 = 1 << 4;

/// The identity of a PCI function.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PciIds {
    /// Vendor id.
    pub vendor: u16,
    /// Device id.
    pub device: u16,
    /// Revision.
    pub revision: u8,
    /// Class code (base class, sub class, programming interface).
    pub class: (u8, u8, u8),
    /// Subsystem vendor id.
    pub subsystem_vendor: u16,
    /// Subsystem id.
    pub subsystem: u16,
}

/// One memory BAR.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bar {
    /// Its index (0..6).
    pub index: usize,
    /// Size in bytes (a power of two, at least 16).
    pub size: u64,
    /// Address the guest (or the VMM) programmed.
    pub base: u64,
}

/// Errors building a configuration space.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    /// The capability list is full.
    #[error("no room for a {0}-byte capability")]
    NoRoom(usize),
    /// A BAR that cannot exist.
    #[error("invalid BAR {index} of size {size:#x}")]
    InvalidBar {
        /// Index.
        index: usize,
        /// Size.
        size: u64,
    },
}

/// A configuration space.
#[derive(Debug, Clone)]
pub struct PciConfiguration {
    regs: [u32; NUM_REGS],
    writable: [u32; NUM_REGS],
    bars: [Option<Bar>; NUM_BARS],
    last_cap: Option<usize>,
    next_cap: usize,
}

impl PciConfiguration {
    /// A configuration space for `ids`, with no BARs or capabilities.
    pub fn new(ids: PciIds, header_type: u8) -> Self {
        let mut regs = [0u32; NUM_REGS];
        regs[0] = u32::from(ids.vendor) | (u32::from(ids.device) << 16);
        regs[2] = u32::from(ids.revision)
            | (u32::from(ids.class.2) << 8)
            | (u32::from(ids.class.1) << 16)
            | (u32::from(ids.class.0) << 24);
        regs[3] = u32::from(header_type) << 16;
        regs[11] = u32::from(ids.subsystem_vendor) | (u32::from(ids.subsystem) << 16);
        let mut writable = [0u32; NUM_REGS];
        // Command register (the status half is read-only here).
        writable[1] = 0x0000_ffff;
        // Interrupt line.
        writable[15] = 0x0000_00ff;
        PciConfiguration {
            regs,
            writable,
            bars: [None; NUM_BARS],
            last_cap: None,
            next_cap: FIRST_CAPABILITY,
        }
    }

    /// Adds a 32-bit memory BAR of `size` bytes at `base`.
    pub fn add_memory_bar(
        &mut self,
        index: usize,
        base: u64,
        size: u64,
    ) -> Result<(), ConfigError> {
        let bad = ConfigError::InvalidBar { index, size };
        if index >= NUM_BARS || size < 16 || !size.is_power_of_two() || size > 1 << 31 {
            return Err(bad);
        }
        if base % size != 0 || base.saturating_add(size) > 1 << 32 {
            return Err(bad);
        }
        self.bars[index] = Some(Bar { index, size, base });
        self.regs[BAR0_REG + index] = base as u32;
        Ok(())
    }

    /// Appends a capability (`bytes[0]` is its id, `bytes[1]` the next
    /// pointer, filled in here). Returns its offset.
    pub fn add_capability(&mut self, bytes: &[u8]) -> Result<usize, ConfigError> {
        let len = bytes.len().max(2).next_multiple_of(4);
        let offset = self.next_cap;
        if offset + len > NUM_REGS * 4 {
            return Err(ConfigError::NoRoom(bytes.len()));
        }
        for (i, b) in bytes.iter().enumerate() {
            let value = if i == 1 { 0 } else { *b };
            self.set_byte(offset + i, value);
        }
        match self.last_cap {
            Some(prev) => self.set_byte(prev + 1, offset as u8),
            None => {
                self.regs[13] = offset as u32;
                self.regs[1] |= STATUS_CAP_LIST << 16;
            }
        }
        self.last_cap = Some(offset);
        self.next_cap = offset + len;
        Ok(offset)
    }

    fn set_byte(&mut self, offset: usize, value: u8) {
        let reg = offset / 4;
        let shift = (offset % 4) * 8;
        self.regs[reg] = (self.regs[reg] & !(0xff << shift)) | (u32::from(value) << shift);
    }

    /// Sets bits of register `reg` as writable by the guest.
    pub fn set_writable(&mut self, reg: usize, mask: u32) {
        if let Some(w) = self.writable.get_mut(reg) {
            *w = mask;
        }
    }

    /// Reads register `reg` (out of range reads return all ones).
    pub fn read_reg(&self, reg: usize) -> u32 {
        if let Some(bar) = self.bar_at_reg(reg) {
            // Memory BAR, 32-bit, not prefetchable: flag bits are zero.
            return self.regs[reg] & !((bar.size as u32).wrapping_sub(1));
        }
        self.regs.get(reg).copied().unwrap_or(0xffff_ffff)
    }

    /// Overwrites register `reg` without masks (for the device model).
    pub fn set_reg(&mut self, reg: usize, value: u32) {
        if let Some(r) = self.regs.get_mut(reg) {
            *r = value;
        }
    }

    fn bar_at_reg(&self, reg: usize) -> Option<Bar> {
        let index = reg.checked_sub(BAR0_REG)?;
        self.bars.get(index).copied().flatten()
    }

    /// Writes `data` at byte `offset` of register `reg`, through the masks.
    pub fn write_reg(&mut self, reg: usize, offset: u64, data: &[u8]) {
        if reg >= NUM_REGS || offset as usize + data.len() > 4 || data.is_empty() {
            return;
        }
        let mut value = 0u32;
        let mut mask = 0u32;
        for (i, b) in data.iter().enumerate() {
            let shift = (offset as usize + i) * 8;
            value |= u32::from(*b) << shift;
            mask |= 0xff << shift;
        }
        if let Some(bar) = self.bar_at_reg(reg) {
            // Any address is accepted (size probing writes all ones); the
            // low bits that encode the size stay zero.
            let merged = (self.regs[reg] & !mask) | (value & mask);
            let base = merged & !((bar.size as u32).wrapping_sub(1));
            self.regs[reg] = base;
            if let Some(b) = self.bars[bar.index].as_mut() {
                b.base = u64::from(base);
            }
            return;
        }
        let w = self.writable[reg] & mask;
        self.regs[reg] = (self.regs[reg] & !w) | (value & w);
    }

    /// Every register as stored (for saving state).
    pub fn regs(&self) -> [u32; NUM_REGS] {
        self.regs
    }

    /// Replaces every register with saved ones; the BARs move to the saved
    /// addresses. Masks, BAR sizes and the capability layout stay.
    pub fn restore_regs(&mut self, regs: [u32; NUM_REGS]) {
        self.regs = regs;
        for bar in self.bars.iter_mut().flatten() {
            let reg = BAR0_REG + bar.index;
            self.regs[reg] &= !((bar.size as u32).wrapping_sub(1));
            bar.base = u64::from(self.regs[reg]);
        }
    }

    /// The BARs, with their current addresses.
    pub fn bars(&self) -> impl Iterator<Item = Bar> + '_ {
        self.bars.iter().flatten().copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids() -> PciIds {
        PciIds {
            vendor: 0x1af4,
            device: 0x1042,
            revision: 1,
            class: (1, 0x80, 0),
            subsystem_vendor: 0x1af4,
            subsystem: 0x40,
        }
    }

    #[test]
    fn ids_and_class() {
        let c = PciConfiguration::new(ids(), 0);
        assert_eq!(c.read_reg(0), 0x1042_1af4);
        assert_eq!(c.read_reg(2), 0x0180_0001);
        assert_eq!(c.read_reg(11), 0x0040_1af4);
        assert_eq!(c.read_reg(64), 0xffff_ffff);
    }

    #[test]
    fn bar_size_probe_and_move() {
        let mut c = PciConfiguration::new(ids(), 0);
        c.add_memory_bar(0, 0xc000_0000, 0x8000).unwrap();
        assert_eq!(c.read_reg(4), 0xc000_0000);
        c.write_reg(4, 0, &0xffff_ffffu32.to_le_bytes());
        assert_eq!(c.read_reg(4), 0xffff_8000);
        c.write_reg(4, 0, &0xc001_0000u32.to_le_bytes());
        assert_eq!(c.read_reg(4), 0xc001_0000);
        assert_eq!(c.bars().next().unwrap().base, 0xc001_0000);
        // BAR 1 does not exist: reads zero, writes are ignored.
        c.write_reg(5, 0, &0xffff_ffffu32.to_le_bytes());
        assert_eq!(c.read_reg(5), 0);
        assert!(c.add_memory_bar(1, 0xc000_0100, 0x8000).is_err());
        assert!(c.add_memory_bar(1, 0xc000_0000, 0x3000).is_err());
    }

    #[test]
    fn read_only_registers_stay() {
        let mut c = PciConfiguration::new(ids(), 0);
        c.write_reg(0, 0, &[0, 0, 0, 0]);
        assert_eq!(c.read_reg(0), 0x1042_1af4);
        c.write_reg(1, 0, &[0x06, 0x00]);
        assert_eq!(c.read_reg(1) & 0xffff, 6);
        c.write_reg(15, 0, &[9]);
        assert_eq!(c.read_reg(15) & 0xff, 9);
        // Out-of-range and oversized writes are ignored.
        c.write_reg(15, 3, &[1, 2]);
        c.write_reg(99, 0, &[1]);
    }

    #[test]
    fn capability_chain() {
        let mut c = PciConfiguration::new(ids(), 0);
        let a = c.add_capability(&[0x11, 0xee, 1, 2]).unwrap();
        let b = c
            .add_capability(&[0x09, 0xee, 16, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0])
            .unwrap();
        assert_eq!(a, 0x40);
        assert_eq!(b, 0x44);
        assert_eq!(c.read_reg(13) & 0xff, 0x40);
        assert_ne!(c.read_reg(1) & (STATUS_CAP_LIST << 16), 0);
        assert_eq!((c.read_reg(0x40 / 4) >> 8) & 0xff, 0x44);
        assert_eq!((c.read_reg(0x44 / 4) >> 8) & 0xff, 0);
        while c.add_capability(&[0x09; 16]).is_ok() {}
        assert_eq!(c.add_capability(&[0x09; 16]), Err(ConfigError::NoRoom(16)));
    }
}
