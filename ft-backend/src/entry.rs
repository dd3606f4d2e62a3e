// Copyright 2026 The ft-cloud-hypervisor authors.
// SPDX-License-Identifier: Apache-2.0

//! The entries of a record/replay log and their encoding (the payload of
//! one frame, see [`crate::log`]).

use std::fmt;

use hypervisor::VmExit;
use vm_migration::{ByteReader, ByteWriter, CodecError};

use crate::debug::DebugEntry;

/// Frame tag of [`Entry::ClockRead`].
pub const TAG_CLOCK_READ: u8 = 1;
/// Frame tag of [`Entry::Event`].
pub const TAG_EVENT: u8 = 2;
/// Frame tag of [`Entry::Checkpoint`].
pub const TAG_CHECKPOINT: u8 = 3;
/// Frame tag of [`Entry::End`].
pub const TAG_END: u8 = 4;
/// Frame tag of [`Entry::Setup`].
pub const TAG_SETUP: u8 = 5;
/// Frame tag of [`Entry::Debug`] (a recording with `debug_from`).
pub const TAG_DEBUG: u8 = 6;

/// The identity of a guest-caused exit: its kind, its port or address, and
/// the guest's RIP. Exit 0 (before the first entry into the guest) has
/// kind `none`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ExitId {
    /// Exit kind code (see [`ExitId::kind_name`]).
    pub kind: u8,
    /// Port (port I/O) or guest-physical address (MMIO), else 0.
    pub addr: u64,
    /// Guest RIP when the VMM handled the exit.
    pub rip: u64,
}

impl ExitId {
    /// The identity of `exit` at `rip`.
    pub fn of(exit: &VmExit, rip: u64) -> Self {
        let (kind, addr) = match exit {
            VmExit::IoIn { port, .. } => (1, u64::from(*port)),
            VmExit::IoOut { port, .. } => (2, u64::from(*port)),
            VmExit::MmioRead { addr, .. } => (3, *addr),
            VmExit::MmioWrite { addr, .. } => (4, *addr),
            VmExit::Hlt => (5, 0),
            VmExit::IrqWindowOpen => (6, 0),
            VmExit::Shutdown => (7, 0),
            VmExit::Interrupted => (8, 0),
            VmExit::InternalError { .. } | VmExit::FailEntry { .. } | VmExit::Other(_) => (9, 0),
        };
        ExitId { kind, addr, rip }
    }

    /// The name of the kind.
    pub fn kind_name(&self) -> &'static str {
        match self.kind {
            0 => "none",
            1 => "io_in",
            2 => "io_out",
            3 => "mmio_read",
            4 => "mmio_write",
            5 => "hlt",
            6 => "irq_window",
            7 => "shutdown",
            8 => "interrupted",
            9 => "other",
            _ => "unknown",
        }
    }

    pub(crate) fn put(&self, w: &mut ByteWriter) {
        w.u8(self.kind).u64(self.addr).u64(self.rip);
    }

    pub(crate) fn get(r: &mut ByteReader<'_>) -> Result<Self, CodecError> {
        Ok(ExitId {
            kind: r.u8()?,
            addr: r.u64()?,
            rip: r.u64()?,
        })
    }
}

impl fmt::Display for ExitId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.kind {
            1 | 2 => write!(
                f,
                "{} port {:#x} rip {:#x}",
                self.kind_name(),
                self.addr,
                self.rip
            ),
            3 | 4 => write!(
                f,
                "{} address {:#x} rip {:#x}",
                self.kind_name(),
                self.addr,
                self.rip
            ),
            _ => write!(f, "{} rip {:#x}", self.kind_name(), self.rip),
        }
    }
}

/// An asynchronous input applied to the guest at an exit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// The APIC timer's deadline passed: `InterruptController::fire_timer`.
    TimerFire,
    /// Host bytes queued into the serial port's receive FIFO.
    SerialInput(Vec<u8>),
    /// A device event (opaque bytes) for the device `id`.
    Device {
        /// The device (`AsyncEventSource::id`).
        id: String,
        /// The event.
        data: Vec<u8>,
    },
}

impl Event {
    /// A short description for error messages.
    pub fn describe(&self) -> String {
        match self {
            Event::TimerFire => "timer expiry".into(),
            Event::SerialInput(b) => format!("{} bytes of serial input", b.len()),
            Event::Device { id, data } => format!("{}-byte event of device {id}", data.len()),
        }
    }
}

