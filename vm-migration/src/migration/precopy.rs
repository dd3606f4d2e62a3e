// Copyright 2026 The ft-cloud-hypervisor authors.
// SPDX-License-Identifier: Apache-2.0

//! A live migration's source over any byte stream, and the traits both
//! ends' VMMs implement ([`MigrationSource`], [`MigrationSink`]). The
//! rounds themselves are [`super::rounds`]'s (shared with FT VMotion);
//! here they write the migration protocol's `Pages` and `Zeros` messages.
//!
//! After the rounds the source pauses its guest and saves its state,
//! sends the pages written since the last round and the state, and waits
//! for the destination's answer: `Ok` means the guest runs there; anything
//! else and the source resumes its guest. `timeout_s` bounds the whole
//! pre-copy: at the timeout the migration is cancelled, the guest keeps
//! running on the source.

use std::io::{Read, Write};
use std::time::Instant;

use super::protocol::{
    self, encode_config, encode_ranges, read_message, MessageType, PageRange, ProtocolError,
};
use super::rounds::{PageSource, PageWriter, Params, Phase, Progress, Rounds};

/// A boxed error from the VMM's side of the engine.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

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

/// The source VMM's side: its memory (as the rounds read it) and the
/// pause.
pub trait MigrationSource: PageSource {
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

/// The migration protocol as the rounds' wire.
struct StreamWriter<'a>(&'a mut dyn Write);

impl PageWriter for StreamWriter<'_> {
    fn pages(&mut self, ranges: &[PageRange], data: &[u8]) -> Result<u64, MigrationError> {
        let table = encode_ranges(ranges);
        Ok(protocol::write_message(
            &mut *self.0,
            MessageType::Pages,
            &[&table, data],
        )?)
    }

    fn zeros(&mut self, ranges: &[PageRange]) -> Result<u64, MigrationError> {
        let table = encode_ranges(ranges);
        Ok(protocol::write_message(
            &mut *self.0,
            MessageType::Zeros,
            &[&table],
        )?)
    }

    fn flush(&mut self) -> Result<(), MigrationError> {
        self.0.flush().map_err(ProtocolError::Io)?;
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
    let mut progress = Progress::new(Phase::Setup);
    report(&progress);
    protocol::write_preamble(w)?;
    protocol::read_preamble(r)?;
    let ranges = source.memory_ranges();
    let cfg = encode_config(config_json, &ranges);
    progress.bytes_sent += protocol::write_message(w, MessageType::Config, &[&cfg])?;
    w.flush().map_err(ProtocolError::Io)?;
    let mut reply = Vec::new();
    expect_ok(r, &mut reply)?;

    let mut rounds = Rounds::new(params, start, progress);
    if let Err(e) = rounds.live(&mut *source, &mut StreamWriter(&mut *w), report) {
        abandon(w, &e);
        return Err(e);
    }

    // Stop and copy.
    rounds.set_phase(Phase::StopAndCopy, report);
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
        rounds.last(&mut *source, &mut StreamWriter(&mut *w), report)?;
        rounds.add_bytes(protocol::write_message(w, MessageType::State, &[&state])?);
        w.flush().map_err(ProtocolError::Io)?;
        expect_ok(r, &mut reply)
    })();
    match last {
        Ok(()) => {
            let mut p = rounds.progress();
            p.phase = Phase::Completed;
            p.downtime = Some(paused_at.elapsed());
            p.elapsed = start.elapsed();
            report(&p);
            Ok(Report {
                progress: p,
                precopy_bandwidth_bps: rounds.first_round_bandwidth(),
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

#[cfg(test)]
mod tests {
    use std::os::unix::net::UnixStream;
    use std::sync::{Arc, Mutex};

    use super::super::protocol::PAGE_SIZE;
    use super::*;

    /// A made-up guest: 64 pages, some zero; each dirty round writes the
    /// pages of its scripted bitmap.
    struct FakeSource {
        mem: Arc<Mutex<Vec<u8>>>,
        rounds: Vec<u64>,
        paused: bool,
        resumed: bool,
    }

    impl PageSource for FakeSource {
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
    }

    impl MigrationSource for FakeSource {
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
