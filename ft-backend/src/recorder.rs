// Copyright 2026 The ft-cloud-hypervisor authors.
// SPDX-License-Identifier: Apache-2.0

//! The recording side: appends entries to the log as the VM runs.
//!
//! Shared (behind a mutex) by the vCPU thread and the recording clock,
//! which both run on the vCPU thread: the mutex is never contended.

use std::path::Path;

use crate::channel::Position;
use crate::debug::DebugEntry;
use crate::entry::{Checkpoint, EndReason, Entry, Event, ExitId, Setup};
use crate::log::{LogError, LogHeader, LogWriter};
use crate::log_thread::{LogThread, ProgressSink};

/// Errors while recording.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    /// The log could not be written.
    #[error("cannot write the recording")]
    Log(#[source] LogError),
}

/// What was recorded, for counters and benchmarks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RecordStats {
    /// Clock reads logged.
    pub clock_reads: u64,
    /// Asynchronous events logged.
    pub events: u64,
    /// Micro-checkpoints logged (forced deliveries).
    pub checkpoints: u64,
    /// Pages in all checkpoints.
    pub checkpoint_pages: u64,
    /// Bytes in the largest checkpoint frame payload (approximate: pages
    /// plus state).
    pub largest_checkpoint_bytes: u64,
    /// Bytes written to the log, header included.
    pub log_bytes: u64,
    /// Bytes the same log takes uncompressed, header included (the
    /// uncompressed framing of log version 3): `log_bytes` before
    /// compression.
    pub raw_log_bytes: u64,
}

/// Writes a recording.
#[derive(Debug)]
pub struct Recorder {
    writer: LogThread,
    exit: u64,
    error: Option<LogError>,
    stats: RecordStats,
    ended: bool,
}

impl Recorder {
    /// Creates the log at `path`, with `setup` as its first frame.
    pub fn create(path: &Path, header: LogHeader, setup: Setup) -> Result<Self, RecordError> {
        let mut writer = LogWriter::create(path, header).map_err(RecordError::Log)?;
        writer
            .append(&Entry::Setup(setup))
            .map_err(RecordError::Log)?;
        let writer = LogThread::spawn(writer).map_err(RecordError::Log)?;
        Ok(Self::with_thread(writer))
    }

    /// Records into a stream (the logging channel): `writer` writes the
    /// stream, `progress` sends progress positions after the frames before
    /// them. `setup` is the first frame.
    pub fn to_stream(
        mut writer: LogWriter,
        setup: Setup,
        progress: ProgressSink,
    ) -> Result<Self, RecordError> {
        writer
            .append(&Entry::Setup(setup))
            .map_err(RecordError::Log)?;
        let writer = LogThread::spawn_stream(writer, progress).map_err(RecordError::Log)?;
        Ok(Self::with_thread(writer))
    }

    fn with_thread(writer: LogThread) -> Self {
        Recorder {
            stats: RecordStats {
                log_bytes: writer.bytes(),
                raw_log_bytes: writer.raw_bytes(),
                ..RecordStats::default()
            },
            writer,
            exit: 0,
            error: None,
            ended: false,
        }
    }

    /// A stream: the guest has run up to `position`, and every entry
    /// logged so far goes out before it.
    pub fn progress(&mut self, position: Position) {
        if self.error.is_some() || self.ended {
            return;
        }
        if let Err(e) = self.writer.progress(position) {
            self.error = Some(e);
        }
    }

    /// Stops recording without an end frame (the peer of a pair is gone):
    /// later entries are dropped and errors forgotten.
    pub fn stop(&mut self) {
        self.ended = true;
        self.error = None;
    }

    fn append(&mut self, entry: &Entry) {
        if self.error.is_some() || self.ended {
            return;
        }
        if let Err(e) = self.writer.append(entry) {
            self.error = Some(e);
        }
        self.stats.log_bytes = self.writer.bytes();
        self.stats.raw_log_bytes = self.writer.raw_bytes();
    }

