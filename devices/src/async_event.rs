// Copyright 2026 The ft-cloud-hypervisor authors.
// SPDX-License-Identifier: Apache-2.0

//! Host-side work finished off the vCPU thread, applied on it.
//!
//! A device with I/O threads (a tap reader, a disk worker) never writes
//! guest-visible state from them. Its threads produce *events* (an RX frame,
//! the data and status of a finished disk request) as plain bytes and wake
//! the vCPU; at its next exit the vCPU thread polls the event and applies it
//! (guest memory, used ring, interrupt). Because an event is plain data, the
//! same path serves record/replay: record logs the bytes with the exit at
//! which they were applied; replay applies logged bytes at that exit without
//! any host I/O.

use std::fmt::Debug;

/// Errors applying an event.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ApplyError {
    /// The bytes do not decode as an event of this device.
    #[error("malformed event for device {device}: {reason}")]
    Malformed {
        /// The device.
        device: String,
        /// What is wrong.
        reason: String,
    },
}

/// A device whose host-side results are applied on the vCPU thread.
pub trait AsyncEventSource: Send + Debug {
    /// The device's id (stable across runs: it names the device in logs).
    fn id(&self) -> &str;
    /// Takes the next finished piece of host work, if any. Must not touch
    /// guest-visible state.
    fn poll_event(&mut self) -> Option<Vec<u8>>;
    /// Applies an event (from [`poll_event`](Self::poll_event), or from a
    /// replay log). Called only on the vCPU thread.
    fn apply_event(&mut self, event: &[u8]) -> Result<(), ApplyError>;
}

/// Wakes the vCPU thread so that it polls for events soon.
pub trait Waker: Send + Sync + Debug {
    /// Asks the vCPU to come out of the guest (or out of HLT) and poll.
    fn wake(&self);
}
