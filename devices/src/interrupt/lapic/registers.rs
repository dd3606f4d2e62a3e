// Copyright 2026 The ft-cloud-hypervisor authors.
// SPDX-License-Identifier: Apache-2.0

//! The xAPIC register map (Intel SDM vol. 3, "Local APIC Register Address
//! Map"): offsets, reset values and the bits a guest may write.

/// Local APIC ID.
pub const ID: u64 = 0x20;
/// Local APIC version.
pub const VERSION: u64 = 0x30;
/// Task priority.
pub const TPR: u64 = 0x80;
/// Arbitration priority.
pub const APR: u64 = 0x90;
/// Processor priority (computed).
pub const PPR: u64 = 0xa0;
/// End of interrupt (write-only).
pub const EOI: u64 = 0xb0;
/// Remote read.
pub const RRD: u64 = 0xc0;
/// Logical destination.
pub const LDR: u64 = 0xd0;
/// Destination format.
pub const DFR: u64 = 0xe0;
/// Spurious interrupt vector.
pub const SVR: u64 = 0xf0;
/// In-service register, eight words.
pub const ISR: u64 = 0x100;
/// Trigger mode register, eight words.
pub const TMR: u64 = 0x180;
/// Interrupt request register, eight words.
pub const IRR: u64 = 0x200;
/// Error status.
pub const ESR: u64 = 0x280;
/// LVT corrected machine check interrupt.
pub const LVT_CMCI: u64 = 0x2f0;
/// Interrupt command, low half (writing it sends the IPI).
pub const ICR_LOW: u64 = 0x300;
/// Interrupt command, high half (destination).
pub const ICR_HIGH: u64 = 0x310;
/// LVT timer.
pub const LVT_TIMER: u64 = 0x320;
/// LVT thermal sensor.
pub const LVT_THERMAL: u64 = 0x330;
/// LVT performance monitoring counters.
pub const LVT_PERF: u64 = 0x340;
/// LVT LINT0.
pub const LVT_LINT0: u64 = 0x350;
/// LVT LINT1.
pub const LVT_LINT1: u64 = 0x360;
/// LVT error.
pub const LVT_ERROR: u64 = 0x370;
/// Timer initial count.
pub const TIMER_INITIAL_COUNT: u64 = 0x380;
/// Timer current count (read-only).
pub const TIMER_CURRENT_COUNT: u64 = 0x390;
/// Timer divide configuration.
pub const TIMER_DIVIDE: u64 = 0x3e0;

/// Version register: an integrated APIC (0x14) with six LVT entries (max
/// LVT 5), no EOI-broadcast suppression.
pub const VERSION_VALUE: u32 = 0x0005_0014;

/// LVT bit 16 (and ICR/redirection bit 16): masked.
pub const LVT_MASKED: u32 = 1 << 16;
/// LVT/ICR bit 12: delivery status (send pending); always reads 0 here.
pub const DELIVERY_STATUS: u32 = 1 << 12;
/// SVR bit 8: APIC software enable.
pub const SVR_ENABLED: u32 = 1 << 8;
/// SVR bits a guest may write: vector, enable, focus processor checking.
pub const SVR_WRITABLE: u32 = 0x3ff;
/// SVR reset value.
pub const SVR_RESET: u32 = 0xff;
/// DFR bits that always read 1.
pub const DFR_RESERVED_ONES: u32 = 0x0fff_ffff;
/// The APIC ID, LDR and ICR-high destination live in bits 31:24.
pub const HIGH_BYTE: u32 = 0xff00_0000;
/// ICR low bits a guest may write: vector, delivery mode, destination mode,
/// level, trigger mode, destination shorthand.
pub const ICR_LOW_WRITABLE: u32 = 0x000c_cfff;
/// Timer divide configuration bits (0, 1 and 3).
pub const TIMER_DIVIDE_WRITABLE: u32 = 0xb;

/// ESR bit 5: send illegal vector.
pub const ESR_SEND_ILLEGAL_VECTOR: u32 = 1 << 5;
/// ESR bit 6: receive illegal vector.
pub const ESR_RECEIVE_ILLEGAL_VECTOR: u32 = 1 << 6;

