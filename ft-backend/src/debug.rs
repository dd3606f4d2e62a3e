// Copyright 2026 The ft-cloud-hypervisor authors.
// SPDX-License-Identifier: Apache-2.0

//! Debug records of a recording made with `debug_from=N`, and how replay
//! compares against them.
//!
//! A debug recording adds two kinds of frames (tag
//! [`TAG_DEBUG`](crate::entry::TAG_DEBUG)) to the ordinary log, which
//! replay needs nothing else from:
//!
//! ```text
//! debug payload = kind u8, then
//!   1 vCPU state  exit u64, exit-id, vcpu-state bytes
//!                 (the vCPU at every guest-caused exit from exit N, taken
//!                 right after the exit, before the VMM handles it)
//!   2 page hashes seq u64, exit u64, pages u64, n u32,
//!                 n x (gpa u64, hash u64)
//!                 (after checkpoint `seq`: the xxh3 of every 4 KiB guest
//!                 page whose hash changed since the previous page-hash
//!                 record; before the first one every page counts as
//!                 zero-filled; `pages` is the number of guest pages)
//! ```
//!
//! The hashes are a delta so that a debug log costs about 16 bytes per
//! page the checkpoint already carries, not a table of all of memory per
//! checkpoint. Replay rebuilds the table, hashes all of its own memory
//! after applying the checkpoint, and names the pages that differ.

use std::collections::BTreeMap;

use vm_migration::vcpu::VcpuState;
use vm_migration::{ByteReader, ByteWriter, CodecError};
use xxhash_rust::xxh3::xxh3_64;
use zerocopy::IntoBytes;

use crate::entry::ExitId;

/// The page size the hashes cover.
pub const PAGE_SIZE: usize = 4096;

const KIND_VCPU: u8 = 1;
const KIND_PAGES: u8 = 2;

/// One debug record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DebugEntry {
    /// The vCPU state right after guest-caused exit `exit`.
    Vcpu {
        /// The exit count.
        exit: u64,
        /// That exit's identity.
        at: ExitId,
        /// `vm_migration::vcpu::VcpuState::encode`.
        state: Vec<u8>,
    },
    /// Page hashes after checkpoint `seq`.
    Pages(PageHashDelta),
}

/// The page hashes that changed since the previous record.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PageHashDelta {
    /// The checkpoint's sequence number.
    pub seq: u64,
    /// The checkpoint's exit count.
    pub exit: u64,
    /// Guest pages in all.
    pub pages: u64,
    /// (guest-physical address, xxh3 of the page) for each changed page.
    pub changed: Vec<(u64, u64)>,
}

impl DebugEntry {
    /// The exit count the record belongs to.
    pub fn exit(&self) -> u64 {
        match self {
            DebugEntry::Vcpu { exit, .. } => *exit,
            DebugEntry::Pages(p) => p.exit,
        }
    }

    /// A short description.
    pub fn describe(&self) -> String {
        match self {
            DebugEntry::Vcpu { exit, at, state } => {
                format!(
                    "debug vCPU state at exit {exit} ({at}, {} bytes)",
                    state.len()
                )
            }
            DebugEntry::Pages(p) => format!(
                "debug page hashes after checkpoint {} at exit {} ({} of {} pages changed)",
                p.seq,
                p.exit,
                p.changed.len(),
                p.pages
            ),
        }
    }

    /// Appends the payload (without the frame tag).
    pub fn encode(&self, w: &mut ByteWriter) {
        match self {
            DebugEntry::Vcpu { exit, at, state } => {
                w.u8(KIND_VCPU).u64(*exit);
                at.put(w);
                w.bytes(state);
            }
            DebugEntry::Pages(p) => {
                w.u8(KIND_PAGES).u64(p.seq).u64(p.exit).u64(p.pages);
                w.u32(u32::try_from(p.changed.len()).unwrap_or(u32::MAX));
                for (gpa, hash) in &p.changed {
                    w.u64(*gpa).u64(*hash);
                }
            }
        }
    }