/// Why the recording ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndReason {
    /// The guest powered off.
    Shutdown,
    /// The guest asked for a reset.
    Reset,
    /// The VMM stopped the vCPU (API shutdown, signal).
    Stopped,
    /// The vCPU stopped on an error.
    Error,
}

impl EndReason {
    fn code(self) -> u8 {
        match self {
            EndReason::Shutdown => 1,
            EndReason::Reset => 2,
            EndReason::Stopped => 3,
            EndReason::Error => 4,
        }
    }

    fn from_code(c: u8) -> Option<Self> {
        Some(match c {
            1 => EndReason::Shutdown,
            2 => EndReason::Reset,
            3 => EndReason::Stopped,
            4 => EndReason::Error,
            _ => return None,
        })
    }
}

/// A micro-checkpoint: the state the recording VMM had at a forced
/// delivery point, which replay cannot find by counting exits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    /// Guest exits before it (replay applies it after that exit).
    pub exit: u64,
    /// Identity of that last guest exit.
    pub at: ExitId,
    /// Sequence number, from 1.
    pub seq: u64,
    /// Guest pages written since the previous checkpoint: (guest-physical
    /// address, contents).
    pub pages: Vec<(u64, Vec<u8>)>,
    /// The vCPU state (`vm_migration::vcpu::VcpuState::encode`).
    pub vcpu: Vec<u8>,
    /// Device states by snapshot id (`vm_migration::Snapshottable`).
    pub devices: Vec<(String, Vec<u8>)>,
    /// Whether the guest could take an interrupt at that point (the
    /// injection decision replay must make the same way).
    pub ready_for_interrupt: bool,
    /// Digest of guest memory, vCPU registers and devices after the checkpoint, on
    /// some checkpoints only (it reads all of memory).
    pub digest: Option<u64>,
    /// Digest of the registers (`digest::registers_digest`) the stretch
    /// of execution this checkpoint replaces started from: at exit `exit`,
    /// or at the previous checkpoint when that came later. Replay, which
    /// stands there, compares its own before taking the checkpoint's, so a
    /// divergence is not overwritten unseen. None when the recording did
    /// not know them (the first stretch after an FT VMotion seed).
    pub start_registers: Option<u64>,
}

/// What the recording VMM learned from the host when it built the VM's
/// devices and the guest can see. Replay builds its devices from this
/// instead of opening their host backends (disk images, taps).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Setup {
    /// Each disk image's size in bytes, by device id (the guest sees the
    /// capacity in sectors).
    pub disks: Vec<(String, u64)>,
}

impl Setup {
    /// The size the recording saw for disk `id`.
    pub fn disk_size(&self, id: &str) -> Option<u64> {
        self.disks.iter().find(|(d, _)| d == id).map(|(_, s)| *s)
    }
}

/// One log entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entry {
    /// The devices' host-derived setup: always the first frame.
    Setup(Setup),
    /// A device read guest-visible time.
    ClockRead {
        /// Guest exits before the read (the read happens while handling
        /// exit `exit`, or before the first entry when 0).
        exit: u64,
        /// The value read, in ns.
        value: u64,
    },
    /// An asynchronous event applied after handling exit `exit`.
    Event {
        /// Guest exits before it.
        exit: u64,
        /// That exit's identity.
        at: ExitId,
        /// The event.
        event: Event,
    },
    /// A micro-checkpoint (forced delivery).
    Checkpoint(Box<Checkpoint>),
    /// The end of the recording.
    End {
        /// Guest exits in the whole run.
        exit: u64,
        /// Why it ended.
        reason: EndReason,
        /// Digest of guest memory, vCPU registers and devices at the end.
        digest: u64,
    },
    /// A debug record (vCPU state at an exit, page hashes after a
    /// checkpoint): see [`crate::debug`]. Replay compares, never applies.
    Debug(DebugEntry),
}

impl Entry {
    /// The exit count the entry belongs to.
    pub fn exit(&self) -> u64 {
        match self {
            Entry::ClockRead { exit, .. } | Entry::Event { exit, .. } | Entry::End { exit, .. } => {
                *exit
            }
            Entry::Checkpoint(c) => c.exit,
            Entry::Setup(_) => 0,
            Entry::Debug(d) => d.exit(),
        }
    }

