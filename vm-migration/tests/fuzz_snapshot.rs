// Copyright 2026 The ft-cloud-hypervisor authors.
// SPDX-License-Identifier: Apache-2.0

//! Structured fuzzing of the snapshot decoders: `state.bin`
//! (`state_file::decode`), `memory.bin` (`memory_file::read_header` and
//! `load`), and the sections inside a state file (vCPU, interrupt
//! controller, serial). Valid files round-trip; a valid file with any
//! byte flipped, or cut anywhere, is refused with an error naming the
//! file; random bytes never panic or hang.

#[path = "../../ft-backend/tests/fuzz_support/mod.rs"]
mod fuzz_support;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use fuzz_support::{config, within};
use proptest::prelude::*;
use vm_migration::devices_state::{decode_intc, decode_serial};
use vm_migration::snapshot::{memory_file, state_file, Section};
use vm_migration::vcpu::VcpuState;

/// A file of its own under the system's temporary directory, removed on
/// drop.
struct TempFile(PathBuf);

impl TempFile {
    fn new(what: &str) -> Self {
        static N: AtomicU64 = AtomicU64::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        TempFile(
            std::env::temp_dir().join(format!("fuzz-snapshot-{}-{n}-{what}", std::process::id())),
        )
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn sections() -> impl Strategy<Value = Vec<Section>> {
    proptest::collection::vec(
        (
            "[a-z_0-9-]{1,24}",
            any::<u32>(),
            proptest::collection::vec(any::<u8>(), 0..600),
        )
            .prop_map(|(id, version, data)| Section { id, version, data }),
        0..6,
    )
    .prop_map(|mut v| {
        // A state file holds each id once.
        let mut seen = std::collections::HashSet::new();
        v.retain(|s| seen.insert(s.id.clone()));
        v
    })
}

/// Guest memory ranges (small) and their contents.
fn memory() -> impl Strategy<Value = Vec<(u64, Vec<u8>)>> {
    proptest::collection::vec(
        (
            any::<u64>().prop_map(|a| a & !0xfff & ((1 << 47) - 1)),
            proptest::collection::vec(any::<u8>(), 1..3000),
        ),
        1..4,
    )
}

fn write_memory(path: &Path, mem: &[(u64, Vec<u8>)]) -> u64 {
    let ranges: Vec<(u64, u64)> = mem.iter().map(|(a, d)| (*a, d.len() as u64)).collect();
    memory_file::write(path, &ranges, |addr, buf| {
        for (a, d) in mem {
            if addr >= *a && addr - a < d.len() as u64 {
                let off = (addr - a) as usize;
                buf.copy_from_slice(&d[off..off + buf.len()]);
                return Ok(());
            }
        }
        Err(format!("no range holds {addr:#x}"))
    })
    .expect("writing a memory file")
}

/// Reads a memory file back: the ranges' contents, or the error's text.
fn read_memory(path: &Path) -> Result<Vec<(u64, Vec<u8>)>, String> {
    let header = memory_file::read_header(path).map_err(|e| chain(&e))?;
    let mut out: Vec<(u64, Vec<u8>)> = header
        .ranges
        .iter()
        .map(|(a, _)| (*a, Vec::new()))
        .collect();
    let ranges = header.ranges.clone();
    memory_file::load(path, &header, |addr, bytes| {
        let i = ranges
            .iter()
            .position(|(a, l)| addr >= *a && addr - a < *l)
            .ok_or_else(|| format!("no range holds {addr:#x}"))?;
        out[i].1.extend_from_slice(bytes);
        Ok(())
    })
    .map_err(|e| chain(&e))?;
    Ok(out)
}

fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cause = c.source();
    }
    s
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn state_files_round_trip(sections in sections()) {
        let bytes = state_file::encode(&sections);
        let back = state_file::decode(Path::new("state.bin"), &bytes).map_err(|e| TestCaseError::fail(chain(&e)))?;
        prop_assert_eq!(back, sections);
    }

