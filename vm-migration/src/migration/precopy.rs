// Copyright 2026 The ft-cloud-hypervisor authors.
// SPDX-License-Identifier: Apache-2.0

//! The pre-copy engine: both ends of a live migration, over any byte
//! stream, independent of the VMM (which implements [`MigrationSource`]
//! and [`MigrationSink`]).
//!
//! Source: round 0 sends every non-zero page while the guest runs (the
//! destination's memory starts zeroed); each later round sends the pages
//! written since the previous round (zero pages as ranges, without their
//! bytes). Rounds go on until the pages left could be sent within
//! `downtime_ms` at the bandwidth measured so far, or the iteration cap is
//! reached (then the last round goes ahead anyway, with a longer pause,
//! reported). Then the source pauses its guest and saves its state, sends
//! the pages written since the last round and the state, and waits for the
//! destination's answer: `Ok` means the guest runs there; anything else and
//! the source resumes its guest. `timeout_s` bounds the whole pre-copy: at
//! the timeout the migration is cancelled, the guest keeps running on the
//! source.

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use super::protocol::{
    self, encode_config, encode_ranges, read_message, MessageType, PageRange, ProtocolError,
    PAGE_SIZE,
};

/// A boxed error from the VMM's side of the engine.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Pages per `Pages` message (1 MiB of page data).
const BATCH_PAGES: usize = 256;

/// Errors of a migration, on either end.
#[derive(Debug, thiserror::Error)]
pub enum MigrationError {
    /// The wire protocol failed (connection, checksum, version...).
    #[error("migration stream")]
    Protocol(#[from] ProtocolError),
    /// The destination refused (its reason).
    #[error("the destination refused the migration: {0}")]
    Refused(String),
    /// The source gave up (its reason).
    #[error("the source abandoned the migration: {0}")]
    Abandoned(String),
    /// A message that is not the one due.
    #[error("a {found} message arrived where {expected} was due")]
    Unexpected {
        /// Expected.
        expected: &'static str,
        /// Received.
        found: &'static str,
    },
    /// The pre-copy did not converge within `timeout_s`.
    #[error("the migration did not complete within {0} s (cancelled; the VM keeps running here)")]
    Timeout(u64),
    /// The VMM's side failed (reading memory or the dirty log, saving or
    /// restoring state).
    #[error("{0}")]
    Vmm(&'static str, #[source] BoxError),
}

/// The knobs of a migration, as upstream's `send-migration`.
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

/// Where a migration is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Connecting and exchanging the configuration.
    Setup,
    /// Copying memory while the guest runs.
    PreCopy,
    /// Guest paused: the last pages and the state.
    StopAndCopy,
    /// The guest runs on the destination.
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

/// A migration's progress, after each batch and round.
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
    /// Zero pages sent as ranges.
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
}

/// The source VMM's side.
pub trait MigrationSource {
    /// The guest-physical ranges of RAM (base, length).
    fn memory_ranges(&self) -> Vec<(u64, u64)>;
    /// Copies guest memory at `gpa` into `buf`.
    fn read_memory(&self, gpa: u64, buf: &mut [u8]) -> Result<(), BoxError>;
    /// The pages written since the previous call (the first call: since
    /// the migration started logging), per range: (base, bitmap).
    fn dirty_pages(&mut self) -> Result<Vec<(u64, Vec<u64>)>, BoxError>;
    /// Pauses the guest and saves its state (a snapshot state file).
    fn pause_and_save(&mut self) -> Result<Vec<u8>, BoxError>;
    /// Resumes the guest after a failed final phase.
    fn resume(&mut self) -> Result<(), BoxError>;
}

/// The destination VMM's side.
pub trait MigrationSink {
    /// Builds the VM's memory from the source's configuration and ranges.
    fn prepare(&mut self, config_json: &[u8], ranges: &[(u64, u64)]) -> Result<(), BoxError>;
    /// Writes pages at `gpa`.
    fn write_memory(&mut self, gpa: u64, data: &[u8]) -> Result<(), BoxError>;
    /// Zeroes `len` bytes at `gpa`.
    fn zero_memory(&mut self, gpa: u64, len: u64) -> Result<(), BoxError>;
    /// Restores the state (a snapshot state file) and runs the guest.
    fn finish(&mut self, state: &[u8]) -> Result<(), BoxError>;
}

/// What a completed migration measured.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Report {
    /// The last progress (phase `Completed`).
    pub progress: Progress,
    /// Bytes per second of the first (full) round.
    pub precopy_bandwidth_bps: f64,
}

