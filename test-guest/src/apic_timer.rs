//! Local APIC timer arithmetic.
//!
//! The APIC timer counts down at 1 GHz before its divider (as KVM's
//! in-kernel APIC and the project's VMM model it), so a periodic timer at
//! `hz` interrupts per second needs `1e9 / (divisor * hz)` counts.

use thiserror::Error;

/// Frequency of the APIC timer's input clock, in Hz.
pub const INPUT_HZ: u64 = 1_000_000_000;

/// The divider the guest programs: divide by 16.
pub const DIVISOR: u64 = 16;

/// Divide Configuration Register value for [`DIVISOR`] (bits 3,1,0 = 0b011).
pub const DIVIDE_CONFIG: u32 = 0b0011;

/// Highest timer frequency the workloads accept.
pub const MAX_HZ: u64 = 100_000;

/// A timer frequency the guest cannot program.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum TimerError {
    /// The frequency is zero or above [`MAX_HZ`].
    #[error("timer frequency {0} Hz is out of range (1..={MAX_HZ})")]
    FrequencyOutOfRange(u64),
}

/// Initial Count Register value for a periodic timer at `hz`.
pub fn initial_count(hz: u64) -> Result<u32, TimerError> {
    if hz == 0 || hz > MAX_HZ {
        return Err(TimerError::FrequencyOutOfRange(hz));
    }
    let count = INPUT_HZ / (DIVISOR * hz);
    // 1e9 / 16 fits in u32 and MAX_HZ keeps the count at least 1.
    u32::try_from(count).map_err(|_| TimerError::FrequencyOutOfRange(hz))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts() {
        assert_eq!(initial_count(100), Ok(625_000));
        assert_eq!(initial_count(1000), Ok(62_500));
        assert_eq!(initial_count(1), Ok(62_500_000));
        assert_eq!(initial_count(MAX_HZ), Ok(625));
    }

    #[test]
    fn out_of_range() {
        assert_eq!(initial_count(0), Err(TimerError::FrequencyOutOfRange(0)));
        assert_eq!(
            initial_count(MAX_HZ + 1),
            Err(TimerError::FrequencyOutOfRange(MAX_HZ + 1))
        );
    }
}
