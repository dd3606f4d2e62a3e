// Copyright 2026 The ft-cloud-hypervisor authors.
// SPDX-License-Identifier: Apache-2.0

//! Record/replay in the vCPU loop: the role of this VM (off, recording,
//! replaying), the exit count and identity, micro-checkpoints and state
//! digests.
//!
//! Where the loop calls in:
//! - after every guest-caused exit: [`FtContext::note_exit`] counts it and
//!   remembers its identity (kind, port/address, RIP from KVM's sync
//!   registers);
//! - at the input seam: record logs each event it applies
//!   ([`FtContext::log_event`]); replay applies the log's events instead of
//!   the host's ([`Replay`]);
//! - at a kick in record mode, when an event waited longer than
//!   `max_delay_us`: a micro-checkpoint, then the events;
//! - at the end: the final state digest, logged (record) or compared
//!   (replay).
//!
//! Device state (the interrupt controller, the serial port, each
//! virtio-pci device's transport, queues and requests in flight) is
//! compared, never restored, at replayed checkpoints: devices change only
//! at exits and events, which replay reproduces, so a difference is a
//! divergence. The same states enter every state digest.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use devices::clock::Clock;
use devices::interrupt::InterruptController;
use ft_backend::clock::{RecordingClock, ReplayClock};
use ft_backend::digest::{config_digest, state_digest_spans, Span};
use ft_backend::{
    Checkpoint, EndReason, Event, ExitId, LogError, LogHeader, LogStream, RecordError, Recorder,
    ReplayError, Replayer, Setup,
};
use hypervisor::{kvm_regs, Vcpu, VmExit};
use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryRegion};
use vm_migration::vcpu::VcpuState;
use vm_migration::{MigratableError, Snapshottable};

use crate::clock::VmClock;
use crate::config::{FaultToleranceConfig, FaultToleranceMode, VmConfig};
use crate::memory::{populated, GuestMemoryMmapT};

mod debug;
mod dirty_pages;
pub mod pair;
pub mod record;
pub mod replay;
pub mod seed;
pub use debug::FtDebug;
pub use pair::{open_pair, BackupPair, PairError, PairStart, PrimaryPair};

use super::mode::{ExecMode, ModeChange, Off};
use record::{Primary, Record};
use replay::{Backup, Replay};

/// Page size of the dirty log.
const PAGE_SIZE: u64 = 4096;
/// A checkpoint carries a full state digest at most every this many
/// checkpoints (it reads all of guest memory).
const DIGEST_EVERY: u64 = 64;
/// ... and only while the digests so far took at most this share (1 in
/// N) of the recording's host time: a digest hashes all of guest memory
/// on the vCPU thread (about 15 ms for 128 MiB here), and a busy guest
/// takes hundreds of checkpoints per second.
const DIGEST_SHARE: u32 = 100;

