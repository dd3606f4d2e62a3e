// Copyright 2026 The ft-cloud-hypervisor authors.
// SPDX-License-Identifier: Apache-2.0

//! The pre-copy rounds, one piece for every user: a live migration's
//! stream ([`super::precopy`]) and an FT VMotion seed (`ft-backend`'s
//! `pair::seed`) both copy memory with [`Rounds`], each with its own
//! [`PageWriter`] (how a page set goes on its wire).
//!
//! Round 0 sends every non-zero page while the guest runs (the receiver's
//! memory starts zeroed); each later round sends the pages written since
//! the previous round (pages that became zero as ranges, without their
//! bytes). Rounds go on until the pages left could be sent within
//! `downtime_ms` at the bandwidth measured so far, or the iteration cap is
//! reached (then the last live round goes ahead anyway, and the pause is
//! longer: reported). The caller then pauses its guest and calls
//! [`Rounds::last`] for the pages written since the last round. A receiver
//! applies the sets in the order they come: a later round's copy of a page
//! overwrites an earlier one's.
//!
//! With disks ([`Rounds::live_with_disks`], FT VMotion's `disks=separate`)
//! each round also sends the disk blocks written since the previous one
//! ([`super::disks`]), and the estimate of what is left counts them; each
//! image's digest as sent is then [`Rounds::disk_digests`].

use std::time::{Duration, Instant};

use super::block_digests::BlockDigests;
use super::disks::{blocks_in, DiskCopy, DiskRound, DiskSource, DiskWriter, NoDisks};
use super::precopy::{BoxError, MigrationError};
use super::protocol::{PageRange, PAGE_SIZE};

/// Pages per batch handed to the writer (1 MiB of page data).
const BATCH_PAGES: usize = 256;

/// The knobs of the rounds, as upstream's `send-migration`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Params {
    /// The pause the source aims for (upstream's default: 300 ms).
    pub downtime_ms: u64,
    /// Bound on the whole pre-copy (upstream's default: 3600 s).
    pub timeout_s: u64,
    /// Dirty-page rounds after the first full one, at most.
    pub max_iterations: u32,
}

impl Default for Params {
    fn default() -> Self {
        Params {
            downtime_ms: 300,
            timeout_s: 3600,
            max_iterations: 30,
        }
    }
}

/// Where a copy is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Connecting and exchanging the configuration.
    Setup,
    /// Copying memory while the guest runs.
    PreCopy,
    /// Guest paused: the last pages and the state.
    StopAndCopy,
    /// The copy is complete (the guest runs on the destination, or the
    /// pair is protected).
    Completed,
    /// Failed or cancelled (the guest stays where it was).
    Failed,
}

impl Phase {
    /// Its name in `vm.info`, events and progress lines.
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Setup => "setup",
            Phase::PreCopy => "precopy",
            Phase::StopAndCopy => "stop-and-copy",
            Phase::Completed => "completed",
            Phase::Failed => "failed",
        }
    }
}

/// A copy's progress, after each batch and round.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Progress {
    /// The phase.
    pub phase: Phase,
    /// Rounds done (0: the full copy is going on).
    pub iteration: u32,
    /// Bytes written to the stream so far.
    pub bytes_sent: u64,
    /// Pages sent with their bytes.
    pub pages_sent: u64,
    /// Zero pages sent as ranges (or left out in round 0).
    pub zero_pages: u64,
    /// Pages found dirty at the last round's start.
    pub dirty_pages: u64,
    /// Pages written per second by the guest, as last measured.
    pub dirty_rate_pps: f64,
    /// Bytes per second of the stream, as last measured.
    pub bandwidth_bps: f64,
    /// The pause, once known.
    pub downtime: Option<Duration>,
    /// Since the start.
    pub elapsed: Duration,
    /// Disk data bytes sent (separate disks).
    pub disk_bytes: u64,
    /// Disk blocks sent.
    pub disk_blocks: u64,
    /// Disk blocks found written at the last round's start.
    pub disk_dirty_blocks: u64,
    /// Disk blocks sent again after round 0 (written during the copy).
    pub disk_resent_blocks: u64,
}

impl Progress {
    /// Nothing done yet, in `phase`.
    pub fn new(phase: Phase) -> Self {
        Progress {
            phase,
            iteration: 0,
            bytes_sent: 0,
            pages_sent: 0,
            zero_pages: 0,
            dirty_pages: 0,
            dirty_rate_pps: 0.0,
            bandwidth_bps: 0.0,
            downtime: None,
            elapsed: Duration::ZERO,
            disk_bytes: 0,
            disk_blocks: 0,
            disk_dirty_blocks: 0,
            disk_resent_blocks: 0,
        }
    }
}

