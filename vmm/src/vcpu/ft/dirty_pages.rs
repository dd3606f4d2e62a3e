// Copyright 2026 The ft-cloud-hypervisor authors.
// SPDX-License-Identifier: Apache-2.0

//! A recording's micro-checkpoint pages: the pages the guest wrote since
//! the previous checkpoint, read from the dirty log, and the *hot pages*
//! the dirty log is told to leave writable.
//!
//! # Why hot pages
//! Reading the dirty log normally write-protects every page it reports,
//! so the guest's next write to each of them traps into KVM. On the
//! project's hosts (nested, shadow paging) such a trap costs about 40 us
//! (`scripts/probes/dirty_refault.c`: 42 us per page against 1.8 us for
//! the write itself), and a guest writes most of the same pages again in
//! the next stretch: its stack, its buffers, the variables of the loop it
//! is in. A disk workload paid it for ~67 pages at each of ~150
//! checkpoints a second, which was most of its record/plain ratio of 2.
//!
//! When the hypervisor keeps pages (`hypervisor::Vm::keeps_dirty_pages`,
//! KVM's manual re-protection), a page reported again within [`WINDOW`]
//! checkpoints becomes hot: the log leaves it writable and keeps reporting it, so
//! every checkpoint carries it, whether or not the guest wrote it since.
//! That is what makes it correct: replay reaches the checkpoint having run
//! the stretch only up to its last exit, so a page the stretch wrote after
//! that exit must be in the checkpoint, and without a write fault nothing
//! tells which hot pages were written. Sending a page the guest did not
//! write costs a copy and the compressor's time for a repeat it finds in
//! its window, a few microseconds; replay writes only pages that differ.
//!
//! A hot page whose contents are the same at [`COOL_AFTER`] checkpoints in
//! a row is tracked again (the guest stopped writing it, or writes the
//! same bytes); at most [`MAX_HOT`] pages are hot. Which pages are hot is
//! the recording's business alone: the log's checkpoints list pages with
//! their contents as before, and replay needs nothing new.

use std::collections::HashMap;

use hypervisor::Vm;
use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryRegion};

use super::{FtError, PAGE_SIZE};
use crate::memory::GuestMemoryMmapT;

/// Most pages kept writable at once (2 MiB of pages copied per
/// checkpoint at worst).
pub const MAX_HOT: usize = 512;

/// A page reported again within this many checkpoints becomes hot (a
/// buffer the guest refills every few checkpoints, not only every one).
pub const WINDOW: u64 = 8;

/// A hot page is tracked again after this many checkpoints in a row found
/// it with the same contents.
pub const COOL_AFTER: u8 = 4;

/// A page kept writable.
#[derive(Debug, Clone, Copy)]
struct Hot {
    /// Hash of its contents at the last checkpoint.
    hash: u64,
    /// Checkpoints in a row that found the same contents.
    unchanged: u8,
}

/// The hot-page policy: which reported pages stay writable.
#[derive(Debug, Default)]
pub struct HotPages {
    /// Checkpoints read so far (the current one's number).
    read: u64,
    /// Pages reported at one of the last [`WINDOW`] reads and not hot: the
    /// read that last reported each.
    recent: HashMap<u64, u64>,
    /// The pages kept writable, by guest-physical address.
    hot: HashMap<u64, Hot>,
    /// Most pages kept at once.
    most: usize,
    /// Reported pages that were kept at the previous read.
    carried: u64,
}

impl HotPages {
    /// Pages kept writable now.
    pub fn len(&self) -> usize {
        self.hot.len()
    }

    /// For the recording's summary: pages kept writable now, at most at
    /// once, and checkpoint pages that were kept (sent without a fault).
    pub fn summary(&self) -> String {
        format!(
            "{} pages kept writable at the end, at most {}; {} checkpoint pages were kept ones",
            self.len(),
            self.most,
            self.carried
        )
    }

    /// A new checkpoint's read of the log begins.
    pub fn next_read(&mut self) {
        self.read += 1;
        let oldest = self.read.saturating_sub(WINDOW);
        self.recent.retain(|_, &mut r| r >= oldest);
    }