    /// The frame tag.
    pub fn tag(&self) -> u8 {
        match self {
            Entry::ClockRead { .. } => TAG_CLOCK_READ,
            Entry::Event { .. } => TAG_EVENT,
            Entry::Checkpoint(_) => TAG_CHECKPOINT,
            Entry::End { .. } => TAG_END,
            Entry::Setup(_) => TAG_SETUP,
            Entry::Debug(_) => TAG_DEBUG,
        }
    }

    /// A short description for error messages.
    pub fn describe(&self) -> String {
        match self {
            Entry::ClockRead { exit, value } => format!("clock read of {value} ns at exit {exit}"),
            Entry::Event { exit, at, event } => {
                format!("{} at exit {exit} ({at})", event.describe())
            }
            Entry::Checkpoint(c) => format!("checkpoint {} at exit {} ({})", c.seq, c.exit, c.at),
            Entry::End { exit, reason, .. } => {
                format!("end of recording ({reason:?}) at exit {exit}")
            }
            Entry::Setup(s) => format!("device setup ({} disks)", s.disks.len()),
            Entry::Debug(d) => d.describe(),
        }
    }

    /// The payload (without the tag).
    pub fn encode_payload(&self, w: &mut ByteWriter) {
        match self {
            Entry::Setup(s) => {
                w.u32(u32::try_from(s.disks.len()).unwrap_or(u32::MAX));
                for (id, size) in &s.disks {
                    w.bytes(id.as_bytes()).u64(*size);
                }
            }
            Entry::ClockRead { exit, value } => {
                w.u64(*exit).u64(*value);
            }
            Entry::Event { exit, at, event } => {
                w.u64(*exit);
                at.put(w);
                match event {
                    Event::TimerFire => {
                        w.u8(1);
                    }
                    Event::SerialInput(b) => {
                        w.u8(2).bytes(b);
                    }
                    Event::Device { id, data } => {
                        w.u8(3).bytes(id.as_bytes()).bytes(data);
                    }
                }
            }
            Entry::Checkpoint(c) => {
                w.u64(c.exit);
                c.at.put(w);
                w.u64(c.seq);
                w.u32(u32::try_from(c.pages.len()).unwrap_or(u32::MAX));
                for (gpa, data) in &c.pages {
                    w.u64(*gpa).bytes(data);
                }
                w.bytes(&c.vcpu);
                w.u32(u32::try_from(c.devices.len()).unwrap_or(u32::MAX));
                for (id, data) in &c.devices {
                    w.bytes(id.as_bytes()).bytes(data);
                }
                w.u8(u8::from(c.ready_for_interrupt));
                for d in [c.digest, c.start_registers] {
                    match d {
                        None => w.u8(0),
                        Some(d) => w.u8(1).u64(d),
                    };
                }
            }
            Entry::End {
                exit,
                reason,
                digest,
            } => {
                w.u64(*exit).u8(reason.code()).u64(*digest);
            }
            Entry::Debug(d) => d.encode(w),
        }
    }

