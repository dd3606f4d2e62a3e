// Copyright 2026 The ft-cloud-hypervisor authors.
// SPDX-License-Identifier: Apache-2.0

//! Interrupt lines raised by devices during exit handling.
//!
//! A device asserts a line while the vCPU thread handles an exit; the vCPU
//! loop drains the set after the exit and routes each line through the
//! IOAPIC. Nothing is injected behind the vCPU's back.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

/// A set of edge-triggered lines (IOAPIC pins 0..32) raised since the last drain.
#[derive(Debug, Default)]
pub struct IrqLines {
    raised: AtomicU32,
}

impl IrqLines {
    /// An empty set, shared.
    pub fn new() -> Arc<Self> {
        Arc::new(IrqLines::default())
    }

    /// Raises `line` (0..32); out-of-range lines are ignored.
    pub fn raise(&self, line: u32) {
        if line < 32 {
            self.raised.fetch_or(1 << line, Ordering::SeqCst);
        }
    }

    /// Takes the set of lines raised so far, as a bit mask.
    pub fn take(&self) -> u32 {
        self.raised.swap(0, Ordering::SeqCst)
    }
}

/// One line of an [`IrqLines`] set, given to a device.
#[derive(Debug, Clone)]
pub struct IrqLine {
    lines: Arc<IrqLines>,
    line: u32,
}

impl IrqLine {
    /// The handle for `line` of `lines`.
    pub fn new(lines: Arc<IrqLines>, line: u32) -> Self {
        IrqLine { lines, line }
    }

    /// Raises the line.
    pub fn raise(&self) {
        self.lines.raise(self.line);
    }
}

impl vm_superio::Trigger for IrqLine {
    type E = std::convert::Infallible;

    fn trigger(&self) -> Result<(), Self::E> {
        self.raise();
        Ok(())
    }
}

/// MSI messages (`address`, `data`) sent by devices during exit handling or
/// while applying an event; the vCPU loop drains them into the interrupt
/// controller right after, on the vCPU thread.
#[derive(Debug, Default)]
pub struct MsiQueue {
    pending: std::sync::Mutex<Vec<(u64, u32)>>,
}

impl MsiQueue {
    /// An empty queue, shared.
    pub fn new() -> Arc<Self> {
        Arc::new(MsiQueue::default())
    }

    /// Queues one MSI write.
    pub fn send(&self, address: u64, data: u32) {
        self.pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((address, data));
    }

    /// Takes every queued message, oldest first.
    pub fn take(&self) -> Vec<(u64, u32)> {
        std::mem::take(&mut *self.pending.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn msi_queue_keeps_order() {
        let q = MsiQueue::new();
        q.send(0xfee0_0000, 0x41);
        q.send(0xfee0_0000, 0x42);
        assert_eq!(q.take(), vec![(0xfee0_0000, 0x41), (0xfee0_0000, 0x42)]);
        assert!(q.take().is_empty());
    }

    #[test]
    fn raise_and_take() {
        let lines = IrqLines::new();
        let l4 = IrqLine::new(lines.clone(), 4);
        l4.raise();
        lines.raise(1);
        lines.raise(40);
        assert_eq!(lines.take(), (1 << 4) | (1 << 1));
        assert_eq!(lines.take(), 0);
    }
}
