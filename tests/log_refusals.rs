// Copyright 2026 The ft-cloud-hypervisor authors.
// SPDX-License-Identifier: Apache-2.0

//! Logs altered on purpose, entry by entry through `ft_backend`'s reader
//! and writer, or byte by byte: replay reports an altered input as a
//! divergence at the exit it concerns, and refuses truncated, corrupt,
//! foreign and old-format logs before the guest runs, naming the frame.

mod common;

use std::process::Output;

use common::ft::{assert_replayed_to_the_end, checkpoints, read_log, run_ft, write_log, TICKS};
use common::{text, TempDir};
use ft_backend::log::{frame_spans, refresh_crc};
use ft_backend::{Entry, LogReader};

fn recorded_ticks(dir: &TempDir) -> LogReader {
    let log = dir.path("run.log");
    let rec = run_ft(TICKS, "record", &log);
    assert!(rec.status.success(), "{}", text(&rec.stderr));
    read_log(&log)
}

fn replay_bytes(dir: &TempDir, bytes: &[u8]) -> Output {
    let path = dir.path("altered.log");
    std::fs::write(&path, bytes).expect("write the log");
    run_ft(TICKS, "replay", &path)
}

/// Replays `entries`, written with the header of `log`.
fn replay_entries(dir: &TempDir, log: &LogReader, entries: &[Entry]) -> Output {
    let path = dir.path("altered.log");
    write_log(log, entries, &path);
    run_ft(TICKS, "replay", &path)
}

#[test]
fn an_altered_input_is_reported_as_divergence() {
    let dir = TempDir::new("rr-alter");
    let log = recorded_ticks(&dir);
    let events: Vec<usize> = log
        .entries
        .iter()
        .enumerate()
        .filter(|(_, e)| matches!(e, Entry::Event { .. }))
        .map(|(i, _)| i)
        .collect();
    assert!(events.len() >= 10, "{} events", events.len());
    let target = events[4];
    let exit = log.entries[target].exit();

    // 1. The RIP of the fifth timer event's exit: caught at that exit.
    let mut entries = log.entries.clone();
    if let Entry::Event { at, .. } = &mut entries[target] {
        at.rip ^= 0x10;
    }
    let out = replay_entries(&dir, &log, &entries);
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(
        err.contains(&format!("replay diverged at exit {exit}")),
        "exit {exit}: {err}"
    );

    // 2. A timer expiry delivered one exit later than recorded: the guest
    //    does something else; replay stops at an exit it names.
    let mut entries = log.entries.clone();
    if let Entry::Event { exit, .. } = &mut entries[target] {
        *exit += 1;
    }
    let out = replay_entries(&dir, &log, &entries);
    assert!(!out.status.success(), "altered log replayed fine");
    let err = text(&out.stderr);
    assert!(err.contains("replay diverged at exit "), "{err}");
    // Nothing was printed past the divergence that the recording did not print.
    assert!(!text(&out.stdout).contains("ticks=20"));
}

#[test]
fn truncated_corrupt_and_foreign_logs_are_refused() {
    let dir = TempDir::new("rr-bad");
    let read = recorded_ticks(&dir);
    assert!(read.entries.len() > 5);
    // Written again through the log writer, which says where each frame
    // ends: frame n spans ends[n - 2]..ends[n - 1].
    let path = dir.path("good.log");
    let ends: Vec<usize> = write_log(&read, &read.entries, &path)
        .into_iter()
        .map(|e| usize::try_from(e).expect("size"))
        .collect();
    let log = std::fs::read(&path).expect("read the log");

    // Cut in the middle of the fourth frame.
    let out = replay_bytes(&dir, &log[..ends[2] + 7]);
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(err.contains("truncated in frame 4"), "{err}");
    assert!(!text(&out.stdout).contains("ready"), "ran with a bad log");

    // Cut cleanly between frames: no end frame.
    let out = replay_bytes(&dir, &log[..ends[2]]);
    assert!(
        text(&out.stderr).contains("no end frame"),
        "{}",
        text(&out.stderr)
    );

    // A flipped bit in the third frame.
    let mut bad = log.clone();
    bad[ends[1] + 5] ^= 0x01;
    let out = replay_bytes(&dir, &bad);
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(err.contains("frame 3") && err.contains("corrupt"), "{err}");

    // Not a log at all.
    let out = replay_bytes(&dir, b"hello world, this is not a log file at all");
    assert!(text(&out.stderr).contains("not a fault-tolerance log"));

    // Another configuration (command line) than the recording's.
    let out = run_ft("workload=ticks count=21 hz=200", "replay", &path);
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(
        err.contains("recorded with another kernel or configuration"),
        "{err}"
    );
    assert!(
        !text(&out.stdout).contains("ready"),
        "ran with a foreign log"
    );
}