    /// Sets the count of guest-caused exits so far.
    pub fn set_exit(&mut self, exit: u64) {
        self.exit = exit;
    }

    /// Logs a value of guest-visible time read at the current exit.
    pub fn clock_read(&mut self, value: u64) {
        self.stats.clock_reads += 1;
        let exit = self.exit;
        self.append(&Entry::ClockRead { exit, value });
    }

    /// Logs an event applied after the current exit, whose identity is `at`.
    pub fn event(&mut self, at: ExitId, event: Event) {
        self.stats.events += 1;
        let exit = self.exit;
        self.append(&Entry::Event { exit, at, event });
    }

    /// Logs a micro-checkpoint.
    pub fn checkpoint(&mut self, checkpoint: Checkpoint) {
        self.stats.checkpoints += 1;
        self.stats.checkpoint_pages += checkpoint.pages.len() as u64;
        let size = checkpoint
            .pages
            .iter()
            .map(|(_, p)| p.len() as u64 + 12)
            .sum::<u64>()
            + checkpoint.vcpu.len() as u64
            + checkpoint
                .devices
                .iter()
                .map(|(id, d)| (id.len() + d.len()) as u64)
                .sum::<u64>();
        self.stats.largest_checkpoint_bytes = self.stats.largest_checkpoint_bytes.max(size);
        self.append(&Entry::Checkpoint(Box::new(checkpoint)));
    }

    /// Logs a debug record (`debug_from`).
    pub fn debug(&mut self, entry: DebugEntry) {
        self.append(&Entry::Debug(entry));
    }

    /// Logs the end of the recording and flushes the log. Later entries
    /// are dropped.
    pub fn end(&mut self, reason: EndReason, digest: u64) -> Result<(), RecordError> {
        let exit = self.exit;
        self.append(&Entry::End {
            exit,
            reason,
            digest,
        });
        self.ended = true;
        self.check()?;
        let done = self.writer.finish().map_err(RecordError::Log);
        self.stats.log_bytes = self.writer.bytes();
        self.stats.raw_log_bytes = self.writer.raw_bytes();
        done
    }

    /// Whether the end was logged.
    pub fn ended(&self) -> bool {
        self.ended
    }

    /// Fails with the first write error, if any.
    pub fn check(&mut self) -> Result<(), RecordError> {
        match self.error.take() {
            Some(e) => Err(RecordError::Log(e)),
            None => Ok(()),
        }
    }

    /// What was recorded so far.
    pub fn stats(&self) -> RecordStats {
        self.stats
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::LogReader;

    #[test]
    fn records_in_order_and_stops_at_end() {
        let dir = std::env::temp_dir().join(format!("ft-rec-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("r.log");
        let header = LogHeader {
            config_digest: 5,
            max_delay_us: 100,
        };
        let setup = Setup {
            disks: vec![("_disk0".into(), 1 << 20)],
        };
        let mut r = Recorder::create(&path, header, setup.clone()).unwrap();
        r.clock_read(10);
        r.set_exit(3);
        r.event(ExitId::default(), Event::TimerFire);
        r.end(EndReason::Shutdown, 9).unwrap();
        r.event(ExitId::default(), Event::TimerFire);
        assert!(r.ended());
        let s = r.stats();
        assert_eq!((s.clock_reads, s.events), (1, 2));
        let log = LogReader::open(&path, Some(5)).unwrap();
        assert_eq!(log.entries.len(), 4);
        assert_eq!(log.entries[0], Entry::Setup(setup));
        assert_eq!(log.entries[2].exit(), 3);
        assert_eq!(s.log_bytes, std::fs::metadata(&path).unwrap().len());
        // Version 3's framing: header, then length, tag, payload and CRC
        // (setup: 4 + 4 + 6 + 8; clock read: 16; event: 8 + 17 + 1; end: 17).
        assert_eq!(s.raw_log_bytes, 32 + 4 * 9 + 22 + 16 + 26 + 17);
        assert!(Recorder::create(&dir.join("no/such/dir.log"), header, Setup::default()).is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
