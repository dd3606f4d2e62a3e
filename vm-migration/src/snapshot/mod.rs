// Copyright 2026 The ft-cloud-hypervisor authors.
// SPDX-License-Identifier: Apache-2.0

//! The on-disk format of a VM snapshot (`vm.snapshot`, `vm.restore`).
//!
//! A snapshot directory holds three files:
//!
//! - `config.json`: the VM configuration, as Cloud Hypervisor writes it;
//! - `state.bin` ([`state_file`]): a header (magic, format version, section
//!   count, its own CRC-32) and one section per piece of state (the VMM's
//!   own, the vCPU, each device), each with its id, its own version, its
//!   length and a CRC-32 over all of these and its bytes;
//! - `memory.bin` ([`memory_file`]): a header (magic, format version, the
//!   guest-physical ranges, its own CRC-32), guest memory raw, and the
//!   XXH3-64 of that memory last.
//!
//! Readers check everything (magic, version, lengths, checksums) before
//! they hand anything out, and name the file and section that is wrong.

pub mod memory_file;
pub mod state_file;

use std::path::PathBuf;

/// The name of the configuration file in a snapshot directory.
pub const CONFIG_FILE: &str = "config.json";
/// The name of the state file in a snapshot directory.
pub const STATE_FILE: &str = "state.bin";
/// The name of the memory file in a snapshot directory.
pub const MEMORY_FILE: &str = "memory.bin";

/// Errors reading or writing a snapshot file.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    /// The file could not be read or written.
    #[error("cannot access the snapshot file {path}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The file does not start with the magic of its kind.
    #[error("{path} is not a snapshot {kind} file (bad magic)")]
    Magic {
        /// The file.
        path: PathBuf,
        /// `state` or `memory`.
        kind: &'static str,
    },
    /// Written by another version of the format.
    #[error("{path} has snapshot format version {found}; this VMM reads version {expected}")]
    Version {
        /// The file.
        path: PathBuf,
        /// In the file.
        found: u32,
        /// Ours.
        expected: u32,
    },
    /// The file ends early or has bytes after its end.
    #[error("{path} is truncated or has trailing bytes: {what}")]
    Truncated {
        /// The file.
        path: PathBuf,
        /// Where it ended.
        what: String,
    },
    /// A checksum does not match.
    #[error("{path}: bad checksum of {what} (the file is damaged)")]
    Checksum {
        /// The file.
        path: PathBuf,
        /// The header, a section (by id) or the memory contents.
        what: String,
    },
    /// Decodes but makes no sense.
    #[error("{path}: {reason}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
}

impl SnapshotError {
    fn io(path: &std::path::Path, source: std::io::Error) -> Self {
        SnapshotError::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}

pub use memory_file::MemoryHeader;
pub use state_file::Section;
