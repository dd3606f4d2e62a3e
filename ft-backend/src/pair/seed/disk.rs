// Copyright 2026 The ft-cloud-hypervisor authors.
// SPDX-License-Identifier: Apache-2.0

//! Separate disks in a seed: where an image holds data (`SEEK_DATA` /
//! `SEEK_HOLE`, so that holes are neither read nor sent), the images'
//! digest both sides compare at the end, and the backup's copies.
//!
//! The digest (seed version 3) is the XXH3-64 of the little-endian XXH3-64
//! of each [`DIGEST_BLOCK`] block of the image in order (the last one
//! short; a block in a hole digests as zeros). Neither side reads its
//! image for it in the pause: each keeps a table of block digests
//! ([`vm_migration::migration::BlockDigests`]) as the copy goes, the
//! primary of the blocks it read for sending (a block its disk thread
//! wrote since is stale until sent again), the backup of the blocks it
//! wrote, hashed from the items as they come (the primary's runs start at
//! block boundaries; a block written otherwise is read back from the copy
//! after the last disk item). Equal digests prove that the backup's copy
//! holds every block as the primary last sent it. That the primary's image
//! holds the same (its written-block tracker missed no write) is
//! checked after the switch, by a read of the image against the table
//! (`vmm`'s `ft_seed::verify`). [`image_digest`] reads an image whole:
//! the definition, for tests.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};

use vm_migration::migration::BlockDigests;
use xxhash_rust::xxh3::{xxh3_64, Xxh3};

use super::SeedError;

/// Bytes per block of the image digest.
pub const DIGEST_BLOCK: u64 = 64 << 10;

/// The byte ranges (offset, length) of `file` (of `size` bytes) that hold
/// data, in order. A file system without `SEEK_DATA` gives the whole
/// file.
pub fn data_ranges(file: &File, size: u64) -> std::io::Result<Vec<(u64, u64)>> {
    let fd = file.as_raw_fd();
    let seek = |offset: u64, whence: libc::c_int| -> std::io::Result<Option<u64>> {
        let offset = libc::off_t::try_from(offset)
            .map_err(|_| std::io::Error::from(std::io::ErrorKind::InvalidInput))?;
        // SAFETY: lseek on a descriptor `file` owns for this call; it
        // changes only the descriptor's offset, which nothing here uses
        // (reads go through pread).
        let r = unsafe { libc::lseek(fd, offset, whence) };
        if r < 0 {
            let e = std::io::Error::last_os_error();
            return match e.raw_os_error() {
                // No data at or after `offset`.
                Some(libc::ENXIO) => Ok(None),
                _ => Err(e),
            };
        }
        Ok(Some(r as u64))
    };
    let mut ranges = Vec::new();
    let mut at = 0u64;
    while at < size {
        let start = match seek(at, libc::SEEK_DATA) {
            Ok(Some(s)) => s,
            Ok(None) => break,
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) && at == 0 => {
                return Ok(vec![(0, size)]);
            }
            Err(e) => return Err(e),
        };
        if start >= size {
            break;
        }
        let end = seek(start, libc::SEEK_HOLE)?.unwrap_or(size).min(size);
        if end <= start {
            break;
        }
        ranges.push((start, end - start));
        at = end;
    }
    Ok(ranges)
}

/// The digest of the image `file` (see the module's documentation).
pub fn image_digest(file: &File) -> std::io::Result<u64> {
    let size = file.metadata()?.len();
    let ranges = data_ranges(file, size)?;
    let zero = vec![0u8; DIGEST_BLOCK as usize];
    let zero_digest = xxh3_64(&zero);
    let mut buf = vec![0u8; DIGEST_BLOCK as usize];
    let mut h = Xxh3::new();
    let mut next = ranges.iter().peekable();
    let mut offset = 0u64;
    while offset < size {
        let len = DIGEST_BLOCK.min(size - offset);
        // Ranges that end before this block are behind us.
        while next.peek().is_some_and(|(s, l)| s + l <= offset) {
            next.next();
        }
        let has_data = next.peek().is_some_and(|(s, _)| *s < offset + len);
        let d = if !has_data && len == DIGEST_BLOCK {
            zero_digest
        } else if !has_data {
            xxh3_64(&zero[..len as usize])
        } else {
            let b = &mut buf[..len as usize];
            file.read_exact_at(b, offset)?;
            xxh3_64(b)
        };
        h.update(&d.to_le_bytes());
        offset += len;
    }
    Ok(h.digest())
}

