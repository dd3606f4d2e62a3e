// Copyright 2026 The ft-cloud-hypervisor authors.
// SPDX-License-Identifier: Apache-2.0

//! `vm.ft-add-backup`: a running VM becomes the primary of a new pair.
//!
//! 1. The handshake with the waiting backup (key, protocol version; a new
//!    pair generation, so a fresh tiebreak slot), then the offer of the
//!    configuration, which the backup checks (its digest, the disk mode,
//!    its own disks and taps) before anything stops.
//! 2. Stop-and-copy: the VM pauses; on the vCPU thread its last exit's
//!    I/O is completed and disk requests in flight drained (as a
//!    snapshot), the vCPU, interrupt controller and device states, the
//!    clock and the loop's place are taken; then guest memory (zero pages
//!    left out), with `disks=separate` each disk image (copied during the
//!    pause, with a digest check), and the state go to the backup.
//! 3. Once the backup has it all, the channel starts on the same
//!    connection and, still paused, the vCPU loop switches into the
//!    primary's mode (recording into the channel, outputs under the
//!    Output Rule) from its next turn; the VM resumes.
//!
//! Any failure before the switch resumes the VM as it was.

use std::sync::Arc;
use std::time::Instant;

use ft_backend::channel::ChannelKey;
use ft_backend::pair::primary::Primary;
use ft_backend::pair::seed::SeedSender;
use ft_backend::pair::{channel_config, PairState, PairStatus};
use ft_backend::tiebreak::Tiebreaker;
use ft_backend::LogHeader;
use vm_memory::{GuestMemoryBackend, GuestMemoryRegion};
use vm_migration::snapshot::{state_file, Section};

use super::options::FtAddBackupConfig;
use super::{VmotionError, CURSOR_SECTION, FT_SECTION_VERSION, SETUP_SECTION};
use crate::config::{parse_tcp_address, DiskMode, VmConfig};
use crate::snapshot::{PausedState, VCPU_SECTION, VMM_SECTION};
use crate::vcpu::ft::seed::{PrimarySwitch, SeedCursor};
use crate::vcpu::ft::PairError;
use crate::vcpu::{FtError, PausedJob, VcpuRunner};
use crate::vm::{Vm, VmState};

/// What the seed cost.
#[derive(Debug, Clone, Copy)]
pub struct SeedReport {
    /// Payload bytes sent (memory without its zero pages, disks, state).
    pub bytes: u64,
    /// How long the guest was paused (ms).
    pub pause_ms: f64,
    /// Of which the memory copy (ms).
    pub memory_ms: f64,
}

