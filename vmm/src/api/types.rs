// Copyright 2026 The ft-cloud-hypervisor authors.
// SPDX-License-Identifier: Apache-2.0

//! Bodies of API answers in Cloud Hypervisor's JSON shape, and the error
//! the control loop returns when there is no VM (HTTP 404).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::config::VmConfig;

/// The body of `GET vmm.ping`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VmmPingResponse {
    /// Build identifier, e.g. `v0.1.0` (upstream: `v54.0.0`).
    pub build_version: String,
    /// Version, e.g. `0.1.0`.
    pub version: String,
    /// The VMM's process id.
    pub pid: i64,
    /// Compiled-in features (upstream: `["io_uring","kvm"]`).
    pub features: Vec<String>,
}

impl VmmPingResponse {
    /// The answer for this build and process.
    pub fn current() -> Self {
        VmmPingResponse {
            build_version: format!("v{}", env!("CARGO_PKG_VERSION")),
            version: env!("CARGO_PKG_VERSION").to_string(),
            pid: i64::from(std::process::id()),
            features: vec!["kvm".to_string()],
        }
    }
}

/// A VM's lifecycle state, spelled as upstream's `VmState`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum VmState {
    /// Created (`vm.create`), not booted.
    Created,
    /// Booted and running.
    Running,
    /// Shut down.
    Shutdown,
    /// Paused (`vm.pause`).
    Paused,
    /// Stopped at a debugger breakpoint.
    BreakPoint,
}

/// The body of `GET vm.info`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VmInfoResponse {
    /// The VM's configuration, with every default filled in.
    pub config: Box<VmConfig>,
    /// Lifecycle state.
    pub state: VmState,
    /// Guest RAM currently backing the VM, in bytes.
    pub memory_actual_size: u64,
    /// Devices by id (left out when `None`, as upstream).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_tree: Option<BTreeMap<String, serde_json::Value>>,
    /// A side of a fault-tolerant pair: role, state, peer, generation,
    /// positions, lag, outputs held, throttle (this project's extension).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fault_tolerance: Option<serde_json::Value>,
    /// A live migration's phase and progress (this project's extension).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub migration: Option<serde_json::Value>,
}

/// The body of `PUT vm.snapshot`, as upstream's `VmSnapshotConfig`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VmSnapshotConfig {
    /// Where to write the snapshot: `file:///DIR`.
    pub destination_url: String,
}

/// The body of `PUT vm.restore` and the value of `--restore`, as
/// upstream's `RestoreConfig`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestoreConfig {
    /// Where the snapshot is: `file:///DIR`.
    pub source_url: String,
    /// Upstream: fault guest memory in at once. Memory is always read in
    /// whole here, so this changes nothing.
    #[serde(default)]
    pub prefault: bool,
    /// Resume the VM once restored (else it stays paused, as upstream).
    #[serde(default)]
    pub resume: bool,
}

/// The body of `PUT vm.send-migration`, as upstream's
/// `VmSendMigrationData` (`downtime_ms` and `timeout_s` with upstream's
/// defaults), plus `key`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SendMigrationData {
    /// `tcp:HOST:PORT` or `unix:PATH`.
    pub destination_url: String,
    /// Upstream's local migration (shared memory over a unix socket): not
    /// supported; `true` is refused.
    #[serde(default)]
    pub local: bool,
    /// The pause aimed for, in milliseconds (default 300).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub downtime_ms: Option<u64>,
    /// Bound on the whole migration, in seconds (default 3600).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_s: Option<u64>,
    /// A key file (as the logging channel's): the stream goes over the
    /// channel's encrypted, authenticated transport (this project's
    /// extension; needs `tcp:`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<std::path::PathBuf>,
}

/// The body of `PUT vm.receive-migration`, as upstream's
/// `VmReceiveMigrationData`, plus `key`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReceiveMigrationData {
    /// `tcp:ADDR:PORT` or `unix:PATH` to listen on.
    pub receiver_url: String,
    /// The key file the source must hold too (see [`SendMigrationData`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<std::path::PathBuf>,
}

/// The control loop's error when an action needs a VM and none was
/// created. Returned directly (not wrapped) in an
/// [`ApiResponse`](super::ApiResponse), or anywhere in its `source()`
/// chain, it makes the HTTP answer 404 instead of 500, as upstream.
#[derive(Debug, Error, Clone, Copy, PartialEq, Eq)]
#[error("VM is not created")]
pub struct VmNotCreated;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ping_shape() {
        let value = serde_json::to_value(VmmPingResponse::current()).expect("serialise");
        let object = value.as_object().expect("object");
        let keys: Vec<&str> = object.keys().map(String::as_str).collect();
        assert_eq!(keys, ["build_version", "features", "pid", "version"]);
        assert_eq!(value["pid"], i64::from(std::process::id()));
    }

    #[test]
    fn info_shape() {
        let info = VmInfoResponse {
            config: Box::default(),
            state: VmState::Paused,
            memory_actual_size: 1 << 20,
            device_tree: None,
            fault_tolerance: None,
            migration: None,
        };
        let text = serde_json::to_string(&info).expect("serialise");
        assert!(text.contains(r#""state":"Paused""#));
        assert!(!text.contains("device_tree"));
        assert!(text.starts_with(r#"{"config":{"cpus":{"boot_vcpus":1"#));
    }
}
