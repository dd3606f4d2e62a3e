// Copyright 2026 The ft-cloud-hypervisor authors.
// SPDX-License-Identifier: Apache-2.0

//! FT VMotion with real VMMs in network namespaces: a plain running KV
//! guest gets a backup by `ch-remote ft-add-backup` while a verified KV
//! stream runs; its primary is killed (-9) and the backup goes live; the
//! live ex-backup gets a new backup the same way and is killed in turn:
//! two failovers in a row, no acknowledged SET lost, the client's
//! connection kept. Refusals (wrong key, another configuration, a VM
//! already protected or not running, bad JSON) leave the VM running.
//!
//! The third VMM runs in host A's namespace again (the first primary is
//! dead by then): the pair network has two host namespaces.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::etcd::Etcd;
use common::ftpair::{
    assert_clean, ft_events, kv_setup, start_pair, stream_through, write_key, CHANNEL_PORT,
};
use common::netns::KillOnDrop;
use common::pair::{GuestVmm, Host, PairNet, LAN_IP, LOG_A, LOG_B};
use common::{api, ch_remote, test_guest, text, vmm_bin, wait_until, TempDir};
use ft_kv_client::StreamReport;

/// On a failure, keeps the test's files (logs, events) in
/// `$TMPDIR/ft-vmotion-failed-NAME` for the report.
struct KeepOnFailure(PathBuf, &'static str);

impl Drop for KeepOnFailure {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let to = std::env::temp_dir().join(format!("ft-vmotion-failed-{}", self.1));
            let _ = std::fs::remove_dir_all(&to);
            let _ = std::fs::create_dir_all(&to);
            for e in std::fs::read_dir(&self.0).into_iter().flatten().flatten() {
                let name = e.file_name();
                if !name.to_string_lossy().ends_with(".img") {
                    let _ = std::fs::copy(e.path(), to.join(name));
                }
            }
            eprintln!("ft_vmotion: files kept in {}", to.display());
        }
    }
}

fn file_tiebreaker(dir: &TempDir) -> String {
    format!("file:{}", dir.path("tiebreak").display())
}

/// A running KV guest on host A with an API socket, no fault tolerance.
fn start_plain(net: &PairNet, dir: &TempDir, disk: &Path) -> GuestVmm {
    let guest = test_guest().to_str().expect("utf-8").to_string();
    let args = [
        "--kernel".to_string(),
        guest,
        "--cmdline".into(),
        net.kv_cmdline(),
        "--memory".into(),
        "size=128M".into(),
        "--disk".into(),
        format!("path={}", disk.display()),
        "--net".into(),
        net.guest_net(Host::A),
        "--api-socket".into(),
        format!("path={}", dir.path("primary.sock").display()),
        "--event-monitor".into(),
        format!("path={}", dir.path("events-primary.json").display()),
        "-v".into(),
    ];
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    net.spawn_vmm(Host::A, &dir.0, "primary", &args)
}

