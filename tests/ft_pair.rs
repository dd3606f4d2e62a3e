// Copyright 2026 The ft-cloud-hypervisor authors.
// SPDX-License-Identifier: Apache-2.0

//! The fault-tolerant pair with real processes on two "hosts": network
//! namespaces on one machine (`common::pair`), a client namespace and a
//! LAN bridge, the logging channel on its own veth link. The guest is the
//! test guest (compute, or its TCP key-value service with `ft-kv-client`
//! verifying every acknowledged SET).

mod common;

use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::time::{Duration, Instant};

use common::etcd::Etcd;
use common::pair::{GuestVmm, Host, PairNames, PairNet, LAN_IP, LOG_B};
use common::{test_guest, wait_until, TempDir};
use ft_kv_client::{run_stream, StreamConfig, StreamControl, StreamReport};

const CHANNEL_PORT: u16 = 7410;

/// How the pair under test is set up.
struct Setup<'a> {
    cmdline: String,
    /// `--disk` on host A and host B (`None`: no disk).
    disks: Option<(PathBuf, PathBuf)>,
    net: bool,
    tiebreaker: String,
    /// Extra `--fault-tolerance` options for both sides.
    extra: &'a str,
}

/// A primary on host A and its backup on host B.
struct Pair {
    primary: GuestVmm,
    backup: GuestVmm,
    events: (PathBuf, PathBuf),
}

