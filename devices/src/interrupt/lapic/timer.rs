// Copyright 2026 The ft-cloud-hypervisor authors.
// SPDX-License-Identifier: Apache-2.0

//! The local APIC timer.
//!
//! The counter runs at 1 GHz before the divider (one bus cycle per
//! nanosecond, as KVM's in-kernel APIC), so a period lasts
//! `initial_count * divisor` nanoseconds of [`Clock`] time. The timer never
//! fires on its own: the VMM asks for [`TimerState::deadline`] and calls
//! [`TimerState::fire`] once that time has passed, at an exit of its
//! choosing. A periodic timer re-arms from its *programmed* deadline, so the
//! sequence of deadlines depends only on when the guest armed it.
//!
//! The clock is read only when the guest's action depends on the time:
//! arming, reading the current count, or changing the divider while armed.

use crate::clock::Clock;

/// Shortest period a periodic timer re-arms with, as KVM's
/// `min_timer_period_us` default (200 µs): a guest programming a tiny period
/// cannot make the VMM spin delivering ticks.
pub const MIN_PERIODIC_NS: u64 = 200_000;

/// Timer mode, LVT timer bits 18:17.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TimerMode {
    /// Counts down once, then stops.
    OneShot,
    /// Reloads the initial count at the end of each period.
    Periodic,
    /// TSC-deadline mode. Hidden from CPUID: the timer stays disarmed.
    TscDeadline,
    /// The reserved encoding 11b: treated like TSC-deadline (disarmed).
    Reserved,
}

impl TimerMode {
    /// The mode encoded in an LVT timer register value.
    pub fn from_lvt(lvt: u32) -> TimerMode {
        match (lvt >> 17) & 0x3 {
            0 => TimerMode::OneShot,
            1 => TimerMode::Periodic,
            2 => TimerMode::TscDeadline,
            _ => TimerMode::Reserved,
        }
    }

    /// Whether the count-down timer can run in this mode.
    fn counts(self) -> bool {
        matches!(self, TimerMode::OneShot | TimerMode::Periodic)
    }
}

/// A running count-down.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ArmedTimer {
    /// Clock time (ns) at which the current period ends.
    pub deadline_ns: u64,
    /// Length of one period in ns (`initial_count * divisor`).
    pub period_ns: u64,
}

/// Timer registers and the running count-down, if any.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TimerState {
    /// Initial count register.
    pub initial_count: u32,
    /// Divide configuration register (bits 0, 1 and 3).
    pub divide_config: u32,
    /// The count-down, while armed.
    pub armed: Option<ArmedTimer>,
}

/// Divisor encoded in a divide configuration register value.
pub fn divisor(divide_config: u32) -> u64 {
    // Bits 3,1,0 form a 3-bit value v; divide by 2^(v+1), with 111b = 1.
    let v = ((divide_config >> 1) & 0x4) | (divide_config & 0x3);
    1 << ((v + 1) & 0x7)
}

impl TimerState {
    /// The current divisor.
    pub fn divisor(&self) -> u64 {
        divisor(self.divide_config)
    }

    /// Length of a full period at the current settings, in ns.
    fn period_ns(&self) -> u64 {
        // At most 2^32 * 128 = 2^39: no overflow in u64.
        u64::from(self.initial_count) * self.divisor()
    }

    /// The guest wrote the initial count register: (re)arms from now, or
    /// stops the timer when `count` is 0. Ignored outside one-shot and
    /// periodic modes (the SDM ignores the write in TSC-deadline mode).
    pub fn write_initial_count(&mut self, count: u32, mode: TimerMode, clock: &dyn Clock) {
        if !mode.counts() {
            return;
        }
        self.initial_count = count;
        self.armed = None;
        if count == 0 {
            return;
        }
        let period_ns = self.period_ns();
        let now = clock.now_ns();
        self.armed = Some(ArmedTimer {
            deadline_ns: now.saturating_add(period_ns),
            period_ns,
        });
    }

    /// The guest wrote the divide configuration register. A running
    /// count-down keeps its progress: the time left is scaled by the ratio of
    /// the new divisor to the old one.
    pub fn write_divide_config(&mut self, value: u32, clock: &dyn Clock) {
        let old = self.divisor();
        self.divide_config = value & super::registers::TIMER_DIVIDE_WRITABLE;
        let new = self.divisor();
        if old == new {
            return;
        }
        let period_ns = self.period_ns();
        if let Some(armed) = self.armed.as_mut() {
            let now = clock.now_ns();
            armed.period_ns = period_ns;
            if armed.deadline_ns > now {
                let left = u128::from(armed.deadline_ns - now);
                let scaled = left * u128::from(new) / u128::from(old);
                let scaled = u64::try_from(scaled).unwrap_or(u64::MAX);
                armed.deadline_ns = now.saturating_add(scaled);
            }
        }
    }

