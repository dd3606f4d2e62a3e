// Copyright 2026 The ft-cloud-hypervisor authors.
// SPDX-License-Identifier: Apache-2.0

//! A backup whose replay diverges, with real VMMs in network namespaces:
//! the KV guest draws a number with RDRAND in user mode (no recording
//! captures it), the backup tells its primary and waits for a seed again,
//! and the primary seeds it again by FT VMotion while a verified KV stream
//! runs; a backup that does not come back leaves the VM live-unprotected.
//! The pair is protected by FT VMotion (`tests/common/vmotion.rs`) or
//! started at boot.

mod common;

use std::path::Path;
use std::time::Duration;

use common::ftpair::{ft_events, kv_setup, start_pair, stream_through};
use common::pair::{GuestVmm, PairNames, PairNet};
use common::vmotion::{
    begin, fail_over, file_tiebreaker, finish, info, protect_kv_guest, KeptDir, Protected,
};
use common::wait_until;
use ft_kv_client::StreamReport;

/// A divergence test's surroundings ([`begin`]) and a KV guest protected
/// by FT VMotion, the stream across the VMotion verified: (directory,
/// network, its names, primary, backup).
fn begin_protected(
    tag: &str,
    keep: &'static str,
) -> (KeptDir, PairNet, PairNames, GuestVmm, GuestVmm) {
    let (dir, net, names) = begin(tag, keep);
    let Protected {
        primary,
        backup,
        report,
        ..
    } = protect_kv_guest(&net, &dir);
    assert!(report.ok(), "{report}: {:?}", report.bad_keys);
    (dir, net, names, primary, backup)
}

/// Sends `RANDOM` to the KV guest from the client's namespace: the guest
/// draws a number with RDRAND in user mode (no VMM sees it) and reads the
/// clock as many times as it says, so the backup's replay diverges.
fn draw_random(net: &PairNet) -> String {
    use std::io::{BufRead, BufReader, Write};
    net.client.run(|| {
        let mut s = std::net::TcpStream::connect_timeout(&net.kv_addr(), Duration::from_secs(10))
            .expect("connect to the KV guest");
        s.set_read_timeout(Some(Duration::from_secs(20)))
            .expect("timeout");
        s.write_all(b"RANDOM\n").expect("send RANDOM");
        let mut line = String::new();
        BufReader::new(s).read_line(&mut line).expect("answer");
        line
    })
}

/// Forces a divergence during a verified KV stream (`RANDOM`, drawn again
/// if the backup happened to read the clock as often: one draw in 1024)
/// and waits until the primary (its events in `events_p`) is protected
/// again. Returns the stream's report and the draws' answers.
fn diverge_and_repair(
    net: &PairNet,
    events_p: &Path,
    primary: &GuestVmm,
) -> (StreamReport, Vec<String>) {
    let protected = || {
        ft_events(events_p)
            .iter()
            .filter(|e| *e == "protected")
            .count()
    };
    let diverged = || ft_events(events_p).iter().any(|e| e == "backup-diverged");
    std::thread::scope(|scope| {
        let stream = scope.spawn(|| stream_through(net, 12.0, None).0);
        std::thread::sleep(Duration::from_millis(1000));
        let mut draws = Vec::new();
        while draws.len() < 3 && !diverged() {
            let drawn = std::time::Instant::now();
            draws.push(draw_random(net));
            let seen = wait_until(Duration::from_secs(5), diverged);
            eprintln!(
                "ft_vmotion: draw {}: divergence reported: {seen} after {:?}",
                draws.len(),
                drawn.elapsed()
            );
        }
        let repaired = wait_until(Duration::from_secs(60), || protected() == 2);
        assert!(
            repaired,
            "not protected again: {:?}\n{}",
            ft_events(events_p),
            primary.stderr_text()
        );
        (stream.join().expect("stream"), draws)
    })
}