    /// Decodes a payload with frame tag `tag`.
    pub fn decode(tag: u8, payload: &[u8]) -> Result<Entry, CodecError> {
        let mut r = ByteReader::new(payload);
        let e = match tag {
            TAG_SETUP => {
                let n = r.u32()?;
                let mut disks = Vec::new();
                for _ in 0..n {
                    let id = std::str::from_utf8(r.bytes()?)
                        .map_err(|_| r.bad("device id is not UTF-8"))?
                        .to_string();
                    disks.push((id, r.u64()?));
                }
                Entry::Setup(Setup { disks })
            }
            TAG_CLOCK_READ => Entry::ClockRead {
                exit: r.u64()?,
                value: r.u64()?,
            },
            TAG_EVENT => {
                let exit = r.u64()?;
                let at = ExitId::get(&mut r)?;
                let event = match r.u8()? {
                    1 => Event::TimerFire,
                    2 => Event::SerialInput(r.bytes()?.to_vec()),
                    3 => {
                        let id = std::str::from_utf8(r.bytes()?)
                            .map_err(|_| r.bad("device id is not UTF-8"))?
                            .to_string();
                        Event::Device {
                            id,
                            data: r.bytes()?.to_vec(),
                        }
                    }
                    k => return Err(r.bad(format!("event kind {k}"))),
                };
                Entry::Event { exit, at, event }
            }
            TAG_CHECKPOINT => {
                let exit = r.u64()?;
                let at = ExitId::get(&mut r)?;
                let seq = r.u64()?;
                let n = r.u32()?;
                let mut pages = Vec::new();
                for _ in 0..n {
                    pages.push((r.u64()?, r.bytes()?.to_vec()));
                }
                let vcpu = r.bytes()?.to_vec();
                let n = r.u32()?;
                let mut devices = Vec::new();
                for _ in 0..n {
                    let id = std::str::from_utf8(r.bytes()?)
                        .map_err(|_| r.bad("device id is not UTF-8"))?
                        .to_string();
                    devices.push((id, r.bytes()?.to_vec()));
                }
                let ready_for_interrupt = match r.u8()? {
                    0 => false,
                    1 => true,
                    v => return Err(r.bad(format!("flag {v}"))),
                };
                let digest = match r.u8()? {
                    0 => None,
                    1 => Some(r.u64()?),
                    v => return Err(r.bad(format!("digest tag {v}"))),
                };
                let start_registers = match r.u8()? {
                    0 => None,
                    1 => Some(r.u64()?),
                    v => return Err(r.bad(format!("start registers tag {v}"))),
                };
                Entry::Checkpoint(Box::new(Checkpoint {
                    exit,
                    at,
                    seq,
                    pages,
                    vcpu,
                    devices,
                    ready_for_interrupt,
                    digest,
                    start_registers,
                }))
            }
            TAG_END => {
                let exit = r.u64()?;
                let code = r.u8()?;
                let reason = EndReason::from_code(code)
                    .ok_or_else(|| r.bad(format!("end reason {code}")))?;
                Entry::End {
                    exit,
                    reason,
                    digest: r.u64()?,
                }
            }
            TAG_DEBUG => Entry::Debug(DebugEntry::decode(&mut r)?),
            t => return Err(r.bad(format!("unknown entry tag {t}"))),
        };
        r.finish()?;
        Ok(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn samples() -> Vec<Entry> {
        let at = ExitId {
            kind: 2,
            addr: 0x3f8,
            rip: 0x1234,
        };
        vec![
            Entry::Setup(Setup {
                disks: vec![("_disk0".into(), 16 << 20), ("data".into(), 512)],
            }),
            Entry::Setup(Setup::default()),
            Entry::ClockRead { exit: 0, value: 99 },
            Entry::Event {
                exit: 5,
                at,
                event: Event::TimerFire,
            },
            Entry::Event {
                exit: 6,
                at,
                event: Event::SerialInput(b"hello".to_vec()),
            },
            Entry::Event {
                exit: 7,
                at,
                event: Event::Device {
                    id: "_disk0".into(),
                    data: vec![1, 2, 3],
                },
            },
            Entry::Checkpoint(Box::new(Checkpoint {
                exit: 8,
                at,
                seq: 1,
                pages: vec![(0x1000, vec![7; 4096]), (0x5000, vec![8; 4096])],
                vcpu: vec![1; 100],
                devices: vec![("serial".into(), vec![3; 10])],
                ready_for_interrupt: true,
                digest: Some(42),
                start_registers: Some(7),
            })),
            Entry::End {
                exit: 9,
                reason: EndReason::Shutdown,
                digest: 0xfeed,
            },
            Entry::Debug(DebugEntry::Vcpu {
                exit: 10,
                at,
                state: vec![4; 50],
            }),
        ]
    }

    #[test]
    fn entries_round_trip() {
        for e in samples() {
            let mut w = ByteWriter::new();
            e.encode_payload(&mut w);
            let b = w.into_inner();
            assert_eq!(Entry::decode(e.tag(), &b).unwrap(), e);
            // Every truncation is an error, never a panic.
            for cut in 0..b.len() {
                assert!(
                    Entry::decode(e.tag(), &b[..cut]).is_err(),
                    "{e:?} cut {cut}"
                );
            }
            assert!(Entry::decode(99, &b).is_err());
        }
    }

    #[test]
    fn exit_identity() {
        let id = ExitId::of(
            &VmExit::IoOut {
                port: 0x3f8,
                size: 1,
                data: vec![0],
            },
            0x10,
        );
        assert_eq!(id.to_string(), "io_out port 0x3f8 rip 0x10");
        let id = ExitId::of(
            &VmExit::MmioWrite {
                addr: 0xfee000b0,
                data: vec![],
            },
            1,
        );
        assert_eq!(id.to_string(), "mmio_write address 0xfee000b0 rip 0x1");
        assert_eq!(ExitId::default().kind_name(), "none");
    }
}
