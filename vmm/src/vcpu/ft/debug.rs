// Copyright 2026 The ft-cloud-hypervisor authors.
// SPDX-License-Identifier: Apache-2.0

//! The debug option of record/replay (`debug_from=N`, `debug_report=FILE`):
//! where a replay diverged, found by comparing state the recording logged.
//!
//! Recording with `debug_from=N` logs the vCPU state at every guest-caused
//! exit from exit N and a hash of every guest page after every checkpoint
//! from exit N (only the hashes that changed since the previous record,
//! see [`ft_backend::debug`]), with the
//! guest clock paused meanwhile so that the slow hashing does not show up
//! as guest time. A replay of such a log compares at the same points: the
//! first exit whose vCPU state differs (and which registers), the first
//! checkpoint after which guest memory differs (and which pages, and
//! whether the checkpoint carried them). The findings go to stderr when the
//! replay ends and, with `debug_report=FILE`, to a report `ft-log diverge`
//! reads; both name the kernel symbols nearest to the RIPs and addresses
//! when the kernel is an ELF with a symbol table.

use std::collections::BTreeSet;
use std::path::PathBuf;

use ft_backend::debug::{diff_vcpu, hash_pages, vcpu_rip, PageHashDelta, PageHashTable};
use ft_backend::report::{
    DivergenceReport, MemoryFinding, PageFinding, VcpuFinding, MAX_LISTED_PAGES,
};
use ft_backend::symbols::Symbols;
use ft_backend::{Checkpoint, DebugEntry};
use hypervisor::Vcpu;
use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryRegion};
use vm_migration::vcpu::VcpuState;

use super::{FtContext, FtError};
use crate::clock::VmClock;
use crate::config::{FaultToleranceMode, VmConfig};

/// Debug state of record/replay.
#[derive(Debug, Default)]
pub struct FtDebug {
    /// Recording: log vCPU states from this exit; `None`: no debug records.
    from: Option<u64>,
    /// The last exit the vCPU hook saw (it runs after every `run`).
    last_exit: u64,
    /// Recording: the page hashes as last logged. Replay: the recording's
    /// page hashes, rebuilt from its records.
    pages: PageHashTable,
    /// Replay: the last checkpoint whose page hashes the table holds.
    last_seq: Option<u64>,
    /// Replay: what was found.
    report: DivergenceReport,
    /// Replay: where to write the report.
    report_path: Option<PathBuf>,
    /// The kernel image, for symbols.
    kernel: Option<PathBuf>,
}

impl FtDebug {
    /// The debug settings of `config`.
    pub fn new(config: &VmConfig) -> Self {
        let ft = config.fault_tolerance.as_ref();
        FtDebug {
            from: ft
                .filter(|f| f.mode == FaultToleranceMode::Record)
                .and_then(|f| f.debug_from),
            report_path: ft.and_then(|f| f.debug_report.clone()),
            report: DivergenceReport {
                log: ft
                    .and_then(|f| f.log.as_ref())
                    .map_or(String::new(), |l| l.display().to_string()),
                outcome: "the replay had not ended when this was written".into(),
                ..DivergenceReport::default()
            },
            kernel: config.payload.as_ref().and_then(|p| p.kernel.clone()),
            ..FtDebug::default()
        }
    }
}

/// Runs `f` with the guest clock stopped (the work is the VMM's, not the
/// guest's).
fn paused<T>(clock: &VmClock, f: impl FnOnce() -> T) -> T {
    clock.pause();
    let r = f();
    clock.resume();
    r
}

impl FtContext {
    /// Every guest page's hash, by guest-physical address.
    fn page_hashes(&self) -> Vec<(u64, u64)> {
        let regions: Vec<(u64, &[u8])> = self
            .memory
            .iter()
            .map(|r| {
                let len = usize::try_from(r.len()).unwrap_or(0);
                // SAFETY: the region's mapping is `len` bytes at `as_ptr()`
                // and stays mapped while `self.memory` lives; the vCPU is not
                // running (this is its own thread, between runs) and no other
                // thread writes guest memory, so the bytes do not change.
                let bytes = unsafe { std::slice::from_raw_parts(r.as_ptr().cast_const(), len) };
                (r.start_addr().0, bytes)
            })
            .collect();
        hash_pages(&regions)
    }

    /// After every `run`: at a new guest-caused exit, the recording logs
    /// the vCPU state (from `debug_from`), the replay compares it.
    pub fn debug_exit(&mut self, vcpu: &dyn Vcpu, clock: &VmClock) -> Result<(), FtError> {
        if self.exits == self.debug.last_exit {
            return Ok(());
        }
        self.debug.last_exit = self.exits;
        let (exit, at) = (self.exits, self.last_id);
        if !self.active() {
            return Ok(());
        }
        if !self.replaying() {
            if self.debug.from.is_some_and(|from| exit >= from) {
                let state = paused(clock, || VcpuState::save(vcpu))
                    .map_err(FtError::Checkpoint)?
                    .encode();
                self.mode.log_debug(DebugEntry::Vcpu { exit, at, state });
            }
        } else {
            let recorded = self.mode.take_debug(
                exit,
                &|d| matches!(d, DebugEntry::Vcpu { exit: e, .. } if *e == exit),
            );
            let Some(DebugEntry::Vcpu { state, .. }) = recorded else {
                return Ok(());
            };
            self.debug.report.debug = true;
            if self.debug.report.vcpu.is_some() {
                return Ok(());
            }
            let next = self.mode.next_checkpoint_pages();
            let mine = VcpuState::save(vcpu).map_err(FtError::Checkpoint)?.encode();
            self.debug.report.exits_compared += 1;
            let registers = diff_vcpu(&state, &mine);
            if !registers.is_empty() {
                let names: Vec<&str> = registers.iter().map(|r| r.name.as_str()).collect();
                log::error!(
                    "fault tolerance: the vCPU state differs from the recording at exit {exit} ({at}): {}",
                    names.join(", ")
                );
                self.debug.report.vcpu = Some(VcpuFinding {
                    exit,
                    at,
                    recorded_rip: vcpu_rip(&state).unwrap_or(0),
                    replayed_rip: vcpu_rip(&mine).unwrap_or(0),
                    registers,
                });
                self.debug_exit_memory(next);
                self.debug_write_report();
            }
        }
        Ok(())
    }

