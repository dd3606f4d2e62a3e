// Copyright 2026 The ft-cloud-hypervisor authors.
// SPDX-License-Identifier: Apache-2.0

//! FT VMotion's seed: a running primary copies its VM to a backup that
//! waits with no VM, over the logging channel's connection, before the
//! log stream starts on it.
//!
//! ```text
//! handshake as the boot-time pair (preamble, Noise, hellos); the waiting
//! backup's hello has configuration digest 0: it checks the seed's itself
//! records, each a `LogFrames` message whose payload is one seed item:
//!   -> offer   tag 1, version u32, the primary's configuration digest u64,
//!              bytes (the VM configuration, JSON)
//!   <- ack (accepted) or error (refused, with the reason)
//!   -> memory  tag 2, gpa u64, 4 zero bytes, bytes (a run of pages)
//!   -> zeros   tag 6, n x (gpa u64, pages u32) (runs of pages that are
//!              all zero now)
//!   -> disk    tag 3, disk index u32, offset u64, bytes (separate disks)
//!   -> state   tag 4, bytes (the snapshot state sections)
//!   -> end     tag 5, payload bytes u64, xxh3 of every payload u64,
//!              n u32, n x (disk image digest u64)
//!   <- ack (received whole) or error
//! then the channel starts on the same connection and the log stream
//! (header, setup, entries from the switch point) follows.
//! ```
//!
//! The records are authenticated and encrypted as the channel's; the end's
//! digest and the disk digests check that the backup holds what the
//! primary sent and that each disk copy is the image.
//!
//! Memory goes by pre-copy: the primary's [`SeedSender`] is the
//! [`PageWriter`] of `vm_migration`'s rounds (the live migration's), so
//! memory and zeros items come in rounds: every non-zero page while the
//! guest runs (the backup's memory starts zeroed), then the pages written
//! since each previous round, the last ones in the pause. The backup
//! applies the items in the order they come: a later copy of a page
//! overwrites an earlier one.

use std::io::{Read, Seek, SeekFrom, Write};
use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::time::Duration;

use vm_migration::migration::protocol::{PageRange, PAGE_SIZE as MIGRATION_PAGE};
use vm_migration::migration::{MigrationError, PageWriter};

use crate::channel::{
    self, ChannelConfig, ChannelKey, ErrorCode, Established, HandshakeError, Hello, Message,
    Position, RecordError, Role, MAX_FRAMES_CHUNK,
};

/// The seed format's version (2: memory in pre-copy rounds, with zeros
/// items).
pub const SEED_VERSION: u32 = 2;

const TAG_OFFER: u8 = 1;
const TAG_MEMORY: u8 = 2;
const TAG_DISK: u8 = 3;
const TAG_STATE: u8 = 4;
const TAG_END: u8 = 5;
const TAG_ZEROS: u8 = 6;

/// Page size.
const PAGE: usize = 4096;
/// Bytes of a zeros item's entry (gpa, pages).
const ZERO_ENTRY: usize = 12;
/// How long either side waits for the other during the seed.
const SEED_TIMEOUT: Duration = Duration::from_secs(120);
/// Bytes of a memory or disk item's header (tag, address or index and offset).
const ITEM_HEADER: usize = 13;

/// Errors seeding a backup.
#[derive(Debug, thiserror::Error)]
pub enum SeedError {
    /// The handshake failed.
    #[error("cannot open the logging channel")]
    Handshake(#[source] HandshakeError),
    /// Listening failed.
    #[error("cannot listen for the primary on {addr}")]
    Listen {
        /// The address.
        addr: SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A record could not be sent or received.
    #[error("the seed's connection failed")]
    Record(#[source] RecordError),
    /// The peer refused the seed.
    #[error("the backup refused the seed: {0}")]
    Refused(String),
    /// The peer sent something that is not a seed item.
    #[error("not a seed: {0}")]
    Malformed(String),
    /// The seed's end does not match what arrived.
    #[error("the seed arrived damaged: {0}")]
    Damaged(String),
    /// A disk image could not be read or written.
    #[error("cannot copy disk image {path}")]
    Disk {
        /// The image.
        path: std::path::PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Stopped while waiting.
    #[error("stopped while waiting for a primary")]
    Stopped,
}

/// The primary's end of a seed.
pub struct SeedSender {
    est: Established,
    hasher: xxhash_rust::xxh3::Xxh3,
    bytes: u64,
    disks: Vec<u64>,
}

impl std::fmt::Debug for SeedSender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SeedSender")
            .field("bytes", &self.bytes)
            .finish_non_exhaustive()
    }
}

impl std::fmt::Debug for SeedReceiver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SeedReceiver")
            .field("bytes", &self.bytes)
            .finish_non_exhaustive()
    }
}

