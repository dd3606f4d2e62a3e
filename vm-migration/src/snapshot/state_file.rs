// Copyright 2026 The ft-cloud-hypervisor authors.
// SPDX-License-Identifier: Apache-2.0

//! `state.bin`: the VMM's, the vCPU's and every device's state, one
//! versioned and checksummed section each.
//!
//! ```text
//! header:  magic "FTSNAPST" | format version u32 | section count u32 | CRC-32 of the previous 16 bytes
//! section: id length u16 | id (UTF-8) | version u32 | length u64 | CRC-32 u32 | bytes
//! ```
//!
//! All integers little-endian. A section's CRC-32 covers its id, version,
//! length and bytes. The file ends right after the last section.

use std::io::Write;
use std::path::Path;

use super::SnapshotError;

/// The state file's magic.
pub const STATE_MAGIC: &[u8; 8] = b"FTSNAPST";
/// The version of this format.
pub const STATE_FORMAT_VERSION: u32 = 1;
/// Longest section id.
const MAX_ID_LEN: usize = 256;

/// One piece of saved state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Section {
    /// What it is the state of (`vmm`, `vcpu0`, a device's snapshot id).
    pub id: String,
    /// The version of this section's own encoding.
    pub version: u32,
    /// The state.
    pub data: Vec<u8>,
}

fn section_crc(id: &[u8], version: u32, data: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(id);
    h.update(&version.to_le_bytes());
    h.update(&(data.len() as u64).to_le_bytes());
    h.update(data);
    h.finalize()
}

/// Encodes `sections` as a state file.
pub fn encode(sections: &[Section]) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(STATE_MAGIC);
    out.extend_from_slice(&STATE_FORMAT_VERSION.to_le_bytes());
    out.extend_from_slice(&(sections.len() as u32).to_le_bytes());
    let crc = crc32fast::hash(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    for s in sections {
        let id = s.id.as_bytes();
        out.extend_from_slice(&(id.len() as u16).to_le_bytes());
        out.extend_from_slice(id);
        out.extend_from_slice(&s.version.to_le_bytes());
        out.extend_from_slice(&(s.data.len() as u64).to_le_bytes());
        out.extend_from_slice(&section_crc(id, s.version, &s.data).to_le_bytes());
        out.extend_from_slice(&s.data);
    }
    out
}

/// Writes `sections` to `path` (and syncs it).
pub fn write(path: &Path, sections: &[Section]) -> Result<(), SnapshotError> {
    let bytes = encode(sections);
    let mut f = std::fs::File::create(path).map_err(|e| SnapshotError::io(path, e))?;
    f.write_all(&bytes)
        .and_then(|()| f.sync_all())
        .map_err(|e| SnapshotError::io(path, e))
}

/// Reads and checks the state file at `path`.
pub fn read(path: &Path) -> Result<Vec<Section>, SnapshotError> {
    let bytes = std::fs::read(path).map_err(|e| SnapshotError::io(path, e))?;
    decode(path, &bytes)
}

struct Cursor<'a> {
    path: &'a Path,
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8], SnapshotError> {
        let end = self.at.checked_add(n).filter(|&e| e <= self.bytes.len());
        match end {
            Some(end) => {
                let s = &self.bytes[self.at..end];
                self.at = end;
                Ok(s)
            }
            None => Err(SnapshotError::Truncated {
                path: self.path.to_path_buf(),
                what: format!("ends inside {what}"),
            }),
        }
    }

    fn u16(&mut self, what: &str) -> Result<u16, SnapshotError> {
        let b = self.take(2, what)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }

    fn u32(&mut self, what: &str) -> Result<u32, SnapshotError> {
        let b = self.take(4, what)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn u64(&mut self, what: &str) -> Result<u64, SnapshotError> {
        let b = self.take(8, what)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_le_bytes(a))
    }
}

