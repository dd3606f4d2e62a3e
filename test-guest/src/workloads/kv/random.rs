//! The `RANDOM` command: a number from RDRAND, executed here in user mode
//! (CPL3), where a VMM cannot intercept it, so a recording cannot log it.
//! The number then decides how many times the APIC timer's current count
//! is read (1 to 1024 MMIO exits, each a clock read the recording logs):
//! a backup replaying the primary's log draws another number and reads
//! the clock another number of times, which replay detects (a read the
//! log lacks, or a logged read the guest skipped), or, when a checkpoint
//! lands inside the loop first, by the registers that checkpoint's
//! stretch started from (the loop counter and the number differ). One
//! draw in 1024 gives the same count and may go unnoticed; the test
//! draws again.

use alloc::vec::Vec;
use core::arch::asm;

use crate::lapic;

/// Attempts before giving up on RDRAND (it may fail transiently).
const ATTEMPTS: u32 = 16;

/// Draws a number and reads the clock as many times as it says (see the
/// module's comment). Returns the number (0 if RDRAND kept failing).
pub fn draw() -> u64 {
    let mut value = 0u64;
    for _ in 0..ATTEMPTS {
        let v: u64;
        let ok: u8;
        // SAFETY: RDRAND writes a register and the carry flag only; the
        // CPUs the test guest runs on have it (a CPU without it raises #UD,
        // which the guest reports as a fault).
        unsafe {
            asm!(
                "rdrand {v}",
                "setc {ok}",
                v = out(reg) v,
                ok = out(reg_byte) ok,
                options(nomem, nostack)
            );
        }
        if ok != 0 {
            value = v;
            break;
        }
    }
    let mut sum = 0u32;
    for _ in 0..=(value % 1024) {
        sum = sum.wrapping_add(lapic::timer_current_count());
    }
    core::hint::black_box(sum);
    value
}

/// Appends `value` as 16 lowercase hex digits.
pub fn hex(out: &mut Vec<u8>, value: u64) {
    for shift in (0..16).rev() {
        let digit = ((value >> (shift * 4)) & 0xf) as u8;
        out.push(if digit < 10 {
            b'0' + digit
        } else {
            b'a' + digit - 10
        });
    }
}
