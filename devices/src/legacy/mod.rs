// Copyright 2026 The ft-cloud-hypervisor authors.
// SPDX-License-Identifier: Apache-2.0

//! Legacy x86 port-I/O devices, at the ports Cloud Hypervisor uses, and the
//! ACPI PM1 register block of the (non-hardware-reduced) ACPI platform.

mod debug_port;
mod i8042;
mod pm1;
mod serial;
mod shutdown;

pub use debug_port::{DebugPort, DEBUG_PORT, DEBUG_PORT_SIZE};
pub use i8042::{I8042Device, I8042_BASE, I8042_SIZE};
pub use pm1::{
    Pm1Device, PM1_CNT_LEN, PM1_CNT_PORT, PM1_EVT_LEN, PM1_PORT_BASE, PM1_PORT_SIZE,
    PM1_S5_SLEEP_TYPE,
};
pub use serial::{Serial, SerialError, SERIAL_IRQ, SERIAL_PORT_BASE, SERIAL_PORT_SIZE};
pub use shutdown::{ShutdownDevice, SHUTDOWN_PORT, SHUTDOWN_PORT_SIZE};

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};
    use std::time::Instant;

    use super::*;
    use crate::bus::{Bus, BusAction};
    use crate::irq::{IrqLine, IrqLines};

    #[test]
    fn devices_fit_on_one_port_bus() {
        let lines = IrqLines::new();
        let mut bus = Bus::new();
        let serial = Serial::new(
            IrqLine::new(lines.clone(), SERIAL_IRQ),
            Box::new(std::io::sink()),
        );
        bus.insert(
            Arc::new(Mutex::new(serial)),
            SERIAL_PORT_BASE,
            SERIAL_PORT_SIZE,
        )
        .unwrap();
        bus.insert(
            Arc::new(Mutex::new(ShutdownDevice::new())),
            SHUTDOWN_PORT,
            SHUTDOWN_PORT_SIZE,
        )
        .unwrap();
        bus.insert(
            Arc::new(Mutex::new(Pm1Device::new())),
            PM1_PORT_BASE,
            PM1_PORT_SIZE,
        )
        .unwrap();
        bus.insert(
            Arc::new(Mutex::new(DebugPort::with_start(Instant::now()))),
            DEBUG_PORT,
            DEBUG_PORT_SIZE,
        )
        .unwrap();
        bus.insert(
            Arc::new(Mutex::new(I8042Device::new())),
            I8042_BASE,
            I8042_SIZE,
        )
        .unwrap();

        assert_eq!(bus.write(0x600, &[0x34]), Some(BusAction::Shutdown));
        assert_eq!(bus.write(0x614, &[0x00, 0x34]), Some(BusAction::Shutdown));
        let mut w = [0u8; 2];
        assert!(bus.read(0x614, &mut w));
        assert_eq!(w, [0x01, 0x14]); // SCI_EN, SLP_TYP 5
        assert_eq!(bus.write(0x64, &[0xfe]), Some(BusAction::Reset));
        assert_eq!(bus.write(0x80, &[0x42]), Some(BusAction::None));
        let mut b = [0u8];
        assert!(bus.read(0x3fd, &mut b));
        assert_eq!(b[0], 0x60); // LSR: transmitter empty and idle
        assert!(bus.read(0x61, &mut b));
        assert_eq!(b[0], 0x20);
        // Serial THR-empty interrupt reaches IRQ line 4.
        bus.write(0x3f9, &[0x2]);
        assert_eq!(lines.take(), 1 << 4);
    }
}
