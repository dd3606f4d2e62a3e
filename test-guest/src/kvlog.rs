//! The key-value service's on-disk log format (`workload=kv`).
//!
//! - Sector 0 holds the superblock: magic `FTKVLOG\0`, format version,
//!   slot size, first log sector, CRC-32 of the preceding bytes.
//! - From [`LOG_START_SECTOR`] on, the log is an array of 1 KiB slots, each
//!   holding one record: magic `KVR1`, format version, key and value
//!   lengths, sequence number, CRC-32 (over the header without the CRC, the
//!   key and the value), key, value, zero padding.
//! - The log ends at the first slot without the record magic (a formatted
//!   disk has zeroes there). A slot with the magic whose version, lengths
//!   or CRC are wrong is a corrupt record: reported and skipped.
//!
//! A record for a key replaces earlier ones (the latest sequence number
//! wins). There is no compaction: the log is full when the disk is.

use thiserror::Error;

use crate::kvproto::{MAX_KEY, MAX_VALUE};

/// Bytes per sector.
pub const SECTOR: usize = 512;
/// Bytes per log slot (one record).
pub const SLOT: usize = 1024;
/// Sectors per slot.
pub const SECTORS_PER_SLOT: u64 = (SLOT / SECTOR) as u64;
/// First sector of the log.
pub const LOG_START_SECTOR: u64 = 8;
/// Format version written and accepted.
pub const VERSION: u32 = 1;

const SUPER_MAGIC: &[u8; 8] = b"FTKVLOG\0";
const RECORD_MAGIC: &[u8; 4] = b"KVR1";
/// Record header: magic, version (u16), key length (u16), value length
/// (u16), reserved (u16), sequence (u64), CRC-32 (u32).
const RECORD_HEADER: usize = 24;
const CRC_AT: usize = 20;

// Every record must fit its slot.
const _: () = assert!(RECORD_HEADER + MAX_KEY + MAX_VALUE <= SLOT);

/// What sector 0 holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Superblock {
    /// A superblock of this format.
    Valid,
    /// All zeroes: a new disk.
    Empty,
    /// Something else (another format, or damage).
    Foreign,
    /// Our magic, but a version this guest does not know.
    UnknownVersion(u32),
}

/// Fills `sector` (512 bytes) with a superblock.
pub fn write_superblock(sector: &mut [u8; SECTOR]) {
    sector.fill(0);
    sector[..8].copy_from_slice(SUPER_MAGIC);
    sector[8..12].copy_from_slice(&VERSION.to_le_bytes());
    sector[12..16].copy_from_slice(&(SLOT as u32).to_le_bytes());
    sector[16..24].copy_from_slice(&LOG_START_SECTOR.to_le_bytes());
    let crc = crc32fast::hash(&sector[..24]);
    sector[24..28].copy_from_slice(&crc.to_le_bytes());
}

/// Classifies sector 0.
pub fn read_superblock(sector: &[u8; SECTOR]) -> Superblock {
    if sector.iter().all(|&b| b == 0) {
        return Superblock::Empty;
    }
    if &sector[..8] != SUPER_MAGIC || crc32fast::hash(&sector[..24]) != le32(&sector[24..28]) {
        return Superblock::Foreign;
    }
    let version = le32(&sector[8..12]);
    if version != VERSION
        || le32(&sector[12..16]) as usize != SLOT
        || le64(&sector[16..24]) != LOG_START_SECTOR
    {
        return Superblock::UnknownVersion(version);
    }
    Superblock::Valid
}

/// A record that cannot be written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum EncodeError {
    /// Key or value longer than the protocol allows.
    #[error("key or value too long for a record")]
    TooLong,
}

/// Encodes a record into `slot`.
pub fn encode(
    slot: &mut [u8; SLOT],
    seq: u64,
    key: &[u8],
    value: &[u8],
) -> Result<(), EncodeError> {
    if key.len() > MAX_KEY || value.len() > MAX_VALUE {
        return Err(EncodeError::TooLong);
    }
    slot.fill(0);
    slot[..4].copy_from_slice(RECORD_MAGIC);
    slot[4..6].copy_from_slice(&(VERSION as u16).to_le_bytes());
    slot[6..8].copy_from_slice(&(key.len() as u16).to_le_bytes());
    slot[8..10].copy_from_slice(&(value.len() as u16).to_le_bytes());
    slot[12..20].copy_from_slice(&seq.to_le_bytes());
    let body_end = RECORD_HEADER + key.len() + value.len();
    slot[RECORD_HEADER..RECORD_HEADER + key.len()].copy_from_slice(key);
    slot[RECORD_HEADER + key.len()..body_end].copy_from_slice(value);
    let crc = record_crc(slot, body_end);
    slot[CRC_AT..CRC_AT + 4].copy_from_slice(&crc.to_le_bytes());
    Ok(())
}

/// What a slot holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Slot<'a> {
    /// No record magic: the end of the log.
    End,
    /// A valid record.
    Record {
        /// Sequence number.
        seq: u64,
        /// The key.
        key: &'a [u8],
        /// The value.
        value: &'a [u8],
    },
    /// A record that fails its checks.
    Corrupt(Corruption),
}

