// Copyright 2026 The ft-cloud-hypervisor authors.
// SPDX-License-Identifier: Apache-2.0

//! The minimal Linux guest as a fault-tolerant pair on two namespace
//! hosts: a command typed at the primary's shell is replayed by the
//! backup; after `kill -9` of the primary the backup goes live and its
//! shell (the same shell, same processes) answers what is typed next.

mod common;

use std::io::Write;
use std::process::{ChildStdin, Stdio};
use std::time::Duration;

use common::captured::Captured;
use common::ftpair::{assert_clean, write_key, CHANNEL_PORT};
use common::netns::KillOnDrop;
use common::pair::{Host, PairNet, LOG_B};
use common::{linux_guest_paths, wait_until, TempDir};

/// A VMM whose serial port is its stdin/stdout, on our pipes.
struct Console {
    child: KillOnDrop,
    stdin: ChildStdin,
    output: Captured,
    stderr: std::path::PathBuf,
}

impl Console {
    fn start(net: &PairNet, host: Host, dir: &TempDir, name: &str, ft: String) -> Console {
        let p = linux_guest_paths();
        let stderr = dir.path(&format!("stderr-{name}.txt"));
        let mut command = net.host(host).command(common::vmm_bin());
        command
            .args(["--kernel", p["VMLINUX"].to_str().expect("utf-8")])
            .args(["--initramfs", p["INITRAMFS"].to_str().expect("utf-8")])
            .args([
                "--cmdline",
                "console=ttyS0 clearcpuid=4,158,306,308,151 noxsave norandmaps",
            ])
            .args([
                "--memory",
                "size=256M",
                "--serial",
                "tty",
                "--console",
                "off",
            ])
            .args(["--fault-tolerance", &ft, "-v"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&stderr).expect("stderr file"));
        let mut child = KillOnDrop::spawn(&mut command);
        let stdin = child.0.stdin.take().expect("stdin");
        let mut stdout = child.0.stdout.take().expect("stdout");
        let output = Captured::default();
        let out = output.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = std::io::Read::read(&mut stdout, &mut buf) {
                if n == 0 {
                    break;
                }
                out.append(&buf[..n]);
            }
        });
        Console {
            child,
            stdin,
            output,
            stderr,
        }
    }

    fn type_line(&mut self, line: &str) {
        self.stdin
            .write_all(format!("{line}\n").as_bytes())
            .expect("type");
    }

    fn wait_for(&self, text: &str, timeout: Duration) {
        assert!(
            wait_until(timeout, || self.output.text().contains(text)),
            "no {text:?}; output:\n{}\nstderr:\n{}",
            self.output.text(),
            std::fs::read_to_string(&self.stderr).unwrap_or_default()
        );
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }
}

#[test]
fn a_linux_shell_survives_the_death_of_its_primary() {
    let dir = TempDir::new("ftpair-linux");
    let net = PairNet::new();
    let names = net.names();
    let key = write_key(&dir);
    let common = format!(
        "key={},tiebreaker=file:{}",
        key.display(),
        dir.path("tiebreak").display()
    );
    let mut backup = Console::start(
        &net,
        Host::B,
        &dir,
        "backup",
        format!("mode=backup,listen=tcp:{LOG_B}:{CHANNEL_PORT},{common}"),
    );
    let mut primary = Console::start(
        &net,
        Host::A,
        &dir,
        "primary",
        format!("mode=primary,peer=tcp:{LOG_B}:{CHANNEL_PORT},{common}"),
    );
    primary.wait_for("/ # ", Duration::from_secs(240));
    primary.type_line("echo PAIR-$((6*7)); cat /proc/uptime > /tmp/up");
    primary.wait_for("PAIR-42", Duration::from_secs(60));
    // The backup replays the same session (its console shows it too).
    backup.wait_for("PAIR-42", Duration::from_secs(60));
    primary.child.kill9();
    assert!(
        wait_until(Duration::from_secs(30), || backup
            .stderr()
            .contains("event go-live")),
        "{}",
        backup.stderr()
    );
    // The same shell answers on the backup, with the file written before.
    backup.type_line("echo LIVE-$((6*7)); test -s /tmp/up && echo FILE-KEPT");
    backup.wait_for("LIVE-42", Duration::from_secs(60));
    backup.wait_for("FILE-KEPT", Duration::from_secs(10));
    backup.type_line("poweroff -f");
    let status = backup.child.wait_timeout(Duration::from_secs(60));
    assert!(status.is_some_and(|s| s.success()), "{}", backup.stderr());
    drop(backup);
    drop(primary);
    drop(net);
    assert_clean(&names);
}
