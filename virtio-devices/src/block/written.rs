// Copyright 2026 The ft-cloud-hypervisor authors.
// SPDX-License-Identifier: Apache-2.0

//! The blocks of a disk image written since a reader last looked: for a
//! copy of the image made while the guest runs (FT VMotion with
//! `disks=separate`), which sends the blocks written during each round
//! again, as pre-copy does with memory pages.
//!
//! One [`WrittenBlocks`] per disk is the owner; readers register as
//! [`WrittenReader`]s and each has its own set (reading it clears only
//! that one), so that two copies at once do not steal each other's
//! blocks. The disk thread marks a write's blocks *after* the write
//! reached the file: a reader that takes its set and then reads the image
//! sees every write marked before it took the set, and any later one is in
//! its next set. With no reader, marking is one atomic load.
//!
//! Blocks are [`BLOCK_SIZE`] (64 KiB) bytes: a 1 GiB image is a 2 KiB
//! bitmap, a block is one read and one seed item per 64 KiB, and the
//! guests here write 4-64 KiB at a time (the test guest's KV log appends
//! in 4 KiB groups, its disk workload writes 64 KiB requests, Linux pages
//! of 4 KiB), so a scattered 4 KiB write sends 16 times its size again at
//! worst, and a sequential stream no more than once.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};

/// Bytes per tracked block.
pub const BLOCK_SIZE: u64 = 64 << 10;

#[derive(Debug, Default)]
struct Sets {
    /// Each reader's bitmap (bit b: block b written), by reader id.
    readers: Vec<(u64, Vec<u64>)>,
    next_id: u64,
}

/// A disk's written blocks: the owner (see the module's documentation).
#[derive(Debug, Default)]
pub struct WrittenBlocks {
    readers: AtomicUsize,
    sets: Mutex<Sets>,
}

impl WrittenBlocks {
    /// A tracker with no reader.
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    fn sets(&self) -> std::sync::MutexGuard<'_, Sets> {
        self.sets.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A new reader: its first [`WrittenReader::take`] returns the blocks
    /// written (marked) from now on.
    pub fn register(self: &Arc<Self>) -> WrittenReader {
        let mut sets = self.sets();
        let id = sets.next_id;
        sets.next_id += 1;
        sets.readers.push((id, Vec::new()));
        self.readers.fetch_add(1, Ordering::SeqCst);
        WrittenReader {
            owner: Arc::downgrade(self),
            id,
        }
    }

    /// Marks `len` bytes at byte `offset` as written (after the write).
    pub fn mark(&self, offset: u64, len: u64) {
        if self.readers.load(Ordering::SeqCst) == 0 || len == 0 {
            return;
        }
        let first = offset / BLOCK_SIZE;
        let last = offset.saturating_add(len - 1) / BLOCK_SIZE;
        let mut sets = self.sets();
        for (_, bits) in &mut sets.readers {
            let words = usize::try_from(last / 64 + 1).unwrap_or(usize::MAX);
            if bits.len() < words {
                bits.resize(words, 0);
            }
            for b in first..=last {
                bits[(b / 64) as usize] |= 1 << (b % 64);
            }
        }
    }
}

/// One reader of a disk's written blocks; unregisters when dropped.
#[derive(Debug)]
pub struct WrittenReader {
    owner: Weak<WrittenBlocks>,
    id: u64,
}

impl WrittenReader {
    /// The blocks written since the previous call (the first: since the
    /// reader registered), as a bitmap of [`BLOCK_SIZE`] blocks (bit `b`
    /// of word `b / 64`; it may be shorter than the image: the rest is
    /// clean); clears them.
    pub fn take(&self) -> Vec<u64> {
        let Some(owner) = self.owner.upgrade() else {
            return Vec::new();
        };
        let mut sets = owner.sets();
        sets.readers
            .iter_mut()
            .find(|(id, _)| *id == self.id)
            .map(|(_, bits)| std::mem::take(bits))
            .unwrap_or_default()
    }
}

impl Drop for WrittenReader {
    fn drop(&mut self) {
        if let Some(owner) = self.owner.upgrade() {
            let mut sets = owner.sets();
            sets.readers.retain(|(id, _)| *id != self.id);
            owner.readers.fetch_sub(1, Ordering::SeqCst);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn blocks(bits: &[u64]) -> Vec<u64> {
        (0..bits.len() as u64 * 64)
            .filter(|b| bits[(b / 64) as usize] & (1 << (b % 64)) != 0)
            .collect()
    }

    #[test]
    fn each_reader_sees_every_write_once() {
        let w = WrittenBlocks::new();
        w.mark(0, 4096); // no reader: not kept
        let a = w.register();
        w.mark(BLOCK_SIZE - 1, 2); // spans blocks 0 and 1
        w.mark(100 * BLOCK_SIZE, 0); // empty
        let b = w.register();
        w.mark(70 * BLOCK_SIZE + 5, 10);
        assert_eq!(blocks(&a.take()), vec![0, 1, 70]);
        assert!(a.take().is_empty());
        w.mark(3 * BLOCK_SIZE, BLOCK_SIZE + 1); // blocks 3 and 4
        assert_eq!(blocks(&b.take()), vec![3, 4, 70]);
        assert_eq!(blocks(&a.take()), vec![3, 4]);
        drop(a);
        w.mark(5 * BLOCK_SIZE, 1);
        assert_eq!(blocks(&b.take()), vec![5]);
        drop(b);
        assert_eq!(w.readers.load(Ordering::SeqCst), 0);
        assert!(w.sets().readers.is_empty());
    }
}
