// Copyright 2026 The ft-cloud-hypervisor authors.
// SPDX-License-Identifier: Apache-2.0

//! The source's side: the running VM as a [`MigrationSource`], and the
//! worker thread that migrates it.

use std::path::PathBuf;
use std::sync::mpsc::Sender;
use std::thread::JoinHandle;

use vm_migration::migration::{
    self, BoxError, MigrationSource, PageSource, Params, Phase, Progress,
};
use vm_migration::snapshot::state_file;

use super::transport::{self, MigrationUrl};
use super::{error_chain, lock, MigrationError, SharedStatus};
use crate::config::VmConfig;
use crate::vm::{MigrationHandles, Vm};
use crate::ControlEvent;

/// What `vm.send-migration` asked for.
#[derive(Debug, Clone)]
pub struct SendRequest {
    /// The destination.
    pub url: MigrationUrl,
    /// The key file (an encrypted migration).
    pub key: Option<PathBuf>,
    /// Downtime, timeout, iterations.
    pub params: Params,
}

/// The VM as the engine sees it.
struct VmSource {
    handles: MigrationHandles,
    config_json: Vec<u8>,
}

impl PageSource for VmSource {
    fn memory_ranges(&self) -> Vec<(u64, u64)> {
        self.handles.pages.memory_ranges()
    }

    fn read_memory(&self, gpa: u64, buf: &mut [u8]) -> Result<(), BoxError> {
        self.handles.pages.read_memory(gpa, buf)
    }

    fn dirty_pages(&mut self) -> Result<Vec<(u64, Vec<u64>)>, BoxError> {
        self.handles.pages.dirty_pages()
    }
}

impl MigrationSource for VmSource {
    fn pause_and_save(&mut self) -> Result<Vec<u8>, BoxError> {
        let state = self.handles.pause_and_save()?;
        // The snapshot's sections; no memory digest (the pages travelled
        // with their own checksums).
        let sections = crate::snapshot::sections(&self.config_json, 0, state);
        Ok(state_file::encode(&sections))
    }

    fn resume(&mut self) -> Result<(), BoxError> {
        self.handles.resume();
        Ok(())
    }
}

fn phase_event(phase: Phase) -> &'static str {
    match phase {
        Phase::Setup => "send-migration-setup",
        Phase::PreCopy => "send-migration-precopy",
        Phase::StopAndCopy => "send-migration-stop-and-copy",
        Phase::Completed => "send-migration-completed",
        Phase::Failed => "send-migration-failed",
    }
}

/// Connects to the destination and starts the worker that migrates `vm`
/// (configuration `config`). Errors before the worker runs (a bad state,
/// an unreachable destination, a refused handshake) are the caller's;
/// the worker's end is reported with `ControlEvent::MigrationEnded`.
pub fn start(
    vm: &Vm,
    config: &VmConfig,
    request: SendRequest,
    status: SharedStatus,
    events: Sender<ControlEvent>,
) -> Result<JoinHandle<()>, MigrationError> {
    let config_json = serde_json::to_vec(config).map_err(MigrationError::Config)?;
    let mut conn = transport::connect(&request.url, request.key.as_deref())?;
    // From now on the guest's and the devices' writes to its memory are
    // tracked.
    let handles = vm.migration_handles().map_err(MigrationError::Vm)?;
    log::info!(
        "migration: sending to {} (downtime {} ms, timeout {} s{})",
        conn.peer,
        request.params.downtime_ms,
        request.params.timeout_s,
        if request.key.is_some() {
            ", encrypted"
        } else {
            ""
        }
    );
    event_monitor::event!(
        "vm",
        "send-migration-started",
        "url",
        lock(&status).url.clone()
    );
    std::thread::Builder::new()
        .name("migration-send".into())
        .spawn(move || {
            let mut source = VmSource {
                handles,
                config_json: config_json.clone(),
            };
            let mut last_phase = Phase::Setup;
            let mut report = |p: &Progress| {
                let mut s = lock(&status);
                s.progress = Some(*p);
                s.phase = p.phase;
                drop(s);
                if p.phase != last_phase {
                    last_phase = p.phase;
                    if p.phase != Phase::Completed {
                        event_monitor::event!("vm", phase_event(p.phase));
                    }
                }
            };
            let result = migration::send(
                &mut conn.reader,
                &mut conn.writer,
                &mut source,
                &config_json,
                request.params,
                &mut report,
            );
            drop(conn);
            // Logging stops with the migration's consumer (and the devices'
            // tracking with it).
            drop(source);
            let mut s = lock(&status);
            let end = match result {
                Ok(r) => {
                    s.phase = Phase::Completed;
                    let p = r.progress;
                    let downtime_ms = p.downtime.map_or(0.0, |d| d.as_secs_f64() * 1000.0);
                    log::info!(
                        "migration: completed in {:?}: {} bytes, {} pages, {} zero pages, {} rounds, downtime {downtime_ms:.1} ms, first round {:.0} MiB/s",
                        p.elapsed,
                        p.bytes_sent,
                        p.pages_sent,
                        p.zero_pages,
                        p.iteration,
                        r.precopy_bandwidth_bps / f64::from(1 << 20)
                    );
                    event_monitor::event!(
                        "vm",
                        "send-migration-completed",
                        "downtime_ms",
                        format!("{downtime_ms:.1}"),
                        "total_ms",
                        format!("{:.1}", p.elapsed.as_secs_f64() * 1000.0),
                        "bytes_sent",
                        p.bytes_sent.to_string(),
                        "iterations",
                        p.iteration.to_string(),
                        "precopy_mib_per_s",
                        format!("{:.0}", r.precopy_bandwidth_bps / f64::from(1 << 20))
                    );
                    Ok(())
                }
                Err(e) => {
                    let text = error_chain(&MigrationError::Migration(e));
                    log::error!("{text}");
                    s.phase = Phase::Failed;
                    s.error = Some(text.clone());
                    event_monitor::event!("vm", "send-migration-failed", "error", text.clone());
                    Err(text)
                }
            };
            drop(s);
            let _ = events.send(ControlEvent::MigrationEnded(end));
        })
        .map_err(MigrationError::Thread)
}
