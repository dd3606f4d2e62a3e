// Copyright 2026 The ft-cloud-hypervisor authors.
// SPDX-License-Identifier: Apache-2.0

//! Record and replay of the test guest on the real VMM and KVM
//! (`--fault-tolerance`): serial output byte for byte and final state
//! digests must match, for every workload. Altered, truncated, corrupt and
//! foreign logs are in `log_refusals.rs`.

mod common;

use std::path::Path;
use std::time::Duration;

use common::ft::{
    args, assert_replayed_to_the_end, checkpoints, read_log, record_and_replay, run_ft, write_log,
    TICKS, TIMEOUT,
};
use common::netns::Netns;
use common::{run_vmm, test_guest, text, TempDir};
use ft_backend::{Entry, Event};

#[test]
fn ticks_replay_exactly() {
    let dir = TempDir::new("rr-ticks");
    let (rec, _) = record_and_replay("workload=ticks count=30 hz=200", &dir);
    assert!(text(&rec.stdout).contains("ticks=30"));
}

#[test]
fn compute_with_a_slow_timer_replays_exactly() {
    let dir = TempDir::new("rr-slow");
    let (rec, _) = record_and_replay("workload=compute steps=1000 hz=10", &dir);
    assert!(text(&rec.stdout).contains("result=a17ac4d60a6b3f89"));
}

#[test]
fn exits_workload_replays_exactly() {
    let dir = TempDir::new("rr-exits");
    record_and_replay("workload=exits count=2000", &dir);
}

/// A fast timer while the guest computes without exits: ticks are forced
/// in with micro-checkpoints, and replay still matches.
#[test]
fn compute_with_a_fast_timer_uses_checkpoints() {
    let dir = TempDir::new("rr-fast");
    let (rec, _) = record_and_replay("workload=compute steps=60000000 hz=1000", &dir);
    let out = text(&rec.stdout);
    assert!(out.contains("tick="), "no tick seen while computing: {out}");
    assert!(checkpoints(&dir.path("run.log")) > 0);
}

/// The pages a guest writes again between checkpoints (the tick
/// handler's stack and counters, under a fast timer) stay writable: the
/// recording leaves them out of the dirty log's re-protection (KVM's manual
/// protection, `vmm/src/vcpu/ft/dirty_pages.rs`) and carries them in every
/// checkpoint, and replay still matches. Its summary counts the checkpoint
/// pages that were kept ones.
#[test]
fn pages_rewritten_between_checkpoints_stay_writable_and_replay_exactly() {
    let dir = TempDir::new("rr-hot");
    let (rec, _) = record_and_replay("workload=compute steps=60000000 hz=1000", &dir);
    let err = text(&rec.stderr);
    let kept = err
        .lines()
        .find_map(|l| {
            l.split("; ")
                .nth(1)?
                .strip_suffix(" checkpoint pages were kept ones")?
                .parse::<u64>()
                .ok()
        })
        .unwrap_or_else(|| panic!("no hot-page summary in:\n{err}"));
    assert!(kept > 0, "no checkpoint page was a kept one:\n{err}");
    assert!(checkpoints(&dir.path("run.log")) > 0);
}

/// Highest timer rate a `compute` run draws. On these hosts a tick costs
/// about 350 µs of wall time (the guest's interrupt path runs at CPL0, which
/// the host emulates): at 1 kHz ticks take a third of the vCPU, at 2 kHz two
/// thirds on an idle machine, and with the suite's tests running side by side
/// a faster timer leaves the guest no time at all (seen in CI: one step per
/// ten ticks until the timeout). Faster timers are exercised by `ticks`
/// runs, which end after a tick count, not a step count.
const MAX_COMPUTE_HZ: u64 = 1000;

/// Property-style: several timer rates and workload sizes, each recorded
/// and replayed; the sizes are kept small so the whole runs in seconds.
#[test]
fn many_rates_and_sizes_replay_exactly() {
    let dir = TempDir::new("rr-prop");
    for (steps, hz) in [
        (1u64, 1000u64),
        (200_000, 50),
        (3_000_000, 333),
        (20_000_000, MAX_COMPUTE_HZ),
        (40_000_000, 250),
    ] {
        record_and_replay(&format!("workload=compute steps={steps} hz={hz}"), &dir);
    }
    for (count, hz) in [(5u64, 1000u64), (12, 77), (400, 2500)] {
        record_and_replay(&format!("workload=ticks count={count} hz={hz}"), &dir);
    }
    // And a few drawn at random (seed printed; RR_SEED=n replays a draw).
    let seed: u64 = std::env::var("RR_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64)
        });
    eprintln!("many_rates_and_sizes_replay_exactly: RR_SEED={seed}");
    let mut x = seed;
    let mut next = |m: u64| {
        x = x
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (x >> 33) % m
    };
    for _ in 0..3 {
        let steps = 1 + next(40_000_000);
        let hz = 20 + next(MAX_COMPUTE_HZ - 19);
        record_and_replay(&format!("workload=compute steps={steps} hz={hz}"), &dir);
    }
}

