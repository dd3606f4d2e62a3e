// Copyright 2026 The ft-cloud-hypervisor authors.
// SPDX-License-Identifier: Apache-2.0

//! The loop's decisions off, recording and replaying, with a scripted
//! vCPU: where host events are delivered, when a kick forces a delivery
//! through a checkpoint, and where replay applies what the log holds.

use std::time::Duration;

use ft_backend::{EndReason, Entry, Event, ExitId};
use hypervisor::VmExit;

use super::harness::{control_and_events, log_entries, replayer, Harness, Setup, TestDir};
use super::harness::{POWER_OFF, PROBE};
use super::scripted::{Step, Trace};
use crate::vcpu::{FtError, VcpuEnd, VcpuError};

fn probe_at(rip: u64) -> ExitId {
    ExitId::of(
        &VmExit::IoOut {
            port: PROBE,
            size: 1,
            data: vec![0],
        },
        rip,
    )
}

/// The log's events and checkpoints as `(kind, exit, at)`.
fn inputs(entries: &[Entry]) -> Vec<(String, u64, ExitId)> {
    entries
        .iter()
        .filter_map(|e| match e {
            Entry::Event {
                exit,
                at,
                event: Event::Device { data, .. },
            } => Some((
                format!("event {}", String::from_utf8_lossy(data)),
                *exit,
                *at,
            )),
            Entry::Checkpoint(c) => Some((format!("checkpoint {}", c.seq), c.exit, c.at)),
            _ => None,
        })
        .collect()
}

fn end_of(entries: &[Entry]) -> Option<(u64, EndReason)> {
    entries.iter().find_map(|e| match e {
        Entry::End { exit, reason, .. } => Some((*exit, *reason)),
        _ => None,
    })
}

/// Runs `steps` (built with the host-event poster) under `ft`.
fn run_with_events(
    dir: &TestDir,
    ft: Option<&str>,
    steps: impl FnOnce(&super::harness::HostEvents) -> Vec<Step>,
) -> (VcpuEnd, Trace) {
    let config = dir.config(ft);
    let (control, events) = control_and_events();
    let trace = Trace::default();
    let steps = steps(&events);
    let h = Harness::with_control(Setup::plain(&config), steps, trace.clone(), control, events);
    (h.run(), trace)
}

/// A host event posted at a kick after exit 1; the guest then computes
/// for a while and makes exit 2.
fn event_at_a_kick(events: &super::harness::HostEvents) -> Vec<Step> {
    let ev = events.clone();
    vec![
        Step::out(PROBE, 0x1000),
        Step::kick(0x1010).with(move || ev.post("a")),
        Step::compute(0x1018, Duration::from_millis(100)),
        Step::out(PROBE, 0x1020),
        Step::out(POWER_OFF, 0x1030),
    ]
}

#[test]
fn a_plain_run_delivers_host_events_at_the_next_turn() {
    let dir = TestDir::new("plain");
    let (end, trace) = run_with_events(&dir, None, event_at_a_kick);
    assert!(matches!(end, VcpuEnd::Shutdown), "{end:?}");
    assert_eq!(
        trace.lines(),
        [
            "run 1: io_out",
            "run 2: interrupted",
            "apply a",
            "run 3: not kicked",
            "run 4: io_out",
            "run 5: io_out"
        ]
    );
}

fn record(
    dir: &TestDir,
    max_delay_us: u64,
    steps: fn(&super::harness::HostEvents) -> Vec<Step>,
) -> (VcpuEnd, Trace) {
    let log = dir.path("run.log");
    let ft = format!(
        "mode=record,log={},max_delay_us={max_delay_us}",
        log.display()
    );
    run_with_events(dir, Some(&ft), steps)
}

#[test]
fn recording_delivers_host_events_only_at_synchronous_points() {
    let dir = TestDir::new("record-sync");
    // The bound (1 s) is far away: the kick does not force anything.
    let (end, trace) = record(&dir, 1_000_000, event_at_a_kick);
    assert!(matches!(end, VcpuEnd::Shutdown), "{end:?}");
    assert_eq!(
        trace.lines(),
        [
            "run 1: io_out",
            "run 2: interrupted",
            "run 3: not kicked",
            "run 4: io_out",
            "apply a",
            "run 5: io_out"
        ]
    );
    let entries = log_entries(&dir.path("run.log"));
    assert_eq!(
        inputs(&entries),
        [("event a".to_string(), 2, probe_at(0x1020))],
        "logged at the exit where it was applied"
    );
    assert_eq!(end_of(&entries), Some((3, EndReason::Shutdown)));
}

