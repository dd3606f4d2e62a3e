// Copyright 2026 The ft-cloud-hypervisor authors.
// SPDX-License-Identifier: Apache-2.0

//! `ch-remote`: drive a running VMM through its REST API socket, with
//! Cloud Hypervisor's command names, output and exit codes: the answer's
//! body (if any) on stdout and exit 0; on failure the error chain, with
//! the server's messages, on stderr and exit 1; a usage error exits 2.

use std::io::{self, Read};
use std::os::unix::net::UnixStream;
use std::process::ExitCode;

use thiserror::Error;
use vmm::api::http::client::{ApiClient, ClientError};

/// A command and the request it makes.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Command {
    Boot,
    Counters,
    /// The path of a VmConfig JSON file, `-` for stdin.
    Create(String),
    Delete,
    Info,
    Pause,
    Ping,
    Reboot,
    Resume,
    Shutdown,
    ShutdownVmm,
    /// The JSON body of `vm.snapshot`.
    Snapshot(String),
    /// The JSON body of `vm.restore`.
    Restore(String),
    /// The JSON body of `vm.send-migration`.
    SendMigration(String),
    /// The JSON body of `vm.receive-migration`.
    ReceiveMigration(String),
    /// The JSON body of `vm.ft-add-backup`.
    FtAddBackup(String),
    /// The JSON body of `vm.ft-receive-backup`.
    FtReceiveBackup(String),
}

impl Command {
    /// HTTP method and endpoint.
    fn endpoint(&self) -> (&'static str, &'static str) {
        match self {
            Command::Boot => ("PUT", "vm.boot"),
            Command::Counters => ("GET", "vm.counters"),
            Command::Create(_) => ("PUT", "vm.create"),
            Command::Delete => ("PUT", "vm.delete"),
            Command::Info => ("GET", "vm.info"),
            Command::Pause => ("PUT", "vm.pause"),
            Command::Ping => ("GET", "vmm.ping"),
            Command::Reboot => ("PUT", "vm.reboot"),
            Command::Resume => ("PUT", "vm.resume"),
            Command::Shutdown => ("PUT", "vm.shutdown"),
            Command::ShutdownVmm => ("PUT", "vmm.shutdown"),
            Command::Snapshot(_) => ("PUT", "vm.snapshot"),
            Command::Restore(_) => ("PUT", "vm.restore"),
            Command::SendMigration(_) => ("PUT", "vm.send-migration"),
            Command::ReceiveMigration(_) => ("PUT", "vm.receive-migration"),
            Command::FtAddBackup(_) => ("PUT", "vm.ft-add-backup"),
            Command::FtReceiveBackup(_) => ("PUT", "vm.ft-receive-backup"),
        }
    }
}

/// Upstream ch-remote commands this one does not implement yet.
const UNSUPPORTED_COMMANDS: &[&str] = &[
    "add-device",
    "add-disk",
    "add-fs",
    "add-generic-vhost-user",
    "add-net",
    "add-pmem",
    "add-user-device",
    "add-vdpa",
    "add-vsock",
    "coredump",
    "nmi",
    "power-button",
    "remove-device",
    "resize",
    "resize-disk",
    "resize-zone",
];

const USAGE: &str = "\
Remotely control a cloud-hypervisor VMM.

Usage: ch-remote --api-socket <api-socket> <COMMAND>

