//! The key-value table and its log on the virtio disk (format: the
//! library's `kvlog`). Records are appended in groups: one write request
//! for a group of consecutive slots, then one flush; only then are the
//! new values visible to GETs and acknowledged.

use alloc::collections::BTreeMap;
use alloc::vec;
use alloc::vec::Vec;

use test_guest::kvlog::{self, Slot, Superblock, SECTOR, SLOT};
use thiserror::Error;

use crate::println;
use crate::virtio::blk::{Blk, BlkError};

/// Slots read per request while replaying the log.
const SCAN_SLOTS: usize = 64;
/// Most records written in one group (one write request).
pub const MAX_GROUP: usize = 64;
/// Most memory the table may use (keys, values and a per-entry overhead),
/// well within the 16 MiB heap: a SET that would pass it is refused.
const MAX_TABLE_BYTES: usize = 8 << 20;
/// Bookkeeping bytes counted per table entry.
const ENTRY_OVERHEAD: usize = 64;

/// The store cannot be opened or cannot take a write.
#[derive(Debug, Error)]
pub enum StoreError {
    /// Disk I/O failed.
    #[error("disk")]
    Disk(#[source] BlkError),
    /// The disk is too small for a superblock and one slot.
    #[error("the disk ({0} sectors) is too small for the log")]
    TooSmall(u64),
    /// The log is full.
    #[error("the log is full ({0} records)")]
    Full(u64),
    /// The disk is read-only.
    #[error("the disk is read-only")]
    ReadOnly,
    /// A read-only disk without a valid log.
    #[error("the read-only disk holds no log (cannot format it)")]
    ReadOnlyUnformatted,
    /// A log of an unknown format version.
    #[error("the disk holds a log of unknown format version {0}")]
    UnknownVersion(u32),
}

/// The table and the log's write position.
#[derive(Debug)]
pub struct Store {
    blk: Blk,
    table: BTreeMap<Vec<u8>, Vec<u8>>,
    next_slot: u64,
    slots: u64,
    next_seq: u64,
    /// Memory the table uses, as counted against [`MAX_TABLE_BYTES`].
    bytes: usize,
}

/// What opening the store found.
#[derive(Debug, Clone, Copy, Default)]
pub struct OpenReport {
    /// Whether the disk was formatted now.
    pub formatted: bool,
    /// Valid records replayed.
    pub records: u64,
    /// Corrupt records skipped.
    pub corrupt: u64,
}

impl Store {
    /// Opens the log on `blk`: formats an empty or foreign disk, replays
    /// the records of a formatted one (corrupt records are reported on
    /// the serial port and skipped).
    pub fn open(mut blk: Blk) -> Result<(Store, OpenReport), StoreError> {
        let slots = kvlog::slot_count(blk.capacity());
        if slots == 0 {
            return Err(StoreError::TooSmall(blk.capacity()));
        }
        let mut report = OpenReport::default();
        let mut sector = [0u8; SECTOR];
        blk.read(0, &mut sector).map_err(StoreError::Disk)?;
        match kvlog::read_superblock(&sector) {
            Superblock::Valid => {}
            Superblock::UnknownVersion(v) => return Err(StoreError::UnknownVersion(v)),
            Superblock::Empty | Superblock::Foreign => {
                if blk.read_only() {
                    return Err(StoreError::ReadOnlyUnformatted);
                }
                format(&mut blk)?;
                report.formatted = true;
            }
        }
        let mut store = Store {
            blk,
            table: BTreeMap::new(),
            next_slot: 0,
            slots,
            next_seq: 1,
            bytes: 0,
        };
        if !report.formatted {
            store.replay(&mut report)?;
        }
        Ok((store, report))
    }

