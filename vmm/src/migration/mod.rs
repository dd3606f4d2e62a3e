// Copyright 2026 The ft-cloud-hypervisor authors.
// SPDX-License-Identifier: Apache-2.0

//! `vm.send-migration` and `vm.receive-migration`: live migration in
//! Cloud Hypervisor's shape, on the pre-copy engine of
//! `vm_migration::migration`.
//!
//! The source answers `send-migration` once it reached the destination
//! (a refused connection, a wrong key or a destination that refuses the
//! configuration is the request's error) and migrates from a worker
//! thread ([`source`]); at the end the control loop gets
//! [`ControlEvent::MigrationEnded`](crate::ControlEvent): on success the
//! VM is shut down and the VMM exits, as upstream's; on failure the VM
//! keeps running. The destination ([`sink`]) blocks in
//! `receive-migration` until the guest runs there or the migration failed
//! (then no VM exists), as upstream's.

pub mod disks;
pub mod pages;
pub mod sink;
pub mod source;
pub mod transport;

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::json;
use vm_migration::migration::{Phase, Progress};

pub use transport::MigrationUrl;

/// Errors of a migration in the VMM.
#[derive(Debug, thiserror::Error)]
pub enum MigrationError {
    /// The URL is not `tcp:HOST:PORT` or `unix:PATH`.
    #[error("the migration URL {url:?} is invalid: {why} (expected tcp:HOST:PORT or unix:PATH)")]
    Url {
        /// The URL.
        url: String,
        /// What is wrong.
        why: String,
    },
    /// The host name does not resolve.
    #[error("cannot resolve {addr}")]
    Resolve {
        /// The address.
        addr: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The destination cannot be reached.
    #[error("cannot connect to the migration destination {peer}")]
    Connect {
        /// The destination.
        peer: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The address cannot be listened on.
    #[error("cannot listen on {url}")]
    Listen {
        /// The URL.
        url: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Accepting or setting up a connection failed.
    #[error("cannot accept the migration connection")]
    Accept(#[source] std::io::Error),
    /// The key file is unusable.
    #[error("cannot use the migration key {path}")]
    Key {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: ft_backend::channel::KeyError,
    },
    /// An encrypted migration needs TCP.
    #[error("an encrypted migration (key=) needs a tcp: URL")]
    KeyNeedsTcp,
    /// The Noise handshake failed (a wrong key, not a migration peer).
    #[error("the encrypted migration handshake with {peer} failed")]
    Handshake {
        /// The peer.
        peer: String,
        /// Why.
        #[source]
        source: ft_backend::channel::HandshakeError,
    },
    /// A migration is already going on.
    #[error("a migration is already in progress")]
    InProgress,
    /// The VMM already has a VM (the destination must be empty).
    #[error("VM is already created")]
    VmExists,
    /// The VM cannot be migrated.
    #[error("cannot migrate the VM")]
    Vm(#[source] crate::vm::VmError),
    /// The configuration cannot be serialised.
    #[error("cannot serialise the VM configuration")]
    Config(#[source] serde_json::Error),
    /// The worker thread cannot be started.
    #[error("cannot start the migration thread")]
    Thread(#[source] std::io::Error),
    /// The migration itself failed.
    #[error("live migration failed")]
    Migration(#[source] vm_migration::migration::MigrationError),
}

/// Which end this VMM is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Sending.
    Source,
    /// Receiving.
    Destination,
}

/// A migration's state for `vm.info`, `vm.counters` and `ch-remote`.
#[derive(Debug, Clone)]
pub struct MigrationStatus {
    /// Which end.
    pub role: Role,
    /// The peer's URL.
    pub url: String,
    /// The last progress.
    pub progress: Option<Progress>,
    /// Phase (with no progress yet: setup).
    pub phase: Phase,
    /// Why it failed.
    pub error: Option<String>,
    /// Encrypted.
    pub encrypted: bool,
}

/// Shared between the worker and the control loop.
pub type SharedStatus = Arc<Mutex<MigrationStatus>>;

impl MigrationStatus {
    /// A new migration's status.
    pub fn new(role: Role, url: &str, encrypted: bool) -> SharedStatus {
        Arc::new(Mutex::new(MigrationStatus {
            role,
            url: url.to_string(),
            progress: None,
            phase: Phase::Setup,
            error: None,
            encrypted,
        }))
    }

    /// Whether it is still going on.
    pub fn active(&self) -> bool {
        !matches!(self.phase, Phase::Completed | Phase::Failed)
    }

    /// The `migration` object of `vm.info` and `vm.counters`.
    pub fn info(&self) -> serde_json::Value {
        let p = self.progress;
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        json!({
            "role": match self.role { Role::Source => "source", Role::Destination => "destination" },
            "url": self.url,
            "encrypted": self.encrypted,
            "phase": self.phase.as_str(),
            "iterations": p.map(|p| p.iteration),
            "bytes_sent": p.map(|p| p.bytes_sent),
            "pages_sent": p.map(|p| p.pages_sent),
            "zero_pages": p.map(|p| p.zero_pages),
            "dirty_pages": p.map(|p| p.dirty_pages),
            "dirty_rate_pages_per_s": p.map(|p| p.dirty_rate_pps.round()),
            "bandwidth_mib_per_s": p.map(|p| (p.bandwidth_bps / f64::from(1 << 20) * 10.0).round() / 10.0),
            "elapsed_ms": p.map(|p| ms(p.elapsed).round()),
            "downtime_ms": p.and_then(|p| p.downtime).map(|d| (ms(d) * 10.0).round() / 10.0),
            "error": self.error,
        })
    }
}

/// Locks a status, whatever a panicking holder left.
pub fn lock(s: &SharedStatus) -> std::sync::MutexGuard<'_, MigrationStatus> {
    s.lock().unwrap_or_else(|e| e.into_inner())
}

/// An error and its causes on one line.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    vm_migration::migration::error_chain(e)
}