Commands:
  boot          Boot a created VM
  counters      Counters from the VM
  create        Create VM from a JSON configuration (a file, or - for stdin) [default: -]
  delete        Delete a VM
  ft-add-backup Protect the running VM with a waiting backup (FT VMotion): [peer=]tcp:<host>:<port>,key=<file>,tiebreaker=<t>[,disks=shared|separate][,heartbeat_ms=..,timeout_ms=..,max_lag_ms=..,max_delay_us=..][,downtime_ms=..,max_iterations=..,timeout_s=..]
  ft-receive-backup
                Wait with no VM for a primary's seed, then run as its backup: [listen=]tcp:<addr>:<port>,key=<file>,tiebreaker=<t>[,disks=shared|separate][,log=<file>][,disk_paths=<p1;p2>][,net_taps=<t1;t2>][,serial=<file>][,heartbeat_ms=..,timeout_ms=..][,spares=tcp:<h>:<p>;tcp:<h>:<p>]
  info          Info on the VM
  pause         Pause the VM
  ping          Ping the VMM to check for API server availability
  receive-migration  Receive a VM migration: receiver_url=tcp:<addr>:<port>|unix:<path>[,key=<file>]
  reboot        Reboot the VM
  restore       Restore VM from a snapshot: source_url=file:///<dir>[,prefault=on|off][,resume=true|false]
  resume        Resume the VM
  send-migration  Send a VM migration: destination_url=tcp:<host>:<port>|unix:<path>[,downtime_ms=<n>][,timeout_s=<n>][,key=<file>]
                (waits, with progress on stderr, until the VM runs on the destination)
  shutdown      Shutdown the VM
  snapshot      Create a snapshot of the (paused) VM: file:///<dir>
  shutdown-vmm  Shutdown the VMM

Options:
      --api-socket <api-socket>  HTTP API socket path (UNIX domain socket).
  -h, --help                     Print help
  -V, --version                  Print version
";

/// What the command line asks for.
#[derive(Debug, PartialEq, Eq)]
enum Invocation {
    Run {
        api_socket: Option<String>,
        command: Command,
    },
    Help,
    Version,
}

