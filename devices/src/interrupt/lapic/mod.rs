// Copyright 2026 The ft-cloud-hypervisor authors.
// SPDX-License-Identifier: Apache-2.0

//! One local APIC in xAPIC mode (Intel SDM vol. 3, "Advanced Programmable
//! Interrupt Controller").
//!
//! The model holds the register file and the IRR/ISR/TMR bitmaps; it accepts
//! interrupts offered by the routing code, tells the VMM which vector it may
//! inject, and reports the side effects of register writes (an EOI of a
//! level-triggered vector, an IPI) for the routing code to act on.

pub mod registers;
pub mod timer;
pub mod vectors;

use log::debug;

use self::registers::*;
use self::timer::{TimerMode, TimerState};
use self::vectors::VectorSet;
use super::message::{DeliveryMode, DestinationMode, InterruptMessage, TriggerMode};
use crate::clock::Clock;

/// The complete guest-visible state of a local APIC.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LapicState {
    /// ID register (APIC ID in bits 31:24).
    pub id: u32,
    /// Task priority register.
    pub tpr: u32,
    /// Logical destination register.
    pub ldr: u32,
    /// Destination format register.
    pub dfr: u32,
    /// Spurious interrupt vector register.
    pub svr: u32,
    /// In-service register.
    pub isr: VectorSet,
    /// Trigger mode register.
    pub tmr: VectorSet,
    /// Interrupt request register.
    pub irr: VectorSet,
    /// Error status register as the guest reads it.
    pub esr: u32,
    /// Errors seen since the last ESR write (moved to `esr` by that write).
    pub esr_pending: u32,
    /// Local vector table, indexed by [`Lvt::index`].
    pub lvt: [u32; LVT_COUNT],
    /// Interrupt command register, low half.
    pub icr_low: u32,
    /// Interrupt command register, high half.
    pub icr_high: u32,
    /// Timer registers and count-down.
    pub timer: TimerState,
}

impl LapicState {
    /// The power-up/reset state of the APIC with ID `apic_id`.
    pub fn reset(apic_id: u8) -> Self {
        LapicState {
            id: u32::from(apic_id) << 24,
            tpr: 0,
            ldr: 0,
            dfr: 0xffff_ffff,
            svr: SVR_RESET,
            isr: VectorSet::default(),
            tmr: VectorSet::default(),
            irr: VectorSet::default(),
            esr: 0,
            esr_pending: 0,
            lvt: [LVT_MASKED; LVT_COUNT],
            icr_low: 0,
            icr_high: 0,
            timer: TimerState::default(),
        }
    }
}

/// What happened to an interrupt offered to the APIC.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Acceptance {
    /// Set in IRR.
    Accepted,
    /// Already pending in IRR: merged with the earlier one.
    Coalesced,
    /// Vector below 16: dropped, ESR "receive illegal vector" set.
    IllegalVector,
    /// APIC software-disabled (SVR bit 8 clear): dropped.
    Disabled,
}

impl Acceptance {
    /// Whether the vector is now pending in IRR.
    pub fn is_pending(self) -> bool {
        matches!(self, Acceptance::Accepted | Acceptance::Coalesced)
    }
}

/// Destination shorthand of an IPI (ICR bits 19:18).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shorthand {
    /// Use the destination field.
    None,
    /// The sending APIC only.
    SelfOnly,
    /// Every APIC, the sender included.
    AllIncludingSelf,
    /// Every APIC but the sender.
    AllExcludingSelf,
}

/// An inter-processor interrupt the guest sent by writing ICR low.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ipi {
    /// Vector, mode and destination.
    pub message: InterruptMessage,
    /// Destination shorthand.
    pub shorthand: Shorthand,
}

