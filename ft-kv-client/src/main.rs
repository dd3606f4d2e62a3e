// Copyright 2026 The ft-cloud-hypervisor authors.
// SPDX-License-Identifier: Apache-2.0

//! `ft-kv-client`: talks to the test guest's key-value service.
//!
//! ```text
//! ft-kv-client --addr IP:PORT [load] [--connections C] [--duration SECS | --count N]
//!              [--keys K] [--get-percent P] [--value-size B] [--timeout SECS] [--prefix P]
//! ft-kv-client --addr IP:PORT stream [--duration SECS | --count N] [--get-every N]
//!              [--value-size B] [--timeout SECS] [--prefix P] [--verify] [--timeline FILE]
//! ft-kv-client --addr IP:PORT set KEY VALUE
//! ft-kv-client --addr IP:PORT get KEY
//! ```
//!
//! `load` (the default) prints one line of results (see `Report`) and
//! exits 0 only if every answer was verified. `stream` runs the verified
//! single-connection stream of the failover tests (see `StreamReport`;
//! `--timeout` is how long one reply may take, 30 s by default) and exits
//! 0 only when it completed on its one connection with nothing lost or
//! wrong; `--timeline FILE` writes every reply's time and latency as CSV.
//! Usage errors exit 2, failed requests or verification 1.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use ft_kv_client::{run_load, run_stream, Connection, LoadConfig, StreamConfig};
use thiserror::Error;

const USAGE: &str =
    "usage: ft-kv-client --addr IP:PORT [load] [--connections C] [--duration SECS | --count N]
                    [--keys K] [--get-percent P] [--value-size B] [--timeout SECS] [--prefix P]
       ft-kv-client --addr IP:PORT stream [--duration SECS | --count N] [--get-every N]
                    [--value-size B] [--timeout SECS] [--prefix P] [--verify] [--timeline FILE]
       ft-kv-client --addr IP:PORT set KEY VALUE
       ft-kv-client --addr IP:PORT get KEY";

/// A command line that cannot be run.
#[derive(Debug, Error, PartialEq)]
enum UsageError {
    #[error("missing --addr IP:PORT")]
    NoAddr,
    #[error("{flag} needs a value")]
    MissingValue { flag: String },
    #[error("{flag}: '{value}' is not {what}")]
    BadValue {
        flag: String,
        value: String,
        what: &'static str,
    },
    #[error("unknown argument '{0}'")]
    Unknown(String),
    #[error("'{0}' needs {1}")]
    Operands(&'static str, &'static str),
    #[error("give either --duration or --count, not both")]
    DurationAndCount,
    #[error("{flag} does not apply to '{command}'")]
    NotFor {
        flag: &'static str,
        command: &'static str,
    },
}

/// What the command line asks for.
#[derive(Debug)]
enum Command {
    Load(LoadConfig),
    Stream(StreamConfig, Option<PathBuf>),
    Set(SocketAddr, Duration, String, String),
    Get(SocketAddr, Duration, String),
}

