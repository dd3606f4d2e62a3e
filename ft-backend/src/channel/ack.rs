// Copyright 2026 The ft-cloud-hypervisor authors.
// SPDX-License-Identifier: Apache-2.0

//! The receiving side's ack coalescer.
//!
//! The backup acknowledges what it has *received* (VMware's rule: taken
//! into its bounded receive buffer, not yet replayed). One ack covers
//! everything before it: the last progress position received and the total
//! of log-frame bytes. An ack is due when something new arrived and either
//! the input is drained (nothing more waits in the socket buffer this side
//! has read: a burst is acknowledged once, at its end) or the unacknowledged
//! bytes reach a threshold (a quarter of the sender's window, so a long
//! burst never stalls the sender), or before the receiver blocks on a full
//! receive buffer.

use super::message::Position;

/// Decides when the receiver sends an ack, and what it says.
#[derive(Debug, Clone)]
pub struct AckCoalescer {
    threshold: u64,
    received_bytes: u64,
    progress: Position,
    acked_bytes: u64,
    acked_progress: Position,
}

impl AckCoalescer {
    /// A coalescer that acks at the latest after `threshold` unacknowledged
    /// bytes.
    pub fn new(threshold: u64) -> Self {
        AckCoalescer {
            threshold: threshold.max(1),
            received_bytes: 0,
            progress: Position::default(),
            acked_bytes: 0,
            acked_progress: Position::default(),
        }
    }

    /// `n` bytes of log frames were received.
    pub fn frames(&mut self, n: usize) {
        self.received_bytes += n as u64;
    }

    /// A progress position was received.
    pub fn progress(&mut self, position: Position) {
        self.progress = self.progress.max(position);
    }

    /// Whether anything received is not acknowledged yet.
    pub fn pending(&self) -> bool {
        self.received_bytes != self.acked_bytes || self.progress != self.acked_progress
    }

    /// Whether to ack now; `drained`: nothing more is waiting to be read.
    pub fn due(&self, drained: bool) -> bool {
        self.pending() && (drained || self.received_bytes - self.acked_bytes >= self.threshold)
    }

    /// The ack to send (position, log bytes), marking it sent.
    pub fn take(&mut self) -> (Position, u64) {
        self.acked_bytes = self.received_bytes;
        self.acked_progress = self.progress;
        (self.progress, self.received_bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pos(exits: u64) -> Position {
        Position {
            exits,
            guest_ns: exits * 10,
        }
    }

    #[test]
    fn a_burst_is_acked_once_when_drained() {
        let mut c = AckCoalescer::new(1000);
        assert!(!c.due(true), "nothing received, nothing to ack");
        for _ in 0..5 {
            c.frames(100);
            assert!(!c.due(false));
        }
        c.progress(pos(7));
        assert!(!c.due(false));
        assert!(c.due(true));
        assert_eq!(c.take(), (pos(7), 500));
        assert!(!c.pending());
        assert!(!c.due(true));
    }

    #[test]
    fn a_long_burst_is_acked_at_the_threshold() {
        let mut c = AckCoalescer::new(1000);
        c.frames(999);
        assert!(!c.due(false));
        c.frames(1);
        assert!(c.due(false));
        assert_eq!(c.take(), (Position::default(), 1000));
        c.frames(10);
        assert!(!c.due(false));
    }

    #[test]
    fn a_progress_alone_is_acked_and_never_goes_back() {
        let mut c = AckCoalescer::new(1000);
        c.progress(pos(5));
        assert!(c.due(true));
        assert_eq!(c.take(), (pos(5), 0));
        c.progress(pos(3));
        assert!(!c.pending(), "an older position changes nothing");
    }
}
