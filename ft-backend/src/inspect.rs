// Copyright 2026 The ft-cloud-hypervisor authors.
// SPDX-License-Identifier: Apache-2.0

//! Looking into a log without running it (the `ft-log` tool): statistics,
//! entries around an exit, and an integrity check. Everything is read
//! through [`LogStream`], one frame at a time, so a log of any size fits.
//!
//! Sizes are those of the encoded entries (tag, payload, length and CRC:
//! the frame as [`crate::log`] frames it before any compression); the
//! file's own size is given beside them.

use std::collections::{BTreeMap, VecDeque};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use vm_migration::ByteWriter;

use crate::debug::DebugEntry;
use crate::entry::{Entry, Event, Setup};
use crate::log::{LogError, LogHeader, LogStream};

/// Bytes a frame adds around its payload: length, tag, CRC.
const FRAME_OVERHEAD: u64 = 9;

/// Errors of the integrity check beyond what the reader refuses.
#[derive(Debug, thiserror::Error)]
pub enum InspectError {
    /// The log cannot be read, or a frame is truncated or corrupt.
    #[error("the log is not valid")]
    Log(#[source] LogError),
    /// The metadata of the file cannot be read.
    #[error("cannot read the size of {path}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Entries out of order.
    #[error("{path}: frame {frame} is out of order: {reason}")]
    Order {
        /// The file.
        path: PathBuf,
        /// Frame number, from 1.
        frame: u64,
        /// What is wrong.
        reason: String,
    },
}

/// The kind of an entry, for statistics and dumps.
pub fn kind_name(e: &Entry) -> &'static str {
    match e {
        Entry::Setup(_) => "setup",
        Entry::ClockRead { .. } => "clock",
        Entry::Event { .. } => "event",
        Entry::Checkpoint(_) => "checkpoint",
        Entry::End { .. } => "end",
        Entry::Debug(DebugEntry::Vcpu { .. }) => "debug-vcpu",
        Entry::Debug(DebugEntry::Pages(_)) => "debug-pages",
    }
}

/// A lower bound of the guest time at checkpoint `c`, from its interrupt
/// controller state: a periodic timer's deadline minus its period, the
/// start of the PIT's count-down (0 if there is none).
fn timer_time(c: &crate::entry::Checkpoint) -> u64 {
    let Some(state) = c
        .devices
        .iter()
        .find(|(id, _)| id == "interrupt-controller")
        .and_then(|(_, d)| vm_migration::devices_state::decode_intc(d).ok())
    else {
        return 0;
    };
    let periodic = |t: &Option<devices::interrupt::lapic::timer::ArmedTimer>| {
        t.as_ref()
            .filter(|t| t.period_ns > 0)
            .map_or(0, |t| t.deadline_ns.saturating_sub(t.period_ns))
    };
    let pit = &state.pit.channels[0];
    periodic(&state.lapic.timer.armed)
        .max(periodic(&pit.irq))
        .max(pit.start_ns.unwrap_or(0))
}

/// The encoded size of `e` as a frame.
pub fn frame_len(e: &Entry) -> u64 {
    let mut w = ByteWriter::new();
    e.encode_payload(&mut w);
    w.into_inner().len() as u64 + FRAME_OVERHEAD
}