/// The memory the rounds copy: the VMM's side.
pub trait PageSource {
    /// The guest-physical ranges of RAM (base, length).
    fn memory_ranges(&self) -> Vec<(u64, u64)>;
    /// Copies guest memory at `gpa` into `buf`.
    fn read_memory(&self, gpa: u64, buf: &mut [u8]) -> Result<(), BoxError>;
    /// The pages written since the previous call (the first call: since
    /// the copy started logging), per range: (base, bitmap).
    fn dirty_pages(&mut self) -> Result<Vec<(u64, Vec<u64>)>, BoxError>;
}

/// How page sets go on a wire.
pub trait PageWriter {
    /// Sends `data`, the bytes of the pages of `ranges` in order. Returns
    /// the bytes written.
    fn pages(&mut self, ranges: &[PageRange], data: &[u8]) -> Result<u64, MigrationError>;
    /// Tells the receiver that the pages of `ranges` are all zero now.
    /// Returns the bytes written.
    fn zeros(&mut self, ranges: &[PageRange]) -> Result<u64, MigrationError>;
    /// Pushes out what is buffered (at the end of each round).
    fn flush(&mut self) -> Result<(), MigrationError>;
}

/// Pages in `bitmaps`.
pub fn pages_in(bitmaps: &[(u64, Vec<u64>)]) -> u64 {
    bitmaps
        .iter()
        .map(|(_, b)| b.iter().map(|w| u64::from(w.count_ones())).sum::<u64>())
        .sum()
}

fn is_zero(page: &[u8]) -> bool {
    let (pre, words, post) = {
        // SAFETY: u64 has no invalid bit patterns; `align_to` only
        // reinterprets the aligned middle of the slice.
        unsafe { page.align_to::<u64>() }
    };
    pre.iter().all(|b| *b == 0) && post.iter().all(|b| *b == 0) && words.iter().all(|w| *w == 0)
}

/// Bitmaps with every page of `ranges` set.
fn all_pages(ranges: &[(u64, u64)]) -> Vec<(u64, Vec<u64>)> {
    ranges
        .iter()
        .map(|&(base, len)| {
            let pages = len / PAGE_SIZE as u64;
            let mut words = vec![u64::MAX; pages.div_ceil(64) as usize];
            if pages % 64 != 0 {
                if let Some(last) = words.last_mut() {
                    *last = (1u64 << (pages % 64)) - 1;
                }
            }
            (base, words)
        })
        .collect()
}

fn push_range(ranges: &mut Vec<PageRange>, gpa: u64) {
    if let Some(last) = ranges.last_mut() {
        if last.gpa + u64::from(last.pages) * PAGE_SIZE as u64 == gpa {
            last.pages += 1;
            return;
        }
    }
    ranges.push(PageRange { gpa, pages: 1 });
}

/// A page writer that copies no disk (a live migration's).
struct PagesOnly<'a>(&'a mut dyn PageWriter);

impl PageWriter for PagesOnly<'_> {
    fn pages(&mut self, ranges: &[PageRange], data: &[u8]) -> Result<u64, MigrationError> {
        self.0.pages(ranges, data)
    }
    fn zeros(&mut self, ranges: &[PageRange]) -> Result<u64, MigrationError> {
        self.0.zeros(ranges)
    }
    fn flush(&mut self) -> Result<(), MigrationError> {
        self.0.flush()
    }
}

impl DiskWriter for PagesOnly<'_> {
    fn disk_size(&mut self, _: u32, _: u64) -> Result<u64, MigrationError> {
        Err(MigrationError::Vmm(
            "this stream carries no disk",
            "a disk in a memory-only copy".into(),
        ))
    }
    fn disk_data(&mut self, disk: u32, offset: u64, data: &[u8]) -> Result<u64, MigrationError> {
        let _ = (offset, data);
        self.disk_size(disk, 0)
    }
}

fn rate(bytes: u64, t: Duration) -> f64 {
    bytes as f64 / t.as_secs_f64().max(1e-6)
}

/// The state of a copy's rounds. `source`, `out` and `report` are passed
/// to each step, so that the caller may pause its guest between them.
#[derive(Debug)]
pub struct Rounds {
    params: Params,
    progress: Progress,
    start: Instant,
    deadline: Option<Instant>,
    buf: Vec<u8>,
    ranges: Vec<PageRange>,
    zeros: Vec<PageRange>,
    /// The receiver's memory is still all zeros (round 0).
    fresh: bool,
    first_bw: f64,
    disks: DiskCopy,
}