    /// Reads the log from the start until its end, building the table.
    fn replay(&mut self, report: &mut OpenReport) -> Result<(), StoreError> {
        let mut buffer = vec![0u8; SCAN_SLOTS * SLOT];
        let mut slot = 0u64;
        'scan: while slot < self.slots {
            let count = (self.slots - slot).min(SCAN_SLOTS as u64) as usize;
            let bytes = &mut buffer[..count * SLOT];
            self.blk
                .read(kvlog::slot_sector(slot), bytes)
                .map_err(StoreError::Disk)?;
            for chunk in bytes.chunks_exact(SLOT) {
                let Ok(record) = <&[u8; SLOT]>::try_from(chunk) else {
                    break 'scan;
                };
                match kvlog::decode(record) {
                    Slot::End => break 'scan,
                    Slot::Record { seq, key, value } => {
                        self.insert(key, value);
                        self.next_seq = self.next_seq.max(seq.saturating_add(1));
                        report.records += 1;
                    }
                    Slot::Corrupt(why) => {
                        println!("kv: corrupt record in slot {slot} skipped: {why}");
                        report.corrupt += 1;
                    }
                }
                slot += 1;
            }
        }
        self.next_slot = slot;
        Ok(())
    }

    /// Whether a SET of `key` to `value` fits the table's memory limit,
    /// counting the `reserved` bytes of SETs admitted but not yet
    /// committed; if it fits, its bytes are added to `reserved`.
    pub fn admit(&self, key: &[u8], value: &[u8], reserved: &mut usize) -> bool {
        let growth = match self.table.get(key) {
            Some(old) => value.len().saturating_sub(old.len()),
            None => key.len() + value.len() + ENTRY_OVERHEAD,
        };
        if self.bytes + *reserved + growth > MAX_TABLE_BYTES {
            return false;
        }
        *reserved += growth;
        true
    }

    /// Sets `key` to `value` in the table, keeping the byte count.
    fn insert(&mut self, key: &[u8], value: &[u8]) {
        match self.table.get_mut(key) {
            Some(old) => {
                self.bytes = self.bytes - old.len() + value.len();
                *old = value.to_vec();
            }
            None => {
                self.bytes += key.len() + value.len() + ENTRY_OVERHEAD;
                self.table.insert(key.to_vec(), value.to_vec());
            }
        }
    }

    /// The value of `key`.
    pub fn get(&self, key: &[u8]) -> Option<&[u8]> {
        self.table.get(key).map(Vec::as_slice)
    }

    /// Number of keys.
    pub fn len(&self) -> usize {
        self.table.len()
    }

    /// Appends `records` (at most [`MAX_GROUP`]) to the log, flushes, and
    /// only then applies them to the table. On error nothing is applied.
    pub fn commit(&mut self, records: &[(Vec<u8>, Vec<u8>)]) -> Result<(), StoreError> {
        if records.is_empty() {
            return Ok(());
        }
        if self.blk.read_only() {
            return Err(StoreError::ReadOnly);
        }
        let count = records.len() as u64;
        // The replay stops at the first slot without a record, or at the
        // disk's end: the group must fit before it.
        if self.next_slot + count > self.slots {
            return Err(StoreError::Full(self.next_slot));
        }
        let mut buffer = vec![0u8; records.len() * SLOT];
        for ((key, value), (chunk, seq)) in records
            .iter()
            .zip(buffer.chunks_exact_mut(SLOT).zip(self.next_seq..))
        {
            if let Ok(slot) = <&mut [u8; SLOT]>::try_from(chunk) {
                // Keys and values were checked by the protocol parser.
                let _ = kvlog::encode(slot, seq, key, value);
            }
        }
        self.blk
            .write(kvlog::slot_sector(self.next_slot), &buffer)
            .map_err(StoreError::Disk)?;
        self.blk.flush().map_err(StoreError::Disk)?;
        self.next_slot += count;
        self.next_seq += count;
        for (key, value) in records {
            self.insert(key, value);
        }
        Ok(())
    }
}

/// Writes a superblock and zeroes the first log slots, then flushes.
fn format(blk: &mut Blk) -> Result<(), StoreError> {
    let zeroes = vec![0u8; SCAN_SLOTS * SLOT];
    let slots = kvlog::slot_count(blk.capacity()).min(SCAN_SLOTS as u64) as usize;
    blk.write(kvlog::slot_sector(0), &zeroes[..slots * SLOT])
        .map_err(StoreError::Disk)?;
    blk.flush().map_err(StoreError::Disk)?;
    let mut sector = [0u8; SECTOR];
    kvlog::write_superblock(&mut sector);
    blk.write(0, &sector).map_err(StoreError::Disk)?;
    blk.flush().map_err(StoreError::Disk)?;
    Ok(())
}
