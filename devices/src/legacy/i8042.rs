// Copyright 2026 The ft-cloud-hypervisor authors.
// SPDX-License-Identifier: Apache-2.0

//! Just enough of the i8042 keyboard controller to reboot the machine.
//!
//! As in Cloud Hypervisor, the device covers ports 0x61..=0x64: offset 0 is
//! port 0x61 (system control port B) and offset 3 is port 0x64 (the i8042
//! status/command port). Command 0xfe (pulse the reset line) resets the VM.

use log::{debug, info};

use crate::bus::{BusAction, BusDevice};

/// First port of the device (system control port B).
pub const I8042_BASE: u64 = 0x61;
/// Ports covered: 0x61..=0x64.
pub const I8042_SIZE: u64 = 4;

/// Offset of port 0x61.
const PORT_B_OFFSET: u64 = 0;
/// Offset of port 0x64.
const COMMAND_OFFSET: u64 = 3;
/// Command: pulse the CPU reset line.
const CMD_RESET_CPU: u8 = 0xfe;
/// Port B value read: bit 5 (timer 2 output) set, as kvmtool and Cloud
/// Hypervisor do, so that Linux's PIT-based TSC calibration does not hang.
const PORT_B_VALUE: u8 = 0x20;

/// The i8042 reset device. Stateless.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct I8042Device;

impl I8042Device {
    /// A new device.
    pub fn new() -> Self {
        I8042Device
    }
}

impl BusDevice for I8042Device {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        data.fill(0);
        if let [byte] = data {
            match offset {
                PORT_B_OFFSET => *byte = PORT_B_VALUE,
                // Status: output buffer empty, input buffer empty.
                COMMAND_OFFSET => *byte = 0,
                _ => {}
            }
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) -> BusAction {
        if offset == COMMAND_OFFSET && data == [CMD_RESET_CPU] {
            info!("i8042 reset requested by the guest");
            return BusAction::Reset;
        }
        debug!("i8042: ignored write {data:x?} at offset {offset}");
        BusAction::None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reset_command() {
        let mut d = I8042Device::new();
        assert_eq!(d.write(3, &[0xfe]), BusAction::Reset);
        assert_eq!(d.write(3, &[0xfd]), BusAction::None);
        assert_eq!(d.write(0, &[0xfe]), BusAction::None);
        assert_eq!(d.write(3, &[0xfe, 0]), BusAction::None);
        assert_eq!(d.write(3, &[]), BusAction::None);
    }

    #[test]
    fn reads() {
        let mut d = I8042Device::new();
        let mut b = [0xffu8];
        d.read(3, &mut b);
        assert_eq!(b, [0]);
        d.read(0, &mut b);
        assert_eq!(b, [0x20]);
        d.read(1, &mut b);
        assert_eq!(b, [0]);
        let mut w = [0xffu8; 2];
        d.read(0, &mut w);
        assert_eq!(w, [0, 0]);
        d.read(0, &mut []);
    }
}