/// One entry on one line: kind, exit, exit identity, sizes, event kind.
pub fn line(frame: u64, e: &Entry) -> String {
    let body = match e {
        Entry::Setup(s) => format!("setup  {}", describe_setup(s)),
        Entry::ClockRead { exit, value } => format!("clock  exit {exit} value {value} ns"),
        Entry::Event { exit, at, event } => {
            let what = match event {
                Event::TimerFire => "timer".to_string(),
                Event::SerialInput(b) => {
                    format!("serial {} bytes {:?}", b.len(), String::from_utf8_lossy(b))
                }
                Event::Device { id, data } => format!("device {id} {} bytes", data.len()),
            };
            format!("event  exit {exit} at {at}: {what}")
        }
        Entry::Checkpoint(c) => format!(
            "checkpoint {} exit {} at {}: {} pages, vcpu {} bytes, {} devices ({} bytes), ready {}{}",
            c.seq,
            c.exit,
            c.at,
            c.pages.len(),
            c.vcpu.len(),
            c.devices.len(),
            c.devices.iter().map(|(_, d)| d.len()).sum::<usize>(),
            u8::from(c.ready_for_interrupt),
            c.digest.map_or(String::new(), |d| format!(", digest {d:016x}"))
        ),
        Entry::End {
            exit,
            reason,
            digest,
        } => format!("end    exit {exit} {reason:?} digest {digest:016x}"),
        Entry::Debug(DebugEntry::Vcpu { exit, at, state }) => format!(
            "debug-vcpu exit {exit} at {at}: rip {:#x}, {} bytes",
            crate::debug::vcpu_rip(state).unwrap_or(0),
            state.len()
        ),
        Entry::Debug(DebugEntry::Pages(p)) => format!(
            "debug-pages checkpoint {} exit {}: {} of {} page hashes changed",
            p.seq,
            p.exit,
            p.changed.len(),
            p.pages
        ),
    };
    format!("#{frame:<8} {body} [{} bytes]", frame_len(e))
}

fn describe_setup(s: &Setup) -> String {
    if s.disks.is_empty() {
        return "no disks".into();
    }
    let d: Vec<String> = s
        .disks
        .iter()
        .map(|(id, size)| format!("{id} {size} bytes"))
        .collect();
    format!("disks: {}", d.join(", "))
}

/// Count and bytes of one kind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct KindStats {
    /// Entries.
    pub count: u64,
    /// Encoded bytes.
    pub bytes: u64,
}

/// A large frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LargeFrame {
    /// Frame number.
    pub frame: u64,
    /// Encoded bytes.
    pub bytes: u64,
    /// Its line (kind, exit, identity).
    pub line: String,
}

/// What `ft-log info` shows.
#[derive(Debug, Clone, Default)]
pub struct LogInfo {
    /// The header.
    pub header: Option<LogHeader>,
    /// Bytes of the file.
    pub file_bytes: u64,
    /// Frames.
    pub frames: u64,
    /// The setup frame.
    pub setup: Setup,
    /// Entries and bytes by kind.
    pub kinds: BTreeMap<&'static str, KindStats>,
    /// Pages in all checkpoints.
    pub checkpoint_pages: u64,
    /// Exits at the end.
    pub exits: u64,
    /// The end frame's line.
    pub end: String,
    /// A lower bound of the guest time the log covers (ns): the latest
    /// clock read, or the latest time a checkpoint's timers imply.
    pub guest_ns: u64,
    /// The largest frames, largest first.
    pub largest: Vec<LargeFrame>,
    /// Where and why the log stops early (truncated, corrupt, or without
    /// its end frame): the figures cover the frames before it.
    pub damage: Option<String>,
}

/// Whether a log error leaves frames before it worth showing.
fn is_damage(e: &LogError) -> bool {
    matches!(
        e,
        LogError::Truncated { .. } | LogError::Corrupt { .. } | LogError::NoEnd { .. }
    )
}

/// The entries of the log at `path`: validated whole when it is intact;
/// when a frame is damaged (or the end frame is missing), the entries
/// before it and, as `Some`, what is wrong. Errors about the file itself
/// (missing, not a log, another version) are errors.
fn entries(path: &Path) -> Result<(LogHeader, Option<String>, LogStream), InspectError> {
    match LogStream::open(path, None) {
        Ok((header, _, stream)) => Ok((header, None, stream)),
        Err(e) if is_damage(&e) => {
            let (header, stream) = LogStream::open_partial(path).map_err(InspectError::Log)?;
            Ok((header, Some(crate::error_chain(&e)), stream))
        }
        Err(e) => Err(InspectError::Log(e)),
    }
}