    /// The guest changed the LVT timer mode from `old` to `new`. Switching
    /// between one-shot and periodic keeps the count-down; switching to or
    /// from TSC-deadline mode stops it and clears the initial count (as KVM).
    pub fn mode_changed(&mut self, old: TimerMode, new: TimerMode) {
        if old.counts() != new.counts() {
            self.armed = None;
            self.initial_count = 0;
        }
    }

    /// The current count register. Reads the clock only while armed.
    pub fn current_count(&self, mode: TimerMode, clock: &dyn Clock) -> u32 {
        let Some(armed) = self.armed else {
            return 0;
        };
        if !mode.counts() || armed.period_ns == 0 {
            return 0;
        }
        let now = clock.now_ns();
        let left_ns = if now < armed.deadline_ns {
            armed.deadline_ns - now
        } else if mode == TimerMode::Periodic {
            // The VMM has not called fire() yet: the counter reloaded at the
            // deadline and keeps counting in the following period(s).
            armed.period_ns - (now - armed.deadline_ns) % armed.period_ns
        } else {
            0
        };
        let count = left_ns / self.divisor();
        u32::try_from(count)
            .unwrap_or(u32::MAX)
            .min(self.initial_count)
    }

    /// Clock time at which the timer next expires, while armed.
    pub fn deadline(&self) -> Option<u64> {
        self.armed.map(|a| a.deadline_ns)
    }

