// Copyright 2026 The ft-cloud-hypervisor authors.
// SPDX-License-Identifier: Apache-2.0

//! The ACPI shutdown/reboot port Cloud Hypervisor exposes at 0x600.
//!
//! The guest powers off by writing its S5 sleep type with the sleep enable
//! bit (`(5 << 2) | (1 << 5)` = 0x34, the layout of a hardware-reduced
//! sleep control register) and reboots by writing 1. The FADT names the
//! port only as the reset register: ACPI guests (Linux) power off through
//! `PM1_CNT` ([`super::Pm1Device`]); the test guest writes 0x34 here
//! directly.

use log::{debug, info};

use crate::bus::{BusAction, BusDevice};

/// I/O port of the device.
pub const SHUTDOWN_PORT: u64 = 0x600;
/// Number of ports it covers (as Cloud Hypervisor registers it; only the
/// first one does anything).
pub const SHUTDOWN_PORT_SIZE: u64 = 8;

/// Sleep type of S5 (soft off) in the DSDT.
const S5_SLEEP_TYPE: u8 = 5;
/// Bit position of the sleep type field.
const SLEEP_TYPE_SHIFT: u8 = 2;
/// Sleep enable bit.
const SLEEP_ENABLE: u8 = 1 << 5;
/// Value requesting power-off.
pub const SHUTDOWN_VALUE: u8 = (S5_SLEEP_TYPE << SLEEP_TYPE_SHIFT) | SLEEP_ENABLE;
/// Value requesting a reboot.
pub const REBOOT_VALUE: u8 = 1;

/// The shutdown/reboot port. Stateless.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ShutdownDevice;

impl ShutdownDevice {
    /// A new device.
    pub fn new() -> Self {
        ShutdownDevice
    }
}

impl BusDevice for ShutdownDevice {
    fn read(&mut self, _offset: u64, data: &mut [u8]) {
        data.fill(0);
    }

    fn write(&mut self, offset: u64, data: &[u8]) -> BusAction {
        match (offset, data) {
            (0, [SHUTDOWN_VALUE]) => {
                info!("ACPI shutdown requested by the guest");
                BusAction::Shutdown
            }
            (0, [REBOOT_VALUE]) => {
                info!("ACPI reboot requested by the guest");
                BusAction::Reset
            }
            _ => {
                debug!("shutdown port: ignored write {data:x?} at offset {offset}");
                BusAction::None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shutdown_and_reboot_values() {
        let mut d = ShutdownDevice::new();
        assert_eq!(SHUTDOWN_VALUE, 0x34);
        assert_eq!(d.write(0, &[0x34]), BusAction::Shutdown);
        assert_eq!(d.write(0, &[0x01]), BusAction::Reset);
        for v in [0u8, 2, 0x14, 0x30, 0x35, 0xff] {
            assert_eq!(d.write(0, &[v]), BusAction::None, "value {v:#x}");
        }
        // Only single-byte writes at the port count.
        assert_eq!(d.write(0, &[0x34, 0]), BusAction::None);
        assert_eq!(d.write(0, &[]), BusAction::None);
        assert_eq!(d.write(1, &[0x34]), BusAction::None);
        let mut b = [0xffu8; 4];
        d.read(0, &mut b);
        assert_eq!(b, [0; 4]);
    }
}
