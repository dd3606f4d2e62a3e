// Copyright 2026 The ft-cloud-hypervisor authors.
// SPDX-License-Identifier: Apache-2.0

//! The replaying modes: [`Replay`] runs from a log file; [`Backup`]
//! replays a pair's stream as it arrives and goes live when it ends.
//!
//! Replay applies the log's events recorded at each exit and nothing from
//! the host, injects only at synchronous points (or right after a
//! checkpoint, with the recorded decision) and never asks for a kick.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

use ft_backend::debug::DebugEntry;
use ft_backend::{EndReason, Entry, ExitId, Replayer};

use super::pair::BackupPair;
use super::{lock, FtError};
use crate::vcpu::mode::{Delivery, ExecMode, ModeChange, Seam};

/// Replaying a log.
#[derive(Debug)]
pub struct Replay {
    /// The log (shared with the replay clock).
    replayer: Arc<Mutex<Replayer>>,
}

impl Replay {
    /// Replays `replayer`.
    pub fn new(replayer: Arc<Mutex<Replayer>>) -> Self {
        Replay { replayer }
    }
}

impl ExecMode for Replay {
    fn replays(&self) -> bool {
        true
    }

    fn after_exit(&mut self, exits: u64) {
        lock(&self.replayer).set_exit(exits);
    }

    fn at_input_seam(&mut self, _seam: &mut dyn Seam) -> Delivery {
        Delivery::Replayed
    }

    fn take_debug(
        &mut self,
        exit: u64,
        wanted: &dyn Fn(&DebugEntry) -> bool,
    ) -> Option<DebugEntry> {
        lock(&self.replayer).take_debug(exit, wanted)
    }

    fn has_debug(&self) -> bool {
        lock(&self.replayer).has_debug()
    }

    fn next_checkpoint_pages(&self) -> Option<(u64, BTreeSet<u64>)> {
        match lock(&self.replayer).peek() {
            Some(Entry::Checkpoint(c)) => Some((c.seq, c.pages.iter().map(|(g, _)| *g).collect())),
            _ => None,
        }
    }

    fn replayed_entry(&mut self, at: ExitId) -> Option<Entry> {
        lock(&self.replayer).next_input(|| at)
    }

    fn checkpoint_next(&self, exits: u64) -> bool {
        matches!(
            lock(&self.replayer).peek(),
            Some(Entry::Checkpoint(c)) if c.exit == exits
        )
    }

    fn end_here(&self) -> Option<EndReason> {
        lock(&self.replayer).end_here().map(|(reason, _)| reason)
    }

    fn may_inject(&self, at_sync: bool) -> bool {
        at_sync
    }

    fn waits_for_host(&self) -> bool {
        false
    }

    /// Never: events come from the log.
    fn kick_deadline(&self, _deadline: Option<u64>, _now: &dyn Fn() -> u64) -> Option<u64> {
        None
    }

    fn check(&mut self) -> Result<(), FtError> {
        let mut rep = lock(&self.replayer);
        rep.check_progress();
        rep.check().map_err(FtError::Replay)
    }

    fn finish(&mut self, reason: EndReason, digest: u64, _exits: u64) -> Result<(), FtError> {
        lock(&self.replayer)
            .finish(reason, digest)
            .map_err(FtError::Replay)
    }
}

/// The backup of a pair: replays the primary's stream, then goes live.
#[derive(Debug)]
pub struct Backup {
    replay: Replay,
    pair: BackupPair,
}

impl Backup {
    /// Replays the stream of `pair` with `replay`'s live replayer.
    pub fn new(replay: Replay, pair: BackupPair) -> Self {
        Backup { replay, pair }
    }
}

impl ExecMode for Backup {
    fn replays(&self) -> bool {
        true
    }

    fn after_exit(&mut self, exits: u64) {
        self.replay.after_exit(exits);
        self.pair.applied(exits);
    }

    fn at_input_seam(&mut self, seam: &mut dyn Seam) -> Delivery {
        self.replay.at_input_seam(seam)
    }

    fn take_debug(
        &mut self,
        exit: u64,
        wanted: &dyn Fn(&DebugEntry) -> bool,
    ) -> Option<DebugEntry> {
        self.replay.take_debug(exit, wanted)
    }

    fn has_debug(&self) -> bool {
        self.replay.has_debug()
    }

    fn next_checkpoint_pages(&self) -> Option<(u64, BTreeSet<u64>)> {
        self.replay.next_checkpoint_pages()
    }

    fn replayed_entry(&mut self, at: ExitId) -> Option<Entry> {
        self.replay.replayed_entry(at)
    }

    fn checkpoint_next(&self, exits: u64) -> bool {
        self.replay.checkpoint_next(exits)
    }

    fn end_here(&self) -> Option<EndReason> {
        self.replay.end_here()
    }

    fn may_inject(&self, at_sync: bool) -> bool {
        self.replay.may_inject(at_sync)
    }

    fn waits_for_host(&self) -> bool {
        false
    }

    fn kick_deadline(&self, deadline: Option<u64>, now: &dyn Fn() -> u64) -> Option<u64> {
        self.replay.kick_deadline(deadline, now)
    }

    /// When the stream ended with everything applied, goes live here.
    fn turn(&mut self, exits: u64) -> Result<ModeChange, FtError> {
        if !lock(&self.replay.replayer).at_live_end() {
            return Ok(ModeChange::Same);
        }
        if self.pair.stopping() {
            return Ok(ModeChange::Stop);
        }
        let guest_ns = self.pair.go_live(exits).map_err(FtError::GoLive)?;
        log::warn!(
            "fault tolerance: the primary is gone; live after exit {exits} at guest time {guest_ns} ns"
        );
        Ok(ModeChange::WentLive)
    }

    /// Tells the primary, which seeds this VMM again (the run ends here).
    fn diverged(&mut self, exit: u64, reason: &str) -> bool {
        self.pair.backup.report_diverged(exit, reason);
        true
    }

    fn check(&mut self) -> Result<(), FtError> {
        self.replay.check()
    }

    fn finish(&mut self, reason: EndReason, digest: u64, exits: u64) -> Result<(), FtError> {
        self.replay.finish(reason, digest, exits)
    }
}
