// Copyright 2026 The ft-cloud-hypervisor authors.
// SPDX-License-Identifier: Apache-2.0

//! bzImage through the Linux 64-bit boot protocol.

use std::fs::File;

use linux_loader::configurator::linux::LinuxBootConfigurator;
use linux_loader::configurator::{BootConfigurator, BootParams};
use linux_loader::loader::bootparam::{boot_params, setup_header};
use linux_loader::loader::{BzImage, KernelLoader};
use vm_memory::GuestAddress;

use super::{ram_map, BootError, EntryPoint, InitramfsPlacement};
use crate::layout::{CMDLINE_START, HIGH_RAM_START, ZERO_PAGE_START};
use crate::memory::GuestMemoryMmapT;

const KERNEL_BOOT_FLAG_MAGIC: u16 = 0xaa55;
const KERNEL_HDR_MAGIC: u32 = 0x5372_6448;
const KERNEL_LOADER_OTHER: u8 = 0xff;
const E820_RAM: u32 = 1;
/// `startup_64` is 0x200 bytes into the protected-mode kernel.
const STARTUP_64_OFFSET: u64 = 0x200;

/// A loaded bzImage.
#[derive(Debug, Clone, Copy)]
pub(super) struct LoadedBzImage {
    kernel_load: GuestAddress,
    header: setup_header,
    pub(super) initrd_addr_max: u64,
}

/// Loads the protected-mode part of a bzImage at 1 MiB.
pub(super) fn load(
    mem: &GuestMemoryMmapT,
    file: &mut File,
) -> Result<LoadedBzImage, linux_loader::loader::Error> {
    let result = BzImage::load(mem, None, file, Some(HIGH_RAM_START))?;
    let header = result.setup_header.unwrap_or_default();
    let initrd_addr_max = if header.initrd_addr_max == 0 {
        0x37ff_ffff
    } else {
        u64::from(header.initrd_addr_max)
    };
    Ok(LoadedBzImage {
        kernel_load: result.kernel_load,
        header,
        initrd_addr_max,
    })
}

/// Writes the zero page: setup header, command line, e820 map, initramfs.
pub(super) fn write_boot_params(
    mem: &GuestMemoryMmapT,
    loaded: &LoadedBzImage,
    cmdline: &str,
    rsdp: GuestAddress,
    initramfs: Option<InitramfsPlacement>,
) -> Result<EntryPoint, BootError> {
    let mut params = boot_params {
        hdr: loaded.header,
        acpi_rsdp_addr: rsdp.0,
        ..Default::default()
    };
    params.hdr.type_of_loader = KERNEL_LOADER_OTHER;
    params.hdr.boot_flag = KERNEL_BOOT_FLAG_MAGIC;
    params.hdr.header = KERNEL_HDR_MAGIC;
    params.hdr.cmd_line_ptr = CMDLINE_START.0 as u32;
    params.hdr.cmdline_size = cmdline.len() as u32 + 1;
    if let Some(initrd) = initramfs {
        params.hdr.ramdisk_image = initrd.addr.0 as u32;
        params.hdr.ramdisk_size = initrd.size as u32;
    }
    for (i, (addr, size)) in ram_map(mem).into_iter().enumerate() {
        if i >= params.e820_table.len() {
            break;
        }
        params.e820_table[i].addr = addr;
        params.e820_table[i].size = size;
        params.e820_table[i].r#type = E820_RAM;
        params.e820_entries = (i + 1) as u8;
    }
    let bp = BootParams::new(&params, ZERO_PAGE_START);
    LinuxBootConfigurator::write_bootparams(&bp, mem).map_err(BootError::Configurator)?;
    Ok(EntryPoint::Linux64 {
        entry: GuestAddress(loaded.kernel_load.0 + STARTUP_64_OFFSET),
        boot_params: ZERO_PAGE_START,
    })
}