impl Rounds {
    /// Rounds started at `start`, continuing `progress` (bytes already
    /// sent before them: a configuration, a handshake).
    pub fn new(params: Params, start: Instant, progress: Progress) -> Self {
        Rounds {
            params,
            progress,
            start,
            deadline: start.checked_add(Duration::from_secs(params.timeout_s)),
            buf: Vec::with_capacity(BATCH_PAGES * PAGE_SIZE),
            ranges: Vec::new(),
            zeros: Vec::new(),
            fresh: true,
            first_bw: 0.0,
            disks: DiskCopy::default(),
        }
    }

    /// The progress so far.
    pub fn progress(&self) -> Progress {
        self.progress
    }

    /// Sets the phase (and reports it).
    pub fn set_phase(&mut self, phase: Phase, report: &mut dyn FnMut(&Progress)) {
        self.progress.phase = phase;
        self.progress.elapsed = self.start.elapsed();
        report(&self.progress);
    }

    /// Bytes per second of the first (full) round.
    pub fn first_round_bandwidth(&self) -> f64 {
        self.first_bw
    }

    /// What each round copied of the disks (empty without disks).
    pub fn disk_rounds(&self) -> &[DiskRound] {
        self.disks.history()
    }

    /// After [`Rounds::last_disks`]: each disk image's digest as sent,
    /// from its table of block digests (no read of the image).
    pub fn disk_digests(&self) -> Result<Vec<u64>, MigrationError> {
        self.disks.digests()
    }

    /// Each disk image's table of block digests as sent, for a check of
    /// the image against it.
    pub fn disk_tables(&self) -> &[BlockDigests] {
        self.disks.tables()
    }

    /// Bytes sent by someone else on the same stream (state).
    pub fn add_bytes(&mut self, bytes: u64) {
        self.progress.bytes_sent += bytes;
    }

    /// Round 0 and the dirty rounds, while the guest runs, until the rest
    /// fits the downtime bound or the cap is reached; then a last live
    /// round. The source must already log dirty pages.
    pub fn live(
        &mut self,
        source: &mut dyn PageSource,
        out: &mut dyn PageWriter,
        report: &mut dyn FnMut(&Progress),
    ) -> Result<(), MigrationError> {
        self.live_with_disks(source, &mut NoDisks, &mut PagesOnly(out), report)
    }

    /// As [`Rounds::live`], copying the disk images of `disks` in the same
    /// rounds (their written blocks must already be tracked).
    pub fn live_with_disks<W: PageWriter + DiskWriter>(
        &mut self,
        source: &mut dyn PageSource,
        disks: &mut dyn DiskSource,
        out: &mut W,
        report: &mut dyn FnMut(&Progress),
    ) -> Result<(), MigrationError> {
        self.progress.phase = Phase::PreCopy;
        let round_start = Instant::now();
        let bytes_before = self.progress.bytes_sent;
        let everything = all_pages(&source.memory_ranges());
        self.progress.dirty_pages = pages_in(&everything);
        self.send_set(source, out, report, &everything)?;
        self.disks.full(disks, out, &mut self.progress)?;
        out.flush()?;
        self.fresh = false;
        let mut round_time = round_start.elapsed();
        self.first_bw = rate(self.progress.bytes_sent - bytes_before, round_time);
        self.progress.bandwidth_bps = self.first_bw;
        let mut bw = self.first_bw;
        loop {
            let dirty = source
                .dirty_pages()
                .map_err(|e| MigrationError::Vmm("cannot read the dirty page log", e))?;
            let written = self.disks.take(disks)?;
            let pages = pages_in(&dirty);
            let blocks = blocks_in(&written);
            self.progress.dirty_pages = pages;
            self.progress.disk_dirty_blocks = blocks;
            self.progress.dirty_rate_pps = pages as f64 / round_time.as_secs_f64().max(1e-6);
            let left = pages * PAGE_SIZE as u64 + blocks * self.disks.block_size();
            let estimate = Duration::from_secs_f64(left as f64 / bw.max(1.0));
            let converged = estimate <= Duration::from_millis(self.params.downtime_ms);
            if converged || self.progress.iteration >= self.params.max_iterations {
                if !converged {
                    log::warn!(
                        "pre-copy: {} pages and {} disk blocks still dirty after {} rounds (about {estimate:?} to send): stopping the guest anyway",
                        pages,
                        blocks,
                        self.progress.iteration
                    );
                }
                // A last round while the guest runs: what it writes
                // meanwhile goes with the final copy.
                self.send_round(source, disks, out, report, &dirty, &written)?;
                return Ok(());
            }
            if self.deadline.is_some_and(|d| Instant::now() > d) {
                return Err(MigrationError::Timeout(self.params.timeout_s));
            }
            let t = Instant::now();
            let before = self.progress.bytes_sent;
            self.send_round(source, disks, out, report, &dirty, &written)?;
            round_time = t.elapsed();
            bw = rate(self.progress.bytes_sent - before, round_time).max(bw * 0.5);
            self.progress.bandwidth_bps = bw;
        }
    }