/// Why a record is corrupt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum Corruption {
    /// Unknown record version.
    #[error("unknown record version {0}")]
    Version(u16),
    /// Key or value length out of range.
    #[error("bad lengths (key {0}, value {1})")]
    Lengths(usize, usize),
    /// CRC mismatch.
    #[error("checksum mismatch (stored {stored:#010x}, computed {computed:#010x})")]
    Checksum {
        /// CRC in the record.
        stored: u32,
        /// CRC of its contents.
        computed: u32,
    },
}

/// Decodes a slot.
pub fn decode(slot: &[u8; SLOT]) -> Slot<'_> {
    if &slot[..4] != RECORD_MAGIC {
        return Slot::End;
    }
    let version = u16::from_le_bytes([slot[4], slot[5]]);
    if u32::from(version) != VERSION {
        return Slot::Corrupt(Corruption::Version(version));
    }
    let key_len = usize::from(u16::from_le_bytes([slot[6], slot[7]]));
    let value_len = usize::from(u16::from_le_bytes([slot[8], slot[9]]));
    if key_len == 0 || key_len > MAX_KEY || value_len == 0 || value_len > MAX_VALUE {
        return Slot::Corrupt(Corruption::Lengths(key_len, value_len));
    }
    let body_end = RECORD_HEADER + key_len + value_len;
    let stored = le32(&slot[CRC_AT..CRC_AT + 4]);
    let computed = record_crc(slot, body_end);
    if stored != computed {
        return Slot::Corrupt(Corruption::Checksum { stored, computed });
    }
    Slot::Record {
        seq: le64(&slot[12..20]),
        key: &slot[RECORD_HEADER..RECORD_HEADER + key_len],
        value: &slot[RECORD_HEADER + key_len..body_end],
    }
}

/// The first sector of log slot `index`.
pub fn slot_sector(index: u64) -> u64 {
    LOG_START_SECTOR + index * SECTORS_PER_SLOT
}

/// How many slots a disk of `sectors` sectors holds.
pub fn slot_count(sectors: u64) -> u64 {
    sectors.saturating_sub(LOG_START_SECTOR) / SECTORS_PER_SLOT
}

fn record_crc(slot: &[u8; SLOT], body_end: usize) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&slot[..CRC_AT]);
    hasher.update(&slot[RECORD_HEADER..body_end]);
    hasher.finalize()
}

fn le32(bytes: &[u8]) -> u32 {
    let mut b = [0u8; 4];
    b.copy_from_slice(&bytes[..4]);
    u32::from_le_bytes(b)
}

fn le64(bytes: &[u8]) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&bytes[..8]);
    u64::from_le_bytes(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn superblock_round_trip() {
        let mut sector = [0u8; SECTOR];
        assert_eq!(read_superblock(&sector), Superblock::Empty);
        write_superblock(&mut sector);
        assert_eq!(read_superblock(&sector), Superblock::Valid);
        sector[3] ^= 1;
        assert_eq!(read_superblock(&sector), Superblock::Foreign);
        let mut other = [0u8; SECTOR];
        other[100] = 7;
        assert_eq!(read_superblock(&other), Superblock::Foreign);
    }

    #[test]
    fn record_round_trip() {
        let mut slot = [0u8; SLOT];
        assert_eq!(decode(&slot), Slot::End);
        encode(&mut slot, 42, b"foo", b"bar").unwrap();
        assert_eq!(
            decode(&slot),
            Slot::Record {
                seq: 42,
                key: b"foo",
                value: b"bar"
            }
        );
        let key = [b'k'; MAX_KEY];
        let value = [b'v'; MAX_VALUE];
        encode(&mut slot, 1, &key, &value).unwrap();
        assert!(matches!(decode(&slot), Slot::Record { seq: 1, .. }));
        assert_eq!(
            encode(&mut slot, 1, &[b'k'; MAX_KEY + 1], b"v"),
            Err(EncodeError::TooLong)
        );
    }

    #[test]
    fn corruption_is_detected() {
        let mut slot = [0u8; SLOT];
        encode(&mut slot, 7, b"key", b"value").unwrap();
        slot[RECORD_HEADER + 4] ^= 0x20;
        assert!(matches!(
            decode(&slot),
            Slot::Corrupt(Corruption::Checksum { .. })
        ));
        encode(&mut slot, 7, b"key", b"value").unwrap();
        slot[6] = 0;
        assert_eq!(decode(&slot), Slot::Corrupt(Corruption::Lengths(0, 5)));
        encode(&mut slot, 7, b"key", b"value").unwrap();
        slot[4] = 9;
        assert_eq!(decode(&slot), Slot::Corrupt(Corruption::Version(9)));
        encode(&mut slot, 7, b"key", b"value").unwrap();
        slot[13] ^= 1; // the sequence number is covered too
        assert!(matches!(
            decode(&slot),
            Slot::Corrupt(Corruption::Checksum { .. })
        ));
    }

    #[test]
    fn geometry() {
        assert_eq!(slot_sector(0), 8);
        assert_eq!(slot_sector(3), 14);
        assert_eq!(slot_count(8), 0);
        assert_eq!(slot_count(7), 0);
        assert_eq!(slot_count(8 + 2 * 100 + 1), 100);
    }
}