fn is_zero(page: &[u8]) -> bool {
    let (pre, words, post) = {
        // SAFETY: u64 has no invalid bit patterns; `align_to` only
        // reinterprets the aligned middle of the slice.
        unsafe { page.align_to::<u64>() }
    };
    pre.iter().all(|b| *b == 0) && post.iter().all(|b| *b == 0) && words.iter().all(|w| *w == 0)
}

fn pages_in(bitmaps: &[(u64, Vec<u64>)]) -> u64 {
    bitmaps
        .iter()
        .map(|(_, b)| b.iter().map(|w| u64::from(w.count_ones())).sum::<u64>())
        .sum()
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

struct Sender<'a> {
    w: &'a mut dyn Write,
    source: &'a mut dyn MigrationSource,
    progress: Progress,
    start: Instant,
    deadline: Option<Instant>,
    timeout_s: u64,
    report: &'a mut dyn FnMut(&Progress),
    buf: Vec<u8>,
    ranges: Vec<PageRange>,
    zeros: Vec<PageRange>,
    /// The destination's memory is still all zeros (round 0).
    fresh: bool,
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

impl Sender<'_> {
    fn send_set(&mut self, bitmaps: &[(u64, Vec<u64>)]) -> Result<(), MigrationError> {
        let mut page = vec![0u8; PAGE_SIZE];
        for (base, words) in bitmaps {
            for (w, word) in words.iter().enumerate() {
                let mut bits = *word;
                while bits != 0 {
                    let b = u64::from(bits.trailing_zeros());
                    bits &= bits - 1;
                    let gpa = base + (w as u64 * 64 + b) * PAGE_SIZE as u64;
                    self.source
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
                        self.flush_pages()?;
                    }
                }
            }
        }
        self.flush_pages()?;
        if !self.zeros.is_empty() {
            let table = encode_ranges(&self.zeros);
            self.progress.bytes_sent +=
                protocol::write_message(&mut *self.w, MessageType::Zeros, &[&table])?;
            self.zeros.clear();
        }
        Ok(())
    }

    fn flush_pages(&mut self) -> Result<(), MigrationError> {
        if self.ranges.is_empty() {
            return Ok(());
        }
        let table = encode_ranges(&self.ranges);
        self.progress.bytes_sent +=
            protocol::write_message(&mut *self.w, MessageType::Pages, &[&table, &self.buf])?;
        self.progress.pages_sent += (self.buf.len() / PAGE_SIZE) as u64;
        self.ranges.clear();
        self.buf.clear();
        self.progress.elapsed = self.start.elapsed();
        (self.report)(&self.progress);
        if self.progress.phase == Phase::PreCopy
            && self.deadline.is_some_and(|d| Instant::now() > d)
        {
            return Err(MigrationError::Timeout(self.timeout_s));
        }
        Ok(())
    }
}

fn expect_ok(r: &mut dyn Read, buf: &mut Vec<u8>) -> Result<(), MigrationError> {
    match read_message(r, buf)? {
        MessageType::Ok => Ok(()),
        MessageType::Error => Err(MigrationError::Refused(
            String::from_utf8_lossy(buf).into_owned(),
        )),
        other => Err(MigrationError::Unexpected {
            expected: "Ok",
            found: other.name(),
        }),
    }
}

