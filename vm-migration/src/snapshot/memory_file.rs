// Copyright 2026 The ft-cloud-hypervisor authors.
// SPDX-License-Identifier: Apache-2.0

//! `memory.bin`: guest memory, raw, between a checked header and the
//! XXH3-64 of the contents.
//!
//! ```text
//! magic "FTSNAPMM" | format version u32 | range count u32
//! per range: guest-physical address u64 | length u64
//! CRC-32 of the header so far u32
//! the ranges' bytes, in order
//! XXH3-64 of those bytes u64
//! ```

use std::io::{BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::Path;

use xxhash_rust::xxh3::Xxh3;

use super::SnapshotError;

/// The memory file's magic.
pub const MEMORY_MAGIC: &[u8; 8] = b"FTSNAPMM";
/// The version of this format.
pub const MEMORY_FORMAT_VERSION: u32 = 1;
/// Most ranges a memory file may list.
const MAX_RANGES: u32 = 64;
/// Bytes copied at a time.
const CHUNK: usize = 4 << 20;

/// What a memory file's header says, and its recorded digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemoryHeader {
    /// `(guest-physical address, length)` of each range.
    pub ranges: Vec<(u64, u64)>,
    /// XXH3-64 of the contents, from the file's end.
    pub digest: u64,
    /// Where the contents start.
    data_offset: u64,
}

fn header_bytes(ranges: &[(u64, u64)]) -> Vec<u8> {
    let mut h = Vec::new();
    h.extend_from_slice(MEMORY_MAGIC);
    h.extend_from_slice(&MEMORY_FORMAT_VERSION.to_le_bytes());
    h.extend_from_slice(&(ranges.len() as u32).to_le_bytes());
    for (gpa, len) in ranges {
        h.extend_from_slice(&gpa.to_le_bytes());
        h.extend_from_slice(&len.to_le_bytes());
    }
    let crc = crc32fast::hash(&h);
    h.extend_from_slice(&crc.to_le_bytes());
    h
}

/// Writes guest memory to `path`: `ranges` as `(address, length)`, whose
/// bytes `read` copies out chunk by chunk (`read(address, buffer)`).
/// Returns the contents' XXH3-64.
pub fn write(
    path: &Path,
    ranges: &[(u64, u64)],
    mut read: impl FnMut(u64, &mut [u8]) -> Result<(), String>,
) -> Result<u64, SnapshotError> {
    let io = |e| SnapshotError::io(path, e);
    let file = std::fs::File::create(path).map_err(io)?;
    let mut out = BufWriter::with_capacity(CHUNK, file);
    out.write_all(&header_bytes(ranges)).map_err(io)?;
    let mut hash = Xxh3::new();
    let mut buf = vec![0u8; CHUNK];
    for &(gpa, len) in ranges {
        let mut done = 0u64;
        while done < len {
            let n = usize::try_from((len - done).min(CHUNK as u64)).unwrap_or(CHUNK);
            read(gpa + done, &mut buf[..n]).map_err(|reason| SnapshotError::Invalid {
                path: path.to_path_buf(),
                reason: format!("cannot read guest memory at {:#x}: {reason}", gpa + done),
            })?;
            hash.update(&buf[..n]);
            out.write_all(&buf[..n]).map_err(io)?;
            done += n as u64;
        }
    }
    let digest = hash.digest();
    out.write_all(&digest.to_le_bytes()).map_err(io)?;
    let file = out.into_inner().map_err(|e| io(e.into_error()))?;
    file.sync_all().map_err(io)?;
    Ok(digest)
}

/// Reads and checks the header of the memory file at `path`, and that the
/// file's length is the header's, its ranges' and the digest's.
pub fn read_header(path: &Path) -> Result<MemoryHeader, SnapshotError> {
    let io = |e| SnapshotError::io(path, e);
    let truncated = |what: &str| SnapshotError::Truncated {
        path: path.to_path_buf(),
        what: what.to_string(),
    };
    let mut f = std::fs::File::open(path).map_err(io)?;
    let file_len = f.metadata().map_err(io)?.len();
    let mut fixed = [0u8; 16];
    f.read_exact(&mut fixed)
        .map_err(|_| truncated("ends inside the header"))?;
    if &fixed[..8] != MEMORY_MAGIC {
        return Err(SnapshotError::Magic {
            path: path.to_path_buf(),
            kind: "memory",
        });
    }
    let version = u32::from_le_bytes([fixed[8], fixed[9], fixed[10], fixed[11]]);
    let count = u32::from_le_bytes([fixed[12], fixed[13], fixed[14], fixed[15]]);
    if version != MEMORY_FORMAT_VERSION {
        return Err(SnapshotError::Version {
            path: path.to_path_buf(),
            found: version,
            expected: MEMORY_FORMAT_VERSION,
        });
    }
    if count > MAX_RANGES {
        return Err(SnapshotError::Invalid {
            path: path.to_path_buf(),
            reason: format!("{count} memory ranges (at most {MAX_RANGES})"),
        });
    }
    let mut rest = vec![0u8; count as usize * 16 + 4];
    f.read_exact(&mut rest)
        .map_err(|_| truncated("ends inside the header"))?;
    let mut ranges = Vec::new();
    for r in rest[..count as usize * 16].chunks_exact(16) {
        let mut a = [0u8; 8];
        a.copy_from_slice(&r[..8]);
        let gpa = u64::from_le_bytes(a);
        a.copy_from_slice(&r[8..]);
        ranges.push((gpa, u64::from_le_bytes(a)));
    }
    let crc_at = count as usize * 16;
    let crc = u32::from_le_bytes([
        rest[crc_at],
        rest[crc_at + 1],
        rest[crc_at + 2],
        rest[crc_at + 3],
    ]);
    let mut all = fixed.to_vec();
    all.extend_from_slice(&rest[..crc_at]);
    if crc32fast::hash(&all) != crc {
        return Err(SnapshotError::Checksum {
            path: path.to_path_buf(),
            what: "the header".into(),
        });
    }
    let data_offset = 16 + rest.len() as u64;
    let data_len = ranges
        .iter()
        .try_fold(0u64, |acc, (_, len)| acc.checked_add(*len))
        .ok_or_else(|| truncated("range lengths overflow"))?;
    let expected = data_offset
        .checked_add(data_len)
        .and_then(|v| v.checked_add(8))
        .ok_or_else(|| truncated("range lengths overflow"))?;
    if file_len != expected {
        return Err(truncated(&format!(
            "{file_len} bytes where the header announces {expected}"
        )));
    }
    f.seek(SeekFrom::End(-8)).map_err(io)?;
    let mut d = [0u8; 8];
    f.read_exact(&mut d).map_err(io)?;
    Ok(MemoryHeader {
        ranges,
        digest: u64::from_le_bytes(d),
        data_offset,
    })
}

