// Copyright 2026 The ft-cloud-hypervisor authors.
// SPDX-License-Identifier: Apache-2.0

//! The channel's reader thread: every record from the peer, acks applied
//! to the sender's window, frames and progress queued for the receiver,
//! acks sent back through the coalescer (see the parent module).

use super::*;

pub(super) fn reader_loop(shared: &Shared, mut reader: RecordReader) {
    let threshold = (shared.config.window_bytes / 4).max(1) as u64;
    let mut acks = AckCoalescer::new(threshold);
    let mut stall_seen = Duration::ZERO;
    loop {
        let waiting = Instant::now();
        shared.liveness.reader_waits();
        let received = reader.recv();
        shared.liveness.reader_busy();
        let waited = waiting.elapsed();
        shared.counters.rx_wait(waited);
        let stalled = reader.stall_max();
        if stalled > stall_seen {
            stall_seen = stalled;
            shared.counters.detector_stall(stalled);
            shared.slow(
                "did not run while waiting for the peer (not counted as its silence)",
                stalled,
            );
        }
        if received.is_ok() && waited >= shared.config.timeout / 2 {
            log::warn!(
                "logging channel: nothing arrived from the peer for {} ms (timeout {} ms)",
                waited.as_millis(),
                shared.config.timeout.as_millis()
            );
        }
        let (msg, wire) = match received {
            Ok(x) => x,
            Err(e) => {
                shared.lose(SessionError::Receive(Arc::new(e)));
                return;
            }
        };
        if shared.lost.get().is_some() && !matches!(shared.lost.get(), Some(SessionError::Closed)) {
            return;
        }
        shared.counters.received(wire);
        match msg {
            Message::LogFrames(bytes) => {
                let n = bytes.len();
                shared.counters.frames_received(n);
                if !shared.push(Incoming::LogFrames(bytes), &mut acks) {
                    return;
                }
                acks.frames(n);
            }
            Message::Progress(p) => {
                shared.counters.progress_received();
                if !shared.push(Incoming::Progress(p), &mut acks) {
                    return;
                }
                acks.progress(p);
            }
            Message::Ack {
                position,
                log_bytes,
                applied,
            } => {
                *lock(&shared.peer_applied) = applied;
                shared.on_ack(position, log_bytes);
            }
            Message::Heartbeat => shared.counters.heartbeat_received(),
            Message::Goodbye => {
                shared.lose(SessionError::Goodbye);
                return;
            }
            Message::Error { text, .. } => {
                shared.lose(SessionError::PeerError(text));
                return;
            }
            Message::Diverged { exit, reason } => {
                shared.lose(SessionError::PeerDiverged { exit, reason });
                return;
            }
            Message::Hello(_) => {
                shared.lose(SessionError::Protocol("a second hello"));
                return;
            }
        }
        if acks.due(reader.drained()) && shared.send_ack(&mut acks).is_err() {
            return;
        }
    }
}