    /// Recording: after checkpoint `seq` was logged, the hashes of the
    /// pages that changed since the last record (from exit `debug_from`:
    /// hashing all of memory is the slow part, so the option bounds both).
    pub fn debug_checkpoint_taken(&mut self, seq: u64, clock: &VmClock) {
        if !self.active() || self.replaying() {
            return;
        }
        if self.debug.from.is_none_or(|from| self.exits < from) {
            return;
        }
        let exit = self.exits;
        let now = paused(clock, || self.page_hashes());
        let changed = paused(clock, || self.debug.pages.delta(&now));
        self.mode.log_debug(DebugEntry::Pages(PageHashDelta {
            seq,
            exit,
            pages: now.len() as u64,
            changed,
        }));
    }

    /// Replay: after applying checkpoint `cp`, compares every page's hash
    /// with the recording's (until the first difference). When applying
    /// failed (`applied` false), only if its pages were written (a state
    /// digest mismatch comes last; a device state mismatch comes before
    /// the pages).
    pub fn debug_checkpoint_applied(&mut self, cp: &Checkpoint, applied: bool) {
        if !self.replaying() {
            return;
        }
        if !applied && !self.holds_pages_of(cp) {
            return;
        }
        let recorded = self.mode.take_debug(
            cp.exit,
            &|d| matches!(d, DebugEntry::Pages(p) if p.seq == cp.seq),
        );
        let Some(DebugEntry::Pages(delta)) = recorded else {
            return;
        };
        self.debug.report.debug = true;
        self.debug.pages.apply(&delta);
        self.debug.last_seq = Some(cp.seq);
        if self.debug.report.memory.is_some() {
            return;
        }
        self.debug.report.checkpoints_compared += 1;
        let differing = self.debug.pages.differing(&self.page_hashes());
        if differing.is_empty() {
            return;
        }
        let dirty: BTreeSet<u64> = cp.pages.iter().map(|(g, _)| *g).collect();
        let pages: Vec<PageFinding> = differing
            .iter()
            .take(MAX_LISTED_PAGES)
            .map(|&gpa| PageFinding {
                gpa,
                in_dirty_list: dirty.contains(&gpa),
            })
            .collect();
        log::error!(
            "fault tolerance: guest memory differs from the recording after checkpoint {} at exit {}: {} pages, first {:#x}",
            cp.seq,
            cp.exit,
            differing.len(),
            differing[0]
        );
        self.debug.report.memory = Some(MemoryFinding {
            seq: cp.seq,
            exit: cp.exit,
            at: cp.at,
            dirty: cp.pages.len() as u64,
            differing: differing.len() as u64,
            pages,
        });
        self.debug_write_report();
    }

    /// Replay, at the first exit whose vCPU state differs: the pages that
    /// differ from the recording's hashes at the last checkpoint, each
    /// marked with whether the recording wrote it before `next` (its next
    /// checkpoint's sequence number and dirty list, when known).
    fn debug_exit_memory(&mut self, next: Option<(u64, BTreeSet<u64>)>) {
        let Some(seq) = self.debug.last_seq else {
            return;
        };
        let differing = self.debug.pages.differing(&self.page_hashes());
        let dirty = next.as_ref().map_or(0, |(_, d)| d.len() as u64);
        let pages = differing
            .iter()
            .take(MAX_LISTED_PAGES)
            .map(|&gpa| PageFinding {
                gpa,
                in_dirty_list: next.as_ref().is_some_and(|(_, d)| d.contains(&gpa)),
            })
            .collect();
        self.debug.report.next_checkpoint = next.map(|(n, _)| n);
        self.debug.report.exit_memory = Some(MemoryFinding {
            seq,
            exit: self.exits,
            at: self.last_id,
            dirty,
            differing: differing.len() as u64,
            pages,
        });
    }

    /// Whether guest memory holds every page of `cp`.
    fn holds_pages_of(&self, cp: &Checkpoint) -> bool {
        let mut mine = vec![0u8; ft_backend::debug::PAGE_SIZE];
        cp.pages.iter().all(|(gpa, page)| {
            page.len() == mine.len()
                && self
                    .memory
                    .read_slice(&mut mine, GuestAddress(*gpa))
                    .is_ok()
                && mine == *page
        })
    }

    /// Replay: the run ended (`outcome`): prints the findings of a debug
    /// log to stderr and writes the report, if asked for.
    pub fn debug_finish(&mut self, outcome: &str) {
        if !self.replaying() {
            return;
        }
        if self.mode.has_debug() {
            self.debug.report.debug = true;
        }
        self.debug.report.outcome = outcome.to_string();
        if self.debug.report.debug {
            let symbols = self
                .debug
                .kernel
                .as_ref()
                .and_then(|k| Symbols::load(k).ok());
            eprint!("{}", self.debug.report.render(symbols.as_ref()));
        }
        self.debug_write_report();
    }

    fn debug_write_report(&self) {
        if let Some(path) = &self.debug.report_path {
            if let Err(e) = self.debug.report.write(path) {
                log::error!("fault tolerance: {e}");
            }
        }
    }
}
