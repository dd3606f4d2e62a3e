// Copyright 2026 The ft-cloud-hypervisor authors.
// SPDX-License-Identifier: Apache-2.0

//! Digests: of the guest state (memory and registers), for divergence
//! checks, and of the kernel and configuration, for the log header.

use xxhash_rust::xxh3::Xxh3;

/// A 64-bit digest of guest memory (each RAM region in address order) and
/// the vCPU's register bytes. Not cryptographic: it detects divergence,
/// it does not authenticate.
pub fn state_digest(memory: &[&[u8]], registers: &[u8]) -> u64 {
    let regions: Vec<[Span<'_>; 1]> = memory.iter().map(|r| [Span::Bytes(r)]).collect();
    let views: Vec<&[Span<'_>]> = regions.iter().map(|r| &r[..]).collect();
    state_digest_spans(&views, registers)
}

/// A stretch of a memory region as the digest reads it: bytes, or a run
/// of zero bytes the caller knows without reading them (memory the host
/// never populated, whose first read would cost a page fault per page).
#[derive(Debug, Clone, Copy)]
pub enum Span<'a> {
    /// Bytes to read.
    Bytes(&'a [u8]),
    /// This many zero bytes.
    Zeros(usize),
}

impl Span<'_> {
    fn len(&self) -> usize {
        match self {
            Span::Bytes(b) => b.len(),
            Span::Zeros(n) => *n,
        }
    }
}

/// Zero bytes fed to the hash for [`Span::Zeros`]; small enough to stay in
/// the CPU's cache.
static ZEROS: [u8; 16384] = [0; 16384];

/// [`state_digest`] of memory given as spans per region: equal to it for
/// the same bytes, whatever the spans (a [`Span::Zeros`] hashes as that
/// many zero bytes).
pub fn state_digest_spans(memory: &[&[Span<'_>]], registers: &[u8]) -> u64 {
    let mut h = Xxh3::new();
    for region in memory {
        let len: usize = region.iter().map(Span::len).sum();
        h.update(&(len as u64).to_le_bytes());
        for span in region.iter() {
            match span {
                Span::Bytes(b) => h.update(b),
                Span::Zeros(mut n) => {
                    while n > 0 {
                        let k = n.min(ZEROS.len());
                        h.update(&ZEROS[..k]);
                        n -= k;
                    }
                }
            }
        }
    }
    h.update(registers);
    h.digest()
}

/// A 64-bit digest of a vCPU's registers given as words (the general
/// purpose ones, RIP and RFLAGS, in a fixed order): cheap enough for every
/// exit. Checkpoints carry the one of the registers their stretch of
/// execution started from, which replay compares before replacing its own.
pub fn registers_digest(words: &[u64]) -> u64 {
    let mut h = Xxh3::new();
    for w in words {
        h.update(&w.to_le_bytes());
    }
    h.digest()
}

/// A 64-bit digest of named parts (kernel bytes, configuration text...),
/// each length-prefixed so that moving bytes between parts changes it.
pub fn config_digest(parts: &[(&str, &[u8])]) -> u64 {
    let mut h = Xxh3::new();
    for (name, bytes) in parts {
        h.update(&(name.len() as u64).to_le_bytes());
        h.update(name.as_bytes());
        h.update(&(bytes.len() as u64).to_le_bytes());
        h.update(bytes);
    }
    h.digest()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spans_hash_as_the_bytes_they_stand_for() {
        let mut mem = vec![0u8; 5 * 16384 + 100];
        mem[3] = 7;
        mem[40_000] = 9;
        let whole = state_digest(&[&mem, b"x"], b"regs");
        let spans = [
            Span::Bytes(&mem[..4096]),
            Span::Zeros(30_000),
            Span::Bytes(&mem[34_096..40_960]),
            Span::Zeros(mem.len() - 40_960),
        ];
        let other = [Span::Bytes(b"x")];
        assert_eq!(whole, state_digest_spans(&[&spans, &other], b"regs"));
        // A run of zeros standing for bytes that are not zero differs.
        let wrong = [Span::Bytes(&mem[..4096]), Span::Zeros(mem.len() - 4096)];
        assert_ne!(whole, state_digest_spans(&[&wrong, &other], b"regs"));
        // Where one region ends still counts.
        let split = [Span::Bytes(&mem[..4096])];
        let rest = [Span::Bytes(&mem[4096..]), Span::Bytes(b"x")];
        assert_ne!(whole, state_digest_spans(&[&split, &rest], b"regs"));
    }

    #[test]
    fn digests_see_every_byte_and_boundary() {
        let a = vec![0u8; 8192];
        let mut b = a.clone();
        let d = state_digest(&[&a], b"regs");
        assert_eq!(d, state_digest(&[&b], b"regs"));
        b[4097] = 1;
        assert_ne!(d, state_digest(&[&b], b"regs"));
        assert_ne!(d, state_digest(&[&a], b"regz"));
        assert_ne!(
            state_digest(&[&a[..4096], &a[4096..]], b""),
            state_digest(&[&a], b"")
        );
        let c = config_digest(&[("kernel", b"abc"), ("cmdline", b"x")]);
        assert_eq!(c, config_digest(&[("kernel", b"abc"), ("cmdline", b"x")]));
        assert_ne!(c, config_digest(&[("kernel", b"ab"), ("cmdline", b"cx")]));
    }
}
