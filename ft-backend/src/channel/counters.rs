// Copyright 2026 The ft-cloud-hypervisor authors.
// SPDX-License-Identifier: Apache-2.0

//! The channel's counters, for `vm.counters`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Live counters, updated by the channel's threads.
#[derive(Debug, Default)]
pub struct ChannelCounters {
    bytes_sent: AtomicU64,
    bytes_received: AtomicU64,
    records_sent: AtomicU64,
    records_received: AtomicU64,
    frame_bytes_sent: AtomicU64,
    frame_bytes_received: AtomicU64,
    progress_sent: AtomicU64,
    progress_received: AtomicU64,
    acks_sent: AtomicU64,
    acks_received: AtomicU64,
    ack_round_trips: AtomicU64,
    ack_rtt_us_total: AtomicU64,
    ack_rtt_us_max: AtomicU64,
    heartbeats_sent: AtomicU64,
    heartbeats_received: AtomicU64,
    window_waits: AtomicU64,
    rx_wait_us_max: AtomicU64,
    send_gap_us_max: AtomicU64,
    heartbeat_late_us_max: AtomicU64,
    send_lock_us_max: AtomicU64,
    send_write_us_max: AtomicU64,
    detector_stall_us_max: AtomicU64,
    send_queue_us_max: AtomicU64,
    queue_full_waits: AtomicU64,
    beacons_sent: AtomicU64,
    beacon_send_failures: AtomicU64,
    beacons_received: AtomicU64,
    beacons_refused: AtomicU64,
    silences_bridged: AtomicU64,
}

/// A copy of the counters at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CounterSnapshot {
    /// Bytes written to the socket (records, headers included).
    pub bytes_sent: u64,
    /// Bytes read from the socket.
    pub bytes_received: u64,
    /// Records written.
    pub records_sent: u64,
    /// Records read and accepted.
    pub records_received: u64,
    /// Log-frame bytes sent.
    pub frame_bytes_sent: u64,
    /// Log-frame bytes received.
    pub frame_bytes_received: u64,
    /// Progress messages sent.
    pub progress_sent: u64,
    /// Progress messages received.
    pub progress_received: u64,
    /// Acks sent.
    pub acks_sent: u64,
    /// Acks received.
    pub acks_received: u64,
    /// Progress messages acknowledged (a round trip each).
    pub ack_round_trips: u64,
    /// Sum of those round trips' times, in microseconds.
    pub ack_rtt_us_total: u64,
    /// The longest of them, in microseconds.
    pub ack_rtt_us_max: u64,
    /// Heartbeats sent.
    pub heartbeats_sent: u64,
    /// Heartbeats received.
    pub heartbeats_received: u64,
    /// Times a sender waited for the unacknowledged window.
    pub window_waits: u64,
    /// The longest wait for the next record from the peer, in
    /// microseconds: how close the channel came to the failure timeout.
    pub rx_wait_us_max: u64,
    /// The longest time this side sent nothing, in microseconds (the
    /// peer's view of [`rx_wait_us_max`](Self::rx_wait_us_max)).
    pub send_gap_us_max: u64,
    /// The most a heartbeat went out later than due (`heartbeat` after the
    /// last write), in microseconds (scheduling delay of the writer).
    pub heartbeat_late_us_max: u64,
    /// The longest wait of a sender for the writer queue's lock, in
    /// microseconds (another sender pushing, or the writer taking).
    pub send_lock_us_max: u64,
    /// The longest write of the writer's records into the socket, in
    /// microseconds (the peer's receive window full).
    pub send_write_us_max: u64,
    /// The longest time the receiving thread did not run while it waited
    /// for the peer, in microseconds: not counted as the peer's silence.
    pub detector_stall_us_max: u64,
    /// The longest time a message waited in the writer's queue before it
    /// was written, in microseconds.
    pub send_queue_us_max: u64,
    /// Times a sender waited for room in the writer's queue.
    pub queue_full_waits: u64,
    /// Beacons sent.
    pub beacons_sent: u64,
    /// Beacons the network refused to send (a cut link), or that had
    /// nowhere to go yet (a backup before the primary's first beacon).
    pub beacon_send_failures: u64,
    /// Authentic beacons received.
    pub beacons_received: u64,
    /// Datagrams refused: malformed, another session or direction,
    /// replayed, forged.
    pub beacons_refused: u64,
    /// Times the stream alone was silent for the failure timeout while
    /// the beacon kept the peer alive (each a false failover of a
    /// stream-only detector).
    pub silences_bridged: u64,
}

