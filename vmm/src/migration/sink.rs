// Copyright 2026 The ft-cloud-hypervisor authors.
// SPDX-License-Identifier: Apache-2.0

//! The destination's side: a VM built from the stream, as a
//! [`MigrationSink`].

use std::path::Path;
use std::sync::mpsc::Sender;
use std::sync::Arc;

use hypervisor::Hypervisor;
use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryRegion};
use vm_migration::migration::{BoxError, MigrationSink};
use vm_migration::snapshot::state_file;

use crate::config::VmConfig;
use crate::memory::{self, GuestMemoryMmapT};
use crate::vm::{Vm, VmError};
use crate::ControlEvent;

/// How the stream names itself in errors about its state.
const STREAM: &str = "the migration stream";

/// Errors building the VM from the stream.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// The configuration does not parse.
    #[error("the source's VM configuration does not parse")]
    ConfigParse(#[source] serde_json::Error),
    /// The configuration is not one this VMM runs.
    #[error("the source's VM configuration is invalid")]
    ConfigInvalid(#[source] crate::config::ValidationError),
    /// Record/replay and pairs are not migrated.
    #[error("a VM under --fault-tolerance cannot be migrated (not supported)")]
    FaultTolerance,
    /// The memory layout is not the one the configuration gives here.
    #[error("the source's memory ranges {source_ranges:x?} are not this VMM's {ours:x?} for the same configuration")]
    Layout {
        /// The source's.
        source_ranges: Vec<(u64, u64)>,
        /// Ours.
        ours: Vec<(u64, u64)>,
    },
    /// Pages before the configuration.
    #[error("memory arrived before the configuration")]
    NotPrepared,
    /// A page outside guest memory.
    #[error("{len} bytes at {gpa:#x} are outside guest memory")]
    OutOfRange {
        /// Address.
        gpa: u64,
        /// Bytes.
        len: u64,
    },
    /// The state file in the stream is damaged or of another version.
    #[error("the final state")]
    State(#[source] vm_migration::snapshot::SnapshotError),
    /// The VM cannot be built or run.
    #[error("cannot build the VM")]
    Vm(#[source] VmError),
}

struct Prepared {
    config: VmConfig,
    json: Vec<u8>,
    hv_vm: Arc<dyn hypervisor::Vm>,
    memory: GuestMemoryMmapT,
}

/// Builds the VM as the stream arrives.
pub struct VmSink<'a> {
    hv: &'a dyn Hypervisor,
    events: Sender<ControlEvent>,
    prepared: Option<Prepared>,
    /// The running VM and its configuration, once `finish` succeeded.
    pub done: Option<(VmConfig, Vm)>,
}

impl std::fmt::Debug for VmSink<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VmSink")
            .field("prepared", &self.prepared.is_some())
            .field("done", &self.done.is_some())
            .finish_non_exhaustive()
    }
}

impl<'a> VmSink<'a> {
    /// A sink that builds its VM on `hv`.
    pub fn new(hv: &'a dyn Hypervisor, events: Sender<ControlEvent>) -> Self {
        VmSink {
            hv,
            events,
            prepared: None,
            done: None,
        }
    }

    fn memory(&self) -> Result<&GuestMemoryMmapT, SinkError> {
        self.prepared
            .as_ref()
            .map(|p| &p.memory)
            .ok_or(SinkError::NotPrepared)
    }
}

static ZEROS: [u8; 65536] = [0; 65536];

impl MigrationSink for VmSink<'_> {
    fn prepare(&mut self, config_json: &[u8], ranges: &[(u64, u64)]) -> Result<(), BoxError> {
        let config: VmConfig =
            serde_json::from_slice(config_json).map_err(SinkError::ConfigParse)?;
        config.validate().map_err(SinkError::ConfigInvalid)?;
        if config.fault_tolerance.is_some() {
            return Err(SinkError::FaultTolerance.into());
        }
        let ours: Vec<(u64, u64)> = memory::ram_ranges(config.memory.size)
            .into_iter()
            .map(|(a, l)| (a.0, l as u64))
            .collect();
        if ours != ranges {
            return Err(SinkError::Layout {
                source_ranges: ranges.to_vec(),
                ours,
            }
            .into());
        }
        let hv_vm = self
            .hv
            .create_vm()
            .map_err(|e| SinkError::Vm(VmError::CreateVm(e)))?;
        let memory = memory::create_guest_memory(&hv_vm, config.memory.size, false)
            .map_err(|e| SinkError::Vm(VmError::Memory(e)))?;
        self.prepared = Some(Prepared {
            config,
            json: config_json.to_vec(),
            hv_vm,
            memory,
        });
        Ok(())
    }

    fn write_memory(&mut self, gpa: u64, data: &[u8]) -> Result<(), BoxError> {
        self.memory()?
            .write_slice(data, GuestAddress(gpa))
            .map_err(|_| SinkError::OutOfRange {
                gpa,
                len: data.len() as u64,
            })?;
        Ok(())
    }

    fn zero_memory(&mut self, gpa: u64, len: u64) -> Result<(), BoxError> {
        let memory = self.memory()?;
        let mut at = 0;
        while at < len {
            let n = (len - at).min(ZEROS.len() as u64);
            memory
                .write_slice(&ZEROS[..n as usize], GuestAddress(gpa + at))
                .map_err(|_| SinkError::OutOfRange { gpa, len })?;
            at += n;
        }
        Ok(())
    }

    fn finish(&mut self, state: &[u8]) -> Result<(), BoxError> {
        let p = self.prepared.take().ok_or(SinkError::NotPrepared)?;
        let stream = Path::new(STREAM);
        let sections = state_file::decode(stream, state).map_err(SinkError::State)?;
        let (loaded, _digest) = crate::snapshot::decode(stream, &sections, stream, &p.json)
            .map_err(|e| SinkError::Vm(VmError::Snapshot(e)))?;
        // The layout was checked against this configuration in `prepare`.
        debug_assert_eq!(
            p.memory.iter().map(|r| r.len()).sum::<u64>(),
            loaded.config.memory.size
        );
        let mut vm = Vm::restore_state(self.hv, p.hv_vm, p.memory, &loaded, self.events.clone())
            .map_err(SinkError::Vm)?;
        vm.resume().map_err(SinkError::Vm)?;
        vm.announce_macs();
        self.done = Some((p.config, vm));
        Ok(())
    }
}
