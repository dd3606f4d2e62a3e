// Copyright 2026 The ft-cloud-hypervisor authors.
// SPDX-License-Identifier: Apache-2.0

//! virtio devices on PCI, with a deterministic data plane.
//!
//! The guest reaches the devices only through exits on the vCPU thread:
//! configuration space (ports 0xcf8/0xcfc or ECAM) and BAR accesses
//! (common configuration, notifications, MSI-X table). A notify processes
//! its queue at once for work that needs no host wait. Host I/O that
//! finishes later (tap reads, disk reads, writes and flushes) runs on I/O
//! threads into host buffers and comes back as event bytes
//! ([`devices::async_event::AsyncEventSource`]) that the vCPU thread
//! applies: guest memory, used rings and interrupts are written there
//! only, so a record/replay log of the events reproduces the guest's view.
//! Effects on the outside world leave through one seam, [`output::OutputSink`].

pub mod block;
pub mod chain;
pub mod device;
pub mod dirty;
pub mod go_live;
pub mod net;
pub mod output;
pub mod pci;
pub mod transport;

pub use block::Block;
pub use device::{Counters, VirtioDevice};
pub use go_live::{GoLive, GoLiveDevices, GoLiveError};
pub use net::Net;
pub use output::{DroppedOutput, ImmediateOutput, Output, OutputKind, OutputSink};
pub use transport::{VirtioPciDevice, VirtioPciEvents};
