// Copyright 2026 The ft-cloud-hypervisor authors.
// SPDX-License-Identifier: Apache-2.0

//! The backup's end of a seed: accepts a primary, checks its offer, hands
//! memory and state items to the caller and writes the disk items to its
//! copies; checks the end.

use std::net::{SocketAddr, TcpListener};
use std::time::Duration;

use vm_migration::migration::protocol::PAGE_SIZE as MIGRATION_PAGE;

use super::disk::DiskCopies;
use super::{
    long_timeouts, SeedError, ITEM_HEADER, SEED_VERSION, TAG_DISK, TAG_DISKS_DONE, TAG_DISK_SIZE,
    TAG_END, TAG_MEMORY, TAG_OFFER, TAG_STATE, TAG_ZEROS, ZERO_ENTRY,
};
use crate::channel::{
    self, ChannelConfig, ChannelKey, ErrorCode, Established, HandshakeError, Hello, Message,
    Position, Role,
};

impl std::fmt::Debug for SeedReceiver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SeedReceiver")
            .field("bytes", &self.bytes)
            .finish_non_exhaustive()
    }
}

/// One item of a seed, as received.
#[derive(Debug)]
pub enum SeedItem {
    /// Guest memory at `gpa`.
    Memory {
        /// Guest-physical address.
        gpa: u64,
        /// The bytes.
        data: Vec<u8>,
    },
    /// Guest memory that is all zero now.
    Zeros {
        /// Guest-physical address.
        gpa: u64,
        /// Bytes.
        len: u64,
    },
    /// State section bytes (concatenate them).
    State(Vec<u8>),
    /// The seed is complete and checked.
    End,
}

/// The backup's end of a seed.
pub struct SeedReceiver {
    est: Established,
    hasher: xxhash_rust::xxh3::Xxh3,
    bytes: u64,
    /// The copies of separate disks (by index), when there are.
    disks: DiskCopies,
    /// The rest of a zeros item.
    zeros: std::collections::VecDeque<(u64, u64)>,
}

