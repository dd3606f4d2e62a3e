// Copyright 2026 The ft-cloud-hypervisor authors.
// SPDX-License-Identifier: Apache-2.0

//! `ft-log`: look into a record/replay log without running it, as `rr dump`
//! does for rr traces, and say where a replay diverged.
//!
//! The work is in `ft_backend` (`inspect`, `report`, `symbols`), which reads
//! logs through its own reader; this file parses the command line and
//! prints. Exit status: 0 on success, 1 when a log or report is invalid or
//! unreadable (with the error chain on stderr), 2 on a usage error. `info`
//! and `dump` of a truncated, corrupt or unfinished log still print what
//! the frames before the damage hold, name the damage on stderr and exit 1.

use std::path::PathBuf;
use std::process::ExitCode;

use ft_backend::inspect::{check, dump, InspectError, LogInfo};
use ft_backend::report::{DivergenceReport, ReportError};
use ft_backend::symbols::{Symbols, SymbolsError};

const USAGE: &str = "\
Usage: ft-log <COMMAND>

Commands:
  info LOG [--top N]                 header, configuration, statistics and the
                                     N largest frames (default 10); of a
                                     damaged log, the frames before the damage
  dump LOG [--around EXIT] [--count N]
                                     entries around an exit count, one per line
                                     (default: the first N, N = 40)
  check LOG                          integrity check without running the log:
                                     exit status 1 when it is corrupt,
                                     truncated or not a log
  diverge --report FILE [--symbols VMLINUX] [--recording LOG] [--count N]
                                     where a replay of a debug recording
                                     (--fault-tolerance ...,debug_from=N)
                                     diverged, from the report its replay
                                     wrote (debug_report=FILE); with symbols
                                     of the kernel image, and the recorded
                                     entries around the divergence
  help                               this text
";

