// Copyright 2026 The ft-cloud-hypervisor authors.
// SPDX-License-Identifier: Apache-2.0

//! Live migration: the wire protocol ([`protocol`]), the pre-copy rounds
//! ([`rounds`], also FT VMotion's) and the migration's source
//! ([`precopy`]) and destination. The final state travels as a
//! snapshot state file (`crate::snapshot::state_file`), so that a
//! migration and a snapshot save and restore the same sections.

pub mod block_digests;
pub mod disks;
pub mod precopy;
pub mod protocol;
mod receive;
pub mod rounds;

pub use block_digests::BlockDigests;
pub use disks::{DiskRound, DiskSource, DiskWriter, NoDisks};
pub use precopy::{send, BoxError, MigrationError, MigrationSink, MigrationSource, Report};
pub use receive::{error_chain, receive};
pub use rounds::{PageSource, PageWriter, Params, Phase, Progress, Rounds};