/// The digest of the image at `path`.
pub fn path_digest(path: &Path) -> Result<u64, SeedError> {
    let err = |source| SeedError::Disk {
        path: path.to_path_buf(),
        source,
    };
    let f = File::open(path).map_err(err)?;
    image_digest(&f).map_err(err)
}

/// One of the backup's copies.
struct Copy {
    path: PathBuf,
    file: File,
    /// Its size, once the seed gave it.
    size: Option<u64>,
    /// Its block digests, from the size on (taken by the digest thread).
    table: Option<BlockDigests>,
    /// A block being written whole by consecutive items: its index, the
    /// hash of its bytes so far and how many.
    partial: Option<(u64, Box<Xxh3>, u64)>,
}

impl std::fmt::Debug for Copy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Copy")
            .field("path", &self.path)
            .field("size", &self.size)
            .field("partial", &self.partial.as_ref().map(|(b, _, n)| (b, n)))
            .finish_non_exhaustive()
    }
}

impl Copy {
    /// Records in the table the `data` just written at `offset`: a block
    /// written whole from its start, by this item and the ones just before
    /// it, gets its digest from the bytes; any other write leaves the block
    /// stale (read back after the last disk item).
    fn record(&mut self, offset: u64, data: &[u8]) {
        let Some(table) = self.table.as_mut() else {
            return;
        };
        let block = table.block_size();
        let mut at = offset;
        let mut rest = data;
        while !rest.is_empty() {
            let b = at / block;
            let Some((start, len)) = table.range(b) else {
                return;
            };
            let in_block = at - start;
            let n = rest.len().min((len - in_block) as usize);
            let (piece, tail) = rest.split_at(n);
            // A block being assembled stays stale until it is whole; an
            // abandoned one stays stale.
            let assembly = match self.partial.take() {
                Some((pb, h, got)) if pb == b && got == in_block => Some((h, got)),
                _ if in_block == 0 => Some((Box::new(Xxh3::new()), 0)),
                _ => None,
            };
            match assembly {
                Some((mut h, got)) => {
                    h.update(piece);
                    let got = got + n as u64;
                    if got == len {
                        // The streaming hash of the whole block is its
                        // XXH3-64; `b` is in the image: cannot fail.
                        let _ = table.set_digest(b, h.digest());
                    } else {
                        table.invalidate_range(start, 1);
                        self.partial = Some((b, h, got));
                    }
                }
                None => table.invalidate_range(at, n as u64),
            }
            at += n as u64;
            rest = tail;
        }
    }
}

/// Brings `table` up to date (its stale blocks read back from `file`) and
/// returns its digest.
fn table_digest(file: &File, mut table: BlockDigests) -> std::io::Result<u64> {
    let mut buf = vec![0u8; table.block_size() as usize];
    for b in table.stale() {
        let Some((offset, len)) = table.range(b) else {
            continue;
        };
        let data = &mut buf[..len as usize];
        file.read_exact_at(data, offset)?;
        table.set(b, data).map_err(std::io::Error::other)?;
    }
    table
        .digest()
        .ok_or_else(|| std::io::Error::other("a block digest is still stale"))
}

/// The digests of copies from their tables (0 for a copy without a size,
/// which [`DiskCopies::check`] refuses before it looks at digests).
fn digest_all(tables: Vec<(File, Option<BlockDigests>)>) -> std::io::Result<Vec<u64>> {
    tables
        .into_iter()
        .map(|(file, table)| table.map_or(Ok(0), |t| table_digest(&file, t)))
        .collect()
}

/// The copies' digests (by index), computed on a thread of their own.
type Digests = std::thread::JoinHandle<std::io::Result<Vec<u64>>>;

/// The backup's copies of the separate disks, written from the seed.
#[derive(Debug, Default)]
pub(super) struct DiskCopies {
    copies: Vec<Copy>,
    /// The digests, once the last disk item has come.
    digests: Option<Digests>,
}

impl DiskCopies {
    /// Opens (creates) the copies at `paths` and empties them.
    pub(super) fn open(paths: Vec<PathBuf>) -> Result<Self, SeedError> {
        let mut copies = Vec::with_capacity(paths.len());
        for path in paths {
            let file = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(true)
                .open(&path)
                .map_err(|source| SeedError::Disk {
                    path: path.clone(),
                    source,
                })?;
            copies.push(Copy {
                path,
                file,
                size: None,
                table: None,
                partial: None,
            });
        }
        Ok(DiskCopies {
            copies,
            digests: None,
        })
    }