/// A side effect of a register write that reaches beyond this APIC.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LapicEffect {
    /// Nothing beyond the register itself.
    None,
    /// An EOI retired `vector`; `level` if it was level-triggered (TMR set),
    /// in which case the EOI is broadcast to the IOAPIC.
    Eoi {
        /// The vector cleared from ISR.
        vector: u8,
        /// Whether its TMR bit was set.
        level: bool,
    },
    /// Send this IPI.
    Ipi(Ipi),
}

/// Outcome of [`Lapic::fire_timer`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TimerFire {
    /// The timer was not armed: nothing happened.
    NotArmed,
    /// Expired while its LVT entry is masked: no interrupt.
    Masked,
    /// Expired and offered its vector.
    Delivered(Acceptance),
}

/// A local APIC.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Lapic {
    state: LapicState,
}

impl Lapic {
    /// A local APIC in its reset state.
    pub fn new(apic_id: u8) -> Self {
        Lapic {
            state: LapicState::reset(apic_id),
        }
    }

    /// A local APIC with the given state.
    pub fn from_state(state: LapicState) -> Self {
        Lapic { state }
    }

    /// The current state.
    pub fn state(&self) -> &LapicState {
        &self.state
    }

    /// The APIC ID (ID register bits 31:24).
    pub fn apic_id(&self) -> u8 {
        (self.state.id >> 24) as u8
    }

    /// Whether the APIC is software-enabled (SVR bit 8).
    pub fn software_enabled(&self) -> bool {
        self.state.svr & SVR_ENABLED != 0
    }

    /// Processor priority: the higher of the task priority and the class of
    /// the highest in-service vector.
    pub fn ppr(&self) -> u8 {
        let tpr = (self.state.tpr & 0xff) as u8;
        let isrv = self.state.isr.highest().unwrap_or(0);
        if tpr & 0xf0 >= isrv & 0xf0 {
            tpr
        } else {
            isrv & 0xf0
        }
    }

    /// Offers a fixed interrupt with `vector` to this APIC.
    pub fn accept(&mut self, vector: u8, trigger: TriggerMode) -> Acceptance {
        if !self.software_enabled() {
            return Acceptance::Disabled;
        }
        if vector < 16 {
            self.report_error(ESR_RECEIVE_ILLEGAL_VECTOR);
            return Acceptance::IllegalVector;
        }
        let already = self.state.irr.contains(vector);
        self.state.irr.set(vector);
        match trigger {
            TriggerMode::Level => self.state.tmr.set(vector),
            TriggerMode::Edge => self.state.tmr.clear(vector),
        }
        if already {
            Acceptance::Coalesced
        } else {
            Acceptance::Accepted
        }
    }

    /// Records an error in ESR and raises the LVT error interrupt if it is
    /// unmasked.
    pub fn report_error(&mut self, bits: u32) {
        self.state.esr_pending |= bits;
        let lvt = self.state.lvt[Lvt::Error.index()];
        if lvt & LVT_MASKED == 0 && self.software_enabled() {
            let vector = (lvt & 0xff) as u8;
            if vector >= 16 {
                self.accept(vector, TriggerMode::Edge);
            } else {
                // Do not recurse: just note the illegal error vector.
                self.state.esr_pending |= ESR_RECEIVE_ILLEGAL_VECTOR;
            }
        }
    }

    /// The highest-priority vector the CPU may take now, if any.
    pub fn pending_vector(&self) -> Option<u8> {
        if !self.software_enabled() {
            return None;
        }
        let vector = self.state.irr.highest()?;
        (vector & 0xf0 > self.ppr() & 0xf0).then_some(vector)
    }

    /// The CPU took `vector`: moves it from IRR to ISR. Returns false (and
    /// changes nothing) if `vector` was not pending.
    pub fn acknowledge(&mut self, vector: u8) -> bool {
        if !self.state.irr.contains(vector) {
            return false;
        }
        self.state.irr.clear(vector);
        self.state.isr.set(vector);
        true
    }

