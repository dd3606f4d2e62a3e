//! Pure logic of the test guest, kept apart from the kernel binary so that
//! it can be unit-tested on the host (`cargo test --lib`, see README.md):
//! command-line parsing, workload selection, the compute workload's
//! arithmetic and the APIC timer arithmetic.

#![cfg_attr(not(test), no_std)]

pub mod apic_timer;
pub mod cmdline;
pub mod config;
pub mod splitmix;
