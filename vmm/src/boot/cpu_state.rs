// Copyright 2026 The ft-cloud-hypervisor authors.
// SPDX-License-Identifier: Apache-2.0

//! The vCPU state each boot protocol enters the kernel with.

use hypervisor::{kvm_fpu, kvm_regs, kvm_segment, kvm_sregs};
use vm_memory::{Bytes, GuestAddress};

use super::{BootError, EntryPoint};
use crate::layout::{
    BOOT_GDT_START, BOOT_IDT_START, BOOT_STACK_POINTER, PDE_START, PDPTE_START, PML4_START,
};
use crate::memory::GuestMemoryMmapT;

const X86_CR0_PE: u64 = 1 << 0;
const X86_CR0_ET: u64 = 1 << 4;
const X86_CR0_PG: u64 = 1 << 31;
const X86_CR4_PAE: u64 = 1 << 5;
const EFER_LME: u64 = 1 << 8;
const EFER_LMA: u64 = 1 << 10;

/// A GDT descriptor from access/flags bits, base and limit.
fn gdt_entry(flags: u16, base: u32, limit: u32) -> u64 {
    let base = u64::from(base);
    let limit = u64::from(limit);
    let flags = u64::from(flags);
    ((base & 0xff00_0000) << 32)
        | ((flags & 0xf0ff) << 40)
        | ((limit & 0x000f_0000) << 32)
        | ((base & 0x00ff_ffff) << 16)
        | (limit & 0x0000_ffff)
}

/// The hidden part of a segment register loaded from descriptor `entry` at GDT index `index`.
fn segment_from_gdt(entry: u64, index: u16) -> kvm_segment {
    let g = ((entry >> 55) & 1) as u8;
    let raw_limit = (((entry >> 32) & 0x000f_0000) | (entry & 0xffff)) as u32;
    kvm_segment {
        base: ((entry >> 16) & 0x00ff_ffff) | ((entry >> 32) & 0xff00_0000),
        limit: if g == 1 {
            (raw_limit << 12) | 0xfff
        } else {
            raw_limit
        },
        selector: index * 8,
        type_: ((entry >> 40) & 0xf) as u8,
        present: ((entry >> 47) & 1) as u8,
        dpl: ((entry >> 45) & 3) as u8,
        db: ((entry >> 54) & 1) as u8,
        s: ((entry >> 44) & 1) as u8,
        l: ((entry >> 53) & 1) as u8,
        g,
        avl: ((entry >> 52) & 1) as u8,
        unusable: u8::from(((entry >> 47) & 1) == 0),
        padding: 0,
    }
}

/// The boot GDT for an entry point: null, code, data, TSS.
fn boot_gdt(entry: &EntryPoint) -> [u64; 4] {
    let code = match entry {
        EntryPoint::Pvh { .. } => gdt_entry(0xc09b, 0, 0xfffff), // 32-bit code
        EntryPoint::Linux64 { .. } => gdt_entry(0xa09b, 0, 0xfffff), // 64-bit code
    };
    [
        0,
        code,
        gdt_entry(0xc093, 0, 0xfffff), // data
        gdt_entry(0x008b, 0, 0x67),    // TSS (busy)
    ]
}

fn write_mem<T: vm_memory::ByteValued>(
    mem: &GuestMemoryMmapT,
    val: T,
    addr: GuestAddress,
    what: &'static str,
) -> Result<(), BootError> {
    mem.write_obj(val, addr)
        .map_err(|source| BootError::GuestMemory { what, source })
}

/// Identity-maps the first 4 GiB with 2 MiB pages.
fn write_page_tables(mem: &GuestMemoryMmapT) -> Result<(), BootError> {
    write_mem(mem, PDPTE_START.0 | 0x3, PML4_START, "page tables")?;
    for i in 0..4u64 {
        let pd = PDE_START.0 + i * 0x1000;
        write_mem(
            mem,
            pd | 0x3,
            GuestAddress(PDPTE_START.0 + i * 8),
            "page tables",
        )?;
        for j in 0..512u64 {
            let addr = ((i << 30) | (j << 21)) | 0x83;
            write_mem(mem, addr, GuestAddress(pd + j * 8), "page tables")?;
        }
    }
    Ok(())
}