impl SeedReceiver {
    /// Listens on `listen` and accepts the first primary that passes the
    /// handshake (refused connections are logged and waited past; `stop`
    /// ends the wait).
    pub fn accept(
        listen: SocketAddr,
        key: &ChannelKey,
        channel: &ChannelConfig,
        stop: &dyn Fn() -> bool,
    ) -> Result<Self, SeedError> {
        let err = |source| SeedError::Listen {
            addr: listen,
            source,
        };
        let listener = TcpListener::bind(listen).map_err(err)?;
        listener.set_nonblocking(true).map_err(err)?;
        let hello = Hello::new(Role::Backup, 0, Vec::new(), 0);
        let mut est = loop {
            match channel::accept_established(&listener, key, &hello, channel) {
                Ok(est) => break est,
                Err(HandshakeError::Accept(e)) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    if stop() {
                        return Err(SeedError::Stopped);
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err(e) => {
                    log::warn!(
                        "fault tolerance: refused a connection: {}",
                        crate::error_chain(&e)
                    );
                }
            }
        };
        long_timeouts(&mut est)?;
        Ok(SeedReceiver {
            est,
            hasher: xxhash_rust::xxh3::Xxh3::new(),
            bytes: 0,
            disks: DiskCopies::default(),
            zeros: std::collections::VecDeque::new(),
        })
    }

    /// The primary's hello (its generation and address).
    pub fn peer(&self) -> (&Hello, SocketAddr) {
        (&self.est.peer, self.est.peer_addr)
    }

    fn recv_payload(&mut self) -> Result<Vec<u8>, SeedError> {
        match self.est.reader.recv().map_err(SeedError::Record)?.0 {
            Message::LogFrames(p) if !p.is_empty() => Ok(p),
            Message::Error { text, .. } => Err(SeedError::Refused(text)),
            other => Err(SeedError::Malformed(format!(
                "a {} message instead of a seed item",
                other.kind()
            ))),
        }
    }

    /// The offer: the primary's configuration digest and configuration.
    pub fn offer(&mut self) -> Result<(u64, Vec<u8>), SeedError> {
        let p = self.recv_payload()?;
        self.hasher.update(&p);
        self.bytes += p.len() as u64;
        if p[0] != TAG_OFFER || p.len() < 13 {
            return Err(SeedError::Malformed(
                "the first item is not an offer".into(),
            ));
        }
        let version = u32::from_le_bytes([p[1], p[2], p[3], p[4]]);
        if version != SEED_VERSION {
            let text = format!("seed version {version}; this VMM reads version {SEED_VERSION}");
            self.refuse(&text);
            return Err(SeedError::Malformed(text));
        }
        let digest = u64::from_le_bytes(p[5..13].try_into().unwrap_or_default());
        Ok((digest, p[13..].to_vec()))
    }

    /// Accepts the offer; separate disks will be written to `disks`.
    /// Each is emptied now, then written from the seed.
    pub fn accept_offer(&mut self, disks: Vec<std::path::PathBuf>) -> Result<(), SeedError> {
        self.disks = DiskCopies::open(disks)?;
        self.ack()
    }

    fn ack(&mut self) -> Result<(), SeedError> {
        self.est
            .writer
            .send(&Message::Ack {
                position: Position::default(),
                log_bytes: 0,
                applied: Position::default(),
            })
            .map_err(SeedError::Record)?;
        Ok(())
    }

    /// Refuses the seed, telling the primary why.
    pub fn refuse(&mut self, why: &str) {
        let _ = self.est.writer.send(&Message::Error {
            code: ErrorCode::ConfigDiffers,
            text: why.to_string(),
        });
        let _ = self.est.stream.shutdown(std::net::Shutdown::Both);
    }

    /// The next memory or state item; disk items are written to their
    /// image here. [`SeedItem::End`] once the end arrived and checked.
    pub fn next_item(&mut self) -> Result<SeedItem, SeedError> {
        if let Some((gpa, len)) = self.zeros.pop_front() {
            return Ok(SeedItem::Zeros { gpa, len });
        }
        loop {
            let p = self.recv_payload()?;
            if p[0] == TAG_END {
                self.check_end(&p)?;
                return Ok(SeedItem::End);
            }
            self.hasher.update(&p);
            self.bytes += p.len() as u64;
            match p[0] {
                TAG_MEMORY if p.len() > ITEM_HEADER => {
                    let gpa = u64::from_le_bytes(p[1..9].try_into().unwrap_or_default());
                    return Ok(SeedItem::Memory {
                        gpa,
                        data: p[ITEM_HEADER..].to_vec(),
                    });
                }
                TAG_STATE => return Ok(SeedItem::State(p[1..].to_vec())),
                TAG_ZEROS if p.len() > 1 && (p.len() - 1) % ZERO_ENTRY == 0 => {
                    for e in p[1..].chunks_exact(ZERO_ENTRY) {
                        let gpa = u64::from_le_bytes(e[..8].try_into().unwrap_or_default());
                        let pages = u32::from_le_bytes(e[8..].try_into().unwrap_or_default());
                        self.zeros
                            .push_back((gpa, u64::from(pages) * MIGRATION_PAGE as u64));
                    }
                    if let Some((gpa, len)) = self.zeros.pop_front() {
                        return Ok(SeedItem::Zeros { gpa, len });
                    }
                }
                TAG_DISK if p.len() > ITEM_HEADER => {
                    let index = u32::from_le_bytes([p[1], p[2], p[3], p[4]]);
                    let offset = u64::from_le_bytes(p[5..13].try_into().unwrap_or_default());
                    self.disks.write(index, offset, &p[ITEM_HEADER..])?;
                }
                TAG_DISK_SIZE if p.len() == 13 => {
                    let index = u32::from_le_bytes([p[1], p[2], p[3], p[4]]);
                    let size = u64::from_le_bytes(p[5..13].try_into().unwrap_or_default());
                    self.disks.size(index, size)?;
                }
                TAG_DISKS_DONE if p.len() == 1 => self.disks.done()?,
                tag => return Err(SeedError::Malformed(format!("unknown seed item {tag}"))),
            }
        }
    }

    fn check_end(&mut self, p: &[u8]) -> Result<(), SeedError> {
        let u64_at = |o: usize| {
            p.get(o..o + 8)
                .map(|b| u64::from_le_bytes(b.try_into().unwrap_or_default()))
        };
        let (Some(bytes), Some(digest)) = (u64_at(1), u64_at(9)) else {
            return Err(SeedError::Malformed("a short end item".into()));
        };
        if bytes != self.bytes || digest != self.hasher.digest() {
            let why = format!(
                "{} bytes with digest {:016x} arrived; the primary sent {bytes} with digest {digest:016x}",
                self.bytes,
                self.hasher.digest()
            );
            self.refuse(&why);
            return Err(SeedError::Damaged(why));
        }
        let n = p
            .get(17..21)
            .map_or(0, |b| u32::from_le_bytes(b.try_into().unwrap_or_default()))
            as usize;
        let digests: Option<Vec<u64>> = (0..n).map(|i| u64_at(21 + 8 * i)).collect();
        let Some(digests) = digests else {
            return Err(SeedError::Malformed("a short end item".into()));
        };
        if let Some(why) = self.disks.check(&digests)? {
            self.refuse(&why);
            return Err(SeedError::Damaged(why));
        }
        Ok(())
    }

    /// Acknowledges the complete seed and returns the connection, for the
    /// channel.
    pub fn finish(mut self) -> Result<Established, SeedError> {
        self.ack()?;
        Ok(self.est)
    }
}
