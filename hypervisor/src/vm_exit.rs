// Copyright 2026 The ft-cloud-hypervisor authors.
// SPDX-License-Identifier: Apache-2.0

//! VM exits as plain values, so exit handling can be tested with made-up exits.

/// Why `Vcpu::run` returned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VmExit {
    /// `out` to `port`; `data` is `size * count` bytes.
    IoOut {
        /// The port.
        port: u16,
        /// Access size in bytes (1, 2 or 4).
        size: u8,
        /// The bytes written (several accesses for string I/O).
        data: Vec<u8>,
    },
    /// `in` from `port`; complete with `Vcpu::complete_io_in` (`size * count` bytes).
    IoIn {
        /// The port.
        port: u16,
        /// Access size in bytes.
        size: u8,
        /// Repetitions (string I/O).
        count: u32,
    },
    /// MMIO read of `len` bytes; complete with `Vcpu::complete_mmio_read`.
    MmioRead {
        /// Guest physical address.
        addr: u64,
        /// Length in bytes (1..=8).
        len: u8,
    },
    /// MMIO write.
    MmioWrite {
        /// Guest physical address.
        addr: u64,
        /// The bytes written.
        data: Vec<u8>,
    },
    /// The guest executed HLT.
    Hlt,
    /// The interrupt window the VMM asked for opened.
    IrqWindowOpen,
    /// Triple fault or similar: the guest reset itself.
    Shutdown,
    /// The run was interrupted by a kick (signal or immediate exit); not guest-caused.
    Interrupted,
    /// KVM could not continue (for example an instruction its emulator lacks).
    InternalError {
        /// KVM's sub-error code.
        suberror: u32,
    },
    /// The hardware refused to enter the guest.
    FailEntry {
        /// Hardware reason code.
        reason: u64,
    },
    /// Another exit reason, by number.
    Other(u32),
}

impl VmExit {
    /// Short name of the exit kind, for counters and logs.
    pub fn kind(&self) -> &'static str {
        match self {
            VmExit::IoOut { .. } => "io_out",
            VmExit::IoIn { .. } => "io_in",
            VmExit::MmioRead { .. } => "mmio_read",
            VmExit::MmioWrite { .. } => "mmio_write",
            VmExit::Hlt => "hlt",
            VmExit::IrqWindowOpen => "irq_window",
            VmExit::Shutdown => "shutdown",
            VmExit::Interrupted => "interrupted",
            VmExit::InternalError { .. } => "internal_error",
            VmExit::FailEntry { .. } => "fail_entry",
            VmExit::Other(_) => "other",
        }
    }

    /// True for exits the guest caused (they happen at the same instruction
    /// on every run); false for the VMM's own kicks.
    pub fn is_guest_caused(&self) -> bool {
        !matches!(self, VmExit::Interrupted)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_and_causes() {
        assert_eq!(VmExit::Hlt.kind(), "hlt");
        assert!(VmExit::Hlt.is_guest_caused());
        assert!(!VmExit::Interrupted.is_guest_caused());
        let e = VmExit::IoOut {
            port: 0x3f8,
            size: 1,
            data: vec![b'a'],
        };
        assert_eq!(e.kind(), "io_out");
    }
}
