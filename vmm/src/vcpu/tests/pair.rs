// Copyright 2026 The ft-cloud-hypervisor authors.
// SPDX-License-Identifier: Apache-2.0

//! The loop's decisions in a pair, with a scripted vCPU and a real
//! logging channel on loopback: the backup waits for the log and runs up
//! to the primary's progress, then goes live when the stream ends; the
//! primary sends progress when an output waits for it, and stops
//! recording when it runs on unprotected.
//!
//! Each side has a tiebreaker file of its own, so that both win: which
//! side wins is not what these tests are about (a loser exits the
//! process).

use std::os::unix::fs::PermissionsExt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use ft_backend::channel::Position;
use ft_backend::pair::backup::Backup;
use ft_backend::pair::{OutputRule, PairState, PairStatus};
use ft_backend::{Event, ExitId, LogHeader, Setup as LogSetup};
use hypervisor::VmExit;
use virtio_devices::{Output, OutputKind, OutputSink};

use super::harness::{control_and_events, Harness, Setup, TestDir, POWER_OFF, PROBE};
use super::scripted::{Step, Trace};
use crate::config::VmConfig;
use crate::vcpu::ft::vm_config_digest;
use crate::vcpu::{open_pair, PairStart, VcpuEnd};

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

/// Waits (at most 10 s) for `f`.
fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "timed out: {what}"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// The two configurations of a pair on loopback.
fn configs(dir: &TestDir) -> (VmConfig, VmConfig) {
    let key = dir.path("key");
    std::fs::write(&key, [7u8; 32]).unwrap();
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    // A long heartbeat: no periodic progress while a test runs.
    let common = format!("key={},heartbeat_ms=2000,timeout_ms=5000", key.display());
    let primary = dir.config(Some(&format!(
        "mode=primary,peer=tcp:127.0.0.1:{port},tiebreaker=file:{},max_delay_us=1000000,{common}",
        dir.path("tiebreak-primary").display()
    )));
    let backup = dir.config(Some(&format!(
        "mode=backup,listen=tcp:127.0.0.1:{port},tiebreaker=file:{},{common}",
        dir.path("tiebreak-backup").display()
    )));
    (primary, backup)
}

/// Connects a primary (retrying while the backup is not listening yet)
/// to a backup opened by `backup` on another thread.
fn connect_primary(config: &VmConfig) -> ft_backend::pair::primary::Primary {
    let digest = vm_config_digest(config).unwrap();
    let start = Instant::now();
    loop {
        match open_pair(config, digest) {
            Ok(Some(PairStart::Primary(p))) => return p,
            Ok(other) => panic!("not a primary: {other:?}"),
            Err(e) => {
                assert!(start.elapsed() < Duration::from_secs(10), "{e:?}");
                std::thread::sleep(Duration::from_millis(10));
            }
        }
    }
}

fn open_backup(config: VmConfig) -> JoinHandle<Backup> {
    std::thread::spawn(move || {
        let digest = vm_config_digest(&config).unwrap();
        match open_pair(&config, digest) {
            Ok(Some(PairStart::Backup(b))) => *b,
            other => panic!("not a backup: {other:?}"),
        }
    })
}

