// Copyright 2026 The ft-cloud-hypervisor authors.
// SPDX-License-Identifier: Apache-2.0

//! `--fault-tolerance ...`: this project's extension (upstream Cloud
//! Hypervisor has no such option). In the JSON configuration it is the
//! `fault_tolerance` object, with the same names.
//!
//! - `mode=record,log=FILE[,max_delay_us=N][,debug_from=N]`: run and
//!   write the log;
//! - `mode=replay,log=FILE[,debug_report=FILE]`: run from a log;
//! - `mode=primary,peer=tcp:HOST:PORT,key=FILE,tiebreaker=T[,disks=shared|separate]
//!   [,heartbeat_ms=N][,timeout_ms=N][,max_lag_ms=N][,max_delay_us=N]`:
//!   the protected VM of a pair, streaming its log to the backup;
//! - `mode=backup,listen=tcp:ADDR:PORT,key=FILE,tiebreaker=T[,log=FILE]
//!   [,disks=..][,heartbeat_ms=N][,timeout_ms=N][,spares=tcp:H:P;tcp:H:P]`:
//!   waits for its primary and replays it live; `log=FILE` keeps a copy of
//!   the received stream (it replays offline with `mode=replay`);
//!   `spares=` lists VMMs waiting in `vm.ft-receive-backup` that it seeds
//!   by itself, the first that answers, once it went live after a failover
//!   (`crate::ft_seed::spares`).
//!
//! `debug_from=N` (record) also logs the vCPU state at every exit from
//! exit N and a hash per guest page at every checkpoint from exit N, with
//! the guest clock paused meanwhile: slow, for finding where a replay
//! diverges. A replay of such a log compares against them;
//! `debug_report=FILE` (replay) writes what it found for `ft-log diverge`.

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::option_parser::{OptionParser, OptionParserError};

/// Default bound on how long an event may wait for a synchronous exit
/// before the recording VMM forces its delivery with a micro-checkpoint.
pub const DEFAULT_MAX_DELAY_US: u64 = 2_000;
/// Smallest accepted `max_delay_us`.
pub const MIN_MAX_DELAY_US: u64 = 100;
/// Largest accepted `max_delay_us` (one second).
pub const MAX_MAX_DELAY_US: u64 = 1_000_000;
/// Default heartbeat period of a pair's logging channel.
pub const DEFAULT_HEARTBEAT_MS: u64 = 50;
/// Default time without anything from the peer before it is declared
/// lost: six heartbeats, which rides out the scheduling stalls of a loaded
/// 2-core host (measured in `scripts/bench-channel`) and keeps the
/// client-visible failover gap under 500 ms.
pub const DEFAULT_TIMEOUT_MS: u64 = 300;
/// Default lag (backup behind primary, guest time) above which the
/// primary slows its vCPU.
pub const DEFAULT_MAX_LAG_MS: u64 = 100;

/// What this VMM does about fault tolerance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FaultToleranceMode {
    /// Run and write the log.
    Record,
    /// Run from the log.
    Replay,
    /// The protected VM of a pair.
    Primary,
    /// The backup of a pair.
    Backup,
}

impl FaultToleranceMode {
    /// The name used on the command line and in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            FaultToleranceMode::Record => "record",
            FaultToleranceMode::Replay => "replay",
            FaultToleranceMode::Primary => "primary",
            FaultToleranceMode::Backup => "backup",
        }
    }
}

/// How a pair's disks are kept.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DiskMode {
    /// One image both hosts reach: only the primary writes it (under the
    /// Output Rule); the backup opens it when it goes live.
    #[default]
    Shared,
    /// Each host has its own copy, identical at the start; the backup
    /// writes its copy as it replays. Needs the etcd tiebreaker.
    Separate,
}