    /// Decodes a payload written by [`encode`](Self::encode); the caller
    /// checks that nothing is left.
    pub fn decode(r: &mut ByteReader<'_>) -> Result<Self, CodecError> {
        match r.u8()? {
            KIND_VCPU => Ok(DebugEntry::Vcpu {
                exit: r.u64()?,
                at: ExitId::get(r)?,
                state: r.bytes()?.to_vec(),
            }),
            KIND_PAGES => {
                let seq = r.u64()?;
                let exit = r.u64()?;
                let pages = r.u64()?;
                let n = r.u32()?;
                // Grows with the bytes there, not with a corrupt count.
                let mut changed = Vec::new();
                for _ in 0..n {
                    changed.push((r.u64()?, r.u64()?));
                }
                Ok(DebugEntry::Pages(PageHashDelta {
                    seq,
                    exit,
                    pages,
                    changed,
                }))
            }
            k => Err(r.bad(format!("debug record kind {k}"))),
        }
    }
}

/// The hash of a zero-filled page.
pub fn zero_page_hash() -> u64 {
    xxh3_64(&[0u8; PAGE_SIZE])
}

/// The hash of every page of guest memory, by guest-physical address.
/// `regions` are (start address, bytes).
pub fn hash_pages(regions: &[(u64, &[u8])]) -> Vec<(u64, u64)> {
    let mut v = Vec::new();
    for (start, bytes) in regions {
        for (i, page) in bytes.chunks(PAGE_SIZE).enumerate() {
            v.push((start + (i * PAGE_SIZE) as u64, xxh3_64(page)));
        }
    }
    v
}

/// A table of page hashes: what the recording's memory held, rebuilt from
/// deltas (replay), or what the last record said (recording).
#[derive(Debug, Clone, Default)]
pub struct PageHashTable {
    hashes: BTreeMap<u64, u64>,
}

impl PageHashTable {
    /// The hash of the page at `gpa` (a page never recorded is zero-filled).
    pub fn get(&self, gpa: u64) -> u64 {
        self.hashes
            .get(&gpa)
            .copied()
            .unwrap_or_else(zero_page_hash)
    }

    /// Recording: the pages of `now` whose hash differs from the table,
    /// which then holds `now`.
    pub fn delta(&mut self, now: &[(u64, u64)]) -> Vec<(u64, u64)> {
        let mut changed = Vec::new();
        for &(gpa, hash) in now {
            if self.get(gpa) != hash {
                changed.push((gpa, hash));
                self.hashes.insert(gpa, hash);
            }
        }
        changed
    }

    /// Replay: applies a recorded delta.
    pub fn apply(&mut self, delta: &PageHashDelta) {
        for &(gpa, hash) in &delta.changed {
            self.hashes.insert(gpa, hash);
        }
    }

    /// Replay: the pages of `now` (the replay's hashes) that differ from
    /// the table, plus recorded pages the replay does not have.
    pub fn differing(&self, now: &[(u64, u64)]) -> Vec<u64> {
        let mut v: Vec<u64> = now
            .iter()
            .filter(|&&(gpa, hash)| self.get(gpa) != hash)
            .map(|&(gpa, _)| gpa)
            .collect();
        let have: std::collections::BTreeSet<u64> = now.iter().map(|&(g, _)| g).collect();
        v.extend(self.hashes.keys().filter(|g| !have.contains(g)));
        v.sort_unstable();
        v
    }
}

/// One register (or state part) that differs between the recording and
/// the replay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegisterDiff {
    /// Its name (`rax`, `cr3`, `cs.base`, `msr 0xc0000082`, `xsave` ...).
    pub name: String,
    /// The recorded value (0 for parts without one value).
    pub recorded: u64,
    /// The replayed value.
    pub replayed: u64,
}

fn push(out: &mut Vec<RegisterDiff>, name: &str, recorded: u64, replayed: u64) {
    if recorded != replayed {
        out.push(RegisterDiff {
            name: name.to_string(),
            recorded,
            replayed,
        });
    }
}

