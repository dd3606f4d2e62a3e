// Copyright 2026 The ft-cloud-hypervisor authors.
// SPDX-License-Identifier: Apache-2.0

//! The live migration wire protocol.
//!
//! ```text
//! preamble (source, then destination's answer):
//!   magic "FTMIGRAT" | version u32 | CRC-32 of the previous 12 bytes
//! message:
//!   type u8 | reserved [0; 3] | length u32 | CRC-32 u32 | payload
//! ```
//!
//! All integers little-endian. A message's CRC-32 covers its type, its
//! length and its payload. Messages from the source:
//!
//! - `Config` (1): the VM configuration (JSON, Cloud Hypervisor's shape)
//!   then the guest-physical ranges (count u32, then base u64 | length u64
//!   each): the destination builds its memory from them;
//! - `Pages` (2): ranges of pages (count u32, then gpa u64 | pages u32
//!   each) followed by their bytes, in order;
//! - `Zeros` (3): ranges of pages (as `Pages`) that are all zero now: no
//!   bytes follow;
//! - `State` (4): the final state, encoded as a snapshot state file
//!   (`snapshot::state_file`: its own magic, version and per-section
//!   CRC-32), sent with the guest paused;
//! - `Abandon` (5): the source gives up (UTF-8 reason): the destination
//!   drops what it built.
//!
//! From the destination: `Ok` (0x80) after the preamble, `Config` and
//! `State` (the guest runs there now), or `Error` (0x81, UTF-8 reason):
//! the source keeps (or resumes) its guest.

use std::io::{Read, Write};

/// The preamble's magic.
pub const MAGIC: &[u8; 8] = b"FTMIGRAT";
/// The version of this protocol.
pub const PROTOCOL_VERSION: u32 = 1;
/// Bytes of the preamble.
pub const PREAMBLE_LEN: usize = 16;
/// Bytes of a message header.
pub const HEADER_LEN: usize = 12;
/// Largest payload accepted (a memory batch is far smaller).
pub const MAX_PAYLOAD: usize = 64 << 20;
/// Bytes of a page.
pub const PAGE_SIZE: usize = 4096;
/// Largest number of ranges in one `Pages`, `Zeros` or `Config`.
const MAX_RANGES: usize = 1 << 20;

/// Errors of the wire protocol.
#[derive(Debug, thiserror::Error)]
pub enum ProtocolError {
    /// The stream failed.
    #[error("the migration connection failed")]
    Io(#[source] std::io::Error),
    /// The peer closed the stream.
    #[error("the peer closed the migration connection")]
    Closed,
    /// Not a migration stream.
    #[error("the peer does not speak this migration protocol (bad magic)")]
    Magic,
    /// Another protocol version.
    #[error(
        "the peer speaks migration protocol version {found}; this VMM speaks version {expected}"
    )]
    Version {
        /// The peer's.
        found: u32,
        /// Ours.
        expected: u32,
    },
    /// A checksum does not match.
    #[error("the {what} failed its checksum (the stream is damaged)")]
    Checksum {
        /// The preamble or the message type.
        what: String,
    },
    /// A message of a type this version does not know.
    #[error("unknown migration message type {0}")]
    UnknownType(u8),
    /// A message longer than any this protocol sends.
    #[error("a migration message of {0} bytes is larger than the limit")]
    TooLarge(u64),
    /// A message that decodes to nonsense.
    #[error("malformed {what} message: {reason}")]
    Malformed {
        /// The message type.
        what: &'static str,
        /// Why.
        reason: String,
    },
}

fn io_err(e: std::io::Error) -> ProtocolError {
    if e.kind() == std::io::ErrorKind::UnexpectedEof {
        ProtocolError::Closed
    } else {
        ProtocolError::Io(e)
    }
}

/// A message type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum MessageType {
    /// The configuration and memory layout.
    Config = 1,
    /// Pages with their bytes.
    Pages = 2,
    /// All-zero pages.
    Zeros = 3,
    /// The final state (a state file).
    State = 4,
    /// The source gives up.
    Abandon = 5,
    /// The destination accepts.
    Ok = 0x80,
    /// The destination refuses.
    Error = 0x81,
}

