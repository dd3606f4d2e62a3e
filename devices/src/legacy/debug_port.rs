// Copyright 2026 The ft-cloud-hypervisor authors.
// SPDX-License-Identifier: Apache-2.0

//! The POST/debug port 0x80: each code the guest writes is logged with the
//! host time since the VM started, in the format of Cloud Hypervisor's
//! debug port. The timestamp is host-side logging only: the guest never
//! sees it, so it may come from the host clock.

use std::fmt;
use std::time::{Duration, Instant};

use log::info;

use crate::bus::{BusAction, BusDevice};

/// I/O port of the device.
pub const DEBUG_PORT: u64 = 0x80;
/// Number of ports it covers.
pub const DEBUG_PORT_SIZE: u64 = 1;

/// Which part of the boot a code belongs to, by range (as Cloud
/// Hypervisor assigns them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CodeRange {
    Firmware,
    Bootloader,
    Kernel,
    Userspace,
    Custom,
}

impl CodeRange {
    fn of(code: u8) -> Self {
        match code {
            0x00..=0x1f => CodeRange::Firmware,
            0x20..=0x3f => CodeRange::Bootloader,
            0x40..=0x5f => CodeRange::Kernel,
            0x60..=0x7f => CodeRange::Userspace,
            _ => CodeRange::Custom,
        }
    }
}

impl fmt::Display for CodeRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self {
            CodeRange::Firmware => "Firmware",
            CodeRange::Bootloader => "Bootloader",
            CodeRange::Kernel => "Kernel",
            CodeRange::Userspace => "Userspace",
            CodeRange::Custom => "Custom",
        };
        write!(f, "Debug I/O port: {name}")
    }
}

/// The log line for `code` written `elapsed` after the VM started.
fn format_code(code: u8, elapsed: Duration) -> String {
    format!(
        "[{} code {code:#x}] {}.{:06} seconds",
        CodeRange::of(code),
        elapsed.as_secs(),
        elapsed.subsec_micros()
    )
}

/// The debug port.
#[derive(Debug, Clone, Copy)]
pub struct DebugPort {
    start: Instant,
}

impl DebugPort {
    /// A debug port timing codes from now (create it when the VM starts).
    pub fn new() -> Self {
        Self::with_start(Instant::now())
    }

    /// A debug port timing codes from `start` (the VM's start).
    pub fn with_start(start: Instant) -> Self {
        DebugPort { start }
    }
}

impl Default for DebugPort {
    fn default() -> Self {
        Self::new()
    }
}

impl BusDevice for DebugPort {
    fn read(&mut self, _offset: u64, data: &mut [u8]) {
        data.fill(0);
    }

    fn write(&mut self, _offset: u64, data: &[u8]) -> BusAction {
        if let Some(code) = data.first() {
            info!("{}", format_code(*code, self.start.elapsed()));
        }
        BusAction::None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn code_format() {
        assert_eq!(
            format_code(0x41, Duration::from_micros(1_000_123)),
            "[Debug I/O port: Kernel code 0x41] 1.000123 seconds"
        );
        assert_eq!(
            format_code(0x00, Duration::from_millis(20)),
            "[Debug I/O port: Firmware code 0x0] 0.020000 seconds"
        );
        assert_eq!(CodeRange::of(0x3f), CodeRange::Bootloader);
        assert_eq!(CodeRange::of(0x60), CodeRange::Userspace);
        assert_eq!(CodeRange::of(0x80), CodeRange::Custom);
    }

    #[test]
    fn reads_zero_and_writes_do_nothing_else() {
        let mut d = DebugPort::new();
        assert_eq!(d.write(0, &[0x42]), BusAction::None);
        assert_eq!(d.write(0, &[]), BusAction::None);
        let mut b = [0xffu8; 2];
        d.read(0, &mut b);
        assert_eq!(b, [0, 0]);
    }
}