/// Decodes and checks a state file's bytes (`path` names it in errors).
pub fn decode(path: &Path, bytes: &[u8]) -> Result<Vec<Section>, SnapshotError> {
    let mut c = Cursor { path, bytes, at: 0 };
    let magic = c.take(8, "the header")?;
    if magic != STATE_MAGIC {
        return Err(SnapshotError::Magic {
            path: path.to_path_buf(),
            kind: "state",
        });
    }
    let version = c.u32("the header")?;
    let count = c.u32("the header")?;
    let crc = c.u32("the header")?;
    if crc32fast::hash(&bytes[..16]) != crc {
        return Err(SnapshotError::Checksum {
            path: path.to_path_buf(),
            what: "the header".into(),
        });
    }
    if version != STATE_FORMAT_VERSION {
        return Err(SnapshotError::Version {
            path: path.to_path_buf(),
            found: version,
            expected: STATE_FORMAT_VERSION,
        });
    }
    let mut sections = Vec::new();
    for i in 0..count {
        let what = format!("section {i} of {count}");
        let id_len = usize::from(c.u16(&what)?);
        if id_len > MAX_ID_LEN {
            return Err(SnapshotError::Invalid {
                path: path.to_path_buf(),
                reason: format!("{what}: an id of {id_len} bytes"),
            });
        }
        let id = c.take(id_len, &what)?;
        let id_text = String::from_utf8_lossy(id).into_owned();
        let what = format!("section {id_text} ({} of {count})", i + 1);
        let sversion = c.u32(&what)?;
        let len = c.u64(&what)?;
        let crc = c.u32(&what)?;
        let len = usize::try_from(len).map_err(|_| SnapshotError::Truncated {
            path: path.to_path_buf(),
            what: format!("{what} claims {len} bytes"),
        })?;
        let data = c.take(len, &what)?;
        if section_crc(id, sversion, data) != crc {
            return Err(SnapshotError::Checksum {
                path: path.to_path_buf(),
                what,
            });
        }
        let id = String::from_utf8(id.to_vec()).map_err(|_| SnapshotError::Invalid {
            path: path.to_path_buf(),
            reason: format!("{what}: its id is not UTF-8"),
        })?;
        if sections.iter().any(|s: &Section| s.id == id) {
            return Err(SnapshotError::Invalid {
                path: path.to_path_buf(),
                reason: format!("section {id} appears twice"),
            });
        }
        sections.push(Section {
            id,
            version: sversion,
            data: data.to_vec(),
        });
    }
    if c.at != bytes.len() {
        return Err(SnapshotError::Truncated {
            path: path.to_path_buf(),
            what: format!("{} bytes after the last section", bytes.len() - c.at),
        });
    }
    Ok(sections)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<Section> {
        vec![
            Section {
                id: "vmm".into(),
                version: 1,
                data: vec![1, 2, 3],
            },
            Section {
                id: "_disk0".into(),
                version: 7,
                data: (0..200u8).collect(),
            },
        ]
    }

    #[test]
    fn round_trip() {
        let bytes = encode(&sample());
        assert_eq!(decode(Path::new("s"), &bytes).unwrap(), sample());
    }

    #[test]
    fn every_flipped_byte_and_every_truncation_is_refused() {
        let bytes = encode(&sample());
        for i in 0..bytes.len() {
            let mut b = bytes.clone();
            b[i] ^= 0x10;
            assert!(decode(Path::new("s"), &b).is_err(), "flip at {i}");
            assert!(decode(Path::new("s"), &bytes[..i]).is_err(), "cut at {i}");
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(matches!(
            decode(Path::new("s"), &longer),
            Err(SnapshotError::Truncated { .. })
        ));
    }

    #[test]
    fn errors_name_the_section_and_the_version() {
        let mut bytes = encode(&sample());
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        let e = decode(Path::new("/x/state.bin"), &bytes)
            .unwrap_err()
            .to_string();
        assert!(e.contains("/x/state.bin") && e.contains("_disk0"), "{e}");

        let mut other = encode(&sample());
        other[8..12].copy_from_slice(&2u32.to_le_bytes());
        let crc = crc32fast::hash(&other[..16]);
        other[16..20].copy_from_slice(&crc.to_le_bytes());
        let e = decode(Path::new("s"), &other).unwrap_err();
        assert!(
            matches!(
                e,
                SnapshotError::Version {
                    found: 2,
                    expected: 1,
                    ..
                }
            ),
            "{e}"
        );
    }
}
