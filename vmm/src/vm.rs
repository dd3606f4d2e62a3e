// Copyright 2026 The ft-cloud-hypervisor authors.
// SPDX-License-Identifier: Apache-2.0

//! One virtual machine: memory, devices, its vCPU thread and its state.

use std::collections::BTreeMap;
use std::sync::mpsc::Sender;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use devices::interrupt::InterruptController;
use hypervisor::Hypervisor;
use serde_json::json;

use crate::boot::{self, BootSpec};
use crate::clock::VmClock;
use crate::config::{DiskMode, VmConfig};
use crate::cpuid::{self, CpuidError};
use crate::device_manager::{BackupDisks, DeviceError, DeviceManager, PciDeviceInfo};
use crate::dirty_log::DirtyLog;
use crate::ft_seed::switch::{SwitchClock, SwitchOutput};
use crate::memory::{self, GuestMemoryMmapT, MemoryError};
use crate::snapshot::{LoadedSnapshot, PausedState, VmSnapshotError};
use crate::vcpu::{
    DeviceState, FtContext, FtError, PairStart, PausedJob, RunState, VcpuControl, VcpuCounters,
    VcpuRunner,
};
use crate::ControlEvent;

/// A VM's lifecycle state, as Cloud Hypervisor reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VmState {
    /// Configured, not booted.
    Created,
    /// Running.
    Running,
    /// Paused.
    Paused,
    /// Stopped.
    Shutdown,
}

impl VmState {
    /// The name `vm.info` uses.
    pub fn as_str(self) -> &'static str {
        match self {
            VmState::Created => "Created",
            VmState::Running => "Running",
            VmState::Paused => "Paused",
            VmState::Shutdown => "Shutdown",
        }
    }
}

