// Copyright 2026 The ft-cloud-hypervisor authors.
// SPDX-License-Identifier: Apache-2.0

//! Exit and interrupt counters of one vCPU, readable from the API thread.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};

use hypervisor::VmExit;

/// Counts, by kind.
#[derive(Debug, Default)]
pub struct VcpuCounters {
    io_in: AtomicU64,
    io_out: AtomicU64,
    mmio_read: AtomicU64,
    mmio_write: AtomicU64,
    hlt: AtomicU64,
    irq_window: AtomicU64,
    kicked: AtomicU64,
    other: AtomicU64,
    injections: AtomicU64,
    timer_fires: AtomicU64,
    checkpoints: AtomicU64,
    checkpoint_pages: AtomicU64,
}

impl VcpuCounters {
    /// Counts one exit.
    pub fn count_exit(&self, exit: &VmExit) {
        let c = match exit {
            VmExit::IoIn { .. } => &self.io_in,
            VmExit::IoOut { .. } => &self.io_out,
            VmExit::MmioRead { .. } => &self.mmio_read,
            VmExit::MmioWrite { .. } => &self.mmio_write,
            VmExit::Hlt => &self.hlt,
            VmExit::IrqWindowOpen => &self.irq_window,
            VmExit::Interrupted => &self.kicked,
            _ => &self.other,
        };
        c.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts one injected interrupt.
    pub fn count_injection(&self) {
        self.injections.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts one APIC timer expiry.
    pub fn count_timer_fire(&self) {
        self.timer_fires.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts one micro-checkpoint of `pages` guest pages (a forced
    /// delivery when recording, an applied checkpoint when replaying).
    pub fn count_checkpoint(&self, pages: u64) {
        self.checkpoints.fetch_add(1, Ordering::Relaxed);
        self.checkpoint_pages.fetch_add(pages, Ordering::Relaxed);
    }

    /// Guest-caused exits (kicks excluded).
    pub fn guest_exits(&self) -> u64 {
        let s = self.snapshot();
        s["exits"]
    }

    /// All counters by name.
    pub fn snapshot(&self) -> BTreeMap<&'static str, u64> {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let mut m = BTreeMap::new();
        m.insert("exits_io_in", get(&self.io_in));
        m.insert("exits_io_out", get(&self.io_out));
        m.insert("exits_mmio_read", get(&self.mmio_read));
        m.insert("exits_mmio_write", get(&self.mmio_write));
        m.insert("exits_hlt", get(&self.hlt));
        m.insert("exits_irq_window", get(&self.irq_window));
        m.insert("exits_other", get(&self.other));
        let total: u64 = m.values().sum();
        m.insert("exits", total);
        m.insert("kicks", get(&self.kicked));
        m.insert("interrupts_injected", get(&self.injections));
        m.insert("timer_fires", get(&self.timer_fires));
        m.insert("forced_deliveries", get(&self.checkpoints));
        m.insert("checkpoint_pages", get(&self.checkpoint_pages));
        m
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_by_kind() {
        let c = VcpuCounters::default();
        c.count_exit(&VmExit::Hlt);
        c.count_exit(&VmExit::Hlt);
        c.count_exit(&VmExit::Interrupted);
        c.count_exit(&VmExit::MmioRead { addr: 0, len: 4 });
        c.count_injection();
        c.count_checkpoint(12);
        let s = c.snapshot();
        assert_eq!(s["forced_deliveries"], 1);
        assert_eq!(s["checkpoint_pages"], 12);
        assert_eq!(s["exits_hlt"], 2);
        assert_eq!(s["exits"], 3, "kicks are not guest exits");
        assert_eq!(s["kicks"], 1);
        assert_eq!(s["interrupts_injected"], 1);
        assert_eq!(c.guest_exits(), 3);
    }
}