/// Makes the running `vm` (configured by `config`) the primary of a new
/// pair with the backup waiting at `req.peer`.
pub fn add_backup(
    vm: &mut Vm,
    config: &VmConfig,
    req: &FtAddBackupConfig,
) -> Result<SeedReport, VmotionError> {
    if vm.state() != VmState::Running {
        return Err(VmotionError::NotRunning(vm.state()));
    }
    if let Some(s) = &vm.pair_status {
        if matches!(s.state(), PairState::Connecting | PairState::Protected) {
            return Err(VmotionError::Busy(format!(
                "protected (the {} of a pair)",
                s.role()
            )));
        }
    }
    let ft = req.fault_tolerance().map_err(VmotionError::Settings)?;
    let peer = parse_tcp_address("peer", &req.peer)
        .map_err(|e| VmotionError::Pair(PairError::Settings(e)))?;
    let key = ChannelKey::load(&req.key).map_err(|e| VmotionError::Pair(PairError::Key(e)))?;
    let tiebreaker: Tiebreaker = req
        .tiebreaker
        .parse()
        .map_err(|e| VmotionError::Pair(PairError::Tiebreaker(e)))?;
    let channel = channel_config(req.heartbeat_ms, req.timeout_ms);
    let digest = crate::vcpu::ft::vm_config_digest(config).map_err(VmotionError::Digest)?;
    let generation = Primary::new_generation();
    let status = PairStatus::new("primary", peer.to_string());
    status.event(
        "seed-connecting",
        &[
            ("peer", peer.to_string()),
            ("generation", generation.to_string()),
        ],
    );
    let mut seed = SeedSender::connect(peer, &key, digest, generation, &channel).map_err(|e| {
        if let ft_backend::pair::seed::SeedError::Handshake(
            ft_backend::channel::HandshakeError::Authentication(_),
        ) = &e
        {
            status.event("auth-failed", &[("peer", peer.to_string())]);
        }
        VmotionError::Seed(e)
    })?;
    // The offer: the configuration as the backup must build it, with this
    // side's pair settings (the disk mode) and no secrets.
    let mut offered = config.clone();
    let mut offered_ft = ft.clone();
    offered_ft.key = None;
    offered_ft.tiebreaker = None;
    offered.fault_tolerance = Some(offered_ft);
    let json = serde_json::to_vec(&offered).map_err(VmotionError::Config)?;
    seed.offer(digest, &json).map_err(VmotionError::Seed)?;

    // Stop-and-copy.
    let paused_at = Instant::now();
    vm.pause().map_err(|e| VmotionError::Build(Box::new(e)))?;
    let result = copy_and_switch(vm, config, &ft, seed, &status, tiebreaker, generation);
    let pause_ms = paused_at.elapsed().as_secs_f64() * 1e3;
    let resumed = vm.resume();
    let (bytes, memory_ms) = result?;
    resumed.map_err(|e| VmotionError::Build(Box::new(e)))?;
    status.event(
        "seeded",
        &[
            ("bytes", bytes.to_string()),
            ("pause_ms", format!("{pause_ms:.1}")),
            ("memory_ms", format!("{memory_ms:.1}")),
        ],
    );
    status.event("protected", &[("generation", generation.to_string())]);
    log::info!(
        "fault tolerance: FT VMotion to {peer}: {bytes} bytes, the guest paused {pause_ms:.1} ms"
    );
    vm.pair_status = Some(status);
    vm.fault_tolerant = true;
    Ok(SeedReport {
        bytes,
        pause_ms,
        memory_ms,
    })
}

