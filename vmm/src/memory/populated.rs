// Copyright 2026 The ft-cloud-hypervisor authors.
// SPDX-License-Identifier: Apache-2.0

//! Which pages of guest RAM the host has populated, so that a digest of
//! guest memory reads only those and counts the others as zeros.
//!
//! Guest RAM is private anonymous memory: a page the guest, a device or
//! the VMM never touched has no page behind it and reads as zeros. Reading
//! it anyway costs a page fault per 4 KiB page (the kernel maps its shared
//! zero page): the first full-memory digest of a 128 MiB guest took
//! 30-90 ms here, most of it in those faults, where hashing the bytes
//! takes ~10 ms. `/proc/self/pagemap` tells, eight bytes per page, whether
//! a page is present or swapped out; a page that is neither was never
//! populated (or was discarded, which for private anonymous memory also
//! means zeros). The digest is the same function of the bytes either way
//! ([`ft_backend::digest::state_digest_spans`]).

use std::fs::File;
use std::os::unix::fs::FileExt;

use ft_backend::digest::Span;
use vm_memory::GuestRegionMmap;

/// Host page size the pagemap describes.
const PAGE: usize = 4096;
/// Pagemap entry: the page is present in RAM.
const PM_PRESENT: u64 = 1 << 63;
/// Pagemap entry: the page is swapped out.
const PM_SWAPPED: u64 = 1 << 62;
/// Pagemap entries read at once.
const CHUNK: usize = 8192;

/// Whether `region` is private anonymous memory, where a page the host
/// never populated reads as zeros (guest RAM as [`super::create_guest_memory`]
/// maps it). Memory backed by a file or shared has contents outside this
/// process's page tables.
pub fn is_private_anonymous(region: &GuestRegionMmap) -> bool {
    let flags = region.flags();
    region.file_offset().is_none()
        && flags & libc::MAP_PRIVATE != 0
        && flags & libc::MAP_ANONYMOUS != 0
}

/// `bytes` (a region's mapping, page aligned) as digest spans: its
/// populated pages as bytes, runs of never-populated pages as zeros. With
/// `private_anonymous` false, or if the pagemap cannot be read, the whole
/// region is read.
pub fn digest_spans(bytes: &[u8], private_anonymous: bool) -> Vec<Span<'_>> {
    let whole = vec![Span::Bytes(bytes)];
    if !private_anonymous || bytes.as_ptr() as usize % PAGE != 0 || bytes.len() % PAGE != 0 {
        return whole;
    }
    let Ok(unpopulated) = unpopulated_pages(bytes.as_ptr() as usize, bytes.len() / PAGE) else {
        return whole;
    };
    let mut spans = Vec::new();
    let mut start = 0;
    while start < unpopulated.len() {
        let zero = unpopulated[start];
        let end = unpopulated[start..]
            .iter()
            .position(|&u| u != zero)
            .map_or(unpopulated.len(), |n| start + n);
        let (a, b) = (start * PAGE, end * PAGE);
        spans.push(if zero {
            Span::Zeros(b - a)
        } else {
            Span::Bytes(&bytes[a..b])
        });
        start = end;
    }
    spans
}

/// For each of the `pages` pages from virtual address `addr` (page
/// aligned) of this process: whether it is neither present nor swapped.
fn unpopulated_pages(addr: usize, pages: usize) -> std::io::Result<Vec<bool>> {
    let pagemap = File::open("/proc/self/pagemap")?;
    let mut out = Vec::with_capacity(pages);
    let mut buf = vec![0u8; CHUNK * 8];
    let mut page = addr / PAGE;
    while out.len() < pages {
        let n = (pages - out.len()).min(CHUNK);
        let bytes = &mut buf[..n * 8];
        pagemap.read_exact_at(bytes, (page * 8) as u64)?;
        out.extend(bytes.chunks_exact(8).map(|e| {
            let entry = u64::from_le_bytes(e.try_into().unwrap_or([0xff; 8]));
            entry & (PM_PRESENT | PM_SWAPPED) == 0
        }));
        page += n;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ft_backend::digest::{state_digest, state_digest_spans};
    use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion};

    fn region_bytes(mem: &GuestMemoryMmap) -> &[u8] {
        let r = mem.iter().next().unwrap();
        // SAFETY: the region's mapping is `len` bytes at `as_ptr()` and stays
        // mapped while `mem` lives; nothing else writes it in this test.
        unsafe { std::slice::from_raw_parts(r.as_ptr().cast_const(), r.len() as usize) }
    }

    #[test]
    fn untouched_pages_are_zeros_and_stay_untouched() {
        let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 1 << 20)]).unwrap();
        assert!(is_private_anonymous(mem.iter().next().unwrap()));
        mem.write_slice(&[7u8; 5000], GuestAddress(3 * PAGE as u64 + 10))
            .unwrap();
        let bytes = region_bytes(&mem);
        let spans = digest_spans(bytes, true);
        let kinds: Vec<(bool, usize)> = spans
            .iter()
            .map(|s| match s {
                Span::Bytes(b) => (true, b.len()),
                Span::Zeros(n) => (false, *n),
            })
            .collect();
        // Pages 3 and 4 were written; the rest never populated.
        assert_eq!(
            kinds,
            vec![
                (false, 3 * PAGE),
                (true, 2 * PAGE),
                (false, (1 << 20) - 5 * PAGE)
            ]
        );
        let sparse = state_digest_spans(&[&spans], b"r");
        // Hashing from the spans populated nothing.
        assert_eq!(digest_spans(bytes, true).len(), 3);
        // Reading every byte gives the same digest (and populates the
        // rest with the zero page, which the pagemap then shows present).
        assert_eq!(sparse, state_digest(&[bytes], b"r"));
        assert!(matches!(digest_spans(bytes, true)[..], [Span::Bytes(_)]));
        assert_eq!(
            sparse,
            state_digest_spans(&[&digest_spans(bytes, true)], b"r")
        );
    }

    #[test]
    fn other_memory_is_read_whole() {
        let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 1 << 16)]).unwrap();
        let bytes = region_bytes(&mem);
        assert!(matches!(digest_spans(bytes, false)[..], [Span::Bytes(b)] if b.len() == 1 << 16));
        // Not page aligned: read whole as well.
        assert!(matches!(
            digest_spans(&bytes[1..], true)[..],
            [Span::Bytes(_)]
        ));
    }
}