    /// The copies' files and tables (a copy without a size: none; its
    /// check says so), for their digests.
    fn tables(&mut self) -> Result<Vec<(File, Option<BlockDigests>)>, SeedError> {
        let mut out = Vec::with_capacity(self.copies.len());
        for c in &mut self.copies {
            c.partial = None;
            let file = c.file.try_clone().map_err(|source| SeedError::Disk {
                path: c.path.clone(),
                source,
            })?;
            out.push((file, c.table.take()));
        }
        Ok(out)
    }

    /// No disk item follows: completes the copies' digests (the blocks not
    /// hashed as they came are read back) on a thread of their own while
    /// the rest of the seed comes.
    pub(super) fn done(&mut self) -> Result<(), SeedError> {
        if self.digests.is_some() {
            return Err(SeedError::Malformed("the disks ended twice".into()));
        }
        let tables = self.tables()?;
        let thread = std::thread::Builder::new()
            .name("seed-digest".into())
            .spawn(move || digest_all(tables))
            .map_err(|source| SeedError::Disk {
                path: PathBuf::from("(a digest thread)"),
                source,
            })?;
        self.digests = Some(thread);
        Ok(())
    }

    /// The copies' digests: from the thread [`DiskCopies::done`] started,
    /// or computed now.
    fn digests(&mut self) -> Result<Vec<u64>, SeedError> {
        let err = |source| SeedError::Disk {
            path: PathBuf::from("(a disk copy)"),
            source,
        };
        match self.digests.take() {
            Some(t) => t
                .join()
                .map_err(|_| err(std::io::Error::other("the digest thread panicked")))?
                .map_err(err),
            None => digest_all(self.tables()?).map_err(err),
        }
    }

    fn copy(&mut self, index: u32) -> Result<&mut Copy, SeedError> {
        if self.digests.is_some() {
            return Err(SeedError::Malformed(format!(
                "an item of disk {index} after the disks' end"
            )));
        }
        self.copies.get_mut(index as usize).ok_or_else(|| {
            SeedError::Malformed(format!("disk {index} is not a separate disk here"))
        })
    }

    /// The seed's size of image `index`: its copy becomes that many zero
    /// bytes.
    pub(super) fn size(&mut self, index: u32, size: u64) -> Result<(), SeedError> {
        let c = self.copy(index)?;
        if c.size.is_some() {
            return Err(SeedError::Malformed(format!(
                "disk {index}'s size came twice"
            )));
        }
        let err = |source| SeedError::Disk {
            path: c.path.clone(),
            source,
        };
        c.file.set_len(0).map_err(err)?;
        c.file.set_len(size).map_err(err)?;
        c.table = Some(
            BlockDigests::new(size, DIGEST_BLOCK)
                .map_err(|e| err(std::io::Error::new(std::io::ErrorKind::OutOfMemory, e)))?,
        );
        c.size = Some(size);
        Ok(())
    }

    /// Writes `data` at `offset` of image `index`'s copy.
    pub(super) fn write(&mut self, index: u32, offset: u64, data: &[u8]) -> Result<(), SeedError> {
        let c = self.copy(index)?;
        let Some(size) = c.size else {
            return Err(SeedError::Malformed(format!(
                "data of disk {index} before its size"
            )));
        };
        if offset
            .checked_add(data.len() as u64)
            .is_none_or(|end| end > size)
        {
            return Err(SeedError::Malformed(format!(
                "{} bytes at {offset} of disk {index}, which has {size}",
                data.len()
            )));
        }
        c.file
            .write_all_at(data, offset)
            .map_err(|source| SeedError::Disk {
                path: c.path.clone(),
                source,
            })?;
        c.record(offset, data);
        Ok(())
    }

