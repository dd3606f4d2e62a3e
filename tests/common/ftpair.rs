// Copyright 2026 The ft-cloud-hypervisor authors.
// SPDX-License-Identifier: Apache-2.0

//! Running a fault-tolerant pair for a test: a primary on host A and its
//! backup on host B of a [`PairNet`], the channel on the logging link,
//! each VMM's event monitor in the test's directory; a verified KV stream
//! from the client namespace that can kill a VMM partway.

use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::time::{Duration, Instant};

use ft_kv_client::{run_stream, StreamConfig, StreamControl, StreamReport};

use super::pair::{GuestVmm, Host, PairNames, PairNet, LOG_B};
use super::{test_guest, wait_until, TempDir};

pub const CHANNEL_PORT: u16 = 7410;

/// How the pair under test is set up.
pub struct Setup<'a> {
    pub cmdline: String,
    /// `--disk` on host A and host B (`None`: no disk).
    pub disks: Option<(PathBuf, PathBuf)>,
    pub net: bool,
    pub tiebreaker: String,
    /// Extra `--fault-tolerance` options for both sides.
    pub extra: &'a str,
    /// Give the primary an API socket (`dir/primary.sock`).
    pub api: bool,
}

impl Setup<'static> {
    /// A compute guest (`cmdline`), no disk or network, with `tiebreaker`.
    pub fn compute(cmdline: &str, tiebreaker: String) -> Self {
        Setup {
            cmdline: cmdline.into(),
            disks: None,
            net: false,
            tiebreaker,
            extra: "",
            api: false,
        }
    }
}

/// A primary on host A and its backup on host B.
pub struct Pair {
    pub primary: GuestVmm,
    pub backup: GuestVmm,
    pub events: (PathBuf, PathBuf),
}

pub fn write_key(dir: &TempDir) -> PathBuf {
    use std::os::unix::fs::OpenOptionsExt;
    let path = dir.path("pair.key");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&path)
        .expect("create the key");
    let key: Vec<u8> = (0..32u8)
        .map(|i| i.wrapping_mul(37).wrapping_add(std::process::id() as u8))
        .collect();
    std::io::Write::write_all(&mut f, &key).expect("write the key");
    path
}

pub fn vmm_args(
    net: &PairNet,
    host: Host,
    s: &Setup<'_>,
    ft: String,
    events: &Path,
) -> Vec<String> {
    let guest = test_guest().to_str().expect("utf-8 path").to_string();
    let mut a: Vec<String> = [
        "--kernel",
        &guest,
        "--cmdline",
        &s.cmdline,
        "--memory",
        "size=128M",
    ]
    .iter()
    .map(|x| x.to_string())
    .collect();
    if let Some((da, db)) = &s.disks {
        let d = if host == Host::A { da } else { db };
        a.extend(["--disk".into(), format!("path={}", d.display())]);
    }
    if s.net {
        a.extend(["--net".into(), net.guest_net(host)]);
    }
    a.extend([
        "--fault-tolerance".into(),
        ft,
        "--event-monitor".into(),
        format!("path={}", events.display()),
        "-v".into(),
    ]);
    a
}

pub fn start_pair(net: &PairNet, dir: &TempDir, s: &Setup<'_>) -> Pair {
    let key = write_key(dir);
    let backup = start_backup(net, dir, s, &key);
    let primary = start_primary(net, dir, s, &key, "primary");
    Pair {
        primary,
        backup,
        events: (
            dir.path("events-primary.json"),
            dir.path("events-backup.json"),
        ),
    }
}

/// The backup of `s` on host B, with `key`.
pub fn start_backup(net: &PairNet, dir: &TempDir, s: &Setup<'_>, key: &Path) -> GuestVmm {
    let b = vmm_args(
        net,
        Host::B,
        s,
        format!(
            "mode=backup,listen=tcp:{LOG_B}:{CHANNEL_PORT},log={},key={},tiebreaker={}{}",
            dir.path("received.log").display(),
            key.display(),
            s.tiebreaker,
            s.extra
        ),
        &dir.path("events-backup.json"),
    );
    let b: Vec<&str> = b.iter().map(String::as_str).collect();
    net.spawn_vmm(Host::B, &dir.0, "backup", &b)
}

