#!/usr/bin/env python3
# Copyright 2026 The ft-cloud-hypervisor authors.
# SPDX-License-Identifier: Apache-2.0
"""Does KVM keep using a guest translation after the VMM rewrites the page
table entry behind its back (from the host, as applying a replay checkpoint
does)? And which userspace operation makes it drop that translation?

A guest at CPL3 loops: `mov rax, [V]; out 0x80, al`. The VMM maps V to page
A (which holds 0xAA..), runs to the exit, then rewrites V's page-table entry
in guest RAM from the host so that V maps page B (0xBB..), applies one
mechanism, runs to the next exit and looks at what the guest read:
0xAA.. = stale translation used, 0xBB.. = the change took effect.
Each mechanism runs on a fresh VM; times are per call of the mechanism's
ioctls, measured from Python (a few microseconds of that are Python).

usage: scripts/probes/stale_translation.py [repeats]   (root, /dev/kvm)
"""
import ctypes
import fcntl
import mmap
import os
import struct
import sys
import time

KVM_CREATE_VM = 0xAE01
KVM_GET_VCPU_MMAP_SIZE = 0xAE04
KVM_CREATE_VCPU = 0xAE41
KVM_RUN = 0xAE80
KVM_SET_USER_MEMORY_REGION = 0x4020AE46
KVM_GET_SREGS = 0x8138AE83
KVM_SET_SREGS = 0x4138AE84
KVM_SET_REGS = 0x4090AE82
KVM_GET_REGS = 0x8090AE81
KVM_GET_SUPPORTED_CPUID = 0xC008AE05
KVM_SET_CPUID2 = 0x4008AE90
KVM_CHECK_EXTENSION = 0xAE03
KVM_SET_NR_MMU_PAGES = 0xAE44
KVM_CAP_DISABLE_QUIRKS2 = 213
KVM_X86_QUIRK_SLOT_ZAP_ALL = 1 << 7
KVM_MEM_LOG_DIRTY_PAGES = 1
KVM_EXIT_IO = 2

MEM = 0x400000          # 4 MiB of guest RAM
PML4, PDPT, PD, PT = 0x1000, 0x2000, 0x3000, 0x8000
PML4_OTHER = 0x9000     # a second top-level table (same lower levels)
GDT, TSS, IDT = 0x4000, 0x5000, 0x6000
CODE = 0x100000
V = 0x180000            # the virtual page the guest reads
PAGE_A, PAGE_B = 0x181000, 0x182000
SCRATCH_GPA = 1 << 40   # a guest-physical address nowhere near RAM
SCRATCH_SLOT = 500