impl LogInfo {
    /// Reads the log at `path` (validated whole first) and keeps the `top`
    /// largest frames. A damaged or unfinished log gives the figures of
    /// the frames before the damage, which [`LogInfo::damage`] names.
    pub fn collect(path: &Path, top: usize) -> Result<Self, InspectError> {
        let file_bytes = std::fs::metadata(path)
            .map_err(|source| InspectError::Io {
                path: path.to_path_buf(),
                source,
            })?
            .len();
        let (header, damage, stream) = entries(path)?;
        let mut info = LogInfo {
            header: Some(header),
            file_bytes,
            damage,
            ..LogInfo::default()
        };
        for (i, e) in stream.enumerate() {
            // Only a partial stream ends in an error: its damage is known.
            let Ok(e) = e else { break };
            let frame = i as u64 + 1;
            info.frames = frame;
            // The end frame's count, or the last exit a damaged log reached.
            info.exits = info.exits.max(e.exit());
            let bytes = frame_len(&e);
            let k = info.kinds.entry(kind_name(&e)).or_default();
            k.count += 1;
            k.bytes += bytes;
            match &e {
                Entry::Setup(s) => info.setup = s.clone(),
                Entry::ClockRead { value, .. } => info.guest_ns = info.guest_ns.max(*value),
                Entry::Checkpoint(c) => {
                    info.checkpoint_pages += c.pages.len() as u64;
                    info.guest_ns = info.guest_ns.max(timer_time(c));
                }
                Entry::End { exit, .. } => {
                    info.exits = *exit;
                    info.end = line(frame, &e);
                }
                _ => {}
            }
            if top > 0
                && (info.largest.len() < top
                    || info.largest.last().is_some_and(|l| l.bytes < bytes))
            {
                info.largest.push(LargeFrame {
                    frame,
                    bytes,
                    line: line(frame, &e),
                });
                info.largest.sort_by_key(|l| std::cmp::Reverse(l.bytes));
                info.largest.truncate(top);
            }
        }
        Ok(info)
    }

    /// The report as text.
    pub fn render(&self) -> String {
        let mut s = String::new();
        if let Some(h) = &self.header {
            let _ = writeln!(s, "format version   {}", crate::log::VERSION);
            let _ = writeln!(s, "config digest    {:#018x}", h.config_digest);
            let _ = writeln!(s, "max_delay_us     {}", h.max_delay_us);
        }
        let _ = writeln!(s, "setup            {}", describe_setup(&self.setup));
        let _ = writeln!(s, "frames           {}", self.frames);
        let _ = writeln!(s, "exits            {}", self.exits);
        if self.end.is_empty() {
            let _ = writeln!(s, "end              none: the log stops early (below)");
        } else {
            let _ = writeln!(s, "end              {}", self.end);
        }
        let secs = self.guest_ns as f64 / 1e9;
        let _ = writeln!(
            s,
            "guest time       {secs:.3} s of VM clock at least (the latest clock read or checkpoint timer state)"
        );
        let _ = writeln!(s, "file bytes       {}", self.file_bytes);
        if secs > 0.0 {
            let _ = writeln!(
                s,
                "bytes/s          {:.0} (file bytes per second of guest time)",
                self.file_bytes as f64 / secs
            );
        }
        let cps = self.kinds.get("checkpoint").map_or(0, |k| k.count);
        let _ = writeln!(
            s,
            "checkpoints      {cps} ({} pages, {} MiB of page data)",
            self.checkpoint_pages,
            self.checkpoint_pages * 4096 / (1 << 20)
        );
        let _ = writeln!(s, "entries by kind  (count, encoded bytes)");
        for (k, v) in &self.kinds {
            let _ = writeln!(s, "  {k:<12} {:>10} {:>14}", v.count, v.bytes);
        }
        if !self.largest.is_empty() {
            let _ = writeln!(s, "largest frames");
            for l in &self.largest {
                let _ = writeln!(s, "  {}", l.line);
            }
        }
        if let Some(d) = &self.damage {
            let _ = writeln!(
                s,
                "damaged          the figures above cover the {} frames before: {}",
                self.frames,
                d.replace('\n', "; ")
            );
        }
        s
    }
}

