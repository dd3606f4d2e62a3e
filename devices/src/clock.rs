// Copyright 2026 The ft-cloud-hypervisor authors.
// SPDX-License-Identifier: Apache-2.0

//! The one interface through which guest-visible time enters the devices.

use std::fmt::Debug;
use std::time::Instant;

/// Guest-visible time, in nanoseconds since the VM was created.
///
/// Every device register whose value depends on time (the APIC timer's
/// current count, the moment a one-shot or periodic timer is armed) reads it
/// here and nowhere else, so record/replay can log and replay the values.
pub trait Clock: Send + Sync + Debug {
    /// Nanoseconds since the VM's time origin. Monotonic.
    fn now_ns(&self) -> u64;
}

/// The host's monotonic clock, counted from the moment it was created.
#[derive(Debug, Clone, Copy)]
pub struct HostClock {
    origin: Instant,
}

impl HostClock {
    /// A clock whose zero is now.
    pub fn new() -> Self {
        HostClock {
            origin: Instant::now(),
        }
    }
}

impl Default for HostClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for HostClock {
    fn now_ns(&self) -> u64 {
        u64::try_from(self.origin.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }
}

/// A clock that only moves when told to: for tests and for replay.
#[derive(Debug, Default)]
pub struct ManualClock {
    now: std::sync::atomic::AtomicU64,
}

impl ManualClock {
    /// A manual clock reading `start` nanoseconds.
    pub fn new(start: u64) -> Self {
        ManualClock {
            now: std::sync::atomic::AtomicU64::new(start),
        }
    }

    /// Sets the time to `ns`.
    pub fn set(&self, ns: u64) {
        self.now.store(ns, std::sync::atomic::Ordering::SeqCst);
    }

    /// Moves time forward by `ns`.
    pub fn advance(&self, ns: u64) {
        self.now.fetch_add(ns, std::sync::atomic::Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now_ns(&self) -> u64 {
        self.now.load(std::sync::atomic::Ordering::SeqCst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_clock_is_monotonic() {
        let c = HostClock::new();
        let a = c.now_ns();
        let b = c.now_ns();
        assert!(b >= a);
    }

    #[test]
    fn manual_clock_moves_only_when_told() {
        let c = ManualClock::new(5);
        assert_eq!(c.now_ns(), 5);
        c.advance(10);
        assert_eq!(c.now_ns(), 15);
        c.set(3);
        assert_eq!(c.now_ns(), 3);
    }
}