impl MessageType {
    fn from_u8(t: u8) -> Result<Self, ProtocolError> {
        Ok(match t {
            1 => MessageType::Config,
            2 => MessageType::Pages,
            3 => MessageType::Zeros,
            4 => MessageType::State,
            5 => MessageType::Abandon,
            0x80 => MessageType::Ok,
            0x81 => MessageType::Error,
            t => return Err(ProtocolError::UnknownType(t)),
        })
    }

    /// Its name in errors.
    pub fn name(self) -> &'static str {
        match self {
            MessageType::Config => "Config",
            MessageType::Pages => "Pages",
            MessageType::Zeros => "Zeros",
            MessageType::State => "State",
            MessageType::Abandon => "Abandon",
            MessageType::Ok => "Ok",
            MessageType::Error => "Error",
        }
    }
}

/// The preamble's bytes.
pub fn preamble() -> [u8; PREAMBLE_LEN] {
    let mut p = [0u8; PREAMBLE_LEN];
    p[..8].copy_from_slice(MAGIC);
    p[8..12].copy_from_slice(&PROTOCOL_VERSION.to_le_bytes());
    let crc = crc32fast::hash(&p[..12]);
    p[12..].copy_from_slice(&crc.to_le_bytes());
    p
}

/// Writes our preamble.
pub fn write_preamble(w: &mut dyn Write) -> Result<(), ProtocolError> {
    w.write_all(&preamble()).map_err(io_err)?;
    w.flush().map_err(io_err)
}

/// Reads and checks the peer's preamble.
pub fn read_preamble(r: &mut dyn Read) -> Result<(), ProtocolError> {
    let mut p = [0u8; PREAMBLE_LEN];
    r.read_exact(&mut p).map_err(io_err)?;
    check_preamble(&p)
}

/// Checks a preamble's bytes.
pub fn check_preamble(p: &[u8; PREAMBLE_LEN]) -> Result<(), ProtocolError> {
    if &p[..8] != MAGIC {
        return Err(ProtocolError::Magic);
    }
    let crc = u32::from_le_bytes([p[12], p[13], p[14], p[15]]);
    if crc32fast::hash(&p[..12]) != crc {
        return Err(ProtocolError::Checksum {
            what: "preamble".into(),
        });
    }
    let version = u32::from_le_bytes([p[8], p[9], p[10], p[11]]);
    if version != PROTOCOL_VERSION {
        return Err(ProtocolError::Version {
            found: version,
            expected: PROTOCOL_VERSION,
        });
    }
    Ok(())
}

fn crc(t: u8, parts: &[&[u8]]) -> u32 {
    let len: usize = parts.iter().map(|p| p.len()).sum();
    let mut h = crc32fast::Hasher::new();
    h.update(&[t]);
    h.update(&(len as u32).to_le_bytes());
    for p in parts {
        h.update(p);
    }
    h.finalize()
}

/// Writes one message whose payload is the concatenation of `parts`
/// (pages are written from guest memory without a copy into a buffer).
pub fn write_message(
    w: &mut dyn Write,
    t: MessageType,
    parts: &[&[u8]],
) -> Result<u64, ProtocolError> {
    let len: usize = parts.iter().map(|p| p.len()).sum();
    if len > MAX_PAYLOAD {
        return Err(ProtocolError::TooLarge(len as u64));
    }
    let mut header = [0u8; HEADER_LEN];
    header[0] = t as u8;
    header[4..8].copy_from_slice(&(len as u32).to_le_bytes());
    header[8..12].copy_from_slice(&crc(t as u8, parts).to_le_bytes());
    w.write_all(&header).map_err(io_err)?;
    for p in parts {
        w.write_all(p).map_err(io_err)?;
    }
    Ok((HEADER_LEN + len) as u64)
}

