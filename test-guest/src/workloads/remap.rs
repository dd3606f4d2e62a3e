//! `workload=remap rounds=N [iters=I] [flush=invlpg|cr3] [hz=H]`: changes
//! page-table entries at run time, as a Linux process's page tables change
//! on fork, copy-on-write and exec, while the timer runs.
//!
//! A 4 KiB page table of its own maps `SLOTS` virtual pages of a window at
//! 511 GiB onto `PAGES` physical pages. Each round points one slot at
//! another page, flushes that translation (`invlpg`, or a CR3 reload,
//! through the kernel), then runs I read-modify-write steps of a SplitMix64
//! chain through the slot, each also reading the same word through the
//! identity map of the page the entry now names. With no exit in a round,
//! a recording's timer interrupts land inside rounds, where the recorder
//! takes micro-checkpoints that carry the changed page table: a replay
//! that applies them must not keep using the old translation.
//!
//! Output: `remap: round=<r> x=<hex>` at every 10th timer tick, then
//! `remap: mismatches=<m> result=<x> pages=<digest>` (m: reads through the
//! window that differed from the identity map; 0 on a correct machine).

use alloc::alloc::{alloc_zeroed, Layout};
use core::ptr::{addr_of_mut, read_volatile, write_volatile};

use test_guest::config::FlushKind;
use test_guest::splitmix;

use super::{start_timer, ticks, WorkloadError};
use crate::{arch, println};

/// Virtual pages of the window.
const SLOTS: u64 = 4;
/// Physical pages they are mapped onto.
const PAGES: u64 = 16;
/// The window's virtual address: PDPT entry 511 (unused by boot.s).
const WINDOW: u64 = 511 << 30;
const PAGE: u64 = 4096;
/// Present, writable, user.
const PTE_FLAGS: u64 = 0x7;

unsafe extern "C" {
    /// The page directory pointer table (boot.s).
    static mut pdpt: [u64; 512];
}

/// Runs the workload.
pub fn run(rounds: u64, iters: u64, flush: FlushKind, hz: u64) -> Result<(), WorkloadError> {
    // One page directory, one page table, then the data pages; the heap
    // is identity-mapped, so these addresses are physical ones too.
    let tables = 2 + PAGES as usize;
    let layout =
        Layout::from_size_align(tables * PAGE as usize, PAGE as usize).expect("a valid layout");
    // SAFETY: a non-zero size; the memory is never freed (the workload
    // ends in power-off), so the page tables stay valid while mapped.
    let base = unsafe { alloc_zeroed(layout) } as u64;
    if base == 0 {
        println!("test-guest: error: remap: out of memory");
        return Ok(());
    }
    let pd = base as *mut u64;
    let pt = (base + PAGE) as *mut u64;
    let data = |page: u64| base + (2 + page) * PAGE;
    for page in 0..PAGES {
        for i in 0..512 {
            let word = (data(page) as *mut u64).wrapping_add(i);
            // SAFETY: word i < 512 of data page `page`, inside the block.
            unsafe { write_volatile(word, page << 32 | i as u64) };
        }
    }
    let mut mapped = [0u64; SLOTS as usize];
    for (slot, page) in mapped.iter_mut().enumerate() {
        *page = slot as u64;
        // SAFETY: entry `slot` < 512 of the page table in the block.
        unsafe { write_volatile(pt.wrapping_add(slot), data(*page) | PTE_FLAGS) };
    }
    // SAFETY: entry 0 of the workload's page directory.
    unsafe { write_volatile(pd, pt as u64 | PTE_FLAGS) };
    // SAFETY: pdpt is boot.s's static; entry 511 is unused there, and only
    // this single-threaded user code writes it.
    let entry = unsafe { addr_of_mut!(pdpt[511]) };
    // SAFETY: a valid entry of pdpt (above). Adding a mapping needs no
    // TLB flush.
    unsafe { write_volatile(entry, pd as u64 | PTE_FLAGS) };

    let start = ticks();
    start_timer(hz)?;
    arch::enable_interrupts();
    let mut seen = 0;
    let mut x = 0u64;
    let mut mismatches = 0u64;
    for round in 0..rounds {
        let slot = round % SLOTS;
        let old = mapped[slot as usize];
        let new = (old + 1 + round % (PAGES - 1)) % PAGES;
        mapped[slot as usize] = new;
        let virt = WINDOW + slot * PAGE;
        // SAFETY: entry `slot` of the workload's page table; the flush
        // below makes the CPU use the new entry.
        unsafe { write_volatile(pt.wrapping_add(slot as usize), data(new) | PTE_FLAGS) };
        match flush {
            FlushKind::Invlpg => arch::invalidate_page(virt),
            FlushKind::Cr3 => arch::reload_cr3(),
        }
        let through = virt as *mut u64;
        let direct = data(new) as *const u64;
        for n in 0..iters {
            let i = (x % 512) as usize;
            let (via_window, via_identity) = (through.wrapping_add(i), direct.wrapping_add(i));
            // SAFETY: word i < 512 of the mapped window page.
            let seen_through = unsafe { read_volatile(via_window) };
            // SAFETY: the same word of the data page it maps.
            let seen_direct = unsafe { read_volatile(via_identity) };
            if seen_through != seen_direct {
                mismatches += 1;
            }
            x = splitmix::step(x ^ seen_through.rotate_left(1) ^ n);
            // SAFETY: as above.
            unsafe { write_volatile(via_window, x) };
        }
        let tick = ticks() - start;
        if tick / 10 != seen / 10 {
            report(round, x);
        }
        seen = tick;
    }
    let mut digest = 0u64;
    for page in 0..PAGES {
        for i in 0..512 {
            let word = (data(page) as *const u64).wrapping_add(i);
            // SAFETY: word i < 512 of data page `page`.
            digest = splitmix::step(digest ^ unsafe { read_volatile(word) });
        }
    }
    println!("remap: mismatches={mismatches} result={x:016x} pages={digest:016x}");
    Ok(())
}

/// Out of line, to keep the loop tight.
#[inline(never)]
#[cold]
fn report(round: u64, x: u64) {
    println!("remap: round={round} x={x:016x}");
}