fn parse_args(args: &[String]) -> Result<Command, UsageError> {
    let mut addr = None;
    let mut operands = Vec::new();
    let mut connections = None;
    let mut duration = None;
    let mut count = None;
    let mut keys = None;
    let mut get_percent = None;
    let mut value_size = None;
    let mut timeout = None;
    let mut prefix = None;
    let mut get_every = None;
    let mut timeline = None;
    let mut verify = false;
    let mut iter = args.iter();
    while let Some(arg) = iter.next() {
        if !arg.starts_with("--") {
            operands.push(arg.clone());
            continue;
        }
        if arg == "--verify" {
            verify = true;
            continue;
        }
        let (flag, inline) = match arg.split_once('=') {
            Some((f, v)) => (f.to_string(), Some(v.to_string())),
            None => (arg.clone(), None),
        };
        let known = [
            "--addr",
            "--connections",
            "--duration",
            "--count",
            "--keys",
            "--get-percent",
            "--value-size",
            "--timeout",
            "--prefix",
            "--get-every",
            "--timeline",
        ];
        if !known.contains(&flag.as_str()) {
            return Err(UsageError::Unknown(arg.clone()));
        }
        let value = match inline {
            Some(v) => v,
            None => iter
                .next()
                .cloned()
                .ok_or_else(|| UsageError::MissingValue { flag: flag.clone() })?,
        };
        let bad = |what| UsageError::BadValue {
            flag: flag.clone(),
            value: value.clone(),
            what,
        };
        match flag.as_str() {
            "--addr" => {
                addr = Some(
                    value
                        .parse::<SocketAddr>()
                        .map_err(|_| bad("an IP:PORT address"))?,
                )
            }
            "--connections" => {
                connections = Some(positive(&value).ok_or_else(|| bad("a positive number"))?)
            }
            "--duration" => {
                duration = Some(seconds(&value).ok_or_else(|| bad("a duration in seconds"))?)
            }
            "--count" => {
                count = Some(positive(&value).ok_or_else(|| bad("a positive number"))? as u64)
            }
            "--keys" => {
                keys = Some(positive(&value).ok_or_else(|| bad("a positive number"))? as u64)
            }
            "--get-percent" => {
                get_percent = Some(
                    value
                        .parse::<u32>()
                        .ok()
                        .filter(|p| *p <= 100)
                        .ok_or_else(|| bad("a percentage (0..=100)"))?,
                )
            }
            "--value-size" => {
                value_size = Some(
                    positive(&value)
                        .filter(|n| *n <= ft_kv_client::MAX_VALUE)
                        .ok_or_else(|| bad("a size in 1..=512"))?,
                )
            }
            "--timeout" => {
                timeout = Some(seconds(&value).ok_or_else(|| bad("a duration in seconds"))?)
            }
            "--get-every" => {
                get_every = Some(
                    value
                        .parse::<u64>()
                        .map_err(|_| bad("a number (0: no GETs)"))?,
                )
            }
            "--timeline" => timeline = Some(PathBuf::from(value)),
            _ => prefix = Some(value),
        }
    }
    let addr = addr.ok_or(UsageError::NoAddr)?;
    let command = operands.first().map(String::as_str);
    if command != Some("stream") {
        let name = match command {
            Some("set") => "set",
            Some("get") => "get",
            _ => "load",
        };
        if verify {
            return Err(UsageError::NotFor {
                flag: "--verify",
                command: name,
            });
        }
        for (given, flag) in [
            (get_every.is_some(), "--get-every"),
            (timeline.is_some(), "--timeline"),
        ] {
            if given {
                return Err(UsageError::NotFor {
                    flag,
                    command: name,
                });
            }
        }
    }
    if command == Some("stream") {
        for (given, flag) in [
            (connections.is_some(), "--connections"),
            (keys.is_some(), "--keys"),
            (get_percent.is_some(), "--get-percent"),
        ] {
            if given {
                return Err(UsageError::NotFor {
                    flag,
                    command: "stream",
                });
            }
        }
        if operands.len() > 1 {
            return Err(UsageError::Unknown(operands[1].clone()));
        }
        if duration.is_some() && count.is_some() {
            return Err(UsageError::DurationAndCount);
        }
        let mut config = StreamConfig::new(addr);
        if let Some(t) = timeout {
            config.connect_timeout = t;
            config.reply_timeout = t;
        }
        if count.is_some() {
            config.duration = None;
            config.count = count;
        }
        if duration.is_some() {
            config.duration = duration;
        }
        config.get_every = get_every.unwrap_or(0);
        config.value_size = value_size.unwrap_or(config.value_size);
        config.verify = verify;
        if let Some(p) = prefix {
            config.prefix = p;
        }
        return Ok(Command::Stream(config, timeline));
    }
    let timeout = timeout.unwrap_or(Duration::from_secs(10));
    match command {
        Some("set") => match operands.as_slice() {
            [_, key, value] => Ok(Command::Set(addr, timeout, key.clone(), value.clone())),
            _ => Err(UsageError::Operands("set", "KEY VALUE")),
        },
        Some("get") => match operands.as_slice() {
            [_, key] => Ok(Command::Get(addr, timeout, key.clone())),
            _ => Err(UsageError::Operands("get", "KEY")),
        },
        None | Some("load") => {
            if operands.len() > 1 {
                return Err(UsageError::Unknown(operands[1].clone()));
            }
            if duration.is_some() && count.is_some() {
                return Err(UsageError::DurationAndCount);
            }
            let mut config = LoadConfig::new(addr);
            config.timeout = timeout;
            if let Some(d) = duration {
                config.duration = Some(d);
                config.count = None;
            }
            if let Some(c) = count {
                config.count = Some(c);
            }
            config.connections = connections.unwrap_or(config.connections);
            config.keys = keys.unwrap_or(config.keys);
            config.get_percent = get_percent.unwrap_or(config.get_percent);
            config.value_size = value_size.unwrap_or(config.value_size);
            if let Some(p) = prefix {
                config.prefix = p;
            }
            Ok(Command::Load(config))
        }
        Some(other) => Err(UsageError::Unknown(other.to_string())),
    }
}