/// Reads one message into `payload` (reused between calls); returns its
/// type.
pub fn read_message(r: &mut dyn Read, payload: &mut Vec<u8>) -> Result<MessageType, ProtocolError> {
    let mut header = [0u8; HEADER_LEN];
    r.read_exact(&mut header).map_err(io_err)?;
    let t = MessageType::from_u8(header[0])?;
    if header[1..4] != [0, 0, 0] {
        return Err(ProtocolError::Malformed {
            what: t.name(),
            reason: "reserved header bytes are not zero".into(),
        });
    }
    let len = u32::from_le_bytes([header[4], header[5], header[6], header[7]]) as usize;
    if len > MAX_PAYLOAD {
        return Err(ProtocolError::TooLarge(len as u64));
    }
    let want = u32::from_le_bytes([header[8], header[9], header[10], header[11]]);
    payload.resize(len, 0);
    r.read_exact(payload).map_err(io_err)?;
    if crc(header[0], &[payload]) != want {
        return Err(ProtocolError::Checksum {
            what: format!("{} message", t.name()),
        });
    }
    Ok(t)
}

/// A run of pages: its first guest-physical address and page count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageRange {
    /// First page's guest-physical address (page aligned).
    pub gpa: u64,
    /// Pages.
    pub pages: u32,
}

/// Encodes the ranges table of a `Pages` or `Zeros` message.
pub fn encode_ranges(ranges: &[PageRange]) -> Vec<u8> {
    let mut out = Vec::with_capacity(4 + ranges.len() * 12);
    out.extend_from_slice(&(ranges.len() as u32).to_le_bytes());
    for r in ranges {
        out.extend_from_slice(&r.gpa.to_le_bytes());
        out.extend_from_slice(&r.pages.to_le_bytes());
    }
    out
}

/// Decodes the ranges table at the start of a `Pages` or `Zeros` payload;
/// returns them and the bytes after the table.
pub fn decode_ranges<'a>(
    what: &'static str,
    payload: &'a [u8],
) -> Result<(Vec<PageRange>, &'a [u8]), ProtocolError> {
    let bad = |reason: String| ProtocolError::Malformed { what, reason };
    let count = payload
        .get(..4)
        .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
        .ok_or_else(|| bad("no range count".into()))?;
    if count > MAX_RANGES {
        return Err(bad(format!("{count} ranges")));
    }
    let table_end = 4 + count * 12;
    let table = payload
        .get(4..table_end)
        .ok_or_else(|| bad(format!("{count} ranges do not fit")))?;
    let mut ranges = Vec::with_capacity(count);
    for e in table.chunks_exact(12) {
        let mut g = [0u8; 8];
        g.copy_from_slice(&e[..8]);
        let gpa = u64::from_le_bytes(g);
        let pages = u32::from_le_bytes([e[8], e[9], e[10], e[11]]);
        if gpa % PAGE_SIZE as u64 != 0 {
            return Err(bad(format!("range at {gpa:#x} is not page aligned")));
        }
        ranges.push(PageRange { gpa, pages });
    }
    Ok((ranges, &payload[table_end..]))
}

/// Encodes a `Config` payload.
pub fn encode_config(config_json: &[u8], memory: &[(u64, u64)]) -> Vec<u8> {
    let mut out = Vec::with_capacity(8 + config_json.len() + memory.len() * 16);
    out.extend_from_slice(&(config_json.len() as u32).to_le_bytes());
    out.extend_from_slice(config_json);
    out.extend_from_slice(&(memory.len() as u32).to_le_bytes());
    for (base, len) in memory {
        out.extend_from_slice(&base.to_le_bytes());
        out.extend_from_slice(&len.to_le_bytes());
    }
    out
}

/// Guest-physical memory ranges: (base, length).
pub type MemoryRanges = Vec<(u64, u64)>;

