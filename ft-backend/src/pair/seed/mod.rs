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
//!   -> offer     tag 1, version u32, the primary's configuration digest
//!                u64, bytes (the VM configuration, JSON)
//!   <- ack (accepted) or error (refused, with the reason)
//!   -> memory    tag 2, gpa u64, 4 zero bytes, bytes (a run of pages)
//!   -> zeros     tag 6, n x (gpa u64, pages u32) (runs of pages that are
//!                all zero now)
//!   -> disk size tag 7, disk index u32, size u64 (separate disks: once
//!                per image, before its data; the copy becomes that many
//!                zero bytes)
//!   -> disk      tag 3, disk index u32, offset u64, bytes
//!   -> disks done tag 8 (the last disk item has gone: the backup may
//!                digest its copies while the rest comes)
//!   -> state     tag 4, bytes (the snapshot state sections)
//!   -> end       tag 5, payload bytes u64, xxh3 of every payload u64,
//!                n u32, n x (disk image digest u64, see [`disk`])
//!   <- ack (received whole) or error
//! then the channel starts on the same connection and the log stream
//! (header, setup, entries from the switch point) follows.
//! ```
//!
//! The records are authenticated and encrypted as the channel's; the end's
//! digest and the disk digests check that the backup holds what the
//! primary sent and that each disk copy holds every block as the primary
//! last sent it. Both sides take a disk's digest from a table of block
//! digests kept as the copy goes (see [`disk`]): nothing reads an image in
//! the pause. The primary then reads its images against its tables after
//! the switch, while the guest runs, which finds a write its tracker
//! missed (`vmm`'s `ft_seed::verify`).
//!
//! Memory and disks go by pre-copy: the primary's [`SeedSender`] is the
//! [`PageWriter`](vm_migration::migration::PageWriter) and
//! [`DiskWriter`](vm_migration::migration::DiskWriter) of `vm_migration`'s
//! rounds (the live migration's), so memory, zeros and disk items come in
//! rounds: every non-zero page and every disk block with data while the
//! guest runs (the backup's memory starts zeroed, its disk copies as
//! zeros of the image's size), then the pages and blocks written since
//! each previous round, the last ones in the pause. The backup applies
//! the items in the order they come: a later copy of a page or block
//! overwrites an earlier one.
//!
//! Version 3 added the disk size and disks-done items, disks copied in the
//! rounds and the block-wise disk digest; a backup refuses an offer of
//! another version, saying which it reads. Taking the digest from tables
//! of block digests instead of a read of the image did not change the
//! wire: the number is the same by definition.

pub mod disk;
mod receive;
mod send;

use std::time::Duration;

pub use receive::{SeedItem, SeedReceiver};
pub use send::SeedSender;

use crate::channel::{Established, HandshakeError, Message, RecordError};

/// The seed format's version (3: separate disks copied in the pre-copy
/// rounds, with a size item and block-wise digests; 2: memory in
/// pre-copy rounds, with zeros items).
pub const SEED_VERSION: u32 = 3;

const TAG_OFFER: u8 = 1;
const TAG_MEMORY: u8 = 2;
const TAG_DISK: u8 = 3;
const TAG_STATE: u8 = 4;
const TAG_END: u8 = 5;
const TAG_ZEROS: u8 = 6;
const TAG_DISK_SIZE: u8 = 7;
const TAG_DISKS_DONE: u8 = 8;

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
        addr: std::net::SocketAddr,
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

#[cfg(test)]
mod tests;
