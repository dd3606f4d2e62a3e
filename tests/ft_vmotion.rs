// Copyright 2026 The ft-cloud-hypervisor authors.
// SPDX-License-Identifier: Apache-2.0

//! FT VMotion with real VMMs in network namespaces: a plain running KV
//! guest gets a backup by `ch-remote ft-add-backup` while a verified KV
//! stream runs; its primary is killed (-9) and the backup goes live; the
//! live ex-backup gets a new backup the same way and is killed in turn:
//! two failovers in a row, no acknowledged SET lost, the client's
//! connection kept. Refusals (wrong key, another configuration, a VM
//! already protected or not running, bad JSON) leave the VM running.
//! A backup whose replay diverges, and its repair, is in
//! `ft_vmotion_divergence.rs`.
//!
//! The third VMM runs in host A's namespace again (the first primary is
//! dead by then): the pair network has two host namespaces.

mod common;

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use common::etcd::Etcd;
use common::ftpair::{ft_events, kv_setup, stream_through, write_key, CHANNEL_PORT};
use common::pair::{Host, LAN_IP, LOG_A, LOG_B};
use common::vmotion::{
    add_backup, add_backup_with, assert_succeeded, begin, fail_over, file_tiebreaker, finish, info,
    plain_kv_guest, protect_kv_guest, receive_backup, receive_backup_with, seed_progress, seeded,
    start_empty, start_plain, start_plain_guest, vmotion_under_stream, wait_child, Protected,
};
use common::{api, spawn_ch_remote, text, wait_until, TempDir};

/// A plain KV guest gets a backup by FT VMotion during a verified stream;
/// its primary is killed (-9) and the backup goes live; the live
/// ex-backup gets a new backup (in host A's namespace) and is killed in
/// turn: no acknowledged SET lost, no reset, in every phase.
#[test]
fn vmotion_then_two_failovers_in_a_row_lose_no_acknowledged_set() {
    let (dir, net, names) = begin("ftvmotion", "two-failovers");
    // 1. FT VMotion to host B while a verified stream runs.
    let Protected {
        mut primary,
        mut backup,
        key,
        listen_b,
        report,
    } = protect_kv_guest(&net, &dir);
    eprintln!("ft_vmotion: stream across the VMotion: {report}");
    assert!(!report.reset(), "reset: {report}");
    assert!(report.ok(), "{report}: {:?}", report.bad_keys);
    let (pause, bytes) = seeded(&dir.path("events-primary.json"));
    eprintln!("ft_vmotion: first VMotion (128 MiB guest): pause {pause} ms, {bytes} bytes");
    assert!(bytes > 0 && pause > 0.0);
    assert_eq!(
        info(&dir, "primary.sock")["fault_tolerance"]["state"],
        "protected"
    );
    assert_eq!(
        info(&dir, "backup.sock")["fault_tolerance"]["role"],
        "backup"
    );
    // Protected already: refused, still running.
    let again = add_backup(&dir, "primary.sock", &listen_b, &key);
    assert_refused(&again, "already protected");

    // 2. kill -9 the primary mid-stream: the backup goes live.
    fail_over(&net, &dir, &mut primary, (&mut backup, "backup"), "first");

    // 3. Redundancy restored: the live ex-backup gets a new backup in
    // host A's namespace (a fresh VMM), then is killed in turn.
    let mut third = start_empty(&net, Host::A, &dir, "third");
    let listen_a = format!("tcp:{LOG_A}:{CHANNEL_PORT}");
    let report = vmotion_under_stream(
        &net,
        &dir,
        ("backup.sock", &backup),
        ("third", &third),
        (&listen_a, Host::A),
        &key,
    );
    assert!(report.ok(), "{report}: {:?}", report.bad_keys);
    let (pause, bytes) = seeded(&dir.path("events-backup.json"));
    eprintln!("ft_vmotion: second VMotion: pause {pause} ms, {bytes} bytes");
    assert!(bytes > 0 && pause > 0.0);
    fail_over(&net, &dir, &mut backup, (&mut third, "third"), "second");
    finish((primary, backup, third), net, &names);
}

/// Asserts that the `ch-remote` call behind `out` failed, saying `why`.
fn assert_refused(out: &Output, why: &str) {
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains(why), "{}", text(&out.stderr));
}