#[test]
fn replaying_twice_gives_the_same_result() {
    let dir = TempDir::new("rr-twice");
    let cmdline = "workload=compute steps=20000000 hz=500";
    let (_, first) = record_and_replay(cmdline, &dir);
    let log = dir.path("run.log");
    let second = run_ft(cmdline, "replay", &log);
    assert!(second.status.success(), "{}", text(&second.stderr));
    assert_eq!(text(&first.stdout), text(&second.stdout));
    assert_replayed_to_the_end(&second, &log);
}

#[test]
fn bad_options_are_refused_clearly() {
    let guest = test_guest().to_str().expect("utf-8 path").to_string();
    let dir = TempDir::new("rr-opts");
    let missing = dir.path("nope.log");
    let nodir = dir.path("no/such/dir/x.log");
    let cases: Vec<(String, &str)> = vec![
        ("mode=record".into(), "mode=record needs log=FILE"),
        (
            "log=/tmp/x".into(),
            "needs mode=record, replay, primary or backup",
        ),
        (
            "mode=rewind,log=/tmp/x".into(),
            "needs mode=record, replay, primary or backup",
        ),
        (
            "mode=primary,peer=tcp:127.0.0.1:9".into(),
            "mode=primary needs key=FILE",
        ),
        (
            "mode=record,log=/tmp/x,max_delay_us=1".into(),
            "max_delay_us=1 is out of range",
        ),
        ("mode=record,log=/tmp/x,speed=3".into(), "unknown option"),
        (
            format!("mode=replay,log={}", missing.display()),
            "cannot access the fault-tolerance log",
        ),
        (
            format!("mode=record,log={}", nodir.display()),
            "cannot access the fault-tolerance log",
        ),
    ];
    for (ft, want) in cases {
        let out = run_vmm(&args(&guest, TICKS, &ft), Duration::from_secs(30));
        assert!(!out.status.success(), "{ft} accepted");
        let err = text(&out.stderr);
        assert!(err.contains(want), "{ft}: {err}");
        assert!(!text(&out.stdout).contains("ready"), "{ft}: the guest ran");
    }
    // A log that cannot be written: the run fails and says why.
    let out = run_vmm(
        &args(&guest, TICKS, "mode=record,log=/dev/full"),
        Duration::from_secs(30),
    );
    assert!(!out.status.success(), "a lost recording reported success");
    assert!(
        text(&out.stderr).contains("No space left on device"),
        "{}",
        text(&out.stderr)
    );
    let out = run_vmm(
        &[
            "--kernel",
            &guest,
            "--cpus",
            "boot=2",
            "--fault-tolerance",
            "mode=record,log=/tmp/x",
        ],
        Duration::from_secs(30),
    );
    assert!(!out.status.success());
}

/// A recording stopped through the API (the guest still computing) shows
/// its forced deliveries in `vm.counters`, and replays to the same point.
#[test]
fn a_stopped_recording_replays_and_counters_show_forced_deliveries() {
    let dir = TempDir::new("rr-api");
    let guest = test_guest().to_str().expect("utf-8 path").to_string();
    let log = dir.path("run.log");
    let socket = dir.path("api.sock");
    let cmdline = "workload=compute steps=5000000000 hz=1000";
    let ft = format!("mode=record,log={}", log.display());
    let sock = format!("path={}", socket.display());
    let mut a = args(&guest, cmdline, &ft);
    a.extend(["--api-socket", &sock]);
    let child = std::process::Command::new(common::vmm_bin())
        .args(&a)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn cloud-hypervisor");
    let mut forced = 0;
    assert!(
        common::wait_until(Duration::from_secs(30), || {
            if !socket.exists() {
                return false;
            }
            let (status, body) = common::api(&socket, "GET", "vm.counters", None);
            let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
            forced = v["vcpu0"]["forced_deliveries"].as_u64().unwrap_or(0);
            status == 200 && forced >= 100
        }),
        "no forced deliveries counted"
    );
    let out = common::ch_remote(&socket, &["shutdown"]);
    assert!(out.status.success(), "shutdown: {}", text(&out.stderr));
    // The VMM may close the connection as it exits: only its exit matters.
    let _ = common::ch_remote(&socket, &["shutdown-vmm"]);
    let rec = common::wait_output(child, TIMEOUT);
    assert!(rec.status.success(), "{}", text(&rec.stderr));
    assert!(text(&rec.stdout).contains("tick="));
    assert!(
        !text(&rec.stdout).contains("result="),
        "finished before the stop"
    );

    let rep = run_ft(cmdline, "replay", &log);
    assert!(rep.status.success(), "{}", text(&rep.stderr));
    assert_eq!(text(&rec.stdout), text(&rep.stdout));
    assert!(text(&rep.stderr).contains("end of a stopped recording"));
    assert_replayed_to_the_end(&rep, &log);
}