/// The registers and state parts that differ between two encoded vCPU
/// states (`VcpuState::encode`). An undecodable state is one difference
/// named `state`.
pub fn diff_vcpu(recorded: &[u8], replayed: &[u8]) -> Vec<RegisterDiff> {
    let (a, b) = match (VcpuState::decode(recorded), VcpuState::decode(replayed)) {
        (Ok(a), Ok(b)) => (a, b),
        _ => {
            return if recorded == replayed {
                Vec::new()
            } else {
                vec![RegisterDiff {
                    name: "state (undecodable)".into(),
                    recorded: 0,
                    replayed: 0,
                }]
            }
        }
    };
    let mut out = Vec::new();
    let (r, s) = (&a.regs, &b.regs);
    let regs = [
        ("rax", r.rax, s.rax),
        ("rbx", r.rbx, s.rbx),
        ("rcx", r.rcx, s.rcx),
        ("rdx", r.rdx, s.rdx),
        ("rsi", r.rsi, s.rsi),
        ("rdi", r.rdi, s.rdi),
        ("rsp", r.rsp, s.rsp),
        ("rbp", r.rbp, s.rbp),
        ("r8", r.r8, s.r8),
        ("r9", r.r9, s.r9),
        ("r10", r.r10, s.r10),
        ("r11", r.r11, s.r11),
        ("r12", r.r12, s.r12),
        ("r13", r.r13, s.r13),
        ("r14", r.r14, s.r14),
        ("r15", r.r15, s.r15),
        ("rip", r.rip, s.rip),
        ("rflags", r.rflags, s.rflags),
    ];
    for (n, x, y) in regs {
        push(&mut out, n, x, y);
    }
    let (r, s) = (&a.sregs, &b.sregs);
    let segs = [
        ("cs", &r.cs, &s.cs),
        ("ds", &r.ds, &s.ds),
        ("es", &r.es, &s.es),
        ("fs", &r.fs, &s.fs),
        ("gs", &r.gs, &s.gs),
        ("ss", &r.ss, &s.ss),
        ("tr", &r.tr, &s.tr),
        ("ldt", &r.ldt, &s.ldt),
    ];
    for (n, x, y) in segs {
        push(&mut out, &format!("{n}.base"), x.base, y.base);
        push(
            &mut out,
            &format!("{n}.selector"),
            x.selector.into(),
            y.selector.into(),
        );
        push(
            &mut out,
            &format!("{n}.limit"),
            x.limit.into(),
            y.limit.into(),
        );
        if x.as_bytes() != y.as_bytes() && x.base == y.base && x.selector == y.selector {
            push(&mut out, &format!("{n}.attributes"), 0, 1);
        }
    }
    push(&mut out, "gdt.base", r.gdt.base, s.gdt.base);
    push(&mut out, "idt.base", r.idt.base, s.idt.base);
    let cr = [
        ("cr0", r.cr0, s.cr0),
        ("cr2", r.cr2, s.cr2),
        ("cr3", r.cr3, s.cr3),
        ("cr4", r.cr4, s.cr4),
        ("cr8", r.cr8, s.cr8),
        ("efer", r.efer, s.efer),
        ("apic_base", r.apic_base, s.apic_base),
    ];
    for (n, x, y) in cr {
        push(&mut out, n, x, y);
    }
    for (i, (x, y)) in r
        .interrupt_bitmap
        .iter()
        .zip(s.interrupt_bitmap.iter())
        .enumerate()
    {
        push(&mut out, &format!("interrupt_bitmap[{i}]"), *x, *y);
    }
    let whole = |out: &mut Vec<RegisterDiff>, name: &str, x: &[u8], y: &[u8]| {
        if x != y {
            out.push(RegisterDiff {
                name: name.into(),
                recorded: 0,
                replayed: 0,
            });
        }
    };
    whole(
        &mut out,
        "xsave (FPU/SSE/AVX state)",
        &xsave_canonical(a.xsave.as_bytes()),
        &xsave_canonical(b.xsave.as_bytes()),
    );
    whole(&mut out, "xcrs", a.xcrs.as_bytes(), b.xcrs.as_bytes());
    whole(
        &mut out,
        "vcpu events (pending exception/interrupt, shadow)",
        a.events.as_bytes(),
        b.events.as_bytes(),
    );
    whole(
        &mut out,
        "debug registers",
        a.debugregs.as_bytes(),
        b.debugregs.as_bytes(),
    );
    let msr = |m: &[(u32, u64)], i: u32| m.iter().find(|(k, _)| *k == i).map(|(_, v)| *v);
    let mut idx: Vec<u32> = a
        .msrs
        .iter()
        .chain(b.msrs.iter())
        .map(|(i, _)| *i)
        .collect();
    idx.sort_unstable();
    idx.dedup();
    for i in idx {
        let (x, y) = (msr(&a.msrs, i), msr(&b.msrs, i));
        if x != y {
            out.push(RegisterDiff {
                name: format!("msr {i:#x}"),
                recorded: x.unwrap_or(0),
                replayed: y.unwrap_or(0),
            });
        }
    }
    out
}

