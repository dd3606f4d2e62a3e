// Copyright 2026 The ft-cloud-hypervisor authors.
// SPDX-License-Identifier: Apache-2.0

//! Live migration: the wire protocol ([`protocol`]) and the pre-copy
//! engine ([`precopy`]) for both ends. The final state travels as a
//! snapshot state file (`crate::snapshot::state_file`), so that a
//! migration and a snapshot save and restore the same sections.

pub mod precopy;
pub mod protocol;
mod receive;

pub use precopy::{
    send, BoxError, MigrationError, MigrationSink, MigrationSource, Params, Phase, Progress, Report,
};
pub use receive::{error_chain, receive};