/// A file's bytes and modification time.
fn file_state(path: &Path) -> (Vec<u8>, std::time::SystemTime) {
    let bytes = std::fs::read(path).expect("read the file");
    let mtime = std::fs::metadata(path)
        .and_then(|m| m.modified())
        .expect("mtime");
    (bytes, mtime)
}

/// The virtio disk: completions (with read data) are device events; replay
/// applies the logged bytes and matches the recording, without the disk
/// image: it is neither opened nor written.
#[test]
fn disk_workload_replays_exactly() {
    let dir = TempDir::new("rr-disk");
    let image = dir.path("disk.img");
    std::fs::File::create(&image)
        .and_then(|f| f.set_len(16 << 20))
        .expect("create the disk image");
    let guest = test_guest().to_str().expect("utf-8 path").to_string();
    let log = dir.path("run.log");
    let disk = format!("path={}", image.display());
    let run = |mode: &str| {
        let ft = format!("mode={mode},log={}", log.display());
        let mut a = args(&guest, "workload=disk mib=2 flushes=4", &ft);
        a.extend(["--disk", &disk]);
        run_vmm(&a, TIMEOUT)
    };
    let rec = run("record");
    assert!(rec.status.success(), "{}", text(&rec.stderr));
    assert!(
        text(&rec.stdout).contains("disk=ok"),
        "{}",
        text(&rec.stdout)
    );
    let recorded = file_state(&image);
    assert!(
        recorded.0.iter().any(|b| *b != 0),
        "the recording wrote nothing"
    );

    // Replay from the log alone: the image is not there.
    let away = dir.path("disk.img.away");
    std::fs::rename(&image, &away).expect("move the disk image away");
    let rep = run("replay");
    assert!(rep.status.success(), "{}", text(&rep.stderr));
    assert_eq!(text(&rec.stdout), text(&rep.stdout));
    assert_replayed_to_the_end(&rep, &log);
    assert!(!image.exists(), "replay created the disk image");

    // With the image back, replay leaves it as the recording left it.
    std::fs::rename(&away, &image).expect("move the disk image back");
    let again = run("replay");
    assert!(again.status.success(), "{}", text(&again.stderr));
    assert_eq!(text(&rec.stdout), text(&again.stdout));
    assert_replayed_to_the_end(&again, &log);
    let after = file_state(&image);
    assert!(after.0 == recorded.0, "replay changed the disk image");
    assert_eq!(after.1, recorded.1, "replay touched the disk image");
}

/// Micro-checkpoints carry the virtio devices' state (transport, queues,
/// requests in flight) and replay compares it: a checkpoint whose `_disk0`
/// state was altered (CRC fixed up) is reported as divergence, naming the
/// device.
#[test]
fn checkpoints_compare_virtio_state() {
    let dir = TempDir::new("rr-vstate");
    let image = dir.path("disk.img");
    std::fs::File::create(&image)
        .and_then(|f| f.set_len(1 << 20))
        .expect("create the disk image");
    let guest = test_guest().to_str().expect("utf-8 path").to_string();
    let disk = format!("path={}", image.display());
    let cmdline = "workload=compute steps=60000000 hz=1000";
    let run = |mode: &str, log: &Path| {
        let ft = format!("mode={mode},log={}", log.display());
        let mut a = args(&guest, cmdline, &ft);
        a.extend(["--disk", &disk]);
        run_vmm(&a, TIMEOUT)
    };
    let log = dir.path("run.log");
    let rec = run("record", &log);
    assert!(rec.status.success(), "{}", text(&rec.stderr));
    assert!(checkpoints(&log) > 0, "{}", text(&rec.stderr));
    let rep = run("replay", &log);
    assert!(rep.status.success(), "{}", text(&rep.stderr));
    assert_eq!(text(&rec.stdout), text(&rep.stdout));
    assert_replayed_to_the_end(&rep, &log);

    let read = read_log(&log);
    let mut entries = read.entries.clone();
    let (exit, seq) = entries
        .iter_mut()
        .find_map(|e| match e {
            Entry::Checkpoint(c) => {
                let (_, state) = c
                    .devices
                    .iter_mut()
                    .find(|(id, _)| id == "_disk0")
                    .expect("the virtio-blk state in the checkpoint");
                assert!(state.len() > 256, "a {}-byte virtio-blk state", state.len());
                // Any byte will do: states are compared byte for byte.
                let mid = state.len() / 2;
                state[mid] ^= 0x01;
                Some((c.exit, c.seq))
            }
            _ => None,
        })
        .expect("a checkpoint");
    let altered = dir.path("altered.log");
    write_log(&read, &entries, &altered);
    let out = run("replay", &altered);
    assert!(!out.status.success(), "altered virtio state replayed fine");
    let err = text(&out.stderr);
    assert!(
        err.contains(&format!("replay diverged at exit {exit}"))
            && err.contains(&format!("the state of _disk0 recorded in checkpoint {seq}")),
        "{err}"
    );
}

