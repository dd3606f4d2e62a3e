// Copyright 2026 The ft-cloud-hypervisor authors.
// SPDX-License-Identifier: Apache-2.0

//! The execution mode of the vCPU loop: off, record, replay, and the two
//! sides of a pair (primary: record into the logging channel; backup:
//! replay the channel's stream, then go live).
//!
//! The loop calls the mode at fixed points of each turn and never asks
//! which mode it is: the input seam ([`ExecMode::at_input_seam`]), the
//! pair's turn ([`ExecMode::turn`]), the injection gate
//! ([`ExecMode::may_inject`]), the guest entry ([`ExecMode::kick_deadline`],
//! [`ExecMode::before_entry`]), the exit ([`ExecMode::after_exit`],
//! [`ExecMode::check`]) and the end ([`ExecMode::finish`]). Each mode's
//! state (recorder, replayer, pair) is private to it. Shared mechanics
//! (exit count and identity, checkpoints, digests) stay in
//! [`FtContext`](super::FtContext).
//!
//! A trait rather than an enum with methods: each mode is a type of its
//! own with its own state and its own file, the primary and the backup
//! build on the record and replay modes by composition, and a mode that
//! ends (a primary unprotected, a backup gone live) is replaced by
//! [`Off`] without the loop knowing which it was.

use std::collections::BTreeSet;

use ft_backend::debug::DebugEntry;
use ft_backend::{Checkpoint, EndReason, Entry, Event, ExitId};

use super::ft::FtError;

/// What the loop can tell a mode at the input seam. Each answer is read
/// only when the mode asks (some cost a lock or a clock read).
pub trait Seam {
    /// The guest has not been entered since its last guest-caused exit
    /// (a synchronous point: events may be delivered here).
    fn at_sync(&self) -> bool;
    /// The VM clock now.
    fn now(&self) -> u64;
    /// The timer deadline, if it passed at `now`.
    fn timer_due(&self, now: u64) -> Option<u64>;
    /// Host input or a device event waits.
    fn host_waiting(&self) -> bool;
    /// The last exit was the interrupt window the VMM asked for and an
    /// interrupt is pending that the guest can take now.
    fn window_pending(&mut self) -> bool;
    /// The guest could take an interrupt now (interrupts enabled, no
    /// interrupt shadow).
    fn guest_ready(&mut self) -> bool;
}

/// What the input seam does at this turn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    /// Apply the host's events (and log them, when recording).
    Host,
    /// Apply the log's events and checkpoints recorded at this exit.
    Replayed,
    /// Leave the host's events waiting.
    Nothing,
    /// Take a micro-checkpoint, then apply the host's events as at a
    /// synchronous point (a forced delivery).
    CheckpointThenHost,
}

/// What the mode decided at a loop turn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModeChange {
    /// Nothing changed.
    Same,
    /// The primary lost its backup and won: recording stopped, the VM
    /// runs on unprotected (the mode becomes [`Off`]).
    Unprotected,
    /// The backup went live here (the mode becomes [`Off`]).
    WentLive,
    /// The backup's VMM is stopping (not a failover).
    Stop,
}

/// One execution mode of the vCPU loop.
pub trait ExecMode: Send + std::fmt::Debug {
    /// Whether exits are points of a log (record or replay): events are
    /// then delivered and interrupts injected only where the log can name
    /// the place.
    fn is_active(&self) -> bool {
        true
    }

    /// Whether the guest's inputs come from a log.
    fn replays(&self) -> bool {
        false
    }

    /// After guest-caused exit `exits` (counted, its identity known).
    fn after_exit(&mut self, _exits: u64) {}

    /// At the input seam: what to deliver now.
    fn at_input_seam(&mut self, seam: &mut dyn Seam) -> Delivery;

    /// An event was applied at exit `at`: log it (recording).
    fn log_event(&self, _at: ExitId, _event: Event) {}

    /// The number of the next micro-checkpoint (recording).
    fn next_checkpoint_seq(&mut self) -> u64 {
        0
    }

    /// A forced delivery's micro-checkpoint was taken: log it.
    fn log_checkpoint(&mut self, _checkpoint: Checkpoint) {}

    /// Recording with `debug_from`: logs a debug record.
    fn log_debug(&self, _entry: DebugEntry) {}

    /// Replay: the next debug record up to exit `exit` for which `wanted`
    /// holds (see [`ft_backend::Replayer::take_debug`]).
    fn take_debug(
        &mut self,
        _exit: u64,
        _wanted: &dyn Fn(&DebugEntry) -> bool,
    ) -> Option<DebugEntry> {
        None
    }

    /// Replay: whether the log carried debug records so far.
    fn has_debug(&self) -> bool {
        false
    }

    /// Replay: the sequence number and page addresses of the next entry,
    /// if it is a checkpoint.
    fn next_checkpoint_pages(&self) -> Option<(u64, BTreeSet<u64>)> {
        None
    }

    /// Replay: the next event or checkpoint recorded after the current
    /// exit, whose identity must be `at`.
    fn replayed_entry(&mut self, _at: ExitId) -> Option<Entry> {
        None
    }

    /// Replay: whether the next entry is a checkpoint at exit `exits`
    /// (the recording ran the guest to a kick there).
    fn checkpoint_next(&self, _exits: u64) -> bool {
        false
    }

    /// Replay: the recording's end, if reached at this exit.
    fn end_here(&self) -> Option<EndReason> {
        None
    }

    /// Whether interrupts may be injected now (`at_sync`: at a
    /// synchronous point).
    fn may_inject(&self, _at_sync: bool) -> bool {
        true
    }

    /// Whether a halted guest waits for host events (replay: the log's
    /// events for this exit are all there is).
    fn waits_for_host(&self) -> bool {
        true
    }

    /// When the timer thread must kick the vCPU, given the timer's
    /// `deadline` and the clock.
    fn kick_deadline(&self, deadline: Option<u64>, now: &dyn Fn() -> u64) -> Option<u64>;

    /// Before a guest entry at exit `exits`, guest time from `clock`.
    fn before_entry(&mut self, _exits: u64, _clock: &dyn devices::clock::Clock) {}

    /// At each loop turn, after the input seam: whether the mode ends.
    fn turn(&mut self, _exits: u64) -> Result<ModeChange, FtError> {
        Ok(ModeChange::Same)
    }

    /// After handling an exit: the first recording or replay error.
    fn check(&mut self) -> Result<(), FtError> {
        Ok(())
    }

    /// The guest ended (`reason`) after `exits` exits with state digest
    /// `digest`: log it (record) or check it (replay).
    fn finish(&mut self, _reason: EndReason, _digest: u64, _exits: u64) -> Result<(), FtError> {
        Ok(())
    }

    /// The replay diverged at `exit` (`reason`) and the run ends: a pair's
    /// backup tells its primary. Whether it did.
    fn diverged(&mut self, _exit: u64, _reason: &str) -> bool {
        false
    }
}

/// A plain run: host events at every turn, injection whenever the guest
/// can take an interrupt.
#[derive(Debug, Default)]
pub struct Off;

impl ExecMode for Off {
    fn is_active(&self) -> bool {
        false
    }

    fn at_input_seam(&mut self, _seam: &mut dyn Seam) -> Delivery {
        Delivery::Host
    }

    fn kick_deadline(&self, deadline: Option<u64>, _now: &dyn Fn() -> u64) -> Option<u64> {
        deadline
    }
}
