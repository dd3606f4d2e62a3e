// Copyright 2026 The ft-cloud-hypervisor authors.
// SPDX-License-Identifier: Apache-2.0

//! Digests: of the guest state (memory and registers), for divergence
//! checks, and of the kernel and configuration, for the log header.

use xxhash_rust::xxh3::Xxh3;

/// A 64-bit digest of guest memory (each RAM region in address order) and
/// the vCPU's register bytes. Not cryptographic: it detects divergence,
/// it does not authenticate.
pub fn state_digest(memory: &[&[u8]], registers: &[u8]) -> u64 {
    let mut h = Xxh3::new();
    for region in memory {
        h.update(&(region.len() as u64).to_le_bytes());
        h.update(region);
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
