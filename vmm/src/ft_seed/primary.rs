// Copyright 2026 The ft-cloud-hypervisor authors.
// SPDX-License-Identifier: Apache-2.0

//! `vm.ft-add-backup`: a running VM becomes the primary of a new pair.
//!
//! 1. The handshake with the waiting backup (key, protocol version; a new
//!    pair generation, so a fresh tiebreak slot), then the offer of the
//!    configuration, which the backup checks (its digest, the disk mode,
//!    its own disks and taps) before anything stops.
//! 2. Pre-copy, while the guest runs: the rounds of live migration
//!    (`vm_migration::migration::Rounds`) send every non-zero page, then
//!    the pages written since each previous round (the guest's, from a
//!    consumer of the dirty log, and the devices'), until what is left
//!    fits `downtime_ms` at the measured bandwidth or `max_iterations`
//!    rounds are done.
//! 3. The pause: on the vCPU thread its last exit's I/O is completed and
//!    disk requests in flight drained (as a snapshot), the vCPU, interrupt
//!    controller and device states, the clock and the loop's place are
//!    taken; then the pages written since the last round, with
//!    `disks=separate` the disk blocks written since the last round (the
//!    images are copied in the pre-copy rounds too: every block with data
//!    in round 0, then the blocks the disk threads wrote since) and each
//!    image's digest (from the digests of its blocks as sent, kept by the
//!    rounds: no read of the image in the pause), which the backup checks
//!    against its copy's, and the state go to the backup.
//! 4. Once the backup has it all, the channel starts on the same
//!    connection and, still paused, the vCPU loop switches into the
//!    primary's mode (recording into the channel, outputs under the
//!    Output Rule) from its next turn; the VM resumes.
//!
//! 5. With `disks=separate`, after the switch: the images are read against
//!    the block digests sent ([`super::verify`]) while the guest runs.
//!
//! Any failure before the switch leaves the VM running as it was.

use std::sync::Arc;
use std::time::{Duration, Instant};

use ft_backend::channel::ChannelKey;
use ft_backend::pair::primary::{Primary, StreamAck};
use ft_backend::pair::seed::SeedSender;
use ft_backend::pair::{channel_config, PairState, PairStatus};
use ft_backend::tiebreak::Tiebreaker;
use ft_backend::LogHeader;
use vm_migration::migration::{DiskRound, DiskSource, NoDisks, Phase, Progress, Rounds};
use vm_migration::snapshot::{state_file, Section};

use super::options::FtAddBackupConfig;
use super::{VmotionError, CURSOR_SECTION, FT_SECTION_VERSION, SETUP_SECTION};
use crate::config::{parse_tcp_address, DiskMode, VmConfig};
use crate::migration::disks::VmDisks;
use crate::migration::pages::VmPages;
use crate::snapshot::{PausedState, VCPU_SECTION, VMM_SECTION};
use crate::vcpu::ft::seed::{PrimarySwitch, SeedCursor};
use crate::vcpu::ft::PairError;
use crate::vcpu::{FtError, PausedJob, VcpuRunner};
use crate::vm::{Vm, VmState};

// The rounds' tables of block digests are in the tracker's blocks; the
// digest the backup computes is in the seed's: they must be the same.
const _: () = assert!(
    virtio_devices::block::written::BLOCK_SIZE == ft_backend::pair::seed::disk::DIGEST_BLOCK
);

/// What the seed cost.
#[derive(Debug, Clone)]
pub struct SeedReport {
    /// Payload bytes sent (memory without its zero pages, disks, state).
    pub bytes: u64,
    /// How long the guest was paused (ms).
    pub pause_ms: f64,
    /// Of which the last pages' copy (ms).
    pub memory_ms: f64,
    /// From the request to the switch (ms).
    pub total_ms: f64,
    /// The rounds' progress at the end (rounds, pages, the dirty pages
    /// sent in the pause).
    pub progress: Progress,
    /// Bytes per second of the first (full) round.
    pub precopy_bps: f64,
    /// Separate disks: the last blocks' copy in the pause (ms).
    pub disk_ms: f64,
    /// Separate disks: the images' digests in the pause (ms: a hash of
    /// their tables of block digests).
    pub disk_digest_ms: f64,
    /// Separate disks: what each round copied (the last one in the pause).
    pub disk_rounds: Vec<DiskRound>,
}

