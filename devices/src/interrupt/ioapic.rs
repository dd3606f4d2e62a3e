// Copyright 2026 The ft-cloud-hypervisor authors.
// SPDX-License-Identifier: Apache-2.0

//! The I/O APIC (82093AA-style, version 0x20 with an EOI register), 24 pins.
//!
//! Registers are reached indirectly: the guest writes an index to IOREGSEL
//! (offset 0x00) and reads or writes it through IOWIN (offset 0x10). Each
//! pin has a 64-bit redirection entry turning it into an
//! [`InterruptMessage`]. The IOAPIC does not know the local APICs: it hands
//! each message to a `deliver` callback that routes it and answers whether
//! some APIC accepted it.

use log::debug;

use super::message::{DeliveryMode, DestinationMode, InterruptMessage, TriggerMode};

/// Number of pins (redirection entries).
pub const IOAPIC_NUM_PINS: usize = 24;
/// Version register: version 0x20, maximum redirection entry 23.
pub const IOAPIC_VERSION: u32 = 0x0017_0020;

/// IOREGSEL offset in the MMIO window.
pub const IOREGSEL: u64 = 0x00;
/// IOWIN offset in the MMIO window.
pub const IOWIN: u64 = 0x10;
/// EOI register offset (version 0x20 and later).
pub const IOEOI: u64 = 0x40;

const REG_ID: u32 = 0x00;
const REG_VERSION: u32 = 0x01;
const REG_ARBITRATION: u32 = 0x02;
const REG_REDIRECTION: u32 = 0x10;

const ENTRY_MASKED: u64 = 1 << 16;
const ENTRY_TRIGGER_LEVEL: u64 = 1 << 15;
const ENTRY_REMOTE_IRR: u64 = 1 << 14;
/// Redirection entry bits the guest can write (not delivery status, not
/// remote IRR, not the reserved bits 55:17).
const ENTRY_WRITABLE: u64 = 0xff00_0000_0001_afff;
const ID_WRITABLE: u32 = 0x0f00_0000;

/// Errors from pin operations.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum IoapicError {
    /// The pin number is not one of the 24 pins.
    #[error("IOAPIC pin {0} does not exist (24 pins)")]
    InvalidPin(u32),
}

/// The guest-visible state of the IOAPIC.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IoapicState {
    /// ID register (bits 27:24).
    pub id: u32,
    /// IOREGSEL: index of the register IOWIN reaches.
    pub ioregsel: u32,
    /// Redirection table.
    pub redirection: [u64; IOAPIC_NUM_PINS],
    /// Level of each input pin (bit `n` = pin `n` asserted).
    pub asserted: u32,
}

impl Default for IoapicState {
    fn default() -> Self {
        IoapicState {
            id: 0,
            ioregsel: 0,
            redirection: [ENTRY_MASKED; IOAPIC_NUM_PINS],
            asserted: 0,
        }
    }
}

/// What happened on a pin event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PinOutcome {
    /// A message was sent; `accepted` says whether an APIC took it.
    Sent {
        /// Whether some APIC accepted it.
        accepted: bool,
    },
    /// The entry is masked: nothing sent.
    Masked,
    /// Level-triggered and still waiting for its EOI (remote IRR): nothing
    /// sent now, the EOI re-delivers if the pin is still asserted.
    RemoteIrrPending,
    /// No edge and nothing to do (e.g. de-assertion).
    NoChange,
}

/// The IOAPIC.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Ioapic {
    state: IoapicState,
}

impl Ioapic {
    /// An IOAPIC in its reset state: every entry masked.
    pub fn new() -> Self {
        Ioapic::default()
    }

    /// An IOAPIC with the given state.
    pub fn from_state(state: IoapicState) -> Self {
        Ioapic { state }
    }

    /// The current state.
    pub fn state(&self) -> &IoapicState {
        &self.state
    }

    /// The redirection entry of `pin`.
    pub fn entry(&self, pin: usize) -> Option<u64> {
        self.state.redirection.get(pin).copied()
    }

