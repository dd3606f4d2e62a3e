// Copyright 2026 The ft-cloud-hypervisor authors.
// SPDX-License-Identifier: Apache-2.0

//! Redundancy restored by itself. A backup given `spares=tcp:H1:P1;...`
//! (`--fault-tolerance`, VM JSON `fault_tolerance.spares`, or the body of
//! `vm.ft-receive-backup`) that goes live after a failover seeds a new
//! backup by FT VMotion ([`super::primary::add_backup`]) with the first
//! spare that answers: VMMs waiting in `vm.ft-receive-backup`.
//!
//! Only a failover starts it: [`watch`] follows the backup's pair status
//! and asks the control loop for the first attempt
//! ([`ControlEvent::SpareSeed`]) when the backup went live (it won the
//! tiebreak). A backup that diverges drops its VM, one that loses the
//! tiebreak stops: neither goes live, neither seeds a spare.
//!
//! One attempt per control event, so that API requests are served
//! between attempts and a manual `vm.ft-add-backup` is ordered with them:
//! never two seeds at once, and an attempt that finds the VM protected
//! already (by a manual request) stops the automatic one. A failed attempt
//! tries the next spare at once; after the last one, the list is tried
//! again after [`delay`], [`MAX_ROUNDS`] times in all; then the VM stays
//! live-unprotected (an operator can still `vm.ft-add-backup`).

use std::sync::mpsc::Sender;
use std::sync::{Arc, Weak};
use std::time::Duration;

use ft_backend::pair::{PairState, PairStatus};
use serde_json::{json, Value};

use super::options::FtAddBackupConfig;
use crate::config::{FaultToleranceMode, VmConfig};
use crate::ControlEvent;

/// Rounds over the spare list before the VM stays unprotected. Each
/// attempt that reaches a spare pauses the guest briefly. Three rounds
/// ride out a spare that needs a moment to listen (it was itself just
/// restarted) and leave a list that keeps failing to an operator.
pub const MAX_ROUNDS: u32 = 3;

/// How long an attempt keeps trying to reach a spare (refused or
/// unreachable: retried, as any FT VMotion does, but not for the channel's
/// 10 s: the VM is unprotected meanwhile, a spare is meant to be waiting
/// already, and the next one may be).
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// Longest [`watch`] waits for a change of the backup's state before it
/// looks whether the status still exists (a change wakes it at once).
const WATCH_PERIOD: Duration = Duration::from_millis(500);

/// Wait before round `round` (1-based): none before the first (the VM is
/// unprotected from the failover on), then 1 s, 2 s.
pub fn delay(round: u32) -> Duration {
    match round {
        0 | 1 => Duration::ZERO,
        r => Duration::from_millis(500 << (r - 1).min(4)),
    }
}

/// One attempt: spare `index` of the list, in round `round` (1-based).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attempt {
    /// Which backup VM it is for ([`Spares::epoch`]): an attempt
    /// scheduled for a VM since dropped (a divergence) is ignored.
    pub epoch: u64,
    /// Which round over the list.
    pub round: u32,
    /// Which spare.
    pub index: usize,
}

impl Attempt {
    /// The first attempt, when the backup of `epoch` went live.
    pub fn first(epoch: u64) -> Attempt {
        Attempt {
            epoch,
            round: 1,
            index: 0,
        }
    }

    /// What follows a failed attempt over a list of `len` spares: the next
    /// spare at once, else the next round after [`delay`]; `None` after
    /// the last spare of the last round.
    pub fn after_failure(self, len: usize) -> Option<(Attempt, Duration)> {
        if self.index + 1 < len {
            Some((
                Attempt {
                    index: self.index + 1,
                    ..self
                },
                Duration::ZERO,
            ))
        } else if self.round < MAX_ROUNDS {
            let round = self.round + 1;
            Some((
                Attempt {
                    round,
                    index: 0,
                    ..self
                },
                delay(round),
            ))
        } else {
            None
        }
    }
}

