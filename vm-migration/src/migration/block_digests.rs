// Copyright 2026 The ft-cloud-hypervisor authors.
// SPDX-License-Identifier: Apache-2.0

//! A disk image's table of per-block digests, kept while the image is
//! copied block by block, so that the copy's digest at the end costs a
//! hash of the table, not a read of the image.
//!
//! Block `b` covers bytes `b * block .. min((b + 1) * block, size)` (the
//! last one may be short); its digest is the XXH3-64 of those bytes. The
//! table starts as holes (every block all zero), a block read or written
//! whole sets its entry, and a block written since it was hashed is
//! *stale* until it is hashed again. The image's digest
//! ([`BlockDigests::digest`]) is the XXH3-64 of the little-endian entries
//! in order: the same number as a read of the whole image hashed block by
//! block (FT VMotion's seed version 3 digest), which it replaces.
//!
//! What the table proves is only what went through it: the sender's table
//! holds the digests of the bytes it read for sending (a block written
//! after it was read is stale until the next round reads it again, from
//! the disk's written-block tracker), the receiver's of the bytes it
//! wrote. A write the tracker misses leaves both tables agreeing while the
//! images differ: a read of the image checked against the table
//! ([`BlockDigests::check`]) finds it.

use xxhash_rust::xxh3::{xxh3_64, Xxh3};

/// An image's per-block digests (see the module's documentation).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockDigests {
    size: u64,
    block: u64,
    digests: Vec<u64>,
    /// Bit `b`: block `b`'s entry is stale.
    stale: Vec<u64>,
}

impl BlockDigests {
    /// The table of an image of `size` zero bytes in blocks of `block`
    /// bytes (at least 1). Fails when the table does not fit in memory.
    pub fn new(size: u64, block: u64) -> Result<Self, String> {
        let block = block.max(1);
        let n = size.div_ceil(block);
        let too_big = || format!("no memory for the digests of a {size}-byte image");
        let n_usize = usize::try_from(n).map_err(|_| too_big())?;
        let mut digests = Vec::new();
        digests.try_reserve_exact(n_usize).map_err(|_| too_big())?;
        let zero = xxh3_64(&vec![0u8; usize::try_from(block).map_err(|_| too_big())?]);
        digests.resize(n_usize, zero);
        if size % block != 0 {
            if let Some(last) = digests.last_mut() {
                *last = xxh3_64(&vec![0u8; (size % block) as usize]);
            }
        }
        Ok(BlockDigests {
            size,
            block,
            digests,
            stale: vec![0; n_usize.div_ceil(64)],
        })
    }

    /// The image's size in bytes.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Bytes per block.
    pub fn block_size(&self) -> u64 {
        self.block
    }

    /// Blocks.
    pub fn blocks(&self) -> u64 {
        self.digests.len() as u64
    }

    /// Block `b`'s byte range (offset, length); `None` past the end.
    pub fn range(&self, b: u64) -> Option<(u64, u64)> {
        let offset = b.checked_mul(self.block).filter(|o| *o < self.size)?;
        Some((offset, self.block.min(self.size - offset)))
    }

    /// Sets block `b`'s entry from its bytes `data` (the whole block: a
    /// short slice is an error, as is a block past the end).
    pub fn set(&mut self, b: u64, data: &[u8]) -> Result<(), String> {
        let (_, len) = self
            .range(b)
            .ok_or_else(|| format!("block {b} is past the image's end ({} bytes)", self.size))?;
        if data.len() as u64 != len {
            return Err(format!(
                "{} bytes for block {b}, which has {len}",
                data.len()
            ));
        }
        self.set_digest(b, xxh3_64(data))
    }

    /// Sets block `b`'s entry to `digest`, the XXH3-64 of its bytes
    /// (hashed by the caller, e.g. as they came in pieces).
    pub fn set_digest(&mut self, b: u64, digest: u64) -> Result<(), String> {
        self.range(b)
            .ok_or_else(|| format!("block {b} is past the image's end ({} bytes)", self.size))?;
        self.digests[b as usize] = digest;
        self.stale[(b / 64) as usize] &= !(1 << (b % 64));
        Ok(())
    }

    /// Marks the blocks of `bits` stale (bit `b` of word `b / 64`; bits
    /// past the end are ignored). Returns how many were marked.
    pub fn invalidate(&mut self, bits: &[u64]) -> u64 {
        let mut n = 0;
        for (w, (s, b)) in self.stale.iter_mut().zip(bits).enumerate() {
            let mut word = *b;
            if w == self.digests.len() / 64 {
                // The last word: only the blocks that exist.
                let rest = self.digests.len() % 64;
                if rest != 0 {
                    word &= (1u64 << rest) - 1;
                }
            }
            n += u64::from((word & !*s).count_ones());
            *s |= word;
        }
        n
    }

    /// Marks the blocks that bytes `offset..offset + len` touch stale.
    pub fn invalidate_range(&mut self, offset: u64, len: u64) {
        if len == 0 || offset >= self.size {
            return;
        }
        let last = offset.saturating_add(len - 1).min(self.size - 1) / self.block;
        for b in offset / self.block..=last {
            self.stale[(b / 64) as usize] |= 1 << (b % 64);
        }
    }

    /// The stale blocks, in order.
    pub fn stale(&self) -> Vec<u64> {
        let mut out = Vec::new();
        for (w, word) in self.stale.iter().enumerate() {
            let mut word = *word;
            while word != 0 {
                out.push(w as u64 * 64 + u64::from(word.trailing_zeros()));
                word &= word - 1;
            }
        }
        out
    }

