// Copyright 2026 The ft-cloud-hypervisor authors.
// SPDX-License-Identifier: Apache-2.0

//! A VMM driven through its API socket (`cloud-hypervisor --api-socket`),
//! as the snapshot and migration tests use it, and one whose serial
//! console (`--serial tty`) is on the test's pipes.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use super::captured::Captured;
use super::netns::{KillOnDrop, Netns};
use super::{api, api_listening, test_guest, vmm_bin, wait_until, TempDir};

/// The test guest's compute workload, long enough to snapshot or migrate
/// in the middle of it.
pub const COMPUTE: &str = "workload=compute steps=600000000 hz=100";

/// A file's text, or "" when it cannot be read (for failure messages).
pub fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// The numbers of the `tick=<k> step=<i>` lines.
pub fn ticks(serial: &str) -> Vec<u64> {
    serial
        .lines()
        .filter_map(|l| l.strip_prefix("tick="))
        .filter_map(|l| l.split_whitespace().next()?.parse().ok())
        .collect()
}

/// The compute workload's `result=` line.
pub fn result_line(serial: &str) -> Option<String> {
    serial
        .lines()
        .find(|l| l.starts_with("result="))
        .map(str::to_string)
}

/// `cloud-hypervisor --api-socket path=DIR/NAME.sock ARGS` with its
/// events (`DIR/NAME.events`) and log (`DIR/NAME.log`), in `ns` if given;
/// the command, the socket and the log.
pub fn command(
    dir: &TempDir,
    name: &str,
    ns: Option<&Netns>,
    args: &[String],
) -> (Command, PathBuf, PathBuf) {
    let socket = dir.path(&format!("{name}.sock"));
    let log = dir.path(&format!("{name}.log"));
    let mut command = match ns {
        Some(ns) => ns.command(vmm_bin()),
        None => Command::new(vmm_bin()),
    };
    command
        .arg("--api-socket")
        .arg(format!("path={}", socket.display()))
        .args(args)
        .arg("--event-monitor")
        .arg(format!(
            "path={}",
            dir.path(&format!("{name}.events")).display()
        ))
        .args(["-v", "--log-file"])
        .arg(&log);
    (command, socket, log)
}

/// Waits until `child`'s API socket accepts connections (the socket file
/// appears at bind(2), before listen(2)), or fails with its log.
fn wait_listening(child: &mut KillOnDrop, socket: &Path, log: &Path) {
    let up = wait_until(Duration::from_secs(20), || {
        api_listening(socket) || !child.running()
    });
    assert!(
        up && api_listening(socket),
        "the VMM did not serve its API; log:\n{}",
        read(log)
    );
}

/// A VMM serving its API on `socket`.
pub struct ApiVmm {
    pub child: KillOnDrop,
    pub socket: PathBuf,
    pub log: PathBuf,
}

impl ApiVmm {
    /// Starts `cloud-hypervisor --api-socket path=SOCKET ARGS` (in `ns` if
    /// given) and waits until it serves its API.
    pub fn start(dir: &TempDir, name: &str, ns: Option<&Netns>, args: &[String]) -> ApiVmm {
        let (mut command, socket, log) = command(dir, name, ns, args);
        command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let mut child = KillOnDrop::spawn(&mut command);
        wait_listening(&mut child, &socket, &log);
        ApiVmm { child, socket, log }
    }

    /// Boots the test guest with `cmdline`, `memory` and `extra` options,
    /// its serial port into `serial`.
    pub fn boot(
        dir: &TempDir,
        name: &str,
        ns: Option<&Netns>,
        cmdline: &str,
        memory: &str,
        serial: &Path,
        extra: &[String],
    ) -> ApiVmm {
        let guest = test_guest().to_str().expect("utf-8 path").to_string();
        let mut args = vec![
            "--kernel".into(),
            guest,
            "--cmdline".into(),
            cmdline.into(),
            "--memory".into(),
            format!("size={memory}"),
            "--serial".into(),
            format!("file={}", serial.display()),
        ];
        args.extend_from_slice(extra);
        ApiVmm::start(dir, name, ns, &args)
    }

