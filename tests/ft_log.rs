// Copyright 2026 The ft-cloud-hypervisor authors.
// SPDX-License-Identifier: Apache-2.0

//! `ft-log` and the debug option of record/replay on the real VMM and KVM:
//! a debug recording of the test guest, the tool's info, dump and check
//! (refusing truncated, corrupt and foreign files), and replays of copies
//! of the log altered on purpose through `ft_backend`'s reader and writer,
//! whose divergence the replay and `ft-log diverge` must name: the
//! checkpoint and page changed, the exit and register changed.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use common::{run_vmm, test_guest, text, wait_output, TempDir};
use ft_backend::report::{DivergenceReport, MemoryFinding};
use ft_backend::{DebugEntry, Entry, LogReader, LogWriter};
use vm_migration::vcpu::VcpuState;

const TIMEOUT: Duration = Duration::from_secs(120);
/// Long enough for tens of forced deliveries (checkpoints) at 100 Hz.
const CMDLINE: &str = "workload=compute steps=30000000 hz=100";

fn ft_log(args: &[&str]) -> Output {
    let child = Command::new(env!("CARGO_BIN_EXE_ft-log"))
        .args(args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn ft-log");
    wait_output(child, TIMEOUT)
}

fn vmm(ft: &str) -> Output {
    let guest = test_guest().to_str().expect("utf-8 path");
    run_vmm(
        &[
            "--kernel",
            guest,
            "--cmdline",
            CMDLINE,
            "--memory",
            "size=32M",
            "--serial",
            "tty",
            "--fault-tolerance",
            ft,
        ],
        TIMEOUT,
    )
}

/// Records the test guest with `debug_from=0`.
fn record(dir: &TempDir) -> PathBuf {
    let log = dir.path("debug.log");
    let rec = vmm(&format!("mode=record,log={},debug_from=0", log.display()));
    assert!(rec.status.success(), "record: {}", text(&rec.stderr));
    log
}

/// Replays `log` with a report; returns the output and the report.
fn replay(log: &Path, dir: &TempDir, name: &str) -> (Output, DivergenceReport) {
    let report = dir.path(name);
    let out = vmm(&format!(
        "mode=replay,log={},debug_report={}",
        log.display(),
        report.display()
    ));
    let r = DivergenceReport::read(&report)
        .unwrap_or_else(|e| panic!("{e}: replay stderr:\n{}", text(&out.stderr)));
    (out, r)
}

/// Writes `entries` as a log with `log`'s header, through the writer;
/// returns the file size after each frame.
fn rewrite(log: &LogReader, entries: &[Entry], path: &Path) -> Vec<usize> {
    let mut w = LogWriter::create(path, log.header).expect("create");
    let mut ends = Vec::new();
    for e in entries {
        w.append(e).expect("append");
        ends.push(usize::try_from(w.bytes()).expect("size"));
    }
    w.flush().expect("flush");
    ends
}

#[test]
fn a_debug_recording_replays_with_no_difference_and_the_tool_reads_it() {
    let dir = TempDir::new("ftlog-clean");
    let log = record(&dir);
    let read = LogReader::open(&log, None).expect("the recording reads");
    let debug_vcpus = read
        .entries
        .iter()
        .filter(|e| matches!(e, Entry::Debug(DebugEntry::Vcpu { .. })))
        .count();
    let checkpoints = read
        .entries
        .iter()
        .filter(|e| matches!(e, Entry::Checkpoint(_)))
        .count();
    let Some(Entry::End { exit: exits, .. }) = read.entries.last() else {
        panic!("no end entry");
    };
    assert!(checkpoints >= 5, "{checkpoints} checkpoints");
    assert_eq!(debug_vcpus as u64, *exits, "one vCPU state per exit");

    let (out, report) = replay(&log, &dir, "clean.report");
    assert!(out.status.success(), "replay: {}", text(&out.stderr));
    assert!(report.debug);
    assert_eq!(report.vcpu, None, "{report:?}");
    assert_eq!(report.memory, None, "{report:?}");
    assert_eq!(report.exits_compared, *exits);
    assert_eq!(report.checkpoints_compared as usize, checkpoints);
    assert!(text(&out.stderr).contains("vCPU state: no difference"));

    // info: header, setup, statistics, largest frames.
    let info = ft_log(&["info", log.to_str().expect("utf-8"), "--top", "2"]);
    assert!(info.status.success(), "{}", text(&info.stderr));
    let s = text(&info.stdout);
    for want in [
        "format version",
        "config digest",
        "max_delay_us     2000",
        &format!("checkpoints      {checkpoints} "),
        "debug-vcpu",
        "largest frames",
        "bytes/s",
    ] {
        assert!(s.contains(want), "{want:?} missing in:\n{s}");
    }
    // check: the whole log.
    let c = ft_log(&["check", log.to_str().expect("utf-8")]);
    assert!(c.status.success(), "{}", text(&c.stderr));
    assert!(text(&c.stdout).contains(&format!("{checkpoints} checkpoints, {exits} exits")));
    // dump: entries around an exit, the first at or after it included.
    let d = ft_log(&[
        "dump",
        log.to_str().expect("utf-8"),
        "--around",
        "20",
        "--count",
        "6",
    ]);
    assert!(d.status.success(), "{}", text(&d.stderr));
    let lines = text(&d.stdout);
    assert_eq!(lines.lines().count(), 6, "{lines}");
    assert!(lines.contains("exit 20 "), "{lines}");

    // Damaged files: a clear error and a non-zero status. The log is
    // written again through the writer, which says where frames end.
    let copy = dir.path("copy.log");
    let ends = rewrite(&read, &read.entries, &copy);
    let data = std::fs::read(&copy).expect("read");
    let cut = dir.path("cut.log");
    std::fs::write(&cut, &data[..data.len() / 2]).expect("write");
    let mut flipped = data.clone();
    // In the middle of frame 3.
    flipped[(ends[1] + ends[2]) / 2] ^= 0x55;
    let bad = dir.path("bad.log");
    std::fs::write(&bad, &flipped).expect("write");
    let foreign = dir.path("foreign.log");
    std::fs::write(&foreign, b"#!/bin/sh\necho not a log\n").expect("write");
    for (file, want) in [
        (&cut, &["truncated"][..]),
        (&bad, &["frame 3 (at byte", "is corrupt: CRC mismatch"][..]),
        (&foreign, &["not a fault-tolerance log"][..]),
        (&dir.path("missing.log"), &["cannot access"][..]),
    ] {
        let o = ft_log(&["check", file.to_str().expect("utf-8")]);
        assert_eq!(o.status.code(), Some(1), "{}", file.display());
        let e = text(&o.stderr);
        for w in want {
            assert!(e.contains(w), "{w:?} missing in: {e}");
        }
    }
    // info and dump of the cut log: what the frames before the cut hold,
    // the cut named, and still a failing status.
    let cut_s = cut.to_str().expect("utf-8");
    let info = ft_log(&["info", cut_s]);
    assert_eq!(info.status.code(), Some(1));
    let s = text(&info.stdout);
    for want in [
        "format version",
        "checkpoints",
        "end              none",
        "damaged",
    ] {
        assert!(s.contains(want), "{want:?} missing in:\n{s}");
    }
    assert!(
        text(&info.stderr).contains("truncated"),
        "{}",
        text(&info.stderr)
    );
    let d = ft_log(&["dump", cut_s, "--count", "5"]);
    assert_eq!(d.status.code(), Some(1));
    assert_eq!(text(&d.stdout).lines().count(), 5, "{}", text(&d.stdout));
    let usage = ft_log(&["check"]);
    assert_eq!(usage.status.code(), Some(2));
}

#[test]
fn a_changed_checkpoint_page_is_named_with_its_checkpoint() {
    let dir = TempDir::new("ftlog-page");
    let log = record(&dir);
    let read = LogReader::open(&log, None).expect("the recording reads");
    // A checkpoint after the first few, without a state digest, that
    // carries pages: the replay goes on after it.
    let (index, seq, gpa) = read
        .entries
        .iter()
        .enumerate()
        .find_map(|(i, e)| match e {
            Entry::Checkpoint(c) if c.seq >= 3 && c.digest.is_none() && !c.pages.is_empty() => {
                Some((i, c.seq, c.pages[c.pages.len() - 1].0))
            }
            _ => None,
        })
        .expect("a checkpoint with pages");
    let (m, err) = replay_with_a_changed_page(&dir, &read, index, "page.report");
    assert_eq!(m.seq, seq);
    assert_eq!(m.pages.len(), 1, "{m:?}");
    assert_eq!(m.pages[0].gpa, gpa);
    assert!(m.pages[0].in_dirty_list);
    assert!(
        err.contains(&format!(
            "first checkpoint where guest memory differs: checkpoint {seq}"
        )),
        "{err}"
    );

    // The tool reads the report, with symbols and the recorded entries.
    let report_path = dir.path("page.report");
    let guest = test_guest().to_str().expect("utf-8");
    let d = ft_log(&[
        "diverge",
        "--report",
        report_path.to_str().expect("utf-8"),
        "--symbols",
        guest,
        "--recording",
        log.to_str().expect("utf-8"),
    ]);
    assert!(d.status.success(), "{}", text(&d.stderr));
    let s = text(&d.stdout);
    assert!(
        s.contains(&format!("checkpoint {seq} at exit {}", m.exit)),
        "{s}"
    );
    assert!(
        s.contains(&format!("page {gpa:#x} (in the checkpoint's dirty list)")),
        "{s}"
    );
    assert!(
        s.contains(&format!("checkpoint {seq} exit {}", m.exit)),
        "{s}"
    );

    // A checkpoint with a state digest stops the replay where it is
    // applied; the page is still named.
    let index = read
        .entries
        .iter()
        .position(
            |e| matches!(e, Entry::Checkpoint(c) if c.digest.is_some() && !c.pages.is_empty()),
        )
        .expect("a checkpoint with a digest");
    let Entry::Checkpoint(c) = &read.entries[index] else {
        unreachable!("found above");
    };
    let (m, err) = replay_with_a_changed_page(&dir, &read, index, "digest.report");
    assert_eq!(m.seq, c.seq);
    assert_eq!(m.pages.len(), 1, "{m:?}");
    assert_eq!(m.pages[0].gpa, c.pages[c.pages.len() - 1].0);
    assert!(
        err.contains("state digest") && err.contains("replay diverged"),
        "{err}"
    );
}

/// Flips a byte of the last page of the checkpoint at `index` in a copy of
/// the log and replays it: the memory finding and the replay's stderr.
fn replay_with_a_changed_page(
    dir: &TempDir,
    read: &LogReader,
    index: usize,
    report: &str,
) -> (MemoryFinding, String) {
    let mut entries = read.entries.clone();
    if let Entry::Checkpoint(c) = &mut entries[index] {
        let page = &mut c.pages.last_mut().expect("a page").1;
        page[4095] ^= 0xa5;
    }
    let altered = dir.path("altered.log");
    rewrite(read, &entries, &altered);
    let (out, r) = replay(&altered, dir, report);
    let err = text(&out.stderr);
    let m = r
        .memory
        .unwrap_or_else(|| panic!("no memory finding:\n{err}"));
    (m, err)
}

#[test]
fn a_changed_register_is_named_with_its_exit() {
    let dir = TempDir::new("ftlog-reg");
    let log = record(&dir);
    let read = LogReader::open(&log, None).expect("the recording reads");
    let mut entries = read.entries.clone();
    let target = 30;
    let mut rbx = 0;
    for e in &mut entries {
        if let Entry::Debug(DebugEntry::Vcpu { exit, state, .. }) = e {
            if *exit == target {
                let mut s = VcpuState::decode(state).expect("a vCPU state");
                s.regs.rbx ^= 0x1000;
                rbx = s.regs.rbx;
                *state = s.encode();
            }
        }
    }
    assert_ne!(rbx, 0, "no vCPU state at exit {target}");
    let altered = dir.path("altered.log");
    rewrite(&read, &entries, &altered);

    let (out, report) = replay(&altered, &dir, "reg.report");
    // Only the debug record changed: the replay itself matches.
    assert!(out.status.success(), "{}", text(&out.stderr));
    let v = report.vcpu.as_ref().expect("a vCPU finding");
    assert_eq!(v.exit, target);
    assert_eq!(v.registers.len(), 1, "{v:?}");
    assert_eq!(v.registers[0].name, "rbx");
    assert_eq!(v.registers[0].recorded, rbx);
    assert_eq!(report.memory, None);
    // Guest memory there is the recording's (only the record was changed):
    // every page changed since the last checkpoint, the recording changed
    // before its next one too.
    let m = report.exit_memory.as_ref().expect("memory at that exit");
    assert_eq!(m.exit, target);
    assert!(report.next_checkpoint.is_some(), "{report:?}");
    assert!(m.pages.iter().all(|p| p.in_dirty_list), "{m:?}");
    let err = text(&out.stderr);
    assert!(
        err.contains(&format!(
            "first exit whose vCPU state differs: exit {target}"
        )),
        "{err}"
    );
    let guest = test_guest().to_str().expect("utf-8");
    let report_path = dir.path("reg.report");
    let d = ft_log(&[
        "diverge",
        "--report",
        report_path.to_str().expect("utf-8"),
        "--symbols",
        guest,
    ]);
    assert!(d.status.success(), "{}", text(&d.stderr));
    let s = text(&d.stdout);
    assert!(s.contains(&format!("rbx: recorded {rbx:#x}")), "{s}");
    // The RIP is named by the test guest's symbols.
    assert!(s.contains("rip recorded 0x") && s.contains(" <"), "{s}");
}