/// What [`dump`] found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Dump {
    /// One line per entry.
    pub lines: Vec<String>,
    /// Where and why the log stops early, when it does (the lines come
    /// from the frames before it).
    pub damage: Option<String>,
}

/// The lines of the `count` entries around exit `around` (about half
/// before the first entry at or after it), or the first `count` entries;
/// from a damaged log, those among the frames before the damage.
pub fn dump(path: &Path, around: Option<u64>, count: usize) -> Result<Dump, InspectError> {
    let (_, damage, stream) = entries(path)?;
    let before = if around.is_some() { count / 2 } else { 0 };
    let mut ring: VecDeque<String> = VecDeque::new();
    let mut out = Vec::new();
    let mut reached = around.is_none();
    for (i, e) in stream.enumerate() {
        let Ok(e) = e else { break };
        let l = line(i as u64 + 1, &e);
        if !reached && around.is_some_and(|a| e.exit() >= a && !matches!(e, Entry::Setup(_))) {
            reached = true;
            out.extend(ring.drain(..));
        }
        if reached {
            out.push(l);
            if out.len() >= count {
                break;
            }
        } else {
            ring.push_back(l);
            if ring.len() > before {
                ring.pop_front();
            }
        }
    }
    if !reached {
        out.extend(ring);
    }
    Ok(Dump { lines: out, damage })
}

/// What a successful check found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CheckSummary {
    /// Frames.
    pub frames: u64,
    /// Checkpoints.
    pub checkpoints: u64,
    /// Exits at the end.
    pub exits: u64,
}