/// Where the automatic seed is.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Phase {
    /// A backup that has not gone live.
    #[default]
    Standby,
    /// Went live: seeding a spare (or waiting between rounds).
    Seeding,
    /// A spare was seeded and protects the VM.
    Protected,
    /// Every round failed: the VM runs unprotected.
    Abandoned,
    /// A manual `vm.ft-add-backup` protected the VM first, or the VM
    /// stopped.
    Superseded,
}

impl Phase {
    fn as_str(self) -> &'static str {
        match self {
            Phase::Standby => "standby",
            Phase::Seeding => "seeding",
            Phase::Protected => "protected",
            Phase::Abandoned => "abandoned",
            Phase::Superseded => "superseded",
        }
    }
}

/// What the VMM knows of its spares (`vm.info`'s
/// `fault_tolerance.spares`).
#[derive(Debug, Default)]
pub struct Spares {
    /// Counts the backup VMs the spares were set for (each seed received
    /// after a divergence is another).
    pub epoch: u64,
    /// The spares, in order of preference.
    pub list: Vec<String>,
    /// Where the automatic seed is.
    pub phase: Phase,
    /// The spare being tried.
    pub trying: Option<String>,
    /// The spare seeded: the VM's backup now.
    pub in_use: Option<String>,
    /// The round under way (1-based; 0 before the first).
    pub round: u32,
    /// Failed attempts.
    pub failed: u32,
    /// The last failure: the spare and why.
    pub last_error: Option<String>,
}

impl Spares {
    /// The spares of a backup configured by `config` (none for any other
    /// role).
    pub fn for_config(config: &VmConfig) -> Spares {
        let list = config
            .fault_tolerance
            .as_ref()
            .filter(|ft| ft.mode == FaultToleranceMode::Backup)
            .map(|ft| ft.spares.clone())
            .unwrap_or_default();
        Spares {
            list,
            ..Spares::default()
        }
    }

    /// `vm.info`'s `fault_tolerance.spares` object.
    pub fn info(&self) -> Value {
        json!({
            "list": self.list,
            "state": self.phase.as_str(),
            "trying": self.trying,
            "in_use": self.in_use,
            "round": self.round,
            "max_rounds": MAX_ROUNDS,
            "failed_attempts": self.failed,
            "last_error": self.last_error,
        })
    }
}

/// The FT VMotion request to `spare` with the pair's settings of
/// `config` (a backup's): key, tiebreaker, disk mode and timings.
pub fn request(config: &VmConfig, spare: &str) -> Result<FtAddBackupConfig, String> {
    let ft = config
        .fault_tolerance
        .as_ref()
        .ok_or("the VM is not a side of a pair")?;
    let key = ft.key.as_ref().ok_or("the pair has no key")?;
    let tiebreaker = ft
        .tiebreaker
        .as_deref()
        .ok_or("the pair has no tiebreaker")?;
    let mut req: FtAddBackupConfig = serde_json::from_value(json!({
        "peer": spare,
        "key": key,
        "tiebreaker": tiebreaker,
        "disks": ft.disks,
        "heartbeat_ms": ft.heartbeat_ms,
        "timeout_ms": ft.timeout_ms,
        "max_lag_ms": ft.max_lag_ms,
        "max_delay_us": ft.max_delay_us,
    }))
    .map_err(|e| format!("cannot build the FT VMotion request: {e}"))?;
    req.connect_timeout = Some(CONNECT_TIMEOUT);
    Ok(req)
}