/// Offset of XSTATE_BV in the XSAVE area (the XSAVE header's first field).
const XSTATE_BV: usize = 512;

/// An XSAVE area with every component whose XSTATE_BV bit is clear
/// written out as its initial value and the bit set: the same register
/// values, whichever way the area says it.
///
/// A component in its initial state may be saved either way: with its
/// bit clear (the processor's init optimization, as when the host saved
/// the guest's FPU state around an exit to user space) or with the bit
/// set and the initial values written out. A recording and its replay
/// save the same FPU state differently when only one of them went through
/// such an exit (the recording's kicks): on these machines the first
/// Linux exit to differ (`read_pci_config`) differed only in XSTATE_BV's
/// x87 bit, the registers being equal.
pub fn xsave_canonical(area: &[u8]) -> Vec<u8> {
    let mut v = area.to_vec();
    let Some(bv) = v.get(XSTATE_BV..XSTATE_BV + 8) else {
        return v;
    };
    let mut bv = u64::from_le_bytes(bv.try_into().unwrap_or_default());
    // x87: FCW 0x037f, everything else (FSW, FTW, FOP, FIP, FDP, ST0-7) 0.
    if bv & 1 == 0 {
        v[0..2].copy_from_slice(&0x037fu16.to_le_bytes());
        v[2..24].fill(0);
        v[32..160].fill(0);
        bv |= 1;
    }
    // SSE: XMM0-15 zero (MXCSR is not covered by the bit).
    if bv & 2 == 0 {
        v[160..416].fill(0);
        bv |= 2;
    }
    // AVX: the upper halves of YMM0-15 zero (standard format).
    if bv & 4 == 0 && v.len() >= 832 {
        v[576..832].fill(0);
        bv |= 4;
    }
    v[XSTATE_BV..XSTATE_BV + 8].copy_from_slice(&bv.to_le_bytes());
    v
}

