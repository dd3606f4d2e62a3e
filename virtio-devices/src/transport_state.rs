// Copyright 2026 The ft-cloud-hypervisor authors.
// SPDX-License-Identifier: Apache-2.0

//! Saving and restoring a virtio-pci device's guest-visible state as bytes
//! (for micro-checkpoints and, later, migration): configuration space,
//! MSI-X, the common configuration, every queue's ring positions and the
//! device's own state (requests in flight, frames waiting for buffers).
//! The host side (files, taps, I/O threads) is not part of it.
//!
//! [`Snapshottable`] gives the same bytes under the device's id, so that
//! micro-checkpoints compare them with the other devices' states.

use virtio_queue::{Queue, QueueState, QueueT};
use vm_migration::{ByteReader, ByteWriter, CodecError, MigratableError, Snapshottable};

use super::VirtioPciDevice;
use crate::pci::config::NUM_REGS;

const STATE_VERSION: u8 = 1;

/// Saved state that cannot be restored.
#[derive(Debug, thiserror::Error)]
#[error("cannot restore the state of {device}")]
pub struct StateError {
    /// The device.
    pub device: String,
    /// Why.
    #[source]
    pub source: CodecError,
}

impl VirtioPciDevice {
    /// The guest-visible state, encoded.
    pub fn save_state(&self) -> Vec<u8> {
        let mut w = ByteWriter::new();
        w.u8(STATE_VERSION);
        for reg in self.config.regs() {
            w.u32(reg);
        }
        self.msix.save(&mut w);
        w.u32(self.device_feature_select)
            .u32(self.driver_feature_select)
            .u64(self.driver_features)
            .u32(u32::from(self.msix_config))
            .u32(u32::from(self.queue_select))
            .u8(self.status)
            .u8(self.isr)
            .u8(u8::from(self.live))
            .u32(self.queues.len() as u32);
        for (q, vector) in self.queues.iter().zip(&self.queue_vectors) {
            let s = q.state();
            w.u32(u32::from(s.max_size))
                .u32(u32::from(s.next_avail))
                .u32(u32::from(s.next_used))
                .u8(u8::from(s.event_idx_enabled))
                .u32(u32::from(s.size))
                .u8(u8::from(s.ready))
                .u64(s.desc_table)
                .u64(s.avail_ring)
                .u64(s.used_ring)
                .u32(u32::from(*vector));
        }
        self.device.save_state(&mut w);
        w.into_inner()
    }

    /// Replaces the guest-visible state with one saved by
    /// [`save_state`](Self::save_state) on a device of the same kind.
    /// Nothing changes when the bytes are refused.
    pub fn restore_state(&mut self, data: &[u8]) -> Result<(), StateError> {
        let before = self.save_state();
        let result = self.decode(data);
        if let Err(e) = result {
            // Put back what partly decoded state may have replaced.
            if self.decode(&before).is_err() {
                log::error!("{}: cannot roll back a refused state", self.id);
            }
            return Err(StateError {
                device: self.id.clone(),
                source: e,
            });
        }
        Ok(())
    }

    fn decode(&mut self, data: &[u8]) -> Result<(), CodecError> {
        let mut r = ByteReader::new(data);
        let version = r.u8()?;
        if version != STATE_VERSION {
            return Err(r.bad(format!("version {version}")));
        }
        let mut regs = [0u32; NUM_REGS];
        for reg in regs.iter_mut() {
            *reg = r.u32()?;
        }
        self.msix.restore(&mut r)?;
        let device_feature_select = r.u32()?;
        let driver_feature_select = r.u32()?;
        let driver_features = r.u64()?;
        let msix_config = u16_of(&mut r)?;
        let queue_select = u16_of(&mut r)?;
        let status = r.u8()?;
        let isr = r.u8()?;
        let live = r.u8()? != 0;
        let n = r.u32()? as usize;
        if n != self.queues.len() {
            return Err(r.bad(format!("{n} queues, this device has {}", self.queues.len())));
        }
        let mut queues = Vec::with_capacity(n);
        let mut vectors = Vec::with_capacity(n);
        for q in &self.queues {
            let state = QueueState {
                max_size: u16_of(&mut r)?,
                next_avail: u16_of(&mut r)?,
                next_used: u16_of(&mut r)?,
                event_idx_enabled: r.u8()? != 0,
                size: u16_of(&mut r)?,
                ready: r.u8()? != 0,
                desc_table: r.u64()?,
                avail_ring: r.u64()?,
                used_ring: r.u64()?,
            };
            if state.max_size != q.max_size() {
                return Err(r.bad("queue maximum size"));
            }
            queues.push(Queue::try_from(state).map_err(|_| r.bad("queue state"))?);
            vectors.push(u16_of(&mut r)?);
        }
        self.device.restore_state(&mut r)?;
        r.finish()?;
        self.config.restore_regs(regs);
        self.device_feature_select = device_feature_select;
        self.driver_feature_select = driver_feature_select;
        self.driver_features = driver_features;
        self.msix_config = msix_config;
        self.queue_select = queue_select;
        self.status = status;
        self.isr = isr;
        self.live = live;
        self.queues = queues;
        self.queue_vectors = vectors;
        Ok(())
    }
}

impl Snapshottable for VirtioPciDevice {
    /// The device id (`_disk0`, `_net1`, or the configured id).
    fn snapshot_id(&self) -> &str {
        &self.id
    }

    fn snapshot(&self) -> Vec<u8> {
        self.save_state()
    }

    fn restore(&mut self, data: &[u8]) -> Result<(), MigratableError> {
        self.restore_state(data)
            .map_err(|e| MigratableError::Invalid {
                device: "virtio-pci",
                reason: super::error_chain(&e),
            })
    }
}

fn u16_of(r: &mut ByteReader<'_>) -> Result<u16, CodecError> {
    let v = r.u32()?;
    u16::try_from(v).map_err(|_| r.bad(format!("{v} is not a 16-bit value")))
}
