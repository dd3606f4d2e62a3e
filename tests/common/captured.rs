// Copyright 2026 The ft-cloud-hypervisor authors.
// SPDX-License-Identifier: Apache-2.0

//! What a VMM wrote (its serial console on a pipe or a pty), collected by a
//! reader thread while the test looks at it.

use std::sync::{Arc, Mutex, MutexGuard};

/// Output collected so far; clones share it.
#[derive(Clone, Debug, Default)]
pub struct Captured(Arc<Mutex<Vec<u8>>>);

impl Captured {
    fn bytes(&self) -> MutexGuard<'_, Vec<u8>> {
        self.0.lock().expect("output lock")
    }

    /// Appends what the reader read.
    pub fn append(&self, data: &[u8]) {
        self.bytes().extend_from_slice(data);
    }

    /// Everything so far, as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.bytes()).into_owned()
    }

    /// Bytes so far (a position to search from later).
    pub fn len(&self) -> usize {
        self.bytes().len()
    }

    /// Whether `needle` appears after byte `from`.
    pub fn contains_after(&self, needle: &str, from: usize) -> bool {
        self.bytes()
            .get(from..)
            .is_some_and(|tail| tail.windows(needle.len()).any(|w| w == needle.as_bytes()))
    }

    /// Takes everything collected.
    pub fn take(&self) -> Vec<u8> {
        std::mem::take(&mut *self.bytes())
    }
}
