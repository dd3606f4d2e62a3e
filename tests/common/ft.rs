// Copyright 2026 The ft-cloud-hypervisor authors.
// SPDX-License-Identifier: Apache-2.0

//! Record/replay helpers shared by the tests that record the test guest and
//! replay it (`--fault-tolerance`), reading logs through `ft_backend`.

use std::path::Path;
use std::process::Output;
use std::time::Duration;

use ft_backend::{EndReason, Entry, LogReader, LogWriter};

use super::{run_vmm, test_guest, text, TempDir};

/// A short recording that the refusal and option tests use.
pub const TICKS: &str = "workload=ticks count=20 hz=200";

pub const TIMEOUT: Duration = Duration::from_secs(120);

pub fn args<'a>(guest: &'a str, cmdline: &'a str, ft: &'a str) -> Vec<&'a str> {
    vec![
        "--kernel",
        guest,
        "--cmdline",
        cmdline,
        "--memory",
        "size=32M",
        "--serial",
        "tty",
        "--fault-tolerance",
        ft,
        "-v",
    ]
}

pub fn run_ft(cmdline: &str, mode: &str, log: &Path) -> Output {
    run_ft_option(cmdline, &format!("mode={mode},log={}", log.display()))
}

/// Runs the test guest with `cmdline` and `--fault-tolerance ft` (and
/// `-v`, for the final state digest line).
pub fn run_ft_option(cmdline: &str, ft: &str) -> Output {
    let guest = test_guest().to_str().expect("utf-8 path").to_string();
    run_vmm(&args(&guest, cmdline, ft), TIMEOUT)
}

/// A log, read and validated through `ft_backend`'s reader.
pub fn read_log(log: &Path) -> LogReader {
    LogReader::open(log, None).unwrap_or_else(|e| panic!("{}: {e}", log.display()))
}

/// The recording's end: exit count, reason and final state digest.
pub fn recorded_end(log: &Path) -> (u64, EndReason, u64) {
    match read_log(log).entries.last() {
        Some(Entry::End {
            exit,
            reason,
            digest,
        }) => (*exit, *reason, *digest),
        other => panic!("the log does not end with its end entry: {other:?}"),
    }
}

/// The replay `rep` of `log` ended at the recording's last exit with its
/// final state digest (a recording its VMM stopped ended at a kick: only
/// the exit count compares).
pub fn assert_replayed_to_the_end(rep: &Output, log: &Path) {
    let (exit, reason, digest) = recorded_end(log);
    let err = text(&rep.stderr);
    let want = if reason == EndReason::Stopped {
        format!("after {exit} exits")
    } else {
        format!("final state digest {digest:016x} after {exit} exits")
    };
    assert!(err.contains(&want), "{want:?} not in:\n{err}");
}

/// Micro-checkpoints in the log.
pub fn checkpoints(log: &Path) -> usize {
    read_log(log)
        .entries
        .iter()
        .filter(|e| matches!(e, Entry::Checkpoint(_)))
        .count()
}

/// Writes `entries` with the header of `log` to `path` through the log
/// writer; returns the file size after each frame (frame n ends at
/// `ends[n - 1]`).
pub fn write_log(log: &LogReader, entries: &[Entry], path: &Path) -> Vec<u64> {
    let mut w = LogWriter::create(path, log.header).expect("create the log");
    let mut ends = Vec::new();
    for e in entries {
        w.append(e).expect("append");
        ends.push(w.bytes());
    }
    w.flush().expect("flush the log");
    ends
}

/// Records `cmdline`, replays it, and checks that both runs succeed with
/// the same serial output and final state digest. Returns both outputs.
pub fn record_and_replay(cmdline: &str, dir: &TempDir) -> (Output, Output) {
    let log = dir.path("run.log");
    let rec = run_ft(cmdline, "record", &log);
    assert!(
        rec.status.success(),
        "record {cmdline}: {}",
        text(&rec.stderr)
    );
    let rep = run_ft(cmdline, "replay", &log);
    assert!(
        rep.status.success(),
        "replay {cmdline}: {}",
        text(&rep.stderr)
    );
    assert_eq!(
        text(&rec.stdout),
        text(&rep.stdout),
        "serial output differs for {cmdline}"
    );
    assert_replayed_to_the_end(&rep, &log);
    (rec, rep)
}
