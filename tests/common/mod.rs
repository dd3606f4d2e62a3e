// Copyright 2026 The ft-cloud-hypervisor authors.
// SPDX-License-Identifier: Apache-2.0

//! Shared helpers for the integration tests: they run the real binaries on
//! real KVM with the project's test guest.

#![allow(dead_code)]

pub mod api_vmm;
pub mod captured;
pub mod cgroup;
pub mod etcd;
pub mod ft;
pub mod ftpair;
pub mod linux;
pub mod netns;
pub mod pair;
pub mod vmotion;

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The `cloud-hypervisor` binary under test.
pub fn vmm_bin() -> &'static str {
    env!("CARGO_BIN_EXE_cloud-hypervisor")
}

/// The `ch-remote` binary under test.
pub fn ch_remote_bin() -> &'static str {
    env!("CARGO_BIN_EXE_ch-remote")
}

/// The repository root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("crate dir has a parent")
        .to_path_buf()
}

/// The test guest ELF: `$TEST_GUEST_ELF`, or built once with scripts/build-test-guest.
pub fn test_guest() -> &'static Path {
    static ELF: OnceLock<PathBuf> = OnceLock::new();
    ELF.get_or_init(|| {
        if let Ok(p) = std::env::var("TEST_GUEST_ELF") {
            if Path::new(&p).is_file() {
                return PathBuf::from(p);
            }
        }
        let out = Command::new(repo_root().join("scripts/build-test-guest"))
            .stderr(Stdio::inherit())
            .output()
            .expect("run scripts/build-test-guest");
        assert!(out.status.success(), "scripts/build-test-guest failed");
        let stdout = String::from_utf8_lossy(&out.stdout);
        let last = stdout
            .lines()
            .last()
            .expect("the script prints the ELF path");
        PathBuf::from(last.trim())
    })
}

/// A fresh temporary directory, removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> Self {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let p = std::env::temp_dir().join(format!("ch-it-{tag}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).expect("create temp dir");
        TempDir(p)
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Runs the VMM to completion (killed after `timeout`), returning its output.
pub fn run_vmm(args: &[&str], timeout: Duration) -> Output {
    let child = Command::new(vmm_bin())
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn cloud-hypervisor");
    wait_output(child, timeout)
}

/// Waits for `child` with a deadline; kills it (and fails) if it overruns.
pub fn wait_output(mut child: Child, timeout: Duration) -> Output {
    let mut stdout = child.stdout.take().expect("piped stdout");
    let mut stderr = child.stderr.take().expect("piped stderr");
    let out_t = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = stdout.read_to_end(&mut v);
        v
    });
    let err_t = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = stderr.read_to_end(&mut v);
        v
    });
    let status = wait_timeout(&mut child, timeout);
    let stdout = out_t.join().unwrap_or_default();
    let stderr = err_t.join().unwrap_or_default();
    match status {
        Some(status) => Output {
            status,
            stdout,
            stderr,
        },
        None => panic!(
            "cloud-hypervisor did not exit within {timeout:?}\nstdout:\n{}\nstderr:\n{}",
            String::from_utf8_lossy(&stdout),
            String::from_utf8_lossy(&stderr)
        ),
    }
}

/// Waits up to `timeout`; kills the child and returns None if it is still running.
pub fn wait_timeout(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let start = Instant::now();
    loop {
        if let Ok(Some(s)) = child.try_wait() {
            return Some(s);
        }
        if start.elapsed() > timeout {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Boots the test guest with `cmdline` and `disk` as the `--disk`
/// argument, to the end: whether it exited 0, its serial lines, its stderr.
pub fn boot_disk(cmdline: &str, disk: &str) -> (bool, Vec<String>, String) {
    let guest = test_guest().to_str().expect("utf-8 path").to_string();
    let out = run_vmm(
        &[
            "--kernel",
            &guest,
            "--cmdline",
            cmdline,
            "--memory",
            "size=128M",
            "--disk",
            disk,
            "--serial",
            "tty",
            "--console",
            "off",
        ],
        Duration::from_secs(120),
    );
    let lines = text(&out.stdout)
        .lines()
        .map(|l| l.trim_end().to_string())
        .collect();
    (out.status.success(), lines, text(&out.stderr))
}

/// Boots the test guest with `cmdline` and serial on stdout; returns the output.
pub fn boot_guest(cmdline: &str, timeout: Duration) -> Output {
    let guest = test_guest().to_str().expect("utf-8 path").to_string();
    run_vmm(
        &[
            "--kernel",
            &guest,
            "--cmdline",
            cmdline,
            "--memory",
            "size=128M",
            "--serial",
            "tty",
            "--console",
            "off",
        ],
        timeout,
    )
}

/// Polls `cond` until true or `timeout`.
pub fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < timeout {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    cond()
}

/// Whether a VMM accepts connections on `socket`: the socket file appears
/// at `bind(2)`, before `listen(2)`, and a connection in between is refused
/// (a test that waited only for the file failed so in CI).
pub fn api_listening(socket: &Path) -> bool {
    UnixStream::connect(socket).is_ok()
}

/// A raw HTTP/1.1 request over the API socket: (status, body).
pub fn api(socket: &Path, method: &str, path: &str, body: Option<&str>) -> (u16, String) {
    let mut s = UnixStream::connect(socket).expect("connect to the API socket");
    s.set_read_timeout(Some(Duration::from_secs(20))).ok();
    let body = body.unwrap_or("");
    let req = format!(
        "{method} /api/v1/{path} HTTP/1.1\r\nHost: localhost\r\nAccept: */*\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).expect("send request");
    let mut resp = Vec::new();
    let _ = s.read_to_end(&mut resp);
    let resp = String::from_utf8_lossy(&resp).to_string();
    let status: u16 = resp
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {resp:?}"));
    let body = resp
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

/// Runs ch-remote against `socket`.
pub fn ch_remote(socket: &Path, args: &[&str]) -> Output {
    wait_output(spawn_ch_remote(socket, args), Duration::from_secs(30))
}

/// Starts ch-remote against `socket` in the background, its output piped.
pub fn spawn_ch_remote(socket: &Path, args: &[&str]) -> Child {
    Command::new(ch_remote_bin())
        .arg("--api-socket")
        .arg(socket)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn ch-remote")
}

pub fn text(v: &[u8]) -> String {
    String::from_utf8_lossy(v).to_string()
}

/// The minimal Linux guest's paths by name (`VMLINUX`, `BZIMAGE`,
/// `INITRAMFS`), printed by scripts/build-linux-guest, which builds it on
/// first use and caches it.
pub fn linux_guest_paths() -> &'static std::collections::HashMap<String, PathBuf> {
    static PATHS: OnceLock<std::collections::HashMap<String, PathBuf>> = OnceLock::new();
    PATHS.get_or_init(|| {
        let out = Command::new(repo_root().join("scripts/build-linux-guest"))
            .stderr(Stdio::inherit())
            .output()
            .expect("run scripts/build-linux-guest");
        assert!(out.status.success(), "scripts/build-linux-guest failed");
        let paths: std::collections::HashMap<String, PathBuf> = text(&out.stdout)
            .lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_string(), PathBuf::from(v.trim())))
            .collect();
        for k in ["VMLINUX", "BZIMAGE", "INITRAMFS"] {
            assert!(paths.get(k).is_some_and(|p| p.is_file()), "{k} missing");
        }
        paths
    })
}
