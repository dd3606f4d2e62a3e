// Copyright 2026 The ft-cloud-hypervisor authors.
// SPDX-License-Identifier: Apache-2.0

//! `vm.snapshot` and `vm.restore`: a paused VM to a directory and back.
//!
//! Saving runs in two places. On the paused vCPU thread
//! ([`save_on_vcpu`], through [`VcpuControl::run_paused`]): the I/O
//! instruction the last exit left half done is completed (`KVM_RUN` with
//! `immediate_exit`, as the KVM API asks before saving state), the disks'
//! requests in flight are waited for and completed in guest memory (so
//! that none must be issued again after a restore), then the vCPU's, the
//! interrupt controller's and every device's state and the VM clock's time
//! are taken. Then, on the control thread while the VM stays paused,
//! [`write`] stores the configuration, guest memory and that state in the
//! format of [`vm_migration::snapshot`].
//!
//! Loading ([`load`]) reads and checks every file (magic, versions,
//! lengths, checksums, the configuration's, the sections the VM needs)
//! before a VM is built; the memory contents are checked while they are
//! copied into the new VM's memory, which is thrown away if they do not
//! match. Nothing runs until everything is in place.
//!
//! [`VcpuControl::run_paused`]: crate::vcpu::VcpuControl::run_paused

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use devices::clock::Clock;
use hypervisor::VmExit;
use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryRegion};
use vm_migration::snapshot::{
    memory_file, state_file, MemoryHeader, Section, SnapshotError, CONFIG_FILE, MEMORY_FILE,
    STATE_FILE,
};
use vm_migration::vcpu::VcpuState;
use vm_migration::{MigratableError, Snapshottable};

use crate::config::VmConfig;
use crate::memory::GuestMemoryMmapT;
use crate::vcpu::exit::{handle_exit, ExitAction, ExitContext};
use crate::vcpu::{DeviceState, VcpuRunner};

