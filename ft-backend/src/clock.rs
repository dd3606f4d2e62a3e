// Copyright 2026 The ft-cloud-hypervisor authors.
// SPDX-License-Identifier: Apache-2.0

//! The clock seam: guest-visible time recorded, or served from the log.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use devices::clock::Clock;

use crate::recorder::Recorder;
use crate::replayer::Replayer;

/// Passes time through from `inner` and logs each value read.
#[derive(Debug)]
pub struct RecordingClock {
    inner: Arc<dyn Clock>,
    recorder: Arc<Mutex<Recorder>>,
}

impl RecordingClock {
    /// Logs the reads of `inner` into `recorder`.
    pub fn new(inner: Arc<dyn Clock>, recorder: Arc<Mutex<Recorder>>) -> Self {
        RecordingClock { inner, recorder }
    }
}

impl Clock for RecordingClock {
    fn now_ns(&self) -> u64 {
        let v = self.inner.now_ns();
        self.recorder
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clock_read(v);
        v
    }
}

/// A clock that can be set to continue from a given time (the VMM's
/// clock, when a backup goes live).
pub trait ContinuableClock: Clock {
    /// From now on, time continues from `now_ns`.
    fn continue_from(&self, now_ns: u64);
}

/// Serves time from the log; a read the log does not have is a
/// divergence (remembered by the replayer, the vCPU stops after the exit).
/// A backup's clock goes live where its stream ended: time continues from
/// the last value replayed, without a jump.
#[derive(Debug)]
pub struct ReplayClock {
    replayer: Arc<Mutex<Replayer>>,
    live: Option<Arc<dyn ContinuableClock>>,
    last: AtomicU64,
    is_live: AtomicBool,
}

impl ReplayClock {
    /// Serves the clock reads of `replayer`.
    pub fn new(replayer: Arc<Mutex<Replayer>>) -> Self {
        ReplayClock {
            replayer,
            live: None,
            last: AtomicU64::new(0),
            is_live: AtomicBool::new(false),
        }
    }

    /// A backup's clock: at the end of its stream it reads `live`.
    pub fn with_live(replayer: Arc<Mutex<Replayer>>, live: Arc<dyn ContinuableClock>) -> Self {
        ReplayClock {
            live: Some(live),
            ..Self::new(replayer)
        }
    }

    /// Switches to the live clock, which continues from the last time
    /// replayed (idempotent). False without a live clock.
    pub fn go_live(&self) -> bool {
        self.go_live_from(0)
    }

    /// As [`go_live`](Self::go_live), continuing from at least `floor`
    /// (the primary's guest time at its last progress: no guest-visible
    /// time was later than it, and timers armed before it are due near it).
    pub fn go_live_from(&self, floor: u64) -> bool {
        let Some(live) = &self.live else {
            return false;
        };
        if !self.is_live.swap(true, Ordering::SeqCst) {
            live.continue_from(self.last.load(Ordering::SeqCst).max(floor));
        }
        true
    }

    /// The last time served from the log.
    pub fn last_replayed(&self) -> u64 {
        self.last.load(Ordering::SeqCst)
    }
}

impl Clock for ReplayClock {
    fn now_ns(&self) -> u64 {
        if self.is_live.load(Ordering::SeqCst) {
            if let Some(live) = &self.live {
                return live.now_ns();
            }
        }
        let read = self
            .replayer
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clock_read();
        match read {
            Some(v) => {
                self.last.store(v, Ordering::SeqCst);
                v
            }
            None => match &self.live {
                Some(live) if self.go_live() => live.now_ns(),
                // A file replay never ends this way.
                _ => self.last.load(Ordering::SeqCst),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::entry::EndReason;
    use crate::log::{LogHeader, LogReader};
    use devices::clock::ManualClock;

    #[test]
    fn record_then_replay_the_same_values() {
        let dir = std::env::temp_dir().join(format!("ft-clock-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("c.log");
        let header = LogHeader {
            config_digest: 1,
            max_delay_us: 1,
        };
        let rec = Arc::new(Mutex::new(
            Recorder::create(&path, header, Default::default()).unwrap(),
        ));
        let host = Arc::new(ManualClock::new(100));
        let c = RecordingClock::new(host.clone(), rec.clone());
        assert_eq!(c.now_ns(), 100);
        host.advance(50);
        rec.lock().unwrap().set_exit(2);
        assert_eq!(c.now_ns(), 150);
        rec.lock().unwrap().end(EndReason::Shutdown, 0).unwrap();

        let rep = Arc::new(Mutex::new(Replayer::new(
            LogReader::open(&path, Some(1)).unwrap(),
        )));
        let c = ReplayClock::new(rep.clone());
        assert_eq!(c.now_ns(), 100);
        // The second read was at exit 2: reading it at exit 1 diverges.
        rep.lock().unwrap().set_exit(1);
        assert_eq!(c.now_ns(), 0);
        assert!(rep.lock().unwrap().check().is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