/// The stream across a divergence lost nothing and was not reset; the
/// primary stayed up, did no tiebreak and seeded the backup again.
fn assert_repaired(
    report: &StreamReport,
    draws: &[String],
    primary: &mut GuestVmm,
    events_p: &Path,
) {
    assert!(draws.iter().all(|d| d.starts_with("RANDOM ")), "{draws:?}");
    assert!(!report.reset(), "reset: {report}");
    assert!(report.ok(), "{report}: {:?}", report.bad_keys);
    let v = report.verification.as_ref().expect("verified");
    assert_eq!(v.checked, report.acked, "{report}");
    assert!(primary.child.running(), "{}", primary.stderr_text());
    let after = events_from(events_p, "backup-diverged");
    let order: Vec<&str> = after
        .iter()
        .map(String::as_str)
        .filter(|e| *e != "seed-progress")
        .collect();
    assert_eq!(
        order,
        [
            "backup-diverged",
            "unprotected",
            "reseed-started",
            "seed-connecting",
            "connected",
            "seeded",
            "protected"
        ],
        "{after:?}"
    );
    assert!(after.iter().any(|e| e == "seed-progress"), "{after:?}");
}

/// The reasons a backup's events (`events-*.json`) give for its
/// divergences.
fn diverged_reasons(events: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(events).unwrap_or_default();
    text.lines()
        .filter_map(|l| l.trim().strip_prefix("\"reason\": \"replay diverged"))
        .map(|r| format!("replay diverged{}", r.trim_end_matches(['"', ','])))
        .collect()
}

/// The events of `events` from the first `from` on.
fn events_from(events: &Path, from: &str) -> Vec<String> {
    let all = ft_events(events);
    let at = all.iter().position(|e| e == from).unwrap_or(all.len());
    all[at..].to_vec()
}

/// Divergence repaired: a backup whose replay diverges (the guest executes
/// RDRAND in user mode, which no recording captures) tells its primary and
/// waits for a seed again; the primary stays up, goes unprotected at once
/// without a tiebreak and seeds the same backup again by FT VMotion while
/// a verified KV stream runs: no acknowledged SET lost, no reset. The
/// re-seeded backup then takes over after `kill -9` of the primary and
/// keeps the data.
#[test]
fn a_diverged_backup_is_seeded_again_and_takes_over_after_a_failover() {
    let (dir, net, names, mut primary, mut backup) =
        begin_protected("ftvmotion-diverge", "divergence");
    let events_p = dir.path("events-primary.json");
    let protected = |p: &Path| ft_events(p).iter().filter(|e| *e == "protected").count();
    assert_eq!(protected(&events_p), 1, "{:?}", ft_events(&events_p));

    let (report, draws) = diverge_and_repair(&net, &events_p, &primary);
    eprintln!("ft_vmotion: stream across the divergence and re-seed: {report}; draws {draws:?}");
    assert_repaired(&report, &draws, &mut primary, &events_p);
    let ft = &info(&dir, "primary.sock")["fault_tolerance"];
    assert_eq!(ft["state"], "protected", "{ft}");
    assert_eq!(ft["reseed"]["divergences"], 1, "{ft}");
    assert_eq!(ft["reseed"]["reseeded"], 1, "{ft}");
    // The backup's VMM is the same process: it diverged and was seeded again.
    assert!(backup.child.running(), "{}", backup.stderr_text());
    let events_b = ft_events(&dir.path("events-backup.json"));
    eprintln!(
        "ft_vmotion: the backup saw {:?}",
        diverged_reasons(&dir.path("events-backup.json"))
    );
    assert!(events_b.iter().any(|e| e == "diverged"), "{events_b:?}");
    assert_eq!(
        events_b.iter().filter(|e| *e == "protected").count(),
        2,
        "{events_b:?}"
    );

    // The re-seeded backup takes over and keeps the data.
    fail_over(
        &net,
        &dir,
        &mut primary,
        (&mut backup, "backup"),
        "re-seeded",
    );
    finish((primary, backup), net, &names);
}

