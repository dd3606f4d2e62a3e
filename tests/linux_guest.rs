// Copyright 2026 The ft-cloud-hypervisor authors.
// SPDX-License-Identifier: Apache-2.0

//! The Linux guest tier: a minimal Linux 6.1 (scripts/build-linux-guest,
//! cached in build/linux-guest/) boots on our VMM to a busybox shell on the
//! serial console. Commands typed on the VMM's standard input reach the
//! shell, and `poweroff -f` ends the VMM with status 0 (through the ACPI
//! sleep register on port 0x600). Linux's own virtio-pci and virtio-blk
//! drivers find the disk and the network device through the ACPI PCI host
//! bridge and MSI-X: an ext2 file written in one boot is read in the next,
//! and the guest exchanges TCP with a listener on the tap's host side.
//! A boot to the shell recorded with `--fault-tolerance` replays from its
//! log with byte-identical serial output.

mod common;

use common::linux;

use std::io::{Read, Write};
use std::process::{Child, ChildStdin, Command, Stdio};

use std::time::{Duration, Instant};

/// A running Linux guest with its serial console on our pipes.
struct Guest {
    child: Child,
    stdin: ChildStdin,
    output: common::captured::Captured,
    reader: std::thread::JoinHandle<()>,
    started: Instant,
}

impl Guest {
    fn boot(kernel_key: &str) -> Guest {
        Self::boot_with(kernel_key, &[])
    }

    fn boot_with(kernel_key: &str, extra: &[&str]) -> Guest {
        Self::boot_cmdline(kernel_key, extra, &linux::tsc_cmdline())
    }

    fn boot_cmdline(kernel_key: &str, extra: &[&str], cmdline: &str) -> Guest {
        let started = Instant::now();
        let mut child = Command::new(common::vmm_bin())
            .args(extra)
            .args(linux::boot_args(kernel_key, cmdline))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn cloud-hypervisor");
        let stdin = child.stdin.take().expect("piped stdin");
        let mut stdout = child.stdout.take().expect("piped stdout");
        let output = common::captured::Captured::default();
        let o2 = output.clone();
        let reader = std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = stdout.read(&mut buf) {
                if n == 0 {
                    break;
                }
                o2.append(&buf[..n]);
            }
        });
        Guest {
            child,
            stdin,
            output,
            reader,
            started,
        }
    }

    fn text(&self) -> String {
        self.output.text()
    }

    fn len(&self) -> usize {
        self.output.len()
    }

    fn contains_after(&self, needle: &str, from: usize) -> bool {
        self.output.contains_after(needle, from)
    }

    /// Waits until the serial output contains `needle` after byte `from`.
    fn wait_for(&mut self, needle: &str, from: usize, timeout: Duration) -> Duration {
        let ok = common::wait_until(timeout, || self.contains_after(needle, from));
        if !ok {
            let _ = self.child.kill();
            panic!("no {needle:?} within {timeout:?}; serial:\n{}", self.text());
        }
        self.started.elapsed()
    }

    fn send(&mut self, line: &str) -> usize {
        let at = self.len();
        self.stdin
            .write_all(line.as_bytes())
            .expect("write to the VMM");
        self.stdin.flush().expect("flush to the VMM");
        at
    }

    /// Powers the guest off and returns the VMM's exit status.
    fn poweroff(self) -> std::process::ExitStatus {
        self.poweroff_with_output().0
    }

    /// Powers the guest off; returns the VMM's exit status and the whole
    /// serial output.
    fn poweroff_with_output(mut self) -> (std::process::ExitStatus, Vec<u8>) {
        self.send("poweroff -f\n");
        self.finish()
    }

    /// Waits for the VMM to exit; returns its status and the whole serial
    /// output.
    fn finish(mut self) -> (std::process::ExitStatus, Vec<u8>) {
        let status = common::wait_timeout(&mut self.child, Duration::from_secs(60));
        let Some(status) = status else {
            let _ = self.child.kill();
            panic!("VMM still running after poweroff; serial:\n{}", self.text());
        };
        // The reader ends at the end of the pipe.
        self.reader.join().expect("serial reader");
        let output = self.output.take();
        (status, output)
    }
}

const BOOT_TIMEOUT: Duration = Duration::from_secs(300);

/// The record/replay tests run alone (write lock), the others side by
/// side (read lock): they are the slowest and the most sensitive to host
/// load.
static EXCLUSIVE: std::sync::RwLock<()> = std::sync::RwLock::new(());

fn shared() -> std::sync::RwLockReadGuard<'static, ()> {
    EXCLUSIVE.read().unwrap_or_else(|e| e.into_inner())
}

