// Copyright 2026 The ft-cloud-hypervisor authors.
// SPDX-License-Identifier: Apache-2.0

//! The channel's own threads (the reader, which is the failure detector,
//! and the writer, which alone writes the socket and sends the heartbeats)
//! run in the lowest real-time scheduling class when the process may use
//! it.
//!
//! Why: on a loaded host an ordinary thread can wait hundreds of
//! milliseconds for a CPU. Measured on the 2-CPU development machine at a
//! load average of 20-26 (`docs/ft-pair-report.md`, finding 2): heartbeat
//! threads woke up to 221 ms late, both sides of a pair went silent at the
//! same moments, and 3 of 5 pairs failed over without any failure. A
//! heartbeat that comes late is indistinguishable from a dead peer. These
//! threads use little CPU (a heartbeat every `heartbeat`; the reader
//! decrypts what the bounded window lets through and blocks otherwise),
//! so running them first costs the guest nothing measurable; cluster
//! membership daemons such as Corosync run with a real-time policy for
//! the same reason. Without the privilege (`EPERM`, or a cgroup with no
//! real-time budget) the threads keep the normal policy, and the failure
//! detector still does not count this side's own stalls against the peer
//! ([`super::record::RecordReader::detect_failure`]).

use std::sync::atomic::{AtomicBool, Ordering};

/// The real-time priority used (the lowest: above every normal thread,
/// below every other real-time one).
const PRIORITY: libc::c_int = 1;

/// Moves the calling thread to `SCHED_RR` at [`PRIORITY`]. Logs (once per
/// process) and keeps the normal policy when that is not permitted.
pub(super) fn raise_current_thread() {
    let param = libc::sched_param {
        sched_priority: PRIORITY,
    };
    // SAFETY: pid 0 is the calling thread; `param` is a valid, initialised
    // sched_param that outlives the call.
    let rc = unsafe { libc::sched_setscheduler(0, libc::SCHED_RR, &param) };
    if rc != 0 {
        static WARNED: AtomicBool = AtomicBool::new(false);
        if !WARNED.swap(true, Ordering::Relaxed) {
            log::info!(
                "logging channel: threads keep the normal scheduling policy ({}): \
                 a heavily loaded host may delay heartbeats",
                std::io::Error::last_os_error()
            );
        }
    }
}