/// The kv service over virtio-net and virtio-blk: RX frames and disk
/// completions are logged; the recording (stopped through the API while
/// the service runs) replays in another namespace, without a client, to
/// the same serial output: without the disk image, and where the tap
/// cannot be created (a bridge has its name), so
/// replay opens neither.
#[test]
fn kv_service_replays_exactly() {
    use std::io::{BufRead, BufReader, Write};
    let dir = TempDir::new("rr-kv");
    let image = dir.path("kv.img");
    std::fs::File::create(&image)
        .and_then(|f| f.set_len(16 << 20))
        .expect("create the disk image");
    let guest = test_guest().to_str().expect("utf-8 path").to_string();
    let log = dir.path("run.log");
    let socket = dir.path("api.sock");
    let vm_args = |mode: &str, serial: &Path| -> Vec<String> {
        [
            "--kernel",
            &guest,
            "--cmdline",
            "workload=kv ip=192.168.250.2/24 gw=192.168.250.1",
            "--memory",
            "size=128M",
            "--disk",
            &format!("path={}", image.display()),
            "--net",
            // A fixed MAC: a random one would make the configurations differ.
            "tap=ftrr0,ip=192.168.250.1,mask=255.255.255.0,mac=52:54:00:12:34:56",
            "--serial",
            &format!("file={}", serial.display()),
            "--fault-tolerance",
            &format!("mode={mode},log={}", log.display()),
            "-v",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    };
    let spawn = |ns: &Netns, args: Vec<String>| {
        std::process::Command::new("ip")
            .args(["netns", "exec", &ns.0, common::vmm_bin()])
            .args(args)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("spawn cloud-hypervisor")
    };
    let read = |p: &Path| std::fs::read_to_string(p).unwrap_or_default();

    let rec_serial = dir.path("rec-serial.txt");
    let ns = Netns::new("ftrr-rec");
    let mut args = vm_args("record", &rec_serial);
    args.extend(["--api-socket".into(), format!("path={}", socket.display())]);
    let child = spawn(&ns, args);
    assert!(
        common::wait_until(Duration::from_secs(60), || read(&rec_serial)
            .contains("kv: listening on")),
        "the service did not start: {}",
        read(&rec_serial)
    );
    ns.run(|| {
        let addr: std::net::SocketAddr = "192.168.250.2:7000".parse().expect("address");
        let stream = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(20))
            .expect("connect to the guest");
        stream
            .set_read_timeout(Some(Duration::from_secs(20)))
            .expect("timeout");
        let mut w = stream.try_clone().expect("clone the stream");
        let mut r = BufReader::new(stream);
        let mut ask = |line: String| {
            w.write_all(line.as_bytes()).expect("send");
            let mut answer = String::new();
            r.read_line(&mut answer).expect("answer");
            answer
        };
        for i in 0..20 {
            assert_eq!(ask(format!("SET key{i} value{i}\n")), "OK\n");
            assert_eq!(ask(format!("GET key{i}\n")), format!("VALUE value{i}\n"));
        }
    });
    let out = common::ch_remote(&socket, &["shutdown"]);
    assert!(out.status.success(), "shutdown: {}", text(&out.stderr));
    let _ = common::ch_remote(&socket, &["shutdown-vmm"]);
    let rec = common::wait_output(child, TIMEOUT);
    assert!(rec.status.success(), "{}", text(&rec.stderr));
    // The recording's namespace goes, and its tap with it.
    drop(ns);
    let recorded = file_state(&image);
    let away = dir.path("kv.img.away");
    std::fs::rename(&image, &away).expect("move the disk image away");

    let rep_serial = dir.path("rep-serial.txt");
    let ns = Netns::new("ftrr-rep");
    // A bridge named as the tap: opening or creating the tap would fail.
    let ip = |args: &[&str]| {
        std::process::Command::new("ip")
            .args(["-n", &ns.0])
            .args(args)
            .output()
            .expect("run ip")
    };
    assert!(ip(&["link", "add", "ftrr0", "type", "bridge"])
        .status
        .success());
    let rep = common::wait_output(spawn(&ns, vm_args("replay", &rep_serial)), TIMEOUT);
    assert!(rep.status.success(), "{}", text(&rep.stderr));
    assert_eq!(read(&rec_serial), read(&rep_serial));
    assert!(text(&rep.stderr).contains("end of a stopped recording"));
    assert_replayed_to_the_end(&rep, &log);
    let link = text(&ip(&["-d", "link", "show", "ftrr0"]).stdout);
    assert!(
        link.contains("bridge") && !link.contains("tun"),
        "the interface changed: {link}"
    );
    assert!(!image.exists(), "replay created the disk image");
    std::fs::rename(&away, &image).expect("move the disk image back");
    let after = file_state(&image);
    assert!(after.0 == recorded.0, "replay changed the disk image");
    assert_eq!(after.1, recorded.1, "replay touched the disk image");
}

