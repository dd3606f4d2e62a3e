// Copyright 2026 The ft-cloud-hypervisor authors.
// SPDX-License-Identifier: Apache-2.0

//! FT VMotion for a test: a plain KV guest on host A of a [`PairNet`], an
//! empty VMM to receive its backup, the two `ch-remote` calls
//! (`ft-receive-backup`, `ft-add-backup`) under a verified KV stream, a
//! failover, and what the VMMs report of the seed (`vm.info`, events).

use std::ops::Deref;
use std::path::{Path, PathBuf};
use std::process::{Child, Output, Stdio};
use std::time::Duration;

use ft_kv_client::StreamReport;

use super::ftpair::{assert_clean, ft_events, kv_setup, stream_through, write_key, CHANNEL_PORT};
use super::netns::KillOnDrop;
use super::pair::{GuestVmm, Host, PairNames, PairNet, LOG_B};
use super::{api, ch_remote, spawn_ch_remote, test_guest, text, vmm_bin, wait_until, TempDir};

/// A test's directory: when the test fails, its files (logs, events; not
/// the disk images) are copied to `$TMPDIR/ft-vmotion-failed-NAME` for the
/// report before it is removed.
pub struct KeptDir {
    dir: TempDir,
    name: &'static str,
}

impl Deref for KeptDir {
    type Target = TempDir;

    fn deref(&self) -> &TempDir {
        &self.dir
    }
}

impl Drop for KeptDir {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let to = std::env::temp_dir().join(format!("ft-vmotion-failed-{}", self.name));
            let _ = std::fs::remove_dir_all(&to);
            let _ = std::fs::create_dir_all(&to);
            for e in std::fs::read_dir(&self.dir.0)
                .into_iter()
                .flatten()
                .flatten()
            {
                let name = e.file_name();
                if !name.to_string_lossy().ends_with(".img") {
                    let _ = std::fs::copy(e.path(), to.join(name));
                }
            }
            eprintln!("ft_vmotion: files kept in {}", to.display());
        }
    }
}

/// A test's surroundings: its directory (`TempDir` tag `tag`, kept as
/// `keep` on failure), a fresh pair network, and that network's names for
/// [`finish`] to check.
pub fn begin(tag: &str, keep: &'static str) -> (KeptDir, PairNet, PairNames) {
    let dir = KeptDir {
        dir: TempDir::new(tag),
        name: keep,
    };
    let net = PairNet::new();
    let names = net.names();
    (dir, net, names)
}

/// The end of a test: drops `vms` (its VMMs and whatever else runs in the
/// network, in order), then the network, and checks that nothing of
/// `names` is left behind.
pub fn finish<T>(vms: T, net: PairNet, names: &PairNames) {
    drop(vms);
    drop(net);
    assert_clean(names);
}

pub fn file_tiebreaker(dir: &TempDir) -> String {
    format!("file:{}", dir.path("tiebreak").display())
}

/// A running KV guest on host A with an API socket, no fault tolerance.
pub fn start_plain(net: &PairNet, dir: &TempDir, disk: &Path) -> GuestVmm {
    let devices = [
        "--disk".into(),
        format!("path={}", disk.display()),
        "--net".into(),
        net.guest_net(Host::A),
    ];
    start_plain_guest(net, dir, &net.kv_cmdline(), "size=128M", &devices)
}

/// The test guest with `cmdline` and `--memory memory`, running on host A
/// as `primary` (its API socket `dir/primary.sock`, its events
/// `dir/events-primary.json`), no fault tolerance, with `devices` (more
/// arguments).
pub fn start_plain_guest(
    net: &PairNet,
    dir: &TempDir,
    cmdline: &str,
    memory: &str,
    devices: &[String],
) -> GuestVmm {
    let guest = test_guest().to_str().expect("utf-8");
    let api = format!("path={}", dir.path("primary.sock").display());
    let events = format!("path={}", dir.path("events-primary.json").display());
    let mut args = vec![
        "--kernel",
        guest,
        "--cmdline",
        cmdline,
        "--memory",
        memory,
        "--api-socket",
        &api,
        "--event-monitor",
        &events,
        "-v",
    ];
    args.extend(devices.iter().map(String::as_str));
    net.spawn_vmm(Host::A, &dir.0, "primary", &args)
}