/// The fault-tolerance settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FaultToleranceConfig {
    /// The role.
    pub mode: FaultToleranceMode,
    /// The log file (written in record mode, read in replay mode; the
    /// backup's copy of the received stream).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log: Option<PathBuf>,
    /// Forced-delivery bound in µs (record and primary).
    #[serde(default = "default_max_delay_us")]
    pub max_delay_us: u64,
    /// Record mode: log debug records (vCPU state at every exit from this
    /// exit count, page hashes at every checkpoint from it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub debug_from: Option<u64>,
    /// Replay mode: where to write the divergence report.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub debug_report: Option<PathBuf>,
    /// Primary: the backup's channel address, `tcp:HOST:PORT`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer: Option<String>,
    /// Backup: where to wait for the primary, `tcp:ADDR:PORT`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub listen: Option<String>,
    /// The pair's shared key file (its contents never leave the process).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<PathBuf>,
    /// `file:PATH` or `etcd:http://HOST:PORT/PREFIX`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tiebreaker: Option<String>,
    /// Shared or separate disks.
    #[serde(default)]
    pub disks: DiskMode,
    /// Heartbeat period of the channel.
    #[serde(default = "default_heartbeat_ms")]
    pub heartbeat_ms: u64,
    /// Silence after which the peer is lost.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// Lag above which the primary slows down.
    #[serde(default = "default_max_lag_ms")]
    pub max_lag_ms: u64,
    /// Backup: the waiting VMMs (`tcp:HOST:PORT`, in order of preference)
    /// it seeds by FT VMotion once it went live after a failover.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub spares: Vec<String>,
}

fn default_max_delay_us() -> u64 {
    DEFAULT_MAX_DELAY_US
}
fn default_heartbeat_ms() -> u64 {
    DEFAULT_HEARTBEAT_MS
}
fn default_timeout_ms() -> u64 {
    DEFAULT_TIMEOUT_MS
}
fn default_max_lag_ms() -> u64 {
    DEFAULT_MAX_LAG_MS
}

/// Errors in the fault-tolerance settings.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FaultToleranceError {
    /// `mode=` missing or unknown.
    #[error("--fault-tolerance needs mode=record, replay, primary or backup")]
    Mode,
    /// `log=` missing or empty.
    #[error("--fault-tolerance mode={0} needs log=FILE")]
    Log(&'static str),
    /// `max_delay_us` out of range.
    #[error("--fault-tolerance max_delay_us={0} is out of range ({MIN_MAX_DELAY_US}..={MAX_MAX_DELAY_US})")]
    MaxDelay(u64),
    /// More than one vCPU.
    #[error("--fault-tolerance needs exactly one vCPU (--cpus boot=1)")]
    Vcpus,
    /// `debug_from` given to another mode than record.
    #[error("--fault-tolerance debug_from= is a recording option (a replay compares against what the log carries)")]
    DebugFromReplay,
    /// `debug_report` given to another mode than replay, or empty.
    #[error("--fault-tolerance debug_report=FILE is a replay option and needs a file")]
    DebugReport,
    /// A pair option missing.
    #[error("--fault-tolerance mode={mode} needs {option}")]
    Missing {
        /// The mode.
        mode: &'static str,
        /// What is missing.
        option: &'static str,
    },
    /// A pair option given to a mode that does not use it.
    #[error("--fault-tolerance {option} is not an option of mode={mode}")]
    NotForMode {
        /// The mode.
        mode: &'static str,
        /// The option.
        option: &'static str,
    },
    /// An address that is not `tcp:HOST:PORT`.
    #[error("--fault-tolerance {option}={value}: expected tcp:HOST:PORT")]
    Address {
        /// The option.
        option: &'static str,
        /// The value.
        value: String,
    },
    /// `disks=` not shared or separate.
    #[error("--fault-tolerance disks= must be shared or separate")]
    Disks,
    /// `disks=separate` with a file tiebreaker.
    #[error("--fault-tolerance disks=separate needs an etcd tiebreaker (there is no shared storage to hold a file tiebreaker)")]
    SeparateNeedsEtcd,
    /// A timing out of range.
    #[error("--fault-tolerance {option}={value} is out of range ({min}..={max})")]
    Range {
        /// The option.
        option: &'static str,
        /// The value.
        value: u64,
        /// Smallest accepted.
        min: u64,
        /// Largest accepted.
        max: u64,
    },
    /// `timeout_ms` not above the heartbeat.
    #[error(
        "--fault-tolerance timeout_ms={timeout} must be at least twice heartbeat_ms={heartbeat}"
    )]
    TimeoutBelowHeartbeat {
        /// The timeout.
        timeout: u64,
        /// The heartbeat.
        heartbeat: u64,
    },
    /// A malformed option list.
    #[error("Error parsing --fault-tolerance")]
    Parse(#[source] OptionParserError),
}