#[derive(Debug, thiserror::Error)]
enum ToolError {
    #[error(transparent)]
    Inspect(#[from] InspectError),
    #[error(transparent)]
    Report(#[from] ReportError),
    #[error(transparent)]
    Symbols(#[from] SymbolsError),
}

#[derive(Debug, PartialEq, Eq)]
enum Command {
    Help,
    Info {
        log: PathBuf,
        top: usize,
    },
    Dump {
        log: PathBuf,
        around: Option<u64>,
        count: usize,
    },
    Check {
        log: PathBuf,
    },
    Diverge {
        report: PathBuf,
        symbols: Option<PathBuf>,
        recording: Option<PathBuf>,
        count: usize,
    },
}

/// The value of `--flag VALUE` or `--flag=VALUE`.
fn take_value(
    flag: &str,
    arg: &str,
    rest: &mut impl Iterator<Item = String>,
) -> Result<Option<String>, String> {
    if arg == flag {
        return rest
            .next()
            .map(Some)
            .ok_or_else(|| format!("{flag} needs a value"));
    }
    Ok(arg
        .strip_prefix(flag)
        .and_then(|v| v.strip_prefix('='))
        .map(str::to_string))
}

fn number<T: std::str::FromStr>(flag: &str, v: &str) -> Result<T, String> {
    v.parse()
        .map_err(|_| format!("{flag} expects a number, not {v:?}"))
}

fn parse_args(args: impl IntoIterator<Item = String>) -> Result<Command, String> {
    let mut args = args.into_iter();
    let Some(cmd) = args.next() else {
        return Err("a command is needed".into());
    };
    let mut positional = Vec::new();
    let mut flags: Vec<(String, String)> = Vec::new();
    let known: &[&str] = match cmd.as_str() {
        "help" | "--help" | "-h" => return Ok(Command::Help),
        "info" => &["--top"],
        "dump" => &["--around", "--count"],
        "check" => &[],
        "diverge" => &["--report", "--symbols", "--recording", "--count"],
        other => return Err(format!("unknown command {other:?}")),
    };
    while let Some(a) = args.next() {
        if !a.starts_with("--") {
            positional.push(a);
            continue;
        }
        let mut found = false;
        for f in known {
            if let Some(v) = take_value(f, &a, &mut args)? {
                flags.push((f.to_string(), v));
                found = true;
                break;
            }
        }
        if !found {
            return Err(format!("unknown option {a:?} for {cmd}"));
        }
    }
    let flag = |name: &str| {
        flags
            .iter()
            .rev()
            .find(|(f, _)| f == name)
            .map(|(_, v)| v.clone())
    };
    let one_log = |positional: &[String]| -> Result<PathBuf, String> {
        match positional {
            [log] => Ok(PathBuf::from(log)),
            [] => Err(format!("{cmd} needs a LOG")),
            _ => Err(format!("{cmd} takes one LOG")),
        }
    };
    Ok(match cmd.as_str() {
        "info" => Command::Info {
            log: one_log(&positional)?,
            top: flag("--top").map_or(Ok(10), |v| number("--top", &v))?,
        },
        "dump" => Command::Dump {
            log: one_log(&positional)?,
            around: flag("--around")
                .map(|v| number("--around", &v))
                .transpose()?,
            count: flag("--count").map_or(Ok(40), |v| number("--count", &v))?,
        },
        "check" => Command::Check {
            log: one_log(&positional)?,
        },
        _ => {
            if !positional.is_empty() {
                return Err(format!("unexpected argument {:?}", positional[0]));
            }
            Command::Diverge {
                report: flag("--report")
                    .map(PathBuf::from)
                    .ok_or("diverge needs --report FILE")?,
                symbols: flag("--symbols").map(PathBuf::from),
                recording: flag("--recording").map(PathBuf::from),
                count: flag("--count").map_or(Ok(20), |v| number("--count", &v))?,
            }
        }
    })
}

/// What a command printed, and the damage of the log it read, if any.
fn run(cmd: Command) -> Result<(String, Option<String>), ToolError> {
    Ok(match cmd {
        Command::Help => (USAGE.to_string(), None),
        Command::Info { log, top } => {
            let info = LogInfo::collect(&log, top)?;
            (info.render(), info.damage)
        }
        Command::Dump { log, around, count } => {
            let d = dump(&log, around, count)?;
            let mut s = d.lines.join("\n");
            s.push('\n');
            (s, d.damage)
        }
        Command::Check { log } => {
            let c = check(&log)?;
            let s = format!(
                "{}: ok: {} frames, {} checkpoints, {} exits, ends with an end frame\n",
                log.display(),
                c.frames,
                c.checkpoints,
                c.exits
            );
            (s, None)
        }
        Command::Diverge {
            report,
            symbols,
            recording,
            count,
        } => {
            let report = DivergenceReport::read(&report)?;
            let symbols = symbols.map(|p| Symbols::load(&p)).transpose()?;
            let mut s = report.render(symbols.as_ref());
            let at = match (&report.vcpu, &report.memory) {
                (Some(v), Some(m)) => Some(v.exit.min(m.exit)),
                (Some(v), None) => Some(v.exit),
                (None, Some(m)) => Some(m.exit),
                (None, None) => None,
            };
            let mut damage = None;
            if let (Some(log), Some(at)) = (recording, at) {
                s.push_str(&format!(
                    "recorded entries around exit {at} ({}):\n",
                    log.display()
                ));
                let d = dump(&log, Some(at), count)?;
                for l in d.lines {
                    s.push_str("  ");
                    s.push_str(&l);
                    s.push('\n');
                }
                damage = d.damage;
            }
            (s, damage)
        }
    })
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = format!("Error: {e}");
    let mut source = e.source();
    while let Some(c) = source {
        s.push_str(&format!("\n  caused by: {c}"));
        source = c.source();
    }
    s
}

fn main() -> ExitCode {
    match parse_args(std::env::args().skip(1)) {
        Ok(cmd) => match run(cmd) {
            Ok((out, None)) => {
                print!("{out}");
                ExitCode::SUCCESS
            }
            Ok((out, Some(damage))) => {
                print!("{out}");
                eprintln!("Error: the log stops early: {damage}");
                ExitCode::from(1)
            }
            Err(e) => {
                eprintln!("{}", error_chain(&e));
                ExitCode::from(1)
            }
        },
        Err(e) => {
            eprintln!("error: {e}\n\n{USAGE}");
            ExitCode::from(2)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(v: &[&str]) -> Result<Command, String> {
        parse_args(v.iter().map(|s| s.to_string()))
    }

    #[test]
    fn parses_and_refuses() {
        assert_eq!(
            parse(&["dump", "l.log", "--around", "7", "--count=3"]),
            Ok(Command::Dump {
                log: "l.log".into(),
                around: Some(7),
                count: 3
            })
        );
        assert_eq!(
            parse(&["info", "l.log"]),
            Ok(Command::Info {
                log: "l.log".into(),
                top: 10
            })
        );
        assert!(parse(&[]).is_err());
        assert!(parse(&["frob"]).is_err());
        assert!(parse(&["check"]).is_err());
        assert!(parse(&["check", "a", "b"]).is_err());
        assert!(parse(&["dump", "l", "--around"]).is_err());
        assert!(parse(&["dump", "l", "--around", "x"]).is_err());
        assert!(parse(&["check", "l", "--top", "1"]).is_err());
        assert!(parse(&["diverge"]).is_err());
        assert!(matches!(
            parse(&["diverge", "--report", "r", "--symbols", "v"]),
            Ok(Command::Diverge { .. })
        ));
    }
}