/// Refused FT VMotions (bad JSON, missing fields, a paused VM, a wrong
/// key, another configuration) leave the VM running and serving.
#[test]
fn refused_vmotions_leave_the_running_vm_unharmed() {
    let (dir, net, names) = begin("ftvmotion-refuse", "refusals");
    let (key, primary) = plain_kv_guest(&net, &dir);
    let listen_b = format!("tcp:{LOG_B}:{CHANNEL_PORT}");
    let running = |dir: &TempDir| info(dir, "primary.sock")["state"] == "Running";

    // Bad JSON and missing fields: 400, nothing changes.
    let (code, body) = api(
        &dir.path("primary.sock"),
        "PUT",
        "vm.ft-add-backup",
        Some("{"),
    );
    assert_eq!(code, 400, "{body}");
    let (code, body) = api(
        &dir.path("primary.sock"),
        "PUT",
        "vm.ft-add-backup",
        Some(r#"{"peer":"tcp:1.2.3.4:5"}"#),
    );
    assert_eq!(code, 400, "{body}");
    // Not running.
    assert_eq!(
        api(&dir.path("primary.sock"), "PUT", "vm.pause", None).0,
        204
    );
    let paused = add_backup(&dir, "primary.sock", &listen_b, &key);
    assert_refused(&paused, "not running");
    assert_eq!(
        api(&dir.path("primary.sock"), "PUT", "vm.resume", None).0,
        204
    );

    // A wrong key: the backup refuses and waits on.
    let backup = start_empty(&net, Host::B, &dir, "backup");
    let other_key = dir.path("other.key");
    std::fs::write(&other_key, [7u8; 32]).expect("key");
    std::fs::set_permissions(
        &other_key,
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .expect("chmod");
    let recv = receive_backup(
        &dir,
        "backup",
        &listen_b,
        &other_key,
        &net.links(Host::B).tap,
    );
    let wrong = add_backup(&dir, "primary.sock", &listen_b, &key);
    assert_refused(&wrong, "wrong key");
    assert!(running(&dir));
    let (report, _) = stream_through(&net, 1.0, None);
    assert!(report.ok(), "{report}");

    // Another configuration: the backup's tap list does not match.
    drop(recv);
    drop(backup);
    let backup = start_empty(&net, Host::B, &dir, "backup2");
    let mismatch = spawn_ch_remote(
        &dir.path("backup2.sock"),
        &[
            "ft-receive-backup",
            &format!(
                "listen={listen_b},key={},tiebreaker={},net_taps=a;b",
                key.display(),
                file_tiebreaker(&dir)
            ),
        ],
    );
    let refused = add_backup(&dir, "primary.sock", &listen_b, &key);
    assert_refused(&refused, "2 taps given");
    assert!(running(&dir));
    assert!(info(&dir, "primary.sock").get("fault_tolerance").is_none());
    let (report, _) = stream_through(&net, 1.0, None);
    assert!(report.ok(), "{report}");
    drop(mismatch);
    finish((primary, backup), net, &names);
}

/// Whether the images at `a` and `b` hold the same bytes, waiting up to
/// `within` for the backup's replay to catch up.
fn images_become_equal(a: &Path, b: &Path, within: Duration) -> Result<(), String> {
    let mut why = String::new();
    let equal = wait_until(within, || {
        let (x, y) = (
            std::fs::read(a).unwrap_or_default(),
            std::fs::read(b).unwrap_or_default(),
        );
        if x == y {
            return true;
        }
        let first = x.iter().zip(&y).position(|(p, q)| p != q);
        why = format!(
            "{} has {} bytes, {} has {}; first difference at {first:?}",
            a.display(),
            x.len(),
            b.display(),
            y.len()
        );
        false
    });
    if equal {
        Ok(())
    } else {
        Err(why)
    }
}

/// `disks=separate`: the KV guest writes its disk (a log record per SET)
/// all through the seeding, under a verified stream, so its image is
/// copied while it changes: round 0 sends every block with data, later
/// rounds (a zero downtime bound: up to the cap of 4) and the pause the
/// blocks written since. The seed's own check passes (the primary's image
/// digest, taken in the pause, equals the backup's copy's), `vm.info`
/// shows blocks sent again, and once the stream stops both images are
/// byte-identical (the backup writes its copy as it replays). Then the
/// primary is killed (-9) during a stream and the backup, serving from its
/// copy, loses no acknowledged SET. Without the resend of written blocks
/// the seed is refused (its disk digest differs): checked by breaking it
/// on purpose.
#[test]
fn vmotion_with_separate_disks_copies_the_image_while_the_guest_writes_it() {
    let (dir, net, names) = begin("ftvmotion-sep", "separate");
    let key = write_key(&dir);
    let etcd = Etcd::start(&net.lan, LAN_IP, 2479, dir.path("etcd"));
    let tb = etcd.tiebreaker(&format!("ftv/{}", net.tag));
    let s = kv_setup(&dir, tb.clone(), false);
    let disk: PathBuf = s.disks.as_ref().expect("disk").0.clone();
    // Data the guest never reads, past where its log reaches in this
    // test: round 0 of the copy then lasts long enough for the stream's
    // SETs to land in blocks it already sent (a copy of the 1-2 MiB the
    // log alone fills took ~100 ms, and a loaded machine's guest wrote
    // nothing in it: 1 run in 6 found no block to resend).
    fill_with_noise(&disk, 6 << 20, 10 << 20);
    let copy = dir.path("kv-b.img");
    // A stale copy: the seed replaces it whole.
    std::fs::write(&copy, b"not the image").expect("stale copy");
    let mut primary = start_plain(&net, &dir, &disk);
    primary.wait_serial("kv: listening on", Duration::from_secs(60));
    let (report, _) = stream_through(&net, 1.0, None);
    assert!(report.ok(), "{report}");
    let backup = start_empty(&net, Host::B, &dir, "backup");
    let listen_b = format!("tcp:{LOG_B}:{CHANNEL_PORT}");
    let recv = receive_backup_with(
        &dir,
        "backup",
        &listen_b,
        &key,
        &net.links(Host::B).tap,
        &tb,
        &format!(",disks=separate,disk_paths={}", copy.display()),
    );
    // The seeding runs inside a verified stream: the guest appends to its
    // log on the disk all the time.
    let (report, added) = std::thread::scope(|scope| {
        let stream = scope.spawn(|| stream_through(&net, 5.0, None));
        std::thread::sleep(Duration::from_millis(1500));
        let added = add_backup_with(
            &dir,
            "primary.sock",
            &listen_b,
            &key,
            &tb,
            ",disks=separate,downtime_ms=0,max_iterations=4",
        );
        (stream.join().expect("stream").0, added)
    });
    let recv = wait_child(recv);
    assert_succeeded(&added, "ft-add-backup", &primary);
    assert_succeeded(&recv, "ft-receive-backup", &backup);
    eprintln!("ft_vmotion: separate disks, stream during the seeding: {report}");
    assert!(!report.reset(), "reset: {report}");
    assert!(report.ok(), "{report}: {:?}", report.bad_keys);
    // Quiescent (the stream is over): both images hold the same bytes.
    images_become_equal(&disk, &copy, Duration::from_secs(10))
        .unwrap_or_else(|why| panic!("the copies differ after the seed: {why}"));
    let (pause, bytes) = seeded(&dir.path("events-primary.json"));
    let seed = info(&dir, "primary.sock")["fault_tolerance"]["seed"].clone();
    eprintln!("ft_vmotion: separate disks: pause {pause} ms, {bytes} bytes, seed {seed}");
    // The image's data went in round 0 (a sparse 64 MiB image: not all of
    // it, the noise included), and blocks the guest wrote during the copy
    // went again.
    let disks = &seed["disks"];
    assert!(
        disks["bytes_sent"].as_u64().unwrap_or(0) >= 10 << 20,
        "{seed}"
    );
    assert!(disks["blocks_resent"].as_u64().unwrap_or(0) > 0, "{seed}");
    let rounds = disks["rounds"].as_array().cloned().unwrap_or_default();
    assert!(rounds.len() >= 3, "{seed}");
    // After the switch the primary reads its image against the block
    // digests it sent (the pause compared only the two sides' tables):
    // every block is as sent, or written since the switch.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let verify = loop {
        let v = info(&dir, "primary.sock")["fault_tolerance"]["seed"]["disks"]["verify"].clone();
        if v["state"] != "running" || std::time::Instant::now() > deadline {
            break v;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    eprintln!("ft_vmotion: separate disks: the image's check after the switch: {verify}");
    assert_eq!(verify["state"], "verified", "{verify}");
    assert!(
        verify["blocks_matched"].as_u64().unwrap_or(0) > 0,
        "{verify}"
    );

    // The backup writes its own copy as it replays; after the primary is
    // killed it serves from it.
    let (report, _) = stream_through(&net, 4.0, Some((&mut primary, 150)));
    eprintln!("ft_vmotion: separate-disk failover: {report}");
    assert!(!report.reset(), "reset: {report}");
    assert!(report.ok(), "{report}: {:?}", report.bad_keys);
    let events = ft_events(&dir.path("events-backup.json"));
    assert!(events.iter().any(|e| e == "go-live"), "{events:?}");
    finish((primary, backup, etcd), net, &names);
}

/// Writes `len` bytes of xorshift noise (incompressible, never zero) at
/// `offset` of the image at `path`.
fn fill_with_noise(path: &Path, offset: u64, len: usize) {
    use std::os::unix::fs::FileExt;
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let noise: Vec<u8> = (0..len / 8)
        .flat_map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x.to_le_bytes()
        })
        .collect();
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .expect("open the image");
    file.write_all_at(&noise, offset).expect("fill the image");
}

/// The `dirty: pass=N ...` lines of a serial output: (pass, ok). Only
/// whole lines: the UART writes a byte per exit, so a read can end inside
/// a line (`dirty: pass=19 o` is no failure).
fn dirty_passes(serial: &str) -> Vec<(u64, bool)> {
    let whole = serial.rfind('\n').map_or("", |end| &serial[..end]);
    whole
        .lines()
        .filter_map(|l| l.strip_prefix("dirty: pass="))
        .filter_map(|r| {
            let (n, rest) = r.split_once(' ')?;
            Some((n.parse().ok()?, rest == "ok"))
        })
        .collect()
}

/// A guest that writes memory all the time (`workload=dirty`: 16,000
/// page writes a second over 8 MiB, each checking the page's previous
/// value) is seeded in several pre-copy rounds (a zero downtime bound:
/// rounds until none finds a dirty page, or the cap of 4), so pages it
/// writes during a round must be sent again: if one were not, the backup's copy of the guest would read a
/// stale page, its replay would diverge and, live, the guest would report
/// the lost write. The backup replays without divergence, goes live after
/// `kill -9` of the primary, and its guest goes on finding every page as
/// it last wrote it.
#[test]
fn vmotion_of_a_guest_writing_memory_resends_pages_and_replays_exactly() {
    let (dir, net, names) = begin("ftvmotion-dirty", "dirty");
    let key = write_key(&dir);
    let mut primary = start_plain_guest(
        &net,
        &dir,
        "workload=dirty mib=8 pages=64 hz=250",
        "size=256M",
        &[],
    );
    primary.wait_serial("dirty: pass=2 ok", Duration::from_secs(60));

    let mut backup = start_empty(&net, Host::B, &dir, "backup");
    let listen_b = format!("tcp:{LOG_B}:{CHANNEL_PORT}");
    let recv = spawn_ch_remote(
        &dir.path("backup.sock"),
        &[
            "ft-receive-backup",
            &listen_b,
            &format!(
                "key={},tiebreaker={},serial={}",
                key.display(),
                file_tiebreaker(&dir),
                backup.serial.display()
            ),
        ],
    );
    let added = add_backup_with(
        &dir,
        "primary.sock",
        &listen_b,
        &key,
        &file_tiebreaker(&dir),
        ",downtime_ms=0,max_iterations=4",
    );
    let recv = wait_child(recv);
    assert_succeeded(&added, "ft-add-backup", &primary);
    assert_succeeded(&recv, "ft-receive-backup", &backup);
    // vm.info reports the seed: the capped rounds, and pages written
    // during them sent again (more pages than round 0's non-zero ones).
    let seed = info(&dir, "primary.sock")["fault_tolerance"]["seed"].clone();
    eprintln!("ft_vmotion: seed of the writing guest: {seed}");
    assert!(seed["iterations"].as_u64().unwrap_or(0) >= 2, "{seed}");
    let (pause, _) = seeded(&dir.path("events-primary.json"));
    assert!(pause > 0.0);
    // Round 0 took long enough for the guest to write many pages (at
    // least a tick's 64), found dirty and sent again in round 1 or later.
    let rounds = seed_progress(&dir.path("events-primary.json"));
    assert!(
        rounds
            .iter()
            .any(|&(round, dirty)| round >= 1 && dirty >= 64),
        "{rounds:?}"
    );

    // The backup replays for a while: no divergence, the pair stays
    // protected, and the guest goes on writing.
    let at_seed = dirty_passes(&primary.serial_text()).len();
    let more = format!("dirty: pass={} ", at_seed + 8);
    primary.wait_serial(&more, Duration::from_secs(60));
    assert!(backup.child.running(), "{}", backup.stderr_text());
    assert!(
        !backup.stderr_text().contains("diverge"),
        "{}",
        backup.stderr_text()
    );
    assert_eq!(
        info(&dir, "backup.sock")["fault_tolerance"]["state"],
        "protected"
    );
    assert_eq!(
        info(&dir, "primary.sock")["fault_tolerance"]["state"],
        "protected"
    );

    // kill -9 of the primary: the backup goes live and its guest finds
    // every page as it wrote it, pass after pass.
    let last_primary = dirty_passes(&primary.serial_text())
        .last()
        .map_or(0, |p| p.0);
    primary.kill9();
    assert!(
        wait_until(Duration::from_secs(10), || ft_events(
            &dir.path("events-backup.json")
        )
        .iter()
        .any(|e| e == "go-live")),
        "no go-live: {:?}\n{}",
        ft_events(&dir.path("events-backup.json")),
        backup.stderr_text()
    );
    let want = format!("dirty: pass={} ", last_primary + 6);
    backup.wait_serial(&want, Duration::from_secs(60));
    let passes = dirty_passes(&backup.serial_text());
    assert!(
        passes.iter().all(|&(_, ok)| ok),
        "the backup's guest lost writes: {passes:?}"
    );
    assert!(
        dirty_passes(&primary.serial_text())
            .iter()
            .all(|&(_, ok)| ok),
        "{}",
        primary.serial_text()
    );
    finish((primary, backup), net, &names);
}
