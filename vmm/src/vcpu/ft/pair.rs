// Copyright 2026 The ft-cloud-hypervisor authors.
// SPDX-License-Identifier: Apache-2.0

//! The vCPU loop's side of a fault-tolerant pair.
//!
//! Primary ([`PrimaryPair`]): before each guest entry, progress is sent
//! when an output waits for it (and at least every half heartbeat while
//! the guest makes exits); the lag the backup reports slows the vCPU by a
//! feedback loop above `max_lag_ms`; when the backup is lost and this side
//! won the tiebreak, recording stops and the VM runs on unprotected.
//!
//! Backup ([`BackupPair`]): the replay reports how far it has got; when
//! the stream ended (the primary lost, this side won) and everything
//! received is applied, the VM goes live here: the clock continues from
//! the last replayed time, the devices attach their host backends and
//! re-issue what was in flight, and the guest runs on.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ft_backend::channel::{ChannelKey, DiskDigest, Position};
use ft_backend::clock::ReplayClock;
use ft_backend::live::LiveFeed;
use ft_backend::pair::backup::{Backup, BackupSetup};
use ft_backend::pair::primary::{Primary, PrimarySetup};
use ft_backend::pair::replayed::ReplayTime;
use ft_backend::pair::{channel_config, file_digest, PairState, PairStatus};
use ft_backend::tiebreak::Tiebreaker;

use crate::config::{
    parse_tcp_address, DiskMode, FaultToleranceConfig, FaultToleranceMode, VmConfig,
};