    /// End of interrupt: retires the highest in-service vector.
    fn eoi(&mut self) -> LapicEffect {
        match self.state.isr.highest() {
            Some(vector) => {
                self.state.isr.clear(vector);
                LapicEffect::Eoi {
                    vector,
                    level: self.state.tmr.contains(vector),
                }
            }
            None => LapicEffect::None,
        }
    }

    /// Whether a message with this destination addresses this APIC (0xff
    /// is a broadcast in both modes; logical matching follows DFR: flat or
    /// cluster model).
    pub fn matches_destination(&self, mode: DestinationMode, destination: u8) -> bool {
        if destination == 0xff {
            return true;
        }
        match mode {
            DestinationMode::Physical => destination == self.apic_id(),
            DestinationMode::Logical => {
                let logical_id = (self.state.ldr >> 24) as u8;
                match self.state.dfr >> 28 {
                    0xf => logical_id & destination != 0,
                    0x0 => {
                        logical_id >> 4 == destination >> 4 && logical_id & destination & 0xf != 0
                    }
                    _ => false,
                }
            }
        }
    }

    fn timer_mode(&self) -> TimerMode {
        TimerMode::from_lvt(self.state.lvt[Lvt::Timer.index()])
    }

    /// Clock time at which the timer next expires, if armed (masked or not).
    pub fn timer_deadline(&self) -> Option<u64> {
        self.state.timer.deadline()
    }

    /// The timer deadline passed: re-arm or disarm it, and offer its vector
    /// unless the LVT entry is masked.
    pub fn fire_timer(&mut self) -> TimerFire {
        let lvt = self.state.lvt[Lvt::Timer.index()];
        if !self.state.timer.fire(TimerMode::from_lvt(lvt)) {
            return TimerFire::NotArmed;
        }
        if lvt & LVT_MASKED != 0 {
            return TimerFire::Masked;
        }
        TimerFire::Delivered(self.accept((lvt & 0xff) as u8, TriggerMode::Edge))
    }

    /// A guest read of `data.len()` bytes at `offset` in the APIC page.
    /// Registers are 32 bits wide at 16-byte-aligned offsets; bytes outside a
    /// register read as 0.
    pub fn mmio_read(&mut self, offset: u64, data: &mut [u8], clock: &dyn Clock) {
        data.fill(0);
        let within = (offset & 0xf) as usize;
        if within >= 4 {
            debug!("lapic: read at {offset:#x} is outside any register");
            return;
        }
        let value = self.read_register(offset & 0xff0, clock).to_le_bytes();
        for (byte, v) in data.iter_mut().zip(value.iter().skip(within)) {
            *byte = *v;
        }
    }

    /// A guest write of `data` at `offset` in the APIC page. Only aligned
    /// 32-bit writes take effect (as KVM); others are ignored.
    pub fn mmio_write(&mut self, offset: u64, data: &[u8], clock: &dyn Clock) -> LapicEffect {
        let Ok(bytes) = <[u8; 4]>::try_from(data) else {
            debug!("lapic: ignored {}-byte write at {offset:#x}", data.len());
            return LapicEffect::None;
        };
        if offset & 0xf != 0 || offset >= 0x1000 {
            debug!("lapic: ignored misaligned write at {offset:#x}");
            return LapicEffect::None;
        }
        self.write_register(offset, u32::from_le_bytes(bytes), clock)
    }

    /// The value of the register at the 16-byte-aligned `offset`.
    pub fn read_register(&self, offset: u64, clock: &dyn Clock) -> u32 {
        let s = &self.state;
        if let Some(lvt) = Lvt::from_offset(offset) {
            return s.lvt[lvt.index()];
        }
        if let Some(i) = vector_word(offset, ISR) {
            return s.isr.word(i);
        }
        if let Some(i) = vector_word(offset, TMR) {
            return s.tmr.word(i);
        }
        if let Some(i) = vector_word(offset, IRR) {
            return s.irr.word(i);
        }
        match offset {
            ID => s.id,
            VERSION => VERSION_VALUE,
            TPR => s.tpr,
            PPR => u32::from(self.ppr()),
            LDR => s.ldr,
            DFR => s.dfr | DFR_RESERVED_ONES,
            SVR => s.svr,
            ESR => s.esr,
            ICR_LOW => s.icr_low & !DELIVERY_STATUS,
            ICR_HIGH => s.icr_high,
            TIMER_INITIAL_COUNT => s.timer.initial_count,
            TIMER_CURRENT_COUNT => s.timer.current_count(self.timer_mode(), clock),
            TIMER_DIVIDE => s.timer.divide_config,
            // APR, EOI, RRD and reserved offsets.
            _ => 0,
        }
    }

