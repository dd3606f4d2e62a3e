// Copyright 2026 The ft-cloud-hypervisor authors.
// SPDX-License-Identifier: Apache-2.0

//! The failure detector: the peer is lost when neither the stream nor the
//! beacon ([`super::beacon`]) was heard for `timeout`.
//!
//! Why not the stream alone: TCP delivers in order, so one lost segment
//! holds back everything behind it, the peer's heartbeats included, until
//! TCP resends it after its retransmission timeout (at least 200 ms on
//! Linux, doubling when the resent segment is lost too). On a lossy
//! logging link (the chaos campaign's `slow-link`: 1-3 % loss under a
//! rate limit) the stream of a live peer then falls silent for 200-600 ms
//! now and then, and a 300 ms timeout on the stream alone ended a pair
//! whose primary was alive (seed 7007). The beacon is a datagram: one
//! lost is superseded by the next, a quarter heartbeat later at most, so
//! a live peer is heard through a stream stall. A stream silent for the
//! stream timeout ([`super::ChannelConfig::stream_timeout`], 2 s) is still
//! a lost peer while beacons come: the reader's own bound (a connection
//! that carries nothing is dead, whatever its beacon says).
//!
//! Like the reader's bound ([`super::record::RecordReader::detect_failure`]),
//! the detector counts only time in which it ran: it wakes at least every
//! tick (`timeout / 6`), and a wake later than a tick and a half counts as
//! a tick and a half, so a stall of this side (a loaded host, a CPU
//! cgroup's budget spent) is not blamed on the peer.
//!
//! Why the beacon has a thread of its own and is not sent by the writer
//! ([`super::writer`]): the writer blocks in `write` whenever the socket's
//! send buffer is full, which is exactly what a slow link does to it (and
//! a lossy one, while TCP waits to retransmit). A beacon sent by the writer
//! would stall with the stream it is meant to stand beside. The beacon
//! thread never writes the stream and takes no lock an ordinary thread may
//! hold for long (it only *tries* the lock of the applied position); like
//! the reader and the writer it runs in the real-time class when permitted
//! ([`super::priority`]).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, TryLockError};
use std::time::{Duration, Instant};

use super::beacon::{BeaconOpener, BeaconProgress, BeaconSealer, BeaconSocket, BEACON_LEN};
use super::record::detector_tick;
use super::session::{lock, SessionError, Shared};

/// What the detector watches of the stream.
#[derive(Debug, Default)]
pub(super) struct Liveness {
    /// Reads that brought bytes from the peer (the reader counts them).
    pub(super) stream_heard: Arc<AtomicU64>,
    /// The reader waits on the socket. While it does not (it is queueing
    /// a record into a full receive buffer), the stream's silence is this
    /// side's doing, not the peer's.
    reader_waiting: AtomicBool,
    /// What the peer's last authentic beacon said.
    peer_beacon: Mutex<Option<BeaconProgress>>,
}

impl Liveness {
    /// The reader starts waiting for the next record.
    pub(super) fn reader_waits(&self) {
        self.reader_waiting.store(true, Ordering::Relaxed);
    }

    /// The reader has a record (or failed).
    pub(super) fn reader_busy(&self) {
        self.reader_waiting.store(false, Ordering::Relaxed);
    }