impl SeedReport {
    /// The `seed` object of `vm.info`'s `fault_tolerance`.
    pub fn info(&self) -> serde_json::Value {
        let p = &self.progress;
        serde_json::json!({
            "phase": "completed",
            "iterations": p.iteration,
            "bytes_sent": self.bytes,
            "pages_sent": p.pages_sent,
            "zero_pages": p.zero_pages,
            "dirty_pages": p.dirty_pages,
            "dirty_rate_pages_per_s": p.dirty_rate_pps.round(),
            "bandwidth_mib_per_s": (self.precopy_bps / f64::from(1 << 20) * 10.0).round() / 10.0,
            "elapsed_ms": self.total_ms.round(),
            "downtime_ms": (self.pause_ms * 10.0).round() / 10.0,
            "disks": self.disks_info(),
        })
    }

    /// Separate disks' copy (`null` without): bytes, blocks, the blocks
    /// sent again, the pause's part and each round.
    fn disks_info(&self) -> serde_json::Value {
        if self.disk_rounds.is_empty() {
            return serde_json::Value::Null;
        }
        let p = &self.progress;
        let rounds: Vec<serde_json::Value> = self
            .disk_rounds
            .iter()
            .map(|r| {
                serde_json::json!({
                    "round": r.round,
                    "dirty_blocks": r.dirty_blocks,
                    "blocks": r.blocks,
                    "bytes": r.bytes,
                })
            })
            .collect();
        serde_json::json!({
            "block_size": virtio_devices::block::written::BLOCK_SIZE,
            "bytes_sent": p.disk_bytes,
            "blocks_sent": p.disk_blocks,
            "blocks_resent": p.disk_resent_blocks,
            "pause_blocks": self.disk_rounds.last().map_or(0, |r| r.blocks),
            "pause_copy_ms": (self.disk_ms * 10.0).round() / 10.0,
            "pause_digest_ms": (self.disk_digest_ms * 10.0).round() / 10.0,
            "rounds": rounds,
        })
    }
}

