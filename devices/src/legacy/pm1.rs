// Copyright 2026 The ft-cloud-hypervisor authors.
// SPDX-License-Identifier: Apache-2.0

//! The ACPI PM1 register block (fixed hardware) of a non-hardware-reduced
//! platform, at ports 0x610..0x616.
//!
//! The FADT points its `PM1a_EVT_BLK` at [`PM1_PORT_BASE`] (status then
//! enable, 16 bits each) and its `PM1a_CNT_BLK` at [`PM1_CNT_PORT`]
//! (16 bits):
//!
//! | offset | register | model |
//! | --- | --- | --- |
//! | 0 | `PM1_STS` | reads 0: no fixed event ever fires; writes (write 1 to clear) accepted |
//! | 2 | `PM1_EN` | read/write, stored (ACPICA reads an enable bit back to check it stuck) |
//! | 4 | `PM1_CNT` | `SCI_EN` (bit 0) reads 1: always in ACPI mode; `SLP_TYP` (bits 10-12) stored; `SLP_EN` (bit 13) with `SLP_TYP` 5 powers off |
//!
//! Linux powers off by writing `SLP_TYP` (the first value of `\_S5`, 5)
//! and then `SLP_TYP | SLP_EN` (0x3400, plus `SCI_EN` as read back). Any
//! access size at any offset works, byte by byte; bytes past the block
//! read 0xff and are not written.
//!
//! No `state()`/`restore()`: the only state is the guest's own writes to
//! the enable register and the sleep type, which no event ever uses.

use log::{debug, info};

use crate::bus::{BusAction, BusDevice};

/// First I/O port of the block (`PM1a_EVT_BLK`).
pub const PM1_PORT_BASE: u64 = 0x610;
/// Number of ports in the block: event (status and enable) then control.
pub const PM1_PORT_SIZE: u64 = 6;
/// Length of the event block (`PM1_EVT_LEN`): status and enable.
pub const PM1_EVT_LEN: u8 = 4;
/// I/O port of the control register (`PM1a_CNT_BLK`).
pub const PM1_CNT_PORT: u64 = PM1_PORT_BASE + PM1_EVT_LEN as u64;
/// Length of the control block (`PM1_CNT_LEN`).
pub const PM1_CNT_LEN: u8 = 2;
/// `SLP_TYP` of S5 (soft off): the first value of the DSDT's `\_S5`.
pub const PM1_S5_SLEEP_TYPE: u16 = 5;

/// `PM1_CNT.SCI_EN`: the SCI is enabled (the platform is in ACPI mode).
const SCI_EN: u16 = 1 << 0;
/// Position of `PM1_CNT.SLP_TYP`.
const SLP_TYP_SHIFT: u16 = 10;
/// `PM1_CNT.SLP_TYP`, 3 bits.
const SLP_TYP_MASK: u16 = 0x7 << SLP_TYP_SHIFT;
/// `PM1_CNT.SLP_EN`: enter the sleep state in `SLP_TYP` (write-only).
const SLP_EN: u16 = 1 << 13;

/// The PM1 register block.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Pm1Device {
    /// `PM1_EN` as the guest wrote it.
    enable: u16,
    /// `PM1_CNT.SLP_TYP` as the guest wrote it (other bits clear).
    sleep_type: u16,
}

impl Pm1Device {
    /// A new block: no event enabled, sleep type 0.
    pub fn new() -> Self {
        Self::default()
    }

    /// The byte at `offset` of the block, as the guest reads it.
    fn read_byte(&self, offset: u64) -> u8 {
        let (reg, high) = match offset {
            // PM1_STS.
            0 | 1 => return 0,
            // PM1_EN.
            2 | 3 => (self.enable, offset == 3),
            // PM1_CNT.
            4 | 5 => (self.sleep_type | SCI_EN, offset == 5),
            _ => return 0xff,
        };
        reg.to_le_bytes()[usize::from(high)]
    }
}

/// Replaces the low or high byte of `reg` with `value`.
fn set_byte(reg: &mut u16, high: bool, value: u8) {
    let mut bytes = reg.to_le_bytes();
    bytes[usize::from(high)] = value;
    *reg = u16::from_le_bytes(bytes);
}

