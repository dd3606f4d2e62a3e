// Copyright 2026 The ft-cloud-hypervisor authors.
// SPDX-License-Identifier: Apache-2.0

//! The fault-tolerant pair with real processes on two "hosts": network
//! namespaces on one machine (`common::pair`), a client namespace and a
//! LAN bridge, the logging channel on its own veth link. The guest is the
//! test guest (compute, or its TCP key-value service with `ft-kv-client`
//! verifying every acknowledged SET).

mod common;

use std::time::Duration;

use common::etcd::Etcd;
use common::ftpair::{
    assert_clean, final_digest, ft_events, kv_setup, start_pair, stream_through, wait_exit, Setup,
};
use common::pair::{PairNet, LAN_IP};
use common::{test_guest, TempDir};

#[test]
fn a_pair_runs_compute_and_the_backup_replays_it_exactly() {
    let dir = TempDir::new("ftpair-compute");
    let net = PairNet::new();
    let names = net.names();
    let s = Setup::compute(
        "workload=ticks count=300 hz=200",
        format!("file:{}", dir.path("tiebreak").display()),
    );
    let mut pair = start_pair(&net, &dir, &s);
    let ps = wait_exit(&mut pair.primary, Duration::from_secs(120));
    let bs = wait_exit(&mut pair.backup, Duration::from_secs(60));
    let (pe, be) = (pair.primary.stderr_text(), pair.backup.stderr_text());
    assert!(
        ps.success() && bs.success(),
        "primary {ps}, backup {bs}:\n{pe}\n{be}"
    );
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
        let (report, killed) = stream_through(
            &net,
            4.0,
            Some((&mut pair.primary, 150 + 100 * u64::from(trial))),
        );
        eprintln!(
            "ft_pair: failover trial {trial} (separate disks: {separate}): {report}; killed at {:?}",
            killed.map(|k| k.elapsed())
        );
        assert!(
            !report.reset(),
            "the client's connection was reset: {report}"
        );
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

#[test]
fn vm_create_and_vm_boot_start_a_primary_and_vm_info_shows_the_pair() {
    let dir = TempDir::new("ftpair-api");
    let net = PairNet::new();
    let names = net.names();
    let s = Setup::compute(
        "workload=ticks count=600 hz=200",
        format!("file:{}", dir.path("tiebreak").display()),
    );
    let key = common::ftpair::write_key(&dir);
    let mut backup = common::ftpair::start_backup(&net, &dir, &s, &key);
    let socket = dir.path("api.sock");
    let stderr = dir.path("stderr-primary.txt");
    let mut vmm = common::pair::GuestVmm {
        child: common::netns::KillOnDrop::spawn(
            net.host(common::pair::Host::A)
                .command(common::vmm_bin())
                .args(["--api-socket", &format!("path={}", socket.display()), "-v"])
                .stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::null())
                .stderr(std::fs::File::create(&stderr).expect("stderr file")),
        ),
        serial: dir.path("serial-api.txt"),
        stderr,
    };
    assert!(common::wait_until(Duration::from_secs(10), || socket.exists()));
    let config = serde_json::json!({
        "payload": {"kernel": test_guest(), "cmdline": s.cmdline},
        "memory": {"size": 134217728u64},
        "serial": {"mode": "File", "file": dir.path("serial-api.txt")},
        "console": {"mode": "Off"},
        "fault_tolerance": {
            "mode": "primary",
            "peer": format!("tcp:{}:{}", common::pair::LOG_B, common::ftpair::CHANNEL_PORT),
            "key": key,
            "tiebreaker": s.tiebreaker,
        },
    })
    .to_string();
    let (code, body) = common::api(&socket, "PUT", "vm.create", Some(&config));
    assert_eq!(code, 204, "{body}");
    let (code, body) = common::api(&socket, "PUT", "vm.boot", None);
    assert_eq!(code, 204, "{body}");
    // vm.boot returns once the channel is up; the pair is protected once
    // the backup acknowledged the stream's header (until then "connecting").
    let info_now = || {
        let (code, body) = common::api(&socket, "GET", "vm.info", None);
        assert_eq!(code, 200, "{body}");
        let info: serde_json::Value = serde_json::from_str(&body).expect("JSON");
        let state = info["fault_tolerance"]["state"].clone();
        assert!(
            state == "connecting" || state == "protected",
            "state {state} after vm.boot: {info}"
        );
        (body, info)
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let (body, info) = loop {
        let (body, info) = info_now();
        if info["fault_tolerance"]["state"] == "protected" || std::time::Instant::now() > deadline {
            break (body, info);
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let ft = &info["fault_tolerance"];
    assert_eq!(ft["role"], "primary", "{info}");
    assert_eq!(ft["state"], "protected", "{info}");
    assert!(ft["generation"].as_u64().unwrap_or(0) > 0, "{info}");
    // The key's bytes never show: only its path, in the configuration.
    let key_bytes: String = std::fs::read(&key)
        .expect("key")
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert!(!body.contains(&key_bytes));
    let (_, counters) = common::api(&socket, "GET", "vm.counters", None);
    assert!(counters.contains("\"bytes_sent\""), "{counters}");
    let ps = wait_exit(&mut vmm, Duration::from_secs(60));
    let bs = wait_exit(&mut backup, Duration::from_secs(60));
    assert!(ps.success() && bs.success());
    assert_eq!(
        final_digest(&vmm.stderr_text()),
        final_digest(&backup.stderr_text())
    );
    drop(net);
    assert_clean(&names);
}