    /// The deadline was reached: a periodic timer re-arms from the
    /// programmed deadline (at least [`MIN_PERIODIC_NS`] later), any other
    /// mode disarms. Returns whether the timer was armed (so fired).
    pub fn fire(&mut self, mode: TimerMode) -> bool {
        let Some(armed) = self.armed.as_mut() else {
            return false;
        };
        if mode == TimerMode::Periodic {
            let step = armed.period_ns.max(MIN_PERIODIC_NS);
            armed.deadline_ns = armed.deadline_ns.saturating_add(step);
        } else {
            self.armed = None;
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;

    #[test]
    fn divisor_encoding() {
        let expect = [
            (0x0, 2),
            (0x1, 4),
            (0x2, 8),
            (0x3, 16),
            (0x8, 32),
            (0x9, 64),
            (0xa, 128),
            (0xb, 1),
        ];
        for (reg, div) in expect {
            assert_eq!(divisor(reg), div, "divide config {reg:#x}");
        }
        // Bit 2 and high bits are ignored.
        assert_eq!(divisor(0xffff_fffb), 1);
        assert_eq!(divisor(0xffff_fff4), 2);
    }

    #[test]
    fn one_shot_arms_and_disarms() {
        let clock = ManualClock::new(1_000);
        let mut t = TimerState::default();
        t.write_divide_config(0x3, &clock); // divide by 16
        t.write_initial_count(625_000, TimerMode::OneShot, &clock);
        assert_eq!(t.deadline(), Some(1_000 + 10_000_000));
        assert_eq!(t.current_count(TimerMode::OneShot, &clock), 625_000);
        clock.advance(5_000_000);
        assert_eq!(t.current_count(TimerMode::OneShot, &clock), 312_500);
        clock.advance(6_000_000);
        assert_eq!(t.current_count(TimerMode::OneShot, &clock), 0);
        assert!(t.fire(TimerMode::OneShot));
        assert_eq!(t.deadline(), None);
        assert!(!t.fire(TimerMode::OneShot));
        assert_eq!(t.current_count(TimerMode::OneShot, &clock), 0);
    }

    #[test]
    fn zero_count_stops() {
        let clock = ManualClock::new(0);
        let mut t = TimerState::default();
        t.write_initial_count(10, TimerMode::Periodic, &clock);
        assert!(t.deadline().is_some());
        t.write_initial_count(0, TimerMode::Periodic, &clock);
        assert_eq!(t.deadline(), None);
    }

    #[test]
    fn tsc_deadline_mode_ignores_initial_count() {
        let clock = ManualClock::new(0);
        let mut t = TimerState::default();
        t.write_initial_count(10, TimerMode::TscDeadline, &clock);
        assert_eq!(t.deadline(), None);
        assert_eq!(t.initial_count, 0);
        t.write_initial_count(10, TimerMode::OneShot, &clock);
        t.mode_changed(TimerMode::OneShot, TimerMode::TscDeadline);
        assert_eq!(t.deadline(), None);
        assert_eq!(t.initial_count, 0);
    }

    #[test]
    fn periodic_rearms_from_programmed_deadline() {
        let clock = ManualClock::new(0);
        let mut t = TimerState::default();
        t.write_divide_config(0x0, &clock); // divide by 2
        t.write_initial_count(500_000, TimerMode::Periodic, &clock); // 1 ms
        assert_eq!(t.deadline(), Some(1_000_000));
        // The VMM notices late; the next deadline still follows the grid.
        clock.set(1_700_000);
        assert!(t.fire(TimerMode::Periodic));
        assert_eq!(t.deadline(), Some(2_000_000));
        // 0.3 ms left in the current period.
        assert_eq!(t.current_count(TimerMode::Periodic, &clock), 150_000);
        // Not fired for a while: the count keeps cycling.
        clock.set(3_250_000);
        assert_eq!(t.current_count(TimerMode::Periodic, &clock), 375_000);
        assert!(t.fire(TimerMode::Periodic));
        assert_eq!(t.deadline(), Some(3_000_000));
    }

    #[test]
    fn tiny_periodic_period_is_clamped_on_rearm() {
        let clock = ManualClock::new(0);
        let mut t = TimerState::default();
        t.write_divide_config(0xb, &clock); // divide by 1
        t.write_initial_count(1, TimerMode::Periodic, &clock);
        assert_eq!(t.deadline(), Some(1));
        t.fire(TimerMode::Periodic);
        assert_eq!(t.deadline(), Some(1 + MIN_PERIODIC_NS));
    }

    #[test]
    fn divide_change_scales_time_left() {
        let clock = ManualClock::new(0);
        let mut t = TimerState::default();
        t.write_divide_config(0x1, &clock); // 4
        t.write_initial_count(1_000, TimerMode::OneShot, &clock); // 4000 ns
        clock.set(1_000); // 3000 ns left = 750 counts
        t.write_divide_config(0x2, &clock); // 8: 750 counts = 6000 ns
        assert_eq!(t.deadline(), Some(7_000));
        assert_eq!(t.current_count(TimerMode::OneShot, &clock), 750);
        assert_eq!(t.armed.map(|a| a.period_ns), Some(8_000));
        // Same divisor: nothing moves.
        t.write_divide_config(0x2, &clock);
        assert_eq!(t.deadline(), Some(7_000));
    }

    #[test]
    fn huge_values_do_not_overflow() {
        let clock = ManualClock::new(u64::MAX - 10);
        let mut t = TimerState::default();
        t.write_divide_config(0xa, &clock); // 128
        t.write_initial_count(u32::MAX, TimerMode::Periodic, &clock);
        assert_eq!(t.deadline(), Some(u64::MAX));
        assert_eq!(t.current_count(TimerMode::Periodic, &clock), 0);
        t.fire(TimerMode::Periodic);
        assert_eq!(t.deadline(), Some(u64::MAX));
        // 10 ns left at divide 128 is 0 counts at divide 1.
        t.write_divide_config(0xb, &clock);
        assert_eq!(t.deadline(), Some(u64::MAX - 10));

        let clock = ManualClock::new(0);
        let mut t = TimerState::default();
        t.write_divide_config(0xa, &clock);
        t.write_initial_count(u32::MAX, TimerMode::OneShot, &clock);
        assert_eq!(t.deadline(), Some(u64::from(u32::MAX) * 128));
        assert_eq!(t.current_count(TimerMode::OneShot, &clock), u32::MAX);
    }

    #[test]
    fn one_shot_to_periodic_keeps_running() {
        let clock = ManualClock::new(0);
        let mut t = TimerState::default();
        t.write_initial_count(1_000_000, TimerMode::OneShot, &clock);
        t.mode_changed(TimerMode::OneShot, TimerMode::Periodic);
        assert_eq!(t.deadline(), Some(2_000_000));
        t.fire(TimerMode::Periodic);
        assert_eq!(t.deadline(), Some(4_000_000));
    }
}
