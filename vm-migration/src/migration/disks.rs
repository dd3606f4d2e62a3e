// Copyright 2026 The ft-cloud-hypervisor authors.
// SPDX-License-Identifier: Apache-2.0

//! Disk images copied in the pre-copy rounds beside memory (FT VMotion
//! with `disks=separate`): round 0 sends each image's size and every
//! block that holds data (holes and all-zero blocks are left out: the
//! receiver's copy starts as that many zero bytes), each later round the
//! blocks written since the previous one, the last ones in the pause.
//! [`super::Rounds::live_with_disks`] runs them with the memory's rounds,
//! and counts both in its estimate of what is left.
//!
//! Each image's [`BlockDigests`] table follows the copy: a block read for
//! sending sets its entry (holes keep the zero block's), a block the
//! tracker reports written goes stale until its round reads it again. After
//! the last round (in the pause) the table is whole, and its digest is the
//! image's as sent, without reading the image again.

use super::block_digests::BlockDigests;
use super::precopy::{BoxError, MigrationError};
use super::rounds::Progress;

/// Bytes of disk data handed to the writer at a time, at most.
const BATCH_BYTES: usize = 1 << 20;

/// The disk images the rounds copy: the VMM's side.
pub trait DiskSource {
    /// Each image's size in bytes, in order.
    fn disk_sizes(&self) -> Vec<u64>;
    /// Bytes per block of [`DiskSource::written_blocks`].
    fn block_size(&self) -> u64;
    /// The byte ranges (offset, length) of image `disk` that may hold
    /// data, in order: what round 0 reads (the rest is holes).
    fn data_ranges(&self, disk: usize) -> Result<Vec<(u64, u64)>, BoxError>;
    /// Reads image `disk` at `offset` into `buf`.
    fn read_disk(&self, disk: usize, offset: u64, buf: &mut [u8]) -> Result<(), BoxError>;
    /// The blocks of image `disk` written since the previous call (the
    /// first call: since the copy started tracking), as a bitmap (bit `b`
    /// of word `b / 64`; it may end before the image does).
    fn written_blocks(&mut self, disk: usize) -> Result<Vec<u64>, BoxError>;
}

/// How disk data goes on a wire.
pub trait DiskWriter {
    /// Image `disk` has `size` bytes: the receiver's copy starts as that
    /// many zero bytes. Sent once per image, before its data. Returns the
    /// bytes written.
    fn disk_size(&mut self, disk: u32, size: u64) -> Result<u64, MigrationError>;
    /// `data` goes at byte `offset` of image `disk`. Returns the bytes
    /// written.
    fn disk_data(&mut self, disk: u32, offset: u64, data: &[u8]) -> Result<u64, MigrationError>;
}

/// No disk to copy (a live migration: its disks are shared).
#[derive(Debug, Default)]
pub struct NoDisks;

impl DiskSource for NoDisks {
    fn disk_sizes(&self) -> Vec<u64> {
        Vec::new()
    }
    fn block_size(&self) -> u64 {
        1
    }
    fn data_ranges(&self, _: usize) -> Result<Vec<(u64, u64)>, BoxError> {
        Ok(Vec::new())
    }
    fn read_disk(&self, _: usize, _: u64, _: &mut [u8]) -> Result<(), BoxError> {
        Err("no disk".into())
    }
    fn written_blocks(&mut self, _: usize) -> Result<Vec<u64>, BoxError> {
        Ok(Vec::new())
    }
}

/// What one round copied of the disks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DiskRound {
    /// The round (0: the full copy; the last one is in the pause).
    pub round: u32,
    /// Blocks found written at the round's start (round 0: blocks with
    /// data).
    pub dirty_blocks: u64,
    /// Blocks sent with their bytes.
    pub blocks: u64,
    /// Disk data bytes sent.
    pub bytes: u64,
}

/// The disks' side of the rounds.
#[derive(Debug, Default)]
pub(super) struct DiskCopy {
    sizes: Vec<u64>,
    block: u64,
    buf: Vec<u8>,
    history: Vec<DiskRound>,
    /// Each image's digests of the blocks as sent.
    tables: Vec<BlockDigests>,
}

/// Blocks set in `bits`.
pub(super) fn blocks_in(sets: &[Vec<u64>]) -> u64 {
    sets.iter()
        .flatten()
        .map(|w| u64::from(w.count_ones()))
        .sum()
}

fn disk_error(what: &'static str) -> impl FnOnce(BoxError) -> MigrationError {
    move |e| MigrationError::Vmm(what, e)
}

fn is_zero(data: &[u8]) -> bool {
    data.iter().all(|b| *b == 0)
}

impl DiskCopy {
    /// The rounds so far (none without disks).
    pub(super) fn history(&self) -> &[DiskRound] {
        &self.history
    }

    /// Bytes per block.
    pub(super) fn block_size(&self) -> u64 {
        self.block
    }

