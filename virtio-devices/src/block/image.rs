// Copyright 2026 The ft-cloud-hypervisor authors.
// SPDX-License-Identifier: Apache-2.0

//! A disk image on the host: a raw file opened through the page cache
//! (the default) or with `O_DIRECT` (`--disk direct=on`, as upstream Cloud
//! Hypervisor; QEMU's `cache=none`).
//!
//! `O_DIRECT` needs the buffer's address, the file offset and the length
//! aligned: the file system says how (`statx` with `STATX_DIOALIGN`:
//! memory and offset alignment; when it does not say, 4096 for both,
//! which every file system accepts). Guest requests are whole 512-byte
//! sectors at any sector, held in host buffers of no particular alignment,
//! so with `O_DIRECT` every request goes through one bounce buffer,
//! page-aligned, that the image owns: the copy costs little beside the
//! I/O (4 KiB in well under a microsecond) and keeps every request on one
//! path. A request whose offset or length is not a multiple of the offset
//! alignment (a 512-byte sector on a file system that needs 4096) is
//! widened to the aligned blocks around it: a read reads them and keeps
//! its part; a write first reads the blocks at its two ends
//! (read-modify-write). An image performs one request at a time (its
//! methods take `&mut self`), so nothing writes those blocks in between.
//! An image whose size is not a multiple of the offset alignment is
//! refused with `O_DIRECT` (its last block could not be written whole
//! without growing the file).

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::Path;

use super::BlockError;

/// Alignment used when the file system does not report its own, and the
/// least alignment of the bounce buffer (a page).
pub const DEFAULT_ALIGN: u64 = 4096;

/// How the host opens a disk image.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ImageMode {
    /// Open read-only (the guest's writes fail).
    pub readonly: bool,
    /// Open with `O_DIRECT`, bypassing the host's page cache.
    pub direct: bool,
}

impl ImageMode {
    /// Read-write, through the page cache.
    pub const READ_WRITE: ImageMode = ImageMode {
        readonly: false,
        direct: false,
    };

    /// Read-only, through the page cache.
    pub const READ_ONLY: ImageMode = ImageMode {
        readonly: true,
        direct: false,
    };

    fn describe(&self) -> &'static str {
        match (self.readonly, self.direct) {
            (false, false) => "read-write",
            (true, false) => "read-only",
            (false, true) => "read-write, O_DIRECT",
            (true, true) => "read-only, O_DIRECT",
        }
    }
}

/// `O_DIRECT` alignment (bytes, powers of two).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Alignment {
    /// Of buffer addresses.
    pub memory: u64,
    /// Of file offsets and lengths.
    pub offset: u64,
}

/// A page-aligned region of a larger heap buffer (no `unsafe`: the vector
/// is over-allocated by the alignment and the region starts where the
/// address is aligned; the vector is never resized, so it does not move).
#[derive(Debug, Default)]
struct Bounce {
    storage: Vec<u8>,
    start: usize,
    len: usize,
}

impl Bounce {
    /// A buffer of `len` bytes aligned to `align`: this one when it is
    /// large enough, a new one otherwise.
    fn get(&mut self, len: usize, align: usize) -> &mut [u8] {
        if self.len < len {
            self.storage = vec![0u8; len + align];
            self.start = self.storage.as_ptr().align_offset(align);
            self.len = len;
        }
        &mut self.storage[self.start..self.start + len]
    }
}

/// `O_DIRECT` state: the alignment and the bounce buffer.
#[derive(Debug)]
struct Direct {
    align: Alignment,
    bounce: Bounce,
}

/// An open disk image.
#[derive(Debug)]
pub struct Image {
    file: File,
    direct: Option<Direct>,
}

impl Image {
    /// Opens the raw image at `path` as `mode` says: the image and its
    /// size in bytes.
    pub fn open(path: &Path, mode: ImageMode) -> Result<(Image, u64), BlockError> {
        let mut options = OpenOptions::new();
        options.read(true).write(!mode.readonly);
        if mode.direct {
            options.custom_flags(libc::O_DIRECT);
        }
        let file = options.open(path).map_err(|source| {
            if mode.direct && source.raw_os_error() == Some(libc::EINVAL) {
                // open(2): EINVAL with O_DIRECT is the file system's refusal.
                BlockError::DirectRefused {
                    path: path.to_path_buf(),
                    source,
                }
            } else {
                BlockError::Open {
                    path: path.to_path_buf(),
                    mode: mode.describe(),
                    source,
                }
            }
        })?;
        let meta = file.metadata().map_err(|_| BlockError::NotAFile {
            path: path.to_path_buf(),
        })?;
        if !meta.is_file() {
            return Err(BlockError::NotAFile {
                path: path.to_path_buf(),
            });
        }
        let size = meta.len();
        let direct = if mode.direct {
            let align = direct_alignment(&file).map_err(|source| BlockError::DirectRefused {
                path: path.to_path_buf(),
                source,
            })?;
            if size % align.offset != 0 {
                return Err(BlockError::DirectSize {
                    path: path.to_path_buf(),
                    size,
                    align: align.offset,
                });
            }
            Some(Direct {
                align,
                bounce: Bounce::default(),
            })
        } else {
            None
        };
        Ok((Image { file, direct }, size))
    }