    fn pin_index(pin: u32) -> Result<usize, IoapicError> {
        let index = usize::try_from(pin).map_err(|_| IoapicError::InvalidPin(pin))?;
        if index < IOAPIC_NUM_PINS {
            Ok(index)
        } else {
            Err(IoapicError::InvalidPin(pin))
        }
    }

    /// The message a redirection entry describes.
    pub fn message(entry: u64) -> InterruptMessage {
        InterruptMessage {
            vector: (entry & 0xff) as u8,
            delivery_mode: DeliveryMode::from_bits(entry),
            destination_mode: if entry & (1 << 11) != 0 {
                DestinationMode::Logical
            } else {
                DestinationMode::Physical
            },
            destination: (entry >> 56) as u8,
            trigger_mode: if entry & ENTRY_TRIGGER_LEVEL != 0 {
                TriggerMode::Level
            } else {
                TriggerMode::Edge
            },
        }
    }

    /// Sends the message of `pin`, setting remote IRR for an accepted
    /// level-triggered one.
    fn send(
        &mut self,
        pin: usize,
        deliver: &mut dyn FnMut(&InterruptMessage) -> bool,
    ) -> PinOutcome {
        let entry = self.state.redirection[pin];
        if entry & ENTRY_MASKED != 0 {
            return PinOutcome::Masked;
        }
        let level = entry & ENTRY_TRIGGER_LEVEL != 0;
        if level && entry & ENTRY_REMOTE_IRR != 0 {
            return PinOutcome::RemoteIrrPending;
        }
        let accepted = deliver(&Self::message(entry));
        if accepted && level {
            self.state.redirection[pin] |= ENTRY_REMOTE_IRR;
        }
        PinOutcome::Sent { accepted }
    }

    /// An edge pulse on `pin` (assert then de-assert). On a level-triggered
    /// entry it behaves as a short assertion: one message, remote IRR set.
    pub fn pulse(
        &mut self,
        pin: u32,
        deliver: &mut dyn FnMut(&InterruptMessage) -> bool,
    ) -> Result<PinOutcome, IoapicError> {
        let pin = Self::pin_index(pin)?;
        Ok(self.send(pin, deliver))
    }

    /// Sets the input level of `pin`. An edge-triggered entry sends on the
    /// rising edge; a level-triggered one sends while asserted and remote
    /// IRR is clear.
    pub fn set_level(
        &mut self,
        pin: u32,
        asserted: bool,
        deliver: &mut dyn FnMut(&InterruptMessage) -> bool,
    ) -> Result<PinOutcome, IoapicError> {
        let index = Self::pin_index(pin)?;
        let bit = 1u32 << index;
        let was = self.state.asserted & bit != 0;
        if !asserted {
            self.state.asserted &= !bit;
            return Ok(PinOutcome::NoChange);
        }
        self.state.asserted |= bit;
        let level = self.state.redirection[index] & ENTRY_TRIGGER_LEVEL != 0;
        if !level && was {
            return Ok(PinOutcome::NoChange);
        }
        Ok(self.send(index, deliver))
    }

    /// An EOI for `vector` (from a LAPIC broadcast or the EOI register):
    /// clears remote IRR of the level entries with that vector and
    /// re-delivers those whose pin is still asserted. Returns how many
    /// entries had remote IRR cleared.
    pub fn end_of_interrupt(
        &mut self,
        vector: u8,
        deliver: &mut dyn FnMut(&InterruptMessage) -> bool,
    ) -> usize {
        let mut cleared = 0;
        for pin in 0..IOAPIC_NUM_PINS {
            let entry = self.state.redirection[pin];
            if (entry & 0xff) as u8 != vector || entry & ENTRY_REMOTE_IRR == 0 {
                continue;
            }
            self.state.redirection[pin] &= !ENTRY_REMOTE_IRR;
            cleared += 1;
            if entry & ENTRY_TRIGGER_LEVEL != 0 && self.state.asserted & (1 << pin) != 0 {
                self.send(pin, deliver);
            }
        }
        cleared
    }

