// Copyright 2026 The ft-cloud-hypervisor authors.
// SPDX-License-Identifier: Apache-2.0

//! `vm.ft-receive-backup`: a VMM with no VM waits for a primary's seed,
//! builds the VM from it in the backup's mode and replays the primary's
//! stream from the seed's point on (going live as the boot-time backup
//! does).
//!
//! The seed's configuration is the primary's; before accepting it this
//! side replaces what is host-side (disk images, taps, the serial file:
//! see [`FtReceiveBackupConfig`]), recomputes the configuration digest
//! (which reads the kernel and initramfs here, as a boot-time backup does)
//! and refuses the seed when it is not the primary's, when the disk modes
//! differ, or when a given list does not match the configuration.

use std::sync::mpsc::Sender;
use std::sync::Arc;

use devices::interrupt::InterruptController;
use ft_backend::channel::ChannelKey;
use ft_backend::pair::backup::Backup;
use ft_backend::pair::seed::{SeedError, SeedItem, SeedReceiver};
use ft_backend::pair::{channel_config, PairStatus};
use ft_backend::tiebreak::Tiebreaker;
use hypervisor::Hypervisor;
use vm_memory::{Bytes, GuestAddress};
use vm_migration::snapshot::{state_file, Section};
use vm_migration::vcpu::VcpuState;
use vm_migration::Snapshottable;

use super::options::FtReceiveBackupConfig;
use super::switch::{SwitchClock, SwitchOutput};
use super::{VmotionError, CURSOR_SECTION, SETUP_SECTION};
use crate::clock::VmClock;
use crate::config::{parse_tcp_address, ConsoleOutputMode, DiskMode, VmConfig};
use crate::device_manager::{BackupDisks, DeviceManager};
use crate::vcpu::ft::seed::SeedCursor;
use crate::vcpu::ft::PairError;
use crate::vcpu::{FtContext, PairStart, VcpuControl};
use crate::vm::{Vm, VmError};
use crate::ControlEvent;

/// The primary's configuration made this host's: host-side names from
/// `req`, the backup's pair settings. Returns it and its disk images to
/// write (separate disks).
fn localise(
    offered: &[u8],
    req: &FtReceiveBackupConfig,
) -> Result<(VmConfig, Vec<std::path::PathBuf>), String> {
    let mut config: VmConfig =
        serde_json::from_slice(offered).map_err(|e| format!("not a VM configuration: {e}"))?;
    let primary_disks = config
        .fault_tolerance
        .as_ref()
        .map(|f| f.disks)
        .unwrap_or_default();
    if primary_disks != req.disks {
        return Err(format!(
            "the primary's disks are {}, this backup's {}",
            disk_mode(primary_disks),
            disk_mode(req.disks)
        ));
    }
    // `None` stays `None`: the digest tells an absent list from an empty one.
    let mut no_disks = Vec::new();
    let disks = config.disks.as_mut().unwrap_or(&mut no_disks);
    if !req.disk_paths.is_empty() && req.disk_paths.len() != disks.len() {
        return Err(format!(
            "{} disk paths given; the VM has {} disks",
            req.disk_paths.len(),
            disks.len()
        ));
    }
    if req.disks == DiskMode::Separate && req.disk_paths.len() != disks.len() {
        return Err("separate disks need this host's disk_paths".into());
    }
    for (d, p) in disks.iter_mut().zip(&req.disk_paths) {
        d.path = Some(p.clone());
    }
    let copies = if req.disks == DiskMode::Separate {
        req.disk_paths.clone()
    } else {
        Vec::new()
    };
    let mut no_nets = Vec::new();
    let nets = config.net.as_mut().unwrap_or(&mut no_nets);
    if !req.net_taps.is_empty() && req.net_taps.len() != nets.len() {
        return Err(format!(
            "{} taps given; the VM has {} net devices",
            req.net_taps.len(),
            nets.len()
        ));
    }
    for (n, t) in nets.iter_mut().zip(&req.net_taps) {
        n.tap = Some(t.clone());
    }
    if config.serial.mode != ConsoleOutputMode::Off {
        match &req.serial {
            Some(f) => {
                config.serial.mode = ConsoleOutputMode::File;
                config.serial.file = Some(f.clone());
            }
            None => {
                config.serial.mode = ConsoleOutputMode::Null;
                config.serial.file = None;
            }
        }
    }
    config.fault_tolerance = Some(req.fault_tolerance()?);
    config.validate().map_err(|e| ft_backend::error_chain(&e))?;
    Ok((config, copies))
}

fn disk_mode(d: DiskMode) -> &'static str {
    match d {
        DiskMode::Shared => "shared",
        DiskMode::Separate => "separate",
    }
}

/// How long a listen address in use is tried again: a backup that
/// diverged waits again on its own address, which the pair it left may
/// hold for a few more milliseconds (its port guard).
const LISTEN_RETRY: std::time::Duration = std::time::Duration::from_secs(2);

