//! Which workload the command line asks for, with its parameters.

use core::error::Error;
use core::fmt;

use thiserror::Error;

use crate::apic_timer::{self, TimerError};
use crate::cmdline::{Cmdline, CmdlineError};

/// Timer frequency when the command line gives no `hz=`.
pub const DEFAULT_HZ: u64 = 100;

/// A workload and its parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Workload {
    /// `workload=compute steps=N [hz=H]`: N SplitMix64 steps while a
    /// periodic timer runs at H Hz.
    Compute {
        /// Steps to compute.
        steps: u64,
        /// Timer frequency in Hz.
        hz: u64,
    },
    /// `workload=ticks count=N [hz=H]`: wait for N timer interrupts at H Hz.
    Ticks {
        /// Interrupts to wait for.
        count: u64,
        /// Timer frequency in Hz.
        hz: u64,
    },
    /// `workload=idle [hz=H]`: wait for interrupts forever.
    Idle {
        /// Timer frequency in Hz.
        hz: u64,
    },
    /// `workload=exits count=N`: N MMIO reads of the APIC version register,
    /// each a VM exit straight from user mode (no fault emulation): for
    /// measuring the VMM's exit rate.
    Exits {
        /// Exits to take.
        count: u64,
    },
    /// `workload=fault [kind=ud|gp|pf]`: raise an exception on purpose, to
    /// test the exception report.
    Fault {
        /// Which exception.
        kind: FaultKind,
    },
}

/// The exception `workload=fault` raises.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultKind {
    /// `ud2`: invalid opcode (#UD, vector 6). The default.
    InvalidOpcode,
    /// A load from a non-canonical address: #GP (vector 13).
    GeneralProtection,
    /// A load from an unmapped address: #PF (vector 14).
    PageFault,
}

/// A command line that names no usable workload.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum ConfigError<'a> {
    /// The command line does not parse. (Not a `#[source]`: an error
    /// source must be `'static`, and this one borrows the command line.)
    #[error("bad command line: {0}")]
    Cmdline(CmdlineError<'a>),
    /// No `workload=` parameter.
    #[error("no workload= on the command line (expected compute, ticks, idle, exits or fault)")]
    NoWorkload,
    /// `workload=` names no known workload.
    #[error("unknown workload '{0}' (expected compute, ticks, idle, exits or fault)")]
    UnknownWorkload(&'a str),
    /// `kind=` names no known fault.
    #[error("unknown fault kind '{0}' (expected ud, gp or pf)")]
    UnknownFault(&'a str),
    /// A parameter the workload needs is missing.
    #[error("workload {workload} needs {key}=")]
    Missing {
        /// The workload.
        workload: &'a str,
        /// The missing key.
        key: &'static str,
    },
    /// A parameter the workload does not know.
    #[error("unknown parameter '{key}' for workload {workload}")]
    UnknownParameter {
        /// The workload.
        workload: &'a str,
        /// The unknown key.
        key: &'a str,
    },
    /// A numeric parameter that is not a decimal u64.
    #[error("{key}='{value}' is not a decimal number")]
    NotANumber {
        /// The key.
        key: &'static str,
        /// Its value.
        value: &'a str,
    },
    /// A timer frequency out of range.
    #[error("bad hz=")]
    Frequency(#[source] TimerError),
}

impl Workload {
    /// The workload `text` (the kernel command line) asks for.
    pub fn from_cmdline(text: &str) -> Result<Workload, ConfigError<'_>> {
        let cmdline = Cmdline::parse(text).map_err(ConfigError::Cmdline)?;
        let name = cmdline.get("workload").ok_or(ConfigError::NoWorkload)?;
        let known: &[&str] = match name {
            "compute" => &["steps", "hz"],
            "ticks" => &["count", "hz"],
            "idle" => &["hz"],
            "fault" => &["kind"],
            "exits" => &["count"],
            _ => return Err(ConfigError::UnknownWorkload(name)),
        };
        if let Some((key, _)) = cmdline
            .params()
            .find(|(key, _)| *key != "workload" && !known.contains(key))
        {
            return Err(ConfigError::UnknownParameter {
                workload: name,
                key,
            });
        }
        let required = |key: &'static str| {
            number(&cmdline, key)?.ok_or(ConfigError::Missing {
                workload: name,
                key,
            })
        };
        let hz = number(&cmdline, "hz")?.unwrap_or(DEFAULT_HZ);
        apic_timer::initial_count(hz).map_err(ConfigError::Frequency)?;
        Ok(match name {
            "compute" => Workload::Compute {
                steps: required("steps")?,
                hz,
            },
            "ticks" => Workload::Ticks {
                count: required("count")?,
                hz,
            },
            "idle" => Workload::Idle { hz },
            "exits" => Workload::Exits {
                count: required("count")?,
            },
            _ => Workload::Fault {
                kind: match cmdline.get("kind").unwrap_or("ud") {
                    "ud" => FaultKind::InvalidOpcode,
                    "gp" => FaultKind::GeneralProtection,
                    "pf" => FaultKind::PageFault,
                    other => return Err(ConfigError::UnknownFault(other)),
                },
            },
        })
    }
}

/// The decimal value of `key`, if given.
fn number<'a>(cmdline: &Cmdline<'a>, key: &'static str) -> Result<Option<u64>, ConfigError<'a>> {
    cmdline
        .get(key)
        .map(|value| {
            value
                .parse::<u64>()
                .map_err(|_| ConfigError::NotANumber { key, value })
        })
        .transpose()
}

/// Displays an error followed by its chain of causes, `": "`-separated.
#[derive(Debug)]
pub struct ErrorChain<'a>(pub &'a dyn Error);