    /// Whether the image is open with `O_DIRECT`.
    pub fn is_direct(&self) -> bool {
        self.direct.is_some()
    }

    /// The `O_DIRECT` alignment in use (`None` through the page cache).
    pub fn alignment(&self) -> Option<Alignment> {
        self.direct.as_ref().map(|d| d.align)
    }

    /// Another handle on the same open file (same flags), with a bounce
    /// buffer of its own.
    pub fn try_clone(&self) -> io::Result<Image> {
        Ok(Image {
            file: self.file.try_clone()?,
            direct: self.direct.as_ref().map(|d| Direct {
                align: d.align,
                bounce: Bounce::default(),
            }),
        })
    }

    /// Reads `len` bytes at `offset`.
    pub fn read_at(&mut self, offset: u64, len: usize) -> io::Result<Vec<u8>> {
        let Some(direct) = &mut self.direct else {
            let mut buf = vec![0u8; len];
            self.file.read_exact_at(&mut buf, offset)?;
            return Ok(buf);
        };
        let (start, span) = widen(offset, len, direct.align.offset)?;
        let buf = direct.bounce.get(span, buffer_align(direct.align));
        self.file.read_exact_at(buf, start)?;
        let skip = (offset - start) as usize;
        Ok(buf[skip..skip + len].to_vec())
    }

    /// Writes `data` at `offset`.
    pub fn write_at(&mut self, data: &[u8], offset: u64) -> io::Result<()> {
        let Some(direct) = &mut self.direct else {
            return self.file.write_all_at(data, offset);
        };
        let block = direct.align.offset;
        let (start, span) = widen(offset, data.len(), block)?;
        let buf = direct.bounce.get(span, buffer_align(direct.align));
        let head = (offset - start) as usize;
        let end = head + data.len();
        let block = block as usize;
        if head != 0 {
            self.file.read_exact_at(&mut buf[..block], start)?;
        }
        // The last block, unless it is the first one and was just read.
        if end % block != 0 && !(head != 0 && span == block) {
            let last = span - block;
            self.file
                .read_exact_at(&mut buf[last..], start + last as u64)?;
        }
        buf[head..end].copy_from_slice(data);
        self.file.write_all_at(buf, start)
    }

    /// fdatasync.
    pub fn sync_data(&self) -> io::Result<()> {
        self.file.sync_data()
    }

    /// The file.
    pub fn file(&self) -> &File {
        &self.file
    }

    /// With `O_DIRECT`, a coarser offset alignment than the file system's
    /// (a multiple of it), for tests of the widening on any file system.
    #[cfg(test)]
    pub(super) fn with_offset_alignment(mut self, offset: u64) -> Self {
        if let Some(d) = &mut self.direct {
            assert!(offset % d.align.offset == 0);
            d.align.offset = offset;
        }
        self
    }
}

/// The aligned range around `len` bytes at `offset`: its start and length.
fn widen(offset: u64, len: usize, block: u64) -> io::Result<(u64, usize)> {
    let start = offset - offset % block;
    let end = offset
        .checked_add(len as u64)
        .and_then(|e| e.checked_next_multiple_of(block))
        .ok_or_else(|| io::Error::from(io::ErrorKind::InvalidInput))?;
    let span =
        usize::try_from(end - start).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    Ok((start, span))
}

fn buffer_align(align: Alignment) -> usize {
    align.memory.max(DEFAULT_ALIGN) as usize
}

/// The file system's `O_DIRECT` alignment for `file` (`statx` with
/// `STATX_DIOALIGN`); 4096 for both when it does not report one. An
/// error when it reports that the file does not support direct I/O.
fn direct_alignment(file: &File) -> io::Result<Alignment> {
    let fallback = Alignment {
        memory: DEFAULT_ALIGN,
        offset: DEFAULT_ALIGN,
    };
    // SAFETY: `statx` is plain data; all zeroes is a valid value.
    let mut stx: libc::statx = unsafe { std::mem::zeroed() };
    // SAFETY: the descriptor is open for the call's duration, the path is
    // a NUL-terminated empty string (AT_EMPTY_PATH: the descriptor
    // itself), and `stx` is a valid, writable `statx` the kernel fills.
    let rc = unsafe {
        libc::statx(
            file.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_EMPTY_PATH,
            libc::STATX_DIOALIGN,
            &mut stx,
        )
    };
    if rc != 0 {
        let e = io::Error::last_os_error();
        return match e.raw_os_error() {
            // No statx (old kernel or a seccomp profile): assume the most.
            Some(libc::ENOSYS) | Some(libc::EPERM) => Ok(fallback),
            _ => Err(e),
        };
    }
    if stx.stx_mask & libc::STATX_DIOALIGN == 0 {
        return Ok(fallback);
    }
    let (memory, offset) = (
        u64::from(stx.stx_dio_mem_align),
        u64::from(stx.stx_dio_offset_align),
    );
    if memory == 0 || offset == 0 {
        // statx(2): zero means the file does not support direct I/O.
        return Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "the file system reports no direct I/O for this file",
        ));
    }
    if !memory.is_power_of_two() || !offset.is_power_of_two() {
        return Ok(fallback);
    }
    Ok(Alignment { memory, offset })
}

#[cfg(test)]
#[path = "image_tests.rs"]
mod tests;
