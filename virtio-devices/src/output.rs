// Copyright 2026 The ft-cloud-hypervisor authors.
// SPDX-License-Identifier: Apache-2.0

//! The output seam: every effect a device has on the outside world (a
//! virtio-net TX frame, a virtio-blk write or flush) leaves through one
//! [`OutputSink`]. Standalone, the sink performs it at once. Under fault
//! tolerance the primary's sink holds it until the backup acknowledges the
//! log position at which it was produced (the Output Rule), and the
//! backup's sink drops it or writes its own copy.
//!
//! Disk reads pass through the same seam (as [`OutputKind::DiskRead`],
//! not an output) so that a sink which holds writes can keep a later read
//! of the same device behind them.

use std::fmt::Debug;
use std::sync::atomic::{AtomicU64, Ordering};

/// What an output is, for a sink that wants to log, count or hold it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputKind {
    /// A frame for the network (bytes, without the virtio-net header).
    NetFrame {
        /// Frame length.
        len: usize,
    },
    /// A disk write of `len` bytes at byte `offset`.
    DiskWrite {
        /// Byte offset in the disk.
        offset: u64,
        /// Bytes.
        len: usize,
    },
    /// A disk flush (data reaches stable storage).
    DiskFlush,
    /// A disk read: no effect outside, ordered with the device's outputs.
    DiskRead {
        /// Byte offset in the disk.
        offset: u64,
        /// Bytes.
        len: usize,
    },
}

/// One effect on the outside world, produced on the vCPU thread at an exit.
pub struct Output {
    /// The producing device's id.
    pub device: String,
    /// What it is.
    pub kind: OutputKind,
    perform: Box<dyn FnOnce() + Send>,
}

impl Debug for Output {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Output")
            .field("device", &self.device)
            .field("kind", &self.kind)
            .finish_non_exhaustive()
    }
}

impl Output {
    /// An output whose effect is `perform` (writing the tap, handing the
    /// write to the disk thread).
    pub fn new(device: &str, kind: OutputKind, perform: Box<dyn FnOnce() + Send>) -> Self {
        Output {
            device: device.to_string(),
            kind,
            perform,
        }
    }

    /// Performs the effect now.
    pub fn release(self) {
        (self.perform)();
    }
}

/// Where devices send their outputs. Called on the vCPU thread.
pub trait OutputSink: Send + Sync + Debug {
    /// Takes an output: performs it now, or later (in order per device).
    fn submit(&self, output: Output);
}

/// The standalone sink: every output is performed at once.
#[derive(Debug, Default, Clone, Copy)]
pub struct ImmediateOutput;

impl OutputSink for ImmediateOutput {
    fn submit(&self, output: Output) {
        output.release();
    }
}

/// The sink of a VM that replays (and, later, of a backup): every output
/// is dropped unperformed, since the recording VM already performed it.
/// Counts what it dropped.
#[derive(Debug, Default)]
pub struct DroppedOutput {
    dropped: AtomicU64,
}

impl DroppedOutput {
    /// Outputs dropped so far.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

impl OutputSink for DroppedOutput {
    fn submit(&self, output: Output) {
        self.dropped.fetch_add(1, Ordering::Relaxed);
        drop(output);
    }
}

#[cfg(test)]
pub(crate) mod testing {
    use std::sync::Mutex;

    use super::*;

    /// A sink that holds every output until released by the test.
    #[derive(Debug, Default)]
    pub struct HoldingSink {
        pub held: Mutex<Vec<Output>>,
    }

    impl OutputSink for HoldingSink {
        fn submit(&self, output: Output) {
            self.held.lock().unwrap().push(output);
        }
    }

    impl HoldingSink {
        pub fn release_all(&self) -> Vec<OutputKind> {
            let held = std::mem::take(&mut *self.held.lock().unwrap());
            held.into_iter()
                .map(|o| {
                    let k = o.kind;
                    o.release();
                    k
                })
                .collect()
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    use super::testing::HoldingSink;
    use super::*;

    #[test]
    fn immediate_performs_and_holding_waits() {
        let n = Arc::new(AtomicUsize::new(0));
        let make = |n: Arc<AtomicUsize>| {
            Output::new(
                "_net0",
                OutputKind::NetFrame { len: 60 },
                Box::new(move || {
                    n.fetch_add(1, Ordering::SeqCst);
                }),
            )
        };
        ImmediateOutput.submit(make(n.clone()));
        assert_eq!(n.load(Ordering::SeqCst), 1);
        let hold = HoldingSink::default();
        hold.submit(make(n.clone()));
        assert_eq!(n.load(Ordering::SeqCst), 1);
        assert!(format!("{:?}", hold.held.lock().unwrap()[0]).contains("_net0"));
        assert_eq!(hold.release_all(), vec![OutputKind::NetFrame { len: 60 }]);
        assert_eq!(n.load(Ordering::SeqCst), 2);
        let dropped = DroppedOutput::default();
        dropped.submit(make(n.clone()));
        dropped.submit(make(n.clone()));
        assert_eq!(
            n.load(Ordering::SeqCst),
            2,
            "a dropped output was performed"
        );
        assert_eq!(dropped.dropped(), 2);
    }
}
