// Copyright 2026 The ft-cloud-hypervisor authors.
// SPDX-License-Identifier: Apache-2.0

//! What FT VMotion changes under a running VM when it becomes a primary:
//! where its devices' outputs go ([`SwitchOutput`]: performed at once,
//! then through the Output Rule) and which clock its interrupt controller
//! reads ([`SwitchClock`]: the VM clock, then the recording clock that
//! logs each read). Both are set on the paused vCPU thread, between two
//! loop turns.

use std::sync::{Arc, PoisonError, RwLock};

use devices::clock::Clock;
use virtio_devices::{Output, OutputSink};

/// An output sink whose target can be replaced.
#[derive(Debug)]
pub struct SwitchOutput {
    inner: RwLock<Arc<dyn OutputSink>>,
}

impl SwitchOutput {
    /// Sends to `sink` until [`set`](Self::set).
    pub fn new(sink: Arc<dyn OutputSink>) -> Arc<Self> {
        Arc::new(SwitchOutput {
            inner: RwLock::new(sink),
        })
    }

    /// From now on outputs go to `sink`.
    pub fn set(&self, sink: Arc<dyn OutputSink>) {
        *self.inner.write().unwrap_or_else(PoisonError::into_inner) = sink;
    }
}

impl OutputSink for SwitchOutput {
    fn submit(&self, output: Output) {
        let sink = self
            .inner
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        sink.submit(output);
    }
}

/// A clock whose source can be replaced.
#[derive(Debug)]
pub struct SwitchClock {
    inner: RwLock<Arc<dyn Clock>>,
}

impl SwitchClock {
    /// Reads `clock` until [`set`](Self::set).
    pub fn new(clock: Arc<dyn Clock>) -> Arc<Self> {
        Arc::new(SwitchClock {
            inner: RwLock::new(clock),
        })
    }

    /// From now on time comes from `clock`.
    pub fn set(&self, clock: Arc<dyn Clock>) {
        *self.inner.write().unwrap_or_else(PoisonError::into_inner) = clock;
    }
}

impl Clock for SwitchClock {
    fn now_ns(&self) -> u64 {
        self.inner
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .now_ns()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[derive(Debug)]
    struct Fixed(u64);
    impl Clock for Fixed {
        fn now_ns(&self) -> u64 {
            self.0
        }
    }

    #[derive(Debug, Default)]
    struct Count(AtomicUsize);
    impl OutputSink for Count {
        fn submit(&self, output: Output) {
            self.0.fetch_add(1, Ordering::SeqCst);
            drop(output);
        }
    }

    #[test]
    fn switching_changes_the_target() {
        let c = SwitchClock::new(Arc::new(Fixed(1)));
        assert_eq!(c.now_ns(), 1);
        c.set(Arc::new(Fixed(2)));
        assert_eq!(c.now_ns(), 2);
        let (a, b) = (Arc::new(Count::default()), Arc::new(Count::default()));
        let s = SwitchOutput::new(a.clone());
        let out = || Output::new("d", virtio_devices::OutputKind::DiskFlush, Box::new(|| {}));
        s.submit(out());
        s.set(b.clone());
        s.submit(out());
        s.submit(out());
        assert_eq!(a.0.load(Ordering::SeqCst), 1);
        assert_eq!(b.0.load(Ordering::SeqCst), 2);
    }
}
