// Copyright 2026 The ft-cloud-hypervisor authors.
// SPDX-License-Identifier: Apache-2.0

//! Divergence repair. A backup whose replay diverges from its primary's
//! stream tells the primary (the channel's `diverged` message), drops its
//! VM and waits for a seed again with the same settings. The primary is
//! alive: it does no tiebreak, goes on unprotected at once (the Output
//! Rule stops holding outputs) and seeds the same backup again by FT
//! VMotion, the guest running throughout.
//!
//! Primary side: [`watch`] follows the pair's channel after each seed;
//! when the backup reported a divergence it asks the control loop for a
//! re-seed ([`ControlEvent::Reseed`]), which runs
//! [`super::primary::add_backup`] again with the pair's request (see
//! [`Reseeds`]). Bounded: after [`MAX_ATTEMPTS`] failed attempts in a row
//! the VM stays live-unprotected and `vm.info` and an event say why.
//!
//! Backup side: the control loop sees the vCPU end on the divergence
//! ([`is_divergence`]) and calls `vm.ft-receive-backup` again with the
//! request it was started with ([`receive_request`] for a boot-time
//! backup).

use std::sync::mpsc::Sender;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ft_backend::channel::SessionError;
use ft_backend::pair::{PairState, PairStatus};
use ft_backend::ReplayError;
use serde_json::{json, Value};

use super::options::{FtAddBackupConfig, FtReceiveBackupConfig};
use crate::config::{ConsoleOutputMode, FaultToleranceMode, VmConfig};
use crate::vcpu::{FtError, VcpuError};
use crate::ControlEvent;

/// Failed re-seed attempts in a row after which the VM stays
/// unprotected. The backup needs a moment to drop its VM and listen again
/// (a first attempt can find nobody there on a loaded host), so one
/// attempt is too few; every attempt pauses the guest briefly and a
/// backup that keeps failing is for an operator to look at, so the
/// attempts stop after three (0.5, 1 and 2 s after the failure before).
pub const MAX_ATTEMPTS: u32 = 3;

/// Wait before attempt `attempt` (1-based): 0.5 s, 1 s, 2 s.
pub fn delay(attempt: u32) -> Duration {
    Duration::from_millis(250 << attempt.clamp(1, 4))
}

/// Whether the vCPU ended because the replay diverged from the stream
/// (or could not apply it): a backup then waits for a seed again.
pub fn is_divergence(e: &VcpuError) -> bool {
    matches!(
        e,
        VcpuError::Ft(FtError::Replay(
            ReplayError::Diverged { .. } | ReplayError::Apply { .. }
        ))
    )
}

/// What the primary's VMM knows of repairs (`vm.info`'s
/// `fault_tolerance.reseed`).
#[derive(Debug, Default)]
pub struct Reseeds {
    /// The request the pair was made with (the target of a re-seed).
    pub request: Option<FtAddBackupConfig>,
    /// Divergences its backups reported.
    pub divergences: u64,
    /// Re-seeds that completed.
    pub reseeded: u64,
    /// Failed attempts in a row.
    pub failed: u32,
    /// The last failure.
    pub last_error: Option<String>,
    /// The attempts stopped: the VM stays unprotected.
    pub abandoned: bool,
}

impl Reseeds {
    /// `vm.info`'s `fault_tolerance.reseed` object.
    pub fn info(&self) -> Value {
        json!({
            "divergences": self.divergences,
            "reseeded": self.reseeded,
            "failed_attempts": self.failed,
            "max_attempts": MAX_ATTEMPTS,
            "last_error": self.last_error,
            "abandoned": self.abandoned,
        })
    }
}

/// Asks the control loop for re-seed attempt `attempt` after
/// [`delay`]`(attempt)`.
pub fn schedule(events: Sender<ControlEvent>, attempt: u32) {
    let spawned = std::thread::Builder::new()
        .name("ft_reseed".into())
        .spawn(move || {
            std::thread::sleep(delay(attempt));
            let _ = events.send(ControlEvent::Reseed { attempt });
        });
    if let Err(e) = spawned {
        log::warn!("fault tolerance: cannot schedule a re-seed: {e}");
    }
}

/// Follows the primary's pair `status` until its channel ends; when the
/// backup ended it because its replay diverged, schedules the first
/// re-seed (once the pair went unprotected).
pub fn watch(status: Arc<PairStatus>, events: Sender<ControlEvent>) {
    let Some(handle) = status.handle() else {
        return;
    };
    let spawned = std::thread::Builder::new()
        .name("ft_diverged".into())
        .spawn(move || {
            let why = loop {
                if let Some(e) = handle.wait_lost(Duration::from_secs(3600)) {
                    break e;
                }
            };
            if !matches!(why, SessionError::PeerDiverged { .. }) {
                return;
            }
            // The pair's own watcher makes the VM unprotected first.
            let deadline = Instant::now() + Duration::from_secs(5);
            while status.state() != PairState::LiveUnprotected && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(2));
            }
            let _ = events.send(ControlEvent::BackupDiverged);
        });
    if let Err(e) = spawned {
        log::warn!("fault tolerance: cannot watch the pair for a divergence: {e}");
    }
}

/// A boot-time primary's re-seed request, from its configuration.
pub fn add_request(config: &VmConfig) -> Option<FtAddBackupConfig> {
    let ft = config.fault_tolerance.as_ref()?;
    if ft.mode != FaultToleranceMode::Primary {
        return None;
    }
    serde_json::from_value(json!({
        "peer": ft.peer.as_deref()?,
        "key": ft.key.as_ref()?,
        "tiebreaker": ft.tiebreaker.as_deref()?,
        "disks": ft.disks,
        "heartbeat_ms": ft.heartbeat_ms,
        "timeout_ms": ft.timeout_ms,
        "max_lag_ms": ft.max_lag_ms,
        "max_delay_us": ft.max_delay_us,
    }))
    .ok()
}

/// A boot-time backup's request to wait for a seed again, from its
/// configuration (its own disk images, taps and serial file).
pub fn receive_request(config: &VmConfig) -> Option<FtReceiveBackupConfig> {
    let ft = config.fault_tolerance.as_ref()?;
    if ft.mode != FaultToleranceMode::Backup {
        return None;
    }
    let disk_paths: Vec<_> = config
        .disks
        .iter()
        .flatten()
        .filter_map(|d| d.path.clone())
        .collect();
    let net_taps: Vec<_> = config
        .net
        .iter()
        .flatten()
        .filter_map(|n| n.tap.clone())
        .collect();
    let serial = match config.serial.mode {
        ConsoleOutputMode::File => config.serial.file.clone(),
        _ => None,
    };
    serde_json::from_value(json!({
        "listen": ft.listen.as_deref()?,
        "key": ft.key.as_ref()?,
        "tiebreaker": ft.tiebreaker.as_deref()?,
        "disks": ft.disks,
        "heartbeat_ms": ft.heartbeat_ms,
        "timeout_ms": ft.timeout_ms,
        "disk_paths": disk_paths,
        "net_taps": net_taps,
        "serial": serial,
        "spares": ft.spares,
    }))
    .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attempts_back_off_and_are_bounded() {
        assert_eq!(delay(1), Duration::from_millis(500));
        assert_eq!(delay(2), Duration::from_secs(1));
        assert_eq!(delay(3), Duration::from_secs(2));
        let r = Reseeds {
            failed: MAX_ATTEMPTS,
            abandoned: true,
            ..Reseeds::default()
        };
        assert_eq!(r.info()["abandoned"], true);
        assert_eq!(r.info()["max_attempts"], MAX_ATTEMPTS);
    }
}
