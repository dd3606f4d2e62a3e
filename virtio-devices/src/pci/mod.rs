// Copyright 2026 The ft-cloud-hypervisor authors.
// SPDX-License-Identifier: Apache-2.0

//! PCI: configuration spaces, the host bridge and bus 0, MSI-X.

pub mod config;
pub mod msix;
pub mod root;

pub use root::{
    PciConfigIo, PciConfigMmio, PciDevice, PciMmioWindow, PciRoot, SharedPciRoot,
    PCI_CONFIG_IO_PORT, PCI_CONFIG_IO_PORT_SIZE,
};