/// The same repair for a pair started at boot (`mode=primary` and
/// `mode=backup`): the backup waits for a seed with its own configuration's
/// settings, the primary seeds it with its own.
#[test]
fn a_boot_time_pair_repairs_a_divergence_too() {
    let (dir, net, names) = begin("ftpair-diverge", "boot-divergence");
    let mut s = kv_setup(&dir, file_tiebreaker(&dir), false);
    s.cmdline = net.kv_cmdline();
    let mut pair = start_pair(&net, &dir, &s);
    pair.primary
        .wait_serial("kv: listening on", Duration::from_secs(60));
    let events_p = pair.events.0.clone();
    assert!(
        wait_until(Duration::from_secs(20), || ft_events(&events_p)
            .iter()
            .any(|e| e == "protected")),
        "{:?}",
        ft_events(&events_p)
    );
    let (report, draws) = diverge_and_repair(&net, &events_p, &pair.primary);
    eprintln!(
        "ft_vmotion: boot-time pair across the divergence and re-seed: {report}; draws {draws:?}"
    );
    assert_repaired(&report, &draws, &mut pair.primary, &events_p);
    assert!(pair.backup.child.running(), "{}", pair.backup.stderr_text());
    let events_b = ft_events(&pair.events.1);
    eprintln!(
        "ft_vmotion: the backup saw {:?}",
        diverged_reasons(&pair.events.1)
    );
    assert!(events_b.iter().any(|e| e == "diverged"), "{events_b:?}");
    fail_over(
        &net,
        &dir,
        &mut pair.primary,
        (&mut pair.backup, "backup"),
        "boot-time re-seeded",
    );
    finish(pair, net, &names);
}

/// Bounded repair: a diverged backup whose VMM dies before it is seeded
/// again is tried three times, then the VM stays live-unprotected and
/// serving, and `vm.info` says so.
#[test]
fn a_diverged_backup_that_does_not_come_back_leaves_the_vm_unprotected() {
    let (dir, net, names, mut primary, mut backup) =
        begin_protected("ftvmotion-abandon", "abandon");
    let events_p = dir.path("events-primary.json");
    let events_b = dir.path("events-backup.json");
    let has = |p: &Path, e: &str| ft_events(p).iter().any(|x| x == e);
    // Diverge, and kill the backup as soon as it says so.
    let mut draws = 0;
    while draws < 3 && !has(&events_b, "diverged") {
        draw_random(&net);
        draws += 1;
        wait_until(Duration::from_secs(5), || has(&events_b, "diverged"));
    }
    assert!(has(&events_b, "diverged"), "{:?}", ft_events(&events_b));
    backup.kill9();
    let abandoned = wait_until(Duration::from_secs(90), || {
        has(&events_p, "reseed-abandoned")
    });
    let after = events_from(&events_p, "backup-diverged");
    assert!(abandoned, "{after:?}\n{}", primary.stderr_text());
    let failed = after.iter().filter(|e| *e == "reseed-failed").count();
    assert_eq!(failed, 3, "{after:?}");
    assert!(
        !after
            .iter()
            .any(|e| e == "protected" || e == "peer-lost" || e == "tiebreak-won"),
        "{after:?}"
    );
    let ft = &info(&dir, "primary.sock")["fault_tolerance"];
    assert_eq!(ft["state"], "live-unprotected", "{ft}");
    assert_eq!(ft["reseed"]["abandoned"], true, "{ft}");
    assert_eq!(ft["reseed"]["failed_attempts"], 3, "{ft}");
    assert_eq!(ft["reseed"]["reseeded"], 0, "{ft}");
    // The VM serves on, alone.
    let (report, _) = stream_through(&net, 2.0, None);
    assert!(report.ok() && !report.reset(), "{report}");
    assert!(primary.child.running(), "{}", primary.stderr_text());
    finish((primary, backup), net, &names);
}
