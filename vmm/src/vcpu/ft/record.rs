// Copyright 2026 The ft-cloud-hypervisor authors.
// SPDX-License-Identifier: Apache-2.0

//! The recording modes: [`Record`] writes the log to a file; [`Primary`]
//! records into the logging channel of a pair, sends progress and runs on
//! unprotected when its backup is gone.
//!
//! Recording delivers host events only at a synchronous point (no guest
//! entry since its last exit) and logs each; at a kick, or at an interrupt
//! window the VMM asked for, it delivers only when an event or interrupt
//! waited longer than `max_delay_us`, after a micro-checkpoint.

use std::sync::{Arc, Mutex};

use ft_backend::channel::Position;
use ft_backend::debug::DebugEntry;
use ft_backend::{Checkpoint, EndReason, Event, ExitId, Recorder};

use super::pair::PrimaryPair;
use super::{lock, FtError};
use crate::vcpu::mode::{Delivery, ExecMode, ModeChange, Seam};

/// Recording into a log.
#[derive(Debug)]
pub struct Record {
    /// The log writer (shared with the recording clock).
    recorder: Arc<Mutex<Recorder>>,
    /// Forced-delivery bound.
    max_delay_ns: u64,
    /// VM clock time since which host input or a device event has been
    /// left waiting at kicks.
    waiting_since: Option<u64>,
    /// Checkpoints taken.
    seq: u64,
    /// Why deliveries were forced.
    forced: Forced,
}

/// Forced deliveries (micro-checkpoints) by their cause.
#[derive(Debug, Default, Clone, Copy)]
struct Forced {
    /// The interrupt window the VMM asked for opened.
    window: u64,
    /// The timer's deadline passed `max_delay_us` ago with no exit since.
    timer: u64,
    /// Host input or a device event waited `max_delay_us`.
    host: u64,
    /// Not forced: synchronous exits where events waited because the
    /// guest could not take an interrupt.
    deferred: u64,
}

impl Record {
    /// Records with `recorder`, forcing delivery after `max_delay_ns`.
    pub fn new(recorder: Arc<Mutex<Recorder>>, max_delay_ns: u64) -> Self {
        Record {
            recorder,
            max_delay_ns,
            waiting_since: None,
            seq: 0,
            forced: Forced::default(),
        }
    }

    /// Whether what waits since `oldest` waited `max_delay_us` at `now`.
    fn due(&self, oldest: Option<u64>, now: u64) -> bool {
        oldest.is_some_and(|t| now >= t.saturating_add(self.max_delay_ns))
    }

    /// The clock time since which the oldest event has been due (timer
    /// deadline passed, host input or a device event waiting).
    fn oldest_waiting(&self, timer_due: Option<u64>) -> Option<u64> {
        match (timer_due, self.waiting_since) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}

impl ExecMode for Record {
    fn after_exit(&mut self, exits: u64) {
        lock(&self.recorder).set_exit(exits);
    }

    fn at_input_seam(&mut self, seam: &mut dyn Seam) -> Delivery {
        let now = seam.now();
        if seam.host_waiting() && self.waiting_since.is_none() {
            self.waiting_since = Some(now);
        }
        if seam.at_sync() {
            // At an exit where the guest cannot take an interrupt (its
            // handler's EOI, a critical section), an event's interrupt
            // would wait for the interrupt window, which opens at an
            // instruction replay cannot find again: a checkpoint. The
            // events wait instead for a synchronous exit where the guest
            // can take it (the HLT or I/O access that follows), or
            // `max_delay_us` at most.
            let oldest = self.oldest_waiting(seam.timer_due(now));
            if oldest.is_none() || self.due(oldest, now) || seam.guest_ready() {
                self.waiting_since = None;
                return Delivery::Host;
            }
            self.forced.deferred += 1;
            return Delivery::Nothing;
        }
        // The guest opened the interrupt window the VMM asked for, at an
        // instruction replay cannot find again. Injecting there takes a
        // checkpoint; instead the interrupt waits like a host event: for
        // the next synchronous exit (typically the HLT or I/O access that
        // follows the guest's interrupt handler or critical section), or
        // `max_delay_us` at most, then through a checkpoint.
        let window = seam.window_pending();
        if window && self.waiting_since.is_none() {
            self.waiting_since = Some(now);
        }
        let timer_due = seam.timer_due(now);
        let oldest = self.oldest_waiting(timer_due);
        if !self.due(oldest, now) {
            return Delivery::Nothing;
        }
        if window {
            self.forced.window += 1;
        } else if timer_due == oldest {
            self.forced.timer += 1;
        } else {
            self.forced.host += 1;
        }
        Delivery::CheckpointThenHost
    }

    fn log_event(&self, at: ExitId, event: Event) {
        lock(&self.recorder).event(at, event);
    }

    fn log_debug(&self, entry: DebugEntry) {
        lock(&self.recorder).debug(entry);
    }

    fn next_checkpoint_seq(&mut self) -> u64 {
        self.seq += 1;
        self.seq
    }