    /// Any one byte changed, or the file cut anywhere: refused, naming the
    /// file.
    #[test]
    fn damaged_state_files_are_refused(sections in sections(), at in any::<usize>(), xor in 1u8..=255, cut in any::<bool>()) {
        let mut bytes = state_file::encode(&sections);
        let i = at % bytes.len();
        if cut { bytes.truncate(i) } else { bytes[i] ^= xor }
        let r = within("decoding a damaged state file", move || {
            state_file::decode(Path::new("damaged/state.bin"), &bytes).map_err(|e| chain(&e))
        });
        match r {
            Ok(s) => prop_assert!(false, "a damaged state file was accepted: {} sections", s.len()),
            Err(msg) => prop_assert!(msg.contains("damaged/state.bin"), "{}", msg),
        }
    }

    #[test]
    fn random_state_bytes_never_panic(prefix in any::<bool>(), tail in proptest::collection::vec(any::<u8>(), 0..1024)) {
        let mut bytes = Vec::new();
        if prefix {
            bytes.extend_from_slice(state_file::STATE_MAGIC);
        }
        bytes.extend_from_slice(&tail);
        let r = within("decoding random state bytes", move || {
            state_file::decode(Path::new("random/state.bin"), &bytes).map(|s| s.len()).map_err(|e| chain(&e))
        });
        if let Err(msg) = r {
            prop_assert!(msg.contains("random/state.bin"), "{}", msg);
        }
    }

    #[test]
    fn memory_files_round_trip(mem in memory()) {
        let f = TempFile::new("memory.bin");
        write_memory(&f.0, &mem);
        let back = read_memory(&f.0).map_err(TestCaseError::fail)?;
        prop_assert_eq!(back, mem);
    }

    /// Any one byte changed, the file cut anywhere, or bytes appended:
    /// refused (by the header check or by the contents' digest), naming
    /// the file.
    #[test]
    fn damaged_memory_files_are_refused(mem in memory(), at in any::<usize>(), xor in 1u8..=255, how in 0u8..3) {
        let f = TempFile::new("memory.bin");
        write_memory(&f.0, &mem);
        let mut bytes = std::fs::read(&f.0).expect("reading the memory file back");
        let i = at % bytes.len();
        match how {
            0 => bytes[i] ^= xor,
            1 => bytes.truncate(i),
            _ => bytes.extend_from_slice(&[xor; 3]),
        }
        std::fs::write(&f.0, &bytes).expect("writing the damaged file");
        let path = f.0.clone();
        let r = within("reading a damaged memory file", move || read_memory(&path));
        match r {
            Ok(_) => prop_assert!(false, "a damaged memory file was accepted"),
            Err(msg) => prop_assert!(msg.contains(&*f.0.to_string_lossy()), "{}", msg),
        }
    }

    /// A header with random ranges (huge, overlapping, overflowing) and a
    /// valid CRC: refused by its length check or read, never a panic.
    #[test]
    fn forged_memory_headers_never_panic(ranges in proptest::collection::vec((any::<u64>(), prop_oneof![any::<u64>(), 0u64..5000]), 0..80), tail in proptest::collection::vec(any::<u8>(), 0..64)) {
        let mut h = Vec::new();
        h.extend_from_slice(memory_file::MEMORY_MAGIC);
        h.extend_from_slice(&memory_file::MEMORY_FORMAT_VERSION.to_le_bytes());
        h.extend_from_slice(&(ranges.len() as u32).to_le_bytes());
        for (a, l) in &ranges {
            h.extend_from_slice(&a.to_le_bytes());
            h.extend_from_slice(&l.to_le_bytes());
        }
        let crc = crc32fast::hash(&h);
        h.extend_from_slice(&crc.to_le_bytes());
        h.extend_from_slice(&tail);
        let f = TempFile::new("memory.bin");
        std::fs::write(&f.0, &h).expect("writing a forged header");
        let path = f.0.clone();
        let _ = within("reading a forged memory header", move || read_memory(&path));
    }

    /// The state sections' own decoders, on any bytes.
    #[test]
    fn section_decoders_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..3000)) {
        within("decoding state sections", move || {
            let _ = VcpuState::decode(&bytes);
            let _ = decode_intc(&bytes);
            let _ = decode_serial(&bytes);
        });
    }
}
