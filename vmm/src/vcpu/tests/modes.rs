// Copyright 2026 The ft-cloud-hypervisor authors.
// SPDX-License-Identifier: Apache-2.0

//! The modes' own decisions at the input seam and for kicks, with a
//! made-up seam and clock values.

use std::sync::{Arc, Mutex};

use ft_backend::{LogHeader, Recorder, Setup as LogSetup};

use super::harness::TestDir;
use crate::vcpu::ft::record::Record;
use crate::vcpu::mode::{Delivery, ExecMode, Off, Seam};

#[derive(Debug, Default)]
struct FakeSeam {
    at_sync: bool,
    now: u64,
    timer: Option<u64>,
    host_waiting: bool,
    window: bool,
    ready: bool,
}

impl Seam for FakeSeam {
    fn at_sync(&self) -> bool {
        self.at_sync
    }

    fn now(&self) -> u64 {
        self.now
    }

    fn timer_due(&self, now: u64) -> Option<u64> {
        self.timer.filter(|d| *d <= now)
    }

    fn host_waiting(&self) -> bool {
        self.host_waiting
    }

    fn window_pending(&mut self) -> bool {
        self.window
    }

    fn guest_ready(&mut self) -> bool {
        self.ready
    }
}

fn record(dir: &TestDir, max_delay_ns: u64) -> Record {
    let header = LogHeader {
        config_digest: 1,
        max_delay_us: 2000,
    };
    let rec = Recorder::create(&dir.path("run.log"), header, LogSetup::default()).unwrap();
    Record::new(Arc::new(Mutex::new(rec)), max_delay_ns)
}

#[test]
fn recording_waits_for_a_synchronous_point_or_the_bound() {
    let dir = TestDir::new("mode-record");
    let mut r = record(&dir, 2_000);
    // At a synchronous point: the host's events, whatever waits.
    let mut seam = FakeSeam {
        at_sync: true,
        now: 100,
        host_waiting: true,
        ready: true,
        ..FakeSeam::default()
    };
    assert_eq!(r.at_input_seam(&mut seam), Delivery::Host);
    // At a kick: input seen waiting at 1000 waits until 3000.
    seam.at_sync = false;
    seam.now = 1_000;
    assert_eq!(r.at_input_seam(&mut seam), Delivery::Nothing);
    assert_eq!(r.kick_deadline(Some(50_000), &|| 1_500), Some(3_000));
    seam.now = 2_999;
    assert_eq!(r.at_input_seam(&mut seam), Delivery::Nothing);
    seam.now = 3_000;
    assert_eq!(r.at_input_seam(&mut seam), Delivery::CheckpointThenHost);
    // A passed timer deadline counts from the deadline.
    seam.now = 3_000;
    r.log_checkpoint(ft_backend::Checkpoint {
        exit: 0,
        at: ft_backend::ExitId::default(),
        seq: 1,
        pages: Vec::new(),
        vcpu: Vec::new(),
        devices: Vec::new(),
        ready_for_interrupt: false,
        digest: None,
        start_registers: None,
    });
    seam.host_waiting = false;
    seam.timer = Some(2_500);
    assert_eq!(r.at_input_seam(&mut seam), Delivery::Nothing);
    assert_eq!(r.kick_deadline(Some(2_500), &|| 3_000), Some(4_500));
    seam.now = 4_500;
    assert_eq!(r.at_input_seam(&mut seam), Delivery::CheckpointThenHost);
    seam.timer = None;
    // The interrupt window opened at an arbitrary instruction: the
    // interrupt waits, like an event, for a synchronous exit or the bound.
    seam.now = 4_600;
    seam.window = true;
    assert_eq!(r.at_input_seam(&mut seam), Delivery::Nothing);
    assert_eq!(r.kick_deadline(None, &|| 4_700), Some(6_600));
    seam.window = false;
    seam.now = 6_600;
    assert_eq!(r.at_input_seam(&mut seam), Delivery::CheckpointThenHost);
    r.log_checkpoint(ft_backend::Checkpoint {
        exit: 0,
        at: ft_backend::ExitId::default(),
        seq: 2,
        pages: Vec::new(),
        vcpu: Vec::new(),
        devices: Vec::new(),
        ready_for_interrupt: false,
        digest: None,
        start_registers: None,
    });
    // Nothing waiting: kicks at the timer's deadline only.
    assert_eq!(r.kick_deadline(Some(9_000), &|| 6_600), Some(9_000));
    assert!(!r.may_inject(false));
    assert!(r.may_inject(true));
}

#[test]
fn recording_defers_events_at_exits_with_interrupts_masked() {
    let dir = TestDir::new("mode-defer");
    let mut r = record(&dir, 2_000);
    // A synchronous exit with nothing waiting: nothing to defer.
    let mut seam = FakeSeam {
        at_sync: true,
        now: 100,
        ..FakeSeam::default()
    };
    assert_eq!(r.at_input_seam(&mut seam), Delivery::Host);
    // An event waits at an exit where the guest cannot take its
    // interrupt: it waits for the next exit where it can...
    seam.host_waiting = true;
    seam.now = 1_000;
    assert_eq!(r.at_input_seam(&mut seam), Delivery::Nothing);
    assert_eq!(r.kick_deadline(None, &|| 1_500), Some(3_000));
    seam.now = 1_500;
    seam.ready = true;
    assert_eq!(r.at_input_seam(&mut seam), Delivery::Host);
    // ... or, at masked exits, `max_delay_us` after it was first seen.
    seam.ready = false;
    seam.now = 4_000;
    assert_eq!(r.at_input_seam(&mut seam), Delivery::Nothing);
    seam.now = 5_999;
    assert_eq!(r.at_input_seam(&mut seam), Delivery::Nothing);
    seam.now = 6_000;
    assert_eq!(r.at_input_seam(&mut seam), Delivery::Host);
    // A passed timer deadline waits the same way.
    seam.host_waiting = false;
    seam.timer = Some(7_000);
    seam.now = 7_500;
    assert_eq!(r.at_input_seam(&mut seam), Delivery::Nothing);
    seam.now = 9_000;
    assert_eq!(r.at_input_seam(&mut seam), Delivery::Host);
}

#[test]
fn off_delivers_and_injects_at_every_turn() {
    let mut off = Off;
    let mut seam = FakeSeam::default();
    assert_eq!(off.at_input_seam(&mut seam), Delivery::Host);
    assert_eq!(off.kick_deadline(Some(7), &|| 0), Some(7));
    assert!(off.may_inject(false));
    assert!(!off.is_active());
}
