// Copyright 2026 The ft-cloud-hypervisor authors.
// SPDX-License-Identifier: Apache-2.0

//! An address bus (port I/O or MMIO) mapping ranges to devices.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::sync::{Arc, Mutex};

/// What the VMM must do after a device write.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BusAction {
    /// Nothing beyond the write itself.
    #[default]
    None,
    /// The guest asked to power off.
    Shutdown,
    /// The guest asked to reset (reboot).
    Reset,
}

/// A device on a bus. `offset` is relative to the start of its range.
pub trait BusDevice: Send + Debug {
    /// Fills `data` with the value read at `offset`.
    fn read(&mut self, offset: u64, data: &mut [u8]);
    /// Writes `data` at `offset`.
    fn write(&mut self, offset: u64, data: &[u8]) -> BusAction;
}

/// Errors from building a bus.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BusError {
    /// The new range overlaps one already inserted.
    #[error("bus range {base:#x}+{len:#x} overlaps an existing device")]
    Overlap {
        /// Start of the refused range.
        base: u64,
        /// Its length.
        len: u64,
    },
    /// A zero-length range.
    #[error("bus range at {0:#x} has zero length")]
    ZeroLength(u64),
}

/// A shared device handle.
pub type SharedDevice = Arc<Mutex<dyn BusDevice>>;

#[derive(Debug, Clone)]
struct Entry {
    len: u64,
    device: SharedDevice,
}

/// Ranges of addresses, each served by one device.
#[derive(Debug, Clone, Default)]
pub struct Bus {
    ranges: BTreeMap<u64, Entry>,
}

impl Bus {
    /// An empty bus.
    pub fn new() -> Self {
        Bus::default()
    }

    /// Maps `[base, base+len)` to `device`.
    pub fn insert(&mut self, device: SharedDevice, base: u64, len: u64) -> Result<(), BusError> {
        if len == 0 {
            return Err(BusError::ZeroLength(base));
        }
        let end = base.saturating_add(len);
        if let Some((b, e)) = self.ranges.range(..end).next_back() {
            if b.saturating_add(e.len) > base {
                return Err(BusError::Overlap { base, len });
            }
        }
        self.ranges.insert(base, Entry { len, device });
        Ok(())
    }

    /// The device covering `addr`, with the offset of `addr` in its range.
    pub fn resolve(&self, addr: u64) -> Option<(u64, &SharedDevice)> {
        let (base, entry) = self.ranges.range(..=addr).next_back()?;
        let offset = addr - base;
        (offset < entry.len).then_some((offset, &entry.device))
    }

    /// Reads from the device at `addr`; `false` if none is there.
    pub fn read(&self, addr: u64, data: &mut [u8]) -> bool {
        match self.resolve(addr) {
            Some((offset, dev)) => {
                lock(dev).read(offset, data);
                true
            }
            None => false,
        }
    }

    /// Writes to the device at `addr`; `None` if none is there.
    pub fn write(&self, addr: u64, data: &[u8]) -> Option<BusAction> {
        let (offset, dev) = self.resolve(addr)?;
        let action = lock(dev).write(offset, data);
        Some(action)
    }
}

fn lock(dev: &SharedDevice) -> std::sync::MutexGuard<'_, dyn BusDevice + 'static> {
    // A device that panicked while locked is still in a usable state for the
    // plain register models here: take the guard anyway.
    dev.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Default)]
    struct Reg(u8);
    impl BusDevice for Reg {
        fn read(&mut self, offset: u64, data: &mut [u8]) {
            data.fill(self.0.wrapping_add(offset as u8));
        }
        fn write(&mut self, _offset: u64, data: &[u8]) -> BusAction {
            self.0 = data[0];
            if self.0 == 0xff {
                BusAction::Shutdown
            } else {
                BusAction::None
            }
        }
    }

    #[test]
    fn insert_resolve_and_overlap() {
        let mut bus = Bus::new();
        bus.insert(Arc::new(Mutex::new(Reg(1))), 0x10, 4).unwrap();
        bus.insert(Arc::new(Mutex::new(Reg(2))), 0x14, 4).unwrap();
        assert_eq!(
            bus.insert(Arc::new(Mutex::new(Reg(3))), 0x12, 4),
            Err(BusError::Overlap { base: 0x12, len: 4 })
        );
        assert_eq!(
            bus.insert(Arc::new(Mutex::new(Reg(3))), 0x8, 9),
            Err(BusError::Overlap { base: 0x8, len: 9 })
        );
        assert!(bus.insert(Arc::new(Mutex::new(Reg(3))), 0x8, 0).is_err());
        let mut d = [0u8; 1];
        assert!(bus.read(0x11, &mut d));
        assert_eq!(d[0], 2);
        assert!(bus.read(0x14, &mut d));
        assert_eq!(d[0], 2);
        assert!(!bus.read(0x18, &mut d));
        assert_eq!(bus.write(0x15, &[0xff]), Some(BusAction::Shutdown));
        assert_eq!(bus.write(0x100, &[0]), None);
    }
}
