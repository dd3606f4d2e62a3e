// Copyright 2026 The ft-cloud-hypervisor authors.
// SPDX-License-Identifier: Apache-2.0

//! Going live: devices built without host backends (a VM that replays, the
//! backup of a fault-tolerant pair) gain them in the same process, at the
//! point the replay reached, without a reboot.
//!
//! A device built without a backend keeps its host configuration (the
//! disk image's path; the tap's name and host address) but opens nothing.
//! At go-live ([`VirtioDevice::go_live`](crate::VirtioDevice::go_live)) it
//! opens them, starts its I/O threads (which wake the vCPU through
//! [`GoLive::waker`]) and sends its outputs to [`GoLive::sink`] from then
//! on. A disk issues again every request that was issued and has no
//! completion yet; a net device announces the guest's MAC on its tap.
//! The host configuration is not guest-visible: it is not part of any
//! device state.

use std::sync::{Arc, Mutex};

use devices::async_event::Waker;

use crate::block::BlockError;
use crate::net::NetError;
use crate::output::OutputSink;
use crate::transport::VirtioPciDevice;

/// What every device needs to go live.
#[derive(Debug, Clone)]
pub struct GoLive {
    /// What the device's I/O threads call when host work has finished.
    pub waker: Arc<dyn Waker>,
    /// Where outputs go from now on ([`ImmediateOutput`](crate::ImmediateOutput),
    /// or the Output Rule's sink).
    pub sink: Arc<dyn OutputSink>,
}

/// Why a device cannot go live.
#[derive(Debug, thiserror::Error)]
pub enum GoLiveError {
    /// The device already has its host backend (it went live before, or
    /// was built with it).
    #[error("device {0} already has its host backend")]
    AlreadyLive(String),
    /// A disk cannot attach its image.
    #[error("disk {id} cannot go live")]
    Disk {
        /// The device id.
        id: String,
        /// Why.
        #[source]
        source: BlockError,
    },
    /// A net device cannot attach its tap.
    #[error("net device {id} cannot go live")]
    Net {
        /// The device id.
        id: String,
        /// Why.
        #[source]
        source: NetError,
    },
}

/// The virtio-pci devices of a VM, kept by the VMM to make them go live
/// after the device manager has been taken apart.
#[derive(Debug, Clone, Default)]
pub struct GoLiveDevices {
    devices: Vec<Arc<Mutex<VirtioPciDevice>>>,
}

impl GoLiveDevices {
    /// The devices, in the order they go live (PCI order).
    pub fn new(devices: Vec<Arc<Mutex<VirtioPciDevice>>>) -> Self {
        GoLiveDevices { devices }
    }

    /// How many devices there are.
    pub fn len(&self) -> usize {
        self.devices.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.devices.is_empty()
    }

    /// Makes every device go live, in order. Stops at the first device
    /// that fails: the ones before it are live, the rest are not. Call it
    /// on the vCPU thread, between two exits (a disk's re-issued requests
    /// go to `live.sink` there).
    pub fn go_live(&self, live: &GoLive) -> Result<(), GoLiveError> {
        for d in &self.devices {
            d.lock().unwrap_or_else(|e| e.into_inner()).go_live(live)?;
        }
        Ok(())
    }
}
