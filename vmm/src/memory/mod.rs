// Copyright 2026 The ft-cloud-hypervisor authors.
// SPDX-License-Identifier: Apache-2.0

//! Guest RAM: its ranges around the 32-bit device hole, the host mapping and
//! its registration with the hypervisor.

pub mod populated;

use std::sync::Arc;

use hypervisor::{MemoryRegion, Vm};
use vm_memory::{GuestAddress, GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion};

use crate::layout::{MEM_32BIT_RESERVED_START, RAM_64BIT_START};

/// The guest's RAM.
pub type GuestMemoryMmapT = GuestMemoryMmap;

/// Errors while setting up guest memory.
#[derive(Debug, thiserror::Error)]
pub enum MemoryError {
    /// The host could not map the RAM.
    #[error("cannot allocate {size} bytes of guest memory")]
    Allocate {
        /// Bytes asked for.
        size: u64,
        /// Why.
        #[source]
        source: vm_memory::mmap::FromRangesError,
    },
    /// KVM refused a memory slot.
    #[error("cannot register guest memory with the hypervisor")]
    Register(#[source] hypervisor::HypervisorError),
}

/// The RAM ranges for `size` bytes: below the 32-bit hole, then above 4 GiB.
pub fn ram_ranges(size: u64) -> Vec<(GuestAddress, usize)> {
    let low = size.min(MEM_32BIT_RESERVED_START);
    let mut ranges = vec![(GuestAddress(0), low as usize)];
    if size > low {
        ranges.push((GuestAddress(RAM_64BIT_START), (size - low) as usize));
    }
    ranges
}

/// Maps `size` bytes of RAM and registers it with `vm`, with KVM dirty
/// page logging when `log_dirty` (record mode's micro-checkpoints).
pub fn create_guest_memory(
    vm: &Arc<dyn Vm>,
    size: u64,
    log_dirty: bool,
) -> Result<GuestMemoryMmapT, MemoryError> {
    let mem = GuestMemoryMmap::from_ranges(&ram_ranges(size))
        .map_err(|source| MemoryError::Allocate { size, source })?;
    for (slot, region) in mem.iter().enumerate() {
        let r = MemoryRegion {
            slot: slot as u32,
            guest_phys_addr: region.start_addr().0,
            size: region.len(),
            userspace_addr: region.as_ptr() as u64,
            log_dirty,
        };
        // SAFETY: the mapping belongs to `mem`, which the VM keeps alive for
        // as long as the hypervisor VM exists (both are dropped together).
        unsafe { vm.set_user_memory_region(r) }.map_err(MemoryError::Register)?;
    }
    Ok(mem)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_split_around_the_hole() {
        assert_eq!(ram_ranges(128 << 20), vec![(GuestAddress(0), 128 << 20)]);
        let r = ram_ranges(4 << 30);
        assert_eq!(r.len(), 2);
        assert_eq!(r[0], (GuestAddress(0), 0xc000_0000));
        assert_eq!(r[1], (GuestAddress(1 << 32), (1 << 30)));
    }
}