/// A log of an older format version is refused before the guest runs,
/// with a message that says what to do.
#[test]
fn an_old_format_log_is_refused_clearly() {
    let dir = TempDir::new("rr-oldver");
    recorded_ticks(&dir);
    let mut log = std::fs::read(dir.path("run.log")).expect("read the log");
    // Version 3 (uncompressed frames), with a header CRC that matches.
    log[8..12].copy_from_slice(&3u32.to_le_bytes());
    let crc = crc32fast::hash(&log[..28]);
    log[28..32].copy_from_slice(&crc.to_le_bytes());
    let out = replay_bytes(&dir, &log);
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(
        err.contains("log format version 3 is not supported")
            && err.contains(&format!("reads version {}", ft_backend::log::VERSION))
            && err.contains("record it again"),
        "{err}"
    );
    assert!(!text(&out.stdout).contains("ready"), "ran with an old log");
}

/// Checkpoint frames are compressed (one zstd stream); a compressed frame
/// whose bytes were altered, with its CRC fixed up so that only the
/// decoder can tell, is refused before the guest runs, naming the frame.
#[test]
fn a_corrupt_compressed_frame_is_refused_clearly() {
    let dir = TempDir::new("rr-zbad");
    let cmdline = "workload=compute steps=20000000 hz=1000";
    let path = dir.path("run.log");
    let rec = run_ft(cmdline, "record", &path);
    assert!(rec.status.success(), "{}", text(&rec.stderr));
    assert!(checkpoints(&path) > 0, "{}", text(&rec.stderr));
    let log = std::fs::read(&path).expect("read the log");
    let spans = frame_spans(&log);
    // The first compressed frame starts the stream (codec 2): its body
    // opens with the zstd frame magic.
    let (n, start) = spans
        .iter()
        .enumerate()
        .find(|(_, s)| s.codec == 2)
        .expect("a compressed frame");
    assert_eq!(
        &log[start.body.start..start.body.start + 4],
        &[0x28, 0xb5, 0x2f, 0xfd]
    );
    assert!(
        spans.iter().filter(|s| s.codec == 1).count() > 0,
        "no frame continues the stream"
    );
    let mut bad = log.clone();
    bad[start.body.start] ^= 0xff;
    refresh_crc(&mut bad, start);
    let out = replay_bytes_for(&dir, cmdline, &bad);
    assert!(!out.status.success(), "a corrupt compressed frame replayed");
    let err = text(&out.stderr);
    assert!(
        err.contains(&format!("frame {} ", n + 1))
            && err.contains("is corrupt")
            && err.contains("cannot decompress"),
        "{err}"
    );
    assert!(
        !text(&out.stdout).contains("ready"),
        "ran with a corrupt log"
    );

    // The log replays as recorded, and is smaller than uncompressed.
    let rep = run_ft(cmdline, "replay", &path);
    assert!(rep.status.success(), "{}", text(&rep.stderr));
    assert_eq!(text(&rec.stdout), text(&rep.stdout));
    assert_replayed_to_the_end(&rep, &path);
    let raw: u64 = spans.iter().map(|s| u64::from(s.raw_len) + 9).sum::<u64>() + 32;
    assert!(
        (log.len() as u64) * 4 < raw,
        "{} bytes for {raw} uncompressed",
        log.len()
    );
}

fn replay_bytes_for(dir: &TempDir, cmdline: &str, bytes: &[u8]) -> Output {
    let path = dir.path("altered.log");
    std::fs::write(&path, bytes).expect("write the log");
    run_ft(cmdline, "replay", &path)
}
