// Copyright 2026 The ft-cloud-hypervisor authors.
// SPDX-License-Identifier: Apache-2.0

//! An interrupt message as it travels to local APICs: what the IOAPIC, MSI
//! writes and IPIs all produce, and the routing code consumes.

/// Delivery mode (bits 10:8 of a redirection entry, MSI data or ICR).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeliveryMode {
    /// 000: the vector, to every destination.
    Fixed,
    /// 001: the vector, to the lowest-priority destination.
    LowestPriority,
    /// 010: system management interrupt.
    Smi,
    /// 100: non-maskable interrupt.
    Nmi,
    /// 101: INIT.
    Init,
    /// 110: start-up IPI.
    StartUp,
    /// 111: external (8259) interrupt.
    ExtInt,
    /// 011: reserved.
    Reserved,
}

impl DeliveryMode {
    /// Decodes bits 10:8 of `value`.
    pub fn from_bits(value: u64) -> DeliveryMode {
        match (value >> 8) & 0x7 {
            0 => DeliveryMode::Fixed,
            1 => DeliveryMode::LowestPriority,
            2 => DeliveryMode::Smi,
            4 => DeliveryMode::Nmi,
            5 => DeliveryMode::Init,
            6 => DeliveryMode::StartUp,
            7 => DeliveryMode::ExtInt,
            _ => DeliveryMode::Reserved,
        }
    }
}

/// How the destination field is interpreted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DestinationMode {
    /// Destination is an APIC ID (0xff: broadcast).
    Physical,
    /// Destination is matched against each APIC's LDR/DFR (0xff: broadcast).
    Logical,
}

/// Trigger mode of an interrupt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TriggerMode {
    /// Edge: no end-of-interrupt message goes back to the source.
    Edge,
    /// Level: the LAPIC sets TMR, and its EOI is broadcast to the IOAPIC.
    Level,
}

/// An interrupt on its way to local APICs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InterruptMessage {
    /// Vector (0..=255; below 16 is illegal for fixed delivery).
    pub vector: u8,
    /// Delivery mode.
    pub delivery_mode: DeliveryMode,
    /// Destination mode.
    pub destination_mode: DestinationMode,
    /// Destination: APIC ID or logical destination.
    pub destination: u8,
    /// Trigger mode.
    pub trigger_mode: TriggerMode,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delivery_modes_decode() {
        let modes = [
            DeliveryMode::Fixed,
            DeliveryMode::LowestPriority,
            DeliveryMode::Smi,
            DeliveryMode::Reserved,
            DeliveryMode::Nmi,
            DeliveryMode::Init,
            DeliveryMode::StartUp,
            DeliveryMode::ExtInt,
        ];
        for (i, m) in modes.iter().enumerate() {
            assert_eq!(DeliveryMode::from_bits((i as u64) << 8 | 0xff), *m);
        }
        assert_eq!(DeliveryMode::from_bits(0xf800), DeliveryMode::Fixed);
    }
}
