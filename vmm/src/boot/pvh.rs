// Copyright 2026 The ft-cloud-hypervisor authors.
// SPDX-License-Identifier: Apache-2.0

//! PVH: an ELF kernel entered in 32-bit protected mode with `hvm_start_info`.

use std::fs::File;

use linux_loader::configurator::pvh::PvhBootConfigurator;
use linux_loader::configurator::{BootConfigurator, BootParams};
use linux_loader::loader::elf::start_info::{
    hvm_memmap_table_entry, hvm_modlist_entry, hvm_start_info,
};
use linux_loader::loader::elf::{Elf, PvhBootCapability};
use linux_loader::loader::KernelLoader;
use vm_memory::GuestAddress;

use super::{ram_map, BootError, EntryPoint, InitramfsPlacement};
use crate::layout::{CMDLINE_START, HIGH_RAM_START, MEMMAP_START, MODLIST_START, PVH_INFO_START};
use crate::memory::GuestMemoryMmapT;

const XEN_HVM_START_MAGIC_VALUE: u32 = 0x336e_c578;
const E820_RAM: u32 = 1;

/// Loads an ELF kernel. `Ok(None)`: an ELF without a PVH note.
pub(super) fn load(
    mem: &GuestMemoryMmapT,
    file: &mut File,
) -> Result<Option<GuestAddress>, linux_loader::loader::Error> {
    let result = Elf::load(mem, None, file, Some(HIGH_RAM_START))?;
    Ok(match result.pvh_boot_cap {
        PvhBootCapability::PvhEntryPresent(entry) => Some(entry),
        _ => None,
    })
}

/// Writes `hvm_start_info`, the memory map and the module list.
pub(super) fn write_start_info(
    mem: &GuestMemoryMmapT,
    entry: GuestAddress,
    rsdp: GuestAddress,
    initramfs: Option<InitramfsPlacement>,
) -> Result<EntryPoint, BootError> {
    let memmap: Vec<hvm_memmap_table_entry> = ram_map(mem)
        .into_iter()
        .map(|(addr, size)| hvm_memmap_table_entry {
            addr,
            size,
            type_: E820_RAM,
            reserved: 0,
        })
        .collect();
    let mut start_info = hvm_start_info {
        magic: XEN_HVM_START_MAGIC_VALUE,
        version: 1,
        cmdline_paddr: CMDLINE_START.0,
        memmap_paddr: MEMMAP_START.0,
        memmap_entries: memmap.len() as u32,
        rsdp_paddr: rsdp.0,
        ..Default::default()
    };
    let mut params;
    if let Some(initrd) = initramfs {
        start_info.nr_modules = 1;
        start_info.modlist_paddr = MODLIST_START.0;
        params = BootParams::new(&start_info, PVH_INFO_START);
        let module = hvm_modlist_entry {
            paddr: initrd.addr.0,
            size: initrd.size,
            ..Default::default()
        };
        params.set_modules(&[module], MODLIST_START);
    } else {
        params = BootParams::new(&start_info, PVH_INFO_START);
    }
    params.set_sections(&memmap, MEMMAP_START);
    PvhBootConfigurator::write_bootparams(&params, mem).map_err(BootError::Configurator)?;
    Ok(EntryPoint::Pvh {
        entry,
        start_info: PVH_INFO_START,
    })
}
