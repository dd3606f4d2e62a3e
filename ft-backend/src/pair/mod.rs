// Copyright 2026 The ft-cloud-hypervisor authors.
// SPDX-License-Identifier: Apache-2.0

//! The fault-tolerant pair: a primary that records into the logging
//! channel under the Output Rule, and a backup that replays the stream
//! live; each watches its peer, and when the peer is lost does the
//! tiebreak before it continues alone (VMware FT, Scales et al. 2010).
//!
//! - [`primary`]: connects to the backup, records into the channel,
//!   holds outputs until acknowledged, goes on unprotected after winning
//!   the tiebreak;
//! - [`backup`]: accepts its primary, feeds its replay from the channel
//!   ([`crate::live`]), goes live after winning the tiebreak;
//! - [`output_rule`]: the primary's output sink;
//! - [`replayed`]: the backup's output sink, which keeps its latest
//!   network frames to send them again when it goes live;
//! - [`seed`]: FT VMotion's copy of a running VM to a waiting backup;
//! - [`status`]: what `vm.info`, `vm.counters` and the event monitor show.
//!
//! A side that lost its peer and does not win the tiebreak stops its VMM
//! at once with [`EXIT_LOST_TIEBREAK`] and a message saying why.

pub mod backup;
pub mod output_rule;
pub mod primary;
pub mod replayed;
pub mod seed;
pub mod status;

use std::io::Read;
use std::path::Path;
use std::time::Duration;

pub use output_rule::OutputRule;
pub use replayed::ReplayedOutputs;
pub use status::{PairState, PairStatus};

use crate::channel::ChannelConfig;
use crate::tiebreak::{Decision, Tiebreaker};

/// Exit status of a VMM that stopped because it did not win the
/// tiebreak (the other side continues).
pub const EXIT_LOST_TIEBREAK: i32 = 3;

/// The channel settings of a pair from its options (ms).
pub fn channel_config(heartbeat_ms: u64, timeout_ms: u64) -> ChannelConfig {
    ChannelConfig {
        heartbeat: Duration::from_millis(heartbeat_ms),
        timeout: Duration::from_millis(timeout_ms),
        ..ChannelConfig::default()
    }
}

/// A name for this side in the tiebreak slot (role, host, process).
pub fn claimant(role: &str) -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_default();
    format!("{role} pid {} on {host}", std::process::id())
}

/// Does the tiebreak for `generation`. Returns when this side won; stops
/// the process when it did not (after telling the status and the event
/// monitor).
pub fn tiebreak_or_stop(
    tiebreaker: &Tiebreaker,
    generation: u64,
    claimant: &str,
    status: &PairStatus,
    on_loss: impl FnOnce(),
) {
    match tiebreaker.decide(generation, claimant) {
        Decision::Won => {
            status.event("tiebreak-won", &[("generation", generation.to_string())]);
        }
        Decision::NotWon { reason } => {
            status.set_state(PairState::Stopped);
            status.event("tiebreak-lost", &[("reason", reason.clone())]);
            on_loss();
            log::error!("fault tolerance: {reason}: this VMM stops, the other side continues");
            eprintln!(
                "cloud-hypervisor: fault tolerance: {reason}: this VMM stops, the other side continues"
            );
            std::process::exit(EXIT_LOST_TIEBREAK);
        }
    }
}

/// A 64-bit digest of a file's contents (disk images compared by pairs
/// with separate disks).
pub fn file_digest(path: &Path) -> std::io::Result<u64> {
    let mut f = std::fs::File::open(path)?;
    let mut h = xxhash_rust::xxh3::Xxh3::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(h.digest())
}