impl BusDevice for Pm1Device {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        for (i, b) in data.iter_mut().enumerate() {
            *b = self.read_byte(offset.saturating_add(i as u64));
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) -> BusAction {
        // PM1_CNT as written by this access (bytes it does not cover keep
        // the stored sleep type), and whether it set SLP_EN.
        let mut control = self.sleep_type;
        let mut sleep_enable = false;
        for (i, &b) in data.iter().enumerate() {
            match offset.saturating_add(i as u64) {
                // PM1_STS: write 1 to clear, and nothing is ever set.
                0 | 1 => {}
                // PM1_EN.
                o @ (2 | 3) => set_byte(&mut self.enable, o == 3, b),
                // PM1_CNT.
                o @ (4 | 5) => {
                    set_byte(&mut control, o == 5, b);
                    if o == 5 && (u16::from(b) << 8) & SLP_EN != 0 {
                        sleep_enable = true;
                    }
                }
                o => debug!("PM1: ignored write {b:#x} past the block (offset {o})"),
            }
        }
        self.sleep_type = control & SLP_TYP_MASK;
        if !sleep_enable {
            return BusAction::None;
        }
        let sleep_type = self.sleep_type >> SLP_TYP_SHIFT;
        if sleep_type == PM1_S5_SLEEP_TYPE {
            info!("ACPI S5 (soft off) requested by the guest through PM1_CNT");
            BusAction::Shutdown
        } else {
            info!("PM1: ignored request for unsupported sleep type {sleep_type}");
            BusAction::None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read16(d: &mut Pm1Device, offset: u64) -> u16 {
        let mut b = [0u8; 2];
        d.read(offset, &mut b);
        u16::from_le_bytes(b)
    }

    #[test]
    fn layout_matches_the_fadt() {
        assert_eq!(PM1_PORT_BASE, 0x610);
        assert_eq!(PM1_CNT_PORT, 0x614);
        assert_eq!(
            PM1_PORT_SIZE,
            u64::from(PM1_EVT_LEN) + u64::from(PM1_CNT_LEN)
        );
    }

    #[test]
    fn poweroff_through_a_word_write() {
        let mut d = Pm1Device::new();
        // ACPICA: SLP_TYP first, then SLP_TYP | SLP_EN, SCI_EN as read back.
        assert_eq!(d.write(4, &0x1401u16.to_le_bytes()), BusAction::None);
        assert_eq!(read16(&mut d, 4), 0x1401);
        assert_eq!(d.write(4, &0x3401u16.to_le_bytes()), BusAction::Shutdown);
        let mut d = Pm1Device::new();
        assert_eq!(d.write(4, &0x3400u16.to_le_bytes()), BusAction::Shutdown);
        // SLP_EN is write-only.
        assert_eq!(read16(&mut d, 4), 0x1401);
    }

    #[test]
    fn poweroff_through_two_byte_writes() {
        let mut d = Pm1Device::new();
        assert_eq!(d.write(4, &[0x00]), BusAction::None);
        assert_eq!(d.write(5, &[0x34]), BusAction::Shutdown);
        // High byte first, then low byte: the high byte carried SLP_EN.
        let mut d = Pm1Device::new();
        assert_eq!(d.write(5, &[0x14]), BusAction::None);
        assert_eq!(d.write(4, &[0x00]), BusAction::None);
        assert_eq!(d.write(5, &[0x34]), BusAction::Shutdown);
        // A dword write over the whole event block and control, from 2.
        let mut d = Pm1Device::new();
        assert_eq!(
            d.write(2, &0x3400_0000u32.to_le_bytes()),
            BusAction::Shutdown
        );
    }

    #[test]
    fn other_sleep_types_are_ignored() {
        let mut d = Pm1Device::new();
        for typ in [0u16, 1, 3, 4, 6, 7] {
            let v = (typ << SLP_TYP_SHIFT) | SLP_EN;
            assert_eq!(d.write(4, &v.to_le_bytes()), BusAction::None, "{typ}");
            assert_eq!(read16(&mut d, 4), (typ << SLP_TYP_SHIFT) | SCI_EN);
        }
        // S5 without SLP_EN only sets the type.
        assert_eq!(d.write(4, &0x1400u16.to_le_bytes()), BusAction::None);
        // SLP_EN in the low byte's position (bit 5) is not SLP_EN.
        assert_eq!(d.write(4, &[0x34]), BusAction::None);
    }

    #[test]
    fn enable_reads_back() {
        let mut d = Pm1Device::new();
        assert_eq!(read16(&mut d, 2), 0);
        // PWRBTN_EN | GBL_EN, as a word.
        assert_eq!(d.write(2, &0x0120u16.to_le_bytes()), BusAction::None);
        assert_eq!(read16(&mut d, 2), 0x0120);
        // Bytes.
        d.write(3, &[0x03]);
        let mut b = [0u8];
        d.read(3, &mut b);
        assert_eq!(b[0], 0x03);
        d.read(2, &mut b);
        assert_eq!(b[0], 0x20);
        // A dword read of the event block: status (0) then enable.
        let mut w = [0u8; 4];
        d.read(0, &mut w);
        assert_eq!(u32::from_le_bytes(w), 0x0320_0000);
    }

    #[test]
    fn sci_en_reads_one_and_status_zero() {
        let mut d = Pm1Device::new();
        assert_eq!(read16(&mut d, 4), SCI_EN);
        // Clearing SCI_EN does not stick.
        d.write(4, &[0x00, 0x00]);
        assert_eq!(read16(&mut d, 4), SCI_EN);
        // Status: write 1 to clear everything; still 0.
        assert_eq!(d.write(0, &[0xff, 0xff]), BusAction::None);
        assert_eq!(read16(&mut d, 0), 0);
    }

    #[test]
    fn junk_is_ignored_and_never_panics() {
        let mut d = Pm1Device::new();
        for offset in 0..8u64 {
            for len in [0usize, 1, 2, 3, 4, 8] {
                let mut b = vec![0u8; len];
                d.read(offset, &mut b);
                if offset >= PM1_PORT_SIZE {
                    assert!(b.iter().all(|&x| x == 0xff));
                }
                // Everything but SLP_EN.
                let v = vec![0xdfu8; len];
                assert_eq!(d.write(offset, &v), BusAction::None);
            }
        }
        assert_eq!(d.write(u64::MAX, &[0xff; 4]), BusAction::None);
        d.read(u64::MAX, &mut [0u8; 4]);
        // Writes past the block do not reach it.
        let mut d = Pm1Device::new();
        d.write(6, &[0xff, 0xff]);
        assert_eq!(d, Pm1Device::new());
        // A dword at 4 reaches PM1_CNT; its upper half is past the block.
        assert_eq!(d.write(4, &[0x00, 0x34, 0xff, 0xff]), BusAction::Shutdown);
    }
}
