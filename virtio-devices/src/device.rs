// Copyright 2026 The ft-cloud-hypervisor authors.
// SPDX-License-Identifier: Apache-2.0

//! What a virtio device model provides to the PCI transport.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::sync::atomic::{AtomicU64, Ordering};

use virtio_queue::{Queue, QueueT};
use vm_memory::GuestMemoryMmap;

use crate::chain::{self, Chain, ChainError};
use crate::go_live::{GoLive, GoLiveError};

/// Why a device stops serving until the driver resets it.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DeviceFault {
    /// The guest handed over a malformed ring or chain.
    #[error("malformed virtqueue input")]
    Chain(#[from] ChainError),
}

/// Why an event cannot be applied.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum EventError {
    /// The bytes are not an event of this device.
    #[error("{0}")]
    Malformed(String),
    /// The guest's rings are broken: the device needs a reset.
    #[error("device fault while applying an event")]
    Fault(#[from] DeviceFault),
}

/// The queues of an activated device, and the guest memory they live in.
/// Records which queues got used buffers, for the transport's interrupts.
#[derive(Debug)]
pub struct QueueContext<'a> {
    /// Guest memory (touched only on the vCPU thread).
    pub mem: &'a GuestMemoryMmap,
    /// The queues, by index.
    pub queues: &'a mut [Queue],
    /// Bit `i`: queue `i` has new used buffers.
    pub used: u64,
}

impl QueueContext<'_> {
    /// Takes the next available chain of queue `index`, checked.
    pub fn pop(&mut self, index: usize, max_bytes: u64) -> Result<Option<Chain>, ChainError> {
        match self.queues.get_mut(index) {
            Some(q) if q.ready() => chain::pop_chain(q, self.mem, max_bytes),
            _ => Ok(None),
        }
    }

    /// Enables or disables the driver's notifications of queue `index`
    /// (VRING_USED_F_NO_NOTIFY). On enabling, returns whether buffers were
    /// made available that the device has not popped yet (the driver may
    /// have posted them without notifying just before).
    pub fn set_notification(&mut self, index: usize, enable: bool) -> Result<bool, ChainError> {
        let q = match self.queues.get_mut(index) {
            Some(q) if q.ready() => q,
            _ => return Ok(false),
        };
        mark_used_ring(q);
        if enable {
            q.enable_notification(self.mem)
                .map_err(|_| ChainError::UsedRing)
        } else {
            q.disable_notification(self.mem)
                .map_err(|_| ChainError::UsedRing)?;
            Ok(false)
        }
    }

    /// Returns chain `head` of queue `index` with `len` bytes written.
    pub fn add_used(&mut self, index: usize, head: u16, len: u32) -> Result<(), ChainError> {
        let q = self.queues.get_mut(index).ok_or(ChainError::UsedRing)?;
        q.add_used(self.mem, head, len)
            .map_err(|_| ChainError::UsedRing)?;
        mark_used_ring(q);
        self.used |= 1 << index;
        Ok(())
    }
}

/// Marks `q`'s used ring (flags, index, ring, event) as written by the
/// device, for a live migration ([`crate::dirty`]).
fn mark_used_ring(q: &Queue) {
    crate::dirty::mark(q.used_ring(), 6 + 8 * u64::from(q.size()));
}

/// A virtio device behind the PCI transport. Every method runs on the
/// vCPU thread except [`poll_event`](Self::poll_event), which must not
/// touch guest-visible state.
pub trait VirtioDevice: Send + Debug {
    /// The virtio device type (1 net, 2 block).
    fn device_type(&self) -> u16;
    /// Maximum size of each queue.
    fn queue_max_sizes(&self) -> Vec<u16>;
    /// Offered feature bits.
    fn features(&self) -> u64;
    /// Reads the device-specific configuration at `offset`.
    fn read_config(&self, offset: u64, data: &mut [u8]);
    /// The driver set DRIVER_OK with these features.
    fn activate(&mut self, features: u64);
    /// The driver reset the device: forget in-flight requests.
    fn reset(&mut self);
    /// The driver notified queue `index`.
    fn process_queue(&mut self, index: usize, ctx: &mut QueueContext) -> Result<(), DeviceFault>;
    /// Takes finished host work, as event bytes (not on guest state).
    fn poll_event(&mut self) -> Option<Vec<u8>>;
    /// Applies event bytes; `ctx` is `None` while the device is not live
    /// (not activated, or waiting for a reset): the event then only
    /// updates the device's own state.
    fn apply_event(
        &mut self,
        event: &[u8],
        ctx: Option<&mut QueueContext>,
    ) -> Result<(), EventError>;
    /// Appends the device's own guest-visible state (requests in flight,
    /// frames waiting for buffers) to `w`.
    fn save_state(&self, w: &mut vm_migration::ByteWriter);
    /// Replaces the device's own state with one from
    /// [`save_state`](Self::save_state).
    fn restore_state(
        &mut self,
        r: &mut vm_migration::ByteReader<'_>,
    ) -> Result<(), vm_migration::CodecError>;
    /// Requests handed to the host and not yet completed in guest memory.
    /// A snapshot is taken only when every device answers 0, so that no
    /// host operation has to be issued again after a restore.
    fn in_flight(&self) -> usize {
        0
    }
    /// A device built without its host backend attaches it now (see
    /// [`crate::go_live`]). Devices with no host side have nothing to do.
    fn go_live(&mut self, _live: &GoLive) -> Result<(), GoLiveError> {
        Ok(())
    }
    /// After a live migration: tells the network where the guest is now
    /// (a net device announces its MAC). Other devices have nothing to say.
    fn announce(&self) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        Ok(())
    }
}

/// Named counters of a device, readable from any thread.
#[derive(Debug)]
pub struct Counters {
    names: &'static [&'static str],
    values: Vec<AtomicU64>,
}

impl Counters {
    /// Counters with these names, all zero.
    pub fn new(names: &'static [&'static str]) -> Self {
        Counters {
            names,
            values: names.iter().map(|_| AtomicU64::new(0)).collect(),
        }
    }

    /// Adds `n` to counter `index` (of the names given at creation).
    pub fn add(&self, index: usize, n: u64) {
        if let Some(v) = self.values.get(index) {
            v.fetch_add(n, Ordering::Relaxed);
        }
    }

    /// The current values by name.
    pub fn snapshot(&self) -> BTreeMap<String, u64> {
        self.names
            .iter()
            .zip(&self.values)
            .map(|(n, v)| (n.to_string(), v.load(Ordering::Relaxed)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_by_name() {
        let c = Counters::new(&["a", "b"]);
        c.add(1, 5);
        c.add(1, 2);
        c.add(7, 1);
        let s = c.snapshot();
        assert_eq!(s["a"], 0);
        assert_eq!(s["b"], 7);
    }
}