/// Emits a `seed-progress` event at each new round and phase.
fn progress_events(status: Arc<PairStatus>) -> impl FnMut(&Progress) {
    let mut last = None;
    move |p: &Progress| {
        if last == Some((p.phase, p.iteration)) {
            return;
        }
        last = Some((p.phase, p.iteration));
        status.event(
            "seed-progress",
            &[
                ("phase", p.phase.as_str().to_string()),
                ("round", p.iteration.to_string()),
                ("bytes", p.bytes_sent.to_string()),
                ("pages", p.pages_sent.to_string()),
                ("dirty_pages", p.dirty_pages.to_string()),
                ("dirty_rate_pps", format!("{:.0}", p.dirty_rate_pps)),
                ("disk_bytes", p.disk_bytes.to_string()),
                ("disk_dirty_blocks", p.disk_dirty_blocks.to_string()),
                (
                    "bandwidth_mib_s",
                    format!("{:.1}", p.bandwidth_bps / f64::from(1 << 20)),
                ),
            ],
        );
    }
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
    let params = req.precopy_params();
    let peer = parse_tcp_address("peer", &req.peer)
        .map_err(|e| VmotionError::Pair(PairError::Settings(e)))?;
    let key = ChannelKey::load(&req.key).map_err(|e| VmotionError::Pair(PairError::Key(e)))?;
    let tiebreaker: Tiebreaker = req
        .tiebreaker
        .parse()
        .map_err(|e| VmotionError::Pair(PairError::Tiebreaker(e)))?;
    let mut channel = channel_config(req.heartbeat_ms, req.timeout_ms);
    if let Some(t) = req.connect_timeout {
        channel.connect_timeout = t;
    }
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
    let started = Instant::now();
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

    // Pre-copy while the guest runs: from now on the pages it and its
    // devices write are logged.
    let dirty = vm
        .dirty_log
        .register("ft-seed")
        .map_err(VmotionError::DirtyLog)?;
    let mut pages = VmPages::new(vm.memory.clone(), dirty);
    // Separate disks: the images too, in the same rounds; the blocks
    // their disk threads write are tracked from now on.
    let mut disks = if ft.disks == DiskMode::Separate {
        let images: Vec<_> = config
            .disks
            .iter()
            .flatten()
            .map(|d| d.path.clone().unwrap_or_default())
            .zip(vm.disk_writes.iter().cloned())
            .collect();
        Some(VmDisks::new(&images).map_err(VmotionError::DiskImage)?)
    } else {
        None
    };
    let mut progress = Progress::new(Phase::Setup);
    progress.bytes_sent = seed.bytes();
    let mut rounds = Rounds::new(params, started, progress);
    let mut report = progress_events(status.clone());
    let mut no_disks = NoDisks;
    let disk_source: &mut dyn DiskSource = match &mut disks {
        Some(d) => d,
        None => &mut no_disks,
    };
    rounds
        .live_with_disks(&mut pages, disk_source, &mut seed, &mut report)
        .map_err(VmotionError::Precopy)?;

    // The pause.
    let paused_at = Instant::now();
    vm.pause().map_err(|e| VmotionError::Build(Box::new(e)))?;
    let copy = Copy {
        seed,
        pages: &mut pages,
        disks: disks.as_mut(),
        rounds: &mut rounds,
        report: &mut report,
    };
    let result = copy_and_switch(vm, config, &ft, copy, &status, tiebreaker, generation);
    let pause_ms = paused_at.elapsed().as_secs_f64() * 1e3;
    let resumed = vm.resume();
    // The recording reads the dirty log through its own consumer now.
    drop(pages);
    let (bytes, memory_ms, steps, stream_ack) = result?;
    // Separate disks: the images are read against the digests sent, while
    // the guest runs (its writes since the switch still tracked by the
    // seed's readers, which the check drops at its end).
    let verify =
        disks.map(|d| super::verify::spawn(d, rounds.disk_tables().to_vec(), status.clone()));
    resumed.map_err(|e| VmotionError::Build(Box::new(e)))?;
    let seed_report = SeedReport {
        bytes,
        pause_ms,
        memory_ms,
        total_ms: started.elapsed().as_secs_f64() * 1e3,
        progress: rounds.progress(),
        precopy_bps: rounds.first_round_bandwidth(),
        disk_ms: steps[3],
        disk_digest_ms: steps[4],
        disk_rounds: rounds.disk_rounds().to_vec(),
    };
    let p = seed_report.progress;
    status.event(
        "seeded",
        &[
            ("bytes", bytes.to_string()),
            ("pause_ms", format!("{pause_ms:.1}")),
            ("memory_ms", format!("{memory_ms:.1}")),
            ("disk_ms", format!("{:.1}", steps[3])),
            ("disk_digest_ms", format!("{:.1}", steps[4])),
            ("disk_bytes", p.disk_bytes.to_string()),
            ("disk_blocks_resent", p.disk_resent_blocks.to_string()),
            (
                "disk_pause_blocks",
                seed_report
                    .disk_rounds
                    .last()
                    .map_or(0, |r| r.blocks)
                    .to_string(),
            ),
            ("save_ms", format!("{:.1}", steps[0])),
            ("receipt_ms", format!("{:.1}", steps[1])),
            ("switch_ms", format!("{:.1}", steps[2])),
            ("total_ms", format!("{:.1}", seed_report.total_ms)),
            ("rounds", p.iteration.to_string()),
            ("pages", p.pages_sent.to_string()),
            ("last_dirty_pages", p.dirty_pages.to_string()),
            (
                "precopy_mib_s",
                format!("{:.0}", seed_report.precopy_bps / f64::from(1 << 20)),
            ),
        ],
    );
    log::info!(
        "fault tolerance: FT VMotion to {peer}: {bytes} bytes in {} rounds and {:.1} ms, the guest paused {pause_ms:.1} ms ({} pages in the pause)",
        p.iteration,
        seed_report.total_ms,
        p.dirty_pages
    );
    vm.pair_status = Some(status.clone());
    vm.fault_tolerant = true;
    vm.seed_report = Some(seed_report.info());
    vm.seed_verify = verify;
    // Protected only once the backup has the stream's header: before
    // that it cannot take over (it does not claim the tiebreak), so a
    // primary lost in between loses the VM. The guest runs meanwhile and
    // the Output Rule holds its outputs.
    stream_ack
        .wait(channel.timeout + Duration::from_secs(1))
        .map_err(VmotionError::NotProtected)?;
    status.protected(&[("generation", generation.to_string())]);
    Ok(seed_report)
}

