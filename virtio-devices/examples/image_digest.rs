// Copyright 2026 The ft-cloud-hypervisor authors.
// SPDX-License-Identifier: Apache-2.0

//! Prints the digest of a disk image (`virtio_devices::block::image_digest`,
//! what the pair's handshake compares with `disks=separate`) and the rate
//! at which it was computed. For `scripts/bench-image-digest`.
//!
//! Usage: `image_digest PATH`; prints `digest=<hex> bytes=<n> seconds=<s> mb_per_s=<r>`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

fn main() -> ExitCode {
    let Some(path) = std::env::args_os().nth(1).map(PathBuf::from) else {
        eprintln!("usage: image_digest PATH");
        return ExitCode::from(2);
    };
    let start = Instant::now();
    let digest = match virtio_devices::block::image_digest(&path) {
        Ok(d) => d,
        Err(e) => {
            eprintln!(
                "image_digest: {}",
                virtio_devices::transport::error_chain(&e)
            );
            return ExitCode::FAILURE;
        }
    };
    let seconds = start.elapsed().as_secs_f64();
    let bytes = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
    println!(
        "digest={digest:016x} bytes={bytes} seconds={seconds:.3} mb_per_s={:.0}",
        bytes as f64 / 1e6 / seconds
    );
    ExitCode::SUCCESS
}
