// Copyright 2026 The ft-cloud-hypervisor authors.
// SPDX-License-Identifier: Apache-2.0

//! `--disk direct=on` (the image opened with `O_DIRECT`) on the real VMM
//! and KVM: the test guest's disk workload reads back what it wrote and
//! the file holds it after the VM exits; the image really is open with
//! `O_DIRECT` and `vm.info` shows `direct` as given; a file system that
//! refuses `O_DIRECT` is a clear error at start; record/replay, and the
//! fault-tolerant pair with a shared disk and with separate disks, work
//! with it.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::api_vmm::{read, ApiVmm};
use common::etcd::Etcd;
use common::ft::{args, assert_replayed_to_the_end, TIMEOUT};
use common::ftpair::{
    assert_clean, ft_events, kv_setup, stream_through, vmm_args, write_key, Setup, CHANNEL_PORT,
};
use common::pair::{GuestVmm, Host, PairNet, LAN_IP, LOG_B};
use common::{
    api, api_listening, boot_disk, ch_remote, run_vmm, test_guest, text, wait_until, TempDir,
};

/// `O_DIRECT` in the flags of /proc/PID/fdinfo (octal, x86-64).
const O_DIRECT: u32 = 0o40000;

fn guest() -> String {
    test_guest().to_str().expect("utf-8 path").to_string()
}

fn sparse_file(path: &Path, size: u64) -> String {
    let file = std::fs::File::create(path).expect("create disk image");
    file.set_len(size).expect("size disk image");
    path.to_str().expect("utf-8 path").to_string()
}

#[test]
fn a_direct_disk_reads_back_what_it_wrote_and_the_file_holds_it() {
    let dir = TempDir::new("direct-patterns");
    let image = sparse_file(&dir.path("disk.img"), 32 << 20);
    let (ok, lines, stderr) = boot_disk(
        "workload=disk mib=8 flushes=4",
        &format!("path={image},direct=on,id=disk7"),
    );
    assert!(ok, "{lines:?}\n{stderr}");
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("disk: id=disk7 sectors=65536 flush=yes read-only=no")),
        "{lines:?}"
    );
    // The guest compared every byte it read back with what it wrote.
    assert_eq!(
        lines.last().map(String::as_str),
        Some("disk=ok"),
        "{lines:?}"
    );
    let data = std::fs::read(&image).expect("read the image");
    // The four 4 KiB write+flush rounds wrote 0x5a to sectors 0, 8, 16, 24.
    assert!(
        data[..16384].iter().all(|&b| b == 0x5a),
        "the flushed blocks are not in the file"
    );
    // The patterns reached the file: every 4 KiB of the 8 MiB, and no more.
    assert!(data[..8 << 20]
        .chunks(4096)
        .all(|c| c.iter().any(|&b| b != 0)));
    assert!(data[8 << 20..].iter().all(|&b| b == 0), "wrote past 8 MiB");
}

/// Kills the VMM if the test ends early.
struct Vmm(Child);

impl Drop for Vmm {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The `flags` of the descriptors `pid` holds on `path`.
fn open_flags(pid: u32, path: &Path) -> Vec<u32> {
    let mut flags = Vec::new();
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return flags;
    };
    for fd in fds.flatten() {
        if std::fs::read_link(fd.path()).ok().as_deref() != Some(path) {
            continue;
        }
        let info = std::fs::read_to_string(format!(
            "/proc/{pid}/fdinfo/{}",
            fd.file_name().to_string_lossy()
        ))
        .unwrap_or_default();
        if let Some(f) = info
            .lines()
            .find_map(|l| l.strip_prefix("flags:"))
            .and_then(|f| u32::from_str_radix(f.trim(), 8).ok())
        {
            flags.push(f);
        }
    }
    flags
}