/// The seed's memory and disk copy, from the pre-copy rounds into the
/// pause.
struct Copy<'a> {
    seed: SeedSender,
    pages: &'a mut VmPages,
    /// Separate disks.
    disks: Option<&'a mut VmDisks>,
    rounds: &'a mut Rounds,
    report: &'a mut dyn FnMut(&Progress),
}

/// While paused: takes the state, sends the seed, starts the pair and
/// switches the vCPU loop. Returns the bytes sent, the last pages' time
/// and the other steps' (ms): saving the state, from the state sent to
/// the backup's receipt, starting the pair and switching, the last disk
/// blocks, the disk images' digests (from their tables of block digests).
fn copy_and_switch(
    vm: &mut Vm,
    config: &VmConfig,
    ft: &crate::config::FaultToleranceConfig,
    copy: Copy<'_>,
    status: &Arc<PairStatus>,
    tiebreaker: Tiebreaker,
    generation: u64,
) -> Result<(u64, f64, [f64; 5], StreamAck), VmotionError> {
    let ms = |t: Instant| t.elapsed().as_secs_f64() * 1e3;
    let t_save = Instant::now();
    // The state first: saving completes the last exit's I/O and drains
    // the disks, which may write guest memory (tracked as the devices').
    let (state, cursor) = save_state(vm)?;
    let save_ms = ms(t_save);
    let Copy {
        mut seed,
        pages,
        disks,
        rounds,
        report,
    } = copy;
    // Separate disks first: the blocks written since the last round (the
    // disks are drained: nothing writes them until the VM resumes), then
    // each image's digest from its table of block digests as sent, which
    // the end carries for the backup to check against its copy's.
    let t_disk = Instant::now();
    let mut disk_ms = 0.0;
    let mut digest_ms = 0.0;
    let mut digests = Vec::new();
    if let Some(disks) = disks {
        rounds
            .last_disks(disks, &mut seed, report)
            .map_err(VmotionError::Precopy)?;
        seed.disks_done().map_err(VmotionError::Seed)?;
        disk_ms = ms(t_disk);
        let t_digest = Instant::now();
        digests = rounds.disk_digests().map_err(VmotionError::Precopy)?;
        digest_ms = ms(t_digest);
    }
    let t0 = Instant::now();
    rounds
        .last(pages, &mut seed, report)
        .map_err(VmotionError::Precopy)?;
    let memory_ms = ms(t0);
    let rest = Rest {
        state,
        cursor,
        digests,
    };
    let (bytes, [receipt_ms, switch_ms], stream_ack) =
        send_rest(vm, config, ft, seed, status, tiebreaker, generation, rest)?;
    Ok((
        bytes,
        memory_ms,
        [save_ms, receipt_ms, switch_ms, disk_ms, digest_ms],
        stream_ack,
    ))
}

/// What the pause took for the rest of the seed.
struct Rest {
    state: PausedState,
    cursor: SeedCursor,
    /// Each separate disk's image digest.
    digests: Vec<u64>,
}

/// The rest of the seed once memory and disks are copied: the state, the
/// end with the disk digests, the backup's receipt, then the pair started
/// and the vCPU loop switched. Returns the bytes sent and the receipt's
/// and the switch's times (ms).
#[allow(clippy::too_many_arguments)]
fn send_rest(
    vm: &mut Vm,
    config: &VmConfig,
    ft: &crate::config::FaultToleranceConfig,
    mut seed: SeedSender,
    status: &Arc<PairStatus>,
    tiebreaker: Tiebreaker,
    generation: u64,
    rest: Rest,
) -> Result<(u64, [f64; 2], StreamAck), VmotionError> {
    let ms = |t: Instant| t.elapsed().as_secs_f64() * 1e3;
    let Rest {
        state,
        cursor,
        digests,
    } = rest;
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
    let t_receipt = Instant::now();
    let est = seed.finish(&digests).map_err(VmotionError::Seed)?;
    let receipt_ms = ms(t_receipt);
    let t_switch = Instant::now();
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
    let stream_ack = primary.stream_ack();
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
    Ok((bytes, [receipt_ms, ms(t_switch)], stream_ack))
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