fn recv_verdict(est: &mut Established) -> Result<(), SeedError> {
    match est.reader.recv().map_err(SeedError::Record)?.0 {
        Message::Ack { .. } => Ok(()),
        Message::Error { text, .. } => Err(SeedError::Refused(text)),
        other => Err(SeedError::Malformed(format!(
            "a {} message instead of a verdict",
            other.kind()
        ))),
    }
}

fn long_timeouts(est: &mut Established) -> Result<(), SeedError> {
    est.stream
        .set_read_timeout(Some(SEED_TIMEOUT))
        .map_err(|e| SeedError::Record(RecordError::Io(e)))?;
    est.reader.set_timeout(SEED_TIMEOUT);
    Ok(())
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
            disks: Vec::new(),
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

    /// Sends disk image `index` whole; returns its digest.
    pub fn send_disk(&mut self, index: u32, path: &Path) -> Result<u64, SeedError> {
        let err = |source| SeedError::Disk {
            path: path.to_path_buf(),
            source,
        };
        let mut f = std::fs::File::open(path).map_err(err)?;
        let mut h = xxhash_rust::xxh3::Xxh3::new();
        let mut offset = 0u64;
        let mut buf = vec![0u8; MAX_FRAMES_CHUNK - ITEM_HEADER];
        loop {
            let n = read_full(&mut f, &mut buf).map_err(err)?;
            if n == 0 {
                break;
            }
            h.update(&buf[..n]);
            let mut p = Vec::with_capacity(ITEM_HEADER + n);
            p.push(TAG_DISK);
            p.extend_from_slice(&index.to_le_bytes());
            p.extend_from_slice(&offset.to_le_bytes());
            p.extend_from_slice(&buf[..n]);
            self.send(p)?;
            offset += n as u64;
        }
        let digest = h.digest();
        self.disks.push(digest);
        Ok(digest)
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

    /// Ends the seed and waits for the backup's receipt. Returns the
    /// connection, for the channel.
    pub fn finish(mut self) -> Result<Established, SeedError> {
        let mut p = vec![TAG_END];
        p.extend_from_slice(&self.bytes.to_le_bytes());
        p.extend_from_slice(&self.hasher.digest().to_le_bytes());
        p.extend_from_slice(&(self.disks.len() as u32).to_le_bytes());
        for d in &self.disks {
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

fn wire_error(e: SeedError) -> MigrationError {
    MigrationError::Vmm("the seed's connection failed", Box::new(e))
}

fn read_full(f: &mut std::fs::File, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut done = 0;
    while done < buf.len() {
        match f.read(&mut buf[done..])? {
            0 => break,
            n => done += n,
        }
    }
    Ok(done)
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
    /// Where separate disks are written (by index), when they are.
    disks: Vec<std::path::PathBuf>,
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
            disks: Vec::new(),
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
    /// Each is emptied now, then written whole from the seed.
    pub fn accept_offer(&mut self, disks: Vec<std::path::PathBuf>) -> Result<(), SeedError> {
        for path in &disks {
            std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .open(path)
                .map_err(|source| SeedError::Disk {
                    path: path.clone(),
                    source,
                })?;
        }
        self.disks = disks;
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
                    let index = u32::from_le_bytes([p[1], p[2], p[3], p[4]]) as usize;
                    let offset = u64::from_le_bytes(p[5..13].try_into().unwrap_or_default());
                    let path = self.disks.get(index).cloned().ok_or_else(|| {
                        SeedError::Malformed(format!("disk {index} is not a separate disk here"))
                    })?;
                    let err = |source| SeedError::Disk {
                        path: path.clone(),
                        source,
                    };
                    let mut f = std::fs::OpenOptions::new()
                        .write(true)
                        .open(&path)
                        .map_err(err)?;
                    f.seek(SeekFrom::Start(offset)).map_err(err)?;
                    f.write_all(&p[ITEM_HEADER..]).map_err(err)?;
                }
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
        for i in 0..n {
            let Some(want) = u64_at(21 + 8 * i) else {
                return Err(SeedError::Malformed("a short end item".into()));
            };
            let Some(path) = self.disks.get(i).cloned() else {
                return Err(SeedError::Malformed(format!(
                    "disk {i} is not a separate disk here"
                )));
            };
            let got = super::file_digest(&path).map_err(|source| SeedError::Disk {
                path: path.clone(),
                source,
            })?;
            if got != want {
                let why = format!(
                    "the copy of disk {i} in {} has digest {got:016x}; the primary's image has {want:016x}",
                    path.display()
                );
                self.refuse(&why);
                return Err(SeedError::Damaged(why));
            }
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

#[cfg(test)]
mod tests {
    use super::*;
    use vm_migration::migration::{BoxError, PageSource, Params, Phase, Progress, Rounds};

    /// A made-up guest of 1 MiB at 1 MiB: each read of its dirty pages
    /// first applies the next round of scripted writes (page, byte) and
    /// returns them.
    struct Guest {
        memory: Vec<u8>,
        writes: Vec<Vec<(usize, u8)>>,
    }

    impl PageSource for Guest {
        fn memory_ranges(&self) -> Vec<(u64, u64)> {
            vec![(0x10_0000, 1 << 20)]
        }
        fn read_memory(&self, gpa: u64, buf: &mut [u8]) -> Result<(), BoxError> {
            let at = gpa as usize - 0x10_0000;
            buf.copy_from_slice(&self.memory[at..at + buf.len()]);
            Ok(())
        }
        fn dirty_pages(&mut self) -> Result<Vec<(u64, Vec<u64>)>, BoxError> {
            let mut bits = vec![0u64; 4];
            if !self.writes.is_empty() {
                for (page, v) in self.writes.remove(0) {
                    self.memory[page * PAGE..(page + 1) * PAGE].fill(v);
                    bits[page / 64] |= 1 << (page % 64);
                }
            }
            Ok(vec![(0x10_0000, bits)])
        }
    }

    fn free_addr() -> SocketAddr {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    }

    #[test]
    fn a_seed_arrives_whole_and_a_refusal_is_reported() {
        let addr = free_addr();
        let key = ChannelKey::from_bytes([9; 32]);
        let channel = ChannelConfig::default();
        let dir = std::env::temp_dir().join(format!("ft-seed-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let image = dir.join("a.img");
        let copy = dir.join("b.img");
        let disk: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        std::fs::write(&image, &disk).unwrap();
        std::fs::write(&copy, b"stale").unwrap();
        let (k, c, cp) = (key.clone(), channel.clone(), copy.clone());
        let backup = std::thread::spawn(move || {
            // The first primary is refused; the second one seeds.
            let mut r = SeedReceiver::accept(addr, &k, &c, &|| false).unwrap();
            let (digest, config) = r.offer().unwrap();
            assert_eq!((digest, config.as_slice()), (7, &b"bad"[..]));
            r.refuse("another configuration");
            let mut r = SeedReceiver::accept(addr, &k, &c, &|| false).unwrap();
            let (digest, config) = r.offer().unwrap();
            assert_eq!((digest, config.as_slice()), (8, &b"{}"[..]));
            r.accept_offer(vec![cp]).unwrap();
            let mut memory = vec![0u8; 1 << 20];
            let mut state = Vec::new();
            loop {
                match r.next_item().unwrap() {
                    SeedItem::Memory { gpa, data } => {
                        let at = gpa as usize - 0x10_0000;
                        memory[at..at + data.len()].copy_from_slice(&data);
                    }
                    SeedItem::Zeros { gpa, len } => {
                        let at = gpa as usize - 0x10_0000;
                        memory[at..at + len as usize].fill(0);
                    }
                    SeedItem::State(s) => state.extend_from_slice(&s),
                    SeedItem::End => break,
                }
            }
            r.finish().unwrap();
            (memory, state)
        });
        let connect = || loop {
            match SeedSender::connect(addr, &key, 1, 5, &channel) {
                Ok(s) => break s,
                Err(_) => std::thread::sleep(Duration::from_millis(20)),
            }
        };
        let mut s = connect();
        let e = s.offer(7, b"bad").unwrap_err();
        assert!(e.to_string().contains("another configuration"), "{e}");
        let mut s = connect();
        s.offer(8, b"{}").unwrap();
        let mut memory = vec![0u8; 1 << 20];
        memory[5] = 1;
        memory[300_000..300_100].fill(7);
        memory[(1 << 20) - 1] = 9;
        // The guest writes between the rounds: a run longer than one item,
        // a page that becomes zero again, pages written in two rounds.
        let mut source = Guest {
            memory,
            writes: vec![
                vec![(0, 0xaa), (1, 0xaa), (2, 0xaa), (3, 0xab)],
                vec![(0, 0), (40, 1), (41, 2)]
                    .into_iter()
                    .chain((100..140).map(|p| (p, p as u8)))
                    .collect(),
                vec![(41, 3), (200, 4)],
            ],
        };
        let params = Params {
            downtime_ms: 0,
            timeout_s: 60,
            max_iterations: 1,
        };
        let mut rounds = Rounds::new(
            params,
            std::time::Instant::now(),
            Progress::new(Phase::Setup),
        );
        let mut seen = 0;
        rounds
            .live(&mut source, &mut s, &mut |p| seen = p.bytes_sent)
            .unwrap();
        // Round 0: three non-zero pages (and their headers), not a MiB;
        // then the pages written meanwhile.
        assert!(seen > 0);
        rounds.last(&mut source, &mut s, &mut |_| {}).unwrap();
        assert_eq!(rounds.progress().iteration, 2);
        let memory = source.memory.clone();
        s.send_disk(0, &image).unwrap();
        let state: Vec<u8> = (0..150_000u32).map(|i| i as u8).collect();
        s.send_state(&state).unwrap();
        s.finish().unwrap();
        let (got_memory, got_state) = backup.join().unwrap();
        assert!(got_memory == memory);
        assert!(got_state == state);
        assert!(std::fs::read(&copy).unwrap() == disk);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
