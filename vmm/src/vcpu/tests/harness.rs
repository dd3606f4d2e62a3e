// Copyright 2026 The ft-cloud-hypervisor authors.
// SPDX-License-Identifier: Apache-2.0

//! A vCPU loop around a [`ScriptedVcpu`]: the real loop, control block,
//! VM clock, timer thread, interrupt controller and record/replay context,
//! with made-up devices (a power-off port and a device whose host events
//! the test posts).

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use devices::async_event::{ApplyError, AsyncEventSource, Waker};
use devices::bus::{Bus, BusAction, BusDevice};
use devices::interrupt::InterruptController;
use devices::irq::{IrqLines, MsiQueue};
use ft_backend::{Entry, LogReader, Replayer};
use vm_memory::GuestAddress;

use super::scripted::{CleanVm, ScriptedVcpu, Step, Trace};
use crate::clock::VmClock;
use crate::config::{FaultToleranceConfig, VmConfig};
use crate::memory::GuestMemoryMmapT;
use crate::vcpu::{FtContext, FtDevices, PairStart, VcpuControl, VcpuCounters, VcpuRunner};

/// The port whose write powers the guest off.
pub const POWER_OFF: u16 = 0x600;
/// A port nobody handles (a synchronous exit with no effect).
pub const PROBE: u16 = 0x80;

#[derive(Debug)]
struct PowerOff;

impl BusDevice for PowerOff {
    fn read(&mut self, _offset: u64, data: &mut [u8]) {
        data.fill(0);
    }

    fn write(&mut self, _offset: u64, _data: &[u8]) -> BusAction {
        BusAction::Shutdown
    }
}

/// A device with host-side work: the test posts its events, the loop
/// applies them (or the log's), and each application goes to the trace.
#[derive(Debug)]
pub struct TestDevice {
    host: Arc<Mutex<VecDeque<Vec<u8>>>>,
    trace: Trace,
}

impl AsyncEventSource for TestDevice {
    fn id(&self) -> &str {
        "dev0"
    }

    fn poll_event(&mut self) -> Option<Vec<u8>> {
        self.host.lock().unwrap().pop_front()
    }

    fn apply_event(&mut self, event: &[u8]) -> Result<(), ApplyError> {
        self.trace
            .push(format!("apply {}", String::from_utf8_lossy(event)));
        Ok(())
    }
}

/// Posts host events for the test device, as its I/O thread would.
#[derive(Debug, Clone)]
pub struct HostEvents {
    host: Arc<Mutex<VecDeque<Vec<u8>>>>,
    control: Arc<VcpuControl>,
}

impl HostEvents {
    /// Posts `data` and wakes the vCPU.
    pub fn post(&self, data: &str) {
        self.host
            .lock()
            .unwrap()
            .push_back(data.as_bytes().to_vec());
        self.control.wake();
    }
}

/// A directory of its own for one test, removed at the end.
#[derive(Debug)]
pub struct TestDir(pub PathBuf);

impl TestDir {
    /// A fresh directory named after the test.
    pub fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("vcpu-loop-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("kernel"), b"a made-up kernel").unwrap();
        TestDir(dir)
    }

    /// A path in it.
    pub fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }

    /// A VM configuration with `fault_tolerance` (`None`: plain run).
    pub fn config(&self, ft: Option<&str>) -> VmConfig {
        let mut c = VmConfig::with_kernel(self.path("kernel"));
        c.fault_tolerance = ft.map(|s| FaultToleranceConfig::parse(s).unwrap());
        c
    }
}

impl Drop for TestDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A loop ready to run, with the test's handles on it.
#[derive(Debug)]
pub struct Harness {
    /// The loop.
    pub runner: VcpuRunner,
    /// The control block (host input, kicks).
    pub control: Arc<VcpuControl>,
}

/// What a harness needs besides its script.
pub struct Setup<'a> {
    /// The configuration (its `fault_tolerance` picks the role).
    pub config: &'a VmConfig,
    /// Replay: the log.
    pub replay: Option<Replayer>,
    /// A side of a pair.
    pub pair: Option<PairStart>,
    /// Called when a backup goes live.
    pub go_live: Box<dyn FnMut() -> Result<(), String> + Send>,
}

impl<'a> Setup<'a> {
    /// No replay log, no pair.
    pub fn plain(config: &'a VmConfig) -> Self {
        Setup {
            config,
            replay: None,
            pair: None,
            go_live: Box::new(|| Ok(())),
        }
    }
}

impl Harness {
    /// Builds the loop for `setup` around a vCPU playing `steps`.
    /// `trace` is shared with the steps' actions when they need it.
    pub fn new(setup: Setup<'_>, steps: Vec<Step>, trace: Trace) -> Self {
        let control = VcpuControl::new();
        let events = HostEvents {
            host: Arc::default(),
            control: control.clone(),
        };
        Self::with_control(setup, steps, trace, control, events)
    }

    /// As [`new`](Self::new), with a control block and host side made
    /// beforehand (for steps that post events).
    pub fn with_control(
        setup: Setup<'_>,
        steps: Vec<Step>,
        trace: Trace,
        control: Arc<VcpuControl>,
        events: HostEvents,
    ) -> Self {
        let memory =
            GuestMemoryMmapT::from_ranges(&[(GuestAddress(0), 0x10_0000)]).expect("guest memory");
        let clock = Arc::new(VmClock::new());
        let (ft, intc_clock) = FtContext::new(
            setup.config,
            &memory,
            Arc::new(CleanVm),
            clock.clone(),
            setup.replay,
            FtDevices::default(),
            setup.pair,
            setup.go_live,
        )
        .expect("record/replay context");
        let mut pio = Bus::new();
        pio.insert(Arc::new(Mutex::new(PowerOff)), u64::from(POWER_OFF), 1)
            .unwrap();
        let device = TestDevice {
            host: events.host.clone(),
            trace: trace.clone(),
        };
        let runner = VcpuRunner {
            vcpu: Box::new(ScriptedVcpu::new(steps, trace.clone())),
            pio,
            mmio: Bus::new(),
            intc: InterruptController::new(intc_clock),
            irq_lines: IrqLines::new(),
            msi_queue: MsiQueue::new(),
            async_sources: vec![Arc::new(Mutex::new(device))],
            serial: None,
            clock,
            control: control.clone(),
            counters: Arc::new(VcpuCounters::default()),
            ft,
        };
        Harness { runner, control }
    }

    /// Runs the loop to its end on this thread, with a timer thread
    /// kicking at the deadlines it publishes.
    pub fn run(self) -> crate::vcpu::VcpuEnd {
        let control = self.control.clone();
        let clock = self.runner.clock.clone();
        let timer = std::thread::spawn(move || control.timer_loop(clock.as_ref()));
        let end = self.runner.run();
        timer.join().unwrap();
        end
    }
}

/// A control block and its test-device host side, for steps that post
/// events before the harness exists.
pub fn control_and_events() -> (Arc<VcpuControl>, HostEvents) {
    let control = VcpuControl::new();
    let events = HostEvents {
        host: Arc::default(),
        control: control.clone(),
    };
    (control, events)
}

/// The entries of the log at `path` (setup and debug records included).
pub fn log_entries(path: &Path) -> Vec<Entry> {
    LogReader::open(path, None).unwrap().entries
}

/// The log at `path`, to replay.
pub fn replayer(path: &Path) -> Replayer {
    Replayer::new(LogReader::open(path, None).unwrap())
}
