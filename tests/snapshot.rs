// Copyright 2026 The ft-cloud-hypervisor authors.
// SPDX-License-Identifier: Apache-2.0

//! Snapshot and restore (`vm.snapshot`, `vm.restore`, `--restore`,
//! `ch-remote snapshot|restore`) on the real VMM with the test guest: the
//! restored guest continues where it was (the same compute result as an
//! uninterrupted run, tick lines that continue, key-value data on its
//! disk), and damaged or foreign snapshots are refused with a clear error
//! and no VM.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::api_vmm::{read, result_line, ticks, ApiVmm as Vmm, Console, COMPUTE};
use common::netns::Netns;
use common::{ch_remote, test_guest, text, vmm_bin, wait_until, TempDir};

/// Restores `snap` in a fresh VMM started with `--restore` and resumes it.
fn restore_cli(dir: &TempDir, name: &str, snap: &Path) -> Vmm {
    let vmm = Vmm::start(
        dir,
        name,
        None,
        &[
            "--restore".into(),
            format!("source_url=file://{}", snap.display()),
        ],
    );
    assert_eq!(vmm.state(), "Paused", "a restored VM starts paused");
    vmm
}

#[test]
fn compute_result_and_ticks_continue_after_restore() {
    let dir = TempDir::new("snap-compute");
    // The uninterrupted run.
    let full = dir.path("full.txt");
    Vmm::boot(&dir, "full", None, COMPUTE, "128M", &full, &[])
        .wait_poweroff(Duration::from_secs(120));
    let expected = result_line(&read(&full)).expect("a result line");

    // The same guest, snapshotted in the middle.
    let serial = dir.path("serial.txt");
    let vmm = Vmm::boot(&dir, "first", None, COMPUTE, "128M", &serial, &[]);
    assert!(wait_until(Duration::from_secs(30), || read(&serial)
        .contains("tick=50 ")));
    let snap = dir.path("snap");
    vmm.pause_and_snapshot(&snap);
    vmm.shutdown_vmm();
    let before = read(&serial);
    assert!(
        result_line(&before).is_none(),
        "finished before the snapshot"
    );
    std::fs::rename(&serial, dir.path("before.txt")).expect("keep the first part");
    for f in ["config.json", "state.bin", "memory.bin"] {
        assert!(snap.join(f).exists(), "{f} missing");
    }

    let vmm = restore_cli(&dir, "restored", &snap);
    std::thread::sleep(Duration::from_millis(300));
    assert!(read(&serial).is_empty(), "the guest ran while paused");
    assert_eq!(vmm.api("PUT", "vm.resume", None).0, 204);
    vmm.wait_poweroff(Duration::from_secs(120));
    let after = read(&serial);
    assert!(!after.contains("test-guest: ready"), "the guest restarted");
    assert_eq!(result_line(&after), Some(expected), "{after}");
    // The tick lines continue: no tick repeats or restarts from 10.
    let all: Vec<u64> = ticks(&before).into_iter().chain(ticks(&after)).collect();
    assert!(all.len() > 10, "{before}{after}");
    assert!(
        all.windows(2).all(|w| w[1] == w[0] + 10),
        "tick lines do not continue: {all:?}"
    );
    assert!(!ticks(&after).is_empty());
}

