// Copyright 2026 The ft-cloud-hypervisor authors.
// SPDX-License-Identifier: Apache-2.0

//! How long a halted vCPU spins before it sleeps (halt polling).
//!
//! A halted vCPU that sleeps on a condition variable is woken by a futex
//! wake and a reschedule, which on a nested host costs an inter-processor
//! interrupt and tens of microseconds on each request/response round trip.
//! When the guest halts only to wait for a reply that comes soon (a disk or
//! network completion), spinning a little instead catches the wake-up at
//! once. KVM's in-kernel halt does the same (`halt_poll_ns`); this VMM
//! emulates HLT in user space, so it polls there.
//!
//! The window adapts per vCPU, as KVM's does: it grows (doubling from
//! [`START`] to [`MAX`]) while halts end by an event soon after polling
//! gave up, and it shrinks to nothing when a halt runs until its timer
//! deadline or longer than [`MAX`]: an idle guest waiting for its next
//! timer tick costs no spinning. Only host CPU time changes: what the vCPU
//! delivers, and at which exit, is the same as without polling.

use std::time::Duration;

/// The first window after a halt that a poll would have caught.
pub const START: Duration = Duration::from_micros(10);
/// The longest window (KVM's default `halt_poll_ns`).
pub const MAX: Duration = Duration::from_micros(200);

/// How one halt ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HaltEnd {
    /// An event came while polling.
    DuringPoll,
    /// An event (a kick: device work, input, a request) woke the sleeping
    /// vCPU after `halted` in all.
    Woken { halted: Duration },
    /// The timer deadline ended the halt: nothing to catch early.
    Deadline,
}

/// The adaptive polling window of one vCPU.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct HaltPoll {
    window: Duration,
}

impl HaltPoll {
    /// How long to poll before sleeping, at most `until_deadline`.
    pub fn window(&self, until_deadline: Duration) -> Duration {
        self.window.min(until_deadline)
    }

    /// Adapts the window to how a halt ended.
    pub fn record(&mut self, end: HaltEnd) {
        match end {
            HaltEnd::DuringPoll => {}
            HaltEnd::Woken { halted } if halted <= MAX => {
                self.window = (self.window * 2).clamp(START, MAX);
            }
            HaltEnd::Woken { .. } | HaltEnd::Deadline => self.window = Duration::ZERO,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_on_short_halts_and_stops_polling_on_long_ones() {
        let mut p = HaltPoll::default();
        assert_eq!(p.window(Duration::from_secs(1)), Duration::ZERO);
        let short = HaltEnd::Woken {
            halted: Duration::from_micros(80),
        };
        p.record(short);
        assert_eq!(p.window(Duration::from_secs(1)), START);
        for _ in 0..10 {
            p.record(short);
        }
        assert_eq!(p.window(Duration::from_secs(1)), MAX);
        // Never past the timer deadline.
        assert_eq!(
            p.window(Duration::from_micros(30)),
            Duration::from_micros(30)
        );
        // Caught while polling: the window stays.
        p.record(HaltEnd::DuringPoll);
        assert_eq!(p.window(Duration::from_secs(1)), MAX);
        // A halt that runs to the timer, or longer than the window could
        // ever cover, turns polling off.
        p.record(HaltEnd::Deadline);
        assert_eq!(p.window(Duration::from_secs(1)), Duration::ZERO);
        p.record(short);
        p.record(HaltEnd::Woken {
            halted: Duration::from_millis(5),
        });
        assert_eq!(p.window(Duration::from_secs(1)), Duration::ZERO);
    }
}
