// Copyright 2026 The ft-cloud-hypervisor authors.
// SPDX-License-Identifier: Apache-2.0

//! Saving and restoring guest-visible state, in the spirit of Cloud
//! Hypervisor's `Snapshottable`: the vCPU ([`vcpu::VcpuState`]: registers,
//! special registers, XSAVE, XCRs, MSRs, pending events, debug registers)
//! and each device (the user-space interrupt controller, the serial port,
//! and in `virtio-devices` the virtio-pci devices) turn their state into
//! bytes and back.
//!
//! The bytes are this project's own little-endian encoding ([`codec`]),
//! versioned per snapshot, so that micro-checkpoints in a record/replay log
//! stay small and cheap to produce.

pub mod codec;
pub mod devices_state;
pub mod migration;
pub mod snapshot;
pub mod vcpu;

pub use codec::{ByteReader, ByteWriter, CodecError};

/// Errors saving or restoring state.
#[derive(Debug, thiserror::Error)]
pub enum MigratableError {
    /// Reading state from the hypervisor failed.
    #[error("cannot save the state of {0}")]
    Save(&'static str, #[source] hypervisor::HypervisorError),
    /// Writing state into the hypervisor failed.
    #[error("cannot restore the state of {0}")]
    Restore(&'static str, #[source] hypervisor::HypervisorError),
    /// The saved bytes do not decode.
    #[error("malformed snapshot of {0}")]
    Decode(&'static str, #[source] CodecError),
    /// The saved bytes decode but the device refuses them.
    #[error("the device {device} refuses the saved state: {reason}")]
    Invalid {
        /// The device.
        device: &'static str,
        /// Why.
        reason: String,
    },
}

/// Something that can stop and restart its guest-visible activity (before
/// a snapshot is taken, for instance).
pub trait Pausable {
    /// Stops guest-visible activity. Idempotent.
    fn pause(&mut self) -> Result<(), MigratableError> {
        Ok(())
    }
    /// Restarts it. Idempotent.
    fn resume(&mut self) -> Result<(), MigratableError> {
        Ok(())
    }
}

/// A device whose guest-visible state can be saved and restored as bytes.
pub trait Snapshottable {
    /// A stable name for the snapshot (the same on every run), unique
    /// among a VM's devices.
    fn snapshot_id(&self) -> &str;
    /// The guest-visible state, encoded.
    fn snapshot(&self) -> Vec<u8>;
    /// Replaces the guest-visible state with a saved one.
    fn restore(&mut self, data: &[u8]) -> Result<(), MigratableError>;
}