/// Errors of record/replay in the vCPU loop.
#[derive(Debug, thiserror::Error)]
pub enum FtError {
    /// The kernel or initramfs could not be read for the configuration digest.
    #[error("cannot read {path} for the fault-tolerance configuration digest")]
    ReadPayload {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The log could not be opened, created or validated.
    #[error("fault-tolerance log")]
    Log(#[source] LogError),
    /// Writing the recording failed.
    #[error("recording failed")]
    Record(#[source] RecordError),
    /// The replay diverged from the recording.
    #[error("replay failed")]
    Replay(#[source] ReplayError),
    /// vCPU or device state could not be saved or restored.
    #[error("micro-checkpoint failed")]
    Checkpoint(#[source] MigratableError),
    /// The dirty log could not be read.
    #[error("cannot read the dirty page log")]
    DirtyLog(#[source] hypervisor::HypervisorError),
    /// Reading registers for a digest or an exit identity failed.
    #[error("cannot read the vCPU registers")]
    Registers(#[source] hypervisor::HypervisorError),
    /// Guest memory could not be read or written.
    #[error("guest memory access at {0:#x} failed")]
    Memory(u64),
    /// The hypervisor could not drop translations after a restored checkpoint.
    #[error("cannot make the hypervisor drop translations of restored pages")]
    DropTranslations(#[source] hypervisor::HypervisorError),
    /// A guest reset while recording or replaying.
    #[error("the guest asked for a reset: a reboot under --fault-tolerance is not supported yet")]
    Reset,
    /// A replay was set up without its log.
    #[error("replay needs its log opened before the devices are built")]
    NoReplayLog,
    /// A side of a pair could not start.
    #[error("fault-tolerant pair")]
    Pair(#[source] PairError),
    /// The primary could not record into the channel.
    #[error("cannot record into the logging channel")]
    Stream(#[source] ft_backend::pair::primary::PrimaryError),
    /// A backup could not go live.
    #[error("the backup cannot go live: {0}")]
    GoLive(String),
}

/// A device whose state checkpoints and digests cover.
pub type DeviceState = Arc<Mutex<dyn Snapshottable + Send>>;

/// What record/replay needs from the VM's devices.
#[derive(Default)]
pub struct FtDevices {
    /// What the devices learned from the host (disk sizes): the first
    /// frame of a recording.
    pub setup: Setup,
    /// The devices with guest-visible state besides the interrupt
    /// controller (serial port, virtio-pci devices), in a fixed order.
    pub states: Vec<DeviceState>,
}

impl std::fmt::Debug for FtDevices {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FtDevices")
            .field("setup", &self.setup)
            .field("states", &self.states.len())
            .finish()
    }
}

/// Record/replay state of the vCPU loop.
#[derive(Debug)]
pub struct FtContext {
    /// The execution mode.
    mode: Box<dyn ExecMode>,
    /// Guest-caused exits so far.
    pub exits: u64,
    /// Identity of the last guest-caused exit.
    pub last_id: ExitId,
    /// Whether the guest has not been entered since its last exit (a
    /// synchronous point: events may be delivered here).
    pub at_sync: bool,
    /// After a replayed checkpoint: the recorded injection decision.
    pub ready_override: Option<bool>,
    /// The current loop turn is the first after a guest-caused exit (it
    /// injects with KVM's view at that exit; checkpoints start later turns).
    pub fresh_exit: bool,
    /// The last exit was an interrupt-window exit. Under record/replay it
    /// is an asynchronous point, like a kick (see [`note_exit`](Self::note_exit)).
    pub window_exit: bool,
    /// Record/replay: the digest of the registers the current stretch of
    /// execution started from (at the last guest-caused exit, or at a
    /// checkpoint taken or applied since). A checkpoint carries the
    /// recording's; replay compares its own before applying one, so that
    /// the checkpoint does not overwrite a divergence unseen. None where
    /// the stretch started at an FT VMotion seed.
    pub(crate) start_registers: Option<u64>,
    memory: GuestMemoryMmapT,
    vm: Arc<dyn hypervisor::Vm>,
    devices: FtDevices,
    debug: FtDebug,
    /// A pair's mode after it ended (unprotected or live): its status,
    /// channel and Output Rule stay alive with the VM.
    retired: Option<Box<dyn ExecMode>>,
    /// When checkpoints carry a state digest (recording).
    digests: DigestBudget,
    /// Recording: the pages the dirty log leaves writable.
    hot: dirty_pages::HotPages,
}

/// Recording: which checkpoints carry a full state digest. The first
/// always does; later ones at most every [`DIGEST_EVERY`] checkpoints and
/// only while digests took at most 1/[`DIGEST_SHARE`] of the host time
/// since recording began. The choice depends on the host's speed, but it
/// is the recording's alone: the log says which checkpoints carry one,
/// and replay checks those.
#[derive(Debug)]
struct DigestBudget {
    started: std::time::Instant,
    spent: std::time::Duration,
    last_seq: Option<u64>,
}

impl DigestBudget {
    fn new() -> Self {
        DigestBudget {
            started: std::time::Instant::now(),
            spent: std::time::Duration::ZERO,
            last_seq: None,
        }
    }

    /// Whether checkpoint `seq` carries a digest.
    fn wanted(&self, seq: u64) -> bool {
        match self.last_seq {
            None => true,
            Some(last) => {
                seq >= last.saturating_add(DIGEST_EVERY)
                    && self.spent.saturating_mul(DIGEST_SHARE) <= self.started.elapsed()
            }
        }
    }

    /// A digest for checkpoint `seq` took `took`.
    fn spend(&mut self, seq: u64, took: std::time::Duration) {
        self.last_seq = Some(seq);
        self.spent = self.spent.saturating_add(took);
    }
}

/// The digest of `regs` a checkpoint's stretch starts from: the general
/// purpose registers, RIP and RFLAGS.
fn registers_digest(regs: &kvm_regs) -> u64 {
    ft_backend::digest::registers_digest(&[
        regs.rax,
        regs.rbx,
        regs.rcx,
        regs.rdx,
        regs.rsi,
        regs.rdi,
        regs.rsp,
        regs.rbp,
        regs.r8,
        regs.r9,
        regs.r10,
        regs.r11,
        regs.r12,
        regs.r13,
        regs.r14,
        regs.r15,
        regs.rip,
        regs.rflags,
    ])
}

fn lock<T: ?Sized>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The digest of everything in `config` that the guest can observe: the
/// kernel and initramfs bytes, the command line, memory size, vCPUs and
/// devices. Output destinations (serial, console) are left out: they are
/// host-side.
pub fn vm_config_digest(config: &VmConfig) -> Result<u64, FtError> {
    let read = |p: &PathBuf| {
        std::fs::read(p).map_err(|source| FtError::ReadPayload {
            path: p.clone(),
            source,
        })
    };
    let payload = config.payload.as_ref();
    let kernel = match payload.and_then(|p| p.kernel.as_ref()) {
        Some(k) => read(k)?,
        None => Vec::new(),
    };
    let initramfs = match payload.and_then(|p| p.initramfs.as_ref()) {
        Some(i) => read(i)?,
        None => Vec::new(),
    };
    let cmdline = payload.and_then(|p| p.cmdline.clone()).unwrap_or_default();
    let json = |v: serde_json::Result<String>| v.unwrap_or_default().into_bytes();
    let memory = config.memory.size.to_le_bytes();
    let vcpus = config.cpus.boot_vcpus.to_le_bytes();
    // Host-side names (image paths, taps and their host addresses) may
    // differ between the two hosts of a pair: they are not guest-visible.
    let mut disks = config.disks.clone();
    for d in disks.iter_mut().flatten() {
        d.path = None;
        d.direct = false;
        d.disable_io_uring = false;
        d.disable_aio = false;
    }
    let mut net = config.net.clone();
    for n in net.iter_mut().flatten() {
        n.tap = None;
        n.ip = None;
        n.mask = None;
        n.host_mac = None;
        n.fds = None;
    }
    let disks = json(serde_json::to_string(&disks));
    let net = json(serde_json::to_string(&net));
    Ok(config_digest(&[
        ("kernel", &kernel),
        ("initramfs", &initramfs),
        ("cmdline", cmdline.as_bytes()),
        ("memory", &memory),
        ("vcpus", &vcpus),
        ("disks", &disks),
        ("net", &net),
    ]))
}

impl FtContext {
    /// Replay only: opens the log of `config` and validates it whole,
    /// before anything else is built (the devices are built from its
    /// setup frame, [`Replayer::setup`]). `None` unless `config` replays.
    pub fn open_replay(config: &VmConfig) -> Result<Option<Replayer>, FtError> {
        match &config.fault_tolerance {
            Some(FaultToleranceConfig {
                mode: FaultToleranceMode::Replay,
                log: Some(log),
                ..
            }) => {
                let digest = vm_config_digest(config)?;
                let (header, frames, stream) =
                    LogStream::open(log, Some(digest)).map_err(FtError::Log)?;
                log::info!(
                    "fault tolerance: replaying {} ({frames} entries)",
                    log.display()
                );
                Ok(Some(Replayer::from_stream(header, stream)))
            }
            _ => Ok(None),
        }
    }

    /// Sets up record/replay for `config`: a recording creates its log
    /// with `devices.setup` as the first frame; a replay uses `replay`,
    /// from [`open_replay`](Self::open_replay). Returns the context and
    /// the clock the interrupt controller must read guest time from.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        config: &VmConfig,
        memory: &GuestMemoryMmapT,
        vm: Arc<dyn hypervisor::Vm>,
        clock: Arc<VmClock>,
        replay: Option<Replayer>,
        devices: FtDevices,
        pair: Option<PairStart>,
        go_live_devices: Box<dyn FnMut() -> Result<(), String> + Send>,
    ) -> Result<(FtContext, Arc<dyn Clock>), FtError> {
        let (mode, intc_clock): (Box<dyn ExecMode>, Arc<dyn Clock>) = match &config.fault_tolerance
        {
            None => (Box::new(Off), clock),
            Some(ft) => match ft.mode {
                FaultToleranceMode::Record | FaultToleranceMode::Primary => {
                    let header = LogHeader {
                        config_digest: vm_config_digest(config)?,
                        max_delay_us: u32::try_from(ft.max_delay_us).unwrap_or(u32::MAX),
                    };
                    let (recorder, pair) = match pair {
                        Some(PairStart::Primary(primary)) => (
                            primary
                                .recorder(header, devices.setup.clone())
                                .map_err(FtError::Stream)?,
                            Some(PrimaryPair::new(primary, ft.heartbeat_ms, ft.max_lag_ms)),
                        ),
                        _ => (
                            Recorder::create(
                                ft.log.as_deref().unwrap_or(std::path::Path::new("")),
                                header,
                                devices.setup.clone(),
                            )
                            .map_err(FtError::Record)?,
                            None,
                        ),
                    };
                    let recorder = Arc::new(Mutex::new(recorder));
                    let c = Arc::new(RecordingClock::new(clock, recorder.clone()));
                    let record = Record::new(recorder, ft.max_delay_us.saturating_mul(1000));
                    let mode: Box<dyn ExecMode> = match pair {
                        Some(pair) => Box::new(Primary::new(record, pair)),
                        None => Box::new(record),
                    };
                    (mode, c)
                }
                FaultToleranceMode::Replay | FaultToleranceMode::Backup => {
                    let replayer = Arc::new(Mutex::new(replay.ok_or(FtError::NoReplayLog)?));
                    match pair {
                        Some(PairStart::Backup(backup)) => {
                            let c = Arc::new(ReplayClock::with_live(replayer.clone(), clock));
                            let pair = BackupPair::new(backup, c.clone(), go_live_devices);
                            (Box::new(Backup::new(Replay::new(replayer), pair)), c)
                        }
                        _ => {
                            let c = Arc::new(ReplayClock::new(replayer.clone()));
                            (Box::new(Replay::new(replayer)), c)
                        }
                    }
                }
            },
        };
        Ok((
            FtContext {
                mode,
                exits: 0,
                last_id: ExitId::default(),
                at_sync: true,
                ready_override: None,
                fresh_exit: true,
                window_exit: false,
                start_registers: None,
                memory: memory.clone(),
                vm,
                devices,
                debug: FtDebug::new(config),
                retired: None,
                digests: DigestBudget::new(),
                hot: dirty_pages::HotPages::default(),
            },
            intc_clock,
        ))
    }

    /// Whether the VM records or replays.
    pub fn active(&self) -> bool {
        self.mode.is_active()
    }

    /// Whether the VM replays.
    pub fn replaying(&self) -> bool {
        self.mode.replays()
    }

    /// The execution mode, for the loop's hooks.
    pub fn mode(&self) -> &dyn ExecMode {
        self.mode.as_ref()
    }

    /// The execution mode, for the loop's hooks.
    pub fn mode_mut(&mut self) -> &mut dyn ExecMode {
        self.mode.as_mut()
    }

    /// Whether `config` replays (its devices then have no host side).
    pub fn replays(config: &VmConfig) -> bool {
        config.fault_tolerance.as_ref().is_some_and(|f| {
            matches!(
                f.mode,
                FaultToleranceMode::Replay | FaultToleranceMode::Backup
            )
        })
    }

    /// Whether dirty page logging is needed (recording).
    pub fn wants_dirty_log(config: &VmConfig) -> bool {
        config.fault_tolerance.as_ref().is_some_and(|f| {
            matches!(
                f.mode,
                FaultToleranceMode::Record | FaultToleranceMode::Primary
            )
        })
    }

    /// Called after every `run`: counts the exits a replay reaches again
    /// at the same guest instruction and remembers the identity of the
    /// last one.
    ///
    /// Under record/replay an interrupt-window exit is not one of them:
    /// KVM reports it some time after the guest enabled interrupts, and
    /// where depends on the host (on hosts that emulate guest kernel code,
    /// such as the development machines, it lands a varying number of
    /// instructions later). It is an asynchronous point, like a kick: the
    /// recording delivers there through a micro-checkpoint.
    pub fn note_exit(&mut self, exit: &VmExit, vcpu: &mut dyn Vcpu) -> Result<(), FtError> {
        self.window_exit = self.active() && *exit == VmExit::IrqWindowOpen;
        if !exit.is_guest_caused() || self.window_exit {
            self.at_sync = false;
            return Ok(());
        }
        self.exits += 1;
        self.at_sync = true;
        self.fresh_exit = true;
        if self.active() {
            let regs = vcpu.exit_regs().map_err(FtError::Registers)?;
            self.last_id = ExitId::of(exit, regs.rip);
            self.start_registers = Some(registers_digest(&regs));
            self.mode.after_exit(self.exits);
        }
        Ok(())
    }

    /// Logs an event applied at the current exit (record mode).
    pub fn log_event(&self, event: Event) {
        self.mode.log_event(self.last_id, event);
    }

    /// After handling an exit: the first recording or replay error.
    pub fn check(&mut self) -> Result<(), FtError> {
        self.mode.check()
    }

    /// At each loop turn, after the input seam: a primary that won after
    /// losing its backup stops recording; a backup whose stream ended
    /// with everything applied goes live here. Either way the mode
    /// becomes [`Off`]; the pair's state (status, channel, Output Rule)
    /// stays alive with the VM.
    pub fn turn(&mut self) -> Result<ModeChange, FtError> {
        let change = self.mode.turn(self.exits)?;
        if matches!(change, ModeChange::Unprotected | ModeChange::WentLive) {
            self.retired = Some(std::mem::replace(&mut self.mode, Box::new(Off)));
        }
        Ok(change)
    }

    /// The run ends on `error`: when it is the replay diverging (or unable
    /// to apply what the log says) and this VM is a pair's backup, the
    /// primary is told, and may seed this VMM again. Whether it was.
    pub fn report_divergence(&mut self, error: &FtError) -> bool {
        let (exit, reason) = match error {
            FtError::Replay(e @ ReplayError::Diverged { exit, .. })
            | FtError::Replay(e @ ReplayError::Apply { exit, .. }) => (*exit, e.to_string()),
            _ => return false,
        };
        self.mode.diverged(exit, &reason)
    }

    /// Before a guest entry (a primary sends progress when due and
    /// sleeps as long as its lag asks).
    pub fn before_entry(&mut self, clock: &VmClock) {
        self.mode.before_entry(self.exits, clock);
    }

    /// The digest of guest memory, the vCPU's registers and the device
    /// states (interrupt controller, serial port, virtio-pci devices).
    pub fn state_digest(
        &self,
        vcpu: &dyn Vcpu,
        intc: &InterruptController,
    ) -> Result<u64, FtError> {
        let regs = vcpu.get_regs().map_err(FtError::Registers)?;
        let sregs = vcpu.get_sregs().map_err(FtError::Registers)?;
        // Pages the host never populated are hashed as zeros without being
        // read (reading them costs a page fault each; see `populated`).
        let regions: Vec<Vec<Span<'_>>> = self
            .memory
            .iter()
            .map(|r| {
                let len = usize::try_from(r.len()).unwrap_or(0);
                // SAFETY: the region's mapping is `len` bytes at `as_ptr()` and
                // stays mapped while `self.memory` lives; the vCPU is not running
                // (this is its own thread, between runs) and no other thread
                // writes guest memory, so the bytes do not change under us.
                let bytes = unsafe { std::slice::from_raw_parts(r.as_ptr().cast_const(), len) };
                populated::digest_spans(bytes, populated::is_private_anonymous(r))
            })
            .collect();
        let regions: Vec<&[Span<'_>]> = regions.iter().map(Vec::as_slice).collect();
        let mut state = VcpuState::register_bytes(&regs, &sregs);
        for (id, data) in self.device_snapshots(intc) {
            state.extend_from_slice(id.as_bytes());
            state.extend_from_slice(&data);
        }
        Ok(state_digest_spans(&regions, &state))
    }

    /// The guest ended (`reason`): record logs the end with the final state
    /// digest; replay checks it against the recording. Both log it.
    pub fn finish(
        &mut self,
        reason: EndReason,
        vcpu: &mut dyn Vcpu,
        intc: &InterruptController,
    ) -> Result<(), FtError> {
        if !self.active() {
            return Ok(());
        }
        let digest = self.state_digest(vcpu, intc)?;
        log::info!(
            "fault tolerance: final state digest {digest:016x} after {} exits ({reason:?})",
            self.exits
        );
        if self.vm.keeps_dirty_pages() && !self.mode.replays() {
            log::info!("fault tolerance: hot pages: {}", self.hot.summary());
        }
        self.mode.finish(reason, digest, self.exits)
    }

    /// Replay: whether the next log entry is a checkpoint at this exit (the
    /// recording ran the guest to a kick there: replay does not run it, it
    /// applies the checkpoint at its next loop turn).
    pub fn replay_checkpoint_next(&self) -> bool {
        self.mode.checkpoint_next(self.exits)
    }

    /// The recording's end if replay reached it at this exit (a recording
    /// stopped by the VMM ends at a kick after its last exit).
    pub fn replay_end_here(&self) -> Option<EndReason> {
        self.mode.end_here()
    }

    /// Record mode: takes a micro-checkpoint at a kick (the guest stopped
    /// at an arbitrary instruction after exit `self.exits`).
    pub fn take_checkpoint(
        &mut self,
        vcpu: &mut dyn Vcpu,
        intc: &InterruptController,
    ) -> Result<Checkpoint, FtError> {
        let seq = self.mode.next_checkpoint_seq();
        let pages = dirty_pages::take(&self.memory, &*self.vm, &mut self.hot)?;
        let vcpu_state = VcpuState::save(vcpu).map_err(FtError::Checkpoint)?;
        let devices = self.device_snapshots(intc);
        let digest = if self.digests.wanted(seq) {
            let start = std::time::Instant::now();
            let d = self.state_digest(vcpu, intc)?;
            self.digests.spend(seq, start.elapsed());
            Some(d)
        } else {
            None
        };
        let start_registers = self.start_registers;
        // The next stretch starts from here.
        self.start_registers = Some(registers_digest(
            &vcpu.get_regs().map_err(FtError::Registers)?,
        ));
        Ok(Checkpoint {
            exit: self.exits,
            at: self.last_id,
            seq,
            pages,
            vcpu: vcpu_state.encode(),
            devices,
            ready_for_interrupt: vcpu.ready_for_interrupt(),
            digest,
            start_registers,
        })
    }

    /// Replay mode: applies a recorded checkpoint after exit `self.exits`.
    /// Device state must match (devices change only at exits, which replay
    /// reproduces): a difference is a divergence.
    pub fn apply_checkpoint(
        &mut self,
        cp: &Checkpoint,
        vcpu: &mut dyn Vcpu,
        intc: &InterruptController,
    ) -> Result<(), FtError> {
        let diverged = |expected: String, found: String| {
            FtError::Replay(ReplayError::Diverged {
                exit: cp.exit,
                expected,
                found,
            })
        };
        // The recording ran the stretch this checkpoint replaces from the
        // registers it names; replay stands at that stretch's start. A
        // difference is a divergence the checkpoint would otherwise paper
        // over (its registers and the pages the recording wrote replace
        // ours; pages only this side wrote would stay different).
        if let (Some(recorded), Some(mine)) = (cp.start_registers, self.start_registers) {
            if recorded != mine {
                return Err(diverged(
                    format!(
                        "registers with digest {recorded:016x} before checkpoint {} (after exit {})",
                        cp.seq, cp.exit
                    ),
                    format!("registers with digest {mine:016x}"),
                ));
            }
        }
        let here = self.device_snapshots(intc);
        for (id, data) in &cp.devices {
            match here.iter().find(|(i, _)| i == id).map(|(_, d)| d) {
                Some(mine) if mine == data => {}
                Some(_) => {
                    return Err(diverged(
                        format!("the state of {id} recorded in checkpoint {}", cp.seq),
                        format!("another state of {id}"),
                    ))
                }
                None => {
                    return Err(diverged(
                        format!("device {id} recorded in checkpoint {}", cp.seq),
                        format!("no device {id}"),
                    ))
                }
            }
        }
        // Only pages whose contents change are written; KVM then drops what
        // it cached from them (guest page tables rewritten behind its back:
        // see `hypervisor::Vm::drop_cached_translations`).
        let mut changed = Vec::new();
        let mut current = Vec::new();
        for (gpa, page) in &cp.pages {
            current.resize(page.len(), 0);
            self.memory
                .read_slice(&mut current, GuestAddress(*gpa))
                .map_err(|_| FtError::Memory(*gpa))?;
            if current != *page {
                self.memory
                    .write_slice(page, GuestAddress(*gpa))
                    .map_err(|_| FtError::Memory(*gpa))?;
                changed.push(*gpa);
            }
        }
        if !changed.is_empty() {
            self.vm
                .drop_cached_translations(&changed)
                .map_err(FtError::DropTranslations)?;
        }
        let state = VcpuState::decode(&cp.vcpu).map_err(FtError::Checkpoint)?;
        state.restore(vcpu).map_err(FtError::Checkpoint)?;
        self.start_registers = Some(registers_digest(
            &vcpu.get_regs().map_err(FtError::Registers)?,
        ));
        if let Some(d) = cp.digest {
            let mine = self.state_digest(vcpu, intc)?;
            if mine != d {
                return Err(diverged(
                    format!("state digest {d:016x} after checkpoint {}", cp.seq),
                    format!("{mine:016x}"),
                ));
            }
        }
        self.ready_override = Some(cp.ready_for_interrupt);
        Ok(())
    }

    /// The device states by snapshot id: the interrupt controller, then
    /// the other devices in their fixed order.
    fn device_snapshots(&self, intc: &InterruptController) -> Vec<(String, Vec<u8>)> {
        let mut v = vec![(intc.snapshot_id().to_string(), intc.snapshot())];
        for d in &self.devices.states {
            let d = lock(d);
            v.push((d.snapshot_id().to_string(), d.snapshot()));
        }
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_digest_covers_what_the_guest_sees() {
        let dir = std::env::temp_dir().join(format!("ft-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let kernel = dir.join("k");
        std::fs::write(&kernel, b"kernel one").unwrap();
        let mut c = VmConfig::with_kernel(kernel.clone());
        let base = vm_config_digest(&c).unwrap();
        // Output destinations and the FT settings themselves do not count.
        c.serial = crate::config::ConsoleConfig::with_mode(crate::config::ConsoleOutputMode::Tty);
        assert_eq!(vm_config_digest(&c).unwrap(), base);
        if let Some(p) = c.payload.as_mut() {
            p.cmdline = Some("workload=ticks".into());
        }
        let with_cmdline = vm_config_digest(&c).unwrap();
        assert_ne!(with_cmdline, base);
        c.memory.size *= 2;
        assert_ne!(vm_config_digest(&c).unwrap(), with_cmdline);
        std::fs::write(&kernel, b"kernel two").unwrap();
        let c2 = VmConfig::with_kernel(kernel.clone());
        assert_ne!(vm_config_digest(&c2).unwrap(), base);
        std::fs::remove_file(&kernel).unwrap();
        assert!(matches!(
            vm_config_digest(&c2),
            Err(FtError::ReadPayload { .. })
        ));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