    /// What the peer's last authentic beacon said.
    pub(super) fn peer_beacon(&self) -> Option<BeaconProgress> {
        *self
            .peer_beacon
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

/// This side's end of the beacon.
#[derive(Debug)]
pub(super) struct Beacon {
    pub(super) socket: BeaconSocket,
    pub(super) sealer: BeaconSealer,
    pub(super) opener: BeaconOpener,
}

/// The beacon thread's loop: sends a beacon every half heartbeat, takes
/// the peer's, and declares the peer lost when neither the stream nor the
/// beacon was heard for `timeout` (counting only time in which it ran).
pub(super) fn beacon_loop(shared: &Shared, mut beacon: Beacon) {
    // Twice per heartbeat: once a stall or a cut ends, the peer is heard
    // again within half a heartbeat (89-byte datagrams: 40 a second each
    // way at the default 50 ms).
    let period = (shared.config.heartbeat / 2).max(Duration::from_millis(1));
    let timeout = shared.config.timeout;
    let tick = detector_tick(timeout);
    let liveness = &shared.liveness;
    let mut applied = BeaconProgress::default().applied;
    let mut next_send = Instant::now();
    let mut buf = [0u8; 2 * BEACON_LEN];
    let mut last_wake = Instant::now();
    let mut stream_seen = liveness.stream_heard.load(Ordering::Relaxed);
    let mut silence = Duration::ZERO;
    // The stream's silence alone (beacons heard) since it last brought
    // something, for `silences_bridged`.
    let mut stream_silence = Duration::ZERO;
    let mut bridged = false;
    // An authentic beacon since the last turn.
    let mut heard = false;
    loop {
        if shared.lost().is_some() {
            return;
        }
        let now = Instant::now();
        if now >= next_send {
            // Never wait for the lock: the backup's replay (an ordinary
            // thread) holds it to store its position; the last one read
            // serves meanwhile.
            match shared.applied.try_lock() {
                Ok(p) => applied = *p,
                Err(TryLockError::Poisoned(p)) => applied = *p.into_inner(),
                Err(TryLockError::WouldBlock) => {}
            }
            let progress = BeaconProgress {
                frames_sent: shared.counters.frame_bytes_sent(),
                frames_received: shared.counters.frame_bytes_received(),
                applied,
            };
            match beacon.sealer.seal(&progress) {
                Ok(b) if beacon.socket.send(&b) => shared.counters.beacon_sent(),
                Ok(_) => shared.counters.beacon_send_failed(),
                // After 2^63 beacons: the stream alone decides.
                Err(_) => next_send = now + Duration::from_secs(3600),
            }
            next_send = next_send.max(now + period);
        }
        // The beacons already waiting first: a thread the scheduler held
        // back must not take them for silence.
        while let Some((n, from)) = beacon.socket.try_recv(&mut buf) {
            heard |= take(shared, &mut beacon, &buf[..n], from);
        }
        let now = Instant::now();
        let counted = now
            .saturating_duration_since(last_wake)
            .min(tick + tick / 2);
        last_wake = now;
        let stream_now = liveness.stream_heard.load(Ordering::Relaxed);
        let stream = stream_now != stream_seen || !liveness.reader_waiting.load(Ordering::Relaxed);
        stream_seen = stream_now;
        if stream {
            stream_silence = Duration::ZERO;
            bridged = false;
        } else {
            stream_silence += counted;
        }
        if std::mem::take(&mut heard) || stream {
            silence = Duration::ZERO;
        } else {
            silence += counted;
            if silence >= timeout {
                shared.lose(SessionError::Silent {
                    ms: timeout.as_millis(),
                });
                return;
            }
        }
        if stream_silence >= timeout && !bridged {
            // The stream alone would have ended the pair here; the beacon
            // was heard within the timeout.
            bridged = true;
            shared.counters.silence_bridged();
            log::warn!(
                "logging channel: the stream brought nothing for {} ms (a TCP \
                 retransmission?), the peer's beacon was heard {} ms ago",
                stream_silence.as_millis(),
                silence.as_millis()
            );
        }
        let wait = next_send
            .saturating_duration_since(Instant::now())
            .min(tick);
        if let Some((n, from)) = beacon.socket.recv(&mut buf, wait) {
            heard |= take(shared, &mut beacon, &buf[..n], from);
        }
    }
}

/// Checks one datagram; an authentic beacon is the peer heard.
fn take(shared: &Shared, beacon: &mut Beacon, datagram: &[u8], from: SocketAddr) -> bool {
    match beacon.opener.open(datagram) {
        Ok(progress) => {
            shared.counters.beacon_received();
            *lock(&shared.liveness.peer_beacon) = Some(progress);
            beacon.socket.answer_to(from);
            true
        }
        Err(e) => {
            log::debug!("logging channel: beacon refused: {e}");
            shared.counters.beacon_refused();
            false
        }
    }
}
