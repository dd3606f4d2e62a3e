// Copyright 2026 The ft-cloud-hypervisor authors.
// SPDX-License-Identifier: Apache-2.0

//! The bodies of `vm.ft-add-backup` and `vm.ft-receive-backup`, and their
//! `ch-remote` form (`key=value,...`, or a bare `tcp:ADDR:PORT` first).

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::config::{DiskMode, FaultToleranceConfig, FaultToleranceMode, OptionParser};

fn default_heartbeat_ms() -> u64 {
    FaultToleranceConfig::with_mode(FaultToleranceMode::Primary).heartbeat_ms
}
fn default_timeout_ms() -> u64 {
    FaultToleranceConfig::with_mode(FaultToleranceMode::Primary).timeout_ms
}
fn default_max_lag_ms() -> u64 {
    FaultToleranceConfig::with_mode(FaultToleranceMode::Primary).max_lag_ms
}
fn default_max_delay_us() -> u64 {
    FaultToleranceConfig::with_mode(FaultToleranceMode::Primary).max_delay_us
}
/// The pause the seed's pre-copy aims to leave for the last pages (ms):
/// the state, the handshake of the switch and the pages must fit 100 ms.
pub const DEFAULT_SEED_DOWNTIME_MS: u64 = 30;
fn default_downtime_ms() -> u64 {
    DEFAULT_SEED_DOWNTIME_MS
}
fn default_max_iterations() -> u32 {
    vm_migration::migration::Params::default().max_iterations
}
fn default_seed_timeout_s() -> u64 {
    vm_migration::migration::Params::default().timeout_s
}

/// `PUT vm.ft-add-backup`: protect this running VM with the backup
/// waiting at `peer`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FtAddBackupConfig {
    /// The waiting backup: `tcp:HOST:PORT`.
    pub peer: String,
    /// The pair's key file.
    pub key: PathBuf,
    /// The tiebreaker (as `--fault-tolerance tiebreaker=`).
    pub tiebreaker: String,
    /// Shared or separate disks (separate: the images are copied too).
    #[serde(default)]
    pub disks: DiskMode,
    /// Channel heartbeat (ms).
    #[serde(default = "default_heartbeat_ms")]
    pub heartbeat_ms: u64,
    /// Failure detector timeout (ms).
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// Lag bound (ms).
    #[serde(default = "default_max_lag_ms")]
    pub max_lag_ms: u64,
    /// Forced-delivery bound (us).
    #[serde(default = "default_max_delay_us")]
    pub max_delay_us: u64,
    /// Pre-copy: the time the last pages may take in the pause (ms).
    #[serde(default = "default_downtime_ms")]
    pub downtime_ms: u64,
    /// Pre-copy: dirty rounds at most (then the guest pauses anyway).
    #[serde(default = "default_max_iterations")]
    pub max_iterations: u32,
    /// Pre-copy: bound on the whole copy (s); at the timeout the seed is
    /// abandoned and the VM runs on unprotected.
    #[serde(default = "default_seed_timeout_s")]
    pub timeout_s: u64,
    /// How long to keep trying to reach `peer` (the channel's bound when
    /// `None`). Not part of the API: a spare seed ([`super::spares`]) sets
    /// a shorter one.
    #[serde(skip)]
    pub connect_timeout: Option<std::time::Duration>,
}

/// `PUT vm.ft-receive-backup`: wait with no VM for a primary's seed on
/// `listen`, then run as its backup. The seed carries the primary's
/// configuration; what is host-side here is given here: the disk images
/// (`disk_paths`, in the configuration's disk order; with shared disks the
/// primary's paths are kept when not given), the taps (`net_taps`, in its
/// net order; the primary's names when not given) and the serial output
/// (`serial`: a file; none when not given).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FtReceiveBackupConfig {
    /// Where to wait: `tcp:ADDR:PORT`.
    pub listen: String,
    /// The pair's key file.
    pub key: PathBuf,
    /// The tiebreaker.
    pub tiebreaker: String,
    /// Shared or separate disks; must be the primary's.
    #[serde(default)]
    pub disks: DiskMode,
    /// Keep a copy of the received stream here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log: Option<PathBuf>,
    /// Channel heartbeat (ms).
    #[serde(default = "default_heartbeat_ms")]
    pub heartbeat_ms: u64,
    /// Failure detector timeout (ms).
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// This host's disk images, in the configuration's disk order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub disk_paths: Vec<PathBuf>,
    /// This host's taps, in the configuration's net order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub net_taps: Vec<String>,
    /// The serial output file here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serial: Option<PathBuf>,
    /// VMMs waiting for a seed (`tcp:HOST:PORT`) this backup seeds by
    /// itself, the first that answers, once it went live after a failover
    /// (`--fault-tolerance spares=`; [`super::spares`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub spares: Vec<String>,
}