/// While paused: takes the state, sends the seed, starts the pair and
/// switches the vCPU loop. Returns the bytes sent and the memory copy's
/// time (ms).
fn copy_and_switch(
    vm: &mut Vm,
    config: &VmConfig,
    ft: &crate::config::FaultToleranceConfig,
    mut seed: SeedSender,
    status: &Arc<PairStatus>,
    tiebreaker: Tiebreaker,
    generation: u64,
) -> Result<(u64, f64), VmotionError> {
    let (state, cursor) = save_state(vm)?;
    let t0 = Instant::now();
    // SAFETY (of the slices below): each region's mapping is `len()` bytes
    // at `as_ptr()` and lives as long as `vm.memory`; the vCPU is paused
    // and no other thread writes guest memory (devices touch it only on
    // the vCPU thread), so the bytes do not change while they are sent.
    let regions: Vec<(u64, &[u8])> = vm
        .memory
        .iter()
        .map(|r| {
            let len = usize::try_from(r.len()).unwrap_or(0);
            // SAFETY: see above.
            let bytes = unsafe { std::slice::from_raw_parts(r.as_ptr().cast_const(), len) };
            (r.start_addr().0, bytes)
        })
        .collect();
    let st = status.clone();
    seed.send_memory(&regions, &mut |bytes| {
        st.event("seed-progress", &[("bytes", bytes.to_string())]);
    })
    .map_err(VmotionError::Seed)?;
    let memory_ms = t0.elapsed().as_secs_f64() * 1e3;
    if ft.disks == DiskMode::Separate {
        for (i, d) in config.disks.iter().flatten().enumerate() {
            let path = d.path.clone().unwrap_or_default();
            seed.send_disk(u32::try_from(i).unwrap_or(u32::MAX), &path)
                .map_err(VmotionError::Seed)?;
        }
    }
    let mut sections = vec![
        Section {
            id: VMM_SECTION.into(),
            version: 1,
            data: [state.clock_ns.to_le_bytes(), state.tsc.to_le_bytes()].concat(),
        },
        Section {
            id: VCPU_SECTION.into(),
            version: 1,
            data: state.vcpu,
        },
        Section {
            id: CURSOR_SECTION.into(),
            version: FT_SECTION_VERSION,
            data: cursor.encode(),
        },
        Section {
            id: SETUP_SECTION.into(),
            version: FT_SECTION_VERSION,
            data: serde_json::to_vec(&vm.setup.disks).map_err(VmotionError::Config)?,
        },
    ];
    for (id, data) in state.devices {
        sections.push(Section {
            id,
            version: 1,
            data,
        });
    }
    seed.send_state(&state_file::encode(&sections))
        .map_err(VmotionError::Seed)?;
    let bytes = seed.bytes();
    let est = seed.finish().map_err(VmotionError::Seed)?;
    let channel = channel_config(ft.heartbeat_ms, ft.timeout_ms);
    let ch = ft_backend::channel::open_established(est, &channel).map_err(VmotionError::Channel)?;
    let primary = Primary::start(
        ch,
        status.clone(),
        generation,
        ft.disks == DiskMode::Shared,
        tiebreaker,
    )
    .map_err(VmotionError::Primary)?;
    let rule = primary.rule.clone();
    let header = LogHeader {
        config_digest: crate::vcpu::ft::vm_config_digest(config).map_err(VmotionError::Digest)?,
        max_delay_us: u32::try_from(ft.max_delay_us).unwrap_or(u32::MAX),
    };
    let intc_clock = vm.intc_clock.clone();
    // The recording's micro-checkpoints read the dirty log through its
    // owner, as a consumer beside any migration.
    let recording = vm
        .dirty_log
        .register("recording")
        .map_err(VmotionError::DirtyLog)?;
    let switch = PrimarySwitch {
        dirty_vm: recording.into_vm(),
        primary,
        header,
        max_delay_ns: ft.max_delay_us.saturating_mul(1000),
        heartbeat_ms: ft.heartbeat_ms,
        max_lag_ms: ft.max_lag_ms,
        vm_clock: vm.clock.clone(),
        set_clock: Box::new(move |c| intc_clock.set(c)),
    };
    let output = vm.output.clone();
    let (tx, rx) = std::sync::mpsc::channel::<Result<(), FtError>>();
    let job = PausedJob(Box::new(move |runner: &mut VcpuRunner| {
        let r = runner.ft.become_primary(switch);
        if r.is_ok() {
            output.set(rule);
        }
        let _ = tx.send(r);
    }));
    if !vm.control.run_paused(job) {
        return Err(VmotionError::Unresponsive);
    }
    rx.recv()
        .map_err(|_| VmotionError::Unresponsive)?
        .map_err(VmotionError::Switch)?;
    Ok((bytes, memory_ms))
}

/// On the paused vCPU thread: the snapshot's state and the loop's place.
fn save_state(vm: &Vm) -> Result<(PausedState, SeedCursor), VmotionError> {
    type Saved = Result<(PausedState, SeedCursor), VmotionError>;
    let (tx, rx) = std::sync::mpsc::channel::<Saved>();
    let devices = vm.snapshot_devices.clone();
    let virtio = vm.virtio_devices.clone();
    let job = PausedJob(Box::new(move |runner: &mut VcpuRunner| {
        let r = if runner.ft.busy() {
            Err(VmotionError::Busy("recording or replaying".into()))
        } else {
            crate::snapshot::save_on_vcpu(runner, &devices, &virtio)
                .map(|s| (s, runner.ft.cursor(runner.vcpu.ready_for_interrupt())))
                .map_err(VmotionError::Save)
        };
        let _ = tx.send(r);
    }));
    if !vm.control.run_paused(job) {
        return Err(VmotionError::Unresponsive);
    }
    rx.recv().map_err(|_| VmotionError::Unresponsive)?
}