#[test]
fn the_image_is_open_with_o_direct_and_vm_info_shows_direct() {
    let dir = TempDir::new("direct-flags");
    let direct = PathBuf::from(sparse_file(&dir.path("direct.img"), 1 << 20));
    let buffered = PathBuf::from(sparse_file(&dir.path("buffered.img"), 1 << 20));
    let socket = dir.path("api.sock");
    let vmm = Vmm(Command::new(common::vmm_bin())
        .args([
            "--api-socket",
            &format!("path={}", socket.display()),
            "--kernel",
            &guest(),
            "--cmdline",
            "workload=idle",
            "--memory",
            "size=128M",
            "--disk",
            &format!("path={},direct=on", direct.display()),
            &format!("path={}", buffered.display()),
            "--serial",
            "off",
            "--console",
            "off",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn cloud-hypervisor"));
    let pid = vmm.0.id();
    assert!(wait_until(Duration::from_secs(30), || {
        api_listening(&socket) && !open_flags(pid, &buffered).is_empty()
    }));
    let d = open_flags(pid, &direct);
    assert!(
        !d.is_empty() && d.iter().all(|f| f & O_DIRECT != 0),
        "{d:?}"
    );
    let b = open_flags(pid, &buffered);
    assert!(b.iter().all(|f| f & O_DIRECT == 0), "{b:?}");
    let (code, body) = api(&socket, "GET", "vm.info", None);
    assert_eq!(code, 200, "{body}");
    let info: serde_json::Value = serde_json::from_str(&body).expect("vm.info JSON");
    let disks = &info["config"]["disks"];
    assert_eq!(disks[0]["direct"], true, "{body}");
    assert_eq!(disks[1]["direct"], false, "{body}");
    drop(vmm);
}

/// Mounts a ramfs (a file system with no direct I/O) and unmounts it
/// however the test ends. tmpfs accepts `O_DIRECT` on this host's kernel
/// (Linux 6.6 and later), ramfs refuses it at open with EINVAL.
struct Ramfs(PathBuf);

impl Ramfs {
    fn mount(at: PathBuf) -> Self {
        std::fs::create_dir_all(&at).expect("mount point");
        let ok = Command::new("mount")
            .args(["-t", "ramfs", "ch-it-ramfs"])
            .arg(&at)
            .status()
            .expect("run mount")
            .success();
        assert!(ok, "cannot mount a ramfs at {}", at.display());
        Ramfs(at)
    }
}

impl Drop for Ramfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

#[test]
fn a_file_system_without_direct_io_is_a_clear_error_at_start() {
    let dir = TempDir::new("direct-ramfs");
    let fs = Ramfs::mount(dir.path("ramfs"));
    let image = sparse_file(&fs.0.join("disk.img"), 1 << 20);
    let (ok, lines, stderr) = boot_disk(
        "workload=disk mib=1 flushes=1",
        &format!("path={image},direct=on"),
    );
    assert!(!ok, "{lines:?}\n{stderr}");
    assert!(lines.is_empty(), "the guest ran: {lines:?}");
    let want = format!(
        "Error: cannot create devices: disk _disk0: disk image {image} cannot be opened with \
         O_DIRECT (direct=on): its file system refuses direct I/O: Invalid argument (os error 22)"
    );
    assert!(stderr.lines().any(|l| l == want), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    // The same image, buffered, works.
    let (ok, lines, stderr) = boot_disk("workload=disk mib=1 flushes=1", &format!("path={image}"));
    assert!(ok, "{lines:?}\n{stderr}");
    assert_eq!(
        lines.last().map(String::as_str),
        Some("disk=ok"),
        "{lines:?}"
    );
    drop(fs);
}

#[test]
fn an_image_size_o_direct_cannot_cover_is_a_clear_error() {
    let dir = TempDir::new("direct-size");
    // Not a whole number of 512-byte blocks: no file system's O_DIRECT
    // alignment divides it (buffered, the tail past the last sector is
    // simply out of the guest's reach).
    let image = sparse_file(&dir.path("disk.img"), (1 << 20) + 100);
    let (ok, lines, stderr) = boot_disk(
        "workload=disk mib=1 flushes=1",
        &format!("path={image},direct=on"),
    );
    assert!(!ok, "{lines:?}\n{stderr}");
    assert!(
        stderr.contains(&format!(
            "disk _disk0: disk image {image} has 1048676 bytes, not a multiple of"
        )) && stderr.contains("O_DIRECT (direct=on)"),
        "{stderr}"
    );
}

/// A disk workload recorded with `direct=on` replays exactly; `direct` is a
/// host detail outside the configuration digest, so a replay without it
/// (or with it) accepts the log.
#[test]
fn a_direct_disk_workload_records_and_replays() {
    let dir = TempDir::new("direct-rr");
    let image = dir.path("disk.img");
    sparse_file(&image, 8 << 20);
    let guest = guest();
    let log = dir.path("run.log");
    let run = |mode: &str, disk: &str| {
        let ft = format!("mode={mode},log={}", log.display());
        let mut a = args(&guest, "workload=disk mib=2 flushes=4", &ft);
        a.extend(["--disk", disk]);
        run_vmm(&a, TIMEOUT)
    };
    let direct = format!("path={},direct=on", image.display());
    let rec = run("record", &direct);
    assert!(rec.status.success(), "{}", text(&rec.stderr));
    assert!(
        text(&rec.stdout).contains("disk=ok"),
        "{}",
        text(&rec.stdout)
    );
    let recorded = std::fs::read(&image).expect("read the image");
    assert!(recorded[..4096].iter().all(|&b| b == 0x5a));
    for disk in [direct.clone(), format!("path={}", image.display())] {
        let rep = run("replay", &disk);
        assert!(rep.status.success(), "{disk}: {}", text(&rep.stderr));
        assert_eq!(text(&rec.stdout), text(&rep.stdout), "{disk}");
        assert_replayed_to_the_end(&rep, &log);
    }
    assert_eq!(
        std::fs::read(&image).expect("read the image"),
        recorded,
        "replay changed the disk image"
    );
}

/// `s`'s VMM on `host` with `ft`, its `--disk` given `disk_options`.
fn spawn_side(
    net: &PairNet,
    dir: &TempDir,
    s: &Setup<'_>,
    host: Host,
    ft: String,
    name: &str,
    disk_options: &str,
) -> GuestVmm {
    let mut a = vmm_args(net, host, s, ft, &dir.path(&format!("events-{name}.json")));
    let at = a.iter().position(|x| x == "--disk").expect("a disk") + 1;
    a[at].push_str(disk_options);
    let a: Vec<&str> = a.iter().map(String::as_str).collect();
    net.spawn_vmm(host, &dir.0, name, &a)
}

/// Kills the primary during a verified KV stream (every SET flushed to
/// the disk before its answer): every acknowledged SET reads back from
/// the backup gone live, and the connection is never reset. The primary's
/// disk is `direct=on`; the backup's is `backup_disk_options`.
fn direct_failover(separate: bool, backup_disk_options: &str) {
    let dir = TempDir::new("direct-pair");
    let net = PairNet::new();
    let names = net.names();
    // Separate disks have no shared storage for a file tiebreaker.
    let etcd = separate.then(|| Etcd::start(&net.lan, LAN_IP, 2479, dir.path("etcd")));
    let tiebreaker = match &etcd {
        Some(etcd) => etcd.tiebreaker(&format!("ft/{}", net.tag)),
        None => format!("file:{}", dir.path("tiebreak").display()),
    };
    let mut s = kv_setup(&dir, tiebreaker, separate);
    s.cmdline = net.kv_cmdline();
    let key = write_key(&dir);
    let backup = spawn_side(
        &net,
        &dir,
        &s,
        Host::B,
        format!(
            "mode=backup,listen=tcp:{LOG_B}:{CHANNEL_PORT},log={},key={},tiebreaker={}{}",
            dir.path("received.log").display(),
            key.display(),
            s.tiebreaker,
            s.extra
        ),
        "backup",
        backup_disk_options,
    );
    let mut primary = spawn_side(
        &net,
        &dir,
        &s,
        Host::A,
        format!(
            "mode=primary,peer=tcp:{LOG_B}:{CHANNEL_PORT},key={},tiebreaker={}{}",
            key.display(),
            s.tiebreaker,
            s.extra
        ),
        "primary",
        ",direct=on",
    );
    primary.wait_serial("kv: listening on", Duration::from_secs(60));
    let (report, _) = stream_through(&net, 4.0, Some((&mut primary, 150)));
    eprintln!("disk_direct: failover (separate disks: {separate}): {report}");
    assert!(!report.reset(), "reset: {report}");
    assert!(report.ok(), "{report}: {:?}", report.bad_keys);
    let v = report.verification.as_ref().expect("verified");
    assert_eq!(v.checked, report.acked, "{report}");
    let be = backup.stderr_text();
    assert!(be.contains("event go-live"), "{be}");
    let events = ft_events(&dir.path("events-backup.json"));
    assert!(events.iter().any(|e| e == "go-live"), "{events:?}");
    drop(primary);
    drop(backup);
    drop(etcd);
    drop(net);
    assert_clean(&names);
}

/// Shared disk: the primary writes it with `O_DIRECT`, the backup (which
/// opens it through the page cache: `direct` is not part of the digest the
/// handshake compares) goes live on it.
#[test]
fn a_pair_with_a_shared_direct_disk_fails_over_without_losing_a_write() {
    direct_failover(false, "");
}

/// Separate disks, both `direct=on`: the backup writes its own copy with
/// `O_DIRECT` while it replays, and goes live on it.
#[test]
fn a_pair_with_separate_direct_disks_fails_over_without_losing_a_write() {
    direct_failover(true, ",direct=on");
}

/// Snapshot with disk requests in flight and restore, `direct=on`: the
/// restored VM opens its image with `O_DIRECT` again (the option is in the
/// saved configuration) and the guest's read-back verifies.
#[test]
fn a_direct_disk_snapshot_restores_and_verifies() {
    let dir = TempDir::new("direct-snap");
    let disk = dir.path("disk.img");
    sparse_file(&disk, 512 << 20);
    let serial = dir.path("serial.txt");
    let vmm = ApiVmm::start(
        &dir,
        "first",
        None,
        &[
            "--kernel".into(),
            guest(),
            "--cmdline".into(),
            "workload=disk mib=384 flushes=64".into(),
            "--memory".into(),
            "size=128M".into(),
            "--disk".into(),
            format!("path={},direct=on", disk.display()),
            "--serial".into(),
            format!("file={}", serial.display()),
        ],
    );
    assert!(wait_until(Duration::from_secs(30), || read(&serial)
        .contains("test-guest: ready")));
    std::thread::sleep(Duration::from_millis(400));
    let snap = dir.path("snap");
    vmm.pause_and_snapshot(&snap);
    vmm.shutdown_vmm();
    assert!(
        !read(&serial).contains("disk="),
        "finished before the snapshot"
    );
    std::fs::remove_file(&serial).expect("remove the first part");
    let vmm = ApiVmm::start(
        &dir,
        "restored",
        None,
        &[
            "--restore".into(),
            format!("source_url=file://{}", snap.display()),
        ],
    );
    let (code, body) = vmm.api("GET", "vm.info", None);
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("\"direct\":true"), "{body}");
    assert_eq!(vmm.api("PUT", "vm.resume", None).0, 204);
    vmm.wait_poweroff(Duration::from_secs(120));
    let after = read(&serial);
    assert!(after.contains("disk=ok"), "{after}");
    assert!(!after.contains("test-guest: ready"), "the guest restarted");
}

/// Live migration over a unix socket with disk requests in flight,
/// `direct=on`: the destination opens the image with `O_DIRECT` again (the
/// option travels in the configuration) and the guest's read-back
/// verifies there.
#[test]
fn a_direct_disk_migrates_and_verifies() {
    let dir = TempDir::new("direct-mig");
    let disk = dir.path("disk.img");
    sparse_file(&disk, 512 << 20);
    let serial = dir.path("serial.txt");
    let mut src = ApiVmm::boot(
        &dir,
        "src",
        None,
        "workload=disk mib=384 flushes=64",
        "128M",
        &serial,
        &[
            "--disk".into(),
            format!("path={},direct=on", disk.display()),
        ],
    );
    assert!(wait_until(Duration::from_secs(30), || read(&serial)
        .contains("test-guest: ready")));
    std::thread::sleep(Duration::from_millis(400));
    // The destination reopens (and truncates) the serial file by its path.
    std::fs::rename(&serial, dir.path("before.txt")).expect("rename the serial file");
    let dst = ApiVmm::start(&dir, "dst", None, &[]);
    let mig = format!("unix:{}", dir.path("mig.sock").display());
    let socket = dst.socket.clone();
    let operand = format!("receiver_url={mig}");
    let receiver = std::thread::spawn(move || ch_remote(&socket, &["receive-migration", &operand]));
    assert!(
        wait_until(Duration::from_secs(20), || read(&dir.path("dst.events"))
            .contains("migration-receive-ready")),
        "the destination did not listen"
    );
    let out = ch_remote(
        &src.socket,
        &["send-migration", &format!("destination_url={mig}")],
    );
    assert!(
        out.status.success(),
        "send-migration: {}",
        text(&out.stderr)
    );
    let r = receiver.join().expect("receiver thread");
    assert!(r.status.success(), "receive-migration: {}", text(&r.stderr));
    src.wait_exit(Duration::from_secs(20));
    assert!(
        !read(&dir.path("before.txt")).contains("disk="),
        "finished before the migration"
    );
    let (code, body) = dst.api("GET", "vm.info", None);
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("\"direct\":true"), "{body}");
    dst.wait_poweroff(Duration::from_secs(180));
    let after = read(&serial);
    assert!(after.contains("disk=ok"), "{after}");
}
