//! `workload=dirty [mib=M] [pages=P] [hz=H]`: a guest that writes memory
//! at a known rate, for pre-copy (live migration, FT VMotion). At each
//! timer tick it writes the next P pages of an M MiB buffer, in a cycle;
//! before writing a page it checks the value it wrote there last (so a
//! copy of the guest that lost one of its writes says so). Prints
//! `dirty: pass=<p> ok` after each pass over the buffer, or
//! `dirty: pass=<p> mismatches=<m> first=<page> found=<hex> expected=<hex>`.
//! Runs until the VMM ends it.

use alloc::vec;

use test_guest::splitmix;

use super::{start_timer, ticks, WorkloadError};
use crate::{arch, println};

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

/// Runs the workload (never returns unless the timer cannot start).
pub fn run(mib: u64, per_tick: u64, hz: u64) -> Result<(), WorkloadError> {
    let n = (mib << 20) / 4096;
    let mut buf = vec![Page([0; WORDS]); n as usize];
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