    /// Decides, for the pages `reported` in slot `index` (first page at
    /// `base`) whose contents `contents` gives in bit order, which stay
    /// writable; returns the bitmap of the pages to track again.
    pub fn decide(
        &mut self,
        index: usize,
        base: u64,
        reported: &[u64],
        contents: &[&[u8]],
    ) -> Vec<u64> {
        let _ = index;
        let mut rearm = reported.to_vec();
        let mut next = contents.iter();
        for (w, word) in reported.iter().enumerate() {
            let mut bits = *word;
            while bits != 0 {
                let b = bits.trailing_zeros();
                bits &= bits - 1;
                let Some(content) = next.next() else {
                    return rearm;
                };
                let gpa = base + (w as u64 * 64 + u64::from(b)) * PAGE_SIZE;
                let room = self.hot.len() < MAX_HOT;
                let keep = match self.hot.get_mut(&gpa) {
                    Some(hot) => {
                        self.carried += 1;
                        let hash = xxhash_rust::xxh3::xxh3_64(content);
                        if hash == hot.hash {
                            hot.unchanged += 1;
                        } else {
                            *hot = Hot { hash, unchanged: 0 };
                        }
                        if hot.unchanged >= COOL_AFTER {
                            self.hot.remove(&gpa);
                            self.recent.insert(gpa, self.read);
                            false
                        } else {
                            true
                        }
                    }
                    None => {
                        let again = self.recent.insert(gpa, self.read).is_some();
                        if again && room {
                            self.recent.remove(&gpa);
                            let hash = xxhash_rust::xxh3::xxh3_64(content);
                            self.hot.insert(gpa, Hot { hash, unchanged: 0 });
                            true
                        } else {
                            false
                        }
                    }
                };
                if keep {
                    rearm[w] &= !(1 << b);
                }
            }
        }
        // A page another reader of the log re-armed (a migration's round)
        // and the guest did not write since is no longer kept.
        let end = base + reported.len() as u64 * 64 * PAGE_SIZE;
        self.hot.retain(|&gpa, _| {
            if gpa < base || gpa >= end {
                return true;
            }
            let page = (gpa - base) / PAGE_SIZE;
            reported[(page / 64) as usize] & (1 << (page % 64)) != 0
        });
        self.most = self.most.max(self.hot.len());
        rearm
    }
}

/// The pages the guest wrote since the previous call (every hot page
/// among them), with their contents, in address order; tells the dirty
/// log which to track again. The one place a recording reads the log.
pub fn take(
    memory: &GuestMemoryMmapT,
    vm: &dyn Vm,
    hot: &mut HotPages,
) -> Result<Vec<(u64, Vec<u8>)>, FtError> {
    let keeps = vm.keeps_dirty_pages();
    if keeps {
        hot.next_read();
    }
    let mut pages = Vec::new();
    for (index, region) in memory.iter().enumerate() {
        let slot = u32::try_from(index).unwrap_or(u32::MAX);
        let base = region.start_addr().0;
        let reported = if keeps {
            vm.peek_dirty_log(slot, region.len())
        } else {
            vm.get_dirty_log(slot, region.len())
        }
        .map_err(FtError::DirtyLog)?;
        let first = pages.len();
        for (w, word) in reported.iter().enumerate() {
            let mut bits = *word;
            while bits != 0 {
                let b = u64::from(bits.trailing_zeros());
                bits &= bits - 1;
                let gpa = base + (w as u64 * 64 + b) * PAGE_SIZE;
                let mut page = vec![0u8; PAGE_SIZE as usize];
                memory
                    .read_slice(&mut page, GuestAddress(gpa))
                    .map_err(|_| FtError::Memory(gpa))?;
                pages.push((gpa, page));
            }
        }
        if keeps {
            let contents: Vec<&[u8]> = pages[first..].iter().map(|(_, p)| &p[..]).collect();
            let rearm = hot.decide(index, base, &reported, &contents);
            vm.clear_dirty_log(slot, region.len(), &rearm)
                .map_err(FtError::DirtyLog)?;
        }
    }
    Ok(pages)
}

#[cfg(test)]
mod tests {
    use super::*;

    const P: usize = PAGE_SIZE as usize;

    /// Runs `decide` on slot 0 at base 0 with pages `set` holding `fill`.
    fn step(hot: &mut HotPages, set: &[u64], fill: impl Fn(u64) -> u8) -> Vec<u64> {
        let mut reported = vec![0u64; 2];
        for &p in set {
            reported[(p / 64) as usize] |= 1 << (p % 64);
        }
        let pages: Vec<Vec<u8>> = (0..128u64)
            .filter(|p| reported[(p / 64) as usize] & (1 << (p % 64)) != 0)
            .map(|p| vec![fill(p); P])
            .collect();
        let contents: Vec<&[u8]> = pages.iter().map(|p| &p[..]).collect();
        hot.next_read();
        hot.decide(0, 0, &reported, &contents)
    }

    fn bits(set: &[u64]) -> Vec<u64> {
        let mut v = vec![0u64; 2];
        for &p in set {
            v[(p / 64) as usize] |= 1 << (p % 64);
        }
        v
    }

