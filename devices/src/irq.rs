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

#[cfg(test)]
mod tests {
    use super::*;

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