fn positive(text: &str) -> Option<usize> {
    text.parse::<usize>().ok().filter(|n| *n > 0)
}

fn seconds(text: &str) -> Option<Duration> {
    let text = text.strip_suffix('s').unwrap_or(text);
    text.parse::<f64>()
        .ok()
        .filter(|s| s.is_finite() && *s > 0.0 && *s < 1e6)
        .map(Duration::from_secs_f64)
}

/// Prints an error with its chain of causes.
fn report_error(error: &dyn std::error::Error) {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(e) = cause {
        text.push_str(": ");
        text.push_str(&e.to_string());
        cause = e.source();
    }
    eprintln!("ft-kv-client: {text}");
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "--help" || a == "-h") {
        println!("{USAGE}");
        return ExitCode::SUCCESS;
    }
    let command = match parse_args(&args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("ft-kv-client: {e}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let result = match command {
        Command::Load(config) => run_load(&config)
            .map(|report| println!("{report}"))
            .map_err(|e| Box::new(e) as Box<dyn std::error::Error>),
        Command::Stream(config, timeline) => match run_stream(&config) {
            Ok(report) => {
                println!("{report}");
                if let Some(path) = timeline {
                    if let Err(e) = std::fs::write(&path, report.timeline_csv()) {
                        eprintln!("ft-kv-client: cannot write {}: {e}", path.display());
                        return ExitCode::FAILURE;
                    }
                }
                for bad in &report.bad_keys {
                    eprintln!(
                        "ft-kv-client: {} acknowledged {:?}, read back {:?}",
                        bad.key, bad.expected, bad.got
                    );
                }
                return if report.ok() {
                    ExitCode::SUCCESS
                } else {
                    ExitCode::FAILURE
                };
            }
            Err(e) => Err(Box::new(e) as Box<dyn std::error::Error>),
        },
        Command::Set(addr, timeout, key, value) => Connection::connect(addr, timeout)
            .and_then(|mut c| c.set(&key, &value))
            .map(|()| println!("OK"))
            .map_err(|e| Box::new(e) as Box<dyn std::error::Error>),
        Command::Get(addr, timeout, key) => Connection::connect(addr, timeout)
            .and_then(|mut c| c.get(&key))
            .map(|v| match v {
                Some(v) => println!("VALUE {v}"),
                None => println!("NONE"),
            })
            .map_err(|e| Box::new(e) as Box<dyn std::error::Error>),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            report_error(e.as_ref());
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &str) -> Result<Command, UsageError> {
        let v: Vec<String> = args.split_whitespace().map(String::from).collect();
        parse_args(&v)
    }

    #[test]
    fn load_flags() {
        let Ok(Command::Load(c)) = parse("--addr 10.0.0.2:7000 --connections 8 --duration 2.5 --keys 7 --get-percent 90 --value-size 100 --prefix p1") else {
            panic!("not a load");
        };
        assert_eq!(c.addr, "10.0.0.2:7000".parse().unwrap());
        assert_eq!(c.connections, 8);
        assert_eq!(c.duration, Some(Duration::from_millis(2500)));
        assert_eq!(c.count, None);
        assert_eq!(c.keys, 7);
        assert_eq!(c.get_percent, 90);
        assert_eq!(c.value_size, 100);
        assert_eq!(c.prefix, "p1");
        let Ok(Command::Load(c)) = parse("load --addr=10.0.0.2:7000 --count 5") else {
            panic!("not a load");
        };
        assert_eq!(c.count, Some(5));
    }

    #[test]
    fn stream_flags() {
        let Ok(Command::Stream(c, timeline)) =
            parse("--addr 10.0.0.2:7000 stream --duration 3 --get-every 4 --verify --timeout 60 --value-size 32 --prefix f1 --timeline t.csv")
        else {
            panic!("not a stream");
        };
        assert_eq!(c.addr, "10.0.0.2:7000".parse().unwrap());
        assert_eq!(c.duration, Some(Duration::from_secs(3)));
        assert_eq!(c.count, None);
        assert_eq!(c.get_every, 4);
        assert!(c.verify);
        assert_eq!(c.reply_timeout, Duration::from_secs(60));
        assert_eq!(c.connect_timeout, Duration::from_secs(60));
        assert_eq!(c.value_size, 32);
        assert_eq!(c.prefix, "f1");
        assert_eq!(timeline, Some(PathBuf::from("t.csv")));
        let Ok(Command::Stream(c, None)) = parse("stream --addr 10.0.0.2:7000 --count 9") else {
            panic!("not a stream");
        };
        assert_eq!((c.count, c.duration), (Some(9), None));
        assert!(!c.verify);
        assert_eq!(c.reply_timeout, Duration::from_secs(30));
        assert_eq!(
            parse("--addr 1.2.3.4:1 stream --connections 2")
                .unwrap_err()
                .to_string(),
            "--connections does not apply to 'stream'"
        );
        assert_eq!(
            parse("--addr 1.2.3.4:1 load --verify")
                .unwrap_err()
                .to_string(),
            "--verify does not apply to 'load'"
        );
        assert_eq!(
            parse("--addr 1.2.3.4:1 get k --get-every 2")
                .unwrap_err()
                .to_string(),
            "--get-every does not apply to 'get'"
        );
        assert_eq!(
            parse("--addr 1.2.3.4:1 --timeline x.csv")
                .unwrap_err()
                .to_string(),
            "--timeline does not apply to 'load'"
        );
        assert_eq!(
            parse("--addr 1.2.3.4:1 stream --get-every x")
                .unwrap_err()
                .to_string(),
            "--get-every: 'x' is not a number (0: no GETs)"
        );
        assert_eq!(
            parse("--addr 1.2.3.4:1 stream --duration 1 --count 2").unwrap_err(),
            UsageError::DurationAndCount
        );
    }

    #[test]
    fn single_requests() {
        assert!(
            matches!(parse("--addr 1.2.3.4:7000 set k v"), Ok(Command::Set(_, _, k, v)) if k == "k" && v == "v")
        );
        assert!(
            matches!(parse("get k --addr 1.2.3.4:7000"), Ok(Command::Get(_, _, k)) if k == "k")
        );
    }

    #[test]
    fn usage_errors() {
        assert_eq!(parse("load").unwrap_err(), UsageError::NoAddr);
        assert_eq!(
            parse("--addr 1.2.3.4").unwrap_err().to_string(),
            "--addr: '1.2.3.4' is not an IP:PORT address"
        );
        assert_eq!(
            parse("--addr").unwrap_err().to_string(),
            "--addr needs a value"
        );
        assert_eq!(
            parse("--addr 1.2.3.4:1 --bogus 1").unwrap_err().to_string(),
            "unknown argument '--bogus'"
        );
        assert_eq!(
            parse("--addr 1.2.3.4:1 --count 0").unwrap_err().to_string(),
            "--count: '0' is not a positive number"
        );
        assert_eq!(
            parse("--addr 1.2.3.4:1 --get-percent 101")
                .unwrap_err()
                .to_string(),
            "--get-percent: '101' is not a percentage (0..=100)"
        );
        assert_eq!(
            parse("--addr 1.2.3.4:1 --duration 1 --count 2").unwrap_err(),
            UsageError::DurationAndCount
        );
        assert_eq!(
            parse("--addr 1.2.3.4:1 set k").unwrap_err().to_string(),
            "'set' needs KEY VALUE"
        );
        assert_eq!(
            parse("--addr 1.2.3.4:1 frob").unwrap_err().to_string(),
            "unknown argument 'frob'"
        );
    }
}
