// Copyright 2026 The ft-cloud-hypervisor authors.
// SPDX-License-Identifier: Apache-2.0

//! The test guest's virtio-blk driver (`workload=disk`) on the real VMM:
//! pattern write/flush/read-back, a read-only disk, the device ID.

mod common;

use common::{boot_disk, TempDir};

fn sparse_file(dir: &TempDir, name: &str, size: u64) -> String {
    let path = dir.path(name);
    let file = std::fs::File::create(&path).expect("create disk image");
    file.set_len(size).expect("size disk image");
    path.to_str().expect("utf-8 path").to_string()
}

#[test]
fn patterns_round_trip_through_the_disk_file() {
    let dir = TempDir::new("disk-patterns");
    let image = sparse_file(&dir, "disk.img", 32 << 20);
    let (ok, lines, stderr) = boot_disk(
        "workload=disk mib=8 flushes=4",
        &format!("path={image},id=disk7"),
    );
    assert!(ok, "{lines:?}\n{stderr}");
    assert_eq!(
        lines.first().map(String::as_str),
        Some("test-guest: ready"),
        "{lines:?}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("disk: id=disk7 sectors=65536 flush=yes read-only=no")),
        "{lines:?}"
    );
    assert_eq!(
        lines.last().map(String::as_str),
        Some("disk=ok"),
        "{lines:?}"
    );
    // The patterns reached the file: the first 8 MiB are no longer zero.
    let data = std::fs::read(&image).expect("read the image");
    assert!(data[..8 << 20]
        .chunks(4096)
        .all(|c| c.iter().any(|&b| b != 0)));
}

#[test]
fn a_read_only_disk_refuses_writes_and_the_vm_runs_on() {
    let dir = TempDir::new("disk-ro");
    let image = sparse_file(&dir, "disk.img", 1 << 20);
    std::fs::write(&image, vec![0xa5u8; 1 << 20]).expect("fill the image");
    let (ok, lines, stderr) = boot_disk("workload=disk", &format!("path={image},readonly=on"));
    assert!(ok, "{lines:?}\n{stderr}");
    assert!(
        lines.iter().any(|l| l.ends_with("read-only=yes")),
        "{lines:?}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l == "disk: write refused on the read-only disk"),
        "{lines:?}"
    );
    assert_eq!(
        lines.last().map(String::as_str),
        Some("disk=ok"),
        "{lines:?}"
    );
    let data = std::fs::read(&image).expect("read the image");
    assert!(
        data.iter().all(|&b| b == 0xa5),
        "the read-only image changed"
    );
}

#[test]
fn a_disk_too_small_for_the_workload_is_reported() {
    let dir = TempDir::new("disk-small");
    let image = sparse_file(&dir, "disk.img", 1 << 20);
    let (ok, lines, stderr) = boot_disk("workload=disk mib=2", &format!("path={image}"));
    assert!(ok, "{lines:?}\n{stderr}");
    assert_eq!(
        lines.last().map(String::as_str),
        Some("disk: error: 2 MiB do not fit a disk of 2048 sectors"),
        "{lines:?}"
    );
}

#[test]
fn malformed_descriptor_chains_are_refused_and_the_device_recovers() {
    let dir = TempDir::new("disk-malformed");
    let image = sparse_file(&dir, "disk.img", 1 << 20);
    let (ok, lines, stderr) = boot_disk("workload=malformed", &format!("path={image}"));
    assert!(ok, "{lines:?}\n{stderr}");
    for kind in ["index", "loop", "range", "direction"] {
        assert!(
            lines
                .iter()
                .any(|l| l.starts_with(&format!("malformed: {kind}: device needs reset"))),
            "{kind}: {lines:?}"
        );
        assert!(
            lines
                .iter()
                .any(|l| l == &format!("malformed: {kind}: device works after reset")),
            "{kind}: {lines:?}"
        );
    }
    assert_eq!(
        lines.last().map(String::as_str),
        Some("malformed=ok"),
        "{lines:?}"
    );
}
