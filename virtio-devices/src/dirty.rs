// Copyright 2026 The ft-cloud-hypervisor authors.
// SPDX-License-Identifier: Apache-2.0

//! Guest pages the devices wrote, for a live migration.
//!
//! KVM's dirty log sees the guest's writes (and KVM's own) but not the
//! VMM's: the data a disk read or a received frame puts into the
//! driver's buffers, and the used rings. While a migration tracks
//! ([`start`]), every such write marks its pages here (the writes happen
//! on the vCPU thread, in [`crate::chain::write_buffers`] and the queue
//! context's used-ring updates); the migration takes them ([`take`])
//! with each read of KVM's log. Off, marking is one relaxed atomic load.
//!
//! One VM per VMM process: the set is the process's.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

const PAGE_SIZE: u64 = 4096;

static TRACKING: AtomicBool = AtomicBool::new(false);
static PAGES: Mutex<BTreeSet<u64>> = Mutex::new(BTreeSet::new());

fn pages() -> std::sync::MutexGuard<'static, BTreeSet<u64>> {
    PAGES.lock().unwrap_or_else(|e| e.into_inner())
}

/// Starts tracking, with nothing marked.
pub fn start() {
    pages().clear();
    TRACKING.store(true, Ordering::SeqCst);
}

/// Stops tracking and forgets what was marked.
pub fn stop() {
    TRACKING.store(false, Ordering::SeqCst);
    pages().clear();
}

/// Marks `len` bytes at guest-physical `gpa` as written by a device.
pub fn mark(gpa: u64, len: u64) {
    if !TRACKING.load(Ordering::SeqCst) || len == 0 {
        return;
    }
    let first = gpa / PAGE_SIZE;
    let last = gpa.saturating_add(len - 1) / PAGE_SIZE;
    let mut p = pages();
    for page in first..=last {
        p.insert(page * PAGE_SIZE);
    }
}

/// The guest-physical addresses of the pages marked since the last call,
/// in order; clears them.
pub fn take() -> Vec<u64> {
    std::mem::take(&mut *pages()).into_iter().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marks_only_while_tracking() {
        // Other tests of this crate may write guest memory meanwhile (at
        // low addresses): look only at addresses no test memory has.
        const BASE: u64 = 0x7_0000_0000;
        let ours = |v: Vec<u64>| -> Vec<u64> { v.into_iter().filter(|a| *a >= BASE).collect() };
        mark(BASE, 1);
        start();
        mark(BASE + 0x1ff0, 0x20);
        mark(BASE + 0x5000, 0);
        assert_eq!(ours(take()), vec![BASE + 0x1000, BASE + 0x2000]);
        assert!(ours(take()).is_empty());
        stop();
        mark(BASE + 0x3000, 1);
        start();
        assert!(ours(take()).is_empty());
        stop();
    }
}
