// Copyright 2026 The ft-cloud-hypervisor authors.
// SPDX-License-Identifier: Apache-2.0

//! The clock seam: guest-visible time recorded, or served from the log.

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

/// Serves time from the log; a read the log does not have is a
/// divergence (remembered by the replayer, the vCPU stops after the exit).
#[derive(Debug)]
pub struct ReplayClock {
    replayer: Arc<Mutex<Replayer>>,
}

impl ReplayClock {
    /// Serves the clock reads of `replayer`.
    pub fn new(replayer: Arc<Mutex<Replayer>>) -> Self {
        ReplayClock { replayer }
    }
}

impl Clock for ReplayClock {
    fn now_ns(&self) -> u64 {
        self.replayer
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clock_read()
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