impl CounterSnapshot {
    /// The counters by name, as `vm.counters` lists them.
    pub fn pairs(&self) -> [(&'static str, u64); 29] {
        [
            ("bytes_sent", self.bytes_sent),
            ("bytes_received", self.bytes_received),
            ("records_sent", self.records_sent),
            ("records_received", self.records_received),
            ("frame_bytes_sent", self.frame_bytes_sent),
            ("frame_bytes_received", self.frame_bytes_received),
            ("progress_sent", self.progress_sent),
            ("progress_received", self.progress_received),
            ("acks_sent", self.acks_sent),
            ("acks_received", self.acks_received),
            ("ack_round_trips", self.ack_round_trips),
            ("ack_rtt_us_total", self.ack_rtt_us_total),
            ("ack_rtt_us_max", self.ack_rtt_us_max),
            ("heartbeats_sent", self.heartbeats_sent),
            ("heartbeats_received", self.heartbeats_received),
            ("window_waits", self.window_waits),
            ("rx_wait_us_max", self.rx_wait_us_max),
            ("send_gap_us_max", self.send_gap_us_max),
            ("heartbeat_late_us_max", self.heartbeat_late_us_max),
            ("send_lock_us_max", self.send_lock_us_max),
            ("send_write_us_max", self.send_write_us_max),
            ("detector_stall_us_max", self.detector_stall_us_max),
            ("send_queue_us_max", self.send_queue_us_max),
            ("queue_full_waits", self.queue_full_waits),
            ("beacons_sent", self.beacons_sent),
            ("beacon_send_failures", self.beacon_send_failures),
            ("beacons_received", self.beacons_received),
            ("beacons_refused", self.beacons_refused),
            ("silences_bridged", self.silences_bridged),
        ]
    }
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

fn add(c: &AtomicU64, n: u64) {
    c.fetch_add(n, Ordering::Relaxed);
}

impl ChannelCounters {
    pub(crate) fn sent_records(&self, records: u64, wire: u64) {
        add(&self.bytes_sent, wire);
        add(&self.records_sent, records);
    }

    pub(crate) fn received(&self, wire: usize) {
        add(&self.bytes_received, wire as u64);
        add(&self.records_received, 1);
    }

    pub(crate) fn frames_sent(&self, n: usize) {
        add(&self.frame_bytes_sent, n as u64);
    }

    pub(crate) fn frames_received(&self, n: usize) {
        add(&self.frame_bytes_received, n as u64);
    }

    pub(crate) fn progress_sent(&self) {
        add(&self.progress_sent, 1);
    }

    pub(crate) fn progress_received(&self) {
        add(&self.progress_received, 1);
    }

    pub(crate) fn ack_sent(&self) {
        add(&self.acks_sent, 1);
    }

    pub(crate) fn ack_received(&self) {
        add(&self.acks_received, 1);
    }

    pub(crate) fn round_trip(&self, rtt: Duration) {
        let us = u64::try_from(rtt.as_micros()).unwrap_or(u64::MAX);
        add(&self.ack_round_trips, 1);
        add(&self.ack_rtt_us_total, us);
        self.ack_rtt_us_max.fetch_max(us, Ordering::Relaxed);
    }

    pub(crate) fn heartbeat_sent(&self) {
        add(&self.heartbeats_sent, 1);
    }

    pub(crate) fn heartbeat_received(&self) {
        add(&self.heartbeats_received, 1);
    }

    pub(crate) fn rx_wait(&self, waited: Duration) {
        self.rx_wait_us_max
            .fetch_max(micros(waited), Ordering::Relaxed);
    }

    pub(crate) fn send_gap(&self, gap: Duration) {
        self.send_gap_us_max
            .fetch_max(micros(gap), Ordering::Relaxed);
    }

    pub(crate) fn heartbeat_late(&self, late: Duration) {
        self.heartbeat_late_us_max
            .fetch_max(micros(late), Ordering::Relaxed);
    }

    pub(crate) fn send_lock(&self, waited: Duration) {
        self.send_lock_us_max
            .fetch_max(micros(waited), Ordering::Relaxed);
    }

    pub(crate) fn detector_stall(&self, stalled: Duration) {
        self.detector_stall_us_max
            .fetch_max(micros(stalled), Ordering::Relaxed);
    }

    pub(crate) fn send_write(&self, took: Duration) {
        self.send_write_us_max
            .fetch_max(micros(took), Ordering::Relaxed);
    }

    pub(crate) fn send_queue(&self, waited: Duration) {
        self.send_queue_us_max
            .fetch_max(micros(waited), Ordering::Relaxed);
    }

    pub(crate) fn queue_full_wait(&self) {
        add(&self.queue_full_waits, 1);
    }

    pub(crate) fn beacon_sent(&self) {
        add(&self.beacons_sent, 1);
    }

    pub(crate) fn beacon_send_failed(&self) {
        add(&self.beacon_send_failures, 1);
    }

    pub(crate) fn beacon_received(&self) {
        add(&self.beacons_received, 1);
    }

    pub(crate) fn beacon_refused(&self) {
        add(&self.beacons_refused, 1);
    }

    pub(crate) fn silence_bridged(&self) {
        add(&self.silences_bridged, 1);
    }

    pub(crate) fn frame_bytes_sent(&self) -> u64 {
        self.frame_bytes_sent.load(Ordering::Relaxed)
    }

    pub(crate) fn frame_bytes_received(&self) -> u64 {
        self.frame_bytes_received.load(Ordering::Relaxed)
    }

    pub(crate) fn window_wait(&self) {
        add(&self.window_waits, 1);
    }

    /// A copy of every counter.
    pub fn snapshot(&self) -> CounterSnapshot {
        let g = |c: &AtomicU64| c.load(Ordering::Relaxed);
        CounterSnapshot {
            bytes_sent: g(&self.bytes_sent),
            bytes_received: g(&self.bytes_received),
            records_sent: g(&self.records_sent),
            records_received: g(&self.records_received),
            frame_bytes_sent: g(&self.frame_bytes_sent),
            frame_bytes_received: g(&self.frame_bytes_received),
            progress_sent: g(&self.progress_sent),
            progress_received: g(&self.progress_received),
            acks_sent: g(&self.acks_sent),
            acks_received: g(&self.acks_received),
            ack_round_trips: g(&self.ack_round_trips),
            ack_rtt_us_total: g(&self.ack_rtt_us_total),
            ack_rtt_us_max: g(&self.ack_rtt_us_max),
            heartbeats_sent: g(&self.heartbeats_sent),
            heartbeats_received: g(&self.heartbeats_received),
            window_waits: g(&self.window_waits),
            rx_wait_us_max: g(&self.rx_wait_us_max),
            send_gap_us_max: g(&self.send_gap_us_max),
            heartbeat_late_us_max: g(&self.heartbeat_late_us_max),
            send_lock_us_max: g(&self.send_lock_us_max),
            send_write_us_max: g(&self.send_write_us_max),
            detector_stall_us_max: g(&self.detector_stall_us_max),
            send_queue_us_max: g(&self.send_queue_us_max),
            queue_full_waits: g(&self.queue_full_waits),
            beacons_sent: g(&self.beacons_sent),
            beacon_send_failures: g(&self.beacon_send_failures),
            beacons_received: g(&self.beacons_received),
            beacons_refused: g(&self.beacons_refused),
            silences_bridged: g(&self.silences_bridged),
        }
    }
}
