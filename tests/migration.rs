// Copyright 2026 The ft-cloud-hypervisor authors.
// SPDX-License-Identifier: Apache-2.0

//! Live migration (`vm.send-migration`, `vm.receive-migration`,
//! `ch-remote send-migration|receive-migration`) between two real VMM
//! processes on KVM with the test guest: the migrated guest continues
//! where it was (the compute result of an uninterrupted run, tick lines
//! that go on counting, its disk's data, memory filled with
//! incompressible pages), over a unix socket and over TCP
//! in a network namespace, with and without a key; a wrong key, a damaged
//! or other-version stream and bad requests are refused clearly, and the
//! source's guest keeps running unharmed.

mod common;

use std::io::{Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::api_vmm::{read, result_line, ticks, ApiVmm as Vmm, Console, COMPUTE};
use common::ftpair::{assert_clean, sparse_disk};
use common::netns::Netns;
use common::pair::{Host, PairNet, LOG_B};
use common::{ch_remote, linux, text, wait_until, TempDir};
use ft_kv_client::{run_stream, StreamConfig, StreamControl};

/// The guest reports a tick line whenever the tens of its tick count
/// change (a line may say 671 when two ticks arrived between two looks,
/// on a loaded host): the tens go up by one from line to line, without a
/// repeat or a restart.
fn tens_continue(ticks: &[u64]) -> bool {
    ticks.windows(2).all(|w| w[1] / 10 == w[0] / 10 + 1)
}

/// Receives on `dst` (`ch-remote receive-migration OPERAND`, which blocks
/// until the migration ended) in a thread; returns its join handle.
fn receive(dst: &Vmm, operand: String) -> std::thread::JoinHandle<std::process::Output> {
    let socket = dst.socket.clone();
    std::thread::spawn(move || ch_remote(&socket, &["receive-migration", &operand]))
}

/// Waits for `dst` to listen (its `migration-receive-ready` event).
fn wait_ready(dir: &TempDir, name: &str) {
    let events = dir.path(&format!("{name}.events"));
    assert!(
        wait_until(Duration::from_secs(20), || read(&events)
            .contains("migration-receive-ready")),
        "the destination did not listen"
    );
}

/// Migrates `src` to a new VMM `dst` over the unix socket `mig.sock` of
/// `dir`: the source's serial file `serial` is renamed to `before.txt`
/// first (the destination reopens, and truncates, the serial file by its
/// path, so the source's part goes on in the renamed file); `receive` and
/// `send` are the `ch-remote` operands (`URL` as a format, `{}` the
/// socket's path). Both calls must succeed and the source VMM exit, as
/// upstream's does once the guest runs on the destination. Returns the
/// destination and `send-migration`'s stderr (its progress).
fn migrate_over_unix(
    dir: &TempDir,
    src: &mut Vmm,
    serial: &Path,
    receive_url: &str,
    send_url: &str,
) -> (Vmm, String) {
    std::fs::rename(serial, dir.path("before.txt")).expect("rename the serial file");
    let dst = Vmm::start(dir, "dst", None, &[]);
    let mig = dir.path("mig.sock").display().to_string();
    let receiver = receive(&dst, receive_url.replace("{}", &mig));
    wait_ready(dir, "dst");
    let out = ch_remote(
        &src.socket,
        &["send-migration", &send_url.replace("{}", &mig)],
    );
    let progress = text(&out.stderr);
    assert!(out.status.success(), "send-migration: {progress}");
    let r = receiver.join().expect("receiver thread");
    assert!(r.status.success(), "receive-migration: {}", text(&r.stderr));
    src.wait_exit(Duration::from_secs(20));
    (dst, progress)
}

/// The serial output of an uninterrupted compute run.
fn uninterrupted_compute(dir: &TempDir) -> String {
    let full = dir.path("full.txt");
    Vmm::boot(dir, "full", None, COMPUTE, "128M", &full, &[])
        .wait_poweroff(Duration::from_secs(180));
    result_line(&read(&full)).expect("a result line")
}

/// Checks that the run split in `before` and `after` is the uninterrupted
/// one: its result, and tick lines that continue.
fn check_continued(before: &str, after: &str, expected: &str) {
    assert!(
        result_line(before).is_none(),
        "finished before the migration"
    );
    assert!(!after.contains("test-guest: ready"), "the guest restarted");
    assert_eq!(result_line(after).as_deref(), Some(expected), "{after}");
    let all: Vec<u64> = ticks(before).into_iter().chain(ticks(after)).collect();
    assert!(all.len() > 10, "{before}{after}");
    assert!(tens_continue(&all), "tick lines do not continue: {all:?}");
    assert!(!ticks(after).is_empty(), "no tick after the migration");
}

#[test]
fn compute_guest_migrates_over_a_unix_socket_and_continues() {
    let dir = TempDir::new("mig-compute");
    let expected = uninterrupted_compute(&dir);

    let serial = dir.path("serial.txt");
    let mut src = Vmm::boot(&dir, "src", None, COMPUTE, "128M", &serial, &[]);
    assert!(wait_until(Duration::from_secs(30), || read(&serial)
        .contains("tick=50 ")));
    let (dst, progress) = migrate_over_unix(
        &dir,
        &mut src,
        &serial,
        "receiver_url=unix:{}",
        "destination_url=unix:{},downtime_ms=300",
    );
    assert!(progress.contains("migration:"), "no progress: {progress}");
    let events = read(&dir.path("src.events"));
    for phase in [
        "send-migration-started",
        "send-migration-precopy",
        "send-migration-stop-and-copy",
        "send-migration-completed",
    ] {
        assert!(events.contains(phase), "no {phase} event: {events}");
    }
    let info = dst.info();
    assert_eq!(info["state"], "Running");
    assert_eq!(info["migration"]["phase"], "completed");
    assert_eq!(info["migration"]["role"], "destination");
    dst.wait_poweroff(Duration::from_secs(180));
    check_continued(&read(&dir.path("before.txt")), &read(&serial), &expected);
}

/// The `fill pass=<k>` lines of a `workload=dirty fill=` guest's serial
/// output: (pass, whether every filled page held its value). Only whole
/// lines count (the UART writes a byte per exit: the last one may be cut).
fn fill_passes(serial: &str) -> Vec<(u64, bool)> {
    let whole = serial.rsplit_once('\n').map_or("", |(lines, _)| lines);
    whole
        .lines()
        .filter_map(|l| l.strip_prefix("dirty: fill pass="))
        .filter_map(|rest| {
            let (pass, outcome) = rest.split_once(' ')?;
            Some((pass.parse().ok()?, outcome == "ok"))
        })
        .collect()
}

/// A guest whose memory is nearly all full, incompressible pages
/// (`workload=dirty fill=96`: 96 MiB of pseudo-random words above its
/// heap, then 64 of those pages read whole at each 100 Hz tick, and 64
/// pages of a 1 MiB buffer written) migrates over a unix socket: the
/// pre-copy sends every filled page (more than 96 MiB on the wire, where
/// the other workloads' mostly zero memory sends a few MiB), and the
/// destination's guest goes on finding each filled page whole, pass after
/// pass, and each of its own writes.
#[test]
fn a_guest_with_full_memory_migrates_and_finds_every_page() {
    let dir = TempDir::new("mig-full");
    let serial = dir.path("serial.txt");
    let mut src = Vmm::boot(
        &dir,
        "src",
        None,
        "workload=dirty mib=1 pages=64 hz=100 fill=96",
        "128M",
        &serial,
        &[],
    );
    assert!(
        wait_until(Duration::from_secs(60), || !fill_passes(&read(&serial))
            .is_empty()),
        "no fill pass before the migration: {}",
        read(&serial)
    );
    let (dst, _) = migrate_over_unix(
        &dir,
        &mut src,
        &serial,
        "receiver_url=unix:{}",
        "destination_url=unix:{}",
    );
    let events = read(&dir.path("src.events"));
    let completed = serde_json::Deserializer::from_str(&events)
        .into_iter::<serde_json::Value>()
        .map_while(Result::ok)
        .find(|e| e["event"] == "send-migration-completed")
        .unwrap_or_else(|| panic!("no send-migration-completed event: {events}"));
    let sent: u64 = completed["properties"]["bytes_sent"]
        .as_str()
        .and_then(|b| b.parse().ok())
        .unwrap_or(0);
    assert!(sent > 96 << 20, "{completed}");
    // Two whole passes over the filled pages on the destination.
    assert!(
        wait_until(Duration::from_secs(90), || fill_passes(&read(&serial))
            .len()
            >= 3),
        "the destination's guest checked too few filled pages: {}",
        read(&serial)
    );
    // The serial stream goes on in the destination's file where the
    // source's ended (a line may be cut between the two): joined, its
    // passes count up from 0 without a gap, each finding every page whole.
    let before = read(&dir.path("before.txt"));
    let after = read(&serial);
    assert!(!after.contains("test-guest: ready"), "the guest restarted");
    let all = format!("{before}{after}");
    assert!(!all.contains("mismatches"), "a page changed:\n{all}");
    let passes = fill_passes(&all);
    assert!(
        passes
            .iter()
            .zip(0..)
            .all(|(&(pass, ok), n)| ok && pass == n),
        "fill passes do not continue, or found a page changed: {passes:?}"
    );
    dst.shutdown_vmm();
}

/// Both VMMs in a namespace of their own, the migration over TCP on its
/// loopback, encrypted with a key; a source with the wrong key is refused
/// first, and its guest runs on.
#[test]
fn ticks_guest_migrates_over_tcp_with_a_key_and_a_wrong_key_is_refused() {
    let dir = TempDir::new("mig-tcp-key");
    let ns = Netns::new("mig");
    let key = dir.path("key");
    let other = dir.path("other-key");
    std::fs::write(&key, [7u8; 32]).expect("key");
    std::fs::write(&other, [9u8; 32]).expect("other key");
    for k in [&key, &other] {
        let mut p = std::fs::metadata(k).expect("key").permissions();
        std::os::unix::fs::PermissionsExt::set_mode(&mut p, 0o600);
        std::fs::set_permissions(k, p).expect("key mode");
    }
    let serial = dir.path("serial.txt");
    let mut src = Vmm::boot(
        &dir,
        "src",
        Some(&ns),
        "workload=ticks count=400 hz=100",
        "128M",
        &serial,
        &[],
    );
    assert!(wait_until(Duration::from_secs(30), || read(&serial)
        .contains("test-guest: ready")));
    let dst = Vmm::start(&dir, "dst", Some(&ns), &[]);
    let receiver = receive(
        &dst,
        format!("receiver_url=tcp:127.0.0.1:7411,key={}", key.display()),
    );
    wait_ready(&dir, "dst");
    // The wrong key: refused at the handshake, on both sides.
    let out = ch_remote(
        &src.socket,
        &[
            "send-migration",
            &format!("destination_url=tcp:127.0.0.1:7411,key={}", other.display()),
        ],
    );
    assert!(!out.status.success());
    let e = text(&out.stderr);
    assert!(e.contains("handshake"), "{e}");
    let r = receiver.join().expect("receiver thread");
    assert!(!r.status.success(), "a wrong key was accepted");
    assert!(text(&r.stderr).contains("handshake"), "{}", text(&r.stderr));
    assert_eq!(src.info()["state"], "Running");
    assert_eq!(dst.api("GET", "vm.info", None).0, 404, "a VM was left");

    // The right key.
    let receiver = receive(
        &dst,
        format!("receiver_url=tcp:127.0.0.1:7412,key={}", key.display()),
    );
    std::thread::sleep(Duration::from_millis(300));
    std::fs::rename(&serial, dir.path("before.txt")).expect("rename");
    let out = ch_remote(
        &src.socket,
        &[
            "send-migration",
            &format!("destination_url=tcp:127.0.0.1:7412,key={}", key.display()),
        ],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let r = receiver.join().expect("receiver thread");
    assert!(r.status.success(), "{}", text(&r.stderr));
    src.wait_exit(Duration::from_secs(20));
    assert_eq!(dst.info()["migration"]["encrypted"], true);
    dst.wait_poweroff(Duration::from_secs(60));
    assert_eq!(read(&serial).trim(), "ticks=400");
    assert!(
        !read(&dir.path("before.txt")).contains("ticks="),
        "finished before the migration"
    );
}

/// Guest memory written while the disk workload runs, and its disk's
/// contents, verified by the guest after the migration.
#[test]
fn disk_workload_verifies_after_migration() {
    let dir = TempDir::new("mig-disk");
    let disk = dir.path("disk.img");
    std::fs::File::create(&disk)
        .and_then(|f| f.set_len(512 << 20))
        .expect("create the disk image");
    let serial = dir.path("serial.txt");
    let mut src = Vmm::boot(
        &dir,
        "src",
        None,
        "workload=disk mib=384 flushes=64",
        "128M",
        &serial,
        &["--disk".into(), format!("path={}", disk.display())],
    );
    assert!(wait_until(Duration::from_secs(30), || read(&serial)
        .contains("test-guest: ready")));
    std::thread::sleep(Duration::from_millis(400));
    // The bare URLs of older releases.
    let (dst, _) = migrate_over_unix(&dir, &mut src, &serial, "unix:{}", "unix:{}");
    assert!(
        !read(&dir.path("before.txt")).contains("disk="),
        "finished before the migration"
    );
    dst.wait_poweroff(Duration::from_secs(180));
    let after = read(&serial);
    assert!(after.contains("disk=ok"), "{after}");
}

/// A fake destination that answers the source's preamble with `answer`,
/// then reads until the source closes.
fn fake_destination(path: &Path, answer: Vec<u8>) -> std::thread::JoinHandle<()> {
    let listener = UnixListener::bind(path).expect("bind");
    std::thread::spawn(move || {
        let (mut s, _) = listener.accept().expect("accept");
        let mut preamble = [0u8; 16];
        s.read_exact(&mut preamble).expect("preamble");
        assert_eq!(&preamble[..8], b"FTMIGRAT");
        s.write_all(&answer).expect("answer");
        let mut rest = Vec::new();
        let _ = s.read_to_end(&mut rest);
    })
}

fn preamble(version: u32) -> Vec<u8> {
    let mut p = b"FTMIGRAT".to_vec();
    p.extend_from_slice(&version.to_le_bytes());
    let crc = crc32fast::hash(&p);
    p.extend_from_slice(&crc.to_le_bytes());
    p
}

/// Waits for the source's migration to end as failed; returns its error.
fn wait_failed(src: &Vmm) -> String {
    let mut error = String::new();
    assert!(
        wait_until(Duration::from_secs(20), || {
            let m = &src.info()["migration"];
            error = m["error"].as_str().unwrap_or_default().to_string();
            m["phase"] == "failed"
        }),
        "the migration did not fail"
    );
    error
}

#[test]
fn other_version_and_damaged_streams_are_refused_and_the_source_runs_on() {
    let dir = TempDir::new("mig-refuse");
    let expected = uninterrupted_compute(&dir);
    let serial = dir.path("serial.txt");
    let src = Vmm::boot(&dir, "src", None, COMPUTE, "128M", &serial, &[]);
    assert!(wait_until(Duration::from_secs(30), || read(&serial)
        .contains("tick=20 ")));

    // A destination of another protocol version.
    let fake = dir.path("v2.sock");
    let t = fake_destination(&fake, preamble(2));
    let out = ch_remote(
        &src.socket,
        &[
            "send-migration",
            &format!("destination_url=unix:{}", fake.display()),
        ],
    );
    assert!(!out.status.success());
    let e = text(&out.stderr);
    assert!(e.contains("version 2") && e.contains("version 1"), "{e}");
    assert!(wait_failed(&src).contains("version 2"));
    t.join().expect("fake destination");

    // A destination whose answer to the configuration is damaged (a
    // flipped CRC bit).
    let fake = dir.path("crc.sock");
    let mut answer = preamble(1);
    answer.extend_from_slice(&[0x80, 0, 0, 0, 0, 0, 0, 0]);
    answer.extend_from_slice(&(crc32fast::hash(&[0x80, 0, 0, 0, 0]) ^ 1).to_le_bytes());
    let t = fake_destination(&fake, answer);
    let out = ch_remote(
        &src.socket,
        &[
            "send-migration",
            &format!("destination_url=unix:{}", fake.display()),
        ],
    );
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("checksum"),
        "{}",
        text(&out.stderr)
    );
    t.join().expect("fake destination");
    assert_eq!(src.info()["state"], "Running");

    // The destination refuses a source of another version, and a damaged
    // message, and has no VM afterwards.
    let dst = Vmm::start(&dir, "dst", None, &[]);
    for (name, payload) in [
        ("v2", preamble(2)),
        ("crc", {
            let mut p = preamble(1);
            // A Config message with a bad CRC.
            p.extend_from_slice(&[1, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, b'{', b'}']);
            p
        }),
    ] {
        let mig = dir.path(&format!("dst-{name}.sock"));
        let receiver = receive(&dst, format!("receiver_url=unix:{}", mig.display()));
        assert!(wait_until(Duration::from_secs(20), || mig.exists()));
        let mut s = UnixStream::connect(&mig).expect("connect to the destination");
        s.write_all(&payload).expect("send");
        let mut answer = Vec::new();
        s.set_read_timeout(Some(Duration::from_secs(20))).ok();
        let _ = s.read_to_end(&mut answer);
        let r = receiver.join().expect("receiver thread");
        assert!(!r.status.success());
        let e = text(&r.stderr);
        let want = if name == "v2" {
            "version 2"
        } else {
            "checksum"
        };
        assert!(e.contains(want), "{name}: {e}");
        // The source learns why (an Error message after the preamble).
        assert!(text(&answer).contains(want), "{name}: {answer:?}");
        assert_eq!(dst.api("GET", "vm.info", None).0, 404, "a VM was left");
    }

    // The source's guest was never harmed: it finishes with the result of
    // an uninterrupted run.
    src.wait_poweroff(Duration::from_secs(180));
    let out = read(&serial);
    assert_eq!(result_line(&out).as_deref(), Some(expected.as_str()));
    assert!(tens_continue(&ticks(&out)), "{out}");
}

#[test]
fn bad_requests_are_refused_clearly() {
    let dir = TempDir::new("mig-bad");
    let empty = Vmm::start(&dir, "empty", None, &[]);
    // No VM to send.
    let (status, body) = empty.api(
        "PUT",
        "vm.send-migration",
        Some(r#"{"destination_url":"unix:/tmp/x"}"#),
    );
    assert_eq!(status, 404, "{body}");
    // Bad JSON, a missing field, a wrong type.
    for body in [
        "{nope",
        "{}",
        r#"{"destination_url":"unix:/x","downtime_ms":"fast"}"#,
    ] {
        let (status, answer) = empty.api("PUT", "vm.send-migration", Some(body));
        assert_eq!(status, 400, "{body}: {answer}");
        assert!(answer.contains("Failed to deserialize JSON"), "{answer}");
    }
    assert_eq!(empty.api("PUT", "vm.receive-migration", Some("{}")).0, 400);
    // Bad URLs.
    for url in [
        "file:///x",
        "tcp:nohost",
        "tcp:h:99999",
        "unix:",
        "1.2.3.4:5",
    ] {
        let body = format!(r#"{{"receiver_url":"{url}"}}"#);
        let (status, answer) = empty.api("PUT", "vm.receive-migration", Some(&body));
        assert_eq!(status, 500, "{url}: {answer}");
        assert!(answer.contains("tcp:HOST:PORT"), "{url}: {answer}");
    }
    // A key over a unix socket.
    let (status, answer) = empty.api(
        "PUT",
        "vm.receive-migration",
        Some(r#"{"receiver_url":"unix:/tmp/x","key":"/k"}"#),
    );
    assert_eq!(status, 500);
    assert!(answer.contains("needs a tcp: URL"), "{answer}");

    let serial = dir.path("serial.txt");
    let src = Vmm::boot(&dir, "src", None, "workload=idle", "128M", &serial, &[]);
    assert!(wait_until(Duration::from_secs(30), || read(&serial)
        .contains("test-guest: ready")));
    // Receiving into a VMM that has a VM.
    let (status, answer) = src.api(
        "PUT",
        "vm.receive-migration",
        Some(r#"{"receiver_url":"unix:/tmp/never"}"#),
    );
    assert_eq!(status, 500);
    assert!(answer.contains("VM is already created"), "{answer}");
    // Nobody listening.
    let out = ch_remote(
        &src.socket,
        &[
            "send-migration",
            "destination_url=unix:/nonexistent/mig.sock",
        ],
    );
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("cannot connect to the migration destination"),
        "{}",
        text(&out.stderr)
    );
    // ch-remote's own refusals (exit 2).
    let out = ch_remote(
        &src.socket,
        &["send-migration", "destination_url=unix:/x,bogus=1"],
    );
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert_eq!(src.info()["state"], "Running");
}

/// The KV guest on host A serves a verified stream from the client's
/// namespace; mid-stream it migrates over TCP (the hosts' direct link) to
/// host B, whose tap (of the same name, as the configuration says) is on
/// host B's bridge: the destination's RARP moves the guest's MAC on the
/// LAN, the client's TCP connection goes on, and no acknowledged SET is
/// lost.
#[test]
fn kv_guest_migrates_between_hosts_under_a_verified_stream() {
    let dir = TempDir::new("mig-kv");
    let net = PairNet::new();
    let names = net.names();
    let tap = net.a.tap.clone();
    for args in [
        format!("tuntap add dev {tap} mode tap vnet_hdr"),
        format!("link set {tap} master {}", net.b.bridge),
        format!("link set {tap} up"),
    ] {
        let ok = Command::new("ip")
            .args(["-n", &net.host_b.0])
            .args(args.split(' '))
            .status()
            .expect("ip")
            .success();
        assert!(ok, "ip -n {} {args}", net.host_b.0);
    }
    let disk = sparse_disk(dir.path("kv.img"));
    let serial = dir.path("serial.txt");
    let mut src = Vmm::boot(
        &dir,
        "src",
        Some(&net.host_a),
        &net.kv_cmdline(),
        "128M",
        &serial,
        &[
            "--disk".into(),
            format!("path={}", disk.display()),
            "--net".into(),
            net.guest_net(Host::A),
        ],
    );
    assert!(wait_until(Duration::from_secs(60), || read(&serial)
        .contains("kv: listening on")));
    let dst = Vmm::start(&dir, "dst", Some(&net.host_b), &[]);
    let control = std::sync::Arc::new(StreamControl::default());
    let mut config = StreamConfig::new(net.kv_addr());
    config.duration = Some(Duration::from_secs(6));
    config.get_every = 4;
    config.prefix = format!("mig{}", net.tag);
    config.connect_timeout = Duration::from_secs(20);
    config.control = Some(control.clone());
    let report = std::thread::scope(|scope| {
        let client = &net.client;
        let cfg = &config;
        let t = scope.spawn(move || client.run(|| run_stream(cfg)));
        assert!(
            wait_until(Duration::from_secs(60), || control.acked() >= 300
                || t.is_finished()),
            "the stream did not start"
        );
        assert!(!t.is_finished(), "the stream ended early");
        let receiver = receive(&dst, format!("receiver_url=tcp:{LOG_B}:7500"));
        wait_ready(&dir, "dst");
        std::fs::rename(&serial, dir.path("before.txt")).expect("rename");
        let acked_before = control.acked();
        let out = ch_remote(
            &src.socket,
            &[
                "send-migration",
                &format!("destination_url=tcp:{LOG_B}:7500,downtime_ms=100"),
            ],
        );
        assert!(out.status.success(), "{}", text(&out.stderr));
        eprintln!("migration: {}", text(&out.stderr));
        let r = receiver.join().expect("receiver thread");
        assert!(r.status.success(), "{}", text(&r.stderr));
        src.wait_exit(Duration::from_secs(20));
        let report = t
            .join()
            .expect("stream thread")
            .unwrap_or_else(|e| panic!("stream: {e}"));
        assert!(
            report.acked > acked_before + 100,
            "the stream did not go on after the migration: {report}"
        );
        report
    });
    eprintln!("migration under a KV stream: {report}");
    assert!(
        !report.reset(),
        "the client's connection was reset: {report}"
    );
    assert!(report.ok(), "{report}: {:?}", report.bad_keys);
    let v = report.verification.as_ref().expect("verified");
    assert_eq!(v.checked, report.acked, "{report}");
    assert_eq!(dst.info()["state"], "Running");
    drop(dst);
    drop(src);
    drop(net);
    assert_clean(&names);
}

/// The checksum of an `md5sum /fill` answer in `console` (not the echoed
/// command).
fn md5_line(console: &str) -> Option<String> {
    console.lines().find_map(|l| {
        let mut f = l.trim_end_matches('\r').split_whitespace();
        let (sum, name) = (f.next()?, f.next()?);
        (name == "/fill" && sum.len() == 32 && sum.chars().all(|c| c.is_ascii_hexdigit()))
            .then(|| sum.to_string())
    })
}

/// The minimal Linux guest migrates with a file of random bytes in its
/// RAM-backed root: after the migration the shell answers on the
/// destination's console and the file's checksum is the same.
#[test]
fn linux_guest_shell_answers_after_migration() {
    let dir = TempDir::new("mig-linux");
    let mut src = Console::start(
        &dir,
        "src",
        &linux::boot_args("BZIMAGE", &linux::tsc_cmdline()),
    );
    src.wait_for("linux-guest: ready", 0, Duration::from_secs(300));
    // 256 KiB: the guest kernel's ChaCha20 runs at CPL0, which this host
    // emulates; 2 MB of it took over two minutes on a loaded machine.
    let at = src.send("head -c 262144 /dev/urandom > /fill; md5sum /fill\n");
    let mut sum = None;
    assert!(
        wait_until(Duration::from_secs(120), || {
            sum = md5_line(&src.output.text()[at..]);
            sum.is_some()
        }),
        "no checksum; console:\n{}",
        src.output.text()
    );
    let sum = sum.unwrap_or_default();

    let mut dst = Console::start(&dir, "dst", &[]);
    let mig = dir.path("mig.sock");
    let receiver = receive(&dst.vmm, format!("receiver_url=unix:{}", mig.display()));
    wait_ready(&dir, "dst");
    let out = ch_remote(
        &src.vmm.socket,
        &[
            "send-migration",
            &format!("destination_url=unix:{}", mig.display()),
        ],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    eprintln!("linux migration: {}", text(&out.stderr));
    let r = receiver.join().expect("receiver thread");
    assert!(r.status.success(), "{}", text(&r.stderr));
    src.vmm.wait_exit(Duration::from_secs(20));
    let at = dst.send("echo mig-$((6*7))-rated; md5sum /fill\n");
    dst.wait_for("mig-42-rated", at, Duration::from_secs(60));
    assert!(
        wait_until(Duration::from_secs(60), || md5_line(
            &dst.output.text()[at..]
        )
        .is_some()),
        "no checksum on the destination; console:\n{}",
        dst.output.text()
    );
    assert_eq!(
        md5_line(&dst.output.text()[at..]).as_deref(),
        Some(sum.as_str()),
        "the file changed in the migration"
    );
    dst.send("poweroff -f\n");
    dst.vmm.wait_poweroff(Duration::from_secs(60));
}
