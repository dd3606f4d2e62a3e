// Copyright 2026 The ft-cloud-hypervisor authors.
// SPDX-License-Identifier: Apache-2.0

//! `--fault-tolerance mode=record|replay,log=FILE[,max_delay_us=N]
//! [,debug_from=N][,debug_report=FILE]`: this project's extension
//! (upstream Cloud Hypervisor has no such option). In the JSON
//! configuration it is the `fault_tolerance` object.
//!
//! `debug_from=N` (record) also logs the vCPU state at every exit from
//! exit N and a hash per guest page at every checkpoint from exit N, with the guest
//! clock paused meanwhile: slow, for finding where a replay diverges.
//! A replay of such a log compares against them; `debug_report=FILE`
//! (replay) writes what it found for `ft-log diverge`.

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

/// Record or replay.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FaultToleranceMode {
    /// Run and write the log.
    Record,
    /// Run from the log.
    Replay,
}

/// The record/replay settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FaultToleranceConfig {
    /// Record or replay.
    pub mode: FaultToleranceMode,
    /// The log file (written in record mode, read in replay mode).
    pub log: PathBuf,
    /// Forced-delivery bound in µs (record mode).
    #[serde(default = "default_max_delay_us")]
    pub max_delay_us: u64,
    /// Record mode: log debug records (vCPU state at every exit from this
    /// exit count, page hashes at every checkpoint from it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub debug_from: Option<u64>,
    /// Replay mode: where to write the divergence report.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub debug_report: Option<PathBuf>,
}

fn default_max_delay_us() -> u64 {
    DEFAULT_MAX_DELAY_US
}

/// Errors in the fault-tolerance settings.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FaultToleranceError {
    /// `mode=` missing or not record/replay.
    #[error("--fault-tolerance needs mode=record or mode=replay")]
    Mode,
    /// `log=` missing or empty.
    #[error("--fault-tolerance needs log=FILE")]
    Log,
    /// `max_delay_us` out of range.
    #[error("--fault-tolerance max_delay_us={0} is out of range ({MIN_MAX_DELAY_US}..={MAX_MAX_DELAY_US})")]
    MaxDelay(u64),
    /// More than one vCPU.
    #[error("--fault-tolerance needs exactly one vCPU (--cpus boot=1)")]
    Vcpus,
    /// `debug_from` given to a replay.
    #[error("--fault-tolerance debug_from= is a recording option (a replay compares against what the log carries)")]
    DebugFromReplay,
    /// `debug_report` given to a recording, or empty.
    #[error("--fault-tolerance debug_report=FILE is a replay option and needs a file")]
    DebugReport,
    /// A malformed option list.
    #[error("Error parsing --fault-tolerance")]
    Parse(#[source] OptionParserError),
}

impl FaultToleranceConfig {
    /// Parses the command-line value.
    pub fn parse(value: &str) -> Result<Self, FaultToleranceError> {
        let p = OptionParser::parse(
            value,
            &["mode", "log", "max_delay_us", "debug_from", "debug_report"],
        )
        .map_err(FaultToleranceError::Parse)?;
        let mode = match p.get("mode") {
            Some("record") => FaultToleranceMode::Record,
            Some("replay") => FaultToleranceMode::Replay,
            _ => return Err(FaultToleranceError::Mode),
        };
        let log = match p.get("log") {
            Some(l) if !l.is_empty() => PathBuf::from(l),
            _ => return Err(FaultToleranceError::Log),
        };
        let max_delay_us = p
            .number("max_delay_us")
            .map_err(FaultToleranceError::Parse)?
            .unwrap_or(DEFAULT_MAX_DELAY_US);
        let debug_from = p.number("debug_from").map_err(FaultToleranceError::Parse)?;
        let debug_report = p.get("debug_report").map(PathBuf::from);
        let c = FaultToleranceConfig {
            mode,
            log,
            max_delay_us,
            debug_from,
            debug_report,
        };
        c.validate(1)?;
        Ok(c)
    }

    /// Checks the settings (`boot_vcpus` of the VM).
    pub fn validate(&self, boot_vcpus: u32) -> Result<(), FaultToleranceError> {
        if self.log.as_os_str().is_empty() {
            return Err(FaultToleranceError::Log);
        }
        if !(MIN_MAX_DELAY_US..=MAX_MAX_DELAY_US).contains(&self.max_delay_us) {
            return Err(FaultToleranceError::MaxDelay(self.max_delay_us));
        }
        if self.debug_from.is_some() && self.mode != FaultToleranceMode::Record {
            return Err(FaultToleranceError::DebugFromReplay);
        }
        if let Some(r) = &self.debug_report {
            if r.as_os_str().is_empty() || self.mode != FaultToleranceMode::Replay {
                return Err(FaultToleranceError::DebugReport);
            }
        }
        if boot_vcpus != 1 {
            return Err(FaultToleranceError::Vcpus);
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
        assert_eq!(err("mode=record"), E::Log);
        assert_eq!(err("mode=record,log="), E::Log);
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
}
