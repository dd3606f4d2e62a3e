// Copyright 2026 The ft-cloud-hypervisor authors.
// SPDX-License-Identifier: Apache-2.0

//! The guest physical address map on x86-64, as Cloud Hypervisor lays it out
//! for direct kernel boot.

use vm_memory::GuestAddress;

/// Boot GDT (bzImage 64-bit entry).
pub const BOOT_GDT_START: GuestAddress = GuestAddress(0x500);
/// Boot IDT (empty).
pub const BOOT_IDT_START: GuestAddress = GuestAddress(0x520);
/// `hvm_start_info` for PVH.
pub const PVH_INFO_START: GuestAddress = GuestAddress(0x6000);
/// PVH module list (initramfs).
pub const MODLIST_START: GuestAddress = GuestAddress(0x6040);
/// PVH memory map.
pub const MEMMAP_START: GuestAddress = GuestAddress(0x7000);
/// Linux `boot_params` (the zero page) for bzImage.
pub const ZERO_PAGE_START: GuestAddress = GuestAddress(0x7000);
/// Initial stack pointer for the 64-bit entry.
pub const BOOT_STACK_POINTER: GuestAddress = GuestAddress(0x8ff0);
/// Identity page tables for the 64-bit entry.
pub const PML4_START: GuestAddress = GuestAddress(0x9000);
/// Page directory pointer table.
pub const PDPTE_START: GuestAddress = GuestAddress(0xa000);
/// Page directories (four, mapping 4 GiB with 2 MiB pages).
pub const PDE_START: GuestAddress = GuestAddress(0xb000);
/// Kernel command line.
pub const CMDLINE_START: GuestAddress = GuestAddress(0x20000);
/// Room for the command line.
pub const CMDLINE_MAX_SIZE: usize = 0x10000;
/// The ACPI RSDP, in the BIOS area Linux scans (0xe0000..0xfffff).
pub const RSDP_START: GuestAddress = GuestAddress(0xe_0000);
/// End (exclusive) of the room for the ACPI tables after the RSDP.
pub const ACPI_END: GuestAddress = GuestAddress(0x10_0000);
/// Start of the extended BIOS data area: RAM below it is usable.
pub const EBDA_START: u64 = 0x9fc00;
/// Start of high RAM (1 MiB), where kernels load.
pub const HIGH_RAM_START: GuestAddress = GuestAddress(0x10_0000);
/// Start of the 32-bit device hole: no RAM between here and 4 GiB.
pub const MEM_32BIT_RESERVED_START: u64 = 0xc000_0000;
/// Start of the 32-bit PCI device MMIO window (BARs), as Cloud Hypervisor.
pub const MEM_32BIT_DEVICES_START: u64 = MEM_32BIT_RESERVED_START;
/// Size of the 32-bit PCI device MMIO window.
pub const MEM_32BIT_DEVICES_SIZE: u64 = 640 << 20;
/// PCI MMCONFIG (ECAM) area: right after the device window.
pub const PCI_MMCONFIG_START: u64 = MEM_32BIT_DEVICES_START + MEM_32BIT_DEVICES_SIZE;
/// Size of the ECAM area (256 buses).
pub const PCI_MMCONFIG_SIZE: u64 = 256 << 20;
/// End of the 32-bit device hole.
pub const RAM_64BIT_START: u64 = 0x1_0000_0000;