    pub fn api(&self, method: &str, path: &str, body: Option<&str>) -> (u16, String) {
        api(&self.socket, method, path, body)
    }

    pub fn info(&self) -> serde_json::Value {
        let (status, body) = self.api("GET", "vm.info", None);
        assert_eq!(status, 200, "{body}");
        serde_json::from_str(&body).expect("vm.info JSON")
    }

    /// The VM's state as `vm.info` gives it.
    pub fn state(&self) -> String {
        self.info()["state"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    /// Pauses the VM and writes a snapshot to `to`.
    pub fn pause_and_snapshot(&self, to: &Path) {
        assert_eq!(self.api("PUT", "vm.pause", None).0, 204);
        let body = format!(r#"{{"destination_url":"file://{}"}}"#, to.display());
        let (status, answer) = self.api("PUT", "vm.snapshot", Some(&body));
        assert_eq!(status, 204, "{answer}");
    }

    /// Shuts the VMM down (`vmm.shutdown`) and waits for it to exit.
    pub fn shutdown_vmm(mut self) {
        let _ = self.api("PUT", "vmm.shutdown", None);
        assert!(
            self.child.wait_timeout(Duration::from_secs(20)).is_some(),
            "the VMM did not exit; log:\n{}",
            read(&self.log)
        );
    }

    /// Waits for the guest to power off (the VMM exits 0).
    pub fn wait_poweroff(mut self, timeout: Duration) {
        let status = self.child.wait_timeout(timeout);
        assert!(
            status.is_some_and(|s| s.success()),
            "the guest did not power off cleanly: {status:?}; log:\n{}",
            read(&self.log)
        );
    }

    /// Waits for the VMM to exit 0 (a source after its migration).
    pub fn wait_exit(&mut self, timeout: Duration) {
        let status = self.child.wait_timeout(timeout);
        assert!(
            status.is_some_and(|s| s.success()),
            "the VMM did not exit cleanly: {status:?}; log:\n{}",
            read(&self.log)
        );
    }
}

/// A VMM whose serial console (`--serial tty`) is on the test's pipes.
pub struct Console {
    pub vmm: ApiVmm,
    stdin: std::process::ChildStdin,
    pub output: Captured,
}

impl Console {
    /// Starts `cloud-hypervisor --api-socket ... ARGS` with its stdin and
    /// stdout on pipes, and waits until it serves its API.
    pub fn start(dir: &TempDir, name: &str, args: &[String]) -> Console {
        let (mut command, socket, log) = command(dir, name, None, args);
        command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        let mut child = KillOnDrop::spawn(&mut command);
        let stdin = child.0.stdin.take().expect("piped stdin");
        let mut stdout = child.0.stdout.take().expect("piped stdout");
        let output = Captured::default();
        let sink = output.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = stdout.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.append(&buf[..n]);
            }
        });
        wait_listening(&mut child, &socket, &log);
        Console {
            vmm: ApiVmm { child, socket, log },
            stdin,
            output,
        }
    }

    /// Types `line`; returns where the console's output stood before it.
    pub fn send(&mut self, line: &str) -> usize {
        let at = self.output.len();
        self.stdin.write_all(line.as_bytes()).expect("type");
        self.stdin.flush().expect("flush");
        at
    }

    /// Waits for `needle` in the console's output after `from`.
    pub fn wait_for(&self, needle: &str, from: usize, timeout: Duration) {
        assert!(
            wait_until(timeout, || self.output.contains_after(needle, from)),
            "no {needle:?}; console:\n{}",
            self.output.text()
        );
    }

    /// Types `line` and waits (60 s) for `answer` after it.
    pub fn command(&mut self, line: &str, answer: &str) {
        let at = self.send(line);
        self.wait_for(answer, at, Duration::from_secs(60));
    }
}