#[test]
fn ticks_workload_counts_across_restore_with_api_restore() {
    let dir = TempDir::new("snap-ticks");
    let serial = dir.path("serial.txt");
    let vmm = Vmm::boot(
        &dir,
        "first",
        None,
        "workload=ticks count=300 hz=100",
        "128M",
        &serial,
        &[],
    );
    assert!(wait_until(Duration::from_secs(30), || read(&serial)
        .contains("test-guest: ready")));
    std::thread::sleep(Duration::from_millis(800));
    let snap = dir.path("snap");
    vmm.pause_and_snapshot(&snap);
    vmm.shutdown_vmm();
    assert!(
        !read(&serial).contains("ticks="),
        "finished before the snapshot"
    );
    std::fs::remove_file(&serial).expect("remove the first part");

    // vm.restore on a VMM started with only its API socket.
    let vmm = Vmm::start(&dir, "second", None, &[]);
    let body = format!(r#"{{"source_url":"file://{}"}}"#, snap.display());
    let (status, answer) = vmm.api("PUT", "vm.restore", Some(&body));
    assert_eq!(status, 204, "{answer}");
    assert_eq!(vmm.state(), "Paused");
    assert_eq!(vmm.api("PUT", "vm.resume", None).0, 204);
    vmm.wait_poweroff(Duration::from_secs(60));
    assert_eq!(read(&serial).trim(), "ticks=300");
}

#[test]
fn disk_workload_with_requests_in_flight_verifies_after_restore() {
    let dir = TempDir::new("snap-disk");
    let disk = dir.path("disk.img");
    std::fs::File::create(&disk)
        .and_then(|f| f.set_len(512 << 20))
        .expect("create the disk image");
    let serial = dir.path("serial.txt");
    let guest = test_guest().to_str().expect("utf-8 path").to_string();
    let vmm = Vmm::start(
        &dir,
        "first",
        None,
        &[
            "--kernel".into(),
            guest,
            "--cmdline".into(),
            "workload=disk mib=384 flushes=64".into(),
            "--memory".into(),
            "size=128M".into(),
            "--disk".into(),
            format!("path={}", disk.display()),
            "--serial".into(),
            format!("file={}", serial.display()),
        ],
    );
    assert!(wait_until(Duration::from_secs(30), || read(&serial)
        .contains("test-guest: ready")));
    // In the middle of the writes (the guest keeps requests in flight).
    std::thread::sleep(Duration::from_millis(400));
    let snap = dir.path("snap");
    vmm.pause_and_snapshot(&snap);
    vmm.shutdown_vmm();
    assert!(
        !read(&serial).contains("disk="),
        "finished before the snapshot"
    );
    let drained = read(&dir.path("first.log"))
        .lines()
        .find(|l| l.contains("requests in flight first"))
        .map(str::to_string);
    println!("drain at the snapshot: {drained:?}");
    std::fs::remove_file(&serial).expect("remove the first part");

    let vmm = restore_cli(&dir, "restored", &snap);
    assert_eq!(vmm.api("PUT", "vm.resume", None).0, 204);
    vmm.wait_poweroff(Duration::from_secs(120));
    let after = read(&serial);
    assert!(after.contains("disk=ok"), "{after}");
    assert!(!after.contains("test-guest: ready"), "the guest restarted");
}

/// Copies the snapshot directory `from` to `to`.
fn copy_snapshot(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("create the copy");
    for f in ["config.json", "state.bin", "memory.bin"] {
        std::fs::copy(from.join(f), to.join(f)).expect("copy a snapshot file");
    }
}

fn flip(path: &Path, at: usize) {
    let mut bytes = std::fs::read(path).expect("read");
    bytes[at] ^= 0x40;
    std::fs::write(path, bytes).expect("write");
}

#[test]
fn refusals_leave_no_vm_and_the_vmm_usable() {
    let dir = TempDir::new("snap-refuse");
    let serial = dir.path("serial.txt");
    let vmm = Vmm::boot(&dir, "first", None, "workload=idle", "128M", &serial, &[]);
    assert!(wait_until(Duration::from_secs(30), || read(&serial)
        .contains("test-guest: ready")));
    let snap = dir.path("snap");
    let body = format!(r#"{{"destination_url":"file://{}"}}"#, snap.display());
    // Not paused: upstream's error.
    let (status, answer) = vmm.api("PUT", "vm.snapshot", Some(&body));
    assert_eq!(status, 500);
    assert!(
        answer.contains("The VM could not be snapshotted")
            && answer.contains("Trying to snapshot while VM is running"),
        "{answer}"
    );
    assert!(!snap.join("state.bin").exists());
    // A URL that is not file:///DIR; a missing body.
    let (status, answer) = vmm.api(
        "PUT",
        "vm.snapshot",
        Some(r#"{"destination_url":"tcp:1.2.3.4:5"}"#),
    );
    assert_eq!(status, 500);
    assert!(answer.contains("file:///"), "{answer}");
    assert_eq!(vmm.api("PUT", "vm.snapshot", None).0, 400);
    assert_eq!(vmm.api("PUT", "vm.snapshot", Some("{nope")).0, 400);
    vmm.pause_and_snapshot(&snap);
    // Restoring over an existing VM.
    let restore = |dir: &Path| format!(r#"{{"source_url":"file://{}"}}"#, dir.display());
    let (status, answer) = vmm.api("PUT", "vm.restore", Some(&restore(&snap)));
    assert_eq!(status, 500);
    assert!(answer.contains("VM is already created"), "{answer}");
    assert_eq!(vmm.state(), "Paused");
    vmm.shutdown_vmm();

    let vmm = Vmm::start(&dir, "second", None, &[]);
    let memory_len = std::fs::metadata(snap.join("memory.bin"))
        .expect("memory.bin")
        .len();
    let state_len = std::fs::metadata(snap.join("state.bin"))
        .expect("state.bin")
        .len() as usize;
    type Damage = Box<dyn Fn(&Path)>;
    let cases: Vec<(&str, Damage, &[&str])> = vec![
        (
            "memory byte",
            Box::new(|d: &Path| flip(&d.join("memory.bin"), 64 << 20)),
            &["memory.bin", "bad checksum of the memory contents"],
        ),
        (
            "memory truncated",
            Box::new(move |d: &Path| {
                let f = std::fs::OpenOptions::new()
                    .write(true)
                    .open(d.join("memory.bin"))
                    .expect("open");
                f.set_len(memory_len - 4096).expect("truncate");
            }),
            &["memory.bin", "truncated"],
        ),
        (
            "state section byte",
            Box::new(move |d: &Path| flip(&d.join("state.bin"), state_len - 1)),
            &["state.bin", "bad checksum of section"],
        ),
        (
            "state truncated",
            Box::new(move |d: &Path| {
                let bytes = std::fs::read(d.join("state.bin")).expect("read");
                std::fs::write(d.join("state.bin"), &bytes[..state_len / 2]).expect("write");
            }),
            &["state.bin", "truncated"],
        ),
        (
            "another format version",
            Box::new(|d: &Path| {
                let mut bytes = std::fs::read(d.join("state.bin")).expect("read");
                bytes[8..12].copy_from_slice(&2u32.to_le_bytes());
                let crc = crc32fast::hash(&bytes[..16]);
                bytes[16..20].copy_from_slice(&crc.to_le_bytes());
                std::fs::write(d.join("state.bin"), bytes).expect("write");
            }),
            &["state.bin", "format version 2", "reads version 1"],
        ),
        (
            "missing config",
            Box::new(|d: &Path| std::fs::remove_file(d.join("config.json")).expect("rm")),
            &["config.json", "No such file"],
        ),
        (
            "edited config",
            Box::new(|d: &Path| {
                let c = std::fs::read_to_string(d.join("config.json")).expect("read");
                std::fs::write(
                    d.join("config.json"),
                    c.replace("workload=idle", "workload=ticks"),
                )
                .expect("write");
            }),
            &["config.json", "bad checksum"],
        ),
        (
            "missing memory",
            Box::new(|d: &Path| std::fs::remove_file(d.join("memory.bin")).expect("rm")),
            &["memory.bin", "No such file"],
        ),
    ];
    for (i, (what, damage, expect)) in cases.iter().enumerate() {
        let copy = dir.path(&format!("bad{i}"));
        copy_snapshot(&snap, &copy);
        damage(&copy);
        let (status, answer) = vmm.api("PUT", "vm.restore", Some(&restore(&copy)));
        assert_eq!(status, 500, "{what}: {answer}");
        assert!(
            answer.contains("The VM could not be restored"),
            "{what}: {answer}"
        );
        for e in *expect {
            assert!(answer.contains(e), "{what}: {e:?} not in {answer}");
        }
        // Nothing half-restored: no VM exists.
        assert_eq!(vmm.api("GET", "vm.info", None).0, 404, "{what}");
    }
    assert_eq!(vmm.api("GET", "vmm.ping", None).0, 200);
    // The intact snapshot still restores on the same VMM.
    let (status, answer) = vmm.api("PUT", "vm.restore", Some(&restore(&snap)));
    assert_eq!(status, 204, "{answer}");
    assert_eq!(vmm.state(), "Paused");
    assert_eq!(vmm.api("PUT", "vm.resume", None).0, 204);
    assert_eq!(vmm.state(), "Running");
    vmm.shutdown_vmm();
}

#[test]
fn a_recording_vm_is_not_snapshotted_and_a_restored_one_is() {
    let dir = TempDir::new("snap-ft");
    let serial = dir.path("serial.txt");
    let guest = test_guest().to_str().expect("utf-8 path").to_string();
    let vmm = Vmm::start(
        &dir,
        "rec",
        None,
        &[
            "--kernel".into(),
            guest,
            "--cmdline".into(),
            "workload=idle".into(),
            "--memory".into(),
            "size=128M".into(),
            "--serial".into(),
            format!("file={}", serial.display()),
            "--fault-tolerance".into(),
            format!("mode=record,log={}", dir.path("run.log").display()),
        ],
    );
    assert!(wait_until(Duration::from_secs(30), || read(&serial)
        .contains("test-guest: ready")));
    assert_eq!(vmm.api("PUT", "vm.pause", None).0, 204);
    let snap = dir.path("snap");
    let body = format!(r#"{{"destination_url":"file://{}"}}"#, snap.display());
    let (status, answer) = vmm.api("PUT", "vm.snapshot", Some(&body));
    assert_eq!(status, 500);
    assert!(answer.contains("--fault-tolerance"), "{answer}");
    assert!(!snap.exists());
    assert_eq!(vmm.api("PUT", "vm.resume", None).0, 204);
    vmm.shutdown_vmm();

    // A restored VM snapshots again, and that snapshot restores.
    let serial = dir.path("ticks.txt");
    let vmm = Vmm::boot(
        &dir,
        "first",
        None,
        "workload=ticks count=150 hz=100",
        "128M",
        &serial,
        &[],
    );
    assert!(wait_until(Duration::from_secs(30), || read(&serial)
        .contains("test-guest: ready")));
    vmm.pause_and_snapshot(&dir.path("one"));
    vmm.shutdown_vmm();
    let vmm = restore_cli(&dir, "second", &dir.path("one"));
    assert_eq!(vmm.api("PUT", "vm.resume", None).0, 204);
    std::thread::sleep(Duration::from_millis(300));
    vmm.pause_and_snapshot(&dir.path("two"));
    vmm.shutdown_vmm();
    assert!(
        !read(&serial).contains("ticks="),
        "finished before the second snapshot"
    );
    let vmm = restore_cli(&dir, "third", &dir.path("two"));
    assert_eq!(vmm.api("PUT", "vm.resume", None).0, 204);
    vmm.wait_poweroff(Duration::from_secs(60));
    assert_eq!(read(&serial).trim(), "ticks=150");
}

#[test]
fn cli_restore_refuses_bad_options() {
    let dir = TempDir::new("snap-cli");
    for (args, expect) in [
        (vec!["--restore", "prefault=on"], "source_url required"),
        (
            vec!["--restore", "source_url=file:///nonexistent-ft-snap"],
            "state.bin",
        ),
        (vec!["--restore", "source_url=/tmp/x"], "file:///"),
        (
            vec!["--restore", "source_url=file:///x", "--kernel", "k"],
            "--restore cannot be used with --kernel",
        ),
    ] {
        let out = Command::new(vmm_bin())
            .args(&args)
            .arg("--log-file")
            .arg(dir.path("log"))
            .output()
            .expect("run cloud-hypervisor");
        assert!(!out.status.success(), "{args:?}");
        let err = text(&out.stderr);
        assert!(err.contains(expect), "{args:?}: {err}");
    }
}

#[test]
fn ch_remote_snapshot_and_restore() {
    let dir = TempDir::new("snap-remote");
    let serial = dir.path("serial.txt");
    let vmm = Vmm::boot(
        &dir,
        "first",
        None,
        "workload=ticks count=200 hz=100",
        "128M",
        &serial,
        &[],
    );
    assert!(wait_until(Duration::from_secs(30), || read(&serial)
        .contains("test-guest: ready")));
    let snap = dir.path("snap");
    let url = format!("file://{}", snap.display());
    let out = ch_remote(&vmm.socket, &["snapshot", &url]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("Trying to snapshot while VM is running"),
        "{}",
        text(&out.stderr)
    );
    assert!(ch_remote(&vmm.socket, &["pause"]).status.success());
    let out = ch_remote(&vmm.socket, &["snapshot", &url]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let socket = vmm.socket.clone();
    vmm.shutdown_vmm();
    assert!(!socket.exists());
    std::fs::remove_file(&serial).expect("remove the first part");

    let vmm = Vmm::start(&dir, "second", None, &[]);
    let out = ch_remote(&vmm.socket, &["restore", "prefault=on"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    let out = ch_remote(&vmm.socket, &["restore", &format!("source_url={url}")]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let info = ch_remote(&vmm.socket, &["info"]);
    assert!(text(&info.stdout).contains(r#""state":"Paused""#));
    assert!(ch_remote(&vmm.socket, &["resume"]).status.success());
    vmm.wait_poweroff(Duration::from_secs(60));
    assert_eq!(read(&serial).trim(), "ticks=200");
}

const KV_GUEST: &str = "192.168.248.2";

#[test]
fn kv_data_written_before_the_snapshot_reads_back_after_restore() {
    let dir = TempDir::new("snap-kv");
    let disk = dir.path("kv.img");
    std::fs::File::create(&disk)
        .and_then(|f| f.set_len(16 << 20))
        .expect("create the disk image");
    let ns = Netns::new("ftsnap");
    let serial = dir.path("serial.txt");
    let guest = test_guest().to_str().expect("utf-8 path").to_string();
    let vmm = Vmm::start(
        &dir,
        "first",
        Some(&ns),
        &[
            "--kernel".into(),
            guest,
            "--cmdline".into(),
            format!("workload=kv ip={KV_GUEST}/24 gw=192.168.248.1"),
            "--memory".into(),
            "size=128M".into(),
            "--disk".into(),
            format!("path={}", disk.display()),
            "--net".into(),
            "tap=ftsnap0,mac=52:54:00:12:34:99,ip=192.168.248.1,mask=255.255.255.0".into(),
            "--serial".into(),
            format!("file={}", serial.display()),
        ],
    );
    assert!(wait_until(Duration::from_secs(60), || read(&serial)
        .contains("kv: listening on")));
    let addr = format!("{KV_GUEST}:7000").parse().expect("address");
    ns.run(|| {
        let mut c =
            ft_kv_client::Connection::connect(addr, Duration::from_secs(20)).expect("connect");
        for i in 0..20 {
            c.set(&format!("key{i}"), &format!("value{i}"))
                .expect("SET");
        }
    });
    let snap = dir.path("snap");
    vmm.pause_and_snapshot(&snap);
    vmm.shutdown_vmm();

    let vmm = Vmm::start(
        &dir,
        "restored",
        Some(&ns),
        &[
            "--restore".into(),
            format!("source_url=file://{},resume=true", snap.display()),
        ],
    );
    assert_eq!(vmm.state(), "Running");
    ns.run(|| {
        let mut c = ft_kv_client::Connection::connect(addr, Duration::from_secs(20))
            .expect("connect after restore");
        for i in 0..20 {
            assert_eq!(
                c.get(&format!("key{i}")).expect("GET").as_deref(),
                Some(format!("value{i}").as_str())
            );
        }
        c.set("after", "restore").expect("SET after restore");
        assert_eq!(c.get("after").expect("GET").as_deref(), Some("restore"));
    });
    vmm.shutdown_vmm();
}

/// The minimal Linux guest's paths (scripts/build-linux-guest, cached).
fn linux_guest() -> std::collections::HashMap<String, String> {
    common::linux_guest_paths()
        .iter()
        .map(|(k, v)| (k.clone(), v.display().to_string()))
        .collect()
}

#[test]
fn linux_shell_answers_after_restore() {
    let paths = linux_guest();
    let dir = TempDir::new("snap-linux");
    let mut c = Console::start(
        &dir,
        "first",
        &[
            "--kernel".into(),
            paths["VMLINUX"].clone(),
            "--initramfs".into(),
            paths["INITRAMFS"].clone(),
            "--cmdline".into(),
            "console=ttyS0 clearcpuid=308,151 noxsave".into(),
            "--memory".into(),
            "size=256M".into(),
            "--serial".into(),
            "tty".into(),
        ],
    );
    assert!(
        wait_until(Duration::from_secs(180), || c
            .output
            .contains_after("linux-guest: ready", 0)),
        "{}",
        c.output.text()
    );
    c.command(
        "echo before-$((6*7)) > /tmp/mark; cat /tmp/mark\n",
        "before-42",
    );
    let snap = dir.path("snap");
    c.vmm.pause_and_snapshot(&snap);
    c.vmm.shutdown_vmm();

    let mut c = Console::start(
        &dir,
        "restored",
        &[
            "--restore".into(),
            format!("source_url=file://{},resume=true", snap.display()),
        ],
    );
    // The shell and its files are those of the first run.
    c.command("cat /tmp/mark; echo after-$((6*7))\n", "after-42");
    assert!(c.output.text().contains("before-42"), "{}", c.output.text());
    c.command("sleep 1; echo slept\n", "slept");
    c.send("poweroff -f\n");
    c.vmm.wait_poweroff(Duration::from_secs(60));
}

/// Snapshot and restore times and sizes for 128 MiB and 512 MiB idle
/// guests (printed; run with `--nocapture`). Each also round-trips.
#[test]
fn snapshot_and_restore_sizes_and_times() {
    for memory in ["128M", "512M"] {
        let dir = TempDir::new("snap-measure");
        let serial = dir.path("serial.txt");
        let vmm = Vmm::boot(&dir, "first", None, "workload=idle", memory, &serial, &[]);
        assert!(wait_until(Duration::from_secs(30), || read(&serial)
            .contains("test-guest: ready")));
        assert_eq!(vmm.api("PUT", "vm.pause", None).0, 204);
        let snap = dir.path("snap");
        let body = format!(r#"{{"destination_url":"file://{}"}}"#, snap.display());
        let start = Instant::now();
        let (status, answer) = vmm.api("PUT", "vm.snapshot", Some(&body));
        let snapshot_time = start.elapsed();
        assert_eq!(status, 204, "{answer}");
        vmm.shutdown_vmm();
        let size: u64 = std::fs::read_dir(&snap)
            .expect("snapshot dir")
            .filter_map(|e| e.ok()?.metadata().ok())
            .map(|m| m.len())
            .sum();

        let vmm = Vmm::start(&dir, "second", None, &[]);
        let body = format!(r#"{{"source_url":"file://{}"}}"#, snap.display());
        let start = Instant::now();
        let (status, answer) = vmm.api("PUT", "vm.restore", Some(&body));
        let restore_time = start.elapsed();
        assert_eq!(status, 204, "{answer}");
        assert_eq!(vmm.api("PUT", "vm.resume", None).0, 204);
        assert_eq!(vmm.state(), "Running");
        vmm.shutdown_vmm();
        println!(
            "snapshot-measure memory={memory} size_bytes={size} snapshot_ms={} restore_ms={}",
            snapshot_time.as_millis(),
            restore_time.as_millis()
        );
    }
}