/// A command line that does not parse (exit 2).
#[derive(Debug, Error, PartialEq, Eq)]
enum UsageError {
    #[error("unexpected argument '{0}' found")]
    Unexpected(String),
    #[error("unrecognized subcommand '{0}'")]
    UnknownCommand(String),
    #[error("'{0}' is not supported yet by this ch-remote")]
    UnsupportedCommand(String),
    #[error("a value is required for '--api-socket <api-socket>' but none was supplied")]
    MissingSocket,
    #[error("the argument '--api-socket' cannot be used multiple times")]
    DuplicateSocket,
    #[error("a subcommand is required")]
    NoCommand,
    #[error("{0} needs a value")]
    MissingOperand(&'static str),
    #[error("invalid value for restore: {0}")]
    BadRestore(String),
    #[error("invalid value for {0}: {1}")]
    BadMigration(&'static str, String),
    #[error("invalid value for {0}: {1}")]
    BadFt(&'static str, String),
}

/// `send-migration` and `receive-migration`'s operand: upstream's
/// `key=value,...` list (`destination_url=`/`receiver_url=` first), or the
/// bare URL of older releases. Returns the request's JSON body.
fn parse_migration(name: &'static str, operand: &str) -> Result<String, UsageError> {
    let sending = name == "send-migration";
    let url_key = if sending {
        "destination_url"
    } else {
        "receiver_url"
    };
    let bad = |why: String| UsageError::BadMigration(name, why);
    let mut body = serde_json::Map::new();
    if !operand.contains('=') {
        body.insert(url_key.into(), operand.into());
        return Ok(serde_json::Value::Object(body).to_string());
    }
    for item in operand.split(',') {
        let (k, v) = item
            .split_once('=')
            .ok_or_else(|| bad(format!("{item:?} is not key=value")))?;
        let number = |v: &str| {
            v.parse::<u64>()
                .map(serde_json::Value::from)
                .map_err(|_| bad(format!("{k}={v} is not a number")))
        };
        let value = match (k, sending) {
            (k, _) if k == url_key => v.into(),
            ("key", _) => v.into(),
            ("downtime_ms" | "timeout_s", true) => number(v)?,
            ("local", true) => match v {
                "on" | "true" => true.into(),
                "off" | "false" => false.into(),
                _ => return Err(bad(format!("local={v}: expected on or off"))),
            },
            ("tls_dir" | "connections", _) => {
                return Err(bad(format!(
                    "{k}= is not supported (use key= for encryption)"
                )))
            }
            _ => return Err(bad(format!("unknown option {k}"))),
        };
        if body.insert(k.to_string(), value).is_some() {
            return Err(bad(format!("{k} given twice")));
        }
    }
    if !body.contains_key(url_key) {
        return Err(bad(format!("{url_key}= is required")));
    }
    Ok(serde_json::Value::Object(body).to_string())
}

fn parse_command(name: &str, operands: &[String]) -> Result<Command, UsageError> {
    let command = match name {
        "boot" => Command::Boot,
        "counters" => Command::Counters,
        "create" => {
            return match operands {
                [] => Ok(Command::Create("-".to_string())),
                [path] => Ok(Command::Create(path.clone())),
                [_, extra, ..] => Err(UsageError::Unexpected(extra.clone())),
            }
        }
        "snapshot" | "restore" => {
            let operand = match operands {
                [] => {
                    return Err(UsageError::MissingOperand(if name == "snapshot" {
                        "snapshot"
                    } else {
                        "restore"
                    }))
                }
                [value] => value,
                [_, extra, ..] => return Err(UsageError::Unexpected(extra.clone())),
            };
            return if name == "snapshot" {
                Ok(Command::Snapshot(
                    serde_json::json!({ "destination_url": operand }).to_string(),
                ))
            } else {
                let config = vmm::config::parse_restore(operand)
                    .map_err(|e| UsageError::BadRestore(error_text(&e)))?;
                serde_json::to_string(&config)
                    .map(Command::Restore)
                    .map_err(|e| UsageError::BadRestore(e.to_string()))
            };
        }
        "send-migration" | "receive-migration" => {
            let name: &'static str = if name == "send-migration" {
                "send-migration"
            } else {
                "receive-migration"
            };
            let operand = match operands {
                [] => return Err(UsageError::MissingOperand(name)),
                [value] => value,
                [_, extra, ..] => return Err(UsageError::Unexpected(extra.clone())),
            };
            let body = parse_migration(name, operand)?;
            return Ok(if name == "send-migration" {
                Command::SendMigration(body)
            } else {
                Command::ReceiveMigration(body)
            });
        }
        "ft-add-backup" | "ft-receive-backup" => {
            let name: &'static str = if name == "ft-add-backup" {
                "ft-add-backup"
            } else {
                "ft-receive-backup"
            };
            if operands.is_empty() {
                return Err(UsageError::MissingOperand(name));
            }
            // A bare `tcp:ADDR:PORT` may come as its own argument.
            let operand = operands.join(",");
            let bad = |e: String| UsageError::BadFt(name, e);
            let json = |r: serde_json::Result<String>| r.map_err(|e| bad(e.to_string()));
            return if name == "ft-add-backup" {
                let c = vmm::ft_seed::options::FtAddBackupConfig::parse(&operand).map_err(bad)?;
                json(serde_json::to_string(&c)).map(Command::FtAddBackup)
            } else {
                let c =
                    vmm::ft_seed::options::FtReceiveBackupConfig::parse(&operand).map_err(bad)?;
                json(serde_json::to_string(&c)).map(Command::FtReceiveBackup)
            };
        }
        "delete" => Command::Delete,
        "info" => Command::Info,
        "pause" => Command::Pause,
        "ping" => Command::Ping,
        "reboot" => Command::Reboot,
        "resume" => Command::Resume,
        "shutdown" => Command::Shutdown,
        "shutdown-vmm" => Command::ShutdownVmm,
        _ if UNSUPPORTED_COMMANDS.contains(&name) => {
            return Err(UsageError::UnsupportedCommand(name.to_string()))
        }
        _ => return Err(UsageError::UnknownCommand(name.to_string())),
    };
    match operands.first() {
        Some(extra) => Err(UsageError::Unexpected(extra.clone())),
        None => Ok(command),
    }
}

fn parse_args<I: IntoIterator<Item = String>>(args: I) -> Result<Invocation, UsageError> {
    let mut api_socket = None;
    let mut command_name = None;
    let mut operands = Vec::new();
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        let socket = if arg == "--api-socket" {
            Some(args.next().ok_or(UsageError::MissingSocket)?)
        } else {
            arg.strip_prefix("--api-socket=").map(str::to_string)
        };
        if let Some(socket) = socket {
            if socket.is_empty() {
                return Err(UsageError::MissingSocket);
            }
            if api_socket.replace(socket).is_some() {
                return Err(UsageError::DuplicateSocket);
            }
            continue;
        }
        match arg.as_str() {
            "-h" | "--help" | "help" => return Ok(Invocation::Help),
            "-V" | "--version" => return Ok(Invocation::Version),
            // `-` alone is create's "stdin".
            _ if arg.starts_with('-') && arg != "-" => return Err(UsageError::Unexpected(arg)),
            _ if command_name.is_none() => command_name = Some(arg),
            _ => operands.push(arg),
        }
    }
    let name = command_name.ok_or(UsageError::NoCommand)?;
    Ok(Invocation::Run {
        api_socket,
        command: parse_command(&name, &operands)?,
    })
}