/// Resolves `tcp:HOST:PORT`.
pub fn parse_tcp_address(
    option: &'static str,
    value: &str,
) -> Result<SocketAddr, FaultToleranceError> {
    let err = || FaultToleranceError::Address {
        option,
        value: value.to_string(),
    };
    let rest = value.strip_prefix("tcp:").ok_or_else(err)?;
    rest.to_socket_addrs()
        .ok()
        .and_then(|mut a| a.next())
        .ok_or_else(err)
}

impl FaultToleranceConfig {
    /// Settings of `mode` with every option at its default.
    pub fn with_mode(mode: FaultToleranceMode) -> Self {
        FaultToleranceConfig {
            mode,
            log: None,
            max_delay_us: DEFAULT_MAX_DELAY_US,
            debug_from: None,
            debug_report: None,
            peer: None,
            listen: None,
            key: None,
            tiebreaker: None,
            disks: DiskMode::Shared,
            heartbeat_ms: DEFAULT_HEARTBEAT_MS,
            timeout_ms: DEFAULT_TIMEOUT_MS,
            max_lag_ms: DEFAULT_MAX_LAG_MS,
            spares: Vec::new(),
        }
    }

    /// Parses the command-line value.
    pub fn parse(value: &str) -> Result<Self, FaultToleranceError> {
        let p = OptionParser::parse(
            value,
            &[
                "mode",
                "log",
                "max_delay_us",
                "debug_from",
                "debug_report",
                "peer",
                "listen",
                "key",
                "tiebreaker",
                "disks",
                "heartbeat_ms",
                "timeout_ms",
                "max_lag_ms",
                "spares",
            ],
        )
        .map_err(FaultToleranceError::Parse)?;
        let mode = match p.get("mode") {
            Some("record") => FaultToleranceMode::Record,
            Some("replay") => FaultToleranceMode::Replay,
            Some("primary") => FaultToleranceMode::Primary,
            Some("backup") => FaultToleranceMode::Backup,
            _ => return Err(FaultToleranceError::Mode),
        };
        let mut c = Self::with_mode(mode);
        let number = |name| p.number(name).map_err(FaultToleranceError::Parse);
        let string = |name| p.get(name).map(str::to_string);
        c.log = p.get("log").map(PathBuf::from);
        c.max_delay_us = number("max_delay_us")?.unwrap_or(DEFAULT_MAX_DELAY_US);
        c.debug_from = number("debug_from")?;
        c.debug_report = p.get("debug_report").map(PathBuf::from);
        c.peer = string("peer");
        c.listen = string("listen");
        c.key = p.get("key").map(PathBuf::from);
        c.tiebreaker = string("tiebreaker");
        c.disks = match p.get("disks") {
            None | Some("shared") => DiskMode::Shared,
            Some("separate") => DiskMode::Separate,
            Some(_) => return Err(FaultToleranceError::Disks),
        };
        c.heartbeat_ms = number("heartbeat_ms")?.unwrap_or(DEFAULT_HEARTBEAT_MS);
        c.timeout_ms = number("timeout_ms")?.unwrap_or(DEFAULT_TIMEOUT_MS);
        c.max_lag_ms = number("max_lag_ms")?.unwrap_or(DEFAULT_MAX_LAG_MS);
        c.spares = p
            .get("spares")
            .map(|v| v.split(';').map(str::to_string).collect())
            .unwrap_or_default();
        c.validate(1)?;
        Ok(c)
    }

    /// Whether this VMM is one side of a pair.
    pub fn is_pair(&self) -> bool {
        matches!(
            self.mode,
            FaultToleranceMode::Primary | FaultToleranceMode::Backup
        )
    }