    /// Checks each copy against the primary's digests (by index). Returns
    /// why not, when one differs.
    pub(super) fn check(&mut self, digests: &[u64]) -> Result<Option<String>, SeedError> {
        if digests.len() != self.copies.len() {
            return Ok(Some(format!(
                "the primary sent {} disk digests; this backup has {} separate disks",
                digests.len(),
                self.copies.len()
            )));
        }
        if let Some(i) = self.copies.iter().position(|c| c.size.is_none()) {
            return Ok(Some(format!("disk {i} never arrived")));
        }
        let got = self.digests()?;
        for (i, ((c, want), got)) in self.copies.iter().zip(digests).zip(got).enumerate() {
            if got != *want {
                return Ok(Some(format!(
                    "the copy of disk {i} in {} has digest {got:016x}; the primary sent blocks with {want:016x}",
                    c.path.display()
                )));
            }
        }
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digests_skip_holes_and_equal_a_plain_read() {
        let dir = std::env::temp_dir().join(format!("ft-seed-disk-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let sparse = dir.join("sparse.img");
        let full = dir.join("full.img");
        let size = 5 * DIGEST_BLOCK + 777;
        let f = File::create(&sparse).unwrap();
        f.set_len(size).unwrap();
        f.write_all_at(&[5; 100], 2 * DIGEST_BLOCK + 10).unwrap();
        f.write_all_at(&[6; 10], size - 10).unwrap();
        let mut bytes = vec![0u8; size as usize];
        bytes[2 * DIGEST_BLOCK as usize + 10..2 * DIGEST_BLOCK as usize + 110].fill(5);
        bytes[size as usize - 10..].fill(6);
        std::fs::write(&full, &bytes).unwrap();
        let sparse_f = File::open(&sparse).unwrap();
        let ranges = data_ranges(&sparse_f, size).unwrap();
        assert!(!ranges.is_empty());
        // Every byte that is not zero is inside a range.
        for (i, b) in bytes.iter().enumerate() {
            if *b != 0 {
                let i = i as u64;
                assert!(ranges.iter().any(|(s, l)| (*s..s + l).contains(&i)), "{i}");
            }
        }
        let d = image_digest(&sparse_f).unwrap();
        assert_eq!(d, path_digest(&full).unwrap());
        // By definition: the digest of the blocks' digests.
        let mut h = Xxh3::new();
        for b in bytes.chunks(DIGEST_BLOCK as usize) {
            h.update(&xxh3_64(b).to_le_bytes());
        }
        assert_eq!(d, h.digest());
        bytes[3] = 1;
        std::fs::write(&full, &bytes).unwrap();
        assert_ne!(d, path_digest(&full).unwrap());
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// A copy written by items as the seed sends them (runs from block
    /// boundaries in items shorter than a block), plus writes that start
    /// mid-block and an abandoned run: its digest from the table is the
    /// whole copy's, with and without the thread of `done`.
    #[test]
    fn the_copys_table_digest_equals_a_read_of_the_copy() {
        let dir = std::env::temp_dir().join(format!("ft-seed-copy-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let size = 9 * DIGEST_BLOCK + 4321;
        let chunk = 65_505; // an item's bytes: less than a block
        let mut image = vec![0u8; size as usize];
        for (i, b) in image.iter_mut().enumerate() {
            *b = (i % 251) as u8;
        }
        image[4 * DIGEST_BLOCK as usize..6 * DIGEST_BLOCK as usize].fill(0); // a hole
        for threaded in [false, true] {
            let path = dir.join(format!("copy-{threaded}.img"));
            let mut copies = DiskCopies::open(vec![path.clone()]).unwrap();
            copies.size(0, size).unwrap();
            let send = |copies: &mut DiskCopies, from: u64, to: u64| {
                let run = &image[from as usize..to as usize];
                for (i, c) in run.chunks(chunk).enumerate() {
                    copies.write(0, from + (i * chunk) as u64, c).unwrap();
                }
            };
            // Round 0: blocks 0-3, then 6 to the short last block.
            send(&mut copies, 0, 4 * DIGEST_BLOCK);
            send(&mut copies, 6 * DIGEST_BLOCK, size);
            // A run that stops mid-block (block 1 abandoned), a write
            // that starts mid-block (block 7), then block 2 again whole.
            copies.write(0, DIGEST_BLOCK, &[0xee; 1000]).unwrap();
            copies
                .write(0, 7 * DIGEST_BLOCK + 10, &image[..100])
                .unwrap();
            send(&mut copies, 2 * DIGEST_BLOCK, 3 * DIGEST_BLOCK);
            {
                let c = &copies.copies[0];
                let t = c.table.as_ref().unwrap();
                assert_eq!(t.stale(), vec![1, 7]);
            }
            if threaded {
                copies.done().unwrap();
                assert!(copies.write(0, 0, &[1]).is_err());
            }
            let want = path_digest(&path).unwrap();
            assert_eq!(copies.check(&[want]).unwrap(), None);
            let mut bad = DiskCopies::open(vec![dir.join("bad.img")]).unwrap();
            bad.size(0, size).unwrap();
            let why = bad.check(&[want]).unwrap().unwrap();
            assert!(why.contains("digest"), "{why}");
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}