/// Follows a backup's pair `status`: once it went live (it won the
/// tiebreak after its primary was lost), asks the control loop for the
/// first spare seed. Ends without asking when the backup stops (lost the
/// tiebreak, the VMM stops) or its VM is dropped (a divergence).
pub fn watch(status: &Arc<PairStatus>, epoch: u64, events: Sender<ControlEvent>) {
    let status: Weak<PairStatus> = Arc::downgrade(status);
    let spawned = std::thread::Builder::new()
        .name("ft_spares".into())
        .spawn(move || {
            let mut seen = None;
            loop {
                let Some(s) = status.upgrade() else {
                    return;
                };
                let state = match seen {
                    None => s.state(),
                    Some(seen) => s.wait_for_change(seen, WATCH_PERIOD),
                };
                match state {
                    PairState::LiveUnprotected => {
                        let _ = events.send(ControlEvent::SpareSeed(Attempt::first(epoch)));
                        return;
                    }
                    PairState::Stopped => return,
                    _ => seen = Some(state),
                }
            }
        });
    if let Err(e) = spawned {
        log::warn!("fault tolerance: cannot watch the backup for its spares: {e}");
    }
}

/// Asks the control loop for `attempt` after `after`.
pub fn schedule(events: Sender<ControlEvent>, attempt: Attempt, after: Duration) {
    if after.is_zero() {
        let _ = events.send(ControlEvent::SpareSeed(attempt));
        return;
    }
    let spawned = std::thread::Builder::new()
        .name("ft_spares".into())
        .spawn(move || {
            std::thread::sleep(after);
            let _ = events.send(ControlEvent::SpareSeed(attempt));
        });
    if let Err(e) = spawned {
        log::warn!("fault tolerance: cannot schedule a spare seed: {e}");
    }
}

impl crate::Vmm {
    /// Spare seed `attempt`: FT VMotion of the live ex-backup to spare
    /// `attempt.index`. A failure goes on with the next spare or round
    /// ([`Attempt::after_failure`]); after the last, the VM stays
    /// unprotected.
    pub(crate) fn seed_spare(&mut self, attempt: Attempt) {
        if attempt.epoch != self.spares.epoch {
            return;
        }
        let Some(spare) = self.spares.list.get(attempt.index).cloned() else {
            return;
        };
        let Some(status) = self.vm.as_ref().and_then(|vm| vm.pair_status.clone()) else {
            self.spares_stop(None);
            return;
        };
        if status.role() != "backup" || status.state() != PairState::LiveUnprotected {
            // A manual `vm.ft-add-backup` protected the VM meanwhile.
            self.spares_stop(Some(&status));
            return;
        }
        let s = &mut self.spares;
        s.phase = Phase::Seeding;
        s.round = attempt.round;
        s.trying = Some(spare.clone());
        status.event(
            "spare-seed-started",
            &[
                ("spare", spare.clone()),
                ("round", attempt.round.to_string()),
            ],
        );
        let result = match self.config.as_ref().map(|c| request(c, &spare)) {
            Some(Ok(req)) => self
                .vm_ft_add_backup(&req)
                .map_err(|e| ft_backend::error_chain(&e)),
            Some(Err(e)) => Err(e),
            None => Err("the VM has no configuration".into()),
        };
        // A divergence repair re-seeds this backup with the channel's own
        // connect bound (the diverged backup needs a moment to listen).
        if let Some(r) = self.reseeds.request.as_mut() {
            r.connect_timeout = None;
        }
        let s = &mut self.spares;
        s.trying = None;
        match result {
            Ok(()) => {
                s.phase = Phase::Protected;
                s.in_use = Some(spare.clone());
                s.last_error = None;
                log::info!("fault tolerance: spare {spare} seeded: the VM is protected again");
                status.event(
                    "spare-seeded",
                    &[("spare", spare), ("round", attempt.round.to_string())],
                );
            }
            Err(why) => {
                s.failed += 1;
                s.last_error = Some(format!("{spare}: {why}"));
                log::warn!("fault tolerance: spare {spare} could not be seeded: {why}");
                status.event(
                    "spare-seed-failed",
                    &[
                        ("spare", spare),
                        ("round", attempt.round.to_string()),
                        ("reason", why),
                    ],
                );
                match attempt.after_failure(s.list.len()) {
                    Some((next, after)) => schedule(self.events_tx.clone(), next, after),
                    None => {
                        s.phase = Phase::Abandoned;
                        log::error!(
                            "fault tolerance: no spare could be seeded in {MAX_ROUNDS} rounds: the VM runs unprotected"
                        );
                        status.event(
                            "spare-seed-abandoned",
                            &[
                                ("rounds", MAX_ROUNDS.to_string()),
                                ("attempts", s.failed.to_string()),
                            ],
                        );
                    }
                }
            }
        }
    }

