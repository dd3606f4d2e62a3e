// Copyright 2026 The ft-cloud-hypervisor authors.
// SPDX-License-Identifier: Apache-2.0

//! A network namespace a test creates for itself (loopback up), deleted on
//! drop, so taps and addresses never touch the host's own network.

use std::ffi::OsStr;
use std::os::fd::AsRawFd;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

/// A network namespace of this test process; `.0` is its name.
pub struct Netns(pub String);

impl Netns {
    /// Creates `<prefix>-<pid>-<n>` with its loopback up.
    pub fn new(prefix: &str) -> Netns {
        static N: AtomicU32 = AtomicU32::new(0);
        Netns::named(&format!(
            "{prefix}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        ))
    }

    /// Creates the namespace `name` (replacing a stale one of that name)
    /// with its loopback up.
    pub fn named(name: &str) -> Netns {
        let name = name.to_string();
        let ip = |args: &[&str]| {
            Command::new("ip")
                .args(args)
                .stderr(Stdio::null())
                .status()
                .expect("run ip (iproute2)")
        };
        let _ = ip(&["netns", "del", &name]);
        assert!(
            ip(&["netns", "add", &name]).success(),
            "ip netns add {name}"
        );
        let ns = Netns(name);
        assert!(ip(&["-n", &ns.0, "link", "set", "lo", "up"]).success());
        ns
    }

    /// A command that runs `program` inside the namespace (`ip netns
    /// exec`, which execs it: the child's pid is the program's).
    pub fn command(&self, program: impl AsRef<OsStr>) -> Command {
        let mut command = Command::new("ip");
        command.args(["netns", "exec", &self.0]).arg(program);
        command
    }

    /// Runs a command inside the namespace: (success, stdout + stderr).
    pub fn exec(&self, args: &[&str]) -> (bool, String) {
        let out = Command::new("ip")
            .args(["netns", "exec", &self.0])
            .args(args)
            .output()
            .expect("run ip netns exec");
        (
            out.status.success(),
            super::text(&out.stdout) + &super::text(&out.stderr),
        )
    }

    /// Runs `f` on a thread that has entered the namespace.
    pub fn run<R: Send>(&self, f: impl FnOnce() -> R + Send) -> R {
        let path = format!("/var/run/netns/{}", self.0);
        std::thread::scope(|scope| {
            scope
                .spawn(|| {
                    let ns = std::fs::File::open(&path).expect("open the namespace");
                    // SAFETY: setns on this thread only, with a valid namespace
                    // fd; the thread ends when `f` returns.
                    let rc = unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) };
                    assert_eq!(rc, 0, "setns: {}", std::io::Error::last_os_error());
                    f()
                })
                .join()
                .expect("namespace thread panicked")
        })
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

/// A child process that is killed (SIGKILL) and reaped on drop, so that a
/// panicking test leaves no process behind.
pub struct KillOnDrop(pub Child);

impl KillOnDrop {
    /// Spawns `command`.
    pub fn spawn(command: &mut Command) -> KillOnDrop {
        KillOnDrop(command.spawn().expect("spawn a process in a namespace"))
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.0.id()
    }

    /// SIGKILL (`kill -9`), then reaps it.
    pub fn kill9(&mut self) -> ExitStatus {
        let _ = self.0.kill();
        self.0.wait().expect("reap a killed child")
    }

    /// Whether it still runs.
    pub fn running(&mut self) -> bool {
        matches!(self.0.try_wait(), Ok(None))
    }

    /// Waits up to `timeout` for it to exit by itself.
    pub fn wait_timeout(&mut self, timeout: Duration) -> Option<ExitStatus> {
        super::wait_timeout(&mut self.0, timeout)
    }
}

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