#[test]
fn pvh_boot_to_shell_command_round_trip_and_poweroff() {
    let _shared = shared();
    let mut g = Guest::boot("VMLINUX");
    let t = g.wait_for("linux-guest: ready", 0, BOOT_TIMEOUT);
    eprintln!(
        "PVH vmlinux: linux-guest: ready after {:.2} s",
        t.as_secs_f64()
    );
    // The shell's answer is computed in the guest: the input reached it.
    let at = g.send("echo round-$((6*7))-trip; uname -r\n");
    g.wait_for("round-42-trip", at, Duration::from_secs(60));
    let at = g.send("cat /proc/interrupts\n");
    g.wait_for("LOC", at, Duration::from_secs(60));
    let text = g.text();
    assert!(text.contains("Linux version 6.1"), "{text}");
    let status = g.poweroff();
    assert_eq!(status.code(), Some(0), "serial:\n{text}");
}

#[test]
fn bzimage_boot_to_shell_and_poweroff() {
    let _shared = shared();
    let mut g = Guest::boot("BZIMAGE");
    let t = g.wait_for("linux-guest: ready", 0, BOOT_TIMEOUT);
    eprintln!("bzImage: linux-guest: ready after {:.2} s", t.as_secs_f64());
    let at = g.send("echo bz-$((40+2))\n");
    g.wait_for("bz-42", at, Duration::from_secs(60));
    let status = g.poweroff();
    assert_eq!(status.code(), Some(0));
}

#[test]
fn virtio_blk_disk_persists_across_boots() {
    let _shared = shared();
    let dir = common::TempDir::new("linux-disk");
    let disk = dir.path("disk.img");
    std::fs::File::create(&disk)
        .and_then(|f| f.set_len(16 << 20))
        .expect("create the disk image");
    let disk_arg = format!("path={}", disk.display());
    let args = ["--disk", disk_arg.as_str()];

    let mut g = Guest::boot_with("VMLINUX", &args);
    g.wait_for("linux-guest: ready", 0, BOOT_TIMEOUT);
    let at = g.send(
        "mke2fs -q /dev/vda && mount /dev/vda /mnt && echo \"saved-$((7*6))\" > /mnt/f \
         && sync && umount /mnt && echo disk-written\n",
    );
    g.wait_for("disk-written", at, Duration::from_secs(120));
    assert_eq!(g.poweroff().code(), Some(0));

    let mut g = Guest::boot_with("VMLINUX", &args);
    g.wait_for("linux-guest: ready", 0, BOOT_TIMEOUT);
    let at = g.send("mount /dev/vda /mnt && cat /mnt/f && echo read-$(cat /mnt/f)\n");
    g.wait_for("read-saved-42", at, Duration::from_secs(120));
    assert_eq!(g.poweroff().code(), Some(0));
}

#[test]
fn virtio_net_tcp_exchange_with_the_host() {
    let _shared = shared();
    // The VMM creates the tap with the host's address; the listener binds
    // once the address exists.
    const HOST: &str = "192.168.251.1";
    const PORT: u16 = 7777;
    let (tx, rx) = std::sync::mpsc::channel();
    let server = std::thread::spawn(move || {
        let start = Instant::now();
        let listener = loop {
            match std::net::TcpListener::bind((HOST, PORT)) {
                Ok(l) => break l,
                Err(e) if start.elapsed() > BOOT_TIMEOUT => panic!("bind {HOST}:{PORT}: {e}"),
                Err(_) => std::thread::sleep(Duration::from_millis(200)),
            }
        };
        let (mut conn, peer) = listener.accept().expect("accept");
        let mut line = Vec::new();
        let mut byte = [0u8; 1];
        while conn.read(&mut byte).expect("read") == 1 && byte[0] != b'\n' {
            line.push(byte[0]);
        }
        conn.write_all(b"pong-from-host-42\n").expect("reply");
        tx.send((String::from_utf8_lossy(&line).into_owned(), peer))
            .expect("report");
    });

    let net_arg = format!("tap=ftlg0,ip={HOST},mask=255.255.255.0");
    let mut g = Guest::boot_with("VMLINUX", &["--net", net_arg.as_str()]);
    g.wait_for("linux-guest: ready", 0, BOOT_TIMEOUT);
    let at = g.send(&format!(
        "ip addr add 192.168.251.2/24 dev eth0 && ip link set eth0 up && \
         echo ping-from-linux | nc {HOST} {PORT}\n"
    ));
    g.wait_for("pong-from-host-42", at, Duration::from_secs(120));
    let (line, peer) = rx
        .recv_timeout(Duration::from_secs(30))
        .expect("the host side saw the connection");
    assert_eq!(line, "ping-from-linux");
    assert_eq!(peer.ip().to_string(), "192.168.251.2");
    server.join().expect("server thread");
    assert_eq!(g.poweroff().code(), Some(0));
}

