// Copyright 2026 The ft-cloud-hypervisor authors.
// SPDX-License-Identifier: Apache-2.0

//! Cloud Hypervisor's REST API on a Unix socket.
//!
//! The HTTP thread parses requests and hands each to the VMM's control loop
//! as an [`ApiMessage`]; the control loop answers on the message's channel.
//! The HTTP layer never touches the VM itself, so a bad request cannot harm
//! a running guest.

use std::sync::mpsc;

use crate::config::VmConfig;

pub mod http;
mod types;

pub use http::{start_http_thread, ApiServer, ApiServerError, ApiServerHandle, ApiSubmitter};
pub use types::{
    ReceiveMigrationData, RestoreConfig, SendMigrationData, VmInfoResponse, VmNotCreated,
    VmSnapshotConfig, VmState, VmmPingResponse,
};

/// One API action, as Cloud Hypervisor names them.
#[derive(Debug)]
pub enum ApiRequest {
    /// `GET vmm.ping`
    VmmPing,
    /// `PUT vmm.shutdown`
    VmmShutdown,
    /// `PUT vm.create`
    VmCreate(Box<VmConfig>),
    /// `PUT vm.boot`
    VmBoot,
    /// `PUT vm.delete`
    VmDelete,
    /// `GET vm.info`
    VmInfo,
    /// `GET vm.counters`
    VmCounters,
    /// `PUT vm.pause`
    VmPause,
    /// `PUT vm.resume`
    VmResume,
    /// `PUT vm.shutdown`
    VmShutdown,
    /// `PUT vm.reboot`
    VmReboot,
    /// `PUT vm.snapshot`
    VmSnapshot(VmSnapshotConfig),
    /// `PUT vm.restore`
    VmRestore(RestoreConfig),
    /// `PUT vm.send-migration`
    VmSendMigration(SendMigrationData),
    /// `PUT vm.receive-migration`
    VmReceiveMigration(ReceiveMigrationData),
    /// `PUT vm.ft-add-backup` (FT VMotion, this project's extension)
    VmFtAddBackup(crate::ft_seed::options::FtAddBackupConfig),
    /// `PUT vm.ft-receive-backup` (FT VMotion, this project's extension)
    VmFtReceiveBackup(crate::ft_seed::options::FtReceiveBackupConfig),
}

/// A successful answer.
#[derive(Debug, Clone, PartialEq)]
pub enum ApiResponsePayload {
    /// No body (HTTP 204).
    Empty,
    /// A JSON body (HTTP 200).
    Json(serde_json::Value),
    /// A JSON body serialised already (HTTP 200): from a struct, its fields
    /// in declaration order as upstream sends them (a `serde_json::Value`
    /// would sort them).
    JsonText(String),
}

/// The control loop's answer: a payload, or the error whose chain
/// (`Display` of the error and of each `source()`) becomes the HTTP body.
pub type ApiResponse = Result<ApiResponsePayload, Box<dyn std::error::Error + Send + Sync>>;

/// A request with the channel its answer goes back on.
#[derive(Debug)]
pub struct ApiMessage {
    /// What is asked.
    pub request: ApiRequest,
    /// Where the answer goes.
    pub response_tx: mpsc::Sender<ApiResponse>,
}