    /// Writes `value` to the register at the 16-byte-aligned `offset`.
    pub fn write_register(&mut self, offset: u64, value: u32, clock: &dyn Clock) -> LapicEffect {
        if let Some(lvt) = Lvt::from_offset(offset) {
            self.write_lvt(lvt, value);
            return LapicEffect::None;
        }
        let s = &mut self.state;
        match offset {
            ID => s.id = value & HIGH_BYTE,
            TPR => s.tpr = value & 0xff,
            EOI => return self.eoi(),
            LDR => s.ldr = value & HIGH_BYTE,
            DFR => s.dfr = value | DFR_RESERVED_ONES,
            SVR => {
                s.svr = value & SVR_WRITABLE;
                if s.svr & SVR_ENABLED == 0 {
                    for entry in s.lvt.iter_mut() {
                        *entry |= LVT_MASKED;
                    }
                }
            }
            ESR => {
                s.esr = s.esr_pending;
                s.esr_pending = 0;
            }
            ICR_LOW => {
                s.icr_low = value & ICR_LOW_WRITABLE;
                return self.send_ipi();
            }
            ICR_HIGH => s.icr_high = value & HIGH_BYTE,
            TIMER_INITIAL_COUNT => {
                let mode = self.timer_mode();
                self.state.timer.write_initial_count(value, mode, clock);
            }
            TIMER_DIVIDE => s.timer.write_divide_config(value, clock),
            _ => debug!("lapic: ignored write of {value:#x} to {offset:#x}"),
        }
        LapicEffect::None
    }

    fn write_lvt(&mut self, lvt: Lvt, value: u32) {
        let mut value = value & lvt.writable_bits();
        if !self.software_enabled() {
            // While software-disabled, LVT entries stay masked.
            value |= LVT_MASKED;
        }
        let entry = &mut self.state.lvt[lvt.index()];
        let old = *entry;
        *entry = value;
        if lvt == Lvt::Timer {
            let (old, new) = (TimerMode::from_lvt(old), TimerMode::from_lvt(value));
            if old != new {
                self.state.timer.mode_changed(old, new);
            }
        }
    }

