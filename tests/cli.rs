// Copyright 2026 The ft-cloud-hypervisor authors.
// SPDX-License-Identifier: Apache-2.0

//! Bad command lines and bad kernels: a clear one-line error, a non-zero
//! exit, never a panic.

mod common;

use std::time::Duration;

use common::{run_vmm, text, TempDir};

fn assert_refused(args: &[&str], needle: &str) {
    let out = run_vmm(args, Duration::from_secs(30));
    let err = text(&out.stderr);
    assert!(!out.status.success(), "{args:?} was accepted");
    assert!(!err.contains("panicked"), "{args:?} panicked: {err}");
    assert!(
        err.to_lowercase().contains(&needle.to_lowercase()),
        "{args:?}: expected {needle:?} in stderr: {err}"
    );
}

#[test]
fn unknown_flag() {
    assert_refused(&["--frobnicate"], "frobnicate");
}

#[test]
fn nothing_to_do() {
    let out = run_vmm(&[], Duration::from_secs(30));
    assert!(!out.status.success());
    assert!(!text(&out.stderr).contains("panicked"));
}

#[test]
fn unsupported_options_are_refused_not_ignored() {
    let guest = common::test_guest().to_str().unwrap().to_string();
    assert_refused(&["--kernel", &guest, "--cpus", "boot=2"], "vcpu");
    assert_refused(
        &["--kernel", &guest, "--disk", "path=/tmp/x.img,iommu=on"],
        "disk iommu",
    );
    assert_refused(&["--kernel", &guest, "--serial", "pty"], "pty");
    assert_refused(
        &["--kernel", &guest, "--memory", "size=128M,shared=on"],
        "shared",
    );
    assert_refused(&["--kernel", &guest, "--memory", "size=lots"], "lots");
}

#[test]
fn help_and_version() {
    let out = run_vmm(&["--help"], Duration::from_secs(30));
    assert!(out.status.success());
    assert!(text(&out.stdout).contains("--kernel"));
    let out = run_vmm(&["--version"], Duration::from_secs(30));
    assert!(out.status.success());
    assert!(!text(&out.stdout).trim().is_empty());
}

#[test]
fn missing_kernel_file() {
    assert_refused(
        &["--kernel", "/nonexistent/kernel.elf", "--serial", "off"],
        "/nonexistent/kernel.elf",
    );
}

#[test]
fn garbage_and_empty_kernel_files() {
    let dir = TempDir::new("garbage");
    let garbage = dir.path("garbage.bin");
    let bytes: Vec<u8> = (0..65536u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    std::fs::write(&garbage, bytes).unwrap();
    assert_refused(
        &["--kernel", garbage.to_str().unwrap(), "--serial", "off"],
        "neither",
    );
    let empty = dir.path("empty.bin");
    std::fs::write(&empty, b"").unwrap();
    assert_refused(
        &["--kernel", empty.to_str().unwrap(), "--serial", "off"],
        "neither",
    );
    // A truncated copy of the real guest: an ELF whose segments are cut off.
    let real = std::fs::read(common::test_guest()).unwrap();
    let cut = dir.path("cut.elf");
    std::fs::write(&cut, &real[..real.len().min(200)]).unwrap();
    let out = run_vmm(
        &["--kernel", cut.to_str().unwrap(), "--serial", "off"],
        Duration::from_secs(30),
    );
    assert!(!out.status.success());
    assert!(
        !text(&out.stderr).contains("panicked"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn unwritable_serial_file() {
    let guest = common::test_guest().to_str().unwrap().to_string();
    assert_refused(
        &[
            "--kernel",
            &guest,
            "--serial",
            "file=/nonexistent/dir/serial.log",
        ],
        "/nonexistent/dir/serial.log",
    );
}
