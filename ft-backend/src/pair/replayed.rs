// Copyright 2026 The ft-cloud-hypervisor authors.
// SPDX-License-Identifier: Apache-2.0

//! The backup's output sink: the outputs its replay produces are not
//! performed (the primary performed them), but the most recent network
//! frames are kept, so that going live can send them again.
//!
//! Why: when the primary dies, the frames it had produced and still held
//! under the Output Rule (the backup's acknowledgement had not reached it
//! yet, or its releaser had not run) are lost with it. The backup's replay
//! produced the same frames, and the guest considers them sent: without a
//! resend the client waits for the guest's retransmission timer (1 s with
//! the test guest's smoltcp). So the frames produced during the last
//! `window` of guest time before the replay's end are sent again, in
//! order, right after the devices attach their taps and before the guest
//! runs on. Some of them may already have been released by the primary:
//! a duplicate TCP segment is ignored by the receiver (and answered with a
//! duplicate ack), as on any network that duplicates packets.
//!
//! Disk outputs are dropped as before: a backup re-issues the disk requests
//! in flight at go-live (the block device's own go-live).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};

use virtio_devices::{Output, OutputKind, OutputSink};

use crate::channel::Position;

/// At most this many frames are kept (a bound on memory and on the burst
/// sent at go-live), whatever the window.
pub const MAX_KEPT_FRAMES: usize = 256;

#[derive(Debug, Default)]
struct Kept {
    /// Frames with the guest time (ns) they were produced at, oldest first.
    frames: VecDeque<(u64, Output)>,
    /// Set by [`ReplayedOutputs::resend`]: later outputs are dropped.
    done: bool,
}

/// The backup's sink while it replays.
#[derive(Debug)]
pub struct ReplayedOutputs {
    kept: Mutex<Kept>,
    /// Guest time of the replay now (ns), set by the vCPU.
    now_ns: AtomicU64,
    /// How much guest time of frames is kept (ns).
    window_ns: u64,
    dropped: AtomicU64,
}