    fn log_checkpoint(&mut self, checkpoint: Checkpoint) {
        lock(&self.recorder).checkpoint(checkpoint);
        self.waiting_since = None;
    }

    fn may_inject(&self, at_sync: bool) -> bool {
        at_sync
    }

    /// At the APIC timer's deadline; with an event already due but
    /// waiting for a synchronous exit, at the forced-delivery bound.
    fn kick_deadline(&self, deadline: Option<u64>, now: &dyn Fn() -> u64) -> Option<u64> {
        let now = now();
        match self.oldest_waiting(deadline.filter(|d| *d <= now)) {
            Some(t) => Some(t.saturating_add(self.max_delay_ns)),
            None => deadline,
        }
    }

    fn check(&mut self) -> Result<(), FtError> {
        lock(&self.recorder).check().map_err(FtError::Record)
    }

    fn finish(&mut self, reason: EndReason, digest: u64, _exits: u64) -> Result<(), FtError> {
        let mut rec = lock(&self.recorder);
        let stats = rec.stats();
        rec.end(reason, digest).map_err(FtError::Record)?;
        let done = rec.stats();
        log::info!(
            "fault tolerance: recorded {} events, {} clock reads, {} checkpoints ({} pages, largest {} bytes), {} log bytes ({} uncompressed)",
            stats.events,
            stats.clock_reads,
            stats.checkpoints,
            stats.checkpoint_pages,
            stats.largest_checkpoint_bytes,
            done.log_bytes,
            done.raw_log_bytes
        );
        log::info!(
            "fault tolerance: forced deliveries: {} at an interrupt window, {} for the timer, {} for host input or a device; {} deliveries deferred at exits with interrupts masked",
            self.forced.window,
            self.forced.timer,
            self.forced.host,
            self.forced.deferred
        );
        Ok(())
    }
}

/// The primary of a pair: records into the logging channel.
#[derive(Debug)]
pub struct Primary {
    record: Record,
    pair: PrimaryPair,
}

impl Primary {
    /// Records into the channel of `pair` with `record`'s recorder.
    pub fn new(record: Record, pair: PrimaryPair) -> Self {
        Primary { record, pair }
    }
}

impl ExecMode for Primary {
    fn after_exit(&mut self, exits: u64) {
        self.record.after_exit(exits);
        self.pair.primary.rule.set_position(exits);
    }

    fn at_input_seam(&mut self, seam: &mut dyn Seam) -> Delivery {
        self.record.at_input_seam(seam)
    }

    fn log_event(&self, at: ExitId, event: Event) {
        self.record.log_event(at, event);
    }

    fn log_debug(&self, entry: DebugEntry) {
        self.record.log_debug(entry);
    }

    fn next_checkpoint_seq(&mut self) -> u64 {
        self.record.next_checkpoint_seq()
    }

    fn log_checkpoint(&mut self, checkpoint: Checkpoint) {
        self.record.log_checkpoint(checkpoint);
    }

    fn may_inject(&self, at_sync: bool) -> bool {
        self.record.may_inject(at_sync)
    }

    fn kick_deadline(&self, deadline: Option<u64>, now: &dyn Fn() -> u64) -> Option<u64> {
        self.record.kick_deadline(deadline, now)
    }

    /// Sends progress when due and sleeps as long as the lag asks.
    fn before_entry(&mut self, exits: u64, clock: &dyn devices::clock::Clock) {
        let guest_ns = clock.now_ns();
        let now = std::time::Instant::now();
        if let Some(pos) = self.pair.progress_due(exits, guest_ns, now) {
            lock(&self.record.recorder).progress(pos);
        }
        let sleep = self.pair.throttle(exits, guest_ns, now);
        if !sleep.is_zero() {
            std::thread::sleep(sleep);
        }
    }

    /// A primary that won after losing its backup stops recording.
    fn turn(&mut self, exits: u64) -> Result<ModeChange, FtError> {
        if !self.pair.primary.unprotected() {
            return Ok(ModeChange::Same);
        }
        lock(&self.record.recorder).stop();
        log::warn!("fault tolerance: the backup is gone; running unprotected after exit {exits}");
        Ok(ModeChange::Unprotected)
    }

    /// A primary whose channel is lost waits for its watcher's tiebreak
    /// (it stops this process, or turns recording off).
    fn check(&mut self) -> Result<(), FtError> {
        if self.pair.primary.handle().lost().is_some() {
            let _ = lock(&self.record.recorder).check();
            return Ok(());
        }
        self.record.check()
    }

    fn finish(&mut self, reason: EndReason, digest: u64, exits: u64) -> Result<(), FtError> {
        let mut rec = lock(&self.record.recorder);
        let last = Position { exits, guest_ns: 0 };
        rec.progress(last);
        let ended = rec.end(reason, digest).map_err(FtError::Record);
        drop(rec);
        self.pair
            .primary
            .finish(last, std::time::Duration::from_secs(2));
        ended
    }
}