/// Why a command failed (exit 1).
#[derive(Debug, Error)]
enum RemoteError {
    #[error("Please provide the api-socket option")]
    NoSocket,
    #[error("Error opening HTTP socket")]
    Connect(#[source] io::Error),
    #[error("Error reading from stdin")]
    ReadingStdin(#[source] io::Error),
    #[error("Error reading from file")]
    ReadingFile(#[source] io::Error),
    #[error("http client error")]
    HttpClient(#[source] ClientError),
    /// The migration started but failed (the VM runs on the source).
    #[error("the migration failed: {0}")]
    MigrationFailed(String),
    /// A non-2xx answer; its body is shown line by line.
    #[error("http client error")]
    ServerResponse { status: u16, body: String },
}

/// Upstream's name for a status code (micro-http's `StatusCode`).
fn status_name(status: u16) -> String {
    match status {
        400 => "BadRequest".to_string(),
        404 => "NotFound".to_string(),
        429 => "TooManyRequests".to_string(),
        500 => "InternalServerError".to_string(),
        501 => "NotImplemented".to_string(),
        other => format!("Unknown({other})"),
    }
}

/// Runs one command; returns what to print on stdout.
fn run(api_socket: Option<&str>, command: &Command) -> Result<Option<String>, RemoteError> {
    let path = api_socket.ok_or(RemoteError::NoSocket)?;
    let body = match command {
        Command::Create(path) if path == "-" => {
            let mut text = String::new();
            io::stdin()
                .read_to_string(&mut text)
                .map_err(RemoteError::ReadingStdin)?;
            Some(text)
        }
        Command::Create(path) => {
            Some(std::fs::read_to_string(path).map_err(RemoteError::ReadingFile)?)
        }
        Command::Snapshot(body)
        | Command::Restore(body)
        | Command::SendMigration(body)
        | Command::ReceiveMigration(body) => Some(body.clone()),
        Command::FtAddBackup(body) | Command::FtReceiveBackup(body) => Some(body.clone()),
        _ => None,
    };
    let stream = UnixStream::connect(path).map_err(RemoteError::Connect)?;
    let mut client = ApiClient::new(stream);
    let (method, endpoint) = command.endpoint();
    let response = client
        .request(method, endpoint, body.as_deref().map(str::as_bytes))
        .map_err(RemoteError::HttpClient)?;
    if !response.is_success() {
        return Err(RemoteError::ServerResponse {
            status: response.status,
            body: response.body_text(),
        });
    }
    if let Command::SendMigration(_) = command {
        return follow_migration(path).map(|()| None);
    }
    let text = response.body_text();
    Ok((!text.is_empty()).then_some(text))
}

/// One progress line from `vm.info`'s `migration` object.
fn progress_line(m: &serde_json::Value) -> String {
    let n = |k: &str| m.get(k).and_then(serde_json::Value::as_f64).unwrap_or(0.0);
    let mut line = format!(
        "migration: {} iteration {} sent {:.1} MiB, dirty {} pages ({:.0} pages/s), {:.1} MiB/s, {:.1} s",
        m.get("phase").and_then(|v| v.as_str()).unwrap_or("?"),
        n("iterations"),
        n("bytes_sent") / f64::from(1 << 20),
        n("dirty_pages"),
        n("dirty_rate_pages_per_s"),
        n("bandwidth_mib_per_s"),
        n("elapsed_ms") / 1000.0,
    );
    if let Some(d) = m.get("downtime_ms").and_then(serde_json::Value::as_f64) {
        line.push_str(&format!(", downtime {d:.1} ms"));
    }
    line
}

/// After `send-migration`: prints the migration's progress on stderr
/// until it completed (the source VMM exits then, as upstream's) or
/// failed (an error, exit 1).
fn follow_migration(path: &str) -> Result<(), RemoteError> {
    let mut last = String::new();
    loop {
        let info = UnixStream::connect(path).ok().and_then(|stream| {
            ApiClient::new(stream)
                .request("GET", "vm.info", None)
                .ok()
                .filter(|r| r.is_success())
                .and_then(|r| serde_json::from_str::<serde_json::Value>(&r.body_text()).ok())
        });
        let Some(info) = info else {
            // The source VMM is gone: it exits once the guest runs on the
            // destination.
            eprintln!("migration: completed (the source VMM exited)");
            return Ok(());
        };
        let m = info.get("migration").cloned().unwrap_or_default();
        let line = progress_line(&m);
        if line != last {
            eprintln!("{line}");
            last = line;
        }
        match m.get("phase").and_then(|v| v.as_str()) {
            Some("completed") => return Ok(()),
            Some("failed") => {
                let error = m
                    .get("error")
                    .and_then(|v| v.as_str())
                    .unwrap_or("unknown error")
                    .to_string();
                return Err(RemoteError::MigrationFailed(error));
            }
            _ => std::thread::sleep(std::time::Duration::from_millis(100)),
        }
    }
}

/// An error and its causes on one line.
fn error_text(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cause = c.source();
    }
    s
}

/// The error report, as upstream's `cli_print_error_chain`.
fn error_report(error: &RemoteError) -> String {
    let mut lines: Vec<String> = vec![error.to_string()];
    if let RemoteError::ServerResponse { status, body } = error {
        lines.push(format!("Server responded with {}", status_name(*status)));
        match serde_json::from_str::<Vec<String>>(body) {
            Ok(messages) => lines.extend(messages),
            Err(e) if !body.is_empty() => lines.push(format!(
                "Can't get remote's error messages from JSON response: {e}: body='{body}'"
            )),
            Err(_) => {}
        }
    } else {
        let mut source = std::error::Error::source(error);
        while let Some(cause) = source {
            lines.push(cause.to_string());
            source = cause.source();
        }
    }
    if lines.len() == 1 {
        return format!(
            "Error: ch-remote exited with the following error:\n  {}\n",
            lines[0]
        );
    }
    let mut report = String::from("Error: ch-remote exited with the following chain of errors:\n");
    for (level, line) in lines.iter().enumerate() {
        report.push_str(&format!("  {level}: {line}\n"));
    }
    report
}

fn main() -> ExitCode {
    match parse_args(std::env::args().skip(1)) {
        Ok(Invocation::Help) => {
            print!("{USAGE}");
            ExitCode::SUCCESS
        }
        Ok(Invocation::Version) => {
            println!("ch-remote v{}", env!("CARGO_PKG_VERSION"));
            ExitCode::SUCCESS
        }
        Ok(Invocation::Run {
            api_socket,
            command,
        }) => match run(api_socket.as_deref(), &command) {
            Ok(output) => {
                if let Some(output) = output {
                    println!("{output}");
                }
                ExitCode::SUCCESS
            }
            Err(error) => {
                eprint!("{}", error_report(&error));
                ExitCode::from(1)
            }
        },
        Err(error) => {
            eprintln!(
                "error: {error}\n\nUsage: ch-remote --api-socket <api-socket> <COMMAND>\n\n\
                 For more information, try '--help'."
            );
            ExitCode::from(2)
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::path::PathBuf;
    use std::sync::mpsc;

    use vmm::api::{ApiMessage, ApiRequest, ApiResponsePayload, ApiServer, ApiServerHandle};

    use super::*;

    fn parse(args: &[&str]) -> Result<Invocation, UsageError> {
        parse_args(args.iter().map(|s| s.to_string()))
    }

    fn runs(args: &[&str], socket: &str, command: Command) {
        assert_eq!(
            parse(args),
            Ok(Invocation::Run {
                api_socket: Some(socket.to_string()),
                command
            }),
            "{args:?}"
        );
    }

    #[test]
    fn commands() {
        for (name, command) in [
            ("boot", Command::Boot),
            ("counters", Command::Counters),
            ("delete", Command::Delete),
            ("info", Command::Info),
            ("pause", Command::Pause),
            ("ping", Command::Ping),
            ("reboot", Command::Reboot),
            ("resume", Command::Resume),
            ("shutdown", Command::Shutdown),
            ("shutdown-vmm", Command::ShutdownVmm),
        ] {
            runs(&["--api-socket", "/s", name], "/s", command.clone());
            runs(&[name, "--api-socket=/s"], "/s", command);
        }
        runs(
            &["--api-socket", "/s", "create", "/vm.json"],
            "/s",
            Command::Create("/vm.json".into()),
        );
        runs(
            &["--api-socket", "/s", "create"],
            "/s",
            Command::Create("-".into()),
        );
        runs(
            &["--api-socket", "/s", "create", "-"],
            "/s",
            Command::Create("-".into()),
        );
        assert_eq!(Command::ShutdownVmm.endpoint(), ("PUT", "vmm.shutdown"));
        assert_eq!(Command::Info.endpoint(), ("GET", "vm.info"));
    }

    #[test]
    fn migration_operands() {
        let body = |args: &[&str]| match parse(args) {
            Ok(Invocation::Run {
                command: Command::SendMigration(b) | Command::ReceiveMigration(b),
                ..
            }) => serde_json::from_str::<serde_json::Value>(&b).unwrap(),
            other => panic!("{other:?}"),
        };
        let b = body(&[
            "--api-socket",
            "/s",
            "send-migration",
            "destination_url=tcp:10.0.0.2:6000,downtime_ms=100,timeout_s=5,key=/k",
        ]);
        assert_eq!(
            b,
            serde_json::json!({"destination_url": "tcp:10.0.0.2:6000", "downtime_ms": 100, "timeout_s": 5, "key": "/k"})
        );
        // The bare URL of older releases.
        let b = body(&["--api-socket", "/s", "send-migration", "unix:/tmp/m"]);
        assert_eq!(b, serde_json::json!({"destination_url": "unix:/tmp/m"}));
        let b = body(&[
            "--api-socket",
            "/s",
            "receive-migration",
            "receiver_url=tcp:0.0.0.0:6000",
        ]);
        assert_eq!(b, serde_json::json!({"receiver_url": "tcp:0.0.0.0:6000"}));
        for bad in [
            "destination_url=tcp:h:1,downtime_ms=x",
            "downtime_ms=5",
            "destination_url=tcp:h:1,bogus=1",
            "destination_url=tcp:h:1,tls_dir=/x",
            "destination_url=tcp:h:1,destination_url=tcp:h:2",
        ] {
            assert!(
                matches!(
                    parse(&["--api-socket", "/s", "send-migration", bad]),
                    Err(UsageError::BadMigration(..))
                ),
                "{bad}"
            );
        }
        assert_eq!(
            parse(&["--api-socket", "/s", "receive-migration"]),
            Err(UsageError::MissingOperand("receive-migration"))
        );
    }

    #[test]
    fn usage_errors() {
        assert_eq!(parse(&["--api-socket", "/s"]), Err(UsageError::NoCommand));
        assert_eq!(parse(&[]), Err(UsageError::NoCommand));
        assert_eq!(
            parse(&["--api-socket", "/s", "bogus"]),
            Err(UsageError::UnknownCommand("bogus".into()))
        );
        assert_eq!(
            parse(&["--api-socket", "/s", "resize", "x"]),
            Err(UsageError::UnsupportedCommand("resize".into()))
        );
        assert_eq!(
            parse(&["--api-socket", "/s", "snapshot"]),
            Err(UsageError::MissingOperand("snapshot"))
        );
        assert_eq!(
            parse(&["--api-socket", "/s", "snapshot", "file:///x", "y"]),
            Err(UsageError::Unexpected("y".into()))
        );
        assert!(matches!(
            parse(&["--api-socket", "/s", "restore", "prefault=on"]),
            Err(UsageError::BadRestore(_))
        ));
        assert_eq!(
            parse(&["--api-socket", "/s", "snapshot", "file:///x"]),
            Ok(Invocation::Run {
                api_socket: Some("/s".into()),
                command: Command::Snapshot(r#"{"destination_url":"file:///x"}"#.into()),
            })
        );
        assert_eq!(
            parse(&[
                "--api-socket",
                "/s",
                "restore",
                "source_url=file:///x,resume=true"
            ]),
            Ok(Invocation::Run {
                api_socket: Some("/s".into()),
                command: Command::Restore(
                    r#"{"source_url":"file:///x","prefault":false,"resume":true}"#.into()
                ),
            })
        );
        assert_eq!(
            parse(&["--api-socket", "/s", "boot", "extra"]),
            Err(UsageError::Unexpected("extra".into()))
        );
        assert_eq!(
            parse(&["--api-socket", "/s", "create", "a", "b"]),
            Err(UsageError::Unexpected("b".into()))
        );
        assert_eq!(
            parse(&["--bogus", "ping"]),
            Err(UsageError::Unexpected("--bogus".into()))
        );
        assert_eq!(
            parse(&["ping", "--api-socket"]),
            Err(UsageError::MissingSocket)
        );
        assert_eq!(
            parse(&["ping", "--api-socket="]),
            Err(UsageError::MissingSocket)
        );
        assert_eq!(
            parse(&["--api-socket", "/a", "--api-socket", "/b", "ping"]),
            Err(UsageError::DuplicateSocket)
        );
        assert_eq!(parse(&["-h"]), Ok(Invocation::Help));
        assert_eq!(parse(&["ping", "--version"]), Ok(Invocation::Version));
        // No socket is not a usage error: it is reported when running.
        assert_eq!(
            parse(&["ping"]),
            Ok(Invocation::Run {
                api_socket: None,
                command: Command::Ping
            })
        );
    }

    #[test]
    fn error_reports() {
        let report = error_report(&RemoteError::ServerResponse {
            status: 500,
            body: r#"["Error from API","The VM could not boot","VM is already created"]"#.into(),
        });
        assert_eq!(
            report,
            "Error: ch-remote exited with the following chain of errors:\n\
             \x20 0: http client error\n\
             \x20 1: Server responded with InternalServerError\n\
             \x20 2: Error from API\n\
             \x20 3: The VM could not boot\n\
             \x20 4: VM is already created\n"
        );
        let report = error_report(&RemoteError::ServerResponse {
            status: 400,
            body: String::new(),
        });
        assert!(report.ends_with("  1: Server responded with BadRequest\n"));
        let report = error_report(&RemoteError::ServerResponse {
            status: 503,
            body: "oops".into(),
        });
        assert!(report.contains("Unknown(503)"));
        assert!(report.contains("body='oops'"));
        let report = error_report(&RemoteError::Connect(io::Error::from(
            io::ErrorKind::NotFound,
        )));
        assert!(report.contains("  0: Error opening HTTP socket\n  1: "));
        let report = error_report(&RemoteError::NoSocket);
        assert_eq!(
            report,
            "Error: ch-remote exited with the following error:\n  Please provide the api-socket option\n"
        );
    }

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("ch-remote-{}-{name}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        dir
    }

    /// A server whose control loop answers ping and info, and fails boot.
    fn server(path: &std::path::Path) -> ApiServerHandle {
        let (tx, rx) = mpsc::channel::<ApiMessage>();
        std::thread::spawn(move || {
            for message in rx {
                let answer: vmm::api::ApiResponse = match message.request {
                    ApiRequest::VmmPing => {
                        Ok(ApiResponsePayload::Json(serde_json::json!({"pong": 1})))
                    }
                    ApiRequest::VmCreate(_) | ApiRequest::VmPause => Ok(ApiResponsePayload::Empty),
                    _ => Err("VM is already created".into()),
                };
                let _ = message.response_tx.send(answer);
            }
        });
        ApiServer::bind(path)
            .expect("bind")
            .spawn(Box::new(move |message| tx.send(message).is_ok()))
            .expect("spawn")
    }

    #[test]
    fn against_a_real_server() {
        let dir = temp_dir("server");
        let path = dir.join("api.sock");
        let handle = server(&path);
        let socket = path.to_str();

        assert_eq!(
            run(socket, &Command::Ping).expect("ping").as_deref(),
            Some(r#"{"pong":1}"#)
        );
        assert_eq!(run(socket, &Command::Pause).expect("pause"), None);
        match run(socket, &Command::Boot) {
            Err(RemoteError::ServerResponse { status: 500, body }) => {
                assert!(body.contains("The VM could not boot"));
            }
            other => panic!("{other:?}"),
        }

        let config = dir.join("vm.json");
        std::fs::write(
            &config,
            r#"{"payload":{"kernel":"/k"},"memory":{"size":134217728}}"#,
        )
        .expect("write");
        let create = Command::Create(config.to_string_lossy().into_owned());
        assert_eq!(run(socket, &create).expect("create"), None);
        std::fs::write(&config, "{").expect("write");
        match run(socket, &create) {
            Err(RemoteError::ServerResponse { status: 400, body }) => {
                assert!(body.contains("Failed to deserialize JSON"));
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            run(
                socket,
                &Command::Create(dir.join("missing.json").to_string_lossy().into_owned())
            ),
            Err(RemoteError::ReadingFile(_))
        ));
        handle.shutdown();

        assert!(matches!(
            run(socket, &Command::Ping),
            Err(RemoteError::Connect(_))
        ));
        assert!(matches!(
            run(None, &Command::Ping),
            Err(RemoteError::NoSocket)
        ));
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// A server that writes its status lines with a reason phrase (as this
    /// project's server did, and most HTTP servers do): each connection
    /// gets the next canned answer.
    fn canned_server(
        path: &std::path::Path,
        answers: Vec<&'static [u8]>,
    ) -> std::thread::JoinHandle<()> {
        let listener = std::os::unix::net::UnixListener::bind(path).expect("bind");
        std::thread::spawn(move || {
            for answer in answers {
                let (mut stream, _) = listener.accept().expect("accept");
                let mut request = Vec::new();
                let mut byte = [0u8; 1];
                while !request.ends_with(b"\r\n\r\n") {
                    match stream.read(&mut byte) {
                        Ok(1) => request.push(byte[0]),
                        _ => break,
                    }
                }
                stream.write_all(answer).expect("answer");
            }
        })
    }

    #[test]
    fn against_a_server_with_reason_phrases() {
        let dir = temp_dir("reason");
        let path = dir.join("api.sock");
        let _ = std::fs::remove_file(&path);
        let server = canned_server(
            &path,
            vec![
                b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 10\r\n\r\n{\"pong\":1}",
                b"HTTP/1.1 204 No Content\r\nConnection: keep-alive\r\n\r\n",
                b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 18\r\n\r\n[\"Error from API\"]",
            ],
        );
        let socket = path.to_str();
        assert_eq!(
            run(socket, &Command::Ping).expect("ping").as_deref(),
            Some(r#"{"pong":1}"#)
        );
        assert_eq!(run(socket, &Command::Pause).expect("pause"), None);
        match run(socket, &Command::Boot) {
            Err(RemoteError::ServerResponse { status: 500, body }) => {
                assert_eq!(body, r#"["Error from API"]"#);
            }
            other => panic!("{other:?}"),
        }
        server.join().expect("server");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