/// Special registers for `entry`, starting from the vCPU's reset values
/// `base`; writes the boot GDT (and for 64-bit entry the page tables).
pub fn initial_sregs(
    mem: &GuestMemoryMmapT,
    entry: &EntryPoint,
    base: kvm_sregs,
) -> Result<kvm_sregs, BootError> {
    let gdt = boot_gdt(entry);
    for (i, d) in gdt.iter().enumerate() {
        write_mem(
            mem,
            *d,
            GuestAddress(BOOT_GDT_START.0 + 8 * i as u64),
            "the boot GDT",
        )?;
    }
    write_mem(mem, 0u64, BOOT_IDT_START, "the boot IDT")?;
    let mut s = base;
    s.gdt.base = BOOT_GDT_START.0;
    s.gdt.limit = (size_of_val(&gdt) - 1) as u16;
    s.idt.base = BOOT_IDT_START.0;
    s.idt.limit = 7;
    let code = segment_from_gdt(gdt[1], 1);
    let data = segment_from_gdt(gdt[2], 2);
    s.cs = code;
    s.ds = data;
    s.es = data;
    s.fs = data;
    s.gs = data;
    s.ss = data;
    s.tr = segment_from_gdt(gdt[3], 3);
    match entry {
        EntryPoint::Pvh { .. } => {
            s.cr0 = X86_CR0_PE | X86_CR0_ET;
            s.cr4 = 0;
            s.efer = 0;
        }
        EntryPoint::Linux64 { .. } => {
            write_page_tables(mem)?;
            s.cr3 = PML4_START.0;
            s.cr4 = X86_CR4_PAE;
            s.cr0 = X86_CR0_PE | X86_CR0_ET | X86_CR0_PG;
            s.efer = EFER_LME | EFER_LMA;
        }
    }
    Ok(s)
}

/// General registers for `entry`.
pub fn initial_regs(entry: &EntryPoint) -> kvm_regs {
    match *entry {
        EntryPoint::Pvh { entry, start_info } => kvm_regs {
            rflags: 0x2,
            rip: entry.0,
            rbx: start_info.0,
            ..Default::default()
        },
        EntryPoint::Linux64 { entry, boot_params } => kvm_regs {
            rflags: 0x2,
            rip: entry.0,
            rsp: BOOT_STACK_POINTER.0,
            rbp: BOOT_STACK_POINTER.0,
            rsi: boot_params.0,
            ..Default::default()
        },
    }
}

/// FPU at its reset state (x87 control word 0x37f, MXCSR 0x1f80).
pub fn initial_fpu() -> kvm_fpu {
    kvm_fpu {
        fcw: 0x37f,
        mxcsr: 0x1f80,
        ..Default::default()
    }
}

/// MSRs set at boot: fast strings on, and the xAPIC enabled at its default base
/// as the bootstrap processor.
pub fn initial_msrs() -> Vec<(u32, u64)> {
    const MSR_IA32_MISC_ENABLE: u32 = 0x1a0;
    const MSR_IA32_APICBASE: u32 = 0x1b;
    vec![
        (MSR_IA32_MISC_ENABLE, 1),
        (MSR_IA32_APICBASE, 0xfee0_0000 | (1 << 11) | (1 << 8)),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use vm_memory::GuestMemoryMmap;

    #[test]
    fn gdt_round_trip() {
        let e = gdt_entry(0xa09b, 0, 0xfffff);
        let s = segment_from_gdt(e, 1);
        assert_eq!(s.type_, 0xb);
        assert_eq!(s.l, 1);
        assert_eq!(s.db, 0);
        assert_eq!(s.g, 1);
        assert_eq!(s.limit, 0xffff_ffff);
        assert_eq!(s.selector, 8);
        assert_eq!(s.present, 1);
        let t = segment_from_gdt(gdt_entry(0x008b, 0, 0x67), 3);
        assert_eq!((t.type_, t.s, t.limit, t.selector), (0xb, 0, 0x67, 0x18));
    }

    #[test]
    fn long_mode_state_and_page_tables() {
        let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 16 << 20)]).unwrap();
        let entry = EntryPoint::Linux64 {
            entry: GuestAddress(0x100200),
            boot_params: GuestAddress(0x7000),
        };
        let s = initial_sregs(&mem, &entry, kvm_sregs::default()).unwrap();
        assert_eq!(s.efer & EFER_LMA, EFER_LMA);
        assert_eq!(s.cs.l, 1);
        let pde: u64 = mem.read_obj(GuestAddress(PDE_START.0 + 8)).unwrap();
        assert_eq!(pde, (1 << 21) | 0x83);
        let r = initial_regs(&entry);
        assert_eq!((r.rip, r.rsi), (0x100200, 0x7000));
    }

    #[test]
    fn pvh_state() {
        let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 16 << 20)]).unwrap();
        let entry = EntryPoint::Pvh {
            entry: GuestAddress(0x100000),
            start_info: GuestAddress(0x6000),
        };
        let s = initial_sregs(&mem, &entry, kvm_sregs::default()).unwrap();
        assert_eq!(s.cr0 & X86_CR0_PG, 0);
        assert_eq!(s.cs.db, 1);
        assert_eq!(s.cs.l, 0);
        let r = initial_regs(&entry);
        assert_eq!((r.rip, r.rbx), (0x100000, 0x6000));
    }
}
