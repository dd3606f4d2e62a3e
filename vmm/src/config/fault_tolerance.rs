// Copyright 2026 The ft-cloud-hypervisor authors.
// SPDX-License-Identifier: Apache-2.0

//! `--fault-tolerance mode=record|replay,log=FILE[,max_delay_us=N]`: this
//! project's extension (upstream Cloud Hypervisor has no such option). In
//! the JSON configuration it is the `fault_tolerance` object.

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
    /// A malformed option list.
    #[error("Error parsing --fault-tolerance")]
    Parse(#[source] OptionParserError),
}

impl FaultToleranceConfig {
    /// Parses the command-line value.
    pub fn parse(value: &str) -> Result<Self, FaultToleranceError> {
        let p = OptionParser::parse(value, &["mode", "log", "max_delay_us"])
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
        let c = FaultToleranceConfig {
            mode,
            log,
            max_delay_us,
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
        let json: FaultToleranceConfig =
            serde_json::from_str(r#"{"mode":"record","log":"/l"}"#).unwrap();
        assert_eq!(json.max_delay_us, DEFAULT_MAX_DELAY_US);
        assert!(
            serde_json::from_str::<FaultToleranceConfig>(r#"{"mode":"x","log":"/l"}"#).is_err()
        );
    }
}