/// Records the Linux guest booting to its shell (and, when `command` is
/// given, that command typed on the console and its output), stops the
/// recording through the API at the next prompt, replays the log alone and
/// asserts byte-identical serial output and an equal final state digest
/// (the replay's exit status).
fn record_and_replay_linux(tag: &str, command: Option<(&str, &str)>) {
    let dir = common::TempDir::new(tag);
    let log = dir.path("boot.ftlog");
    let socket = dir.path("api.sock");
    let record = format!("mode=record,log={}", log.display());
    let api = format!("path={}", socket.display());
    let cmdline = linux::REPLAYABLE_CMDLINE.to_string();
    let started = Instant::now();
    let mut g = Guest::boot_cmdline(
        "VMLINUX",
        &["--fault-tolerance", &record, "--api-socket", &api],
        &cmdline,
    );
    g.wait_for("linux-guest: ready", 0, BOOT_TIMEOUT);
    let at = g.len();
    g.wait_for("/ # ", at, Duration::from_secs(60));
    if let Some((line, answer)) = command {
        let at = g.send(line);
        g.wait_for(answer, at, Duration::from_secs(60));
        g.wait_for("/ # ", at + 1, Duration::from_secs(60));
    }
    // The VMM stops the recording: the log ends at a kick after the last
    // exit, and replay ends there too.
    let out = common::ch_remote(&socket, &["shutdown"]);
    assert!(
        out.status.success(),
        "shutdown: {}",
        common::text(&out.stderr)
    );
    // The VMM may close the connection as it exits: only its exit matters.
    let _ = common::ch_remote(&socket, &["shutdown-vmm"]);
    let (status, recorded) = g.finish();
    let recorded_s = started.elapsed();
    assert_eq!(status.code(), Some(0), "recording failed");
    let log_len = std::fs::metadata(&log).expect("the log").len();

    let started = Instant::now();
    let replay = format!("mode=replay,log={}", log.display());
    let child = Command::new(common::vmm_bin())
        .args(["--fault-tolerance", &replay])
        .args(linux::boot_args("VMLINUX", &cmdline))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn the replay");
    let out = common::wait_output(child, Duration::from_secs(600));
    let (status, replayed) = (out.status, out.stdout);
    let errors = common::text(&out.stderr);
    eprintln!(
        "Linux boot: recorded in {:.1} s ({} MB log), replayed in {:.1} s",
        recorded_s.as_secs_f64(),
        log_len >> 20,
        started.elapsed().as_secs_f64()
    );
    assert_eq!(status.code(), Some(0), "replay failed: {errors}");
    let rec = String::from_utf8_lossy(&recorded);
    assert!(rec.contains("linux-guest: ready") && rec.contains("/ # "));
    if let Some((_, answer)) = command {
        assert!(rec.contains(answer));
    }
    if replayed != recorded {
        let at = recorded
            .iter()
            .zip(&replayed)
            .position(|(a, b)| a != b)
            .unwrap_or(recorded.len().min(replayed.len()));
        panic!(
            "serial output differs at byte {at} (recorded {} bytes, replayed {}):\n\
             recorded: {:?}\nreplayed: {:?}\nstderr: {errors}",
            recorded.len(),
            replayed.len(),
            String::from_utf8_lossy(
                &recorded[at.saturating_sub(200)..(at + 200).min(recorded.len())]
            ),
            String::from_utf8_lossy(
                &replayed[at.saturating_sub(200)..(at + 200).min(replayed.len())]
            ),
        );
    }
}

/// The hardest determinism test: a Linux boot to the shell, recorded, then
/// replayed from the log alone with byte-identical serial output and final
/// state digest. Runs alone (write lock): it is the slowest test and the
/// one most sensitive to host load.
#[test]
fn a_recorded_linux_boot_to_the_shell_replays_byte_identically() {
    let _alone = EXCLUSIVE.write().unwrap_or_else(|e| e.into_inner());
    record_and_replay_linux("linux-ft", None);
}

/// The same with commands typed at the shell: pipelines start short-lived
/// processes (fork, copy-on-write, exec), whose page-table changes reach
/// the replay inside checkpoints, written by the VMM behind KVM's back
/// (issue 11: KVM must drop its translations of them).
#[test]
fn a_recorded_linux_shell_command_replays_byte_identically() {
    let _alone = EXCLUSIVE.write().unwrap_or_else(|e| e.into_inner());
    record_and_replay_linux(
        "linux-ft-input",
        Some((
            "echo X$((6*7)) | tr X Y; ls /proc | wc -l; cat /proc/interrupts | head -3\n",
            "Y42",
        )),
    );
}