    /// Round 0: each image's size, then its blocks that hold data and
    /// are not all zero.
    pub(super) fn full(
        &mut self,
        source: &mut dyn DiskSource,
        out: &mut dyn DiskWriter,
        progress: &mut Progress,
    ) -> Result<(), MigrationError> {
        self.sizes = source.disk_sizes();
        self.block = source.block_size().max(1);
        if self.sizes.is_empty() {
            return Ok(());
        }
        self.tables = self
            .sizes
            .iter()
            .map(|&size| {
                BlockDigests::new(size, self.block).map_err(|e| {
                    MigrationError::Vmm("cannot track a disk image's digests", e.into())
                })
            })
            .collect::<Result<_, _>>()?;
        let mut round = DiskRound::default();
        for (disk, &size) in self.sizes.clone().iter().enumerate() {
            let index = u32::try_from(disk).unwrap_or(u32::MAX);
            progress.bytes_sent += out.disk_size(index, size)?;
            let mut bits = vec![0u64; size.div_ceil(self.block).div_ceil(64) as usize];
            for (offset, len) in source
                .data_ranges(disk)
                .map_err(disk_error("cannot find a disk image's data"))?
            {
                let end = offset.saturating_add(len).min(size);
                if end <= offset {
                    continue;
                }
                for b in offset / self.block..=(end - 1) / self.block {
                    bits[(b / 64) as usize] |= 1 << (b % 64);
                }
            }
            round.dirty_blocks += blocks_in(std::slice::from_ref(&bits));
            self.send_blocks(source, out, disk, &bits, true, &mut round, progress)?;
        }
        self.history.push(round);
        Ok(())
    }

