// Copyright 2026 The ft-cloud-hypervisor authors.
// SPDX-License-Identifier: Apache-2.0

//! The primary's end of a seed: the offer, then the items the pre-copy
//! rounds write (memory, zeros, disks), the state and the end.

use std::net::SocketAddr;

use vm_migration::migration::protocol::{PageRange, PAGE_SIZE as MIGRATION_PAGE};
use vm_migration::migration::{DiskWriter, MigrationError, PageWriter};

use super::{
    long_timeouts, recv_verdict, SeedError, ITEM_HEADER, PAGE, SEED_VERSION, TAG_DISK,
    TAG_DISKS_DONE, TAG_DISK_SIZE, TAG_END, TAG_MEMORY, TAG_OFFER, TAG_STATE, TAG_ZEROS,
    ZERO_ENTRY,
};
use crate::channel::{
    self, ChannelConfig, ChannelKey, Established, Hello, Message, Role, MAX_FRAMES_CHUNK,
};

/// The primary's end of a seed.
pub struct SeedSender {
    est: Established,
    hasher: xxhash_rust::xxh3::Xxh3,
    bytes: u64,
}

impl std::fmt::Debug for SeedSender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SeedSender")
            .field("bytes", &self.bytes)
            .finish_non_exhaustive()
    }
}

impl SeedSender {
    /// Connects to the backup waiting at `peer` and runs the handshake.
    pub fn connect(
        peer: SocketAddr,
        key: &ChannelKey,
        config_digest: u64,
        generation: u64,
        channel: &ChannelConfig,
    ) -> Result<Self, SeedError> {
        let hello = Hello::new(Role::Primary, config_digest, Vec::new(), generation);
        let mut est = channel::connect_established(peer, key, &hello, channel)
            .map_err(SeedError::Handshake)?;
        if est.peer.config_digest != 0 {
            return Err(SeedError::Refused(
                "the peer is a backup of its own VM, not one waiting for a seed".into(),
            ));
        }
        long_timeouts(&mut est)?;
        Ok(SeedSender {
            est,
            hasher: xxhash_rust::xxh3::Xxh3::new(),
            bytes: 0,
        })
    }

    fn send(&mut self, payload: Vec<u8>) -> Result<(), SeedError> {
        self.hasher.update(&payload);
        self.bytes += payload.len() as u64;
        self.est
            .writer
            .send(&Message::LogFrames(payload))
            .map_err(SeedError::Record)?;
        Ok(())
    }

    /// Payload bytes sent so far.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Offers the VM `config` (JSON) with its digest; returns once the
    /// backup accepted it.
    pub fn offer(&mut self, config_digest: u64, config: &[u8]) -> Result<(), SeedError> {
        let mut p = vec![TAG_OFFER];
        p.extend_from_slice(&SEED_VERSION.to_le_bytes());
        p.extend_from_slice(&config_digest.to_le_bytes());
        p.extend_from_slice(config);
        self.send(p)?;
        recv_verdict(&mut self.est)
    }

    /// Tells the backup that no disk item follows: it starts checking its
    /// copies while the rest of the seed comes.
    pub fn disks_done(&mut self) -> Result<(), SeedError> {
        self.send(vec![TAG_DISKS_DONE])
    }

    /// Sends the state sections.
    pub fn send_state(&mut self, state: &[u8]) -> Result<(), SeedError> {
        let mut p = vec![TAG_STATE];
        for chunk in state.chunks(MAX_FRAMES_CHUNK - 1) {
            p.truncate(1);
            p.extend_from_slice(chunk);
            self.send(p.clone())?;
        }
        Ok(())
    }

    /// Ends the seed, with the digest of each separate disk's image as
    /// sent (`vm_migration`'s `Rounds::disk_digests`, after the last
    /// disk blocks: [`super::disk::image_digest`]'s number for the blocks
    /// as last read), and waits for the backup's receipt. Returns the connection, for
    /// the channel.
    pub fn finish(mut self, disks: &[u64]) -> Result<Established, SeedError> {
        let mut p = vec![TAG_END];
        p.extend_from_slice(&self.bytes.to_le_bytes());
        p.extend_from_slice(&self.hasher.digest().to_le_bytes());
        p.extend_from_slice(&u32::try_from(disks.len()).unwrap_or(u32::MAX).to_le_bytes());
        for d in disks {
            p.extend_from_slice(&d.to_le_bytes());
        }
        self.est
            .writer
            .send(&Message::LogFrames(p))
            .map_err(SeedError::Record)?;
        recv_verdict(&mut self.est)?;
        Ok(self.est)
    }
}

impl PageWriter for SeedSender {
    fn pages(&mut self, ranges: &[PageRange], data: &[u8]) -> Result<u64, MigrationError> {
        let before = self.bytes;
        let max = (MAX_FRAMES_CHUNK - ITEM_HEADER) / PAGE * PAGE;
        let mut at = 0usize;
        for r in ranges {
            let len = r.pages as usize * MIGRATION_PAGE;
            let run = data.get(at..at + len).ok_or_else(|| {
                MigrationError::Vmm("pages without their bytes", "short page data".into())
            })?;
            at += len;
            for (i, chunk) in run.chunks(max).enumerate() {
                let mut p = Vec::with_capacity(ITEM_HEADER + chunk.len());
                p.push(TAG_MEMORY);
                p.extend_from_slice(&(r.gpa + (i * max) as u64).to_le_bytes());
                p.extend_from_slice(&[0; 4]);
                p.extend_from_slice(chunk);
                self.send(p).map_err(wire_error)?;
            }
        }
        Ok(self.bytes - before)
    }

    fn zeros(&mut self, ranges: &[PageRange]) -> Result<u64, MigrationError> {
        let before = self.bytes;
        for group in ranges.chunks((MAX_FRAMES_CHUNK - 1) / ZERO_ENTRY) {
            let mut p = Vec::with_capacity(1 + group.len() * ZERO_ENTRY);
            p.push(TAG_ZEROS);
            for r in group {
                p.extend_from_slice(&r.gpa.to_le_bytes());
                p.extend_from_slice(&r.pages.to_le_bytes());
            }
            self.send(p).map_err(wire_error)?;
        }
        Ok(self.bytes - before)
    }

    fn flush(&mut self) -> Result<(), MigrationError> {
        // Each item is written as it is sent.
        Ok(())
    }
}

impl DiskWriter for SeedSender {
    fn disk_size(&mut self, disk: u32, size: u64) -> Result<u64, MigrationError> {
        let mut p = vec![TAG_DISK_SIZE];
        p.extend_from_slice(&disk.to_le_bytes());
        p.extend_from_slice(&size.to_le_bytes());
        let n = p.len() as u64;
        self.send(p).map_err(wire_error)?;
        Ok(n)
    }

    fn disk_data(&mut self, disk: u32, offset: u64, data: &[u8]) -> Result<u64, MigrationError> {
        let before = self.bytes;
        let max = MAX_FRAMES_CHUNK - ITEM_HEADER;
        for (i, chunk) in data.chunks(max).enumerate() {
            let mut p = Vec::with_capacity(ITEM_HEADER + chunk.len());
            p.push(TAG_DISK);
            p.extend_from_slice(&disk.to_le_bytes());
            p.extend_from_slice(&(offset + (i * max) as u64).to_le_bytes());
            p.extend_from_slice(chunk);
            self.send(p).map_err(wire_error)?;
        }
        Ok(self.bytes - before)
    }
}

fn wire_error(e: SeedError) -> MigrationError {
    MigrationError::Vmm("the seed's connection failed", Box::new(e))
}