/// Migrates the VM behind `source` to the destination at the other end of
/// `r`/`w`. `config_json` is its configuration. The source must already log
/// dirty pages (its first [`MigrationSource::dirty_pages`] returns the
/// pages written since then). On success the guest runs on the
/// destination and the source's is paused for good; on error the source's
/// guest runs (it is resumed if it was paused).
pub fn send(
    r: &mut dyn Read,
    w: &mut dyn Write,
    source: &mut dyn MigrationSource,
    config_json: &[u8],
    params: Params,
    report: &mut dyn FnMut(&Progress),
) -> Result<Report, MigrationError> {
    let start = Instant::now();
    let mut progress = Progress {
        phase: Phase::Setup,
        iteration: 0,
        bytes_sent: 0,
        pages_sent: 0,
        zero_pages: 0,
        dirty_pages: 0,
        dirty_rate_pps: 0.0,
        bandwidth_bps: 0.0,
        downtime: None,
        elapsed: Duration::ZERO,
    };
    report(&progress);
    protocol::write_preamble(w)?;
    protocol::read_preamble(r)?;
    let ranges = source.memory_ranges();
    let cfg = encode_config(config_json, &ranges);
    progress.bytes_sent += protocol::write_message(w, MessageType::Config, &[&cfg])?;
    w.flush().map_err(ProtocolError::Io)?;
    let mut reply = Vec::new();
    expect_ok(r, &mut reply)?;

    progress.phase = Phase::PreCopy;
    let deadline = start.checked_add(Duration::from_secs(params.timeout_s));
    let result = {
        let mut s = Sender {
            w: &mut *w,
            source: &mut *source,
            progress,
            start,
            deadline,
            timeout_s: params.timeout_s,
            report: &mut *report,
            buf: Vec::with_capacity(BATCH_PAGES * PAGE_SIZE),
            ranges: Vec::new(),
            zeros: Vec::new(),
            fresh: true,
        };
        precopy_rounds(&mut s, params).map(|(bw, p)| (bw, p, s.progress))
    };
    let (first_bw, mut progress) = match result {
        Ok((bw, _, p)) => (bw, p),
        Err(e) => {
            abandon(w, &e);
            return Err(e);
        }
    };

    // Stop and copy.
    progress.phase = Phase::StopAndCopy;
    report(&progress);
    let paused_at = Instant::now();
    let state = match source.pause_and_save() {
        Ok(s) => s,
        Err(e) => {
            let e = MigrationError::Vmm("cannot pause and save the VM", e);
            abandon(w, &e);
            let _ = source.resume();
            return Err(e);
        }
    };
    let last = (|| {
        let dirty = source
            .dirty_pages()
            .map_err(|e| MigrationError::Vmm("cannot read the dirty page log", e))?;
        progress.dirty_pages = pages_in(&dirty);
        let mut s = Sender {
            w: &mut *w,
            source: &mut *source,
            progress,
            start,
            deadline: None,
            timeout_s: params.timeout_s,
            report: &mut *report,
            buf: Vec::with_capacity(BATCH_PAGES * PAGE_SIZE),
            ranges: Vec::new(),
            zeros: Vec::new(),
            fresh: false,
        };
        s.send_set(&dirty)?;
        let mut progress = s.progress;
        progress.bytes_sent += protocol::write_message(w, MessageType::State, &[&state])?;
        w.flush().map_err(ProtocolError::Io)?;
        expect_ok(r, &mut reply)?;
        Ok(progress)
    })();
    match last {
        Ok(mut p) => {
            p.phase = Phase::Completed;
            p.downtime = Some(paused_at.elapsed());
            p.elapsed = start.elapsed();
            report(&p);
            Ok(Report {
                progress: p,
                precopy_bandwidth_bps: first_bw,
            })
        }
        Err(e) => {
            abandon(w, &e);
            source
                .resume()
                .map_err(|e| MigrationError::Vmm("cannot resume the VM", e))?;
            Err(e)
        }
    }
}

/// Tells the destination the source gives up (best effort: the stream may
/// be what failed).
fn abandon(w: &mut dyn Write, e: &MigrationError) {
    if matches!(e, MigrationError::Refused(_) | MigrationError::Protocol(_)) {
        return;
    }
    let reason = e.to_string();
    let _ = protocol::write_message(w, MessageType::Abandon, &[reason.as_bytes()]);
    let _ = w.flush();
}

