// Copyright 2026 The ft-cloud-hypervisor authors.
// SPDX-License-Identifier: Apache-2.0

//! A set of the 256 interrupt vectors, the shape of the IRR, ISR and TMR.

/// 256 bits, one per vector, stored as the eight 32-bit registers the APIC
/// exposes (word `i` holds vectors `32*i .. 32*i+31`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct VectorSet(pub [u32; 8]);

impl VectorSet {
    /// Adds `vector` to the set.
    pub fn set(&mut self, vector: u8) {
        self.0[usize::from(vector >> 5)] |= 1 << (vector & 31);
    }

    /// Removes `vector` from the set.
    pub fn clear(&mut self, vector: u8) {
        self.0[usize::from(vector >> 5)] &= !(1 << (vector & 31));
    }

    /// Whether `vector` is in the set.
    pub fn contains(&self, vector: u8) -> bool {
        self.0[usize::from(vector >> 5)] & (1 << (vector & 31)) != 0
    }

    /// The highest vector in the set (the highest priority), if any.
    pub fn highest(&self) -> Option<u8> {
        self.0
            .iter()
            .enumerate()
            .rev()
            .find(|(_, w)| **w != 0)
            .and_then(|(i, w)| u8::try_from(i * 32 + 31 - w.leading_zeros() as usize).ok())
    }

    /// The 32-bit register `index` (0..8); 0 for an index out of range.
    pub fn word(&self, index: usize) -> u32 {
        self.0.get(index).copied().unwrap_or(0)
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.0.iter().all(|w| *w == 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_clear_contains_highest() {
        let mut s = VectorSet::default();
        assert!(s.is_empty());
        assert_eq!(s.highest(), None);
        for v in [0u8, 31, 32, 0x41, 0xff] {
            s.set(v);
            assert!(s.contains(v));
        }
        assert_eq!(s.word(0), 0x8000_0001);
        assert_eq!(s.word(1), 1);
        assert_eq!(s.word(2), 2);
        assert_eq!(s.word(7), 0x8000_0000);
        assert_eq!(s.word(8), 0);
        assert_eq!(s.highest(), Some(0xff));
        s.clear(0xff);
        assert!(!s.contains(0xff));
        assert_eq!(s.highest(), Some(0x41));
        s.clear(0x41);
        s.clear(32);
        s.clear(31);
        assert_eq!(s.highest(), Some(0));
        s.clear(0);
        assert!(s.is_empty());
    }
}