/// A `ch-remote` operand: `key=value,...`; a bare `tcp:...` first item
/// stands for `bare_key=tcp:...`.
fn parser(value: &str, bare_key: &str, known: &[&str]) -> Result<OptionParser, String> {
    let value = match value.split_once(',') {
        Some((first, rest)) if first.starts_with("tcp:") => format!("{bare_key}={first},{rest}"),
        None if value.starts_with("tcp:") => format!("{bare_key}={value}"),
        _ => value.to_string(),
    };
    OptionParser::parse(&value, known).map_err(|e| e.to_string())
}

fn disks(p: &OptionParser) -> Result<DiskMode, String> {
    match p.get("disks") {
        None | Some("shared") => Ok(DiskMode::Shared),
        Some("separate") => Ok(DiskMode::Separate),
        Some(v) => Err(format!("disks={v}: expected shared or separate")),
    }
}

fn required(p: &OptionParser, key: &str) -> Result<String, String> {
    p.get(key)
        .filter(|v| !v.is_empty())
        .map(str::to_string)
        .ok_or_else(|| format!("{key}= is required"))
}

fn number(p: &OptionParser, key: &str, default: u64) -> Result<u64, String> {
    Ok(p.number(key).map_err(|e| e.to_string())?.unwrap_or(default))
}

/// A list option: items separated by `;`.
fn list(p: &OptionParser, key: &str) -> Vec<String> {
    p.get(key)
        .map(|v| v.split(';').map(str::to_string).collect())
        .unwrap_or_default()
}

impl FtAddBackupConfig {
    /// From `ch-remote ft-add-backup`'s operand.
    pub fn parse(value: &str) -> Result<Self, String> {
        let p = parser(
            value,
            "peer",
            &[
                "peer",
                "key",
                "tiebreaker",
                "disks",
                "heartbeat_ms",
                "timeout_ms",
                "max_lag_ms",
                "max_delay_us",
                "downtime_ms",
                "max_iterations",
                "timeout_s",
            ],
        )?;
        Ok(FtAddBackupConfig {
            peer: required(&p, "peer")?,
            key: required(&p, "key")?.into(),
            tiebreaker: required(&p, "tiebreaker")?,
            disks: disks(&p)?,
            heartbeat_ms: number(&p, "heartbeat_ms", default_heartbeat_ms())?,
            timeout_ms: number(&p, "timeout_ms", default_timeout_ms())?,
            max_lag_ms: number(&p, "max_lag_ms", default_max_lag_ms())?,
            max_delay_us: number(&p, "max_delay_us", default_max_delay_us())?,
            downtime_ms: number(&p, "downtime_ms", default_downtime_ms())?,
            max_iterations: u32::try_from(number(
                &p,
                "max_iterations",
                u64::from(default_max_iterations()),
            )?)
            .map_err(|_| "max_iterations= is too large".to_string())?,
            timeout_s: number(&p, "timeout_s", default_seed_timeout_s())?,
            connect_timeout: None,
        })
    }

    /// The pre-copy's knobs.
    pub fn precopy_params(&self) -> vm_migration::migration::Params {
        vm_migration::migration::Params {
            downtime_ms: self.downtime_ms,
            timeout_s: self.timeout_s,
            max_iterations: self.max_iterations,
        }
    }

    /// The primary's `--fault-tolerance` settings, checked.
    pub fn fault_tolerance(&self) -> Result<FaultToleranceConfig, String> {
        let mut c = FaultToleranceConfig::with_mode(FaultToleranceMode::Primary);
        c.peer = Some(self.peer.clone());
        c.key = Some(self.key.clone());
        c.tiebreaker = Some(self.tiebreaker.clone());
        c.disks = self.disks;
        c.heartbeat_ms = self.heartbeat_ms;
        c.timeout_ms = self.timeout_ms;
        c.max_lag_ms = self.max_lag_ms;
        c.max_delay_us = self.max_delay_us;
        c.validate(1).map_err(|e| error_text(&e))?;
        Ok(c)
    }
}

impl FtReceiveBackupConfig {
    /// From `ch-remote ft-receive-backup`'s operand.
    pub fn parse(value: &str) -> Result<Self, String> {
        let p = parser(
            value,
            "listen",
            &[
                "listen",
                "key",
                "tiebreaker",
                "disks",
                "log",
                "heartbeat_ms",
                "timeout_ms",
                "disk_paths",
                "net_taps",
                "serial",
                "spares",
            ],
        )?;
        Ok(FtReceiveBackupConfig {
            listen: required(&p, "listen")?,
            key: required(&p, "key")?.into(),
            tiebreaker: required(&p, "tiebreaker")?,
            disks: disks(&p)?,
            log: p.get("log").map(PathBuf::from),
            heartbeat_ms: number(&p, "heartbeat_ms", default_heartbeat_ms())?,
            timeout_ms: number(&p, "timeout_ms", default_timeout_ms())?,
            disk_paths: list(&p, "disk_paths")
                .into_iter()
                .map(PathBuf::from)
                .collect(),
            net_taps: list(&p, "net_taps"),
            serial: p.get("serial").map(PathBuf::from),
            spares: list(&p, "spares"),
        })
    }

