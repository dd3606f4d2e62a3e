// Copyright 2026 The ft-cloud-hypervisor authors.
// SPDX-License-Identifier: Apache-2.0

//! The VM configuration: Cloud Hypervisor's `VmConfig` JSON, what this
//! VMM supports of it ([`VmConfig::validate`]), and the command line
//! that builds it ([`cli::parse_args`]).

pub mod cli;
mod fault_tolerance;
mod option_parser;
mod validate;
mod virtio;
mod vm_config;

pub use cli::{parse_args, parse_restore, CliCommand, CliError, VmmArgs};
pub use fault_tolerance::{
    parse_tcp_address, DiskMode, FaultToleranceConfig, FaultToleranceError, FaultToleranceMode,
    DEFAULT_MAX_DELAY_US,
};
pub use option_parser::{parse_byte_size, OptionParser, OptionParserError};
pub use validate::{
    ValidationError, MAX_CMDLINE_LEN, MAX_MEMORY_SIZE, MEMORY_ALIGNMENT, MIN_MEMORY_SIZE,
};
pub use virtio::{
    format_mac, parse_mac, DeviceConfigError, DiskConfig, NetConfig, DEFAULT_DISK_QUEUE_SIZE,
    DEFAULT_NET_QUEUE_SIZE,
};
pub use vm_config::*;
