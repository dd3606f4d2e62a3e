//! `workload=exits count=N`: N MMIO reads of the local APIC's version
//! register, each one VM exit taken directly from user mode. Prints
//! `exits=N` when done. Used by the exit-rate benchmark.

use crate::{lapic, println};

/// Runs the workload.
pub fn run(count: u64) {
    let mut sum = 0u64;
    for _ in 0..count {
        sum = sum.wrapping_add(u64::from(lapic::version()));
    }
    // The version register is constant: the sum proves every read returned it.
    let version = u64::from(lapic::version());
    if sum == version.wrapping_mul(count) {
        println!("exits={count}");
    } else {
        println!("exits: APIC version reads disagreed (sum {sum:#x})");
    }
}