    /// The backup's `--fault-tolerance` settings, checked.
    pub fn fault_tolerance(&self) -> Result<FaultToleranceConfig, String> {
        let mut c = FaultToleranceConfig::with_mode(FaultToleranceMode::Backup);
        c.listen = Some(self.listen.clone());
        c.key = Some(self.key.clone());
        c.tiebreaker = Some(self.tiebreaker.clone());
        c.disks = self.disks;
        c.log = self.log.clone();
        c.heartbeat_ms = self.heartbeat_ms;
        c.timeout_ms = self.timeout_ms;
        c.spares = self.spares.clone();
        c.validate(1).map_err(|e| error_text(&e))?;
        Ok(c)
    }
}

fn error_text(e: &dyn std::error::Error) -> String {
    ft_backend::error_chain(e)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operands() {
        let a = FtAddBackupConfig::parse("tcp:10.0.0.2:7410,key=/k,tiebreaker=file:/t").unwrap();
        assert_eq!(a.peer, "tcp:10.0.0.2:7410");
        assert_eq!(a.disks, DiskMode::Shared);
        a.fault_tolerance().unwrap();
        let b = FtAddBackupConfig::parse(
            "peer=tcp:10.0.0.2:7410,key=/k,tiebreaker=file:/t,disks=separate,heartbeat_ms=20",
        )
        .unwrap();
        assert_eq!((b.disks, b.heartbeat_ms), (DiskMode::Separate, 20));
        assert_eq!(b.downtime_ms, DEFAULT_SEED_DOWNTIME_MS);
        let c = FtAddBackupConfig::parse(
            "tcp:10.0.0.2:7410,key=/k,tiebreaker=file:/t,downtime_ms=5,max_iterations=3,timeout_s=9",
        )
        .unwrap();
        assert_eq!((c.downtime_ms, c.max_iterations, c.timeout_s), (5, 3, 9));
        assert!(FtAddBackupConfig::parse(
            "tcp:10.0.0.2:7410,key=/k,tiebreaker=file:/t,max_iterations=99999999999"
        )
        .is_err());
        assert!(FtAddBackupConfig::parse("key=/k,tiebreaker=file:/t").is_err());
        assert!(FtAddBackupConfig::parse("tcp:1.2.3.4:5,key=/k,tiebreaker=x,disks=x").is_err());
        let r = FtReceiveBackupConfig::parse(
            "listen=tcp:0.0.0.0:7410,key=/k,tiebreaker=file:/t,net_taps=t1;t2,disk_paths=/a",
        )
        .unwrap();
        assert_eq!(r.net_taps, ["t1", "t2"]);
        assert_eq!(r.disk_paths, [PathBuf::from("/a")]);
        r.fault_tolerance().unwrap();
        let bad = FtReceiveBackupConfig::parse("listen=nowhere,key=/k,tiebreaker=file:/t").unwrap();
        assert!(bad.fault_tolerance().is_err());
        assert!(
            serde_json::from_str::<FtReceiveBackupConfig>(r#"{"listen":"tcp:1.2.3.4:5"}"#).is_err()
        );
    }

    #[test]
    fn receive_backup_spares() {
        let r = FtReceiveBackupConfig::parse(
            "tcp:0.0.0.0:7410,key=/k,tiebreaker=file:/t,spares=tcp:10.0.0.5:7410;tcp:10.0.0.6:7410",
        )
        .unwrap();
        assert_eq!(r.spares, ["tcp:10.0.0.5:7410", "tcp:10.0.0.6:7410"]);
        assert_eq!(r.fault_tolerance().unwrap().spares, r.spares);
        for bad in [
            "spares=",
            "spares=10.0.0.5:7410",
            "spares=tcp:10.0.0.5:7410;tcp:x",
        ] {
            let r = FtReceiveBackupConfig::parse(&format!(
                "tcp:0.0.0.0:7410,key=/k,tiebreaker=file:/t,{bad}"
            ))
            .unwrap();
            let e = r.fault_tolerance().unwrap_err();
            assert!(e.contains("spares=") && e.contains("tcp:HOST:PORT"), "{e}");
        }
        let json: FtReceiveBackupConfig = serde_json::from_str(
            r#"{"listen":"tcp:0.0.0.0:7410","key":"/k","tiebreaker":"file:/t","spares":["tcp:10.0.0.5:7410"]}"#,
        )
        .unwrap();
        assert_eq!(json.spares, ["tcp:10.0.0.5:7410"]);
    }
}
