//! The local APIC (xAPIC, memory-mapped at 0xfee00000), driven from CPL3:
//! the page is mapped user-accessible. EOIs are written by the CPL0
//! interrupt stubs (traps.s), not here.

use core::ptr::{read_volatile, write_volatile};

use test_guest::apic_timer::{self, TimerError};

use crate::arch::SPURIOUS_VECTOR;

/// Physical (= virtual) base of the local APIC registers.
const BASE: usize = 0xfee0_0000;
/// Spurious Interrupt Vector Register.
const SVR: usize = 0xf0;
/// LVT LINT0 and LINT1 Registers.
const LVT_LINT0: usize = 0x350;
const LVT_LINT1: usize = 0x360;
/// LVT Timer Register.
const LVT_TIMER: usize = 0x320;
/// Timer Initial Count Register.
const TIMER_INITIAL_COUNT: usize = 0x380;
/// Timer Divide Configuration Register.
const TIMER_DIVIDE: usize = 0x3e0;

/// SVR: APIC software enable.
const SVR_ENABLE: u32 = 1 << 8;
/// LVT: periodic timer mode.
const LVT_PERIODIC: u32 = 1 << 17;
/// LVT: masked.
const LVT_MASKED: u32 = 1 << 16;

/// Version Register.
const VERSION: usize = 0x30;
/// Timer Current Count Register.
const TIMER_CURRENT_COUNT: usize = 0x390;

/// Reads the APIC version register (one MMIO exit under a VMM).
pub fn version() -> u32 {
    // SAFETY: BASE + VERSION is an aligned, read-only xAPIC register in the
    // identity-mapped, user-accessible APIC page; reading has no side effects.
    unsafe { read_volatile((BASE + VERSION) as *const u32) }
}

/// Reads the timer's current count (one MMIO exit under a VMM, which
/// reads guest time for it while the timer runs).
pub fn timer_current_count() -> u32 {
    // SAFETY: as `version`: an aligned, read-only xAPIC register of the
    // identity-mapped, user-accessible APIC page; reading changes nothing.
    unsafe { read_volatile((BASE + TIMER_CURRENT_COUNT) as *const u32) }
}

/// Writes `value` to the APIC register at `offset`.
fn write(offset: usize, value: u32) {
    // SAFETY: BASE + offset is a 16-byte aligned xAPIC register inside the
    // identity-mapped, uncached APIC page; writes have no memory effects.
    unsafe { write_volatile((BASE + offset) as *mut u32, value) }
}

/// Software-enables the local APIC with the spurious vector 0xff, and
/// masks LINT0/LINT1 so that a legacy PIC (left running by a firmware,
/// e.g. QEMU's SeaBIOS) cannot interrupt through it.
pub fn enable() {
    write(SVR, SVR_ENABLE | u32::from(SPURIOUS_VECTOR));
    write(LVT_LINT0, LVT_MASKED);
    write(LVT_LINT1, LVT_MASKED);
}

/// Starts the timer: periodic, `hz` interrupts per second on `vector`.
pub fn start_periodic_timer(vector: u8, hz: u64) -> Result<(), TimerError> {
    let count = apic_timer::initial_count(hz)?;
    write(TIMER_DIVIDE, apic_timer::DIVIDE_CONFIG);
    write(LVT_TIMER, LVT_PERIODIC | u32::from(vector));
    write(TIMER_INITIAL_COUNT, count);
    Ok(())
}

/// Stops the timer (masks it and clears its count).
pub fn stop_timer() {
    write(LVT_TIMER, LVT_MASKED);
    write(TIMER_INITIAL_COUNT, 0);
}