    fn read_indirect(&self) -> u32 {
        match self.state.ioregsel {
            REG_ID | REG_ARBITRATION => self.state.id,
            REG_VERSION => IOAPIC_VERSION,
            sel => match self.redirection_slot(sel) {
                Some((pin, false)) => self.state.redirection[pin] as u32,
                Some((pin, true)) => (self.state.redirection[pin] >> 32) as u32,
                None => 0,
            },
        }
    }

    /// The redirection entry and half (`true` = high) IOREGSEL selects.
    fn redirection_slot(&self, sel: u32) -> Option<(usize, bool)> {
        let rel = usize::try_from(sel.checked_sub(REG_REDIRECTION)?).ok()?;
        let pin = rel / 2;
        (pin < IOAPIC_NUM_PINS).then_some((pin, rel % 2 == 1))
    }

    fn write_indirect(&mut self, value: u32, deliver: &mut dyn FnMut(&InterruptMessage) -> bool) {
        match self.state.ioregsel {
            REG_ID => self.state.id = value & ID_WRITABLE,
            REG_VERSION | REG_ARBITRATION => {}
            sel => {
                let Some((pin, high)) = self.redirection_slot(sel) else {
                    debug!("ioapic: write of {value:#x} to unknown register {sel:#x}");
                    return;
                };
                let old = self.state.redirection[pin];
                let new = if high {
                    (old & 0xffff_ffff) | (u64::from(value) << 32)
                } else {
                    (old & !0xffff_ffff) | u64::from(value)
                };
                let mut entry = (new & ENTRY_WRITABLE) | (old & ENTRY_REMOTE_IRR);
                // Linux relies on an edge entry having remote IRR clear.
                if entry & ENTRY_TRIGGER_LEVEL == 0 {
                    entry &= !ENTRY_REMOTE_IRR;
                }
                self.state.redirection[pin] = entry;
                // An unmasked level entry whose pin is asserted fires now.
                if entry & ENTRY_TRIGGER_LEVEL != 0 && self.state.asserted & (1 << pin) != 0 {
                    self.send(pin, deliver);
                }
            }
        }
    }

    /// A guest read in the IOAPIC window. IOREGSEL and IOWIN answer at their
    /// exact offsets (narrow reads get the low bytes, wider reads are
    /// zero-extended); everything else reads 0.
    pub fn mmio_read(&self, offset: u64, data: &mut [u8]) {
        data.fill(0);
        let value = match offset {
            IOREGSEL => self.state.ioregsel,
            IOWIN => self.read_indirect(),
            _ => {
                debug!("ioapic: read at unknown offset {offset:#x}");
                return;
            }
        };
        for (byte, v) in data.iter_mut().zip(value.to_le_bytes()) {
            *byte = v;
        }
    }

