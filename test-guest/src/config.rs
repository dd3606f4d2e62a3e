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
    /// `workload=reset [via=port|i8042]`: ask the VMM for a reset (port 0x600
    /// value 1, or 0xfe on the i8042 command port 0x64), to test reboots.
    Reset {
        /// Which reset path.
        via: ResetVia,
    },
    /// `workload=fault [kind=ud|gp|pf]`: raise an exception on purpose, to
    /// test the exception report.
    Fault {
        /// Which exception.
        kind: FaultKind,
    },
    /// `workload=disk [mib=M] [flushes=F]`: write M MiB of patterns to the
    /// virtio disk, flush, read back and verify; then F write+flush rounds.
    Disk {
        /// MiB to write and verify (default 4).
        mib: u64,
        /// Single-sector write+flush rounds to time (default 16).
        flushes: u64,
    },
    /// `workload=malformed [kind=all|index|loop|range|direction]`: send
    /// the virtio disk malformed descriptor chains on purpose.
    Malformed {
        /// Which malformation.
        kind: MalformedKind,
    },
    /// `workload=remap rounds=N [iters=I] [flush=invlpg|cr3] [hz=H]`: N
    /// rounds of changing a page-table entry, flushing its translation and
    /// computing through the new mapping (as a process's page tables change
    /// on fork and copy-on-write), while the timer runs at H Hz.
    Remap {
        /// Rounds: one page-table change each.
        rounds: u64,
        /// Read-modify-write steps through the mapping per round.
        iters: u64,
        /// How the guest flushes the changed translation.
        flush: FlushKind,
        /// Timer frequency in Hz.
        hz: u64,
    },
    /// `workload=dirty [mib=M] [pages=P] [hz=H] [fill=F]`: writes P pages
    /// of an M MiB buffer at each timer tick, forever, checking each
    /// page's last value before writing it (a guest that dirties memory at
    /// a known rate, for pre-copy). With F > 0 it first fills F MiB of RAM
    /// above its heap with pseudo-random words (full, incompressible
    /// pages, as a busy guest's memory is) and then also checks P of those
    /// pages whole at each tick.
    Dirty {
        /// The buffer's size in MiB.
        mib: u64,
        /// Pages written per tick.
        pages: u64,
        /// Timer frequency in Hz.
        hz: u64,
        /// MiB of RAM filled with pseudo-random words (0: none).
        fill: u64,
    },
    /// `workload=kv ip=A.B.C.D/P [gw=A.B.C.D]`: the TCP key-value service
    /// on port 7000, its log on the virtio disk.
    Kv {
        /// The guest's IPv4 address.
        ip: [u8; 4],
        /// Its prefix length.
        prefix: u8,
        /// The default gateway, if any.
        gateway: Option<[u8; 4]>,
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

/// How `workload=remap` flushes a translation after changing its entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlushKind {
    /// `invlpg` of the page (the default).
    Invlpg,
    /// A CR3 reload (every non-global translation).
    Cr3,
}

/// The malformed descriptor chains `workload=malformed` sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MalformedKind {
    /// Every kind below, one after the other (the default).
    All,
    /// A `next` index past the queue size.
    Index,
    /// A chain that loops.
    Loop,
    /// A buffer outside guest memory.
    Range,
    /// A device-readable buffer after a device-writable one.
    Direction,
}

impl MalformedKind {
    /// The name used on the command line and in the output.
    pub fn name(self) -> &'static str {
        match self {
            MalformedKind::All => "all",
            MalformedKind::Index => "index",
            MalformedKind::Loop => "loop",
            MalformedKind::Range => "range",
            MalformedKind::Direction => "direction",
        }
    }
}

/// The reset path `workload=reset` uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResetVia {
    /// Value 1 on Cloud Hypervisor's ACPI shutdown/reboot port 0x600.
    Port,
    /// 0xfe (pulse reset) on the i8042 command port 0x64.
    I8042,
}

