//! The compute workload's arithmetic: a SplitMix64 sequence.
//!
//! x₀ = 0, xᵢ₊₁ = mix(xᵢ + γ) with γ = 0x9E3779B97F4A7C15, all wrapping
//! mod 2⁶⁴, where `mix` is SplitMix64's finalizer.

/// SplitMix64's increment (the golden-ratio constant).
pub const GAMMA: u64 = 0x9E37_79B9_7F4A_7C15;

/// SplitMix64's finalizer.
#[inline(always)]
pub fn mix(mut z: u64) -> u64 {
    z ^= z >> 30;
    z = z.wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z ^= z >> 27;
    z = z.wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// One step of the sequence: xᵢ₊₁ from xᵢ.
#[inline(always)]
pub fn step(x: u64) -> u64 {
    mix(x.wrapping_add(GAMMA))
}

/// x_`steps`: the value after `steps` steps from x₀ = 0.
pub fn run(steps: u64) -> u64 {
    (0..steps).fold(0, |x, _| step(x))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_values() {
        assert_eq!(run(0), 0);
        assert_eq!(run(1), 0xe220_a839_7b1d_cdaf);
        assert_eq!(run(1000), 0xa17a_c4d6_0a6b_3f89);
    }

    #[test]
    fn first_step_matches_splitmix64_reference() {
        // The first output of the reference SplitMix64 generator seeded with
        // 0 is mix(0 + GAMMA): the same number as x₁.
        assert_eq!(step(0), 0xe220_a839_7b1d_cdaf);
        assert_eq!(mix(0), 0);
    }

    #[test]
    fn wraps_instead_of_overflowing() {
        // u64::MAX + GAMMA wraps; this would panic in a debug build if the
        // addition were not wrapping.
        assert_eq!(step(u64::MAX), mix(GAMMA - 1));
    }
}