impl ReplayedOutputs {
    /// A sink keeping the network frames of the last `window_ns` of guest
    /// time (at most [`MAX_KEPT_FRAMES`]).
    pub fn new(window_ns: u64) -> Self {
        ReplayedOutputs {
            kept: Mutex::new(Kept::default()),
            now_ns: AtomicU64::new(0),
            window_ns,
            dropped: AtomicU64::new(0),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Kept> {
        self.kept.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The replay reached guest time `ns`: outputs from now on belong to it.
    pub fn set_time(&self, ns: u64) {
        self.now_ns.store(ns, Ordering::Relaxed);
    }

    /// Outputs dropped unperformed so far (older frames and disk outputs).
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Frames kept now.
    pub fn kept(&self) -> usize {
        self.lock().frames.len()
    }

    /// Going live: performs the frames kept, oldest first (the devices
    /// must have attached their taps), and drops every later output (the
    /// devices send to their new sink from now on). Returns how many were
    /// sent.
    pub fn resend(&self) -> usize {
        let frames = {
            let mut k = self.lock();
            k.done = true;
            std::mem::take(&mut k.frames)
        };
        let now = self.now_ns.load(Ordering::Relaxed);
        let mut n = 0;
        for (at, output) in frames {
            if now.saturating_sub(at) <= self.window_ns {
                output.release();
                n += 1;
            } else {
                self.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
        n
    }
}

impl OutputSink for ReplayedOutputs {
    fn submit(&self, output: Output) {
        if !matches!(output.kind, OutputKind::NetFrame { .. }) {
            self.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let now = self.now_ns.load(Ordering::Relaxed);
        let mut k = self.lock();
        if k.done {
            drop(k);
            self.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let mut old = 0;
        while k.frames.len() >= MAX_KEPT_FRAMES
            || k.frames
                .front()
                .is_some_and(|(at, _)| now.saturating_sub(*at) > self.window_ns)
        {
            k.frames.pop_front();
            old += 1;
        }
        k.frames.push_back((now, output));
        drop(k);
        self.dropped.fetch_add(old, Ordering::Relaxed);
    }
}

/// How many progress points wait to be passed at most (the replay passes
/// them in order; beyond this the newest replaces the last).
const MAX_PENDING_POINTS: usize = 1024;

/// The replay's guest time, for stamping the frames it produces: the
/// latest of the clock reads it replayed and the guest time of the
/// primary's progress points it has passed. A guest that reads the clock
/// through the VMM rarely (Linux keeps time with the TSC and kvmclock) would
/// otherwise keep one time for minutes, and every frame would look recent
/// at go-live.
#[derive(Debug, Default)]
pub struct ReplayTime {
    /// Progress points heard and not yet passed, by exit.
    pending: VecDeque<Position>,
    /// The latest guest time known to be passed (ns).
    passed_ns: u64,
}

impl ReplayTime {
    /// The primary said it reached `p`.
    pub fn heard(&mut self, p: Position) {
        let full = self.pending.len() >= MAX_PENDING_POINTS;
        match self.pending.back_mut() {
            Some(last) if p.exits <= last.exits => {}
            Some(last) if full => *last = p,
            _ => self.pending.push_back(p),
        }
    }

    /// The replay finished exit `exits`, its last replayed clock read
    /// being `clock_ns`: the guest time now (never going back).
    pub fn passed(&mut self, exits: u64, clock_ns: u64) -> u64 {
        while let Some(p) = self.pending.front().filter(|p| p.exits <= exits) {
            self.passed_ns = self.passed_ns.max(p.guest_ns);
            self.pending.pop_front();
        }
        self.passed_ns = self.passed_ns.max(clock_ns);
        self.passed_ns
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    fn frame(log: &Arc<Mutex<Vec<u32>>>, n: u32) -> Output {
        let log = log.clone();
        Output::new(
            "net0",
            OutputKind::NetFrame { len: 60 },
            Box::new(move || log.lock().unwrap().push(n)),
        )
    }

    #[test]
    fn going_live_resends_the_frames_of_the_window_in_order() {
        let sent = Arc::new(Mutex::new(Vec::new()));
        let sink = ReplayedOutputs::new(100);
        for n in 0..10u32 {
            sink.set_time(u64::from(n) * 30);
            sink.submit(frame(&sent, n));
        }
        // Replaying performs nothing.
        assert!(sent.lock().unwrap().is_empty());
        // Guest time 270: frames at 180 ns and later are in the window.
        assert_eq!(sink.resend(), 4);
        assert_eq!(*sent.lock().unwrap(), vec![6, 7, 8, 9]);
        // After going live nothing more is kept.
        sink.submit(frame(&sent, 99));
        assert_eq!(sink.resend(), 0);
        assert_eq!(sink.kept(), 0);
        assert_eq!(*sent.lock().unwrap(), vec![6, 7, 8, 9]);
    }

    #[test]
    fn disk_outputs_are_dropped_and_the_frames_are_bounded() {
        let sent = Arc::new(Mutex::new(Vec::new()));
        let sink = ReplayedOutputs::new(u64::MAX);
        let disk = sent.clone();
        sink.submit(Output::new(
            "disk0",
            OutputKind::DiskFlush,
            Box::new(move || disk.lock().unwrap().push(1000)),
        ));
        for n in 0..(MAX_KEPT_FRAMES as u32 + 10) {
            sink.submit(frame(&sent, n));
        }
        assert_eq!(sink.kept(), MAX_KEPT_FRAMES);
        assert_eq!(sink.dropped(), 11);
        assert_eq!(sink.resend(), MAX_KEPT_FRAMES);
        let sent = sent.lock().unwrap();
        assert_eq!(sent.first(), Some(&10));
        assert_eq!(sent.len(), MAX_KEPT_FRAMES);
    }

    #[test]
    fn the_replay_time_follows_the_progress_points_it_passed() {
        let mut t = ReplayTime::default();
        let at = |exits, guest_ns| Position { exits, guest_ns };
        // No clock read replayed since 5 ns; the primary reported exits 10
        // and 20 at 1000 and 2000 ns.
        t.heard(at(10, 1000));
        t.heard(at(20, 2000));
        t.heard(at(20, 2000));
        assert_eq!(t.passed(9, 5), 5);
        assert_eq!(t.passed(10, 5), 1000);
        assert_eq!(t.passed(19, 5), 1000);
        // A clock read beyond the last point counts too, and time never
        // goes back.
        assert_eq!(t.passed(19, 1500), 1500);
        assert_eq!(t.passed(25, 0), 2000);
        // Many points unpassed: the newest replaces the last kept.
        for k in 0..(MAX_PENDING_POINTS as u64 + 5) {
            t.heard(at(100 + k, 10_000 + k));
        }
        assert_eq!(
            t.passed(u64::MAX, 0),
            10_000 + MAX_PENDING_POINTS as u64 + 4
        );
    }
}