/// Round 0 and the dirty rounds; returns the first round's bandwidth and
/// the last bandwidth measured.
fn precopy_rounds(s: &mut Sender<'_>, params: Params) -> Result<(f64, f64), MigrationError> {
    let round_start = Instant::now();
    let bytes_before = s.progress.bytes_sent;
    let everything = all_pages(&s.source.memory_ranges());
    s.progress.dirty_pages = pages_in(&everything);
    s.send_set(&everything)?;
    s.w.flush().map_err(ProtocolError::Io)?;
    s.fresh = false;
    let mut round_time = round_start.elapsed();
    let first_bw = rate(s.progress.bytes_sent - bytes_before, round_time);
    s.progress.bandwidth_bps = first_bw;
    let mut bw = first_bw;
    loop {
        let dirty = s
            .source
            .dirty_pages()
            .map_err(|e| MigrationError::Vmm("cannot read the dirty page log", e))?;
        let pages = pages_in(&dirty);
        s.progress.dirty_pages = pages;
        s.progress.dirty_rate_pps = pages as f64 / round_time.as_secs_f64().max(1e-6);
        let estimate = Duration::from_secs_f64((pages * PAGE_SIZE as u64) as f64 / bw.max(1.0));
        let converged = estimate <= Duration::from_millis(params.downtime_ms);
        if converged || s.progress.iteration >= params.max_iterations {
            if !converged {
                log::warn!(
                    "migration: {} pages still dirty after {} rounds (about {estimate:?} to send): stopping the guest anyway",
                    pages,
                    s.progress.iteration
                );
            }
            // A last round while the guest runs: what it writes meanwhile
            // goes with the final copy.
            s.progress.iteration += 1;
            s.send_set(&dirty)?;
            s.w.flush().map_err(ProtocolError::Io)?;
            return Ok((first_bw, bw));
        }
        if s.deadline.is_some_and(|d| Instant::now() > d) {
            return Err(MigrationError::Timeout(s.timeout_s));
        }
        let t = Instant::now();
        let before = s.progress.bytes_sent;
        s.progress.iteration += 1;
        s.send_set(&dirty)?;
        s.w.flush().map_err(ProtocolError::Io)?;
        round_time = t.elapsed();
        bw = rate(s.progress.bytes_sent - before, round_time).max(bw * 0.5);
        s.progress.bandwidth_bps = bw;
    }
}

fn rate(bytes: u64, t: Duration) -> f64 {
    bytes as f64 / t.as_secs_f64().max(1e-6)
}

#[cfg(test)]
mod tests {
    use std::os::unix::net::UnixStream;
    use std::sync::{Arc, Mutex};

    use super::*;

    /// A made-up guest: 64 pages, some zero; each dirty round writes the
    /// pages of its scripted bitmap.
    struct FakeSource {
        mem: Arc<Mutex<Vec<u8>>>,
        rounds: Vec<u64>,
        paused: bool,
        resumed: bool,
    }

    impl MigrationSource for FakeSource {
        fn memory_ranges(&self) -> Vec<(u64, u64)> {
            vec![(0, 64 * PAGE_SIZE as u64)]
        }
        fn read_memory(&self, gpa: u64, buf: &mut [u8]) -> Result<(), BoxError> {
            let m = self.mem.lock().unwrap();
            buf.copy_from_slice(&m[gpa as usize..gpa as usize + buf.len()]);
            Ok(())
        }
        fn dirty_pages(&mut self) -> Result<Vec<(u64, Vec<u64>)>, BoxError> {
            let bits = if self.rounds.is_empty() {
                0
            } else {
                self.rounds.remove(0)
            };
            // The guest writes those pages (page 5 becomes zero).
            let mut m = self.mem.lock().unwrap();
            for p in 0..64 {
                if bits & (1 << p) != 0 {
                    let v = if p == 5 { 0 } else { (p as u8) ^ 0x5a };
                    m[p * PAGE_SIZE..(p + 1) * PAGE_SIZE].fill(v);
                }
            }
            Ok(vec![(0, vec![bits])])
        }
        fn pause_and_save(&mut self) -> Result<Vec<u8>, BoxError> {
            self.paused = true;
            Ok(b"state".to_vec())
        }
        fn resume(&mut self) -> Result<(), BoxError> {
            self.resumed = true;
            Ok(())
        }
    }

