//! Pure logic of the test guest, kept apart from the kernel binary so that
//! it can be unit-tested on the host (`cargo test --lib`, see README.md):
//! command-line parsing, workload selection, the compute workload's
//! arithmetic, the APIC timer arithmetic, and the key-value service's
//! protocol and on-disk format.

#![cfg_attr(not(test), no_std)]

pub mod apic_timer;
pub mod cmdline;
pub mod config;
pub mod kvlog;
pub mod kvproto;
pub mod splitmix;