impl std::fmt::Display for VmState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Errors building, booting or controlling a VM.
#[derive(Debug, thiserror::Error)]
pub enum VmError {
    /// The configuration has no kernel.
    #[error("no kernel given in the VM configuration (payload.kernel)")]
    NoKernel,
    /// Creating the hypervisor VM failed.
    #[error("cannot create the VM")]
    CreateVm(#[source] hypervisor::HypervisorError),
    /// Guest memory.
    #[error("cannot set up guest memory")]
    Memory(#[source] MemoryError),
    /// Devices.
    #[error("cannot create devices")]
    Devices(#[source] DeviceError),
    /// Loading the kernel.
    #[error("cannot load the kernel")]
    Boot(#[source] boot::BootError),
    /// CPUID.
    #[error("cannot configure CPUID")]
    Cpuid(#[source] CpuidError),
    /// Creating or configuring the vCPU.
    #[error("cannot configure the vCPU")]
    Vcpu(#[source] hypervisor::HypervisorError),
    /// A thread could not be started.
    #[error("cannot start the {0} thread")]
    Thread(&'static str, #[source] std::io::Error),
    /// An action not valid in the current state.
    #[error("Invalid VM state transition: {from} to {to}")]
    InvalidStateTransition {
        /// Current state.
        from: VmState,
        /// Requested state.
        to: VmState,
    },
    /// Record/replay could not be set up (log, configuration digest).
    #[error("cannot set up --fault-tolerance")]
    FaultTolerance(#[source] FtError),
    /// The vCPU did not acknowledge a request in time.
    #[error("the vCPU did not acknowledge the {0} request")]
    Unresponsive(&'static str),
    /// The VM cannot be migrated now.
    #[error("{0}")]
    NotMigratable(&'static str),
    /// The dirty page log could not be set up.
    #[error("cannot set up dirty page logging")]
    DirtyLog(#[source] crate::dirty_log::DirtyLogError),
    /// Taking or restoring a snapshot failed.
    #[error(transparent)]
    Snapshot(#[from] VmSnapshotError),
}

/// A booted VM.
pub struct Vm {
    state: VmState,
    pub(crate) control: Arc<VcpuControl>,
    counters: Arc<VcpuCounters>,
    vcpu_thread: Option<JoinHandle<()>>,
    timer_thread: Option<JoinHandle<()>>,
    device_tree: BTreeMap<String, serde_json::Value>,
    pci_devices: Vec<PciDeviceInfo>,
    memory_size: u64,
    /// A pair's status (`vm.info`, `vm.counters`).
    pub(crate) pair_status: Option<Arc<ft_backend::pair::PairStatus>>,
    /// Devices with guest-visible state besides the interrupt controller
    /// (snapshots).
    pub(crate) snapshot_devices: Vec<DeviceState>,
    /// The virtio devices (a snapshot waits for their requests in flight).
    pub(crate) virtio_devices: Vec<Arc<Mutex<virtio_devices::VirtioPciDevice>>>,
    /// Under record/replay or in a pair (no snapshots).
    pub(crate) fault_tolerant: bool,
    /// Where the devices' outputs go (FT VMotion puts the Output Rule here).
    pub(crate) output: Arc<SwitchOutput>,
    /// The interrupt controller's clock (FT VMotion records its reads).
    pub(crate) intc_clock: Arc<SwitchClock>,
    /// The VM clock.
    pub(crate) clock: Arc<VmClock>,
    /// What the devices learned from the host (disk sizes).
    pub(crate) setup: ft_backend::Setup,
    /// Each disk's written blocks (FT VMotion's live disk copy).
    pub(crate) disk_writes: Vec<Arc<virtio_devices::block::written::WrittenBlocks>>,
    // Kept alive for as long as the hypervisor VM uses it.
    pub(crate) memory: GuestMemoryMmapT,
    /// The owner of KVM's dirty page log (recording, migration).
    pub(crate) dirty_log: Arc<DirtyLog>,
    /// The last FT VMotion seed this VM sent (`vm.info`'s
    /// `fault_tolerance.seed`).
    pub(crate) seed_report: Option<serde_json::Value>,
    /// Its separate disks' check after the switch
    /// (`fault_tolerance.seed.disks.verify`).
    pub(crate) seed_verify: Option<crate::ft_seed::verify::VerifyState>,
    _hv_vm: Arc<dyn hypervisor::Vm>,
}

impl Vm {
    /// Builds the VM from `config` and starts its vCPU. The vCPU thread's
    /// end is reported on `events`.
    pub fn boot(
        hv: &dyn Hypervisor,
        config: &VmConfig,
        events: Sender<ControlEvent>,
    ) -> Result<Vm, VmError> {
        let payload = config.payload.as_ref();
        let kernel = payload
            .and_then(|p| p.kernel.as_deref())
            .ok_or(VmError::NoKernel)?;
        let cmdline = payload.and_then(|p| p.cmdline.as_deref()).unwrap_or("");
        let initramfs = payload.and_then(|p| p.initramfs.as_deref());

        let hv_vm = hv.create_vm().map_err(VmError::CreateVm)?;
        let recording = FtContext::wants_dirty_log(config);
        let memory = memory::create_guest_memory(&hv_vm, config.memory.size, recording)
            .map_err(VmError::Memory)?;
        let dirty_log = DirtyLog::new(hv_vm.clone(), &memory, recording);
        // A recording reads its micro-checkpoints' dirty pages through
        // the log's owner, as one of its consumers.
        let ft_vm = if recording {
            dirty_log
                .register("recording")
                .map_err(VmError::DirtyLog)?
                .into_vm()
        } else {
            hv_vm.clone()
        };
        let entry = boot::load(
            &memory,
            &BootSpec {
                kernel,
                cmdline,
                initramfs,
            },
        )
        .map_err(VmError::Boot)?;
        let control = VcpuControl::new();
        // A replay opens and checks its log first: its devices are built
        // from the log's setup, with no host side.
        let mut replay = FtContext::open_replay(config).map_err(VmError::FaultTolerance)?;
        // A pair's primary reaches its backup before the guest runs its
        // first instruction; a backup waits for its primary's stream.
        let config_digest = match &config.fault_tolerance {
            Some(f) if f.is_pair() => {
                crate::vcpu::ft::vm_config_digest(config).map_err(VmError::FaultTolerance)?
            }
            _ => 0,
        };
        let mut pair = crate::vcpu::open_pair(config, config_digest)
            .map_err(|e| VmError::FaultTolerance(FtError::Pair(e)))?;
        if let Some(PairStart::Backup(b)) = &mut pair {
            replay = b.take_replayer();
        }
        let pair_status = pair.as_ref().map(PairStart::status);
        let output = SwitchOutput::new(match &pair {
            Some(PairStart::Primary(p)) => p.rule.clone(),
            _ => Arc::new(virtio_devices::ImmediateOutput),
        });
        let dm = match (&replay, &pair) {
            (Some(r), Some(PairStart::Backup(b))) => {
                let disks = match config.fault_tolerance.as_ref().map(|f| f.disks) {
                    Some(DiskMode::Separate) => BackupDisks::Separate,
                    _ => BackupDisks::Shared,
                };
                let output = b.replayed.clone();
                DeviceManager::for_backup(config, &memory, &r.setup().disks, disks, output)
            }
            (Some(r), _) => DeviceManager::without_backends(config, &memory, &r.setup().disks),
            _ => DeviceManager::with_output(config, &memory, control.clone(), output.clone()),
        }
        .map_err(VmError::Devices)?;

        let vcpu = hv_vm.create_vcpu(0).map_err(VmError::Vcpu)?;
        let supported = hv.supported_cpuid().map_err(VmError::Vcpu)?;
        let cpuid = cpuid::guest_cpuid(&supported, 0, 1).map_err(VmError::Cpuid)?;
        vcpu.set_cpuid(&cpuid).map_err(VmError::Vcpu)?;
        let sregs = vcpu.get_sregs().map_err(VmError::Vcpu)?;
        let sregs = boot::initial_sregs(&memory, &entry, sregs).map_err(VmError::Boot)?;
        vcpu.set_sregs(&sregs).map_err(VmError::Vcpu)?;
        vcpu.set_regs(&boot::initial_regs(&entry))
            .map_err(VmError::Vcpu)?;
        vcpu.set_fpu(&boot::initial_fpu()).map_err(VmError::Vcpu)?;
        vcpu.set_msrs(&boot::initial_msrs())
            .map_err(VmError::Vcpu)?;

        let clock = Arc::new(VmClock::new());
        let (ft, intc_clock) = FtContext::new(
            config,
            &memory,
            ft_vm,
            clock.clone(),
            replay,
            dm.ft_devices(),
            pair,
            go_live_hook(&dm, control.clone(), output.clone()),
        )
        .map_err(VmError::FaultTolerance)?;
        let intc_clock = SwitchClock::new(intc_clock);
        let intc = InterruptController::new(intc_clock.clone());
        Self::start(
            vcpu,
            dm,
            intc,
            (clock, intc_clock, output),
            control,
            ft,
            config,
            hv_vm,
            memory,
            dirty_log,
            pair_status,
            events,
        )
    }

    /// Builds the VM saved in `snapshot` (devices with their host
    /// backends) and leaves it paused, as upstream's restore does.
    /// Nothing runs the guest before every piece of state is in place; on
    /// an error the half-built VM is dropped.
    pub fn restore(
        hv: &dyn Hypervisor,
        snapshot: &LoadedSnapshot,
        events: Sender<ControlEvent>,
    ) -> Result<Vm, VmError> {
        let hv_vm = hv.create_vm().map_err(VmError::CreateVm)?;
        let memory = memory::create_guest_memory(&hv_vm, snapshot.config.memory.size, false)
            .map_err(VmError::Memory)?;
        snapshot.load_memory(&memory)?;
        Self::restore_state(hv, hv_vm, memory, snapshot, events)
    }

    /// Builds the VM saved in `snapshot` on `hv_vm` and `memory`, whose
    /// contents are already the saved ones (a restore from a file, or a
    /// live migration's destination), and leaves it paused.
    pub fn restore_state(
        hv: &dyn Hypervisor,
        hv_vm: Arc<dyn hypervisor::Vm>,
        memory: GuestMemoryMmapT,
        snapshot: &LoadedSnapshot,
        events: Sender<ControlEvent>,
    ) -> Result<Vm, VmError> {
        let config = &snapshot.config;
        let dirty_log = DirtyLog::new(hv_vm.clone(), &memory, false);
        let control = VcpuControl::new();
        let output = SwitchOutput::new(Arc::new(virtio_devices::ImmediateOutput));
        let dm = DeviceManager::with_output(config, &memory, control.clone(), output.clone())
            .map_err(VmError::Devices)?;
        let mut vcpu = hv_vm.create_vcpu(0).map_err(VmError::Vcpu)?;
        let supported = hv.supported_cpuid().map_err(VmError::Vcpu)?;
        let cpuid = cpuid::guest_cpuid(&supported, 0, 1).map_err(VmError::Cpuid)?;
        vcpu.set_cpuid(&cpuid).map_err(VmError::Vcpu)?;
        snapshot
            .vcpu
            .restore(vcpu.as_mut())
            .map_err(|e| VmError::Snapshot(VmSnapshotError::Vcpu(e)))?;
        if snapshot.tsc != 0 {
            vcpu.set_msrs(&[(crate::snapshot::MSR_IA32_TSC, snapshot.tsc)])
                .map_err(VmError::Vcpu)?;
        }
        let clock = Arc::new(VmClock::new());
        clock.pause();
        ft_backend::clock::ContinuableClock::continue_from(clock.as_ref(), snapshot.clock_ns);
        let ft_devices = dm.ft_devices();
        let states = ft_devices.states.clone();
        let (ft, intc_clock) = FtContext::new(
            config,
            &memory,
            hv_vm.clone(),
            clock.clone(),
            None,
            ft_devices,
            None,
            dm.go_live_hook(control.clone()),
        )
        .map_err(VmError::FaultTolerance)?;
        let intc_clock = SwitchClock::new(intc_clock);
        let mut intc = InterruptController::new(intc_clock.clone());
        let intc_id = vm_migration::Snapshottable::snapshot_id(&intc).to_string();
        vm_migration::Snapshottable::restore(&mut intc, snapshot.device(&intc_id)?).map_err(
            |source| VmSnapshotError::Device {
                id: intc_id.clone(),
                source,
            },
        )?;
        snapshot.restore_devices(&intc_id, &states)?;
        // The vCPU thread pauses at its first loop turn, before the guest runs.
        control.request_pause();
        let mut vm = Self::start(
            vcpu,
            dm,
            intc,
            (clock, intc_clock, output),
            control,
            ft,
            config,
            hv_vm,
            memory,
            dirty_log,
            None,
            events,
        )?;
        if !vm.control.wait_paused() {
            return Err(VmError::Unresponsive("pause"));
        }
        vm.state = VmState::Paused;
        Ok(vm)
    }

    /// Starts the vCPU and timer threads of a VM whose state is in place.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn start(
        vcpu: Box<dyn hypervisor::Vcpu>,
        dm: DeviceManager,
        intc: InterruptController,
        (clock, intc_clock, output): (Arc<VmClock>, Arc<SwitchClock>, Arc<SwitchOutput>),
        control: Arc<VcpuControl>,
        ft: FtContext,
        config: &VmConfig,
        hv_vm: Arc<dyn hypervisor::Vm>,
        memory: GuestMemoryMmapT,
        dirty_log: Arc<DirtyLog>,
        pair_status: Option<Arc<ft_backend::pair::PairStatus>>,
        events: Sender<ControlEvent>,
    ) -> Result<Vm, VmError> {
        let replaying = ft.replaying();
        let counters = Arc::new(VcpuCounters::default());
        let device_tree = dm.device_tree();
        let pci_devices = dm.pci_devices.clone();
        let serial_is_tty = dm.serial_is_tty;
        let snapshot_devices = dm.ft_devices().states;
        let virtio_devices = dm.virtio_devices.clone();
        let setup = ft_backend::Setup {
            disks: dm.disk_sizes.clone(),
        };
        let disk_writes = dm.disk_writes.clone();
        let runner = VcpuRunner {
            vcpu,
            pio: dm.pio,
            mmio: dm.mmio,
            intc,
            irq_lines: dm.irq_lines,
            msi_queue: dm.msi_queue,
            async_sources: dm.async_sources,
            serial: dm.serial,
            clock: clock.clone(),
            control: control.clone(),
            counters: counters.clone(),
            ft,
        };
        let clock_for_timer = clock.clone();
        let vcpu_thread = std::thread::Builder::new()
            .name("vcpu0".into())
            .spawn(move || {
                let end = runner.run();
                let _ = events.send(ControlEvent::VcpuEnded(end));
            })
            .map_err(|e| VmError::Thread("vcpu", e))?;
        let timer_control = control.clone();
        let timer_clock = clock_for_timer;
        let timer_thread = std::thread::Builder::new()
            .name("vcpu0-timer".into())
            .spawn(move || timer_control.timer_loop(timer_clock.as_ref()))
            .map_err(|e| VmError::Thread("timer", e))?;
        // Replay takes serial input from the log alone.
        if serial_is_tty && !replaying {
            crate::stdin::start_stdin_reader(control.clone());
        }
        Ok(Vm {
            state: VmState::Running,
            control,
            counters,
            vcpu_thread: Some(vcpu_thread),
            timer_thread: Some(timer_thread),
            device_tree,
            pci_devices,
            memory_size: config.memory.size,
            pair_status,
            snapshot_devices,
            virtio_devices,
            fault_tolerant: config.fault_tolerance.is_some(),
            output,
            intc_clock,
            clock,
            setup,
            disk_writes,
            memory,
            dirty_log,
            seed_report: None,
            seed_verify: None,
            _hv_vm: hv_vm,
        })
    }

    /// Writes a snapshot of this paused VM (whose configuration is
    /// `config`) to `dir`. Returns the bytes written.
    pub fn snapshot(&self, config: &VmConfig, dir: &std::path::Path) -> Result<u64, VmError> {
        if self.fault_tolerant {
            return Err(VmSnapshotError::FaultTolerance.into());
        }
        if self.state != VmState::Paused {
            return Err(VmSnapshotError::NotPaused.into());
        }
        let state = save_paused(&self.control, &self.snapshot_devices, &self.virtio_devices)?;
        Ok(crate::snapshot::write(dir, config, &self.memory, state)?)
    }

    /// What a live migration of this running VM needs: its memory, a
    /// consumer of its dirty log (registered now: its first read returns
    /// the pages written from now on), and the means to pause it and save
    /// its state.
    pub fn migration_handles(&self) -> Result<MigrationHandles, VmError> {
        if self.fault_tolerant {
            return Err(VmError::NotMigratable(
                "a VM under --fault-tolerance cannot be migrated (not supported)",
            ));
        }
        if self.state != VmState::Running {
            return Err(VmError::NotMigratable(
                "only a running VM can be migrated (resume it first)",
            ));
        }
        let dirty = self
            .dirty_log
            .register("migration")
            .map_err(VmError::DirtyLog)?;
        Ok(MigrationHandles {
            control: self.control.clone(),
            pages: crate::migration::pages::VmPages::new(self.memory.clone(), dirty),
            devices: self.snapshot_devices.clone(),
            virtio: self.virtio_devices.clone(),
        })
    }

    /// Announces the guest's MACs on the taps (after a migration).
    pub fn announce_macs(&self) {
        for d in &self.virtio_devices {
            let d = d.lock().unwrap_or_else(|e| e.into_inner());
            if let Err(e) = d.announce() {
                log::warn!(
                    "{}: cannot announce the guest's MAC: {}",
                    d.id(),
                    virtio_devices::transport::error_chain(e.as_ref())
                );
            }
        }
    }

    /// The current state.
    pub fn state(&self) -> VmState {
        self.state
    }

    /// Pauses the vCPU at its next exit.
    pub fn pause(&mut self) -> Result<(), VmError> {
        if self.state != VmState::Running {
            return Err(VmError::InvalidStateTransition {
                from: self.state,
                to: VmState::Paused,
            });
        }
        if !self.control.pause() {
            return Err(VmError::Unresponsive("pause"));
        }
        self.state = VmState::Paused;
        Ok(())
    }

    /// Resumes a paused vCPU.
    pub fn resume(&mut self) -> Result<(), VmError> {
        if self.state != VmState::Paused {
            return Err(VmError::InvalidStateTransition {
                from: self.state,
                to: VmState::Running,
            });
        }
        self.control.resume();
        self.state = VmState::Running;
        Ok(())
    }

    /// Stops the vCPU and tears the VM down.
    pub fn shutdown(&mut self) -> Result<(), VmError> {
        if let Some(s) = &self.pair_status {
            // A backup waiting for its stream stops instead of going live.
            s.stop_waiting();
        }
        if self.control.run_state() == RunState::Paused {
            self.control.resume();
        }
        let stopped = self.control.stop();
        if let Some(t) = self.vcpu_thread.take() {
            if stopped {
                let _ = t.join();
            }
        }
        if let Some(t) = self.timer_thread.take() {
            if stopped {
                let _ = t.join();
            }
        }
        self.state = VmState::Shutdown;
        if stopped {
            Ok(())
        } else {
            Err(VmError::Unresponsive("shutdown"))
        }
    }

    /// `vm.info`'s fields other than the configuration.
    pub fn info(&self) -> (VmState, u64, BTreeMap<String, serde_json::Value>) {
        (self.state, self.memory_size, self.device_tree.clone())
    }

    /// `vm.info`'s `fault_tolerance` object, for a side of a pair.
    pub fn fault_tolerance_info(&self) -> Option<serde_json::Value> {
        self.pair_status.as_ref().map(|s| {
            let mut info = s.info();
            if let (Some(seed), Some(map)) = (&self.seed_report, info.as_object_mut()) {
                let mut seed = seed.clone();
                if let (Some(v), Some(disks)) = (&self.seed_verify, seed["disks"].as_object_mut()) {
                    let v = v.lock().unwrap_or_else(|e| e.into_inner()).clone();
                    disks.insert("verify".into(), v);
                }
                map.insert("seed".into(), seed);
            }
            info
        })
    }

    /// `vm.counters`.
    pub fn counters(&self) -> serde_json::Value {
        let mut all = DeviceManager::counters(&self.pci_devices);
        all.insert("vcpu0".into(), json!(self.counters.snapshot()));
        if let Some(s) = &self.pair_status {
            all.insert("fault_tolerance".into(), s.counters());
        }
        json!(all)
    }
}

/// On the paused vCPU thread of the VM `control` runs: completes the last
/// exit, drains the disks and saves the vCPU's and `devices`' state.
fn save_paused(
    control: &VcpuControl,
    devices: &[DeviceState],
    virtio: &[Arc<Mutex<virtio_devices::VirtioPciDevice>>],
) -> Result<PausedState, VmSnapshotError> {
    let (tx, rx) = std::sync::mpsc::channel::<Result<PausedState, VmSnapshotError>>();
    let devices = devices.to_vec();
    let virtio = virtio.to_vec();
    let job = PausedJob(Box::new(move |runner: &mut VcpuRunner| {
        let _ = tx.send(crate::snapshot::save_on_vcpu(runner, &devices, &virtio));
    }));
    if !control.run_paused(job) {
        return Err(VmSnapshotError::VcpuUnresponsive);
    }
    rx.recv().map_err(|_| VmSnapshotError::VcpuUnresponsive)?
}

/// A running VM's parts a live migration's worker thread uses.
pub struct MigrationHandles {
    control: Arc<VcpuControl>,
    /// Guest memory and the pages written in it (the migration's consumer
    /// of the dirty log, and the devices' writes).
    pub pages: crate::migration::pages::VmPages,
    devices: Vec<DeviceState>,
    virtio: Vec<Arc<Mutex<virtio_devices::VirtioPciDevice>>>,
}

impl std::fmt::Debug for MigrationHandles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MigrationHandles")
            .field("pages", &self.pages)
            .finish_non_exhaustive()
    }
}

impl MigrationHandles {
    /// Pauses the vCPU and saves the VM's state.
    pub fn pause_and_save(&self) -> Result<PausedState, VmError> {
        if !self.control.pause() {
            return Err(VmError::Unresponsive("pause"));
        }
        Ok(save_paused(&self.control, &self.devices, &self.virtio)?)
    }

    /// Resumes the vCPU (the migration failed after the pause).
    pub fn resume(&self) {
        self.control.resume();
    }
}

/// What a backup does when it goes live: its devices attach their host
/// backends (their outputs going to `output`), and a serial port on the
/// terminal starts taking input.
pub(crate) fn go_live_hook(
    dm: &DeviceManager,
    control: Arc<VcpuControl>,
    output: Arc<SwitchOutput>,
) -> Box<dyn FnMut() -> Result<(), String> + Send> {
    let mut devices = dm.go_live_hook_with(control.clone(), output);
    let tty = dm.serial_is_tty;
    Box::new(move || {
        devices()?;
        if tty {
            crate::stdin::start_stdin_reader(control.clone());
        }
        Ok(())
    })
}

impl std::fmt::Debug for Vm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Vm")
            .field("state", &self.state)
            .field("memory_size", &self.memory_size)
            .field("devices", &self.device_tree.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl Drop for Vm {
    fn drop(&mut self) {
        if self.vcpu_thread.is_some() {
            let _ = self.shutdown();
        }
    }
}