/// A VMM with no VM on `host`, API socket `dir/NAME.sock`.
pub fn start_empty(net: &PairNet, host: Host, dir: &TempDir, name: &str) -> GuestVmm {
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
pub fn receive_backup(dir: &TempDir, name: &str, listen: &str, key: &Path, tap: &str) -> Child {
    receive_backup_with(dir, name, listen, key, tap, &file_tiebreaker(dir), "")
}

/// As [`receive_backup`], with tiebreaker `tb` and `extra` options.
pub fn receive_backup_with(
    dir: &TempDir,
    name: &str,
    listen: &str,
    key: &Path,
    tap: &str,
    tb: &str,
    extra: &str,
) -> Child {
    spawn_ch_remote(
        &dir.path(&format!("{name}.sock")),
        &[
            "ft-receive-backup",
            listen,
            &format!(
                "key={},tiebreaker={tb},net_taps={tap},serial={}{extra}",
                key.display(),
                dir.path(&format!("serial-{name}.txt")).display()
            ),
        ],
    )
}

pub fn add_backup(dir: &TempDir, sock: &str, peer: &str, key: &Path) -> Output {
    add_backup_with(dir, sock, peer, key, &file_tiebreaker(dir), "")
}

/// As [`add_backup`], with tiebreaker `tb` and `extra` options.
pub fn add_backup_with(
    dir: &TempDir,
    sock: &str,
    peer: &str,
    key: &Path,
    tb: &str,
    extra: &str,
) -> Output {
    ch_remote(
        &dir.path(sock),
        &[
            "ft-add-backup",
            &format!("peer={peer},key={},tiebreaker={tb}{extra}", key.display()),
        ],
    )
}

pub fn wait_child(c: Child) -> Output {
    wait_child_within(c, Duration::from_secs(60))
}

/// As [`wait_child`], killing it after `within`.
pub fn wait_child_within(mut c: Child, within: Duration) -> Output {
    let ok = wait_until(within, || c.try_wait().ok().flatten().is_some());
    if !ok {
        let _ = c.kill();
    }
    c.wait_with_output().expect("ch-remote output")
}

pub fn info(dir: &TempDir, sock: &str) -> serde_json::Value {
    let (code, body) = api(&dir.path(sock), "GET", "vm.info", None);
    assert_eq!(code, 200, "{body}");
    serde_json::from_str(&body).expect("vm.info JSON")
}

/// The `seeded` event's pause (ms) and bytes sent.
pub fn seeded(events: &Path) -> (f64, u64) {
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

/// The `seed-progress` events: (round, pages found dirty at its start).
pub fn seed_progress(events: &Path) -> Vec<(u64, u64)> {
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

/// FT VMotion of the VM behind `from` (its API socket and VMM) to the
/// empty VMM `to` (its name and VMM), listening at `listen` on `host`,
/// while a verified KV stream runs: both `ch-remote` calls succeed.
/// Returns the stream's report.
pub fn vmotion_under_stream(
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
    assert_succeeded(&added, &format!("ft-add-backup to {}", to.0), from.1);
    assert_succeeded(&recv, &format!("ft-receive-backup on {}", to.0), to.1);
    report
}

/// Asserts that the `ch-remote` call `what` succeeded; if not, fails
/// with its stderr and the stderr of `vmm`, the VMM it spoke to.
pub fn assert_succeeded(out: &Output, what: &str, vmm: &GuestVmm) {
    assert!(
        out.status.success(),
        "{what}: {}\n{}",
        text(&out.stderr),
        vmm.stderr_text()
    );
}

/// A KV guest started without fault tolerance on host A, then protected
/// by FT VMotion to an empty VMM on host B while a verified stream runs.
pub struct Protected {
    pub primary: GuestVmm,
    pub backup: GuestVmm,
    /// The pair's key file.
    pub key: PathBuf,
    /// The backup's channel address.
    pub listen_b: String,
    /// The stream across the FT VMotion.
    pub report: StreamReport,
}

/// The pair's key (written to `dir`) and a plain KV guest on host A
/// ([`start_plain`]) that listens.
pub fn plain_kv_guest(net: &PairNet, dir: &TempDir) -> (PathBuf, GuestVmm) {
    let key = write_key(dir);
    let s = kv_setup(dir, file_tiebreaker(dir), false);
    let disk: PathBuf = s.disks.as_ref().expect("disk").0.clone();
    let mut primary = start_plain(net, dir, &disk);
    primary.wait_serial("kv: listening on", Duration::from_secs(60));
    (key, primary)
}

pub fn protect_kv_guest(net: &PairNet, dir: &TempDir) -> Protected {
    let (key, primary) = plain_kv_guest(net, dir);
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
pub fn fail_over(
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