    /// Decodes the ICR into an IPI.
    fn send_ipi(&mut self) -> LapicEffect {
        let low = self.state.icr_low;
        let message = InterruptMessage {
            vector: (low & 0xff) as u8,
            delivery_mode: DeliveryMode::from_bits(u64::from(low)),
            destination_mode: if low & (1 << 11) != 0 {
                DestinationMode::Logical
            } else {
                DestinationMode::Physical
            },
            destination: (self.state.icr_high >> 24) as u8,
            trigger_mode: if low & (1 << 15) != 0 {
                TriggerMode::Level
            } else {
                TriggerMode::Edge
            },
        };
        let fixed = matches!(
            message.delivery_mode,
            DeliveryMode::Fixed | DeliveryMode::LowestPriority
        );
        if fixed && message.vector < 16 {
            self.report_error(ESR_SEND_ILLEGAL_VECTOR);
            return LapicEffect::None;
        }
        let shorthand = match (low >> 18) & 0x3 {
            0 => Shorthand::None,
            1 => Shorthand::SelfOnly,
            2 => Shorthand::AllIncludingSelf,
            _ => Shorthand::AllExcludingSelf,
        };
        LapicEffect::Ipi(Ipi { message, shorthand })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;

    fn enabled() -> (Lapic, ManualClock) {
        let clock = ManualClock::new(0);
        let mut l = Lapic::new(0);
        l.write_register(SVR, SVR_ENABLED | 0xff, &clock);
        (l, clock)
    }

    fn read(l: &mut Lapic, off: u64, clock: &ManualClock) -> u32 {
        let mut d = [0u8; 4];
        l.mmio_read(off, &mut d, clock);
        u32::from_le_bytes(d)
    }

    #[test]
    fn reset_values() {
        let clock = ManualClock::new(0);
        let mut l = Lapic::new(0);
        assert_eq!(read(&mut l, ID, &clock), 0);
        assert_eq!(read(&mut l, VERSION, &clock), 0x0005_0014);
        assert_eq!(read(&mut l, SVR, &clock), 0xff);
        assert_eq!(read(&mut l, DFR, &clock), 0xffff_ffff);
        for off in [
            LVT_CMCI,
            LVT_TIMER,
            LVT_THERMAL,
            LVT_PERF,
            LVT_LINT0,
            LVT_LINT1,
            LVT_ERROR,
        ] {
            assert_eq!(read(&mut l, off, &clock), 0x10000, "lvt {off:#x}");
        }
        assert_eq!(read(&mut l, TPR, &clock), 0);
        assert_eq!(read(&mut l, PPR, &clock), 0);
        assert_eq!(read(&mut l, TIMER_CURRENT_COUNT, &clock), 0);
        assert!(!l.software_enabled());
        assert_eq!(Lapic::new(3).apic_id(), 3);
    }

    #[test]
    fn disabled_apic_masks_lvts_and_drops_interrupts() {
        let (mut l, clock) = enabled();
        l.write_register(LVT_TIMER, 0x20, &clock);
        assert_eq!(read(&mut l, LVT_TIMER, &clock), 0x20);
        l.write_register(SVR, 0xff, &clock);
        assert_eq!(read(&mut l, LVT_TIMER, &clock), 0x10020);
        // Cannot unmask while disabled.
        l.write_register(LVT_TIMER, 0x21, &clock);
        assert_eq!(read(&mut l, LVT_TIMER, &clock), 0x10021);
        assert_eq!(l.accept(0x40, TriggerMode::Edge), Acceptance::Disabled);
        assert_eq!(l.pending_vector(), None);
        // Re-enabling does not unmask.
        l.write_register(SVR, 0x1ff, &clock);
        assert_eq!(read(&mut l, LVT_TIMER, &clock), 0x10021);
    }

    #[test]
    fn lvt_write_masks_read_only_bits() {
        let (mut l, clock) = enabled();
        l.write_register(LVT_LINT0, 0xffff_ffff, &clock);
        // Delivery status (12) and remote IRR (14) stay clear.
        assert_eq!(read(&mut l, LVT_LINT0, &clock), 0x0001_a7ff);
        l.write_register(LVT_TIMER, 0xffff_ffff, &clock);
        assert_eq!(read(&mut l, LVT_TIMER, &clock), 0x0007_00ff);
        l.write_register(LVT_ERROR, 0xffff_ffff, &clock);
        assert_eq!(read(&mut l, LVT_ERROR, &clock), 0x0001_00ff);
    }

    #[test]
    fn priority_and_nested_eoi() {
        let (mut l, clock) = enabled();
        assert_eq!(l.accept(0x31, TriggerMode::Edge), Acceptance::Accepted);
        assert_eq!(l.accept(0x31, TriggerMode::Edge), Acceptance::Coalesced);
        assert_eq!(l.pending_vector(), Some(0x31));
        assert!(l.acknowledge(0x31));
        assert!(!l.acknowledge(0x31));
        assert_eq!(l.ppr(), 0x30);
        // Same class is blocked; higher class nests.
        l.accept(0x3f, TriggerMode::Edge);
        assert_eq!(l.pending_vector(), None);
        l.accept(0x52, TriggerMode::Edge);
        assert_eq!(l.pending_vector(), Some(0x52));
        assert!(l.acknowledge(0x52));
        assert_eq!(l.ppr(), 0x50);
        assert_eq!(read(&mut l, ISR + 0x10, &clock), 1 << 0x11);
        assert_eq!(read(&mut l, ISR + 0x20, &clock), 1 << 0x12);
        // EOI retires the highest in-service vector first.
        assert_eq!(
            l.write_register(EOI, 0, &clock),
            LapicEffect::Eoi {
                vector: 0x52,
                level: false
            }
        );
        assert_eq!(l.ppr(), 0x30);
        assert_eq!(l.pending_vector(), None);
        assert_eq!(
            l.write_register(EOI, 0, &clock),
            LapicEffect::Eoi {
                vector: 0x31,
                level: false
            }
        );
        assert_eq!(l.pending_vector(), Some(0x3f));
        // TPR blocks its class and below.
        l.write_register(TPR, 0x3f, &clock);
        assert_eq!(l.ppr(), 0x3f);
        assert_eq!(l.pending_vector(), None);
        l.write_register(TPR, 0x20, &clock);
        assert_eq!(l.pending_vector(), Some(0x3f));
        assert_eq!(l.write_register(EOI, 0, &clock), LapicEffect::None);
    }

    #[test]
    fn level_vectors_report_level_eoi() {
        let (mut l, clock) = enabled();
        l.accept(0x60, TriggerMode::Level);
        assert_eq!(read(&mut l, TMR + 0x30, &clock), 1);
        l.acknowledge(0x60);
        assert_eq!(
            l.write_register(EOI, 0, &clock),
            LapicEffect::Eoi {
                vector: 0x60,
                level: true
            }
        );
        // Re-accepted as edge: TMR cleared.
        l.accept(0x60, TriggerMode::Edge);
        assert_eq!(read(&mut l, TMR + 0x30, &clock), 0);
        assert_eq!(read(&mut l, IRR + 0x30, &clock), 1);
    }

    #[test]
    fn illegal_vector_and_esr_write_then_read() {
        let (mut l, clock) = enabled();
        assert_eq!(l.accept(15, TriggerMode::Edge), Acceptance::IllegalVector);
        assert_eq!(read(&mut l, ESR, &clock), 0);
        l.write_register(ESR, 0, &clock);
        assert_eq!(read(&mut l, ESR, &clock), ESR_RECEIVE_ILLEGAL_VECTOR);
        l.write_register(ESR, 0, &clock);
        assert_eq!(read(&mut l, ESR, &clock), 0);
        // With LVT error unmasked, an error raises its vector.
        l.write_register(LVT_ERROR, 0xfe, &clock);
        l.accept(3, TriggerMode::Edge);
        assert_eq!(l.pending_vector(), Some(0xfe));
        // An illegal error vector does not recurse.
        l.write_register(LVT_ERROR, 0x05, &clock);
        l.accept(3, TriggerMode::Edge);
        l.write_register(ESR, 0, &clock);
        assert_eq!(read(&mut l, ESR, &clock), ESR_RECEIVE_ILLEGAL_VECTOR);
    }

    #[test]
    fn icr_decodes_ipis() {
        let (mut l, clock) = enabled();
        l.write_register(ICR_HIGH, 0xffff_ffff, &clock);
        assert_eq!(read(&mut l, ICR_HIGH, &clock), 0xff00_0000);
        let effect = l.write_register(ICR_LOW, (1 << 18) | (1 << 12) | 0x41, &clock);
        let LapicEffect::Ipi(ipi) = effect else {
            panic!("no ipi: {effect:?}");
        };
        assert_eq!(ipi.shorthand, Shorthand::SelfOnly);
        assert_eq!(ipi.message.vector, 0x41);
        assert_eq!(ipi.message.delivery_mode, DeliveryMode::Fixed);
        assert_eq!(ipi.message.destination, 0xff);
        // Delivery status reads 0.
        assert_eq!(read(&mut l, ICR_LOW, &clock), (1 << 18) | 0x41);
        // INIT is decoded (the router ignores it).
        let effect = l.write_register(ICR_LOW, 0x500 | (1 << 11), &clock);
        let LapicEffect::Ipi(ipi) = effect else {
            panic!("no ipi: {effect:?}");
        };
        assert_eq!(ipi.message.delivery_mode, DeliveryMode::Init);
        assert_eq!(ipi.message.destination_mode, DestinationMode::Logical);
        // A fixed IPI with an illegal vector sets "send illegal vector".
        assert_eq!(l.write_register(ICR_LOW, 0x7, &clock), LapicEffect::None);
        l.write_register(ESR, 0, &clock);
        assert_eq!(read(&mut l, ESR, &clock), ESR_SEND_ILLEGAL_VECTOR);
    }

    #[test]
    fn destination_matching() {
        let (mut l, clock) = enabled();
        use DestinationMode::*;
        assert!(l.matches_destination(Physical, 0));
        assert!(l.matches_destination(Physical, 0xff));
        assert!(!l.matches_destination(Physical, 1));
        // Flat logical model.
        assert!(!l.matches_destination(Logical, 0x01));
        l.write_register(LDR, 0x0200_0000, &clock);
        assert!(l.matches_destination(Logical, 0x03));
        assert!(!l.matches_destination(Logical, 0x01));
        assert!(l.matches_destination(Logical, 0xff));
        // Cluster model: cluster 1, member bit 2.
        l.write_register(DFR, 0x0000_0000, &clock);
        assert_eq!(read(&mut l, DFR, &clock), 0x0fff_ffff);
        l.write_register(LDR, 0x1200_0000, &clock);
        assert!(l.matches_destination(Logical, 0x12));
        assert!(l.matches_destination(Logical, 0x16));
        assert!(!l.matches_destination(Logical, 0x22));
        assert!(!l.matches_destination(Logical, 0x11));
        // The ID register is writable and physical matching follows it.
        l.write_register(ID, 0x0500_0000, &clock);
        assert!(l.matches_destination(Physical, 5));
    }

    #[test]
    fn garbage_accesses_never_panic() {
        let (mut l, clock) = enabled();
        let sizes = [0usize, 1, 2, 3, 4, 5, 8, 16, 64];
        for offset in (0..0x1010u64).step_by(3).chain([u64::MAX, 0x3ff, 0xfff]) {
            for size in sizes {
                let mut d = vec![0xaau8; size];
                l.mmio_read(offset, &mut d, &clock);
                l.mmio_write(offset, &d, &clock);
            }
        }
        // Narrow reads give the bytes of the register.
        let mut b = [0u8; 2];
        l.mmio_read(VERSION + 2, &mut b, &clock);
        assert_eq!(b, [0x05, 0x00]);
        let mut b = [0xffu8; 8];
        l.mmio_read(VERSION, &mut b, &clock);
        assert_eq!(b, [0x14, 0, 0x05, 0, 0, 0, 0, 0]);
        // Narrow writes are ignored.
        l.mmio_write(TPR, &[0x50], &clock);
        assert_eq!(read(&mut l, TPR, &clock), 0);
        l.mmio_write(TPR, &0x50u32.to_le_bytes(), &clock);
        assert_eq!(read(&mut l, TPR, &clock), 0x50);
    }

    #[test]
    fn state_round_trip() {
        let (mut l, clock) = enabled();
        l.accept(0x44, TriggerMode::Level);
        l.write_register(TIMER_INITIAL_COUNT, 100, &clock);
        let copy = Lapic::from_state(l.state().clone());
        assert_eq!(copy, l);
    }
}
