// Copyright 2026 The ft-cloud-hypervisor authors.
// SPDX-License-Identifier: Apache-2.0

//! A running VM's memory as the pre-copy rounds read it
//! ([`vm_migration::migration::PageSource`]), for a live migration and for
//! FT VMotion's seed: its RAM, and the pages written since the last read
//! from the VM's dirty log (a consumer of its one owner) and from the
//! devices' tracker (KVM's log does not see the VMM's own writes: disk
//! data, received frames, used rings).

use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryRegion};
use vm_migration::migration::{BoxError, PageSource};

use crate::dirty_log::DirtyConsumer;
use crate::memory::GuestMemoryMmapT;

/// The devices' writes are tracked while this lives (one copy at a time:
/// the tracker is the process's).
#[derive(Debug)]
struct DeviceWrites;

impl DeviceWrites {
    fn start() -> Self {
        virtio_devices::dirty::start();
        DeviceWrites
    }
}

impl Drop for DeviceWrites {
    fn drop(&mut self) {
        virtio_devices::dirty::stop();
    }
}

/// A VM's memory and the pages written in it.
#[derive(Debug)]
pub struct VmPages {
    memory: GuestMemoryMmapT,
    dirty: DirtyConsumer,
    _devices: DeviceWrites,
}

impl VmPages {
    /// `memory`, with `dirty` (registered now: its first read returns the
    /// pages written from now on); the devices' writes are tracked from
    /// now on too.
    pub fn new(memory: GuestMemoryMmapT, dirty: DirtyConsumer) -> Self {
        VmPages {
            memory,
            dirty,
            _devices: DeviceWrites::start(),
        }
    }
}

impl PageSource for VmPages {
    fn memory_ranges(&self) -> Vec<(u64, u64)> {
        self.memory
            .iter()
            .map(|r| (r.start_addr().0, r.len()))
            .collect()
    }

    fn read_memory(&self, gpa: u64, buf: &mut [u8]) -> Result<(), BoxError> {
        Ok(self.memory.read_slice(buf, GuestAddress(gpa))?)
    }

    fn dirty_pages(&mut self) -> Result<Vec<(u64, Vec<u64>)>, BoxError> {
        let mut dirty: Vec<(u64, u64, Vec<u64>)> = self
            .dirty
            .read_all()?
            .into_iter()
            .map(|(slot, bitmap)| (slot.base, slot.size, bitmap))
            .collect();
        for gpa in virtio_devices::dirty::take() {
            if let Some((base, _, bitmap)) = dirty
                .iter_mut()
                .find(|(base, size, _)| (*base..*base + *size).contains(&gpa))
            {
                let page = ((gpa - *base) / crate::dirty_log::PAGE_SIZE) as usize;
                if let Some(word) = bitmap.get_mut(page / 64) {
                    *word |= 1 << (page % 64);
                }
            }
        }
        Ok(dirty.into_iter().map(|(base, _, b)| (base, b)).collect())
    }
}