#[test]
fn the_backup_runs_up_to_the_primary_progress_then_goes_live() {
    let dir = TestDir::new("backup");
    let (primary_config, backup_config) = configs(&dir);
    let backup = open_backup(backup_config.clone());
    // The test is the primary: it records into the channel by hand.
    let primary = connect_primary(&primary_config);
    let header = LogHeader {
        config_digest: vm_config_digest(&primary_config).unwrap(),
        max_delay_us: 1_000_000,
    };
    let mut rec = primary.recorder(header, LogSetup::default()).unwrap();
    // The primary delivered an event at its exit 2 and ran to exit 2.
    rec.set_exit(2);
    rec.event(
        probe_at(0x1020),
        Event::Device {
            id: "dev0".into(),
            data: b"a".to_vec(),
        },
    );
    rec.progress(Position {
        exits: 2,
        guest_ns: 1_000,
    });
    // The stream's header left with that progress: the backup is up.
    let mut backup = backup.join().unwrap();
    let status = backup.status.clone();

    let trace = Trace::default();
    let (control, events) = control_and_events();
    let ev = events.clone();
    let steps = vec![
        Step::out(PROBE, 0x1000),
        Step::out(PROBE, 0x1020),
        Step::out(PROBE, 0x1030),
        // Live from exit 3: host events again.
        Step::kick(0x1040).with(move || ev.post("b")),
        Step::out(POWER_OFF, 0x1050),
    ];
    let (t, c) = (trace.clone(), control.clone());
    let vcpu = std::thread::spawn(move || {
        let replay = backup.take_replayer();
        let go_live_trace = t.clone();
        let setup = Setup {
            config: &backup_config,
            replay,
            pair: Some(PairStart::Backup(Box::new(backup))),
            go_live: Box::new(move || {
                go_live_trace.push("go live");
                Ok(())
            }),
        };
        Harness::with_control(setup, steps, t, c, events).run()
    });

    let runs = |t: &Trace| t.count("run ");
    wait_for("the backup at exit 2", || trace.find("apply a").is_some());
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(runs(&trace), 2, "{:?}", trace.lines());
    // One more exit.
    rec.progress(Position {
        exits: 3,
        guest_ns: 2_000,
    });
    wait_for("the backup at exit 3", || runs(&trace) == 3);
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(runs(&trace), 3, "{:?}", trace.lines());
    assert_eq!(trace.find("go live"), None);
    // The primary dies: the stream ends, the backup wins and goes live
    // at exit 3; the host's event is then delivered at once.
    drop(rec);
    drop(primary);
    let end = vcpu.join().unwrap();
    assert!(matches!(end, VcpuEnd::Shutdown), "{end:?}");
    assert_eq!(
        trace.lines(),
        [
            "run 1: io_out",
            "run 2: io_out",
            "apply a",
            "run 3: io_out",
            "go live",
            "run 4: interrupted",
            "apply b",
            "run 5: io_out"
        ]
    );
    assert_eq!(status.state(), PairState::LiveUnprotected);
}

/// The primary side of a pair, and the backup that keeps its channel
/// open, being opened.
fn primary_harness(
    dir: &TestDir,
    steps: impl FnOnce(&super::harness::HostEvents) -> Vec<Step>,
    trace: &Trace,
) -> (Harness, JoinHandle<Backup>, Primary) {
    let (primary_config, backup_config) = configs(dir);
    let backup = open_backup(backup_config);
    let primary = connect_primary(&primary_config);
    let handles = Primary {
        status: primary.status.clone(),
        rule: primary.rule.clone(),
    };
    let (control, events) = control_and_events();
    let steps = steps(&events);
    let mut setup = Setup::plain(&primary_config);
    setup.pair = Some(PairStart::Primary(primary));
    let h = Harness::with_control(setup, steps, trace.clone(), control, events);
    // The backup returns once the stream's header reached it (with the
    // primary's first progress).
    (h, backup, handles)
}

/// What the test keeps of the primary it hands to the loop.
struct Primary {
    status: Arc<PairStatus>,
    rule: Arc<OutputRule>,
}

