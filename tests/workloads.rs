// Copyright 2026 The ft-cloud-hypervisor authors.
// SPDX-License-Identifier: Apache-2.0

//! The test guest's workloads on the real VMM and KVM.

mod common;

use std::time::{Duration, Instant};

use common::{boot_guest, text, TempDir};

fn lines(out: &[u8]) -> Vec<String> {
    text(out)
        .lines()
        .map(|l| l.trim_end().to_string())
        .collect()
}

/// SplitMix64 as the guest computes it, for any step count.
fn expected(steps: u64) -> String {
    let mut x: u64 = 0;
    for _ in 0..steps {
        let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        x = z ^ (z >> 31);
    }
    format!("result={x:016x}")
}

#[test]
fn reference_values() {
    assert_eq!(expected(1), "result=e220a8397b1dcdaf");
    assert_eq!(expected(1000), "result=a17ac4d60a6b3f89");
}

#[test]
fn compute_one_step() {
    let out = boot_guest("workload=compute steps=1", Duration::from_secs(60));
    let l = lines(&out.stdout);
    assert!(
        out.status.success(),
        "exit {:?}: {}",
        out.status,
        text(&out.stderr)
    );
    assert_eq!(
        l.first().map(String::as_str),
        Some("test-guest: ready"),
        "{l:?}"
    );
    assert_eq!(
        l.last().map(String::as_str),
        Some("result=e220a8397b1dcdaf")
    );
}

#[test]
fn compute_thousand_steps() {
    let out = boot_guest("workload=compute steps=1000", Duration::from_secs(60));
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(lines(&out.stdout).contains(&"result=a17ac4d60a6b3f89".to_string()));
}

#[test]
fn compute_with_a_fast_timer_reports_ticks() {
    // 3·10⁸ steps take a good fraction of a second natively; at 1000 Hz the
    // guest must see ticks while it computes, and still get the right result.
    let steps = 300_000_000u64;
    let out = boot_guest(
        &format!("workload=compute steps={steps} hz=1000"),
        Duration::from_secs(120),
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let l = lines(&out.stdout);
    let ticks: Vec<&String> = l.iter().filter(|s| s.starts_with("tick=")).collect();
    assert!(!ticks.is_empty(), "no tick lines: {l:?}");
    // Each line reports the first tick the guest noticed in a new group of
    // ten (ticks can land while it prints), with tick and step increasing.
    let mut last = (0u64, 0u64);
    for t in &ticks {
        let mut k = 0;
        let mut i = 0;
        for kv in t.split_whitespace() {
            match kv.split_once('=') {
                Some(("tick", v)) => k = v.parse().expect("tick number"),
                Some(("step", v)) => i = v.parse().expect("step number"),
                _ => panic!("bad tick line {t}"),
            }
        }
        assert!(k / 10 > last.0 / 10, "{t} after {last:?}");
        assert!(i >= last.1 && i <= steps, "{t} after {last:?}");
        last = (k, i);
    }
    assert_eq!(l.last(), Some(&expected(steps)));
}

#[test]
fn ticks_at_100_and_1000_hz() {
    for (count, hz) in [(20u64, 100u64), (200, 1000)] {
        let start = Instant::now();
        let out = boot_guest(
            &format!("workload=ticks count={count} hz={hz}"),
            Duration::from_secs(60),
        );
        let took = start.elapsed();
        assert!(out.status.success(), "{}", text(&out.stderr));
        let l = lines(&out.stdout);
        assert!(l.contains(&format!("ticks={count}")), "{l:?}");
        // The timer runs at the programmed rate: 200 ms of ticks cannot
        // take less than 200 ms (an upper bound would be a timing test).
        let min = Duration::from_millis(count * 1000 / hz);
        assert!(took >= min, "{count} ticks at {hz} Hz took only {took:?}");
    }
}

#[test]
fn serial_to_file_and_off() {
    let dir = TempDir::new("serial");
    let serial = dir.path("serial.log");
    let guest = common::test_guest().to_str().unwrap().to_string();
    let out = common::run_vmm(
        &[
            "--kernel",
            &guest,
            "--cmdline",
            "workload=compute steps=1000",
            "--serial",
            &format!("file={}", serial.display()),
            "--console",
            "off",
        ],
        Duration::from_secs(60),
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        out.stdout.is_empty(),
        "serial went to stdout: {}",
        text(&out.stdout)
    );
    let log = std::fs::read_to_string(&serial).unwrap();
    assert!(log.contains("test-guest: ready"), "{log}");
    assert!(log.contains("result=a17ac4d60a6b3f89"), "{log}");
    // --serial off: the guest still runs to completion, nothing is printed.
    let out = common::run_vmm(
        &[
            "--kernel",
            &guest,
            "--cmdline",
            "workload=compute steps=1000",
            "--serial",
            "off",
            "--console",
            "off",
        ],
        Duration::from_secs(60),
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(out.stdout.is_empty());
}

#[test]
fn unknown_workload_is_reported_by_the_guest() {
    let out = boot_guest("workload=nonsense", Duration::from_secs(60));
    assert!(out.status.success());
    assert!(
        text(&out.stdout).contains("test-guest: error"),
        "{}",
        text(&out.stdout)
    );
}

/// `workload=dirty fill=F` reads the PVH memory map: F MiB that do not
/// fit in the RAM above the guest's heap (128 MiB of memory here) are
/// refused by the guest with the range it found, and the VM powers off.
#[test]
fn a_fill_larger_than_the_guest_memory_is_refused_by_the_guest() {
    let out = boot_guest("workload=dirty fill=120", Duration::from_secs(60));
    assert!(out.status.success());
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains(
            "test-guest: error: fill: fill=120 MiB does not fit: RAM above the heap is 0x"
        ) && stdout.contains("..0x8000000"),
        "{stdout}"
    );
    assert!(!stdout.contains("dirty: filled"), "{stdout}");
}

/// A guest reset (port 0x600 value 1, or 0xfe on the i8042 command port)
/// reboots the VM, as Cloud Hypervisor does: the guest boots again.
#[test]
fn guest_reset_reboots_the_vm() {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};
    for via in ["port", "i8042"] {
        let dir = TempDir::new("reset");
        let events = dir.path("events.json");
        let guest = common::test_guest().to_str().unwrap().to_string();
        let mut child = Command::new(common::vmm_bin())
            .args([
                "--kernel",
                &guest,
                "--cmdline",
                &format!("workload=reset via={via}"),
            ])
            .args(["--serial", "tty", "--console", "off"])
            .arg("--event-monitor")
            .arg(format!("path={}", events.display()))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut boots = 0;
        let deadline = Instant::now() + Duration::from_secs(30);
        while boots < 3 && Instant::now() < deadline {
            if let Ok(line) = rx.recv_timeout(Duration::from_millis(200)) {
                assert!(!line.contains("ignored by the VMM"), "{via}: {line}");
                if line == "test-guest: ready" {
                    boots += 1;
                }
            }
        }
        let _ = child.kill();
        let _ = child.wait();
        assert_eq!(boots, 3, "{via}: the VM did not reboot");
        let ev = std::fs::read_to_string(&events).unwrap();
        assert!(
            ev.contains("\"rebooting\"") && ev.contains("\"rebooted\""),
            "{ev}"
        );
    }
}