/// The RIP in an encoded vCPU state, if it decodes.
pub fn vcpu_rip(state: &[u8]) -> Option<u64> {
    VcpuState::decode(state).ok().map(|s| s.regs.rip)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_refuse_garbage() {
        let samples = [
            DebugEntry::Vcpu {
                exit: 7,
                at: ExitId {
                    kind: 1,
                    addr: 0x3f8,
                    rip: 0x10,
                },
                state: vec![1, 2, 3],
            },
            DebugEntry::Pages(PageHashDelta {
                seq: 2,
                exit: 9,
                pages: 100,
                changed: vec![(0x1000, 5), (0x2000, 6)],
            }),
        ];
        for e in samples {
            let mut w = ByteWriter::new();
            e.encode(&mut w);
            let b = w.into_inner();
            let mut r = ByteReader::new(&b);
            assert_eq!(DebugEntry::decode(&mut r).unwrap(), e);
            r.finish().unwrap();
            for cut in 0..b.len() {
                let mut r = ByteReader::new(&b[..cut]);
                assert!(DebugEntry::decode(&mut r).is_err(), "cut {cut}");
            }
        }
        let mut r = ByteReader::new(&[9]);
        assert!(DebugEntry::decode(&mut r).is_err());
    }

    #[test]
    fn page_tables_name_the_differing_pages() {
        let mut mem = vec![0u8; 4 * PAGE_SIZE];
        mem[PAGE_SIZE + 3] = 1;
        let mut rec = PageHashTable::default();
        let d1 = rec.delta(&hash_pages(&[(0x10000, &mem)]));
        assert_eq!(d1.len(), 1, "only the non-zero page");
        assert_eq!(d1[0].0, 0x11000);
        mem[3 * PAGE_SIZE] = 9;
        let d2 = rec.delta(&hash_pages(&[(0x10000, &mem)]));
        assert_eq!(d2.iter().map(|p| p.0).collect::<Vec<_>>(), vec![0x13000]);

        let mut rep = PageHashTable::default();
        for (seq, d) in [(1, d1), (2, d2)] {
            rep.apply(&PageHashDelta {
                seq,
                exit: 0,
                pages: 4,
                changed: d,
            });
        }
        assert!(rep.differing(&hash_pages(&[(0x10000, &mem)])).is_empty());
        let mut other = mem.clone();
        other[2 * PAGE_SIZE + 100] = 1;
        other[3 * PAGE_SIZE] = 0;
        assert_eq!(
            rep.differing(&hash_pages(&[(0x10000, &other)])),
            vec![0x12000, 0x13000]
        );
    }

    fn state() -> VcpuState {
        VcpuState {
            regs: Default::default(),
            sregs: Default::default(),
            xsave: Default::default(),
            xcrs: Default::default(),
            msrs: vec![(0x174, 1), (0xc000_0082, 2)],
            events: Default::default(),
            debugregs: Default::default(),
        }
    }

    #[test]
    fn vcpu_diffs_name_registers() {
        let a = state();
        let mut b = state();
        assert_eq!(diff_vcpu(&a.encode(), &b.encode()), Vec::new());
        b.regs.rax = 5;
        b.regs.rip = 0x1000;
        b.sregs.cr3 = 0x9000;
        b.sregs.cs.base = 0x10;
        b.msrs[1].1 = 3;
        // XMM0's first bytes (offset 160), with SSE state in use.
        b.xsave.region[128] = 2;
        b.xsave.region[40] = 1;
        let d = diff_vcpu(&a.encode(), &b.encode());
        let names: Vec<&str> = d.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "rax",
                "rip",
                "cs.base",
                "cr3",
                "xsave (FPU/SSE/AVX state)",
                "msr 0xc0000082"
            ]
        );
        assert_eq!((d[0].recorded, d[0].replayed), (0, 5));
        assert_eq!(vcpu_rip(&b.encode()), Some(0x1000));
        assert_eq!(diff_vcpu(b"x", b"x"), Vec::new());
        assert_eq!(diff_vcpu(b"x", b"y").len(), 1);
        assert_eq!(vcpu_rip(b"garbage"), None);
    }

    #[test]
    fn xsave_areas_compare_by_register_values() {
        // x87 and SSE in their initial state, said both ways: written out
        // with XSTATE_BV 0x3, or left to the header with XSTATE_BV 0x2 (as
        // the recording's area read at the Linux guest's exit 3).
        let mut written = vec![0u8; 4096];
        written[0..2].copy_from_slice(&0x037fu16.to_le_bytes());
        written[24..28].copy_from_slice(&0x1f80u32.to_le_bytes());
        written[XSTATE_BV] = 3;
        let mut header = written.clone();
        header[XSTATE_BV] = 2;
        // Stale bytes the processor ignores when the bit is clear.
        header[8..16].copy_from_slice(&0xffff_ffff_8100_0000u64.to_le_bytes());
        assert_ne!(written, header);
        assert_eq!(xsave_canonical(&written), xsave_canonical(&header));
        // A register that differs still differs.
        let mut other = written.clone();
        other[0] = 0x7e;
        assert_ne!(xsave_canonical(&written), xsave_canonical(&other));
        let mut xmm = written.clone();
        xmm[160] = 1;
        assert_ne!(xsave_canonical(&written), xsave_canonical(&xmm));
        // Too short to hold a header: compared as it is.
        assert_eq!(xsave_canonical(b"abc"), b"abc".to_vec());
    }
}
