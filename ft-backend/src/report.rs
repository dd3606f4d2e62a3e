// Copyright 2026 The ft-cloud-hypervisor authors.
// SPDX-License-Identifier: Apache-2.0

//! The divergence report a replay of a debug recording writes
//! (`--fault-tolerance mode=replay,...,debug_report=FILE`) and
//! `ft-log diverge` reads.
//!
//! ```text
//! magic    8 bytes "CHFTDIV\0"
//! version  u32     1
//! body     (integers little-endian, bytes = u32 length + bytes,
//!           exit-id as in the log)
//!   log bytes, outcome bytes, debug u8, exits u64, checkpoints u64,
//!   vcpu   u8 0 | 1 exit u64, exit-id, rip-recorded u64, rip-replayed u64,
//!                   n u32, n x (name bytes, recorded u64, replayed u64)
//!   memory u8 0 | 1 seq u64, exit u64, exit-id, dirty u64, differing u64,
//!                   n u32, n x (gpa u64, in-dirty-list u8)
//!   exit memory: as memory
//!   next checkpoint u8 0 | 1 seq u64
//! crc      u32     CRC-32 (IEEE) of everything before it
//! ```

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use vm_migration::{ByteReader, ByteWriter, CodecError};

use crate::debug::{RegisterDiff, PAGE_SIZE};
use crate::entry::ExitId;
use crate::symbols::Symbols;

/// The report magic.
pub const REPORT_MAGIC: [u8; 8] = *b"CHFTDIV\0";
/// The report format version.
pub const REPORT_VERSION: u32 = 1;
/// Differing pages listed in a report (the count covers all of them).
pub const MAX_LISTED_PAGES: usize = 256;

/// Errors reading or writing a report.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    /// The file cannot be read or written.
    #[error("cannot access the divergence report {path}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Not a report, another version, or corrupt.
    #[error("{path} is not a divergence report this build reads: {reason}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The body does not decode.
    #[error("{path}: the divergence report is corrupt")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: CodecError,
    },
}

/// The first exit whose vCPU state differed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VcpuFinding {
    /// The exit count.
    pub exit: u64,
    /// The recorded exit's identity.
    pub at: ExitId,
    /// RIP in the recording.
    pub recorded_rip: u64,
    /// RIP in the replay.
    pub replayed_rip: u64,
    /// What differs.
    pub registers: Vec<RegisterDiff>,
}

/// A guest page that differed after a checkpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageFinding {
    /// Its guest-physical address.
    pub gpa: u64,
    /// Whether the checkpoint carried the page (then replay wrote the
    /// recorded contents, and the log or the apply path is at fault);
    /// otherwise the replaying guest (or a device) wrote it on its own.
    pub in_dirty_list: bool,
}

/// The first checkpoint after which guest memory differed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemoryFinding {
    /// The checkpoint's sequence number.
    pub seq: u64,
    /// Its exit count.
    pub exit: u64,
    /// Its exit identity.
    pub at: ExitId,
    /// Pages the checkpoint carried.
    pub dirty: u64,
    /// Pages that differ.
    pub differing: u64,
    /// The first [`MAX_LISTED_PAGES`] of them.
    pub pages: Vec<PageFinding>,
}

/// What a replay of a debug recording found.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DivergenceReport {
    /// The log replayed.
    pub log: String,
    /// How the replay ended (its error, or that it matched).
    pub outcome: String,
    /// Whether the log carried debug records.
    pub debug: bool,
    /// Exits whose vCPU state was compared.
    pub exits_compared: u64,
    /// Checkpoints whose memory was compared.
    pub checkpoints_compared: u64,
    /// The first vCPU difference.
    pub vcpu: Option<VcpuFinding>,
    /// The first memory difference.
    pub memory: Option<MemoryFinding>,
    /// Guest memory at the first exit whose vCPU state differs (`seq`: the
    /// last checkpoint applied before it, `exit`/`at`: that exit): the
    /// pages that differ from the recording's hashes at that checkpoint;
    /// `in_dirty_list` is whether the recording wrote the page before its
    /// next checkpoint (`next_checkpoint`, when it was the next entry of
    /// the log; `dirty` counts its pages). A page neither the recording
    /// wrote nor a device could have written was written by the replay
    /// alone.
    pub exit_memory: Option<MemoryFinding>,
    /// The recording's next checkpoint `exit_memory` was classified with.
    pub next_checkpoint: Option<u64>,
}