/// [`SeedReceiver::accept`], trying an address in use again for
/// [`LISTEN_RETRY`].
fn accept(
    listen: std::net::SocketAddr,
    key: &ChannelKey,
    channel: &ft_backend::channel::ChannelConfig,
    stop: &dyn Fn() -> bool,
) -> Result<SeedReceiver, VmotionError> {
    let deadline = std::time::Instant::now() + LISTEN_RETRY;
    loop {
        match SeedReceiver::accept(listen, key, channel, stop) {
            Err(SeedError::Listen { source, .. })
                if source.kind() == std::io::ErrorKind::AddrInUse
                    && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            r => return r.map_err(VmotionError::Seed),
        }
    }
}

/// Waits for a primary on `req.listen`, receives its seed and starts the
/// VM as its backup. `stop` ends the wait (a signal).
pub fn receive_backup(
    hv: &dyn Hypervisor,
    req: &FtReceiveBackupConfig,
    events: Sender<ControlEvent>,
    stop: &dyn Fn() -> bool,
) -> Result<(VmConfig, Vm), VmotionError> {
    let ft = req.fault_tolerance().map_err(VmotionError::Settings)?;
    let listen = parse_tcp_address("listen", &req.listen)
        .map_err(|e| VmotionError::Pair(PairError::Settings(e)))?;
    let key = ChannelKey::load(&req.key).map_err(|e| VmotionError::Pair(PairError::Key(e)))?;
    let tiebreaker: Tiebreaker = req
        .tiebreaker
        .parse()
        .map_err(|e| VmotionError::Pair(PairError::Tiebreaker(e)))?;
    let channel = channel_config(ft.heartbeat_ms, ft.timeout_ms);
    let status = PairStatus::new("backup", String::new());
    log::info!("fault tolerance: waiting for a primary's seed on {listen}");
    let mut seed = loop {
        let mut seed = accept(listen, &key, &channel, stop)?;
        let (digest, offered) = seed.offer().map_err(VmotionError::Seed)?;
        let checked = localise(&offered, req).and_then(|(config, copies)| {
            let mine = crate::vcpu::ft::vm_config_digest(&config)
                .map_err(|e| ft_backend::error_chain(&e))?;
            if mine != digest {
                return Err(format!(
                    "peer's configuration differs (its digest {digest:#018x}, ours {mine:#018x})"
                ));
            }
            Ok((config, copies))
        });
        match checked {
            Ok((config, copies)) => {
                seed.accept_offer(copies).map_err(VmotionError::Seed)?;
                break (seed, config);
            }
            Err(why) => {
                log::warn!("fault tolerance: refused a seed: {why}");
                status.event("seed-refused", &[("reason", why.clone())]);
                seed.refuse(&why);
                // Wait for another primary.
            }
        }
    };
    let (peer_generation, peer_addr) = {
        let (hello, addr) = seed.0.peer();
        (hello.generation, addr)
    };
    status.event(
        "seed-receiving",
        &[
            ("peer", peer_addr.to_string()),
            ("generation", peer_generation.to_string()),
        ],
    );
    let config = seed.1;
    let hv_vm = hv
        .create_vm()
        .map_err(|e| VmotionError::Build(Box::new(VmError::CreateVm(e))))?;
    let memory = crate::memory::create_guest_memory(&hv_vm, config.memory.size, false)
        .map_err(|e| VmotionError::Build(Box::new(VmError::Memory(e))))?;
    let mut state = Vec::new();
    let mut received = 0u64;
    loop {
        match seed.0.next_item().map_err(VmotionError::Seed)? {
            SeedItem::Memory { gpa, data } => {
                memory
                    .write_slice(&data, GuestAddress(gpa))
                    .map_err(|_| VmotionError::State(format!("memory at {gpa:#x}")))?;
                received += data.len() as u64;
            }
            SeedItem::Zeros { gpa, len } => {
                // A page written in an earlier round is zero now.
                let zeros = [0u8; 4096];
                let mut at = 0;
                while at < len {
                    let n = (len - at).min(zeros.len() as u64);
                    memory
                        .write_slice(&zeros[..n as usize], GuestAddress(gpa + at))
                        .map_err(|_| VmotionError::State(format!("memory at {:#x}", gpa + at)))?;
                    at += n;
                }
            }
            SeedItem::State(b) => state.extend_from_slice(&b),
            SeedItem::End => break,
        }
    }
    let sections = state_file::decode(std::path::Path::new("the seed"), &state)
        .map_err(|e| VmotionError::State(ft_backend::error_chain(&e)))?;
    let section = |id: &str| -> Result<&Section, VmotionError> {
        sections
            .iter()
            .find(|s| s.id == id)
            .ok_or_else(|| VmotionError::State(format!("no section {id}")))
    };
    let vmm = &section(crate::snapshot::VMM_SECTION)?.data;
    if vmm.len() != 16 {
        return Err(VmotionError::State("a short vmm section".into()));
    }
    let clock_ns = u64::from_le_bytes(vmm[..8].try_into().unwrap_or_default());
    let tsc = u64::from_le_bytes(vmm[8..].try_into().unwrap_or_default());
    let vcpu_state = VcpuState::decode(&section(crate::snapshot::VCPU_SECTION)?.data)
        .map_err(|e| VmotionError::State(ft_backend::error_chain(&e)))?;
    let cursor = SeedCursor::decode(&section(CURSOR_SECTION)?.data)
        .ok_or_else(|| VmotionError::State("a bad cursor section".into()))?;
    let disk_sizes: Vec<(String, u64)> =
        serde_json::from_slice(&section(SETUP_SECTION)?.data).map_err(VmotionError::Config)?;
    let digest = crate::vcpu::ft::vm_config_digest(&config).map_err(VmotionError::Digest)?;

    // The channel on the same connection; the stream's header follows.
    let est = seed.0.finish().map_err(VmotionError::Seed)?;
    status.event("seed-received", &[("memory_bytes", received.to_string())]);
    let ch = ft_backend::channel::open_established(est, &channel).map_err(VmotionError::Channel)?;
    let mut backup = Backup::start(
        ch,
        status.clone(),
        tiebreaker,
        (channel.heartbeat, channel.timeout),
        digest,
        ft.log.as_deref(),
    )
    .map_err(VmotionError::Backup)?;
    // The stream's header is here: this side can take over from now on.
    backup.status.protected(&[
        ("generation", peer_generation.to_string()),
        ("exits", cursor.exits.to_string()),
    ]);
    let replayer = backup.take_replayer();

    let build = |e: VmError| VmotionError::Build(Box::new(e));
    let control = VcpuControl::new();
    let output = SwitchOutput::new(Arc::new(virtio_devices::ImmediateOutput));
    let backup_disks = match ft.disks {
        DiskMode::Separate => BackupDisks::Separate,
        DiskMode::Shared => BackupDisks::Shared,
    };
    // The replay's outputs are kept, as the boot-time backup's, to be sent
    // again at go-live.
    let dm = DeviceManager::for_backup(
        &config,
        &memory,
        &disk_sizes,
        backup_disks,
        backup.replayed.clone(),
    )
    .map_err(|e| build(VmError::Devices(e)))?;
    let mut vcpu = hv_vm.create_vcpu(0).map_err(|e| build(VmError::Vcpu(e)))?;
    let supported = hv.supported_cpuid().map_err(|e| build(VmError::Vcpu(e)))?;
    let cpuid =
        crate::cpuid::guest_cpuid(&supported, 0, 1).map_err(|e| build(VmError::Cpuid(e)))?;
    vcpu.set_cpuid(&cpuid)
        .map_err(|e| build(VmError::Vcpu(e)))?;
    vcpu_state
        .restore(vcpu.as_mut())
        .map_err(|e| VmotionError::State(ft_backend::error_chain(&e)))?;
    if tsc != 0 {
        vcpu.set_msrs(&[(crate::snapshot::MSR_IA32_TSC, tsc)])
            .map_err(|e| build(VmError::Vcpu(e)))?;
    }
    let clock = Arc::new(VmClock::new());
    ft_backend::clock::ContinuableClock::continue_from(clock.as_ref(), clock_ns);
    let ft_devices = dm.ft_devices();
    let states = ft_devices.states.clone();
    let pair_status = backup.status.clone();
    let (mut ft_ctx, intc_clock) = FtContext::new(
        &config,
        &memory,
        hv_vm.clone(),
        clock.clone(),
        replayer,
        ft_devices,
        Some(PairStart::Backup(Box::new(backup))),
        crate::vm::go_live_hook(&dm, control.clone(), output.clone()),
    )
    .map_err(|e| build(VmError::FaultTolerance(e)))?;
    let intc_clock = SwitchClock::new(intc_clock);
    let mut intc = InterruptController::new(intc_clock.clone());
    let device = |id: &str| -> Result<&[u8], VmotionError> { Ok(&section(id)?.data) };
    let intc_id = intc.snapshot_id().to_string();
    Snapshottable::restore(&mut intc, device(&intc_id)?)
        .map_err(|e| VmotionError::State(format!("{intc_id}: {}", ft_backend::error_chain(&e))))?;
    for d in &states {
        let mut d = d.lock().unwrap_or_else(|e| e.into_inner());
        let id = d.snapshot_id().to_string();
        d.restore(device(&id)?)
            .map_err(|e| VmotionError::State(format!("{id}: {}", ft_backend::error_chain(&e))))?;
    }
    ft_ctx.set_cursor(cursor);
    // Logging off: a replay reads no dirty pages; one that goes live and
    // is protected again registers its recording then.
    let dirty_log = crate::dirty_log::DirtyLog::new(hv_vm.clone(), &memory, false);
    let vm = Vm::start(
        vcpu,
        dm,
        intc,
        (clock, intc_clock, output),
        control,
        ft_ctx,
        &config,
        hv_vm,
        memory,
        dirty_log,
        Some(pair_status.clone()),
        events,
    )
    .map_err(build)?;
    log::info!(
        "fault tolerance: seeded by {peer_addr} at exit {} ({}); replaying its stream",
        cursor.exits,
        if cursor.at_sync {
            "a synchronous point"
        } else {
            "after a kick"
        }
    );
    Ok((config, vm))
}
