// Copyright 2026 The ft-cloud-hypervisor authors.
// SPDX-License-Identifier: Apache-2.0

//! Platform devices of the VMM.
//!
//! Every device here is a plain state machine driven from the vCPU thread:
//! it is only touched at exits, so the guest-visible state changes at points
//! a record/replay log can name. Time enters only through [`clock::Clock`],
//! interrupts leave only through [`irq::IrqLines`] and the
//! [`interrupt::InterruptController`].

// Tests may unwrap: a failed unwrap is a failed test.

pub mod async_event;
pub mod bus;
pub mod clock;
pub mod interrupt;
pub mod irq;
pub mod legacy;