    /// The blocks written since the last call, per image; their digests
    /// are stale until [`DiskCopy::send`] reads them again.
    pub(super) fn take(
        &mut self,
        source: &mut dyn DiskSource,
    ) -> Result<Vec<Vec<u64>>, MigrationError> {
        let sets = (0..self.sizes.len())
            .map(|d| {
                source
                    .written_blocks(d)
                    .map_err(disk_error("cannot read a disk's written blocks"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        for (table, bits) in self.tables.iter_mut().zip(&sets) {
            table.invalidate(bits);
        }
        Ok(sets)
    }

    /// Each image's digest of its blocks as sent (see [`BlockDigests`]):
    /// after the last round. An error when a block written since is not
    /// sent yet.
    pub(super) fn digests(&self) -> Result<Vec<u64>, MigrationError> {
        self.tables
            .iter()
            .enumerate()
            .map(|(d, t)| {
                t.digest().ok_or_else(|| {
                    MigrationError::Vmm(
                        "a disk image's digest is not complete",
                        format!("disk {d}: blocks {:?} written and not sent", t.stale()).into(),
                    )
                })
            })
            .collect()
    }

    /// Each image's table of block digests as sent.
    pub(super) fn tables(&self) -> &[BlockDigests] {
        &self.tables
    }

    /// Round `round`: the blocks of `sets` (from [`DiskCopy::take`]).
    pub(super) fn send(
        &mut self,
        source: &mut dyn DiskSource,
        out: &mut dyn DiskWriter,
        sets: &[Vec<u64>],
        round: u32,
        progress: &mut Progress,
    ) -> Result<(), MigrationError> {
        if self.sizes.is_empty() {
            return Ok(());
        }
        let mut r = DiskRound {
            round,
            dirty_blocks: blocks_in(sets),
            ..DiskRound::default()
        };
        for (disk, bits) in sets.iter().enumerate() {
            self.send_blocks(source, out, disk, bits, false, &mut r, progress)?;
        }
        progress.disk_resent_blocks += r.blocks;
        self.history.push(r);
        Ok(())
    }

    /// Sends the blocks of `bits` of image `disk`, contiguous ones
    /// together (all-zero ones left out when `skip_zero`).
    #[allow(clippy::too_many_arguments)]
    fn send_blocks(
        &mut self,
        source: &mut dyn DiskSource,
        out: &mut dyn DiskWriter,
        disk: usize,
        bits: &[u64],
        skip_zero: bool,
        round: &mut DiskRound,
        progress: &mut Progress,
    ) -> Result<(), MigrationError> {
        let size = self.sizes.get(disk).copied().unwrap_or(0);
        let index = u32::try_from(disk).unwrap_or(u32::MAX);
        let block = self.block;
        let mut run_start = 0u64;
        self.buf.clear();
        let mut flush = |buf: &mut Vec<u8>,
                         at: u64,
                         progress: &mut Progress,
                         round: &mut DiskRound|
         -> Result<(), MigrationError> {
            if buf.is_empty() {
                return Ok(());
            }
            let n = out.disk_data(index, at, buf)?;
            progress.bytes_sent += n;
            progress.disk_bytes += buf.len() as u64;
            round.bytes += buf.len() as u64;
            buf.clear();
            Ok(())
        };
        let mut data = vec![0u8; block as usize];
        for (w, word) in bits.iter().enumerate() {
            let mut word = *word;
            while word != 0 {
                let b = w as u64 * 64 + u64::from(word.trailing_zeros());
                word &= word - 1;
                let offset = b * block;
                if offset >= size {
                    break;
                }
                let len = block.min(size - offset) as usize;
                source
                    .read_disk(disk, offset, &mut data[..len])
                    .map_err(disk_error("cannot read a disk image"))?;
                if let Some(t) = self.tables.get_mut(disk) {
                    t.set(b, &data[..len])
                        .map_err(|e| MigrationError::Vmm("a block outside its image", e.into()))?;
                }
                if skip_zero && is_zero(&data[..len]) {
                    continue;
                }
                let contiguous = run_start + self.buf.len() as u64 == offset;
                if !contiguous || self.buf.len() + len > BATCH_BYTES {
                    flush(&mut self.buf, run_start, progress, round)?;
                    run_start = offset;
                }
                self.buf.extend_from_slice(&data[..len]);
                round.blocks += 1;
                progress.disk_blocks += 1;
            }
        }
        flush(&mut self.buf, run_start, progress, round)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::migration::rounds::Phase;

    /// Two images in memory; writes between rounds are scripted.
    struct Images {
        disks: Vec<Vec<u8>>,
        written: Vec<Vec<u64>>,
    }

    impl DiskSource for Images {
        fn disk_sizes(&self) -> Vec<u64> {
            self.disks.iter().map(|d| d.len() as u64).collect()
        }
        fn block_size(&self) -> u64 {
            4096
        }
        fn data_ranges(&self, disk: usize) -> Result<Vec<(u64, u64)>, BoxError> {
            Ok(vec![(0, self.disks[disk].len() as u64)])
        }
        fn read_disk(&self, disk: usize, offset: u64, buf: &mut [u8]) -> Result<(), BoxError> {
            let at = offset as usize;
            buf.copy_from_slice(&self.disks[disk][at..at + buf.len()]);
            Ok(())
        }
        fn written_blocks(&mut self, disk: usize) -> Result<Vec<u64>, BoxError> {
            Ok(std::mem::take(&mut self.written[disk]))
        }
    }

    #[derive(Default)]
    struct Copies(Vec<Vec<u8>>);

    impl DiskWriter for Copies {
        fn disk_size(&mut self, disk: u32, size: u64) -> Result<u64, MigrationError> {
            assert_eq!(disk as usize, self.0.len());
            self.0.push(vec![0; size as usize]);
            Ok(12)
        }
        fn disk_data(
            &mut self,
            disk: u32,
            offset: u64,
            data: &[u8],
        ) -> Result<u64, MigrationError> {
            let d = &mut self.0[disk as usize];
            d[offset as usize..offset as usize + data.len()].copy_from_slice(data);
            Ok(data.len() as u64 + 13)
        }
    }

    #[test]
    fn round_zero_skips_zeros_and_later_rounds_send_written_blocks() {
        let mut a = vec![0u8; 10 * 4096 + 100];
        a[5] = 1;
        a[3 * 4096..5 * 4096].fill(2);
        a[10 * 4096 + 99] = 3; // the short last block
        let b = vec![7u8; 4096];
        let mut src = Images {
            disks: vec![a, b],
            written: vec![Vec::new(), Vec::new()],
        };
        let mut out = Copies::default();
        let mut copy = DiskCopy::default();
        let mut p = Progress::new(Phase::PreCopy);
        copy.full(&mut src, &mut out, &mut p).unwrap();
        assert_eq!(p.disk_blocks, 5); // blocks 0, 3, 4, 10 of a; b
        assert_eq!(out.0, src.disks);
        // The guest writes block 7 (now non-zero) and 3 (back to zero).
        src.disks[0][7 * 4096] = 9;
        src.disks[0][3 * 4096..4 * 4096].fill(0);
        src.written[0] = vec![(1 << 7) | (1 << 3)];
        let sets = copy.take(&mut src).unwrap();
        copy.send(&mut src, &mut out, &sets, 1, &mut p).unwrap();
        assert_eq!(out.0, src.disks);
        assert_eq!(p.disk_resent_blocks, 2);
        let h = copy.history();
        assert_eq!(h.len(), 2);
        assert_eq!((h[1].round, h[1].dirty_blocks, h[1].blocks), (1, 2, 2));
        assert_eq!(h[1].bytes, 2 * 4096);
        // The digests as sent are the images' read whole, block by block.
        let whole = |image: &[u8]| {
            let mut h = xxhash_rust::xxh3::Xxh3::new();
            for b in image.chunks(4096) {
                h.update(&xxhash_rust::xxh3::xxh3_64(b).to_le_bytes());
            }
            h.digest()
        };
        let want: Vec<u64> = src.disks.iter().map(|d| whole(d)).collect();
        assert_eq!(copy.digests().unwrap(), want);
        // A block written and not sent yet: no digest.
        src.disks[1][0] = 1;
        src.written[1] = vec![1];
        let sets = copy.take(&mut src).unwrap();
        assert!(copy.digests().is_err());
        copy.send(&mut src, &mut out, &sets, 2, &mut p).unwrap();
        assert_eq!(copy.digests().unwrap()[1], whole(&src.disks[1]));
    }
}