    #[test]
    fn a_page_reported_again_within_the_window_stays_writable() {
        let mut hot = HotPages::default();
        // First sight: everything is tracked again.
        assert_eq!(step(&mut hot, &[1, 70], |p| p as u8), bits(&[1, 70]));
        // Page 1 again (and a new page 3): page 1 becomes hot.
        assert_eq!(step(&mut hot, &[1, 3], |p| p as u8 + 1), bits(&[3]));
        assert_eq!(hot.len(), 1);
        // Page 70 comes back after a gap inside the window: hot too.
        assert_eq!(step(&mut hot, &[1, 70], |p| p as u8 + 2), bits(&[]));
        assert_eq!(hot.len(), 2);
    }

    #[test]
    fn a_page_seen_again_only_after_the_window_is_not_hot() {
        let mut hot = HotPages::default();
        step(&mut hot, &[9], |_| 1);
        for _ in 0..WINDOW {
            step(&mut hot, &[], |_| 0);
        }
        assert_eq!(step(&mut hot, &[9], |_| 2), bits(&[9]));
        assert_eq!(hot.len(), 0);
    }

    #[test]
    fn a_hot_page_whose_contents_stop_changing_is_tracked_again() {
        let mut hot = HotPages::default();
        step(&mut hot, &[5], |_| 1);
        assert_eq!(step(&mut hot, &[5], |_| 2), bits(&[]));
        // The same contents fewer than COOL_AFTER times: still hot.
        for _ in 1..COOL_AFTER {
            assert_eq!(step(&mut hot, &[5], |_| 2), bits(&[]));
        }
        // COOL_AFTER times: tracked again.
        assert_eq!(step(&mut hot, &[5], |_| 2), bits(&[5]));
        assert_eq!(hot.len(), 0);
    }

    #[test]
    fn a_change_resets_the_count() {
        let mut hot = HotPages::default();
        step(&mut hot, &[5], |_| 1);
        step(&mut hot, &[5], |_| 2);
        for _ in 1..COOL_AFTER {
            step(&mut hot, &[5], |_| 2);
        }
        assert_eq!(step(&mut hot, &[5], |_| 3), bits(&[]));
        for _ in 1..COOL_AFTER {
            assert_eq!(step(&mut hot, &[5], |_| 3), bits(&[]));
        }
        assert_eq!(step(&mut hot, &[5], |_| 3), bits(&[5]));
    }

    #[test]
    fn at_most_max_hot_pages_are_kept() {
        let mut hot = HotPages::default();
        let mut reported = vec![0u64; MAX_HOT / 64 + 2];
        let n = MAX_HOT + 64;
        for p in 0..n {
            reported[p / 64] |= 1 << (p % 64);
        }
        let pages: Vec<Vec<u8>> = (0..n).map(|p| vec![p as u8; P]).collect();
        let contents: Vec<&[u8]> = pages.iter().map(|p| &p[..]).collect();
        hot.next_read();
        hot.decide(0, 0, &reported, &contents);
        let changed: Vec<Vec<u8>> = (0..n).map(|p| vec![p as u8 ^ 0xff; P]).collect();
        let contents: Vec<&[u8]> = changed.iter().map(|p| &p[..]).collect();
        hot.next_read();
        let rearm = hot.decide(0, 0, &reported, &contents);
        assert_eq!(hot.len(), MAX_HOT);
        let rearmed: u32 = rearm.iter().map(|w| w.count_ones()).sum();
        assert_eq!(rearmed as usize, n - MAX_HOT);
    }

    #[test]
    fn slots_are_kept_apart() {
        let mut hot = HotPages::default();
        let one = [1u64];
        let page = vec![0u8; P];
        hot.next_read();
        hot.decide(0, 0, &one, &[&page]);
        // The same bit in another slot, at the same checkpoint, is another
        // page: not hot.
        assert_eq!(hot.decide(1, 1 << 32, &one, &[&page]), one.to_vec());
        hot.next_read();
        assert_eq!(hot.decide(0, 0, &one, &[&page]), vec![0]);
    }

    #[test]
    fn a_hot_page_no_longer_reported_is_dropped() {
        let mut hot = HotPages::default();
        step(&mut hot, &[5, 6], |p| p as u8);
        step(&mut hot, &[5, 6], |p| p as u8 + 1);
        assert_eq!(hot.len(), 2);
        // Another reader re-armed page 6 and the guest left it alone.
        step(&mut hot, &[5], |p| p as u8 + 2);
        assert_eq!(hot.len(), 1);
    }
}