    /// The image's digest: `None` while a block is stale.
    pub fn digest(&self) -> Option<u64> {
        if self.stale.iter().any(|w| *w != 0) {
            return None;
        }
        let mut h = Xxh3::new();
        for d in &self.digests {
            h.update(&d.to_le_bytes());
        }
        Some(h.digest())
    }

    /// Whether `data`, block `b`'s bytes as read now, matches its entry
    /// (a stale block or one past the end does not).
    pub fn check(&self, b: u64, data: &[u8]) -> bool {
        self.range(b)
            .is_some_and(|(_, len)| len == data.len() as u64)
            && self.check_digest(b, xxh3_64(data))
    }

    /// Whether block `b`'s entry is `digest` (and not stale).
    pub fn check_digest(&self, b: u64, digest: u64) -> bool {
        let fresh = self
            .stale
            .get((b / 64) as usize)
            .is_some_and(|w| w & (1 << (b % 64)) == 0);
        fresh && self.digests.get(b as usize) == Some(&digest)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The digest of `image` read whole, block by block (the seed version 3
    /// definition).
    fn read_whole(image: &[u8], block: usize) -> u64 {
        let mut h = Xxh3::new();
        for b in image.chunks(block) {
            h.update(&xxh3_64(b).to_le_bytes());
        }
        h.digest()
    }

    #[test]
    fn holes_and_the_short_last_block_digest_as_a_whole_read() {
        let block = 4096;
        let size = 5 * block + 777;
        let mut image = vec![0u8; size];
        let mut t = BlockDigests::new(size as u64, block as u64).unwrap();
        assert_eq!(t.blocks(), 6);
        assert_eq!(t.range(5), Some((5 * block as u64, 777)));
        assert_eq!(t.range(6), None);
        assert!(BlockDigests::new(u64::MAX, 1).is_err());
        // All holes: the zero image's digest, short last block included.
        assert_eq!(t.digest(), Some(read_whole(&image, block)));
        // Data in block 2 and in the short last block.
        image[2 * block + 10..2 * block + 110].fill(5);
        image[size - 10..].fill(6);
        t.set(2, &image[2 * block..3 * block]).unwrap();
        t.set(5, &image[5 * block..]).unwrap();
        assert_eq!(t.digest(), Some(read_whole(&image, block)));
        // The last block is short: a whole block's bytes are refused, as is
        // a block past the end.
        assert!(t.set(5, &image[..block]).is_err());
        assert!(t.set(6, &image[..777]).is_err());
        // A zero block set from its bytes is the hole's entry.
        t.set(0, &image[..block]).unwrap();
        assert_eq!(t.digest(), Some(read_whole(&image, block)));
        // One byte differs: so does the digest.
        let mut other = image.clone();
        other[3] = 1;
        assert_ne!(t.digest(), Some(read_whole(&other, block)));
        assert!(t.check(2, &image[2 * block..3 * block]));
        assert!(!t.check(0, &other[..block]));
    }

    #[test]
    fn a_written_block_is_stale_until_hashed_again() {
        let block = 4096;
        let size = 130 * block + 1; // three bitmap words, a 1-byte last block
        let mut image = vec![1u8; size];
        let mut t = BlockDigests::new(size as u64, block as u64).unwrap();
        for b in 0..t.blocks() {
            let (o, l) = t.range(b).unwrap();
            t.set(b, &image[o as usize..(o + l) as usize]).unwrap();
        }
        assert_eq!(t.digest(), Some(read_whole(&image, block)));
        // The guest writes blocks 3, 64 and the last one; the tracker's
        // bitmap also carries bits past the end, which are ignored.
        image[3 * block] = 9;
        image[64 * block + 5] = 9;
        image[size - 1] = 9;
        let bits = vec![1 << 3, 1, (1 << 2) | (1 << 63)];
        assert_eq!(t.invalidate(&bits), 3);
        assert_eq!(t.stale(), vec![3, 64, 130]);
        assert_eq!(t.digest(), None);
        assert!(!t.check(3, &image[3 * block..4 * block]));
        for b in t.stale() {
            let (o, l) = t.range(b).unwrap();
            t.set(b, &image[o as usize..(o + l) as usize]).unwrap();
        }
        assert!(t.stale().is_empty());
        assert_eq!(t.digest(), Some(read_whole(&image, block)));
        // A byte range: every block it touches, clipped at the end.
        t.invalidate_range(2 * block as u64 - 1, 2);
        t.invalidate_range(size as u64 - 1, 100);
        t.invalidate_range(size as u64 + 5, 1);
        assert_eq!(t.stale(), vec![1, 2, 130]);
        // A missed write: the table still agrees with itself, and a read
        // of the image checked against it finds the block.
        let mut t = BlockDigests::new(size as u64, block as u64).unwrap();
        for b in 0..t.blocks() {
            let (o, l) = t.range(b).unwrap();
            t.set(b, &image[o as usize..(o + l) as usize]).unwrap();
        }
        image[7 * block + 1] ^= 0xff;
        assert!(t.digest().is_some());
        let bad: Vec<u64> = (0..t.blocks())
            .filter(|&b| {
                let (o, l) = t.range(b).unwrap();
                !t.check(b, &image[o as usize..(o + l) as usize])
            })
            .collect();
        assert_eq!(bad, vec![7]);
    }
}