/// Checks a log without running it: the header, every frame's length and
/// CRC, the setup frame first and the end frame last (the reader), then
/// that exit counts never decrease and checkpoints are numbered 1, 2, ...
pub fn check(path: &Path) -> Result<CheckSummary, InspectError> {
    let (_, frames, stream) = LogStream::open(path, None).map_err(InspectError::Log)?;
    let mut last_exit = 0;
    let mut seq = 0;
    let mut exits = 0;
    for (i, e) in stream.enumerate() {
        let e = e.map_err(InspectError::Log)?;
        let frame = i as u64 + 1;
        let order = |reason: String| InspectError::Order {
            path: path.to_path_buf(),
            frame,
            reason,
        };
        if e.exit() < last_exit {
            return Err(order(format!(
                "{} comes after an entry of exit {last_exit}",
                e.describe()
            )));
        }
        last_exit = e.exit();
        match &e {
            Entry::Checkpoint(c) => {
                if c.seq != seq + 1 {
                    return Err(order(format!(
                        "checkpoint {} follows checkpoint {seq}",
                        c.seq
                    )));
                }
                seq = c.seq;
            }
            Entry::End { exit, .. } => exits = *exit,
            _ => {}
        }
    }
    Ok(CheckSummary {
        frames,
        checkpoints: seq,
        exits,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::entry::{Checkpoint, EndReason, ExitId};
    use crate::log::LogWriter;

    fn write(dir: &Path, name: &str, entries: &[Entry]) -> PathBuf {
        let path = dir.join(name);
        let mut w = LogWriter::create(
            &path,
            LogHeader {
                config_digest: 3,
                max_delay_us: 2000,
            },
        )
        .unwrap();
        for e in entries {
            w.append(e).unwrap();
        }
        w.flush().unwrap();
        path
    }

    fn cp(seq: u64, exit: u64, pages: usize) -> Entry {
        Entry::Checkpoint(Box::new(Checkpoint {
            exit,
            at: ExitId::default(),
            seq,
            pages: (0..pages)
                .map(|i| (i as u64 * 4096, vec![1; 4096]))
                .collect(),
            vcpu: vec![],
            devices: vec![],
            ready_for_interrupt: false,
            digest: None,
            start_registers: None,
        }))
    }

    #[test]
    fn info_dump_and_check() {
        let dir = std::env::temp_dir().join(format!("ft-inspect-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let end = Entry::End {
            exit: 9,
            reason: EndReason::Shutdown,
            digest: 1,
        };
        let good = [
            Entry::Setup(Setup {
                disks: vec![("_disk0".into(), 512)],
            }),
            Entry::ClockRead {
                exit: 1,
                value: 2_000_000_000,
            },
            cp(1, 2, 1),
            cp(2, 5, 3),
            Entry::Event {
                exit: 6,
                at: ExitId::default(),
                event: Event::TimerFire,
            },
            end.clone(),
        ];
        let path = write(&dir, "good.log", &good);
        let info = LogInfo::collect(&path, 2).unwrap();
        assert_eq!(info.frames, 6);
        assert_eq!(info.checkpoint_pages, 4);
        assert_eq!(info.kinds["checkpoint"].count, 2);
        assert_eq!(info.guest_ns, 2_000_000_000);
        assert_eq!(info.largest.len(), 2);
        assert!(info.largest[0].line.contains("checkpoint 2"), "{info:?}");
        assert!(info.render().contains("_disk0 512 bytes"));
        let s = check(&path).unwrap();
        assert_eq!((s.frames, s.checkpoints, s.exits), (6, 2, 9));

        let d = dump(&path, Some(5), 2).unwrap().lines;
        assert_eq!(d.len(), 2);
        assert!(d[0].contains("checkpoint 1"), "{d:?}");
        assert!(d[1].contains("checkpoint 2"), "{d:?}");
        assert_eq!(dump(&path, None, 100).unwrap().lines.len(), 6);

        // Out of order: a checkpoint skipped, an exit going back.
        let skipped = write(
            &dir,
            "skip.log",
            &[good[0].clone(), cp(2, 1, 1), end.clone()],
        );
        assert!(matches!(
            check(&skipped),
            Err(InspectError::Order { frame: 2, .. })
        ));
        let back = write(
            &dir,
            "back.log",
            &[good[0].clone(), cp(1, 5, 1), cp(2, 4, 1), end],
        );
        assert!(matches!(
            check(&back),
            Err(InspectError::Order { frame: 3, .. })
        ));
        // Truncated: the reader's refusal.
        let data = std::fs::read(&path).unwrap();
        std::fs::write(dir.join("cut.log"), &data[..data.len() - 3]).unwrap();
        assert!(matches!(
            check(&dir.join("cut.log")),
            Err(InspectError::Log(LogError::Truncated { .. }))
        ));
        // info and dump show what comes before the damage, and name it.
        let cut = LogInfo::collect(&dir.join("cut.log"), 2).unwrap();
        assert_eq!(cut.frames, 5);
        assert_eq!(cut.kinds["checkpoint"].count, 2);
        assert!(cut.end.is_empty());
        let damage = cut.damage.as_deref().unwrap_or_default();
        assert!(damage.contains("truncated in frame 6"), "{damage}");
        assert!(cut.render().contains("cover the 5 frames before"));
        let d = dump(&dir.join("cut.log"), None, 100).unwrap();
        assert_eq!(d.lines.len(), 5);
        assert!(d.damage.is_some());
        // A log cut between frames (a recording that never ended).
        let spans = crate::log_read::frame_spans(&data);
        let unfinished = dir.join("unfinished.log");
        std::fs::write(&unfinished, &data[..spans[4].offset]).unwrap();
        let u = LogInfo::collect(&unfinished, 0).unwrap();
        assert_eq!(u.frames, 4);
        assert!(
            u.damage
                .as_deref()
                .is_some_and(|d| d.contains("after frame 4")),
            "{:?}",
            u.damage
        );
        // Not a log at all stays an error.
        std::fs::write(dir.join("junk.log"), b"junk").unwrap();
        assert!(LogInfo::collect(&dir.join("junk.log"), 0).is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