/// A command line that names no usable workload.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum ConfigError<'a> {
    /// The command line does not parse. (Not a `#[source]`: an error
    /// source must be `'static`, and this one borrows the command line.)
    #[error("bad command line: {0}")]
    Cmdline(CmdlineError<'a>),
    /// No `workload=` parameter.
    #[error("no workload= on the command line (expected compute, ticks, idle, exits, fault, disk, kv, malformed, remap or dirty)")]
    NoWorkload,
    /// `workload=` names no known workload.
    #[error("unknown workload '{0}' (expected compute, ticks, idle, exits, fault, disk, kv, malformed, remap or dirty)")]
    UnknownWorkload(&'a str),
    /// `via=` names no known reset path.
    #[error("unknown reset path '{0}' (expected port or i8042)")]
    UnknownResetVia(&'a str),
    /// `kind=` names no known fault.
    #[error("unknown fault kind '{0}' (expected ud, gp or pf)")]
    UnknownFault(&'a str),
    /// `flush=` names no known flush.
    #[error("unknown flush '{0}' (expected invlpg or cr3)")]
    UnknownFlush(&'a str),
    /// `kind=` names no known malformation.
    #[error("unknown malformed kind '{0}' (expected all, index, loop, range or direction)")]
    UnknownMalformed(&'a str),
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
    /// An address that is not `A.B.C.D` (with `/P` where a prefix is needed).
    #[error("{key}='{value}' is not an IPv4 address{}", if *.prefix { " with a prefix (A.B.C.D/P, P in 1..=32)" } else { " (A.B.C.D)" })]
    BadAddress {
        /// The key.
        key: &'static str,
        /// Its value.
        value: &'a str,
        /// Whether a `/P` prefix was expected.
        prefix: bool,
    },
    /// A number out of the range the workload accepts.
    #[error("{key}={value} is out of range ({min}..={max})")]
    OutOfRange {
        /// The key.
        key: &'static str,
        /// Its value.
        value: u64,
        /// Smallest value accepted.
        min: u64,
        /// Largest value accepted.
        max: u64,
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
            "reset" => &["via"],
            "disk" => &["mib", "flushes"],
            "kv" => &["ip", "gw"],
            "malformed" => &["kind"],
            "remap" => &["rounds", "iters", "flush", "hz"],
            "dirty" => &["mib", "pages", "hz", "fill"],
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
            "reset" => Workload::Reset {
                via: match cmdline.get("via").unwrap_or("port") {
                    "port" => ResetVia::Port,
                    "i8042" => ResetVia::I8042,
                    other => return Err(ConfigError::UnknownResetVia(other)),
                },
            },
            "exits" => Workload::Exits {
                count: required("count")?,
            },
            "disk" => Workload::Disk {
                mib: in_range(&cmdline, "mib", 4, 1, 1024)?,
                flushes: in_range(&cmdline, "flushes", 16, 0, 100_000)?,
            },
            "remap" => Workload::Remap {
                rounds: in_range(&cmdline, "rounds", 1000, 1, 100_000_000)?,
                iters: in_range(&cmdline, "iters", 20_000, 1, 1 << 32)?,
                flush: match cmdline.get("flush").unwrap_or("invlpg") {
                    "invlpg" => FlushKind::Invlpg,
                    "cr3" => FlushKind::Cr3,
                    other => return Err(ConfigError::UnknownFlush(other)),
                },
                hz,
            },
            "dirty" => Workload::Dirty {
                mib: in_range(&cmdline, "mib", 4, 1, 8)?,
                pages: in_range(&cmdline, "pages", 256, 1, 2048)?,
                hz,
                fill: in_range(&cmdline, "fill", 0, 0, 4096)?,
            },
            "malformed" => Workload::Malformed {
                kind: match cmdline.get("kind").unwrap_or("all") {
                    "all" => MalformedKind::All,
                    "index" => MalformedKind::Index,
                    "loop" => MalformedKind::Loop,
                    "range" => MalformedKind::Range,
                    "direction" => MalformedKind::Direction,
                    other => return Err(ConfigError::UnknownMalformed(other)),
                },
            },
            "kv" => {
                let ip = cmdline.get("ip").ok_or(ConfigError::Missing {
                    workload: name,
                    key: "ip",
                })?;
                let (address, prefix) = ip
                    .split_once('/')
                    .and_then(|(a, p)| Some((parse_ipv4(a)?, p.parse::<u8>().ok()?)))
                    .filter(|&(_, p)| (1..=32).contains(&p))
                    .ok_or(ConfigError::BadAddress {
                        key: "ip",
                        value: ip,
                        prefix: true,
                    })?;
                let gateway = cmdline
                    .get("gw")
                    .map(|gw| {
                        parse_ipv4(gw).ok_or(ConfigError::BadAddress {
                            key: "gw",
                            value: gw,
                            prefix: false,
                        })
                    })
                    .transpose()?;
                Workload::Kv {
                    ip: address,
                    prefix,
                    gateway,
                }
            }
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

/// The value of `key` (default `default`), checked against `min..=max`.
fn in_range<'a>(
    cmdline: &Cmdline<'a>,
    key: &'static str,
    default: u64,
    min: u64,
    max: u64,
) -> Result<u64, ConfigError<'a>> {
    let value = number(cmdline, key)?.unwrap_or(default);
    if !(min..=max).contains(&value) {
        return Err(ConfigError::OutOfRange {
            key,
            value,
            min,
            max,
        });
    }
    Ok(value)
}

/// Parses dotted-quad `A.B.C.D` (decimal, each 0..=255).
pub fn parse_ipv4(text: &str) -> Option<[u8; 4]> {
    let mut out = [0u8; 4];
    let mut parts = text.split('.');
    for byte in &mut out {
        let part = parts.next()?;
        if part.is_empty() || part.len() > 3 || !part.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        *byte = part.parse().ok()?;
    }
    parts.next().is_none().then_some(out)
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
    fn dirty_workload() {
        assert_eq!(
            Workload::from_cmdline("workload=dirty"),
            Ok(Workload::Dirty {
                mib: 4,
                pages: 256,
                hz: DEFAULT_HZ,
                fill: 0
            })
        );
        assert_eq!(
            Workload::from_cmdline("workload=dirty mib=8 pages=16 hz=250 fill=480"),
            Ok(Workload::Dirty {
                mib: 8,
                pages: 16,
                hz: 250,
                fill: 480
            })
        );
        assert_eq!(
            message("workload=dirty fill=4097"),
            "fill=4097 is out of range (0..=4096)"
        );
        assert_eq!(
            message("workload=dirty mib=9"),
            "mib=9 is out of range (1..=8)"
        );
    }

    #[test]
    fn remap_workload() {
        assert_eq!(
            Workload::from_cmdline("workload=remap"),
            Ok(Workload::Remap {
                rounds: 1000,
                iters: 20_000,
                flush: FlushKind::Invlpg,
                hz: DEFAULT_HZ
            })
        );
        assert_eq!(
            Workload::from_cmdline("workload=remap rounds=7 iters=3 flush=cr3 hz=1000"),
            Ok(Workload::Remap {
                rounds: 7,
                iters: 3,
                flush: FlushKind::Cr3,
                hz: 1000
            })
        );
        assert_eq!(
            message("workload=remap flush=tlb"),
            "unknown flush 'tlb' (expected invlpg or cr3)"
        );
        assert_eq!(
            message("workload=remap rounds=0"),
            "rounds=0 is out of range (1..=100000000)"
        );
        assert!(Workload::from_cmdline("workload=remap steps=1").is_err());
    }

    #[test]
    fn reset_workload() {
        assert_eq!(
            Workload::from_cmdline("workload=reset"),
            Ok(Workload::Reset {
                via: ResetVia::Port
            })
        );
        assert_eq!(
            Workload::from_cmdline("workload=reset via=i8042"),
            Ok(Workload::Reset {
                via: ResetVia::I8042
            })
        );
        assert!(Workload::from_cmdline("workload=reset via=acpi").is_err());
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
    fn disk_and_kv_workloads() {
        assert_eq!(
            Workload::from_cmdline("workload=disk"),
            Ok(Workload::Disk {
                mib: 4,
                flushes: 16
            })
        );
        assert_eq!(
            Workload::from_cmdline("workload=disk mib=64 flushes=0"),
            Ok(Workload::Disk {
                mib: 64,
                flushes: 0
            })
        );
        assert_eq!(
            Workload::from_cmdline("workload=kv ip=10.0.0.2/24 gw=10.0.0.1"),
            Ok(Workload::Kv {
                ip: [10, 0, 0, 2],
                prefix: 24,
                gateway: Some([10, 0, 0, 1])
            })
        );
        assert_eq!(
            Workload::from_cmdline("workload=kv ip=192.168.249.2/30"),
            Ok(Workload::Kv {
                ip: [192, 168, 249, 2],
                prefix: 30,
                gateway: None
            })
        );
        assert_eq!(message("workload=kv"), "workload kv needs ip=");
        assert_eq!(
            message("workload=kv ip=10.0.0.2"),
            "ip='10.0.0.2' is not an IPv4 address with a prefix (A.B.C.D/P, P in 1..=32)"
        );
        assert_eq!(
            message("workload=kv ip=10.0.0.256/24"),
            "ip='10.0.0.256/24' is not an IPv4 address with a prefix (A.B.C.D/P, P in 1..=32)"
        );
        assert_eq!(
            message("workload=kv ip=10.0.0.2/33"),
            "ip='10.0.0.2/33' is not an IPv4 address with a prefix (A.B.C.D/P, P in 1..=32)"
        );
        assert_eq!(
            message("workload=kv ip=10.0.0.2/24 gw=10.0.0"),
            "gw='10.0.0' is not an IPv4 address (A.B.C.D)"
        );
        assert_eq!(
            message("workload=disk mib=0"),
            "mib=0 is out of range (1..=1024)"
        );
        assert_eq!(
            message("workload=disk port=1"),
            "unknown parameter 'port' for workload disk"
        );
    }

    #[test]
    fn ipv4() {
        assert_eq!(parse_ipv4("0.0.0.0"), Some([0; 4]));
        assert_eq!(parse_ipv4("255.1.2.3"), Some([255, 1, 2, 3]));
        for bad in [
            "",
            "1.2.3",
            "1.2.3.4.5",
            "1..2.3",
            "a.b.c.d",
            "1.2.3.+4",
            "1.2.3.0004",
        ] {
            assert_eq!(parse_ipv4(bad), None, "{bad}");
        }
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
            "no workload= on the command line (expected compute, ticks, idle, exits, fault, disk, kv, malformed, remap or dirty)"
        );
        assert_eq!(
            message("workload=fly"),
            "unknown workload 'fly' (expected compute, ticks, idle, exits, fault, disk, kv, malformed, remap or dirty)"
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