impl DivergenceReport {
    /// The report's bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut w = ByteWriter::new();
        w.raw(&REPORT_MAGIC).u32(REPORT_VERSION);
        w.bytes(self.log.as_bytes())
            .bytes(self.outcome.as_bytes())
            .u8(u8::from(self.debug))
            .u64(self.exits_compared)
            .u64(self.checkpoints_compared);
        match &self.vcpu {
            None => {
                w.u8(0);
            }
            Some(v) => {
                w.u8(1).u64(v.exit);
                v.at.put(&mut w);
                w.u64(v.recorded_rip).u64(v.replayed_rip);
                w.u32(u32::try_from(v.registers.len()).unwrap_or(u32::MAX));
                for r in &v.registers {
                    w.bytes(r.name.as_bytes()).u64(r.recorded).u64(r.replayed);
                }
            }
        }
        for m in [&self.memory, &self.exit_memory] {
            match m {
                None => {
                    w.u8(0);
                }
                Some(m) => {
                    w.u8(1).u64(m.seq).u64(m.exit);
                    m.at.put(&mut w);
                    w.u64(m.dirty).u64(m.differing);
                    w.u32(u32::try_from(m.pages.len()).unwrap_or(u32::MAX));
                    for p in &m.pages {
                        w.u64(p.gpa).u8(u8::from(p.in_dirty_list));
                    }
                }
            }
        }
        match self.next_checkpoint {
            None => w.u8(0),
            Some(n) => w.u8(1).u64(n),
        };
        let mut b = w.into_inner();
        let crc = crc32fast::hash(&b);
        b.extend_from_slice(&crc.to_le_bytes());
        b
    }

    /// Decodes report bytes (`path` only names them in errors).
    pub fn decode(path: &Path, data: &[u8]) -> Result<Self, ReportError> {
        let invalid = |reason: &str| ReportError::Invalid {
            path: path.to_path_buf(),
            reason: reason.into(),
        };
        if data.len() < REPORT_MAGIC.len() + 8 || data[..REPORT_MAGIC.len()] != REPORT_MAGIC {
            return Err(invalid("bad magic"));
        }
        let (body, crc) = data.split_at(data.len() - 4);
        let mut c = [0u8; 4];
        c.copy_from_slice(crc);
        if crc32fast::hash(body) != u32::from_le_bytes(c) {
            return Err(invalid("CRC mismatch"));
        }
        let mut r = ByteReader::new(&body[REPORT_MAGIC.len()..]);
        let corrupt = |source| ReportError::Corrupt {
            path: path.to_path_buf(),
            source,
        };
        let version = r.u32().map_err(corrupt)?;
        if version != REPORT_VERSION {
            return Err(invalid(&format!(
                "version {version} (this build reads {REPORT_VERSION})"
            )));
        }
        Self::decode_body(&mut r).map_err(corrupt)
    }

    fn decode_body(r: &mut ByteReader<'_>) -> Result<Self, CodecError> {
        let text = |r: &mut ByteReader<'_>| -> Result<String, CodecError> {
            let b = r.bytes()?;
            Ok(String::from_utf8_lossy(b).into_owned())
        };
        let flag = |r: &mut ByteReader<'_>| -> Result<bool, CodecError> {
            match r.u8()? {
                0 => Ok(false),
                1 => Ok(true),
                v => Err(r.bad(format!("flag {v}"))),
            }
        };
        let log = text(r)?;
        let outcome = text(r)?;
        let debug = flag(r)?;
        let exits_compared = r.u64()?;
        let checkpoints_compared = r.u64()?;
        let vcpu = if flag(r)? {
            let exit = r.u64()?;
            let at = ExitId::get(r)?;
            let recorded_rip = r.u64()?;
            let replayed_rip = r.u64()?;
            let n = r.u32()?;
            let mut registers = Vec::new();
            for _ in 0..n {
                registers.push(RegisterDiff {
                    name: text(r)?,
                    recorded: r.u64()?,
                    replayed: r.u64()?,
                });
            }
            Some(VcpuFinding {
                exit,
                at,
                recorded_rip,
                replayed_rip,
                registers,
            })
        } else {
            None
        };
        let memory = Self::decode_memory(r)?;
        let exit_memory = Self::decode_memory(r)?;
        let next_checkpoint = if flag(r)? { Some(r.u64()?) } else { None };
        r.finish()?;
        Ok(DivergenceReport {
            log,
            outcome,
            debug,
            exits_compared,
            checkpoints_compared,
            vcpu,
            memory,
            exit_memory,
            next_checkpoint,
        })
    }

    fn decode_memory(r: &mut ByteReader<'_>) -> Result<Option<MemoryFinding>, CodecError> {
        match r.u8()? {
            0 => return Ok(None),
            1 => {}
            v => return Err(r.bad(format!("flag {v}"))),
        }
        let seq = r.u64()?;
        let exit = r.u64()?;
        let at = ExitId::get(r)?;
        let dirty = r.u64()?;
        let differing = r.u64()?;
        let n = r.u32()?;
        let mut pages = Vec::new();
        for _ in 0..n {
            let gpa = r.u64()?;
            let in_dirty_list = match r.u8()? {
                0 => false,
                1 => true,
                v => return Err(r.bad(format!("flag {v}"))),
            };
            pages.push(PageFinding { gpa, in_dirty_list });
        }
        Ok(Some(MemoryFinding {
            seq,
            exit,
            at,
            dirty,
            differing,
            pages,
        }))
    }

    /// Writes the report to `path` (through a temporary file, so a reader
    /// never sees half a report).
    pub fn write(&self, path: &Path) -> Result<(), ReportError> {
        let io = |source| ReportError::Io {
            path: path.to_path_buf(),
            source,
        };
        let mut tmp = path.as_os_str().to_owned();
        tmp.push(".tmp");
        std::fs::write(&tmp, self.encode()).map_err(io)?;
        std::fs::rename(&tmp, path).map_err(io)
    }

    /// Reads a report.
    pub fn read(path: &Path) -> Result<Self, ReportError> {
        let data = std::fs::read(path).map_err(|source| ReportError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Self::decode(path, &data)
    }

    /// The report as text, with symbols for RIPs and addresses when the
    /// kernel image's are given.
    pub fn render(&self, symbols: Option<&Symbols>) -> String {
        let mut s = String::new();
        let sym = |addr: u64| {
            symbols
                .and_then(|y| y.locate(addr))
                .map_or(String::new(), |l| format!(" <{l}>"))
        };
        let _ = writeln!(s, "divergence report for {}", self.log);
        if !self.debug {
            let _ = writeln!(
                s,
                "  the log has no debug records: record with --fault-tolerance ...,debug_from=N"
            );
        }
        let _ = writeln!(
            s,
            "  compared the vCPU state at {} exits and guest memory after {} checkpoints",
            self.exits_compared, self.checkpoints_compared
        );
        match &self.vcpu {
            None => {
                let _ = writeln!(s, "  vCPU state: no difference at the exits compared");
            }
            Some(v) => {
                let _ = writeln!(
                    s,
                    "  first exit whose vCPU state differs: exit {} ({})",
                    v.exit, v.at
                );
                let _ = writeln!(
                    s,
                    "    rip recorded {:#x}{}, replayed {:#x}{}",
                    v.recorded_rip,
                    sym(v.recorded_rip),
                    v.replayed_rip,
                    sym(v.replayed_rip)
                );
                for r in &v.registers {
                    if r.recorded == 0 && r.replayed == 0 {
                        let _ = writeln!(s, "    {} differs", r.name);
                    } else {
                        let _ = writeln!(
                            s,
                            "    {}: recorded {:#x}{}, replayed {:#x}{}",
                            r.name,
                            r.recorded,
                            sym(r.recorded),
                            r.replayed,
                            sym(r.replayed)
                        );
                    }
                }
            }
        }
        match &self.memory {
            None => {
                let _ = writeln!(
                    s,
                    "  guest memory: no difference after the checkpoints compared"
                );
            }
            Some(m) => {
                let _ = writeln!(
                    s,
                    "  first checkpoint where guest memory differs: checkpoint {} at exit {} ({}): {} of its {} dirty pages and {} others differ",
                    m.seq,
                    m.exit,
                    m.at,
                    m.pages.iter().filter(|p| p.in_dirty_list).count(),
                    m.dirty,
                    m.differing
                        - m.pages.iter().filter(|p| p.in_dirty_list).count() as u64
                );
                for p in &m.pages {
                    let what = if p.in_dirty_list {
                        "in the checkpoint's dirty list"
                    } else {
                        "not in the checkpoint's dirty list: the replay wrote it"
                    };
                    let _ = write!(s, "    page {:#x} ({what})", p.gpa);
                    if let Some(y) = symbols {
                        let locs = y.in_physical_range(p.gpa, PAGE_SIZE as u64, 4);
                        if !locs.is_empty() {
                            let names: Vec<String> = locs.iter().map(|l| l.to_string()).collect();
                            let _ = write!(s, " kernel image: {}", names.join(", "));
                        }
                    }
                    s.push('\n');
                }
                if m.differing > m.pages.len() as u64 {
                    let _ = writeln!(s, "    ... and {} more", m.differing - m.pages.len() as u64);
                }
            }
        }
        if let Some(m) = &self.exit_memory {
            let alone = m.pages.iter().filter(|p| !p.in_dirty_list).count();
            let _ = writeln!(
                s,
                "  guest memory at exit {}: {} pages changed since checkpoint {}",
                m.exit, m.differing, m.seq
            );
            match self.next_checkpoint {
                Some(n) => {
                    let _ = writeln!(
                        s,
                        "    {alone} of them NOT written by the recording before its next checkpoint {n} ({} pages): written by the replay alone (or by a device)",
                        m.dirty
                    );
                }
                None => {
                    let _ = writeln!(
                        s,
                        "    (the recording's next checkpoint was not the next entry: pages not classified)"
                    );
                }
            }
            for p in &m.pages {
                let what = match (self.next_checkpoint, p.in_dirty_list) {
                    (None, _) => "",
                    (Some(_), true) => " (the recording wrote it too)",
                    (Some(_), false) => " (NOT written by the recording)",
                };
                let _ = write!(s, "    page {:#x}{what}", p.gpa);
                if let Some(y) = symbols {
                    let locs = y.in_physical_range(p.gpa, PAGE_SIZE as u64, 4);
                    if !locs.is_empty() {
                        let names: Vec<String> = locs.iter().map(|l| l.to_string()).collect();
                        let _ = write!(s, " kernel image: {}", names.join(", "));
                    }
                }
                s.push('\n');
            }
        }
        let _ = writeln!(s, "  replay outcome: {}", self.outcome);
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> DivergenceReport {
        DivergenceReport {
            log: "/tmp/r.log".into(),
            outcome: "replay diverged at exit 5".into(),
            debug: true,
            exits_compared: 10,
            checkpoints_compared: 2,
            vcpu: Some(VcpuFinding {
                exit: 4,
                at: ExitId {
                    kind: 2,
                    addr: 0x3f8,
                    rip: 0x100,
                },
                recorded_rip: 0x100,
                replayed_rip: 0x100,
                registers: vec![RegisterDiff {
                    name: "rax".into(),
                    recorded: 1,
                    replayed: 2,
                }],
            }),
            memory: Some(MemoryFinding {
                seq: 2,
                exit: 3,
                at: ExitId::default(),
                dirty: 5,
                differing: 1,
                pages: vec![PageFinding {
                    gpa: 0x5000,
                    in_dirty_list: true,
                }],
            }),
            exit_memory: Some(MemoryFinding {
                seq: 2,
                exit: 4,
                at: ExitId::default(),
                dirty: 3,
                differing: 1,
                pages: vec![PageFinding {
                    gpa: 0x7000,
                    in_dirty_list: false,
                }],
            }),
            next_checkpoint: Some(3),
        }
    }

    #[test]
    fn round_trips_and_refuses_damage() {
        let r = sample();
        let b = r.encode();
        let p = Path::new("r");
        assert_eq!(DivergenceReport::decode(p, &b).unwrap(), r);
        for i in 0..b.len() {
            let mut d = b.clone();
            d[i] ^= 0x10;
            assert!(DivergenceReport::decode(p, &d).is_err(), "byte {i}");
        }
        for cut in 0..b.len() {
            assert!(DivergenceReport::decode(p, &b[..cut]).is_err());
        }
        let text = r.render(None);
        assert!(text.contains("exit 4"), "{text}");
        assert!(text.contains("rax: recorded 0x1"), "{text}");
        assert!(text.contains("checkpoint 2 at exit 3"), "{text}");
        assert!(text.contains("page 0x5000 (in the checkpoint's dirty list)"));
        assert!(
            text.contains("page 0x7000 (NOT written by the recording)"),
            "{text}"
        );
    }
}