/// A VMM with no VM on `host`, API socket `dir/NAME.sock`.
fn start_empty(net: &PairNet, host: Host, dir: &TempDir, name: &str) -> GuestVmm {
    let stderr = dir.path(&format!("stderr-{name}.txt"));
    let err = std::fs::File::create(&stderr).expect("stderr file");
    let sock = dir.path(&format!("{name}.sock"));
    let child = KillOnDrop::spawn(
        net.host(host)
            .command(vmm_bin())
            .args(["--api-socket", &format!("path={}", sock.display())])
            .args([
                "--event-monitor",
                &format!(
                    "path={}",
                    dir.path(&format!("events-{name}.json")).display()
                ),
                "-v",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(err),
    );
    assert!(
        wait_until(Duration::from_secs(10), || sock.exists()),
        "no API socket"
    );
    GuestVmm {
        child,
        serial: dir.path(&format!("serial-{name}.txt")),
        stderr,
    }
}

/// `ch-remote ft-receive-backup` in the background (it answers once the
/// backup runs).
fn receive_backup(dir: &TempDir, name: &str, listen: &str, key: &Path, tap: &str) -> Child {
    receive_backup_with(dir, name, listen, key, tap, &file_tiebreaker(dir), "")
}

/// As [`receive_backup`], with tiebreaker `tb` and `extra` options.
fn receive_backup_with(
    dir: &TempDir,
    name: &str,
    listen: &str,
    key: &Path,
    tap: &str,
    tb: &str,
    extra: &str,
) -> Child {
    Command::new(common::ch_remote_bin())
        .arg("--api-socket")
        .arg(dir.path(&format!("{name}.sock")))
        .args([
            "ft-receive-backup",
            listen,
            &format!(
                "key={},tiebreaker={tb},net_taps={tap},serial={}{extra}",
                key.display(),
                dir.path(&format!("serial-{name}.txt")).display()
            ),
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn ch-remote")
}

fn add_backup(dir: &TempDir, sock: &str, peer: &str, key: &Path) -> std::process::Output {
    add_backup_with(dir, sock, peer, key, &file_tiebreaker(dir), "")
}

/// As [`add_backup`], with tiebreaker `tb` and `extra` options.
fn add_backup_with(
    dir: &TempDir,
    sock: &str,
    peer: &str,
    key: &Path,
    tb: &str,
    extra: &str,
) -> std::process::Output {
    ch_remote(
        &dir.path(sock),
        &[
            "ft-add-backup",
            &format!("peer={peer},key={},tiebreaker={tb}{extra}", key.display()),
        ],
    )
}

fn wait_child(mut c: Child) -> std::process::Output {
    let ok = wait_until(Duration::from_secs(60), || {
        c.try_wait().ok().flatten().is_some()
    });
    if !ok {
        let _ = c.kill();
    }
    c.wait_with_output().expect("ch-remote output")
}

fn info(dir: &TempDir, sock: &str) -> serde_json::Value {
    let (code, body) = api(&dir.path(sock), "GET", "vm.info", None);
    assert_eq!(code, 200, "{body}");
    serde_json::from_str(&body).expect("vm.info JSON")
}

/// The `seeded` event's pause (ms) and bytes sent.
fn seeded(events: &Path) -> (f64, u64) {
    let text = std::fs::read_to_string(events).unwrap_or_default();
    let at = text
        .find("\"event\": \"seeded\"")
        .unwrap_or_else(|| panic!("no seeded event in {}", events.display()));
    let object = &text[at..];
    let object = &object[..object.find('}').unwrap_or(object.len())];
    let field = |k: &str| -> String {
        object
            .split(&format!("\"{k}\": \""))
            .nth(1)
            .and_then(|r| r.split('"').next())
            .unwrap_or_else(|| panic!("no {k} in {object}"))
            .to_string()
    };
    (
        field("pause_ms").parse().expect("pause_ms"),
        field("bytes").parse().expect("bytes"),
    )
}

/// FT VMotion of the VM behind `from` (its API socket and VMM) to the
/// empty VMM `to` (its name and VMM), listening at `listen` on `host`,
/// while a verified KV stream runs: both `ch-remote` calls succeed.
/// Returns the stream's report.
fn vmotion_under_stream(
    net: &PairNet,
    dir: &TempDir,
    from: (&str, &GuestVmm),
    to: (&str, &GuestVmm),
    (listen, host): (&str, Host),
    key: &Path,
) -> StreamReport {
    let recv = receive_backup(dir, to.0, listen, key, &net.links(host).tap);
    let (report, added) = std::thread::scope(|scope| {
        let stream = scope.spawn(|| stream_through(net, 4.0, None));
        std::thread::sleep(Duration::from_millis(1500));
        let added = add_backup(dir, from.0, listen, key);
        (stream.join().expect("stream").0, added)
    });
    let recv = wait_child(recv);
    assert!(
        added.status.success(),
        "ft-add-backup to {}: {}\n{}",
        to.0,
        text(&added.stderr),
        from.1.stderr_text()
    );
    assert!(
        recv.status.success(),
        "ft-receive-backup on {}: {}\n{}",
        to.0,
        text(&recv.stderr),
        to.1.stderr_text()
    );
    report
}

/// A KV guest started without fault tolerance on host A, then protected
/// by FT VMotion to an empty VMM on host B while a verified stream runs.
struct Protected {
    primary: GuestVmm,
    backup: GuestVmm,
    /// The pair's key file.
    key: PathBuf,
    /// The backup's channel address.
    listen_b: String,
    /// The stream across the FT VMotion.
    report: StreamReport,
}

fn protect_kv_guest(net: &PairNet, dir: &TempDir) -> Protected {
    let key = write_key(dir);
    let s = kv_setup(dir, file_tiebreaker(dir), false);
    let disk: PathBuf = s.disks.as_ref().expect("disk").0.clone();
    let mut primary = start_plain(net, dir, &disk);
    primary.wait_serial("kv: listening on", Duration::from_secs(60));
    let backup = start_empty(net, Host::B, dir, "backup");
    let listen_b = format!("tcp:{LOG_B}:{CHANNEL_PORT}");
    let report = vmotion_under_stream(
        net,
        dir,
        ("primary.sock", &primary),
        ("backup", &backup),
        (&listen_b, Host::B),
        &key,
    );
    Protected {
        primary,
        backup,
        key,
        listen_b,
        report,
    }
}

/// `kill -9` of `victim` during a verified stream: nothing lost, no
/// reset, and `survivor` (named `name`) went live.
fn fail_over(
    net: &PairNet,
    dir: &TempDir,
    victim: &mut GuestVmm,
    (survivor, name): (&mut GuestVmm, &str),
    which: &str,
) {
    let (report, _) = stream_through(net, 5.0, Some((victim, 150)));
    eprintln!("ft_vmotion: {which} failover: {report}");
    assert!(!report.reset(), "reset: {report}");
    assert!(report.ok(), "{report}: {:?}", report.bad_keys);
    assert!(survivor.child.running(), "{}", survivor.stderr_text());
    let events = ft_events(&dir.path(&format!("events-{name}.json")));
    assert!(events.iter().any(|e| e == "go-live"), "{events:?}");
}

#[test]
fn vmotion_then_two_failovers_in_a_row_lose_no_acknowledged_set() {
    let dir = TempDir::new("ftvmotion");
    let _keep = KeepOnFailure(dir.0.clone(), "two-failovers");
    let net = PairNet::new();
    let names = net.names();
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
    assert!(!again.status.success());
    assert!(
        text(&again.stderr).contains("already protected"),
        "{}",
        text(&again.stderr)
    );

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
    drop((primary, backup, third));
    drop(net);
    assert_clean(&names);
}

#[test]
fn refused_vmotions_leave_the_running_vm_unharmed() {
    let dir = TempDir::new("ftvmotion-refuse");
    let _keep = KeepOnFailure(dir.0.clone(), "refusals");
    let net = PairNet::new();
    let names = net.names();
    let key = write_key(&dir);
    let s = kv_setup(&dir, file_tiebreaker(&dir), false);
    let disk: PathBuf = s.disks.as_ref().expect("disk").0.clone();
    let mut primary = start_plain(&net, &dir, &disk);
    primary.wait_serial("kv: listening on", Duration::from_secs(60));
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
    assert!(!paused.status.success());
    assert!(
        text(&paused.stderr).contains("not running"),
        "{}",
        text(&paused.stderr)
    );
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
    assert!(!wrong.status.success());
    assert!(
        text(&wrong.stderr).contains("wrong key"),
        "{}",
        text(&wrong.stderr)
    );
    assert!(running(&dir));
    let (report, _) = stream_through(&net, 1.0, None);
    assert!(report.ok(), "{report}");

    // Another configuration: the backup's tap list does not match.
    drop(recv);
    drop(backup);
    let backup = start_empty(&net, Host::B, &dir, "backup2");
    let mismatch = Command::new(common::ch_remote_bin())
        .arg("--api-socket")
        .arg(dir.path("backup2.sock"))
        .args([
            "ft-receive-backup",
            &format!(
                "listen={listen_b},key={},tiebreaker={},net_taps=a;b",
                key.display(),
                file_tiebreaker(&dir)
            ),
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn ch-remote");
    let refused = add_backup(&dir, "primary.sock", &listen_b, &key);
    assert!(!refused.status.success());
    assert!(
        text(&refused.stderr).contains("2 taps given"),
        "{}",
        text(&refused.stderr)
    );
    assert!(running(&dir));
    assert!(info(&dir, "primary.sock").get("fault_tolerance").is_none());
    let (report, _) = stream_through(&net, 1.0, None);
    assert!(report.ok(), "{report}");
    drop(mismatch);
    drop((primary, backup));
    drop(net);
    assert_clean(&names);
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
    let dir = TempDir::new("ftvmotion-sep");
    let _keep = KeepOnFailure(dir.0.clone(), "separate");
    let net = PairNet::new();
    let names = net.names();
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
    assert!(
        added.status.success(),
        "ft-add-backup: {}\n{}",
        text(&added.stderr),
        primary.stderr_text()
    );
    assert!(
        recv.status.success(),
        "ft-receive-backup: {}\n{}",
        text(&recv.stderr),
        backup.stderr_text()
    );
    eprintln!("ft_vmotion: separate disks, stream during the seeding: {report}");
    assert!(!report.reset(), "reset: {report}");
    assert!(report.ok(), "{report}: {:?}", report.bad_keys);
    // Quiescent (the stream is over): both images hold the same bytes.
    images_become_equal(&disk, &copy, Duration::from_secs(10))
        .unwrap_or_else(|why| panic!("the copies differ after the seed: {why}"));
    let (pause, bytes) = seeded(&dir.path("events-primary.json"));
    let seed = info(&dir, "primary.sock")["fault_tolerance"]["seed"].clone();
    eprintln!("ft_vmotion: separate disks: pause {pause} ms, {bytes} bytes, seed {seed}");
    // The image's data went in round 0 (a sparse 16 MiB image: not all of
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
    drop((primary, backup));
    drop(etcd);
    drop(net);
    assert_clean(&names);
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

/// The `seed-progress` events: (round, pages found dirty at its start).
fn seed_progress(events: &Path) -> Vec<(u64, u64)> {
    let text = std::fs::read_to_string(events).unwrap_or_default();
    serde_json::Deserializer::from_str(&text)
        .into_iter::<serde_json::Value>()
        .map_while(Result::ok)
        .filter(|e| e["event"] == "seed-progress")
        .filter_map(|e| {
            let n = |k: &str| e["properties"][k].as_str()?.parse::<u64>().ok();
            Some((n("round")?, n("dirty_pages")?))
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
    let dir = TempDir::new("ftvmotion-dirty");
    let _keep = KeepOnFailure(dir.0.clone(), "dirty");
    let net = PairNet::new();
    let names = net.names();
    let key = write_key(&dir);
    let guest = test_guest().to_str().expect("utf-8").to_string();
    let args = [
        "--kernel".to_string(),
        guest,
        "--cmdline".into(),
        "workload=dirty mib=8 pages=64 hz=250".into(),
        "--memory".into(),
        "size=256M".into(),
        "--api-socket".into(),
        format!("path={}", dir.path("primary.sock").display()),
        "--event-monitor".into(),
        format!("path={}", dir.path("events-primary.json").display()),
        "-v".into(),
    ];
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut primary = net.spawn_vmm(Host::A, &dir.0, "primary", &args);
    primary.wait_serial("dirty: pass=2 ok", Duration::from_secs(60));

    let mut backup = start_empty(&net, Host::B, &dir, "backup");
    let listen_b = format!("tcp:{LOG_B}:{CHANNEL_PORT}");
    let recv = Command::new(common::ch_remote_bin())
        .arg("--api-socket")
        .arg(dir.path("backup.sock"))
        .args([
            "ft-receive-backup",
            &listen_b,
            &format!(
                "key={},tiebreaker={},serial={}",
                key.display(),
                file_tiebreaker(&dir),
                backup.serial.display()
            ),
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn ch-remote");
    let added = add_backup_with(
        &dir,
        "primary.sock",
        &listen_b,
        &key,
        &file_tiebreaker(&dir),
        ",downtime_ms=0,max_iterations=4",
    );
    let recv = wait_child(recv);
    assert!(
        added.status.success(),
        "ft-add-backup: {}\n{}",
        text(&added.stderr),
        primary.stderr_text()
    );
    assert!(
        recv.status.success(),
        "ft-receive-backup: {}\n{}",
        text(&recv.stderr),
        backup.stderr_text()
    );
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
    drop((primary, backup));
    drop(net);
    assert_clean(&names);
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
    let dir = TempDir::new("ftvmotion-diverge");
    let _keep = KeepOnFailure(dir.0.clone(), "divergence");
    let net = PairNet::new();
    let names = net.names();
    let Protected {
        mut primary,
        mut backup,
        report,
        ..
    } = protect_kv_guest(&net, &dir);
    assert!(report.ok(), "{report}: {:?}", report.bad_keys);
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
    drop((primary, backup));
    drop(net);
    assert_clean(&names);
}

/// The same repair for a pair started at boot (`mode=primary` and
/// `mode=backup`): the backup waits for a seed with its own configuration's
/// settings, the primary seeds it with its own.
#[test]
fn a_boot_time_pair_repairs_a_divergence_too() {
    let dir = TempDir::new("ftpair-diverge");
    let _keep = KeepOnFailure(dir.0.clone(), "boot-divergence");
    let net = PairNet::new();
    let names = net.names();
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
    drop(pair);
    drop(net);
    assert_clean(&names);
}

/// Bounded repair: a diverged backup whose VMM dies before it is seeded
/// again is tried three times, then the VM stays live-unprotected and
/// serving, and `vm.info` says so.
#[test]
fn a_diverged_backup_that_does_not_come_back_leaves_the_vm_unprotected() {
    let dir = TempDir::new("ftvmotion-abandon");
    let _keep = KeepOnFailure(dir.0.clone(), "abandon");
    let net = PairNet::new();
    let names = net.names();
    let Protected {
        mut primary,
        mut backup,
        report,
        ..
    } = protect_kv_guest(&net, &dir);
    assert!(report.ok(), "{report}: {:?}", report.bad_keys);
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
    drop((primary, backup));
    drop(net);
    assert_clean(&names);
}