#[test]
fn a_kick_after_max_delay_forces_a_checkpoint_then_the_delivery() {
    let dir = TestDir::new("record-forced");
    // 20 ms: the guest computes past it; the timer thread kicks there.
    let (end, trace) = record(&dir, 20_000, |events| {
        let mut steps = event_at_a_kick(events);
        steps[2] = Step::compute(0x1018, Duration::from_secs(5));
        steps
    });
    assert!(matches!(end, VcpuEnd::Shutdown), "{end:?}");
    assert_eq!(
        trace.lines(),
        [
            "run 1: io_out",
            "run 2: interrupted",
            "run 3: kicked",
            "apply a",
            "run 4: io_out",
            "run 5: io_out"
        ]
    );
    let entries = log_entries(&dir.path("run.log"));
    assert_eq!(
        inputs(&entries),
        [
            ("checkpoint 1".to_string(), 1, probe_at(0x1000)),
            ("event a".to_string(), 1, probe_at(0x1000)),
        ],
        "the checkpoint after exit 1, then the event, at exit 1"
    );
}

/// The guest-caused exits of [`event_at_a_kick`]: what a replay runs.
fn replayed_exits(second_rip: u64) -> Vec<Step> {
    vec![
        Step::out(PROBE, 0x1000),
        Step::out(PROBE, second_rip),
        Step::out(POWER_OFF, 0x1030),
    ]
}

fn replay(dir: &TestDir, steps: Vec<Step>) -> (VcpuEnd, Trace) {
    let log = dir.path("run.log");
    let config = dir.config(Some(&format!("mode=replay,log={}", log.display())));
    let trace = Trace::default();
    let mut setup = Setup::plain(&config);
    setup.replay = Some(replayer(&log));
    let h = Harness::new(setup, steps, trace.clone());
    (h.run(), trace)
}

#[test]
fn replay_applies_a_logged_event_at_its_exit_and_not_before() {
    let dir = TestDir::new("replay-event");
    let (end, _) = record(&dir, 1_000_000, event_at_a_kick);
    assert!(matches!(end, VcpuEnd::Shutdown), "{end:?}");
    // Host events play no part: the log's event comes after exit 2, and
    // the final state matches the recording's.
    let (end, trace) = replay(&dir, replayed_exits(0x1020));
    assert!(matches!(end, VcpuEnd::Shutdown), "{end:?}");
    assert_eq!(
        trace.lines(),
        ["run 1: io_out", "run 2: io_out", "apply a", "run 3: io_out"]
    );
}

#[test]
fn replay_stops_at_an_exit_that_is_not_the_recorded_one() {
    let dir = TestDir::new("replay-diverge");
    let (end, _) = record(&dir, 1_000_000, event_at_a_kick);
    assert!(matches!(end, VcpuEnd::Shutdown), "{end:?}");
    // Exit 2 at another instruction: the event is not applied there.
    let (end, trace) = replay(&dir, replayed_exits(0x1024));
    assert!(
        matches!(end, VcpuEnd::Error(VcpuError::Ft(FtError::Replay(_)))),
        "{end:?}"
    );
    assert_eq!(trace.find("apply a"), None, "{:?}", trace.lines());
}

#[test]
fn replay_applies_a_forced_delivery_through_its_checkpoint() {
    let dir = TestDir::new("replay-forced");
    let (end, _) = record(&dir, 20_000, |events| {
        let mut steps = event_at_a_kick(events);
        steps[2] = Step::compute(0x1018, Duration::from_secs(5));
        steps
    });
    assert!(matches!(end, VcpuEnd::Shutdown), "{end:?}");
    // The checkpoint replaces the runs to the kick: the event is applied
    // right after exit 1, with no guest run in between.
    let (end, trace) = replay(&dir, replayed_exits(0x1020));
    assert!(matches!(end, VcpuEnd::Shutdown), "{end:?}");
    assert_eq!(
        trace.lines(),
        ["run 1: io_out", "apply a", "run 2: io_out", "run 3: io_out"]
    );
}

/// A checkpoint replaces the registers replay has with the recording's:
/// replay first compares those its stretch started from (here the guest
/// computed another RAX before exit 1 than the recording's), so that the
/// checkpoint does not overwrite a divergence unseen.
#[test]
fn replay_stops_at_a_checkpoint_whose_stretch_started_from_other_registers() {
    let dir = TestDir::new("replay-forced-regs");
    let (end, _) = record(&dir, 20_000, |events| {
        let mut steps = event_at_a_kick(events);
        steps[2] = Step::compute(0x1018, Duration::from_secs(5));
        steps
    });
    assert!(matches!(end, VcpuEnd::Shutdown), "{end:?}");
    let entries = log_entries(&dir.path("run.log"));
    assert!(
        entries
            .iter()
            .any(|e| matches!(e, Entry::Checkpoint(c) if c.start_registers.is_some())),
        "the checkpoint names its start registers"
    );
    let mut steps = replayed_exits(0x1020);
    steps[0] = Step::out(PROBE, 0x1000).rax(0x5eed);
    let (end, trace) = replay(&dir, steps);
    let VcpuEnd::Error(VcpuError::Ft(e)) = &end else {
        panic!("{end:?}");
    };
    let e = ft_backend::error_chain(e);
    assert!(e.contains("registers with digest"), "{e}");
    assert_eq!(trace.find("apply a"), None, "{:?}", trace.lines());
}