impl fmt::Display for ErrorChain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)?;
        let mut cause = self.0.source();
        while let Some(error) = cause {
            write!(f, ": {error}")?;
            cause = error.source();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(text: &str) -> String {
        ErrorChain(&Workload::from_cmdline(text).unwrap_err()).to_string()
    }

    #[test]
    fn exits_workload() {
        assert_eq!(
            Workload::from_cmdline("workload=exits count=5"),
            Ok(Workload::Exits { count: 5 })
        );
        assert!(Workload::from_cmdline("workload=exits").is_err());
        assert!(Workload::from_cmdline("workload=exits count=1 hz=5").is_err());
    }

    #[test]
    fn workloads() {
        assert_eq!(
            Workload::from_cmdline("workload=compute steps=1000"),
            Ok(Workload::Compute {
                steps: 1000,
                hz: 100
            })
        );
        assert_eq!(
            Workload::from_cmdline("hz=1000 workload=compute steps=0"),
            Ok(Workload::Compute { steps: 0, hz: 1000 })
        );
        assert_eq!(
            Workload::from_cmdline("workload=ticks count=50 hz=1000"),
            Ok(Workload::Ticks {
                count: 50,
                hz: 1000
            })
        );
        assert_eq!(
            Workload::from_cmdline("workload=idle"),
            Ok(Workload::Idle { hz: 100 })
        );
        assert_eq!(
            Workload::from_cmdline("workload=fault"),
            Ok(Workload::Fault {
                kind: FaultKind::InvalidOpcode
            })
        );
        assert_eq!(
            Workload::from_cmdline("workload=fault kind=pf"),
            Ok(Workload::Fault {
                kind: FaultKind::PageFault
            })
        );
    }

    #[test]
    fn errors() {
        assert_eq!(
            message(""),
            "no workload= on the command line (expected compute, ticks, idle, exits or fault)"
        );
        assert_eq!(
            message("workload=fly"),
            "unknown workload 'fly' (expected compute, ticks, idle, exits or fault)"
        );
        assert_eq!(
            message("workload=fault kind=de"),
            "unknown fault kind 'de' (expected ud, gp or pf)"
        );
        assert_eq!(message("workload=compute"), "workload compute needs steps=");
        assert_eq!(
            message("workload=ticks hz=5"),
            "workload ticks needs count="
        );
        assert_eq!(
            message("workload=compute steps=1e9"),
            "steps='1e9' is not a decimal number"
        );
        assert_eq!(
            message("workload=compute steps=-1"),
            "steps='-1' is not a decimal number"
        );
        assert_eq!(
            message("workload=compute steps=18446744073709551616"),
            "steps='18446744073709551616' is not a decimal number"
        );
        assert_eq!(
            message("workload=compute step=5"),
            "unknown parameter 'step' for workload compute"
        );
        assert_eq!(
            message("workload=idle hz=0"),
            "bad hz=: timer frequency 0 Hz is out of range (1..=100000)"
        );
        assert_eq!(
            message("workload=idle quiet"),
            "bad command line: 'quiet' is not a key=value parameter"
        );
    }
}