    #[derive(Default)]
    struct FakeSink {
        mem: Vec<u8>,
        state: Vec<u8>,
        refuse_state: bool,
    }

    impl MigrationSink for FakeSink {
        fn prepare(&mut self, json: &[u8], ranges: &[(u64, u64)]) -> Result<(), BoxError> {
            assert_eq!(json, b"{}");
            self.mem = vec![0; ranges[0].1 as usize];
            Ok(())
        }
        fn write_memory(&mut self, gpa: u64, data: &[u8]) -> Result<(), BoxError> {
            self.mem[gpa as usize..gpa as usize + data.len()].copy_from_slice(data);
            Ok(())
        }
        fn zero_memory(&mut self, gpa: u64, len: u64) -> Result<(), BoxError> {
            self.mem[gpa as usize..(gpa + len) as usize].fill(0);
            Ok(())
        }
        fn finish(&mut self, state: &[u8]) -> Result<(), BoxError> {
            if self.refuse_state {
                return Err("no".into());
            }
            self.state = state.to_vec();
            Ok(())
        }
    }

    fn run(
        refuse_state: bool,
    ) -> (
        Result<Report, MigrationError>,
        FakeSource,
        FakeSink,
        Vec<u8>,
    ) {
        let mut init = vec![0u8; 64 * PAGE_SIZE];
        for p in (0..64).filter(|p| p % 3 != 0) {
            init[p * PAGE_SIZE..(p + 1) * PAGE_SIZE].fill(p as u8 + 1);
        }
        let mem = Arc::new(Mutex::new(init));
        let mut source = FakeSource {
            mem: mem.clone(),
            // Many dirty pages first (no convergence at a zero downtime),
            // then few.
            rounds: vec![u64::MAX, 0xffff_0000, 0b10_0110, 0b1],
            paused: false,
            resumed: false,
        };
        let (a, b) = UnixStream::pair().unwrap();
        let t = std::thread::spawn(move || {
            let mut sink = FakeSink {
                refuse_state,
                ..FakeSink::default()
            };
            let mut r = b.try_clone().unwrap();
            let mut w = b;
            let res = super::super::receive(&mut r, &mut w, &mut sink);
            (res, sink)
        });
        let mut r = a.try_clone().unwrap();
        let mut w = a;
        let mut seen = Vec::new();
        let params = Params {
            downtime_ms: 0,
            timeout_s: 60,
            max_iterations: 2,
        };
        let res = send(&mut r, &mut w, &mut source, b"{}", params, &mut |p| {
            seen.push(p.phase)
        });
        let (recv, sink) = t.join().unwrap();
        if !refuse_state {
            recv.unwrap();
        } else {
            assert!(recv.is_err());
        }
        let final_mem = mem.lock().unwrap().clone();
        drop(seen);
        (res, source, sink, final_mem)
    }

    #[test]
    fn the_destination_ends_with_the_source_memory_and_state() {
        let (res, source, sink, mem) = run(false);
        let report = res.unwrap();
        assert!(sink.mem == mem, "memory differs");
        assert_eq!(sink.state, b"state");
        assert!(source.paused && !source.resumed);
        assert_eq!(report.progress.phase, Phase::Completed);
        // The cap: two dirty rounds, then a last live one.
        assert_eq!(report.progress.iteration, 3);
        assert!(report.progress.zero_pages > 0);
        assert!(report.progress.downtime.is_some());
    }

    #[test]
    fn a_refused_state_resumes_the_source() {
        let (res, source, _sink, _) = run(true);
        let e = res.unwrap_err();
        assert!(
            matches!(e, MigrationError::Refused(ref m) if m.contains("no")),
            "{e}"
        );
        assert!(source.paused && source.resumed);
    }
}
