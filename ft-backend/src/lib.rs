// Copyright 2026 The ft-cloud-hypervisor authors.
// SPDX-License-Identifier: Apache-2.0

//! Fault tolerance: deterministic record and replay of a whole VM.
//!
//! The VMM plugs this crate into its seams:
//! - the **input seam** (`VcpuRunner::deliver_async_events` in `vmm`): in
//!   record mode every asynchronous event applied there (timer expiry,
//!   serial input, device event bytes) is logged with the exit count at
//!   which it was applied and that exit's identity; in replay mode the
//!   events come from the log instead of the host;
//! - the **clock seam** ([`clock::RecordingClock`], [`clock::ReplayClock`]):
//!   every value of guest-visible time a device reads is logged, or served
//!   from the log;
//! - the **exit seam**: guest-caused exits are counted; each logged entry
//!   names its exit so replay detects divergence;
//! - **micro-checkpoints**: when an event waited longer than `max_delay_us`
//!   without a synchronous exit, the recording VMM kicks the vCPU and logs
//!   the pages dirtied since the last checkpoint plus vCPU and device state;
//!   replay applies them at its last synchronous exit.
//!
//! The log format is described in [`log`] and in `ft-backend/README.md`.

pub mod channel;
pub mod clock;
pub mod codec;
pub mod debug;
pub mod digest;
pub mod entry;
pub mod inspect;
pub mod live;
pub mod log;
pub mod log_read;
pub mod log_thread;
pub mod pair;
pub mod recorder;
pub mod replayer;
pub mod report;
pub mod stream;
pub mod symbols;
pub mod tiebreak;

pub use debug::DebugEntry;
pub use entry::{Checkpoint, EndReason, Entry, Event, ExitId, Setup};
pub use log::{LogError, LogHeader, LogReader, LogStream, LogWriter};
pub use recorder::{RecordError, Recorder};
pub use replayer::{ReplayError, Replayer};

/// An error and its causes, on one line (`a: b: c`): how errors are
/// printed, once, at the top.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cause = c.source();
    }
    s
}