fn write_key(dir: &TempDir) -> PathBuf {
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

fn vmm_args(net: &PairNet, host: Host, s: &Setup<'_>, ft: String, events: &Path) -> Vec<String> {
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

fn start_pair(net: &PairNet, dir: &TempDir, s: &Setup<'_>) -> Pair {
    let key = write_key(dir);
    let events = (dir.path("events-primary.json"), dir.path("events-backup.json"));
    let common = format!(
        "key={},tiebreaker={}{}",
        key.display(),
        s.tiebreaker,
        s.extra
    );
    let b = vmm_args(
        net,
        Host::B,
        s,
        format!(
            "mode=backup,listen=tcp:{LOG_B}:{CHANNEL_PORT},log={},{common}",
            dir.path("received.log").display()
        ),
        &events.1,
    );
    let b: Vec<&str> = b.iter().map(String::as_str).collect();
    let backup = net.spawn_vmm(Host::B, &dir.0, "backup", &b);
    let p = vmm_args(
        net,
        Host::A,
        s,
        format!("mode=primary,peer=tcp:{LOG_B}:{CHANNEL_PORT},{common}"),
        &events.0,
    );
    let p: Vec<&str> = p.iter().map(String::as_str).collect();
    let primary = net.spawn_vmm(Host::A, &dir.0, "primary", &p);
    Pair {
        primary,
        backup,
        events,
    }
}

fn sparse_disk(path: PathBuf) -> PathBuf {
    std::fs::File::create(&path)
        .and_then(|f| f.set_len(16 << 20))
        .expect("create the disk image");
    path
}

/// The `final state digest D after N exits` a VMM logged.
fn final_digest(stderr: &str) -> Option<String> {
    stderr
        .lines()
        .rev()
        .find_map(|l| l.split("final state digest ").nth(1))
        .map(str::to_string)
}

fn wait_exit(vm: &mut GuestVmm, timeout: Duration) -> ExitStatus {
    vm.child.wait_timeout(timeout).unwrap_or_else(|| {
        panic!(
            "the VMM did not exit; serial:\n{}\nstderr:\n{}",
            vm.serial_text(),
            vm.stderr_text()
        )
    })
}

/// The names of the `fault-tolerance` events in an event-monitor file.
fn ft_events(path: &Path) -> Vec<String> {
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

fn assert_clean(names: &PairNames) {
    let left = names.leftovers();
    assert!(left.is_empty(), "left behind: {left:#?}");
}

#[test]
fn a_pair_runs_compute_and_the_backup_replays_it_exactly() {
    let dir = TempDir::new("ftpair-compute");
    let net = PairNet::new();
    let names = net.names();
    let s = Setup {
        cmdline: "workload=ticks count=300 hz=200".into(),
        disks: None,
        net: false,
        tiebreaker: format!("file:{}", dir.path("tiebreak").display()),
        extra: "",
    };
    let mut pair = start_pair(&net, &dir, &s);
    let ps = wait_exit(&mut pair.primary, Duration::from_secs(120));
    let bs = wait_exit(&mut pair.backup, Duration::from_secs(60));
    let (pe, be) = (pair.primary.stderr_text(), pair.backup.stderr_text());
    assert!(ps.success() && bs.success(), "primary {ps}, backup {bs}:\n{pe}\n{be}");
    let digest = final_digest(&pe).expect("the primary's final digest");
    assert_eq!(final_digest(&be).as_deref(), Some(digest.as_str()), "{be}");
    assert!(digest.contains("(Shutdown)"), "{digest}");
    assert_eq!(pair.primary.serial_text(), pair.backup.serial_text());
    // The backup's copy of the stream replays offline to the same end.
    let guest = test_guest().to_str().expect("utf-8").to_string();
    let out = common::run_vmm(
        &[
            "--kernel",
            &guest,
            "--cmdline",
            &s.cmdline,
            "--memory",
            "size=128M",
            "--fault-tolerance",
            &format!("mode=replay,log={}", dir.path("received.log").display()),
            "-v",
        ],
        Duration::from_secs(120),
    );
    let text = common::text(&out.stderr);
    assert!(out.status.success(), "{text}");
    assert_eq!(final_digest(&text).as_deref(), Some(digest.as_str()));
    let events = ft_events(&pair.events.0);
    assert_eq!(events, ["connected", "protected"], "{events:?}");
    drop(pair);
    drop(net);
    assert_clean(&names);
}

/// A verified KV stream from the client, started on a thread; kills
/// `victim` after `kill_after` acknowledged SETs.
fn stream_through(
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

fn kv_setup(dir: &TempDir, tiebreaker: String, separate: bool) -> Setup<'static> {
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
    }
}

/// Kills the primary during a verified stream: every acknowledged SET
/// reads back, the connection is never reset, and the gap is reported.
fn primary_failover(tiebreaker: impl Fn(&TempDir) -> String, separate: bool, trials: u32) {
    for trial in 0..trials {
        let dir = TempDir::new("ftpair-failover");
        let net = PairNet::new();
        let names = net.names();
        let mut s = kv_setup(&dir, tiebreaker(&dir), separate);
        s.cmdline = net.kv_cmdline();
        let mut pair = start_pair(&net, &dir, &s);
        pair.primary
            .wait_serial("kv: listening on", Duration::from_secs(60));
        let (report, killed) =
            stream_through(&net, 4.0, Some((&mut pair.primary, 150 + 100 * u64::from(trial))));
        eprintln!(
            "ft_pair: failover trial {trial} (separate disks: {separate}): {report}; killed at {:?}",
            killed.map(|k| k.elapsed())
        );
        assert!(!report.reset(), "the client's connection was reset: {report}");
        assert!(report.ok(), "{report}: {:?}", report.bad_keys);
        let v = report.verification.as_ref().expect("verified");
        assert_eq!(v.checked, report.acked, "{report}");
        // The backup went live and announced itself; the primary is gone.
        let be = pair.backup.stderr_text();
        assert!(be.contains("event go-live"), "{be}");
        let events = ft_events(&pair.events.1);
        assert_eq!(
            events,
            [
                "connected",
                "protected",
                "peer-lost",
                "tiebreak-won",
                "go-live",
                "unprotected"
            ],
            "{events:?}"
        );
        drop(pair);
        drop(net);
        assert_clean(&names);
    }
}

#[test]
fn killing_the_primary_loses_no_acknowledged_write_and_resets_no_connection() {
    primary_failover(
        |dir| format!("file:{}", dir.path("tiebreak").display()),
        false,
        2,
    );
}

#[test]
fn killing_the_primary_with_separate_disks_and_an_etcd_tiebreaker() {
    primary_failover_with_etcd(1);
}

fn primary_failover_with_etcd(trials: u32) {
    for trial in 0..trials {
        let dir = TempDir::new("ftpair-sep");
        let net = PairNet::new();
        let names = net.names();
        let etcd = Etcd::start(&net.lan, LAN_IP, 2479, dir.path("etcd"));
        let mut s = kv_setup(&dir, etcd.tiebreaker(&format!("ft/{}", net.tag)), true);
        s.cmdline = net.kv_cmdline();
        let mut pair = start_pair(&net, &dir, &s);
        pair.primary
            .wait_serial("kv: listening on", Duration::from_secs(60));
        let (report, _) = stream_through(&net, 4.0, Some((&mut pair.primary, 200)));
        eprintln!("ft_pair: separate-disk failover trial {trial}: {report}");
        assert!(!report.reset(), "reset: {report}");
        assert!(report.ok(), "{report}: {:?}", report.bad_keys);
        let be = pair.backup.stderr_text();
        assert!(be.contains("event go-live"), "{be}");
        drop(pair);
        drop(etcd);
        drop(net);
        assert_clean(&names);
    }
}
