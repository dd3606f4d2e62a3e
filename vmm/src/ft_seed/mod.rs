// Copyright 2026 The ft-cloud-hypervisor authors.
// SPDX-License-Identifier: Apache-2.0

//! FT VMotion: `vm.ft-add-backup` makes a running VM the primary of a new
//! pair by seeding a backup that waits in `vm.ft-receive-backup` with no
//! VM; after a failover the live ex-backup does the same with a new host
//! (redundancy restored).
//!
//! - [`primary`]: copy the memory (and separate disks) by pre-copy while
//!   the guest runs, then pause, copy the last pages and disk blocks, vCPU
//!   and device state and
//!   clock (the snapshot's state format), switch the running VM into the
//!   primary's mode at that point, resume;
//! - [`backup`]: receive the seed, build the VM in the backup's mode from
//!   it and replay the primary's stream from that exact point;
//! - [`options`]: the requests' fields, from JSON or `ch-remote`'s
//!   `key=value` form;
//! - [`switch`]: the output sink and clock a running VM switches;
//! - [`reseed`]: divergence repair (a diverged backup is seeded again).
//! - [`spares`]: a backup live after a failover seeds a spare by itself.
//! - [`verify`]: after a seed with separate disks, the primary reads its
//!   images against the block digests it sent, in the background.

pub mod backup;
pub mod options;
pub mod primary;
pub mod reseed;
pub mod spares;
pub mod switch;
pub mod verify;

use ft_backend::pair::seed::SeedError;

use crate::snapshot::VmSnapshotError;
use crate::vcpu::ft::PairError;
use crate::vcpu::FtError;

/// State section with the vCPU loop's place ([`crate::vcpu::ft::seed::SeedCursor`]).
pub const CURSOR_SECTION: &str = "ft-cursor";
/// State section with what the devices learned from the host (disk sizes).
pub const SETUP_SECTION: &str = "ft-setup";
/// Version of the two sections above.
pub const FT_SECTION_VERSION: u32 = 1;

/// Errors of FT VMotion, on either side.
#[derive(Debug, thiserror::Error)]
pub enum VmotionError {
    /// The request's settings.
    #[error("invalid FT VMotion settings: {0}")]
    Settings(String),
    /// The VM is not running.
    #[error("the VM is not running (it is {0}): only a running VM can be protected")]
    NotRunning(crate::vm::VmState),
    /// The VM is protected already, or records or replays.
    #[error("the VM is already {0}")]
    Busy(String),
    /// The key or tiebreaker.
    #[error("the pair's settings")]
    Pair(#[source] PairError),
    /// The configuration digest.
    #[error("cannot compute the configuration digest")]
    Digest(#[source] FtError),
    /// The seed's connection or contents.
    #[error("the seed failed")]
    Seed(#[source] SeedError),
    /// A separate disk's image could not be opened for its copy.
    #[error("cannot open a disk image to copy it")]
    DiskImage(#[source] std::io::Error),
    /// The pre-copy rounds failed (the VM runs on unprotected).
    #[error("the seed's memory copy failed")]
    Precopy(#[source] vm_migration::migration::MigrationError),
    /// The vCPU's state could not be saved.
    #[error("cannot save the VM's state")]
    Save(#[source] VmSnapshotError),
    /// The seed's state is unusable.
    #[error("the seed's state is unusable: {0}")]
    State(String),
    /// The configuration could not be serialised or parsed.
    #[error("the seed's configuration")]
    Config(#[source] serde_json::Error),
    /// The vCPU did not run a request.
    #[error("the vCPU did not answer")]
    Unresponsive,
    /// Switching the running VM into the primary's mode failed.
    #[error("cannot switch the VM to the primary's mode")]
    Switch(#[source] FtError),
    /// The recording could not become a reader of the dirty page log.
    #[error("cannot read the dirty page log for the recording")]
    DirtyLog(#[source] crate::dirty_log::DirtyLogError),
    /// The channel could not start after the seed.
    #[error("cannot start the logging channel after the seed")]
    Channel(#[source] ft_backend::channel::HandshakeError),
    /// The primary could not start on the channel.
    #[error("cannot start the primary")]
    Primary(#[source] ft_backend::pair::primary::PrimaryError),
    /// The backup could not start on the channel.
    #[error("cannot start the backup")]
    Backup(#[source] ft_backend::pair::backup::BackupError),
    /// The VM could not be built from the seed.
    #[error("cannot build the VM from the seed")]
    Build(#[source] Box<crate::vm::VmError>),
    /// The seed completed but the backup never acknowledged the stream's
    /// header (the VM runs on here; its pair's failure detector decides).
    #[error("the backup was seeded but is not protecting the VM: {0}")]
    NotProtected(String),
}