    /// A guest write in the IOAPIC window (1 to 8 bytes at IOREGSEL, IOWIN
    /// or the EOI register; only the low 32 bits count).
    pub fn mmio_write(
        &mut self,
        offset: u64,
        data: &[u8],
        deliver: &mut dyn FnMut(&InterruptMessage) -> bool,
    ) {
        if data.is_empty() {
            return;
        }
        let mut bytes = [0u8; 4];
        for (b, d) in bytes.iter_mut().zip(data) {
            *b = *d;
        }
        let value = u32::from_le_bytes(bytes);
        match offset {
            IOREGSEL => self.state.ioregsel = value & 0xff,
            IOWIN => self.write_indirect(value, deliver),
            IOEOI => {
                self.end_of_interrupt((value & 0xff) as u8, deliver);
            }
            _ => debug!("ioapic: write of {value:#x} at unknown offset {offset:#x}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Records delivered messages; accepts all.
    #[derive(Default)]
    struct Sink(Vec<InterruptMessage>);
    impl Sink {
        fn f(&mut self) -> impl FnMut(&InterruptMessage) -> bool + '_ {
            |m| {
                self.0.push(*m);
                true
            }
        }
    }

    fn write_reg(io: &mut Ioapic, sel: u32, value: u32, sink: &mut Sink) {
        io.mmio_write(IOREGSEL, &sel.to_le_bytes(), &mut sink.f());
        io.mmio_write(IOWIN, &value.to_le_bytes(), &mut sink.f());
    }

    fn read_reg(io: &mut Ioapic, sel: u32) -> u32 {
        io.mmio_write(IOREGSEL, &sel.to_le_bytes(), &mut |_| true);
        let mut d = [0u8; 4];
        io.mmio_read(IOWIN, &mut d);
        u32::from_le_bytes(d)
    }

    fn route(io: &mut Ioapic, pin: u32, low: u32, dest: u8, sink: &mut Sink) {
        write_reg(io, 0x10 + 2 * pin, low, sink);
        write_reg(io, 0x11 + 2 * pin, u32::from(dest) << 24, sink);
    }

    #[test]
    fn identification_registers() {
        let mut io = Ioapic::new();
        let mut sink = Sink::default();
        assert_eq!(read_reg(&mut io, 1), 0x0017_0020);
        write_reg(&mut io, 0, 0xffff_ffff, &mut sink);
        assert_eq!(read_reg(&mut io, 0), 0x0f00_0000);
        assert_eq!(read_reg(&mut io, 2), 0x0f00_0000);
        write_reg(&mut io, 1, 0, &mut sink);
        assert_eq!(read_reg(&mut io, 1), 0x0017_0020);
        for pin in 0..24 {
            assert_eq!(read_reg(&mut io, 0x10 + 2 * pin), 0x10000);
            assert_eq!(read_reg(&mut io, 0x11 + 2 * pin), 0);
        }
        assert_eq!(read_reg(&mut io, 0x40), 0);
        assert_eq!(read_reg(&mut io, 0x3), 0);
        let mut d = [0u8; 1];
        io.mmio_write(IOREGSEL, &[0x10], &mut sink.f());
        io.mmio_read(IOREGSEL, &mut d);
        assert_eq!(d, [0x10]);
        assert!(sink.0.is_empty());
    }

    #[test]
    fn redirection_entry_read_only_bits() {
        let mut io = Ioapic::new();
        let mut sink = Sink::default();
        write_reg(&mut io, 0x10, 0xffff_ffff, &mut sink);
        write_reg(&mut io, 0x11, 0xffff_ffff, &mut sink);
        assert_eq!(read_reg(&mut io, 0x10), 0x0001_afff);
        assert_eq!(read_reg(&mut io, 0x11), 0xff00_0000);
    }

    #[test]
    fn edge_pin_delivers_when_unmasked() {
        let mut io = Ioapic::new();
        let mut sink = Sink::default();
        assert_eq!(io.pulse(4, &mut sink.f()), Ok(PinOutcome::Masked));
        route(&mut io, 4, 0x24, 0, &mut sink);
        assert_eq!(
            io.pulse(4, &mut sink.f()),
            Ok(PinOutcome::Sent { accepted: true })
        );
        assert_eq!(sink.0.len(), 1);
        let m = sink.0[0];
        assert_eq!(m.vector, 0x24);
        assert_eq!(m.trigger_mode, TriggerMode::Edge);
        assert_eq!(m.destination_mode, DestinationMode::Physical);
        // Edge pins send again on every pulse.
        io.pulse(4, &mut sink.f()).unwrap();
        assert_eq!(sink.0.len(), 2);
        // Level input on an edge pin: rising edge only.
        io.set_level(4, true, &mut sink.f()).unwrap();
        io.set_level(4, true, &mut sink.f()).unwrap();
        assert_eq!(sink.0.len(), 3);
        io.set_level(4, false, &mut sink.f()).unwrap();
        io.set_level(4, true, &mut sink.f()).unwrap();
        assert_eq!(sink.0.len(), 4);
        assert_eq!(
            io.pulse(24, &mut sink.f()),
            Err(IoapicError::InvalidPin(24))
        );
        assert_eq!(
            io.set_level(u32::MAX, true, &mut sink.f()),
            Err(IoapicError::InvalidPin(u32::MAX))
        );
    }

    #[test]
    fn level_pin_remote_irr_and_eoi() {
        let mut io = Ioapic::new();
        let mut sink = Sink::default();
        route(&mut io, 10, 0x8000 | 0x50, 0, &mut sink);
        assert_eq!(
            io.set_level(10, true, &mut sink.f()),
            Ok(PinOutcome::Sent { accepted: true })
        );
        assert_eq!(sink.0.len(), 1);
        assert_eq!(sink.0[0].trigger_mode, TriggerMode::Level);
        assert_ne!(read_reg(&mut io, 0x10 + 20) & (1 << 14), 0);
        // While remote IRR is set, nothing more.
        assert_eq!(
            io.set_level(10, true, &mut sink.f()),
            Ok(PinOutcome::RemoteIrrPending)
        );
        // EOI of another vector does nothing.
        assert_eq!(io.end_of_interrupt(0x51, &mut sink.f()), 0);
        // EOI while still asserted: re-delivered, remote IRR set again.
        assert_eq!(io.end_of_interrupt(0x50, &mut sink.f()), 1);
        assert_eq!(sink.0.len(), 2);
        assert_ne!(read_reg(&mut io, 0x10 + 20) & (1 << 14), 0);
        // De-assert, EOI through the EOI register: remote IRR clear, silent.
        io.set_level(10, false, &mut sink.f()).unwrap();
        io.mmio_write(IOEOI, &[0x50, 0, 0, 0], &mut sink.f());
        assert_eq!(sink.0.len(), 2);
        assert_eq!(read_reg(&mut io, 0x10 + 20) & (1 << 14), 0);
    }

    #[test]
    fn level_pin_unmasked_while_asserted_fires() {
        let mut io = Ioapic::new();
        let mut sink = Sink::default();
        io.set_level(3, true, &mut sink.f()).unwrap();
        route(&mut io, 3, 0x1_8000 | 0x33, 0, &mut sink); // still masked
        assert!(sink.0.is_empty());
        write_reg(&mut io, 0x16, 0x8000 | 0x33, &mut sink); // unmask
        assert_eq!(sink.0.len(), 1);
        // Switching to edge clears remote IRR.
        write_reg(&mut io, 0x16, 0x33, &mut sink);
        assert_eq!(read_reg(&mut io, 0x16) & (1 << 14), 0);
    }

    #[test]
    fn rejected_level_message_leaves_remote_irr_clear() {
        let mut io = Ioapic::new();
        let mut sink = Sink::default();
        route(&mut io, 1, 0x8000 | 0x40, 0, &mut sink);
        assert_eq!(
            io.set_level(1, true, &mut |_| false),
            Ok(PinOutcome::Sent { accepted: false })
        );
        assert_eq!(read_reg(&mut io, 0x12) & (1 << 14), 0);
    }

    #[test]
    fn garbage_accesses_never_panic() {
        let mut io = Ioapic::new();
        for offset in (0..0x1010u64).step_by(5).chain([0, 0x10, 0x40, u64::MAX]) {
            for size in [0usize, 1, 2, 3, 4, 8, 16] {
                let mut d = vec![0xffu8; size];
                io.mmio_read(offset, &mut d);
                io.mmio_write(offset, &d, &mut |_| true);
            }
        }
        for sel in [0u32, 0xff, 0x3f, 0x40, 0x41, 0xffff_ffff] {
            io.mmio_write(IOREGSEL, &sel.to_le_bytes(), &mut |_| true);
            io.mmio_write(IOWIN, &[1, 2, 3, 4], &mut |_| true);
            let mut d = [0u8; 8];
            io.mmio_read(IOWIN, &mut d);
        }
    }
}
