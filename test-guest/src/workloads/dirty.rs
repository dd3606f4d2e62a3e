//! `workload=dirty [mib=M] [pages=P] [hz=H]`: a guest that writes memory
//! at a known rate, for pre-copy (live migration, FT VMotion). At each
//! timer tick it writes the next P pages of an M MiB buffer, in a cycle;
//! before writing a page it checks the value it wrote there last (so a
//! copy of the guest that lost one of its writes says so). Prints
//! `dirty: pass=<p> ok` after each pass over the buffer, or
//! `dirty: pass=<p> mismatches=<m> first=<page> found=<hex> expected=<hex>`.
//! Runs until the VMM ends it.
//!
//! With `fill=F` (MiB), it first fills F MiB of RAM above its heap with
//! pseudo-random words, so that those pages are full and incompressible
//! (a pre-copy of them moves every byte), prints `dirty: filled mib=F`,
//! and then at each tick also reads P of those pages whole, in a cycle,
//! printing `dirty: fill pass=<k> ok` after each pass over them, or
//! `dirty: fill pass=<k> mismatches=<m> first=<page>`.

use alloc::vec;
use core::ptr::{read_volatile, write_volatile};

use test_guest::splitmix;
use thiserror::Error;

use super::{start_timer, ticks, WorkloadError};
use crate::{arch, heap, println, pvh};

/// Where the filled pages start: the first 2 MiB boundary past the heap.
const FILL_ALIGN: u64 = 2 << 20;

/// Words per page.
const WORDS: usize = 512;

/// One page of the buffer.
#[derive(Clone, Copy)]
#[repr(C, align(4096))]
struct Page([u64; WORDS]);

/// The value page `page` holds after pass `pass` wrote it.
fn value(pass: u64, page: u64, pages: u64) -> u64 {
    splitmix::mix((pass * pages + page).wrapping_add(splitmix::GAMMA))
}

/// A `fill=` the guest's RAM cannot hold.
#[derive(Debug, Error)]
pub enum FillError {
    /// The memory map could not be read.
    #[error("cannot read the memory map")]
    Memmap(#[source] pvh::PvhError),
    /// Not enough RAM above the heap.
    #[error("fill={mib} MiB does not fit: RAM above the heap is {base:#x}..{end:#x}")]
    TooBig {
        /// The MiB asked for.
        mib: u64,
        /// The first filled address.
        base: u64,
        /// The end of that RAM.
        end: u64,
    },
}

/// The filled region: `pages` pages from physical (= virtual) `base`.
pub struct Fill {
    /// First byte.
    base: u64,
    /// Pages filled.
    pages: u64,
}

impl Fill {
    /// The region of `mib` MiB above the heap (empty if `mib` is 0), after
    /// checking in the memory map that it is RAM.
    pub fn new(mib: u64, start_info: u64) -> Result<Fill, FillError> {
        let base = heap::end().next_multiple_of(FILL_ALIGN);
        if mib == 0 {
            return Ok(Fill { base, pages: 0 });
        }
        let end = pvh::ram_end(start_info, base).map_err(FillError::Memmap)?;
        if end - base < mib << 20 {
            return Err(FillError::TooBig { mib, base, end });
        }
        Ok(Fill {
            base,
            pages: (mib << 20) / 4096,
        })
    }

    /// The value of word `word` of filled page `page`.
    fn value(page: u64, word: u64) -> u64 {
        splitmix::mix((page * WORDS as u64 + word).wrapping_mul(splitmix::GAMMA))
    }

    /// The address of word `word` of filled page `page`.
    fn word(&self, page: u64, word: u64) -> *mut u64 {
        (self.base + page * 4096 + word * 8) as *mut u64
    }

    /// Writes every filled word.
    fn fill(&self) {
        for page in 0..self.pages {
            for word in 0..WORDS as u64 {
                // SAFETY: `new` checked in the memory map that the region
                // is RAM, above the image, heap and page tables (nothing
                // else uses it); the first 4 GiB is identity-mapped and
                // writable at CPL3 (boot.s), and `new` caps it below that.
                unsafe { write_volatile(self.word(page, word), Fill::value(page, word)) };
            }
        }
    }

    /// The first word of page `page` that does not hold its value, if any.
    fn check(&self, page: u64) -> Option<u64> {
        (0..WORDS as u64).find(|&word| {
            // SAFETY: as in `fill`: mapped RAM of this region alone.
            unsafe { read_volatile(self.word(page, word)) != Fill::value(page, word) }
        })
    }
}

/// Runs the workload (never returns unless the timer cannot start).
pub fn run(mib: u64, per_tick: u64, hz: u64, fill: Fill) -> Result<(), WorkloadError> {
    let n = (mib << 20) / 4096;
    let mut buf = vec![Page([0; WORDS]); n as usize];
    if fill.pages > 0 {
        fill.fill();
        println!("dirty: filled mib={}", (fill.pages * 4096) >> 20);
    }
    let (mut fill_pass, mut fill_at, mut fill_bad) = (0u64, 0u64, None);
    let mut fill_mismatches = 0u64;
    arch::disable_interrupts();
    start_timer(hz)?;
    let (mut pass, mut at) = (0u64, 0u64);
    let mut mismatches = 0u64;
    let mut first = None;
    let mut seen = ticks();
    loop {
        // Interrupts are off between the check and the sleep.
        while ticks() == seen {
            arch::wait_for_interrupt();
            arch::disable_interrupts();
        }
        seen = ticks();
        for _ in 0..per_tick.min(fill.pages) {
            if fill.check(fill_at).is_some() {
                fill_mismatches += 1;
                fill_bad.get_or_insert(fill_at);
            }
            fill_at += 1;
            if fill_at == fill.pages {
                match fill_bad.take() {
                    None => println!("dirty: fill pass={fill_pass} ok"),
                    Some(p) => println!(
                        "dirty: fill pass={fill_pass} mismatches={fill_mismatches} first={p}"
                    ),
                }
                fill_mismatches = 0;
                fill_at = 0;
                fill_pass += 1;
            }
        }
        for _ in 0..per_tick {
            let page = &mut buf[at as usize].0;
            let expected = if pass == 0 { 0 } else { value(pass - 1, at, n) };
            // The first and last words: a page copied whole or not at all.
            for found in [page[0], page[WORDS - 1]] {
                if found != expected {
                    mismatches += 1;
                    first.get_or_insert((at, found, expected));
                }
            }
            let v = value(pass, at, n);
            page[0] = v;
            page[WORDS - 1] = v;
            at += 1;
            if at == n {
                match first.take() {
                    None => println!("dirty: pass={pass} ok"),
                    Some((p, found, expected)) => println!(
                        "dirty: pass={pass} mismatches={mismatches} first={p} found={found:016x} expected={expected:016x}"
                    ),
                }
                mismatches = 0;
                at = 0;
                pass += 1;
            }
        }
    }
}