    /// Checks the settings (`boot_vcpus` of the VM).
    pub fn validate(&self, boot_vcpus: u32) -> Result<(), FaultToleranceError> {
        use FaultToleranceMode as M;
        let mode = self.mode.as_str();
        let empty = |p: &Option<PathBuf>| p.as_ref().is_some_and(|p| p.as_os_str().is_empty());
        if empty(&self.log) {
            return Err(FaultToleranceError::Log(mode));
        }
        if matches!(self.mode, M::Record | M::Replay) && self.log.is_none() {
            return Err(FaultToleranceError::Log(mode));
        }
        if self.mode == M::Primary && self.log.is_some() {
            return Err(FaultToleranceError::NotForMode {
                mode,
                option: "log=",
            });
        }
        if !(MIN_MAX_DELAY_US..=MAX_MAX_DELAY_US).contains(&self.max_delay_us) {
            return Err(FaultToleranceError::MaxDelay(self.max_delay_us));
        }
        if self.debug_from.is_some() && self.mode != M::Record {
            return Err(FaultToleranceError::DebugFromReplay);
        }
        if let Some(r) = &self.debug_report {
            if r.as_os_str().is_empty() || self.mode != M::Replay {
                return Err(FaultToleranceError::DebugReport);
            }
        }
        self.validate_pair()?;
        if boot_vcpus != 1 {
            return Err(FaultToleranceError::Vcpus);
        }
        Ok(())
    }