/// A primary of `s` on host A with `key`, named `name` (its files
/// `serial-NAME.txt`, `stderr-NAME.txt`, `events-NAME.json`, and with
/// `s.api` its socket `NAME.sock`).
pub fn start_primary(
    net: &PairNet,
    dir: &TempDir,
    s: &Setup<'_>,
    key: &Path,
    name: &str,
) -> GuestVmm {
    let mut p = vmm_args(
        net,
        Host::A,
        s,
        format!(
            "mode=primary,peer=tcp:{LOG_B}:{CHANNEL_PORT},key={},tiebreaker={}{}",
            key.display(),
            s.tiebreaker,
            s.extra
        ),
        &dir.path(&format!("events-{name}.json")),
    );
    if s.api {
        p.extend([
            "--api-socket".into(),
            format!("path={}", dir.path(&format!("{name}.sock")).display()),
        ]);
    }
    let p: Vec<&str> = p.iter().map(String::as_str).collect();
    net.spawn_vmm(Host::A, &dir.0, name, &p)
}

/// A sparse KV disk image. The KV log has no compaction (a 1 KiB slot per
/// SET): 64 MiB holds 65,528 records, room for the longest test's streams
/// (three of 4-5 s and two shorter, each up to ~1,400 SETs a second on a
/// quick run; a 16 MiB image filled up in CI and the guest refused SETs).
pub fn sparse_disk(path: PathBuf) -> PathBuf {
    std::fs::File::create(&path)
        .and_then(|f| f.set_len(64 << 20))
        .expect("create the disk image");
    path
}

/// The `final state digest D after N exits` a VMM logged.
pub fn final_digest(stderr: &str) -> Option<String> {
    stderr
        .lines()
        .rev()
        .find_map(|l| l.split("final state digest ").nth(1))
        .map(str::to_string)
}

pub fn wait_exit(vm: &mut GuestVmm, timeout: Duration) -> ExitStatus {
    vm.child.wait_timeout(timeout).unwrap_or_else(|| {
        panic!(
            "the VMM did not exit; serial:\n{}\nstderr:\n{}",
            vm.serial_text(),
            vm.stderr_text()
        )
    })
}

/// The names of the `fault-tolerance` events in an event-monitor file.
pub fn ft_events(path: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let mut v = Vec::new();
    let mut rest = text.as_str();
    while let Some(i) = rest.find("\"source\": \"fault-tolerance\"") {
        rest = &rest[i..];
        if let Some(j) = rest.find("\"event\": \"") {
            let e = &rest[j + 10..];
            v.push(e[..e.find('"').unwrap_or(0)].to_string());
        }
        rest = &rest[1..];
    }
    v
}

pub fn assert_clean(names: &PairNames) {
    let left = names.leftovers();
    assert!(left.is_empty(), "left behind: {left:#?}");
}

/// A verified KV stream from the client, started on a thread; kills
/// `victim` after `kill_after` acknowledged SETs.
pub fn stream_through(
    net: &PairNet,
    seconds: f64,
    victim: Option<(&mut GuestVmm, u64)>,
) -> (StreamReport, Option<Instant>) {
    let control = std::sync::Arc::new(StreamControl::default());
    let mut config = StreamConfig::new(net.kv_addr());
    config.duration = Some(Duration::from_secs_f64(seconds));
    config.get_every = 4;
    config.prefix = format!("ft{}", net.tag);
    config.connect_timeout = Duration::from_secs(20);
    config.control = Some(control.clone());
    std::thread::scope(|scope| {
        let client = &net.client;
        let cfg = &config;
        let t = scope.spawn(move || client.run(|| run_stream(cfg)));
        let mut killed = None;
        if let Some((vm, after)) = victim {
            let ok = wait_until(Duration::from_secs(60), || {
                control.acked() >= after || t.is_finished()
            });
            assert!(ok && !t.is_finished(), "the stream ended early");
            vm.kill9();
            killed = Some(Instant::now());
        }
        let report = t
            .join()
            .expect("stream thread")
            .unwrap_or_else(|e| panic!("stream: {e}"));
        (report, killed)
    })
}

pub fn kv_setup(dir: &TempDir, tiebreaker: String, separate: bool) -> Setup<'static> {
    let a = sparse_disk(dir.path("kv-a.img"));
    let b = if separate {
        let b = dir.path("kv-b.img");
        std::fs::copy(&a, &b).expect("copy the image");
        b
    } else {
        a.clone()
    };
    Setup {
        cmdline: String::new(),
        disks: Some((a, b)),
        net: true,
        tiebreaker,
        extra: if separate { ",disks=separate" } else { "" },
        api: false,
    }
}