#[test]
fn the_primary_sends_progress_when_an_output_waits_and_not_otherwise() {
    let dir = TestDir::new("primary-progress");
    let trace = Trace::default();
    let released = Arc::new(AtomicBool::new(false));
    let rule_slot: Arc<Mutex<Option<Arc<OutputRule>>>> = Arc::default();
    let status_slot: Arc<Mutex<Option<Arc<PairStatus>>>> = Arc::default();
    let (rule, done) = (rule_slot.clone(), released.clone());
    let status = status_slot.clone();
    let (h, backup, primary) = primary_harness(
        &dir,
        |_| {
            vec![
                Step::out(PROBE, 0x1000),
                Step::out(PROBE, 0x1010),
                // Exit 3 makes an output (a frame on the network).
                Step::out(PROBE, 0x1020).with(move || {
                    let frame = Output::new(
                        "net0",
                        OutputKind::NetFrame { len: 60 },
                        Box::new(move || done.store(true, Ordering::SeqCst)),
                    );
                    rule.lock().unwrap().clone().unwrap().submit(frame);
                }),
                // The progress the output asked for went out before the
                // guest ran on from exit 3.
                Step::out(PROBE, 0x1030).with(move || {
                    let status = status.lock().unwrap().clone().unwrap();
                    wait_for("progress at exit 3", || sent_exits(&status) == 3);
                }),
                Step::out(PROBE, 0x1040),
                Step::out(POWER_OFF, 0x1050),
            ]
        },
        &trace,
    );
    *rule_slot.lock().unwrap() = Some(primary.rule);
    *status_slot.lock().unwrap() = Some(primary.status.clone());
    let end = h.run();
    assert!(matches!(end, VcpuEnd::Shutdown), "{end:?}");
    wait_for("the output released", || released.load(Ordering::SeqCst));
    // The primary's end waited until the backup acknowledged its last
    // position: every progress frame is counted. One at exit 3, where the
    // output waited, and the last position at the end; none before the
    // output, none after it.
    assert_eq!(progress_frames(&primary.status), 2);
    assert_eq!(sent_exits(&primary.status), 6);
    drop(backup.join().unwrap());
}

fn progress_frames(status: &PairStatus) -> u64 {
    status.counters()["progress_sent"].as_u64().unwrap()
}

fn sent_exits(status: &PairStatus) -> u64 {
    status.info()["position_sent"]["exits"].as_u64().unwrap()
}

#[test]
fn the_primary_stops_recording_when_it_runs_unprotected() {
    let dir = TestDir::new("primary-unprotected");
    let trace = Trace::default();
    let backup_slot: Arc<Mutex<Option<JoinHandle<Backup>>>> = Arc::default();
    let status_slot: Arc<Mutex<Option<Arc<PairStatus>>>> = Arc::default();
    let rule_slot: Arc<Mutex<Option<Arc<OutputRule>>>> = Arc::default();
    let (b, s, r) = (backup_slot.clone(), status_slot.clone(), rule_slot.clone());
    let (h, backup, primary) = primary_harness(
        &dir,
        |events| {
            let ev = events.clone();
            vec![
                // An output at exit 1: progress follows, and with it the
                // stream's header (the backup is then up).
                Step::out(PROBE, 0x1000).with(move || {
                    let rule = r.lock().unwrap().clone().unwrap();
                    rule.submit(Output::new(
                        "net0",
                        OutputKind::NetFrame { len: 60 },
                        Box::new(|| {}),
                    ));
                }),
                // The backup dies; the primary wins its tiebreak.
                Step::out(PROBE, 0x1010).with(move || {
                    let backup = b.lock().unwrap().take().unwrap();
                    drop(backup.join().unwrap());
                    let status = s.lock().unwrap().clone().unwrap();
                    wait_for("unprotected", || {
                        status.state() == PairState::LiveUnprotected
                    });
                }),
                // Not recording: delivered at the kick, no checkpoint.
                Step::kick(0x1018).with(move || ev.post("a")),
                Step::out(POWER_OFF, 0x1020),
            ]
        },
        &trace,
    );
    *backup_slot.lock().unwrap() = Some(backup);
    *status_slot.lock().unwrap() = Some(primary.status);
    *rule_slot.lock().unwrap() = Some(primary.rule);
    let end = h.run();
    assert!(matches!(end, VcpuEnd::Shutdown), "{end:?}");
    assert_eq!(
        trace.lines(),
        [
            "run 1: io_out",
            "run 2: io_out",
            "run 3: interrupted",
            "apply a",
            "run 4: io_out"
        ]
    );
}
