//! `workload=fault [kind=ud|gp|pf]`: raises an exception on purpose, so
//! that tests can check the exception report
//! (`test-guest: exception <vector> at rip=<address>`) and that the VMM
//! copes with a guest that stops for good.

use core::arch::asm;
use core::ptr::read_volatile;

use test_guest::config::FaultKind;

/// A non-canonical address: loads from it raise #GP.
const NON_CANONICAL: usize = 0x8000_0000_0000_0000;
/// An address past the 4 GiB identity map: loads from it raise #PF.
const UNMAPPED: usize = 0x10_0000_0000;

/// Raises the exception; the kernel reports it and stops the vCPU.
pub fn run(kind: FaultKind) -> ! {
    match kind {
        // SAFETY: `ud2` raises #UD; the exception report never returns.
        FaultKind::InvalidOpcode => unsafe { asm!("ud2", options(nomem, nostack, noreturn)) },
        // SAFETY: the load faults (#GP) before reading anything; the
        // exception report never returns.
        FaultKind::GeneralProtection => unsafe { read_volatile(NON_CANONICAL as *const u64) },
        // SAFETY: the load faults (#PF) before reading anything; the
        // exception report never returns.
        FaultKind::PageFault => unsafe { read_volatile(UNMAPPED as *const u64) },
    };
    unreachable!("the exception report returned")
}