/// The local vector table entries, in the order the LAPIC state stores them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lvt {
    /// Corrected machine check interrupt.
    Cmci = 0,
    /// APIC timer.
    Timer = 1,
    /// Thermal sensor.
    Thermal = 2,
    /// Performance monitoring counters.
    Perf = 3,
    /// Local interrupt pin 0.
    Lint0 = 4,
    /// Local interrupt pin 1.
    Lint1 = 5,
    /// APIC error.
    Error = 6,
}

/// Number of LVT entries stored.
pub const LVT_COUNT: usize = 7;

impl Lvt {
    /// The LVT entry at register `offset`, if it is one.
    pub fn from_offset(offset: u64) -> Option<Lvt> {
        Some(match offset {
            LVT_CMCI => Lvt::Cmci,
            LVT_TIMER => Lvt::Timer,
            LVT_THERMAL => Lvt::Thermal,
            LVT_PERF => Lvt::Perf,
            LVT_LINT0 => Lvt::Lint0,
            LVT_LINT1 => Lvt::Lint1,
            LVT_ERROR => Lvt::Error,
            _ => return None,
        })
    }

    /// Index into the LVT array of the state.
    pub fn index(self) -> usize {
        self as usize
    }

    /// The bits of this entry a guest may write (delivery status and
    /// remote IRR are read-only).
    pub fn writable_bits(self) -> u32 {
        const VECTOR: u32 = 0xff;
        const DELIVERY_MODE: u32 = 0x7 << 8;
        const POLARITY: u32 = 1 << 13;
        const TRIGGER: u32 = 1 << 15;
        const TIMER_MODE: u32 = 0x3 << 17;
        match self {
            Lvt::Timer => VECTOR | LVT_MASKED | TIMER_MODE,
            Lvt::Cmci | Lvt::Thermal | Lvt::Perf => VECTOR | DELIVERY_MODE | LVT_MASKED,
            Lvt::Lint0 | Lvt::Lint1 => VECTOR | DELIVERY_MODE | POLARITY | TRIGGER | LVT_MASKED,
            Lvt::Error => VECTOR | LVT_MASKED,
        }
    }
}

/// Index of the 32-bit word of a 256-bit register (ISR, TMR, IRR) starting at
/// `base`, if `offset` lies within it.
pub fn vector_word(offset: u64, base: u64) -> Option<usize> {
    let rel = offset.checked_sub(base)?;
    (rel < 0x80).then_some((rel / 0x10) as usize)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lvt_offsets_round_trip() {
        let all = [
            (LVT_CMCI, Lvt::Cmci),
            (LVT_TIMER, Lvt::Timer),
            (LVT_THERMAL, Lvt::Thermal),
            (LVT_PERF, Lvt::Perf),
            (LVT_LINT0, Lvt::Lint0),
            (LVT_LINT1, Lvt::Lint1),
            (LVT_ERROR, Lvt::Error),
        ];
        for (i, (off, lvt)) in all.iter().enumerate() {
            assert_eq!(Lvt::from_offset(*off), Some(*lvt));
            assert_eq!(lvt.index(), i);
            assert_eq!(lvt.writable_bits() & DELIVERY_STATUS, 0);
            assert_ne!(lvt.writable_bits() & LVT_MASKED, 0);
        }
        assert_eq!(Lvt::from_offset(ICR_LOW), None);
        assert_eq!(Lvt::LVT_COUNT_CHECK, LVT_COUNT);
    }

    impl Lvt {
        const LVT_COUNT_CHECK: usize = Lvt::Error as usize + 1;
    }

    #[test]
    fn vector_words() {
        assert_eq!(vector_word(0x100, ISR), Some(0));
        assert_eq!(vector_word(0x170, ISR), Some(7));
        assert_eq!(vector_word(0x180, ISR), None);
        assert_eq!(vector_word(0xf0, ISR), None);
        assert_eq!(vector_word(0x270, IRR), Some(7));
    }
}