    fn validate_pair(&self) -> Result<(), FaultToleranceError> {
        use FaultToleranceMode as M;
        let mode = self.mode.as_str();
        let not_for = |option| Err(FaultToleranceError::NotForMode { mode, option });
        let missing = |option| Err(FaultToleranceError::Missing { mode, option });
        if self.mode != M::Backup && !self.spares.is_empty() {
            return not_for("spares=");
        }
        for spare in &self.spares {
            parse_tcp_address("spares", spare)?;
        }
        if !self.is_pair() {
            if self.peer.is_some() {
                return not_for("peer=");
            }
            if self.listen.is_some() {
                return not_for("listen=");
            }
            if self.key.is_some() {
                return not_for("key=");
            }
            if self.tiebreaker.is_some() {
                return not_for("tiebreaker=");
            }
            return Ok(());
        }
        match self.mode {
            M::Primary => {
                if self.listen.is_some() {
                    return not_for("listen=");
                }
                match &self.peer {
                    Some(p) => {
                        parse_tcp_address("peer", p)?;
                    }
                    None => return missing("peer=tcp:HOST:PORT"),
                }
            }
            _ => {
                if self.peer.is_some() {
                    return not_for("peer=");
                }
                match &self.listen {
                    Some(l) => {
                        parse_tcp_address("listen", l)?;
                    }
                    None => return missing("listen=tcp:ADDR:PORT"),
                }
            }
        }
        if self.key.as_ref().is_none_or(|k| k.as_os_str().is_empty()) {
            return missing("key=FILE");
        }
        match &self.tiebreaker {
            None => return missing("tiebreaker=file:PATH or tiebreaker=etcd:URL"),
            Some(t) => {
                if self.disks == DiskMode::Separate && !t.starts_with("etcd:") {
                    return Err(FaultToleranceError::SeparateNeedsEtcd);
                }
            }
        }
        let range = |option, value, min, max| {
            if (min..=max).contains(&value) {
                Ok(())
            } else {
                Err(FaultToleranceError::Range {
                    option,
                    value,
                    min,
                    max,
                })
            }
        };
        range("heartbeat_ms", self.heartbeat_ms, 5, 10_000)?;
        range("timeout_ms", self.timeout_ms, 10, 60_000)?;
        range("max_lag_ms", self.max_lag_ms, 1, 60_000)?;
        if self.timeout_ms < 2 * self.heartbeat_ms {
            return Err(FaultToleranceError::TimeoutBelowHeartbeat {
                timeout: self.timeout_ms,
                heartbeat: self.heartbeat_ms,
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_refuses() {
        let c = FaultToleranceConfig::parse("mode=record,log=/tmp/x.log").unwrap();
        assert_eq!(c.mode, FaultToleranceMode::Record);
        assert_eq!(c.max_delay_us, DEFAULT_MAX_DELAY_US);
        let c = FaultToleranceConfig::parse("mode=replay,log=/l,max_delay_us=500").unwrap();
        assert_eq!((c.mode, c.max_delay_us), (FaultToleranceMode::Replay, 500));
        use FaultToleranceError as E;
        let err = |v| FaultToleranceConfig::parse(v).unwrap_err();
        assert_eq!(err("log=/l"), E::Mode);
        assert_eq!(err("mode=play,log=/l"), E::Mode);
        assert_eq!(err("mode=record"), E::Log("record"));
        assert_eq!(err("mode=record,log="), E::Log("record"));
        assert_eq!(err("mode=record,log=/l,max_delay_us=5"), E::MaxDelay(5));
        assert!(matches!(
            err("mode=record,log=/l,max_delay_us=x"),
            E::Parse(_)
        ));
        assert!(matches!(err("mode=record,log=/l,speed=2"), E::Parse(_)));
        assert_eq!(c.validate(2), Err(E::Vcpus));
        let d = FaultToleranceConfig::parse("mode=record,log=/l,debug_from=7").unwrap();
        assert_eq!(d.debug_from, Some(7));
        let d = FaultToleranceConfig::parse("mode=replay,log=/l,debug_report=/r").unwrap();
        assert_eq!(d.debug_report, Some(PathBuf::from("/r")));
        assert_eq!(err("mode=replay,log=/l,debug_from=7"), E::DebugFromReplay);
        assert_eq!(err("mode=record,log=/l,debug_report=/r"), E::DebugReport);
        assert_eq!(err("mode=replay,log=/l,debug_report="), E::DebugReport);
        assert!(matches!(
            err("mode=record,log=/l,debug_from=x"),
            E::Parse(_)
        ));
        let json: FaultToleranceConfig =
            serde_json::from_str(r#"{"mode":"record","log":"/l","debug_from":3}"#).unwrap();
        assert_eq!(json.debug_from, Some(3));
        let json: FaultToleranceConfig =
            serde_json::from_str(r#"{"mode":"record","log":"/l"}"#).unwrap();
        assert_eq!(json.max_delay_us, DEFAULT_MAX_DELAY_US);
        assert!(
            serde_json::from_str::<FaultToleranceConfig>(r#"{"mode":"x","log":"/l"}"#).is_err()
        );
    }

    #[test]
    fn pair_options_are_parsed_and_checked() {
        use FaultToleranceError as E;
        let p = FaultToleranceConfig::parse(
            "mode=primary,peer=tcp:127.0.0.1:7100,key=/k,tiebreaker=file:/t,heartbeat_ms=20,timeout_ms=200,max_lag_ms=50",
        )
        .unwrap();
        assert_eq!(p.mode, FaultToleranceMode::Primary);
        assert_eq!(p.disks, DiskMode::Shared);
        assert_eq!((p.heartbeat_ms, p.timeout_ms, p.max_lag_ms), (20, 200, 50));
        assert!(p.is_pair());
        let b = FaultToleranceConfig::parse(
            "mode=backup,listen=tcp:0.0.0.0:7100,key=/k,tiebreaker=etcd:http://127.0.0.1:2379/ft,disks=separate,log=/copy",
        )
        .unwrap();
        assert_eq!(b.disks, DiskMode::Separate);
        assert_eq!(b.log, Some(PathBuf::from("/copy")));
        let err = |v| FaultToleranceConfig::parse(v).unwrap_err();
        assert!(matches!(
            err("mode=primary,key=/k,tiebreaker=file:/t"),
            E::Missing {
                option: "peer=tcp:HOST:PORT",
                ..
            }
        ));
        assert!(matches!(
            err("mode=primary,peer=localhost,key=/k,tiebreaker=file:/t"),
            E::Address { .. }
        ));
        assert!(matches!(
            err("mode=backup,listen=tcp:127.0.0.1:1,tiebreaker=file:/t"),
            E::Missing {
                option: "key=FILE",
                ..
            }
        ));
        assert!(matches!(
            err("mode=backup,listen=tcp:127.0.0.1:1,key=/k"),
            E::Missing { .. }
        ));
        assert!(matches!(
            err(
                "mode=backup,listen=tcp:127.0.0.1:1,peer=tcp:127.0.0.1:2,key=/k,tiebreaker=file:/t"
            ),
            E::NotForMode {
                option: "peer=",
                ..
            }
        ));
        assert!(matches!(
            err("mode=record,log=/l,peer=tcp:127.0.0.1:2"),
            E::NotForMode { .. }
        ));
        assert_eq!(
            err("mode=backup,listen=tcp:127.0.0.1:1,key=/k,tiebreaker=file:/t,disks=separate"),
            E::SeparateNeedsEtcd
        );
        assert_eq!(
            err("mode=backup,listen=tcp:127.0.0.1:1,key=/k,tiebreaker=file:/t,disks=raid"),
            E::Disks
        );
        assert!(matches!(
            err("mode=primary,peer=tcp:127.0.0.1:1,key=/k,tiebreaker=file:/t,timeout_ms=60"),
            E::TimeoutBelowHeartbeat { .. }
        ));
        assert!(matches!(
            err("mode=primary,peer=tcp:127.0.0.1:1,key=/k,tiebreaker=file:/t,heartbeat_ms=1"),
            E::Range { .. }
        ));
        assert!(matches!(
            err("mode=primary,peer=tcp:127.0.0.1:1,key=/k,tiebreaker=file:/t,log=/l"),
            E::NotForMode { option: "log=", .. }
        ));
        let json: FaultToleranceConfig = serde_json::from_str(
            r#"{"mode":"primary","peer":"tcp:127.0.0.1:9","key":"/k","tiebreaker":"file:/t"}"#,
        )
        .unwrap();
        assert_eq!(json.timeout_ms, DEFAULT_TIMEOUT_MS);
        json.validate(1).unwrap();
    }

    #[test]
    fn spares_are_parsed_and_checked() {
        use FaultToleranceError as E;
        let b = FaultToleranceConfig::parse(
            "mode=backup,listen=tcp:0.0.0.0:7100,key=/k,tiebreaker=file:/t,spares=tcp:127.0.0.1:7200;tcp:127.0.0.2:7201",
        )
        .unwrap();
        assert_eq!(b.spares, ["tcp:127.0.0.1:7200", "tcp:127.0.0.2:7201"]);
        let none = FaultToleranceConfig::parse(
            "mode=backup,listen=tcp:0.0.0.0:7100,key=/k,tiebreaker=file:/t",
        )
        .unwrap();
        assert!(none.spares.is_empty());
        let err = |v: &str| FaultToleranceConfig::parse(v).unwrap_err();
        let backup = "mode=backup,listen=tcp:0.0.0.0:7100,key=/k,tiebreaker=file:/t";
        for bad in [
            "spares=",
            "spares=127.0.0.1:7200",
            "spares=tcp:127.0.0.1",
            "spares=tcp:127.0.0.1:7200;",
            "spares=tcp:127.0.0.1:7200;udp:127.0.0.1:7201",
            "spares=tcp:127.0.0.1:99999",
        ] {
            let value = format!("{backup},{bad}");
            let e = err(&value);
            assert!(
                matches!(
                    &e,
                    E::Address {
                        option: "spares",
                        ..
                    }
                ),
                "{bad}: {e:?}"
            );
            assert!(e.to_string().contains("spares="), "{e}");
        }
        assert_eq!(
            err("mode=primary,peer=tcp:127.0.0.1:1,key=/k,tiebreaker=file:/t,spares=tcp:127.0.0.1:2"),
            E::NotForMode {
                mode: "primary",
                option: "spares="
            }
        );
        assert_eq!(
            err("mode=record,log=/l,spares=tcp:127.0.0.1:2"),
            E::NotForMode {
                mode: "record",
                option: "spares="
            }
        );
        let json: FaultToleranceConfig = serde_json::from_str(
            r#"{"mode":"backup","listen":"tcp:127.0.0.1:9","key":"/k","tiebreaker":"file:/t","spares":["tcp:127.0.0.1:10"]}"#,
        )
        .unwrap();
        json.validate(1).unwrap();
        let json: FaultToleranceConfig = serde_json::from_str(
            r#"{"mode":"backup","listen":"tcp:127.0.0.1:9","key":"/k","tiebreaker":"file:/t","spares":["nowhere"]}"#,
        )
        .unwrap();
        assert!(matches!(json.validate(1), Err(E::Address { .. })));
        assert!(!serde_json::to_string(&none).unwrap().contains("spares"));
    }
}
