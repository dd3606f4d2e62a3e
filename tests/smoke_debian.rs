// Copyright 2026 The ft-cloud-hypervisor authors.
// SPDX-License-Identifier: Apache-2.0

//! Smoke test: Debian's packaged cloud kernel (a bzImage) boots through the
//! Linux 64-bit boot protocol until its banner reaches the serial port.
//! The kernel comes from scripts/fetch-debian-kernel (apt), or `$DEBIAN_KERNEL`.

mod common;

use std::io::Read;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

fn debian_kernel() -> PathBuf {
    if let Ok(p) = std::env::var("DEBIAN_KERNEL") {
        if std::path::Path::new(&p).is_file() {
            return PathBuf::from(p);
        }
    }
    let out = Command::new(common::repo_root().join("scripts/fetch-debian-kernel"))
        .stderr(Stdio::inherit())
        .output()
        .expect("run scripts/fetch-debian-kernel");
    assert!(out.status.success(), "scripts/fetch-debian-kernel failed");
    PathBuf::from(
        common::text(&out.stdout)
            .lines()
            .last()
            .expect("a path")
            .trim(),
    )
}

#[test]
fn debian_cloud_kernel_prints_its_banner() {
    let kernel = debian_kernel();
    let mut child = Command::new(common::vmm_bin())
        .args([
            "--kernel",
            kernel.to_str().unwrap(),
            "--cmdline",
            "console=ttyS0 earlyprintk=ttyS0",
            "--memory",
            "size=512M",
            "--serial",
            "tty",
            "--console",
            "off",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn cloud-hypervisor");
    let seen = Arc::new(Mutex::new(Vec::new()));
    let mut stdout = child.stdout.take().unwrap();
    let s2 = seen.clone();
    let reader = std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = stdout.read(&mut buf) {
            if n == 0 {
                break;
            }
            s2.lock().unwrap().extend_from_slice(&buf[..n]);
        }
    });
    let start = Instant::now();
    let found = loop {
        if String::from_utf8_lossy(&seen.lock().unwrap()).contains("Linux version") {
            break true;
        }
        if start.elapsed() > Duration::from_secs(300) {
            break false;
        }
        if let Ok(Some(_)) = child.try_wait() {
            std::thread::sleep(Duration::from_millis(200));
            break String::from_utf8_lossy(&seen.lock().unwrap()).contains("Linux version");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let _ = child.kill();
    let _ = child.wait();
    let _ = reader.join();
    let out = String::from_utf8_lossy(&seen.lock().unwrap()).to_string();
    assert!(
        found,
        "no banner after {:?}; serial:\n{out}",
        start.elapsed()
    );
    eprintln!("Linux banner after {:?}", start.elapsed());
}