/// Errors setting up a side of a pair.
#[derive(Debug, thiserror::Error)]
pub enum PairError {
    /// The settings do not make a pair.
    #[error("invalid pair settings")]
    Settings(#[source] crate::config::FaultToleranceError),
    /// The key file.
    #[error("the pair's key")]
    Key(#[source] ft_backend::channel::KeyError),
    /// The tiebreaker.
    #[error("the pair's tiebreaker")]
    Tiebreaker(#[source] ft_backend::tiebreak::TiebreakError),
    /// A disk image could not be read for its digest.
    #[error("cannot read disk image {path} for its digest")]
    DiskDigest {
        /// The image.
        path: std::path::PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The primary could not start.
    #[error("cannot start the primary")]
    Primary(#[source] ft_backend::pair::primary::PrimaryError),
    /// The backup could not start.
    #[error("cannot start the backup")]
    Backup(#[source] ft_backend::pair::backup::BackupError),
}

/// A side of a pair, opened before the devices are built.
#[derive(Debug)]
pub enum PairStart {
    /// Connected to its backup.
    Primary(Primary),
    /// Receiving its primary's stream.
    Backup(Box<Backup>),
}

impl PairStart {
    /// What the API shows.
    pub fn status(&self) -> Arc<PairStatus> {
        match self {
            PairStart::Primary(p) => p.status.clone(),
            PairStart::Backup(b) => b.status.clone(),
        }
    }
}

fn disk_digests(
    config: &VmConfig,
    ft: &FaultToleranceConfig,
) -> Result<Vec<DiskDigest>, PairError> {
    if ft.disks != DiskMode::Separate {
        return Ok(Vec::new());
    }
    let mut v = Vec::new();
    for (i, d) in config
        .disks
        .as_deref()
        .unwrap_or_default()
        .iter()
        .enumerate()
    {
        let path = d.path.clone().unwrap_or_default();
        let digest = file_digest(&path).map_err(|source| PairError::DiskDigest {
            path: path.clone(),
            source,
        })?;
        v.push(DiskDigest {
            id: d.id.clone().unwrap_or_else(|| format!("_disk{i}")),
            digest,
        });
    }
    Ok(v)
}

/// Opens the pair `config` asks for: a primary connects to its backup
/// (bounded), a backup waits for its primary and its stream's setup.
/// `None` unless `config` is one side of a pair.
pub fn open_pair(config: &VmConfig, config_digest: u64) -> Result<Option<PairStart>, PairError> {
    let Some(ft) = config.fault_tolerance.as_ref().filter(|f| f.is_pair()) else {
        return Ok(None);
    };
    let key_path = ft.key.clone().unwrap_or_default();
    let key = ChannelKey::load(&key_path).map_err(PairError::Key)?;
    let tiebreaker: Tiebreaker = ft
        .tiebreaker
        .as_deref()
        .unwrap_or_default()
        .parse()
        .map_err(PairError::Tiebreaker)?;
    let channel = channel_config(ft.heartbeat_ms, ft.timeout_ms);
    let disks = disk_digests(config, ft)?;
    let addr = |option, v: &Option<String>| -> Result<SocketAddr, PairError> {
        parse_tcp_address(option, v.as_deref().unwrap_or_default()).map_err(PairError::Settings)
    };
    Ok(Some(match ft.mode {
        FaultToleranceMode::Primary => PairStart::Primary(
            Primary::connect(PrimarySetup {
                peer: addr("peer", &ft.peer)?,
                key,
                tiebreaker,
                channel,
                config_digest,
                disks,
                shared_disks: ft.disks == DiskMode::Shared,
            })
            .map_err(PairError::Primary)?,
        ),
        _ => PairStart::Backup(Box::new(
            Backup::accept(BackupSetup {
                listen: addr("listen", &ft.listen)?,
                key,
                tiebreaker,
                channel,
                config_digest,
                disks,
                copy: ft.log.clone(),
                stop: crate::signals::received,
            })
            .map_err(PairError::Backup)?,
        )),
    }))
}

/// The primary's lag controller: a proportional-integral loop on the lag
/// above `max_lag`, giving the share of time the vCPU sleeps.
#[derive(Debug)]
pub struct Throttle {
    max_lag_ns: u64,
    /// Sleep share, 0..=0.9.
    share: f64,
    last: Instant,
    /// Sleep owed, carried between turns.
    owed: Duration,
}

impl Throttle {
    /// A controller aiming to keep the lag at or under `max_lag_ns`.
    pub fn new(max_lag_ns: u64) -> Self {
        Throttle {
            max_lag_ns: max_lag_ns.max(1),
            share: 0.0,
            last: Instant::now(),
            owed: Duration::ZERO,
        }
    }

    /// The share now, 0..=0.9.
    pub fn share(&self) -> f64 {
        self.share
    }

    /// Updates the share from the lag `lag_ns` seen now and returns how
    /// long the vCPU should sleep for the run time since the last call.
    pub fn update(&mut self, lag_ns: u64, now: Instant) -> Duration {
        let ran = now.saturating_duration_since(self.last);
        self.last = now;
        // Error relative to the target: > 0 above it.
        let error = (lag_ns as f64 - self.max_lag_ns as f64) / self.max_lag_ns as f64;
        let dt = ran.as_secs_f64().min(0.1);
        // Integral action (per second of run time), then a proportional
        // part; the share falls back when the lag is under the target.
        self.share = (self.share + error * 2.0 * dt).clamp(0.0, 0.9);
        let share = (self.share + 0.2 * error).clamp(0.0, 0.9);
        if share <= 0.0 {
            self.owed = Duration::ZERO;
            return Duration::ZERO;
        }
        self.owed += ran.mul_f64(share / (1.0 - share));
        if self.owed >= Duration::from_millis(1) {
            std::mem::take(&mut self.owed).min(Duration::from_millis(20))
        } else {
            Duration::ZERO
        }
    }
}

/// The primary's state in the vCPU loop.
#[derive(Debug)]
pub struct PrimaryPair {
    /// The connection, Output Rule and watcher.
    pub primary: Primary,
    last_sent: Position,
    last_sent_at: Instant,
    half_heartbeat: Duration,
    throttle: Throttle,
    last_throttle_check: Instant,
    /// (exits, guest time) every few ms: when this side passed each exit.
    samples: std::collections::VecDeque<(u64, u64)>,
}

/// Samples kept for the lag (at one per 5 ms: 20 s of history).
const MAX_SAMPLES: usize = 4096;

impl PrimaryPair {
    /// The primary's loop state.
    pub fn new(primary: Primary, heartbeat_ms: u64, max_lag_ms: u64) -> Self {
        PrimaryPair {
            primary,
            last_sent: Position::default(),
            last_sent_at: Instant::now(),
            half_heartbeat: Duration::from_millis(heartbeat_ms / 2),
            throttle: Throttle::new(max_lag_ms.saturating_mul(1_000_000)),
            last_throttle_check: Instant::now(),
            samples: std::collections::VecDeque::new(),
        }
    }

    /// Before a guest entry at exit `exits`, guest time `guest_ns`: the
    /// progress to send, if any. Outputs produced later at this same
    /// exit count belong to the next one (they wait for a later progress).
    pub fn progress_due(&mut self, exits: u64, guest_ns: u64, now: Instant) -> Option<Position> {
        let rule = &self.primary.rule;
        // Cheap checks first: `held` takes the rule's lock.
        let newest = rule.newest();
        let output_waits = newest > self.last_sent.exits && exits >= newest && rule.held() > 0;
        let periodic = exits > self.last_sent.exits
            && now.saturating_duration_since(self.last_sent_at) >= self.half_heartbeat;
        if !(output_waits || periodic) {
            return None;
        }
        let p = Position { exits, guest_ns };
        self.last_sent = p;
        self.last_sent_at = now;
        rule.set_position(exits + 1);
        Some(p)
    }

    /// The sleep the lag asks for now (checked every few ms).
    pub fn throttle(&mut self, exits: u64, guest_ns: u64, now: Instant) -> Duration {
        if now.saturating_duration_since(self.last_throttle_check) < Duration::from_millis(5) {
            return Duration::ZERO;
        }
        self.last_throttle_check = now;
        let applied = self.primary.handle().peer_applied();
        // Lag in time: how long ago (guest time) this side passed the exit
        // the backup has reached; none when the backup is at this exit.
        if self.samples.back().is_none_or(|(e, _)| *e < exits) {
            if self.samples.len() == MAX_SAMPLES {
                self.samples.pop_front();
            }
            self.samples.push_back((exits, guest_ns));
        }
        while self.samples.len() > 1 && self.samples[1].0 <= applied.exits {
            self.samples.pop_front();
        }
        let lag_ns = self
            .samples
            .iter()
            .find(|(e, _)| *e > applied.exits)
            .map_or(0, |(_, t)| guest_ns.saturating_sub(*t));
        let lag_exits = exits.saturating_sub(applied.exits);
        let sleep = self.throttle.update(lag_ns, now);
        self.primary.status.set_lag(
            lag_ns / 1000,
            lag_exits,
            (self.throttle.share() * 1000.0) as u64,
        );
        sleep
    }
}

/// The backup's state in the vCPU loop.
pub struct BackupPair {
    /// What it shows outside.
    pub status: Arc<PairStatus>,
    /// The stream.
    pub feed: Arc<LiveFeed>,
    /// The clock that goes live.
    pub clock: Arc<ReplayClock>,
    /// Attaches the devices' host backends at go-live.
    pub go_live_devices: Box<dyn FnMut() -> Result<(), String> + Send>,
    /// Keeps the channel open.
    pub backup: Box<Backup>,
    reported_at: u64,
    /// The replay's guest time for the frames it produces.
    time: ReplayTime,
}

impl std::fmt::Debug for BackupPair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BackupPair")
            .field("status", &self.status)
            .finish_non_exhaustive()
    }
}

impl BackupPair {
    /// The backup's loop state.
    pub fn new(
        backup: Box<Backup>,
        clock: Arc<ReplayClock>,
        go_live_devices: Box<dyn FnMut() -> Result<(), String> + Send>,
    ) -> Self {
        BackupPair {
            status: backup.status.clone(),
            feed: backup.feed.clone(),
            clock,
            go_live_devices,
            backup,
            reported_at: 0,
            time: ReplayTime::default(),
        }
    }

    /// After exit `exits`: reports how far the replay has got, now and
    /// then.
    pub fn applied(&mut self, exits: u64) {
        if exits > self.reported_at {
            self.reported_at = exits;
            let heard = self.feed.progress();
            self.time.heard(heard);
            let guest_ns = self.time.passed(exits, self.clock.last_replayed());
            self.backup.replayed.set_time(guest_ns);
            self.status.set_applied(Position { exits, guest_ns });
            self.status.set_sent(heard);
        }
    }

    /// Whether the VMM is stopping the backup (not a go-live).
    pub fn stopping(&self) -> bool {
        self.status.state() == PairState::Stopped
    }

    /// Goes live: clock, devices, status. Returns the guest time it went
    /// live at (ns).
    pub fn go_live(&mut self, exits: u64) -> Result<u64, String> {
        let t0 = Instant::now();
        let from = self
            .clock
            .last_replayed()
            .max(self.feed.progress().guest_ns);
        self.clock.go_live_from(from);
        (self.go_live_devices)()?;
        // The frames the primary may have held when it died, which the
        // replay produced too: sent again before the guest runs on.
        let resent = self.backup.replayed.resend();
        self.status.set_state(PairState::LiveUnprotected);
        self.status.event(
            "go-live",
            &[
                ("exits", exits.to_string()),
                ("guest_ns", from.to_string()),
                ("resent_frames", resent.to_string()),
                ("us", t0.elapsed().as_micros().to_string()),
            ],
        );
        self.status.event("unprotected", &[]);
        Ok(from)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_throttle_rises_above_the_target_and_falls_under_it() {
        let mut t = Throttle::new(100_000_000);
        let mut now = Instant::now();
        let mut slept = Duration::ZERO;
        for _ in 0..200 {
            now += Duration::from_millis(10);
            slept += t.update(300_000_000, now);
        }
        assert!(t.share() > 0.5, "{}", t.share());
        assert!(slept > Duration::from_millis(500), "{slept:?}");
        for _ in 0..200 {
            now += Duration::from_millis(10);
            t.update(10_000_000, now);
        }
        assert_eq!(t.share(), 0.0);
        assert_eq!(
            t.update(10_000_000, now + Duration::from_millis(10)),
            Duration::ZERO
        );
    }
}