    /// With the guest paused (its state saved: saving may complete device
    /// writes to memory): the pages written since the last round.
    pub fn last(
        &mut self,
        source: &mut dyn PageSource,
        out: &mut dyn PageWriter,
        report: &mut dyn FnMut(&Progress),
    ) -> Result<(), MigrationError> {
        self.progress.phase = Phase::StopAndCopy;
        let dirty = source
            .dirty_pages()
            .map_err(|e| MigrationError::Vmm("cannot read the dirty page log", e))?;
        self.progress.dirty_pages = pages_in(&dirty);
        self.send_set(source, out, report, &dirty)?;
        out.flush()
    }

    /// With the guest paused and its disks drained (after
    /// [`Rounds::last`]): the disk blocks written since the last round.
    pub fn last_disks<W: PageWriter + DiskWriter>(
        &mut self,
        disks: &mut dyn DiskSource,
        out: &mut W,
        report: &mut dyn FnMut(&Progress),
    ) -> Result<(), MigrationError> {
        self.progress.phase = Phase::StopAndCopy;
        let written = self.disks.take(disks)?;
        self.progress.disk_dirty_blocks = blocks_in(&written);
        self.disks.send(
            disks,
            out,
            &written,
            self.progress.iteration + 1,
            &mut self.progress,
        )?;
        out.flush()?;
        self.progress.elapsed = self.start.elapsed();
        report(&self.progress);
        Ok(())
    }

    /// One more live round: the pages of `dirty` and the disk blocks of
    /// `written`, then a flush.
    fn send_round<W: PageWriter + DiskWriter>(
        &mut self,
        source: &mut dyn PageSource,
        disks: &mut dyn DiskSource,
        out: &mut W,
        report: &mut dyn FnMut(&Progress),
        dirty: &[(u64, Vec<u64>)],
        written: &[Vec<u64>],
    ) -> Result<(), MigrationError> {
        self.progress.iteration += 1;
        self.send_set(source, out, report, dirty)?;
        self.disks.send(
            disks,
            out,
            written,
            self.progress.iteration,
            &mut self.progress,
        )?;
        out.flush()?;
        Ok(())
    }

    fn send_set(
        &mut self,
        source: &mut dyn PageSource,
        out: &mut dyn PageWriter,
        report: &mut dyn FnMut(&Progress),
        bitmaps: &[(u64, Vec<u64>)],
    ) -> Result<(), MigrationError> {
        let mut page = vec![0u8; PAGE_SIZE];
        for (base, words) in bitmaps {
            for (w, word) in words.iter().enumerate() {
                let mut bits = *word;
                while bits != 0 {
                    let b = u64::from(bits.trailing_zeros());
                    bits &= bits - 1;
                    let gpa = base + (w as u64 * 64 + b) * PAGE_SIZE as u64;
                    source
                        .read_memory(gpa, &mut page)
                        .map_err(|e| MigrationError::Vmm("cannot read guest memory", e))?;
                    if is_zero(&page) {
                        if !self.fresh {
                            push_range(&mut self.zeros, gpa);
                        }
                        self.progress.zero_pages += 1;
                        continue;
                    }
                    push_range(&mut self.ranges, gpa);
                    self.buf.extend_from_slice(&page);
                    if self.buf.len() >= BATCH_PAGES * PAGE_SIZE {
                        self.flush_pages(out, report)?;
                    }
                }
            }
        }
        self.flush_pages(out, report)?;
        if !self.zeros.is_empty() {
            self.progress.bytes_sent += out.zeros(&self.zeros)?;
            self.zeros.clear();
        }
        Ok(())
    }

    fn flush_pages(
        &mut self,
        out: &mut dyn PageWriter,
        report: &mut dyn FnMut(&Progress),
    ) -> Result<(), MigrationError> {
        if self.ranges.is_empty() {
            return Ok(());
        }
        self.progress.bytes_sent += out.pages(&self.ranges, &self.buf)?;
        self.progress.pages_sent += (self.buf.len() / PAGE_SIZE) as u64;
        self.ranges.clear();
        self.buf.clear();
        self.progress.elapsed = self.start.elapsed();
        report(&self.progress);
        if self.progress.phase == Phase::PreCopy
            && self.deadline.is_some_and(|d| Instant::now() > d)
        {
            return Err(MigrationError::Timeout(self.params.timeout_s));
        }
        Ok(())
    }
}