/// The section with the VMM's own state (clock, checksums of the other files).
pub const VMM_SECTION: &str = "vmm";
/// The section with the vCPU's state.
pub const VCPU_SECTION: &str = "vcpu0";
/// Version of the `vmm` section's encoding.
const VMM_SECTION_VERSION: u32 = 1;
/// Version of the `vcpu0` section's encoding ([`VcpuState::encode`]).
const VCPU_SECTION_VERSION: u32 = 1;
/// Version of a device section's encoding (its `Snapshottable` bytes,
/// which carry the device's own version byte first).
const DEVICE_SECTION_VERSION: u32 = 1;
/// Most exits the last instruction may still need (a `rep ins`/`outs`).
const MAX_SETTLE_EXITS: usize = 4096;
/// How long a snapshot waits for the disks' requests in flight.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// Errors taking or restoring a snapshot.
#[derive(Debug, thiserror::Error)]
pub enum VmSnapshotError {
    /// The URL is not `file:///DIR`.
    #[error(
        "the snapshot URL {0:?} is not file:///ABSOLUTE/DIR (only local directories are supported)"
    )]
    Url(String),
    /// The VM is not paused (upstream's wording).
    #[error("Trying to snapshot while VM is running")]
    NotPaused,
    /// Record/replay and pairs keep their own state.
    #[error("a VM under --fault-tolerance cannot be snapshotted or restored (not supported)")]
    FaultTolerance,
    /// The snapshot directory cannot be created.
    #[error("cannot create the snapshot directory {path}")]
    CreateDir {
        /// The directory.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A snapshot file is damaged, truncated, missing or of another version.
    #[error("cannot use the snapshot")]
    File(#[source] SnapshotError),
    /// `config.json` cannot be written or read.
    #[error("cannot access {path}")]
    ConfigIo {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// `config.json` does not parse.
    #[error("{path} is not a VM configuration")]
    ConfigParse {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: serde_json::Error,
    },
    /// `config.json` is not the one the state file was saved with.
    #[error("{path}: bad checksum (the file is damaged or from another snapshot)")]
    ConfigChecksum {
        /// The file.
        path: PathBuf,
    },
    /// The saved configuration is not one this VMM runs.
    #[error("the saved configuration is invalid")]
    ConfigInvalid(#[source] crate::config::ValidationError),
    /// A section the VM needs is missing, or one is left over.
    #[error("{path}: {reason}")]
    Sections {
        /// The state file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A section has a version this VMM does not read.
    #[error("{path}: section {id} has version {found}; this VMM reads version {expected}")]
    SectionVersion {
        /// The state file.
        path: PathBuf,
        /// The section.
        id: String,
        /// In the file.
        found: u32,
        /// Ours.
        expected: u32,
    },
    /// The memory file does not match the configuration or the state file.
    #[error("{path}: {reason}")]
    MemoryMismatch {
        /// The memory file.
        path: PathBuf,
        /// What differs.
        reason: String,
    },
    /// The vCPU's state cannot be saved, decoded or restored.
    #[error("vCPU state")]
    Vcpu(#[source] MigratableError),
    /// A device refuses its saved state.
    #[error("cannot restore the state of {id}")]
    Device {
        /// The device.
        id: String,
        /// Why.
        #[source]
        source: MigratableError,
    },
    /// Finishing the last exit or applying a device completion failed.
    #[error("cannot bring the vCPU to a consistent point")]
    Settle(#[source] crate::vcpu::VcpuError),
    /// The last exit's instruction needed more exits than a string
    /// instruction can.
    #[error("the vCPU's last instruction did not complete after {0} exits")]
    Unfinished(usize),
    /// The configuration cannot be serialised.
    #[error("cannot serialise the VM configuration")]
    ConfigSerialize(#[source] serde_json::Error),
    /// A disk's requests did not complete.
    #[error("the device {0} still has requests in flight after {DRAIN_TIMEOUT:?}")]
    Drain(String),
    /// The paused vCPU thread did not run the save.
    #[error("the vCPU thread did not save its state")]
    VcpuUnresponsive,
}

/// The directory of a `file:///DIR` URL.
pub fn url_dir(url: &str) -> Result<PathBuf, VmSnapshotError> {
    match url.strip_prefix("file://") {
        Some(path) if path.starts_with('/') && path.len() > 1 => Ok(PathBuf::from(path)),
        _ => Err(VmSnapshotError::Url(url.to_string())),
    }
}

/// What the paused vCPU thread saved.
#[derive(Debug)]
pub struct PausedState {
    /// The vCPU ([`VcpuState::encode`]).
    pub vcpu: Vec<u8>,
    /// Interrupt controller first, then the other devices, by snapshot id.
    pub devices: Vec<(String, Vec<u8>)>,
    /// The VM clock's time.
    pub clock_ns: u64,
    /// The vCPU's time-stamp counter (`IA32_TSC`), 0 if KVM has none.
    pub tsc: u64,
}

/// `IA32_TSC`: saved with a snapshot (not with micro-checkpoints, see
/// `vm_migration::vcpu::SAVED_MSRS`), so that a guest reading the TSC
/// (Linux's clocksource) does not see it go back after a restore.
pub const MSR_IA32_TSC: u32 = 0x10;

/// On the paused vCPU thread: completes the last exit's I/O, waits for
/// the requests in flight of `virtio` and applies their completions, then
/// saves the vCPU, the interrupt controller and `devices`.
pub fn save_on_vcpu(
    runner: &mut VcpuRunner,
    devices: &[DeviceState],
    virtio: &[Arc<Mutex<virtio_devices::VirtioPciDevice>>],
) -> Result<PausedState, VmSnapshotError> {
    complete_pending_exit(runner)?;
    let start = Instant::now();
    let in_flight: usize = virtio
        .iter()
        .map(|d| d.lock().unwrap_or_else(|e| e.into_inner()).in_flight())
        .sum();
    if in_flight > 0 {
        log::info!("snapshot: completing {in_flight} disk requests in flight first");
    }
    loop {
        runner
            .deliver_host_events()
            .map_err(VmSnapshotError::Settle)?;
        let busy = virtio.iter().find_map(|d| {
            let d = d.lock().unwrap_or_else(|e| e.into_inner());
            (d.in_flight() > 0).then(|| d.id().to_string())
        });
        match busy {
            None => break,
            Some(id) if start.elapsed() > DRAIN_TIMEOUT => return Err(VmSnapshotError::Drain(id)),
            Some(_) => std::thread::sleep(Duration::from_millis(1)),
        }
    }
    let vcpu = VcpuState::save(runner.vcpu.as_ref())
        .map_err(VmSnapshotError::Vcpu)?
        .encode();
    let mut saved = vec![(
        runner.intc.snapshot_id().to_string(),
        runner.intc.snapshot(),
    )];
    for d in devices {
        let d = d.lock().unwrap_or_else(|e| e.into_inner());
        saved.push((d.snapshot_id().to_string(), d.snapshot()));
    }
    let tsc = runner
        .vcpu
        .get_msrs(&[MSR_IA32_TSC])
        .ok()
        .and_then(|m| m.first().map(|(_, v)| *v))
        .unwrap_or(0);
    Ok(PausedState {
        vcpu,
        devices: saved,
        clock_ns: runner.clock.now_ns(),
        tsc,
    })
}

/// KVM completes an I/O exit (the value of an `IN`, an MMIO read) only at
/// the next `KVM_RUN`: enter with `immediate_exit` so that it does and
/// returns before running the guest. A string instruction may need more
/// exits; they are handled as the vCPU loop would.
fn complete_pending_exit(runner: &mut VcpuRunner) -> Result<(), VmSnapshotError> {
    runner.vcpu.set_immediate_exit(true);
    let result = (|| {
        for _ in 0..MAX_SETTLE_EXITS {
            let exit = runner
                .vcpu
                .run()
                .map_err(|e| VmSnapshotError::Settle(crate::vcpu::VcpuError::Hypervisor(e)))?;
            if exit == VmExit::Interrupted {
                return Ok(());
            }
            let mut ctx = ExitContext {
                pio: &runner.pio,
                mmio: &runner.mmio,
                intc: &mut runner.intc,
            };
            let action = handle_exit(&exit, &mut ctx)
                .map_err(|e| VmSnapshotError::Settle(crate::vcpu::VcpuError::Exit(e)))?;
            match action {
                ExitAction::CompleteIoIn(data) => runner.vcpu.complete_io_in(&data),
                ExitAction::CompleteMmioRead(data) => runner.vcpu.complete_mmio_read(&data),
                _ => {}
            }
        }
        Err(VmSnapshotError::Unfinished(MAX_SETTLE_EXITS))
    })();
    runner.vcpu.set_immediate_exit(false);
    result
}

/// Bytes of the `vmm` section: clock time u64, CRC-32 of `config.json`
/// u32, XXH3-64 of the memory u64, TSC u64.
const VMM_SECTION_LEN: usize = 28;

fn vmm_section(clock_ns: u64, config_crc: u32, memory_digest: u64, tsc: u64) -> Section {
    let mut data = Vec::with_capacity(VMM_SECTION_LEN);
    data.extend_from_slice(&clock_ns.to_le_bytes());
    data.extend_from_slice(&config_crc.to_le_bytes());
    data.extend_from_slice(&memory_digest.to_le_bytes());
    data.extend_from_slice(&tsc.to_le_bytes());
    Section {
        id: VMM_SECTION.into(),
        version: VMM_SECTION_VERSION,
        data,
    }
}

/// The state sections of `state`, for a VM whose configuration is
/// `config_json` and whose memory has the XXH3-64 `memory_digest` (0: not
/// taken, a live migration: its pages carry their own checksums).
pub fn sections(config_json: &[u8], memory_digest: u64, state: PausedState) -> Vec<Section> {
    let mut sections = vec![
        vmm_section(
            state.clock_ns,
            crc32fast::hash(config_json),
            memory_digest,
            state.tsc,
        ),
        Section {
            id: VCPU_SECTION.into(),
            version: VCPU_SECTION_VERSION,
            data: state.vcpu,
        },
    ];
    for (id, data) in state.devices {
        sections.push(Section {
            id,
            version: DEVICE_SECTION_VERSION,
            data,
        });
    }
    sections
}

/// Writes a snapshot of a paused VM to `dir`: `config.json`, `memory.bin`,
/// then `state.bin` (written last: a directory without it is not a
/// snapshot). Returns the bytes written.
pub fn write(
    dir: &Path,
    config: &VmConfig,
    memory: &GuestMemoryMmapT,
    state: PausedState,
) -> Result<u64, VmSnapshotError> {
    std::fs::create_dir_all(dir).map_err(|source| VmSnapshotError::CreateDir {
        path: dir.to_path_buf(),
        source,
    })?;
    let config_path = dir.join(CONFIG_FILE);
    let config_json =
        serde_json::to_vec_pretty(config).map_err(|source| VmSnapshotError::ConfigParse {
            path: config_path.clone(),
            source,
        })?;
    std::fs::write(&config_path, &config_json).map_err(|source| VmSnapshotError::ConfigIo {
        path: config_path.clone(),
        source,
    })?;
    let ranges: Vec<(u64, u64)> = memory.iter().map(|r| (r.start_addr().0, r.len())).collect();
    let memory_path = dir.join(MEMORY_FILE);
    let digest = memory_file::write(&memory_path, &ranges, |gpa, buf| {
        memory
            .read_slice(buf, GuestAddress(gpa))
            .map_err(|e| e.to_string())
    })
    .map_err(VmSnapshotError::File)?;
    let sections = sections(&config_json, digest, state);
    let state_path = dir.join(STATE_FILE);
    state_file::write(&state_path, &sections).map_err(VmSnapshotError::File)?;
    let size = [&config_path, &memory_path, &state_path]
        .iter()
        .filter_map(|p| std::fs::metadata(p).ok())
        .map(|m| m.len())
        .sum();
    Ok(size)
}

/// A snapshot read and checked, ready to build a VM from.
#[derive(Debug)]
pub struct LoadedSnapshot {
    /// The saved configuration.
    pub config: VmConfig,
    /// The VM clock's time.
    pub clock_ns: u64,
    /// The vCPU's TSC (0: not saved).
    pub tsc: u64,
    /// The vCPU's state.
    pub vcpu: VcpuState,
    /// Device states by snapshot id (the interrupt controller's included).
    pub devices: Vec<(String, Vec<u8>)>,
    /// Where the state came from (errors name it).
    pub state_path: PathBuf,
    /// The memory file and its checked header (none: the memory came
    /// another way, a live migration).
    pub memory: Option<(PathBuf, MemoryHeader)>,
}

/// Reads and checks the snapshot in `dir`.
pub fn load(dir: &Path) -> Result<LoadedSnapshot, VmSnapshotError> {
    let state_path = dir.join(STATE_FILE);
    let sections = state_file::read(&state_path).map_err(VmSnapshotError::File)?;
    let config_path = dir.join(CONFIG_FILE);
    let config_json = std::fs::read(&config_path).map_err(|source| VmSnapshotError::ConfigIo {
        path: config_path.clone(),
        source,
    })?;
    let (mut loaded, memory_digest) = decode(&state_path, &sections, &config_path, &config_json)?;
    let config = &loaded.config;
    let memory_path = dir.join(MEMORY_FILE);
    let memory_header = memory_file::read_header(&memory_path).map_err(VmSnapshotError::File)?;
    let total: u64 = memory_header.ranges.iter().map(|(_, l)| l).sum();
    if total != config.memory.size {
        return Err(VmSnapshotError::MemoryMismatch {
            path: memory_path,
            reason: format!(
                "holds {total} bytes of memory; the configuration has {}",
                config.memory.size
            ),
        });
    }
    if memory_header.digest != memory_digest {
        return Err(VmSnapshotError::MemoryMismatch {
            path: memory_path,
            reason: "its digest is not the one the state file recorded (the file is damaged or from another snapshot)".into(),
        });
    }
    loaded.memory = Some((memory_path, memory_header));
    Ok(loaded)
}

/// Checks `sections` (from `state_path`: a file, or a migration stream)
/// against the configuration `config_json` (from `config_path`) and
/// decodes them; returns the state (without memory) and the memory digest
/// the `vmm` section recorded.
pub fn decode(
    state_path: &Path,
    sections: &[Section],
    config_path: &Path,
    config_json: &[u8],
) -> Result<(LoadedSnapshot, u64), VmSnapshotError> {
    let state_path = state_path.to_path_buf();
    let sections_err = |reason: String| VmSnapshotError::Sections {
        path: state_path.clone(),
        reason,
    };
    let take = |id: &str, version: u32| -> Result<&Section, VmSnapshotError> {
        let s = sections
            .iter()
            .find(|s| s.id == id)
            .ok_or_else(|| sections_err(format!("no section {id}")))?;
        if s.version != version {
            return Err(VmSnapshotError::SectionVersion {
                path: state_path.clone(),
                id: id.to_string(),
                found: s.version,
                expected: version,
            });
        }
        Ok(s)
    };
    let vmm = take(VMM_SECTION, VMM_SECTION_VERSION)?;
    if vmm.data.len() != VMM_SECTION_LEN {
        return Err(sections_err(format!(
            "section {VMM_SECTION} has {} bytes, not {VMM_SECTION_LEN}",
            vmm.data.len()
        )));
    }
    let mut b8 = [0u8; 8];
    b8.copy_from_slice(&vmm.data[..8]);
    let clock_ns = u64::from_le_bytes(b8);
    let mut b4 = [0u8; 4];
    b4.copy_from_slice(&vmm.data[8..12]);
    let config_crc = u32::from_le_bytes(b4);
    b8.copy_from_slice(&vmm.data[12..20]);
    let memory_digest = u64::from_le_bytes(b8);
    b8.copy_from_slice(&vmm.data[20..28]);
    let tsc = u64::from_le_bytes(b8);

    if crc32fast::hash(config_json) != config_crc {
        return Err(VmSnapshotError::ConfigChecksum {
            path: config_path.to_path_buf(),
        });
    }
    let config: VmConfig =
        serde_json::from_slice(config_json).map_err(|source| VmSnapshotError::ConfigParse {
            path: config_path.to_path_buf(),
            source,
        })?;
    config.validate().map_err(VmSnapshotError::ConfigInvalid)?;
    if config.fault_tolerance.is_some() {
        return Err(VmSnapshotError::FaultTolerance);
    }

    let vcpu_section = take(VCPU_SECTION, VCPU_SECTION_VERSION)?;
    let vcpu = VcpuState::decode(&vcpu_section.data).map_err(VmSnapshotError::Vcpu)?;
    let mut devices = Vec::new();
    for s in sections {
        if s.id == VMM_SECTION || s.id == VCPU_SECTION {
            continue;
        }
        take(&s.id, DEVICE_SECTION_VERSION)?;
        devices.push((s.id.clone(), s.data.clone()));
    }

    Ok((
        LoadedSnapshot {
            config,
            clock_ns,
            tsc,
            vcpu,
            devices,
            state_path,
            memory: None,
        },
        memory_digest,
    ))
}

impl LoadedSnapshot {
    /// Copies the saved memory into `memory` (a new VM's, whose layout
    /// must be the saved one), checking its digest.
    pub fn load_memory(&self, memory: &GuestMemoryMmapT) -> Result<(), VmSnapshotError> {
        let Some((memory_path, memory_header)) = &self.memory else {
            return Err(VmSnapshotError::Sections {
                path: self.state_path.clone(),
                reason: "no memory file".into(),
            });
        };
        let layout: Vec<(u64, u64)> = memory.iter().map(|r| (r.start_addr().0, r.len())).collect();
        if layout != memory_header.ranges {
            return Err(VmSnapshotError::MemoryMismatch {
                path: memory_path.clone(),
                reason: format!(
                    "memory ranges {:x?}; this VM's are {layout:x?}",
                    memory_header.ranges
                ),
            });
        }
        memory_file::load(memory_path, memory_header, |gpa, data| {
            memory
                .write_slice(data, GuestAddress(gpa))
                .map_err(|e| e.to_string())
        })
        .map_err(VmSnapshotError::File)
    }

    /// The saved state of the device `id`, or an error naming it.
    pub fn device(&self, id: &str) -> Result<&[u8], VmSnapshotError> {
        self.devices
            .iter()
            .find(|(i, _)| i == id)
            .map(|(_, d)| d.as_slice())
            .ok_or_else(|| VmSnapshotError::Sections {
                path: self.state_path.clone(),
                reason: format!("no section for the device {id}"),
            })
    }

    /// Restores `devices` (every device with state but the interrupt
    /// controller) and checks that the snapshot holds no other device.
    pub fn restore_devices(
        &self,
        intc_id: &str,
        devices: &[DeviceState],
    ) -> Result<(), VmSnapshotError> {
        let mut ids = vec![intc_id.to_string()];
        for d in devices {
            let mut d = d.lock().unwrap_or_else(|e| e.into_inner());
            let id = d.snapshot_id().to_string();
            let data = self.device(&id)?;
            d.restore(data).map_err(|source| VmSnapshotError::Device {
                id: id.clone(),
                source,
            })?;
            ids.push(id);
        }
        if let Some((extra, _)) = self.devices.iter().find(|(i, _)| !ids.contains(i)) {
            return Err(VmSnapshotError::Sections {
                path: self.state_path.clone(),
                reason: format!("the device {extra} is not in the saved configuration"),
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        assert_eq!(url_dir("file:///tmp/s").unwrap(), PathBuf::from("/tmp/s"));
        for bad in ["/tmp/s", "file://tmp/s", "tcp:1.2.3.4:5", "file:///", ""] {
            assert!(url_dir(bad).is_err(), "{bad}");
        }
    }
}