kvm = os.open("/dev/kvm", os.O_RDWR)
scratch = mmap.mmap(-1, 0x1000, mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
scratch_addr = ctypes.addressof(ctypes.c_char.from_buffer(scratch))


def segdesc(typ, dpl, long_mode):
    access = 0x80 | (dpl << 5) | 0x10 | typ
    flags = (0x2 if long_mode else 0x4) | 0x8
    return struct.pack("<HHBBBB", 0xFFFF, 0, 0, access, (flags << 4) | 0xF, 0)


class Guest:
    """A fresh VM with one vCPU at CPL3, 4 KiB pages below 2 MiB."""

    def __init__(self, split_slots):
        self.vm = fcntl.ioctl(kvm, KVM_CREATE_VM, 0)
        self.mem = mmap.mmap(-1, MEM, mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
        self.addr = ctypes.addressof(ctypes.c_char.from_buffer(self.mem))
        # Two slots (0-2 MiB: page tables, code, the pages; 2-4 MiB: stack)
        # or one.
        if split_slots:
            self.slots = [(0, 0, 0x200000), (1, 0x200000, 0x200000)]
        else:
            self.slots = [(0, 0, MEM)]
        for s in self.slots:
            self.set_slot(*s)
        m = self.mem
        struct.pack_into("Q", m, PML4, PDPT | 7)
        struct.pack_into("Q", m, PML4_OTHER, PDPT | 7)
        struct.pack_into("Q", m, PDPT, PD | 7)
        struct.pack_into("Q", m, PD, PT | 7)
        struct.pack_into("Q", m, PD + 8, 0x200000 | 0x87)
        for i in range(512):
            struct.pack_into("Q", m, PT + 8 * i, (i << 12) | 7)
        self.map_v(PAGE_A)
        m[PAGE_A:PAGE_A + 8] = b"\xaa" * 8
        m[PAGE_B:PAGE_B + 8] = b"\xbb" * 8
        gdt = (b"\0" * 8 + segdesc(0xB, 0, 1) + segdesc(0x3, 0, 0)
               + segdesc(0x3, 3, 0) + segdesc(0xB, 3, 1))
        gdt += struct.pack("<HHBBBBIII", 0x67, TSS & 0xFFFF, (TSS >> 16) & 0xFF,
                           0x89, 0, 0, 0, 0, 0)[:16]
        m[GDT:GDT + len(gdt)] = gdt
        struct.pack_into("<Q", m, TSS + 4, 0x90000)
        # l: mov rax, [V] ; out 0x80, al ; jmp l
        code = bytes([0x48, 0x8B, 0x04, 0x25]) + struct.pack("<I", V)
        code += bytes([0xE6, 0x80, 0xEB, 0xF4])
        m[CODE:CODE + len(code)] = code
        self.vcpu = fcntl.ioctl(self.vm, KVM_CREATE_VCPU, 0)
        buf = bytearray(8 + 100 * 40)
        struct.pack_into("I", buf, 0, 100)
        fcntl.ioctl(kvm, KVM_GET_SUPPORTED_CPUID, buf, True)
        fcntl.ioctl(self.vcpu, KVM_SET_CPUID2, buf, True)
        size = fcntl.ioctl(kvm, KVM_GET_VCPU_MMAP_SIZE, 0)
        self.run_area = mmap.mmap(self.vcpu, size, mmap.MAP_SHARED,
                                  mmap.PROT_READ | mmap.PROT_WRITE)
        sregs = bytearray(312)
        fcntl.ioctl(self.vcpu, KVM_GET_SREGS, sregs, True)

        def seg(off, base, limit, sel, typ, dpl, lng, db, s=1, g=1):
            struct.pack_into("QIHBBBBBBBBBB", sregs, off, base, limit, sel, typ,
                             1, dpl, db, s, lng, g, 0, 0, 0)
        seg(0, 0, 0xFFFFFFFF, 0x23, 11, 3, 1, 0)
        for i in (1, 2, 3, 4, 5):
            seg(i * 24, 0, 0xFFFFFFFF, 0x1B, 3, 3, 0, 1)
        seg(6 * 24, TSS, 0x67, 0x28, 11, 0, 0, 0, s=0, g=0)
        struct.pack_into("QH", sregs, 8 * 24, GDT, len(gdt) - 1)
        struct.pack_into("QH", sregs, 8 * 24 + 16, IDT, 0xFFF)
        struct.pack_into("Q", sregs, 224, 0x80050033)   # cr0: PG WP PE ...
        struct.pack_into("Q", sregs, 240, PML4)         # cr3
        struct.pack_into("Q", sregs, 248, 0xA0)         # cr4: PAE PGE
        struct.pack_into("Q", sregs, 264, 0x500)        # efer: LME LMA
        fcntl.ioctl(self.vcpu, KVM_SET_SREGS, bytes(sregs))
        regs = [0] * 18
        regs[16] = CODE
        regs[17] = 0x3202   # IF, IOPL 3: port I/O from CPL3
        regs[6] = 0x3FF000
        fcntl.ioctl(self.vcpu, KVM_SET_REGS, struct.pack("18Q", *regs))

    def set_slot(self, slot, gpa, size, flags=0, addr=None):
        host = self.addr + gpa if addr is None else addr
        fcntl.ioctl(self.vm, KVM_SET_USER_MEMORY_REGION,
                    struct.pack("IIQQQ", slot, flags, gpa, size, host if size else 0))

    def map_v(self, page):
        struct.pack_into("Q", self.mem, PT + 8 * (V >> 12), page | 7)

    def read_through_v(self):
        """Runs to the guest's next `out` and returns the rax it read."""
        fcntl.ioctl(self.vcpu, KVM_RUN, 0)
        reason = struct.unpack_from("I", self.run_area, 8)[0]
        if reason != KVM_EXIT_IO:
            raise SystemExit(f"unexpected exit reason {reason}")
        regs = bytearray(144)
        fcntl.ioctl(self.vcpu, KVM_GET_REGS, regs, True)
        return struct.unpack_from("Q", regs, 0)[0]

    def sregs(self):
        b = bytearray(312)
        fcntl.ioctl(self.vcpu, KVM_GET_SREGS, b, True)
        return b

    def close(self):
        self.run_area.close()
        os.close(self.vcpu)
        os.close(self.vm)
        self.mem.close()


# The mechanisms: each is called after the host rewrote the entry.
def nothing(g):
    pass


def sregs_same(g):
    g_sregs = g.sregs()
    fcntl.ioctl(g.vcpu, KVM_SET_SREGS, bytes(g_sregs))


def sregs_other_cr3(g):
    b = g.sregs()
    struct.pack_into("Q", b, 240, PML4_OTHER)
    fcntl.ioctl(g.vcpu, KVM_SET_SREGS, bytes(b))
    struct.pack_into("Q", b, 240, PML4)
    fcntl.ioctl(g.vcpu, KVM_SET_SREGS, bytes(b))


def sregs_toggle_pge(g):
    b = g.sregs()
    cr4 = struct.unpack_from("Q", b, 248)[0]
    struct.pack_into("Q", b, 248, cr4 ^ 0x80)
    fcntl.ioctl(g.vcpu, KVM_SET_SREGS, bytes(b))
    struct.pack_into("Q", b, 248, cr4)
    fcntl.ioctl(g.vcpu, KVM_SET_SREGS, bytes(b))


def toggle_dirty_log(g):
    for s in g.slots:
        g.set_slot(*s, flags=KVM_MEM_LOG_DIRTY_PAGES)
    for s in g.slots:
        g.set_slot(*s, flags=0)


def readd_all_slots(g):
    for slot, gpa, _ in g.slots:
        g.set_slot(slot, gpa, 0)
    for s in g.slots:
        g.set_slot(*s)


def readd_other_slot(g):
    # Only the slot that does NOT hold the page table, the code or the pages.
    slot, gpa, size = g.slots[-1]
    g.set_slot(slot, gpa, 0)
    g.set_slot(slot, gpa, size)


def scratch_slot(g):
    # Add, then delete, a one-page slot the guest never uses.
    g.set_slot(SCRATCH_SLOT, SCRATCH_GPA, 0x1000, addr=scratch_addr)
    g.set_slot(SCRATCH_SLOT, SCRATCH_GPA, 0)


def shrink_mmu_pages(g):
    # Shrink KVM's shadow-page budget to its minimum (64), then raise it
    # (there is no ioctl to read it back): KVM zaps the oldest shadow pages
    # above the budget, never all of them.
    fcntl.ioctl(g.vm, KVM_SET_NR_MMU_PAGES, 64)
    fcntl.ioctl(g.vm, KVM_SET_NR_MMU_PAGES, 1 << 16)


MECHANISMS = [
    ("nothing", nothing, False),
    ("KVM_SET_SREGS, same values", sregs_same, False),
    ("KVM_SET_SREGS, other CR3 then back", sregs_other_cr3, False),
    ("KVM_SET_SREGS, CR4.PGE toggled and back", sregs_toggle_pge, False),
    ("dirty-log flag on and off (flags only)", toggle_dirty_log, False),
    ("KVM_SET_NR_MMU_PAGES to 64 and back", shrink_mmu_pages, False),
    ("delete + re-add every slot", readd_all_slots, False),
    ("delete + re-add the other of two slots", readd_other_slot, True),
    ("add + delete a 1-page scratch slot", scratch_slot, False),
]


def trial(mechanism, split):
    g = Guest(split)
    try:
        first = g.read_through_v()
        if first != 0xAAAAAAAAAAAAAAAA:
            raise SystemExit(f"setup: first read {first:#x}")
        # Warm the translation: several more reads through it.
        for _ in range(3):
            g.read_through_v()
        g.map_v(PAGE_B)           # behind KVM's back, as a checkpoint does
        t = time.perf_counter()
        mechanism(g)
        dt = time.perf_counter() - t
        after = g.read_through_v()
        return after, dt
    finally:
        g.close()


def main():
    repeats = int(sys.argv[1]) if len(sys.argv) > 1 else 20
    quirks = fcntl.ioctl(kvm, KVM_CHECK_EXTENSION, KVM_CAP_DISABLE_QUIRKS2)
    print(f"host: {os.uname().release}; KVM_CAP_DISABLE_QUIRKS2 = {quirks:#x}"
          f" (SLOT_ZAP_ALL known: {bool(quirks & KVM_X86_QUIRK_SLOT_ZAP_ALL)},"
          " left enabled)")
    print("guest at CPL3 reads V; the host remaps V from page A (0xaa..) to B (0xbb..)")
    print(f"{'mechanism':44} {'stale':>7} {'fresh':>7}  median time")
    for name, fn, split in MECHANISMS:
        stale = fresh = 0
        times = []
        for _ in range(repeats):
            after, dt = trial(fn, split)
            times.append(dt)
            if after == 0xAAAAAAAAAAAAAAAA:
                stale += 1
            elif after == 0xBBBBBBBBBBBBBBBB:
                fresh += 1
            else:
                raise SystemExit(f"{name}: read {after:#x}")
        times.sort()
        verdict = "STALE" if stale else "ok"
        print(f"{name:44} {stale:>7} {fresh:>7}  {times[len(times) // 2] * 1e6:8.1f} us  {verdict}")


if __name__ == "__main__":
    main()
