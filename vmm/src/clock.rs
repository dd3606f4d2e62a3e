// Copyright 2026 The ft-cloud-hypervisor authors.
// SPDX-License-Identifier: Apache-2.0

//! The VM's clock: host monotonic time that stands still while the VM is paused.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use devices::clock::Clock;

/// Nanoseconds since VM creation, minus the time spent paused.
#[derive(Debug)]
pub struct VmClock {
    origin: Instant,
    paused_total_ns: AtomicI64,
    paused_since: Mutex<Option<Instant>>,
}

impl VmClock {
    /// A clock reading zero now.
    pub fn new() -> Self {
        VmClock {
            origin: Instant::now(),
            paused_total_ns: AtomicI64::new(0),
            paused_since: Mutex::new(None),
        }
    }

    fn host_ns(&self) -> u64 {
        u64::try_from(self.origin.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    /// Stops time (the VM is paused). Idempotent.
    pub fn pause(&self) {
        let mut since = self.paused_since.lock().unwrap_or_else(|e| e.into_inner());
        if since.is_none() {
            *since = Some(Instant::now());
        }
    }

    /// Lets time run again. Idempotent.
    pub fn resume(&self) {
        let mut since = self.paused_since.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(t) = since.take() {
            let d = i64::try_from(t.elapsed().as_nanos()).unwrap_or(i64::MAX);
            self.paused_total_ns.fetch_add(d, Ordering::SeqCst);
        }
    }
}

/// Pausing the VM clock stops guest time (through a shared reference the
/// methods above do the same).
impl vm_migration::Pausable for VmClock {
    fn pause(&mut self) -> Result<(), vm_migration::MigratableError> {
        VmClock::pause(self);
        Ok(())
    }

    fn resume(&mut self) -> Result<(), vm_migration::MigratableError> {
        VmClock::resume(self);
        Ok(())
    }
}

impl Default for VmClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for VmClock {
    fn now_ns(&self) -> u64 {
        let since = self.paused_since.lock().unwrap_or_else(|e| e.into_inner());
        let host = match *since {
            Some(t) => u64::try_from((t - self.origin).as_nanos()).unwrap_or(u64::MAX),
            None => self.host_ns(),
        };
        let v = i128::from(host) - i128::from(self.paused_total_ns.load(Ordering::SeqCst));
        u64::try_from(v.max(0)).unwrap_or(u64::MAX)
    }
}

impl ft_backend::clock::ContinuableClock for VmClock {
    /// A backup going live: guest time continues from the last value it
    /// replayed (the offset absorbs the difference to this host's time).
    fn continue_from(&self, now_ns: u64) {
        let since = self.paused_since.lock().unwrap_or_else(|e| e.into_inner());
        let host = match *since {
            Some(t) => u64::try_from((t - self.origin).as_nanos()).unwrap_or(u64::MAX),
            None => self.host_ns(),
        };
        let offset = i128::from(host) - i128::from(now_ns);
        let offset = i64::try_from(offset).unwrap_or(if offset < 0 { i64::MIN } else { i64::MAX });
        self.paused_total_ns.store(offset, Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn stands_still_while_paused() {
        let c = VmClock::new();
        std::thread::sleep(Duration::from_millis(2));
        c.pause();
        let a = c.now_ns();
        std::thread::sleep(Duration::from_millis(20));
        let b = c.now_ns();
        assert_eq!(a, b);
        c.resume();
        std::thread::sleep(Duration::from_millis(2));
        let d = c.now_ns();
        assert!(d > b);
        assert!(d - b < 15_000_000, "paused time must not count: {}", d - b);
    }

    #[test]
    fn pausable_stops_time() {
        use vm_migration::Pausable;
        let mut c = VmClock::new();
        Pausable::pause(&mut c).unwrap();
        let a = c.now_ns();
        std::thread::sleep(Duration::from_millis(5));
        assert_eq!(c.now_ns(), a);
        Pausable::resume(&mut c).unwrap();
        std::thread::sleep(Duration::from_millis(2));
        assert!(c.now_ns() > a);
    }

    #[test]
    fn continues_from_a_given_time_forward_and_backward() {
        use ft_backend::clock::ContinuableClock;
        let c = VmClock::new();
        c.continue_from(5_000_000_000);
        let a = c.now_ns();
        assert!((5_000_000_000..5_100_000_000).contains(&a), "{a}");
        std::thread::sleep(Duration::from_millis(2));
        assert!(c.now_ns() >= a + 2_000_000);
        std::thread::sleep(Duration::from_millis(5));
        c.continue_from(1_000);
        let b = c.now_ns();
        assert!((1_000..100_000_000).contains(&b), "{b}");
    }
}