/// Host input on the serial port (stdin with `--serial tty`) is an event:
/// replay applies it from the log (its stdin is empty), and a log whose
/// input bytes were altered ends in a different device state, reported as
/// divergence.
#[test]
fn serial_input_is_recorded_and_replayed() {
    use std::io::Write;
    let dir = TempDir::new("rr-stdin");
    let guest = test_guest().to_str().expect("utf-8 path").to_string();
    let log = dir.path("run.log");
    let cmdline = "workload=ticks count=40 hz=100";
    let ft = format!("mode=record,log={}", log.display());
    let mut child = std::process::Command::new(common::vmm_bin())
        .args(args(&guest, cmdline, &ft))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn cloud-hypervisor");
    let mut stdin = child.stdin.take().expect("piped stdin");
    std::thread::sleep(Duration::from_millis(100));
    stdin.write_all(b"xyz").expect("write stdin");
    drop(stdin);
    let rec = common::wait_output(child, TIMEOUT);
    assert!(rec.status.success(), "{}", text(&rec.stderr));
    let rep = run_ft(cmdline, "replay", &log);
    assert!(rep.status.success(), "{}", text(&rep.stderr));
    assert_eq!(text(&rec.stdout), text(&rep.stdout));
    assert_replayed_to_the_end(&rep, &log);

    // The input event carries its bytes; alter one (written through the
    // log writer).
    let read = read_log(&log);
    let mut entries = read.entries.clone();
    let input = entries
        .iter_mut()
        .find_map(|e| match e {
            Entry::Event {
                event: Event::SerialInput(bytes),
                ..
            } => Some(bytes),
            _ => None,
        })
        .expect("a serial input event in the log");
    assert_eq!(&input[..3], b"xyz");
    input[1] = b'Y';
    let altered = dir.path("altered.log");
    write_log(&read, &entries, &altered);
    let out = run_ft(cmdline, "replay", &altered);
    assert!(!out.status.success());
    let err = text(&out.stderr);
    // Caught by the device state of a later checkpoint, or else by the
    // final digest.
    assert!(
        err.contains("replay diverged at exit")
            && (err.contains("state of serial") || err.contains("final state digest")),
        "{err}"
    );
}

/// Issue 11: the guest changes page-table entries and flushes their
/// translations (`invlpg`, then a CR3 reload) while computing through the
/// mappings, with a timer fast enough that checkpoints land inside its
/// rounds. Replay writes those page tables from the VMM; unless KVM drops
/// what it cached from them, the replayed guest keeps reading and writing
/// through the old mapping and diverges (checked by disabling
/// `drop_cached_translations`: a state-digest divergence within the first
/// few hundred exits, for both flushes).
#[test]
fn page_table_changes_inside_checkpoints_replay_exactly() {
    let dir = TempDir::new("rr-remap");
    for flush in ["invlpg", "cr3"] {
        let cmdline = format!("workload=remap rounds=2000 iters=20000 hz=1000 flush={flush}");
        let (rec, _) = record_and_replay(&cmdline, &dir);
        let log = dir.path("run.log");
        let out = text(&rec.stdout);
        assert!(out.contains("remap: mismatches=0 result="), "{out}");
        assert!(
            checkpoints(&log) >= 50,
            "too few checkpoints to test anything: {}",
            text(&rec.stderr)
        );
    }
}