/// Decodes a `Config` payload: the configuration's JSON and the ranges.
pub fn decode_config(payload: &[u8]) -> Result<(&[u8], MemoryRanges), ProtocolError> {
    let bad = |reason: &str| ProtocolError::Malformed {
        what: "Config",
        reason: reason.into(),
    };
    let u32_at = |at: usize| {
        payload
            .get(at..at + 4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
    };
    let json_len = u32_at(0).ok_or_else(|| bad("no length"))?;
    let json = payload
        .get(4..4 + json_len)
        .ok_or_else(|| bad("the configuration does not fit"))?;
    let at = 4 + json_len;
    let count = u32_at(at).ok_or_else(|| bad("no range count"))?;
    if count > MAX_RANGES || payload.len() != at + 4 + count * 16 {
        return Err(bad("the memory ranges do not fit"));
    }
    let ranges = payload[at + 4..]
        .chunks_exact(16)
        .map(|e| {
            let mut a = [0u8; 8];
            let mut b = [0u8; 8];
            a.copy_from_slice(&e[..8]);
            b.copy_from_slice(&e[8..]);
            (u64::from_le_bytes(a), u64::from_le_bytes(b))
        })
        .collect();
    Ok((json, ranges))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_round_trip() {
        let mut wire = Vec::new();
        write_preamble(&mut wire).unwrap();
        let ranges = encode_ranges(&[PageRange {
            gpa: 0x1000,
            pages: 2,
        }]);
        let pages = vec![7u8; 2 * PAGE_SIZE];
        write_message(&mut wire, MessageType::Pages, &[&ranges, &pages]).unwrap();
        write_message(&mut wire, MessageType::Ok, &[]).unwrap();
        let mut r = wire.as_slice();
        read_preamble(&mut r).unwrap();
        let mut buf = Vec::new();
        assert_eq!(read_message(&mut r, &mut buf).unwrap(), MessageType::Pages);
        let (got, rest) = decode_ranges("Pages", &buf).unwrap();
        assert_eq!(
            got,
            vec![PageRange {
                gpa: 0x1000,
                pages: 2
            }]
        );
        assert_eq!(rest, pages.as_slice());
        assert_eq!(read_message(&mut r, &mut buf).unwrap(), MessageType::Ok);
        assert!(matches!(
            read_message(&mut r, &mut buf),
            Err(ProtocolError::Closed)
        ));
    }

    #[test]
    fn every_flipped_byte_of_a_message_is_refused() {
        let mut wire = Vec::new();
        let cfg = encode_config(b"{}", &[(0, 1 << 20)]);
        write_message(&mut wire, MessageType::Config, &[&cfg]).unwrap();
        for i in 0..wire.len() {
            let mut w = wire.clone();
            w[i] ^= 0x04;
            let mut buf = Vec::new();
            let r = read_message(&mut w.as_slice(), &mut buf);
            assert!(r.is_err(), "flip at {i} accepted");
        }
    }

    #[test]
    fn another_version_and_another_protocol_are_named() {
        let mut p = preamble();
        p[8..12].copy_from_slice(&2u32.to_le_bytes());
        let crc = crc32fast::hash(&p[..12]);
        p[12..].copy_from_slice(&crc.to_le_bytes());
        let e = check_preamble(&p).unwrap_err();
        assert!(
            matches!(
                e,
                ProtocolError::Version {
                    found: 2,
                    expected: 1
                }
            ),
            "{e}"
        );
        let mut q = preamble();
        q[0] = b'X';
        assert!(matches!(check_preamble(&q), Err(ProtocolError::Magic)));
        let mut c = preamble();
        c[13] ^= 1;
        assert!(matches!(
            check_preamble(&c),
            Err(ProtocolError::Checksum { .. })
        ));
    }

    #[test]
    fn config_and_ranges_decode_and_bad_ones_are_refused() {
        let cfg = encode_config(b"{\"a\":1}", &[(0, 4096), (1 << 32, 8192)]);
        let (json, ranges) = decode_config(&cfg).unwrap();
        assert_eq!(json, b"{\"a\":1}");
        assert_eq!(ranges, vec![(0, 4096), (1 << 32, 8192)]);
        assert!(decode_config(&cfg[..cfg.len() - 1]).is_err());
        assert!(decode_ranges("Pages", &[1, 0, 0, 0, 0]).is_err());
        let unaligned = encode_ranges(&[PageRange { gpa: 12, pages: 1 }]);
        assert!(decode_ranges("Pages", &unaligned).is_err());
    }
}