/// Copies the contents of the memory file at `path` (checked by
/// [`read_header`]) out with `write(address, bytes)`, then checks their
/// digest. On a digest mismatch the copied memory must be thrown away.
pub fn load(
    path: &Path,
    header: &MemoryHeader,
    mut write: impl FnMut(u64, &[u8]) -> Result<(), String>,
) -> Result<(), SnapshotError> {
    let io = |e| SnapshotError::io(path, e);
    let mut f = std::fs::File::open(path).map_err(io)?;
    f.seek(SeekFrom::Start(header.data_offset)).map_err(io)?;
    let mut f = BufReader::with_capacity(CHUNK, f);
    let mut hash = Xxh3::new();
    let mut buf = vec![0u8; CHUNK];
    for &(gpa, len) in &header.ranges {
        let mut done = 0u64;
        while done < len {
            let n = usize::try_from((len - done).min(CHUNK as u64)).unwrap_or(CHUNK);
            f.read_exact(&mut buf[..n]).map_err(io)?;
            hash.update(&buf[..n]);
            write(gpa + done, &buf[..n]).map_err(|reason| SnapshotError::Invalid {
                path: path.to_path_buf(),
                reason: format!("cannot write guest memory at {:#x}: {reason}", gpa + done),
            })?;
            done += n as u64;
        }
    }
    if hash.digest() != header.digest {
        return Err(SnapshotError::Checksum {
            path: path.to_path_buf(),
            what: "the memory contents".into(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp(name: &str) -> std::path::PathBuf {
        std::env::temp_dir().join(format!("ft-memfile-{}-{name}", std::process::id()))
    }

    #[test]
    fn round_trip_and_damage() {
        let path = temp("rt");
        let mem: Vec<u8> = (0..(3 * CHUNK + 5)).map(|i| (i * 7 % 251) as u8).collect();
        let ranges = [(0u64, 4096u64), (0x10_0000, (mem.len() - 4096) as u64)];
        let at = |gpa: u64| {
            if gpa >= 0x10_0000 {
                (gpa - 0x10_0000 + 4096) as usize
            } else {
                gpa as usize
            }
        };
        let digest = write(&path, &ranges, |gpa, b| {
            let s = at(gpa);
            b.copy_from_slice(&mem[s..s + b.len()]);
            Ok(())
        })
        .unwrap();
        let header = read_header(&path).unwrap();
        assert_eq!(
            (header.ranges.as_slice(), header.digest),
            (&ranges[..], digest)
        );
        let mut back = vec![0u8; mem.len()];
        load(&path, &header, |gpa, b| {
            let s = at(gpa);
            back[s..s + b.len()].copy_from_slice(b);
            Ok(())
        })
        .unwrap();
        assert_eq!(back, mem);

        // A flipped byte in the contents: the digest catches it.
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[100_000] ^= 1;
        std::fs::write(&path, &bytes).unwrap();
        let header = read_header(&path).unwrap();
        let e = load(&path, &header, |_, _| Ok(())).unwrap_err();
        assert!(matches!(e, SnapshotError::Checksum { .. }), "{e}");
        // Truncated: refused by the header check.
        std::fs::write(&path, &bytes[..bytes.len() - 1]).unwrap();
        assert!(matches!(
            read_header(&path),
            Err(SnapshotError::Truncated { .. })
        ));
        // Another version.
        bytes[8] = 9;
        std::fs::write(&path, &bytes).unwrap();
        assert!(matches!(
            read_header(&path),
            Err(SnapshotError::Version { found: 9, .. })
        ));
        let _ = std::fs::remove_file(&path);
    }
}