    /// The automatic seed stops: the VM is protected otherwise, or gone.
    fn spares_stop(&mut self, status: Option<&Arc<PairStatus>>) {
        if !matches!(self.spares.phase, Phase::Standby | Phase::Seeding) {
            return;
        }
        self.spares.phase = Phase::Superseded;
        self.spares.trying = None;
        if let Some(status) = status {
            status.event(
                "spare-seed-superseded",
                &[("state", status.state().as_str().to_string())],
            );
        }
    }

    /// A backup's VM was built (boot or seed): its spares, watched for a
    /// failover.
    pub(crate) fn spares_for_new_vm(&mut self) {
        let epoch = self.spares.epoch + 1;
        self.spares = Spares {
            epoch,
            ..self
                .config
                .as_ref()
                .map(Spares::for_config)
                .unwrap_or_default()
        };
        if self.spares.list.is_empty() {
            return;
        }
        if let Some(status) = self.vm.as_ref().and_then(|vm| vm.pair_status.as_ref()) {
            watch(status, epoch, self.events_tx.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attempts_go_through_the_list_then_rounds_and_are_bounded() {
        let mut a = Attempt::first(7);
        let mut seen = vec![(a, Duration::ZERO)];
        while let Some((next, after)) = a.after_failure(2) {
            seen.push((next, after));
            a = next;
        }
        let at = |round, index| Attempt {
            epoch: 7,
            round,
            index,
        };
        assert_eq!(
            seen,
            [
                (at(1, 0), Duration::ZERO),
                (at(1, 1), Duration::ZERO),
                (at(2, 0), Duration::from_secs(1)),
                (at(2, 1), Duration::ZERO),
                (at(3, 0), Duration::from_secs(2)),
                (at(3, 1), Duration::ZERO),
            ]
        );
        assert_eq!(Attempt::first(7).after_failure(1).unwrap().0, at(2, 0));
        assert!(at(MAX_ROUNDS, 0).after_failure(1).is_none());
    }

    #[test]
    fn request_carries_the_pair_settings() {
        let mut config: VmConfig = serde_json::from_str(
            r#"{"cpus":{"boot_vcpus":1,"max_vcpus":1},"memory":{"size":67108864},
                "payload":{"kernel":"/k"},
                "fault_tolerance":{"mode":"backup","listen":"tcp:127.0.0.1:9","key":"/key",
                "tiebreaker":"file:/tb","heartbeat_ms":20,"timeout_ms":200,
                "spares":["tcp:127.0.0.1:10","tcp:127.0.0.1:11"]}}"#,
        )
        .unwrap();
        let spares = Spares::for_config(&config);
        assert_eq!(spares.list, ["tcp:127.0.0.1:10", "tcp:127.0.0.1:11"]);
        assert_eq!(spares.info()["state"], "standby");
        let r = request(&config, "tcp:127.0.0.1:11").unwrap();
        assert_eq!(r.peer, "tcp:127.0.0.1:11");
        assert_eq!(r.key, std::path::PathBuf::from("/key"));
        assert_eq!(r.tiebreaker, "file:/tb");
        assert_eq!((r.heartbeat_ms, r.timeout_ms), (20, 200));
        assert_eq!(r.connect_timeout, Some(CONNECT_TIMEOUT));
        r.fault_tolerance().unwrap();
        config.fault_tolerance.as_mut().unwrap().mode = FaultToleranceMode::Primary;
        assert!(Spares::for_config(&config).list.is_empty());
    }
}
