// Copyright 2026 The ft-cloud-hypervisor authors.
// SPDX-License-Identifier: Apache-2.0

//! The beacon: authenticated UDP heartbeats beside the stream.
//!
//! Heartbeats inside the TCP stream cannot tell a dead peer from a stream
//! that waits for one retransmission: a segment lost in a short link cut
//! holds back everything behind it until TCP resends it after its
//! retransmission timeout (at least 200 ms on Linux, doubling while cuts
//! repeat), so the receiver hears nothing for longer than the cut. Like
//! VMware FT (UDP heartbeating between the servers plus monitoring of the
//! logging traffic), each side also sends a datagram every half `heartbeat`
//! between the same two hosts; a datagram lost in a cut is simply
//! superseded by the next one. The failure rule (`detector`): the peer is
//! lost when neither the stream nor the beacon was heard for `timeout`,
//! or when the stream alone was silent for the stream timeout
//! ([`super::ChannelConfig::stream_timeout`]).
//!
//! ```text
//! datagram (89 bytes):
//!   magic     4  "FTBC"
//!   version   u8 1
//!   direction u8 0 = from the primary (the Noise initiator), 1 = from the backup
//!   reserved  u16 LE 0
//!   session   u64 LE  the first 8 bytes of the Noise handshake hash
//!   counter   u64 LE  1, 2, 3, ... per direction, strictly increasing
//!   sealed    ChaCha20-Poly1305 under this direction's Noise transport key,
//!             nonce = 2^63 + counter, of:
//!               session u64, direction u8, counter u64 (the header again:
//!               a changed header fails), frames_sent u64, frames_received
//!               u64, applied.exits u64, applied.guest_ns u64 (all LE)
//! ```
//!
//! The transport key is the stream's: the stream's records use nonces
//! `0..2^63` (their sequence numbers, which never get near), the beacon's
//! `2^63..2^64-1`, so no nonce is ever used twice under one key; the key
//! is fresh per session (forward secret) and known only to the two sides.
//! A datagram is refused, and counted, when it is malformed, names another
//! session or direction, repeats or goes back on a counter (a replay), or
//! does not authenticate (forged or corrupted).
//!
//! Addresses: the backup binds its beacon socket to its stream's local
//! address (the listener's port, over UDP); the primary binds an ephemeral
//! port on its stream's local address and sends to the backup's. The
//! backup answers the source address of the last authentic beacon, which
//! must be the stream peer's IP. A stream through a relay or NAT (the
//! peer's stream address is not the peer) gets no beacon: the stream alone
//! then decides, after `timeout`, as before.

use std::io;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::sync::Arc;
use std::time::{Duration, Instant};

use snow::StatelessTransportState;

use super::message::Position;

/// The beacon's magic.
pub const BEACON_MAGIC: [u8; 4] = *b"FTBC";

/// The beacon format's version.
pub const BEACON_VERSION: u8 = 1;

/// Bytes of the clear header.
const HEADER_LEN: usize = 24;

/// Bytes of the sealed payload's plaintext.
const PLAIN_LEN: usize = 8 + 1 + 8 + 8 + 8 + 8 + 8;

/// Bytes of the AEAD tag.
const TAG_LEN: usize = 16;

/// Bytes of a beacon datagram.
pub const BEACON_LEN: usize = HEADER_LEN + PLAIN_LEN + TAG_LEN;

/// The first nonce of the beacon's half of the nonce space.
const NONCE_BASE: u64 = 1 << 63;

/// The last counter (its nonce is one below `u64::MAX`, which Noise
/// reserves).
const MAX_COUNTER: u64 = u64::MAX - NONCE_BASE - 1;

/// How long the backup retries binding its beacon port (the previous
/// session's socket may still be closing).
const BIND_RETRY: Duration = Duration::from_secs(2);

/// Which way a beacon travels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// From the primary (the Noise initiator) to the backup.
    FromPrimary,
    /// From the backup to the primary.
    FromBackup,
}

impl Direction {
    fn byte(self) -> u8 {
        match self {
            Direction::FromPrimary => 0,
            Direction::FromBackup => 1,
        }
    }

    fn from_byte(b: u8) -> Option<Self> {
        match b {
            0 => Some(Direction::FromPrimary),
            1 => Some(Direction::FromBackup),
            _ => None,
        }
    }

    /// The other way.
    pub fn reverse(self) -> Self {
        match self {
            Direction::FromPrimary => Direction::FromBackup,
            Direction::FromBackup => Direction::FromPrimary,
        }
    }
}

/// What a beacon tells about the sender's stream.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BeaconProgress {
    /// Log-frame bytes the sender handed to the stream.
    pub frames_sent: u64,
    /// Log-frame bytes the sender received from the stream.
    pub frames_received: u64,
    /// How far the sender's replay has got (a backup; zero on a primary).
    pub applied: Position,
}

/// A beacon datagram that is not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BeaconError {
    /// Not the size of a beacon.
    #[error("a beacon is {BEACON_LEN} bytes, this datagram is {0}")]
    Length(usize),
    /// Not a beacon.
    #[error("not a beacon (bad magic)")]
    Magic,
    /// Another version of the format.
    #[error("beacon version {0}, we speak {BEACON_VERSION}")]
    Version(u8),
    /// A session other than this channel's.
    #[error("a beacon of another session ({found:#018x}, ours {ours:#018x})")]
    OtherSession {
        /// The datagram's session.
        found: u64,
        /// Ours.
        ours: u64,
    },
    /// Not the peer's direction (our own beacons reflected, or garbage).
    #[error("a beacon travelling the wrong way (direction byte {0})")]
    Direction(u8),
    /// A counter at or below the last one accepted.
    #[error("beacon {found} replayed or reordered (last accepted {last})")]
    Replayed {
        /// The datagram's counter.
        found: u64,
        /// The last accepted.
        last: u64,
    },
    /// The tag does not verify, or the sealed header differs.
    #[error("beacon {0} failed authentication (forged or corrupted)")]
    Authentication(u64),
    /// This side sent its last possible beacon.
    #[error("the beacon counter is exhausted")]
    Exhausted,
}

/// Seals this side's beacons.
pub struct BeaconSealer {
    transport: Arc<StatelessTransportState>,
    session: u64,
    direction: Direction,
    counter: u64,
}

impl BeaconSealer {
    /// A sealer for `direction` of `session`, with the transport whose
    /// sending key is that direction's.
    pub fn new(
        transport: Arc<StatelessTransportState>,
        session: u64,
        direction: Direction,
    ) -> Self {
        BeaconSealer {
            transport,
            session,
            direction,
            counter: 0,
        }
    }

    /// The next beacon.
    pub fn seal(&mut self, progress: &BeaconProgress) -> Result<[u8; BEACON_LEN], BeaconError> {
        if self.counter >= MAX_COUNTER {
            return Err(BeaconError::Exhausted);
        }
        self.counter += 1;
        let counter = self.counter;
        let mut out = [0u8; BEACON_LEN];
        out[..4].copy_from_slice(&BEACON_MAGIC);
        out[4] = BEACON_VERSION;
        out[5] = self.direction.byte();
        out[8..16].copy_from_slice(&self.session.to_le_bytes());
        out[16..24].copy_from_slice(&counter.to_le_bytes());
        let mut plain = [0u8; PLAIN_LEN];
        plain[..8].copy_from_slice(&self.session.to_le_bytes());
        plain[8] = self.direction.byte();
        plain[9..17].copy_from_slice(&counter.to_le_bytes());
        plain[17..25].copy_from_slice(&progress.frames_sent.to_le_bytes());
        plain[25..33].copy_from_slice(&progress.frames_received.to_le_bytes());
        plain[33..41].copy_from_slice(&progress.applied.exits.to_le_bytes());
        plain[41..49].copy_from_slice(&progress.applied.guest_ns.to_le_bytes());
        self.transport
            .write_message(NONCE_BASE + counter, &plain, &mut out[HEADER_LEN..])
            .map_err(|_| BeaconError::Exhausted)?;
        Ok(out)
    }
}

/// Opens the peer's beacons, refusing replays.
pub struct BeaconOpener {
    transport: Arc<StatelessTransportState>,
    session: u64,
    direction: Direction,
    last: u64,
}

// By hand, without the transport: nothing of the session's keys in a
// `Debug` print.
impl std::fmt::Debug for BeaconSealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BeaconSealer")
            .field("session", &format_args!("{:#018x}", self.session))
            .field("direction", &self.direction)
            .field("counter", &self.counter)
            .finish_non_exhaustive()
    }
}

impl std::fmt::Debug for BeaconOpener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BeaconOpener")
            .field("session", &format_args!("{:#018x}", self.session))
            .field("direction", &self.direction)
            .field("last", &self.last)
            .finish_non_exhaustive()
    }
}

fn le64(b: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[..8]);
    u64::from_le_bytes(a)
}

impl BeaconOpener {
    /// An opener for the peer's `direction` of `session`, with the
    /// transport whose receiving key is that direction's.
    pub fn new(
        transport: Arc<StatelessTransportState>,
        session: u64,
        direction: Direction,
    ) -> Self {
        BeaconOpener {
            transport,
            session,
            direction,
            last: 0,
        }
    }

    /// Checks and opens one datagram.
    pub fn open(&mut self, datagram: &[u8]) -> Result<BeaconProgress, BeaconError> {
        if datagram.len() != BEACON_LEN {
            return Err(BeaconError::Length(datagram.len()));
        }
        if datagram[..4] != BEACON_MAGIC {
            return Err(BeaconError::Magic);
        }
        if datagram[4] != BEACON_VERSION {
            return Err(BeaconError::Version(datagram[4]));
        }
        if Direction::from_byte(datagram[5]) != Some(self.direction) || datagram[6..8] != [0, 0] {
            return Err(BeaconError::Direction(datagram[5]));
        }
        let session = le64(&datagram[8..16]);
        if session != self.session {
            return Err(BeaconError::OtherSession {
                found: session,
                ours: self.session,
            });
        }
        let counter = le64(&datagram[16..24]);
        if counter <= self.last || counter > MAX_COUNTER {
            return Err(BeaconError::Replayed {
                found: counter,
                last: self.last,
            });
        }
        let mut plain = [0u8; PLAIN_LEN + TAG_LEN];
        let n = self
            .transport
            .read_message(NONCE_BASE + counter, &datagram[HEADER_LEN..], &mut plain)
            .map_err(|_| BeaconError::Authentication(counter))?;
        if n != PLAIN_LEN
            || le64(&plain[..8]) != session
            || plain[8] != datagram[5]
            || le64(&plain[9..17]) != counter
        {
            return Err(BeaconError::Authentication(counter));
        }
        self.last = counter;
        Ok(BeaconProgress {
            frames_sent: le64(&plain[17..25]),
            frames_received: le64(&plain[25..33]),
            applied: Position {
                exits: le64(&plain[33..41]),
                guest_ns: le64(&plain[41..49]),
            },
        })
    }
}

/// The session id both sides derive from the Noise handshake hash.
pub fn session_id(handshake_hash: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    let n = handshake_hash.len().min(8);
    a[..n].copy_from_slice(&handshake_hash[..n]);
    u64::from_le_bytes(a)
}

/// One side's beacon socket.
#[derive(Debug)]
pub struct BeaconSocket {
    socket: UdpSocket,
    peer_ip: IpAddr,
    /// Where beacons go: the backup's stream address (a primary), the last
    /// authentic beacon's source (a backup).
    dest: Option<SocketAddr>,
}

impl BeaconSocket {
    /// Opens this side's socket beside a stream from `local` to `peer`.
    pub fn open(local: SocketAddr, peer: SocketAddr, primary: bool) -> io::Result<Self> {
        let socket = if primary {
            UdpSocket::bind(SocketAddr::new(local.ip(), 0))?
        } else {
            let deadline = Instant::now() + BIND_RETRY;
            loop {
                match UdpSocket::bind(local) {
                    Ok(s) => break s,
                    Err(e) if e.kind() == io::ErrorKind::AddrInUse && Instant::now() < deadline => {
                        std::thread::sleep(Duration::from_millis(10));
                    }
                    Err(e) => return Err(e),
                }
            }
        };
        Ok(BeaconSocket {
            socket,
            peer_ip: peer.ip(),
            dest: primary.then_some(peer),
        })
    }

    /// Sends a beacon; false when there is nowhere to send yet or the
    /// network refused it (a cut link: the next one may pass).
    pub fn send(&self, beacon: &[u8]) -> bool {
        match self.dest {
            Some(dest) => self.socket.send_to(beacon, dest).is_ok(),
            None => false,
        }
    }

    /// Waits at most `wait` (at least 1 ms) for a datagram from the peer's
    /// IP; returns its length and source. Errors (an ICMP error reported
    /// on the socket, a timeout) are `None`.
    pub fn recv(&self, buf: &mut [u8], wait: Duration) -> Option<(usize, SocketAddr)> {
        let wait = wait.max(Duration::from_millis(1));
        if self.socket.set_read_timeout(Some(wait)).is_err() {
            std::thread::sleep(wait);
            return None;
        }
        match self.socket.recv_from(buf) {
            Ok((n, from)) if from.ip() == self.peer_ip => Some((n, from)),
            _ => None,
        }
    }

    /// A datagram from the peer's IP already waiting in the socket, without
    /// waiting.
    pub fn try_recv(&self, buf: &mut [u8]) -> Option<(usize, SocketAddr)> {
        if self.socket.set_nonblocking(true).is_err() {
            return None;
        }
        let got = loop {
            match self.socket.recv_from(buf) {
                Ok((n, from)) if from.ip() == self.peer_ip => break Some((n, from)),
                // Another host's datagram, or an ICMP error: look further.
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break None,
                Err(_) => {}
            }
        };
        let _ = self.socket.set_nonblocking(false);
        got
    }

    /// Sends later beacons to `from` (a backup learns the primary's port
    /// from its authentic beacons).
    pub fn answer_to(&mut self, from: SocketAddr) {
        self.dest = Some(from);
    }
}

#[cfg(test)]
mod tests {
    use snow::Builder;

    use super::*;

    /// A real Noise session's two transports (initiator, responder).
    fn sessions(
        psk: u8,
    ) -> (
        Arc<StatelessTransportState>,
        Arc<StatelessTransportState>,
        u64,
    ) {
        let params: snow::params::NoiseParams = super::super::NOISE_PARAMS.parse().unwrap();
        let key = [psk; 32];
        let b = || Builder::new(params.clone()).psk(0, &key).unwrap();
        let mut i = b().build_initiator().unwrap();
        let mut r = b().build_responder().unwrap();
        let (mut m, mut p) = ([0u8; 256], [0u8; 256]);
        let n = i.write_message(&[], &mut m).unwrap();
        r.read_message(&m[..n], &mut p).unwrap();
        let n = r.write_message(&[], &mut m).unwrap();
        i.read_message(&m[..n], &mut p).unwrap();
        let sid = session_id(i.get_handshake_hash());
        assert_eq!(sid, session_id(r.get_handshake_hash()));
        (
            Arc::new(i.into_stateless_transport_mode().unwrap()),
            Arc::new(r.into_stateless_transport_mode().unwrap()),
            sid,
        )
    }

    fn progress(n: u64) -> BeaconProgress {
        BeaconProgress {
            frames_sent: n,
            frames_received: n + 1,
            applied: Position {
                exits: n + 2,
                guest_ns: n + 3,
            },
        }
    }

    fn link() -> (BeaconSealer, BeaconOpener) {
        let (i, r, sid) = sessions(7);
        (
            BeaconSealer::new(i, sid, Direction::FromPrimary),
            BeaconOpener::new(r, sid, Direction::FromPrimary),
        )
    }

    #[test]
    fn beacons_round_trip_both_ways() {
        let (i, r, sid) = sessions(1);
        let mut up = BeaconSealer::new(Arc::clone(&i), sid, Direction::FromPrimary);
        let mut up_rx = BeaconOpener::new(Arc::clone(&r), sid, Direction::FromPrimary);
        let mut down = BeaconSealer::new(r, sid, Direction::FromBackup);
        let mut down_rx = BeaconOpener::new(i, sid, Direction::FromBackup);
        for n in 0..5 {
            let b = up.seal(&progress(n)).unwrap();
            assert_eq!(b.len(), BEACON_LEN);
            assert_eq!(up_rx.open(&b), Ok(progress(n)));
            let b = down.seal(&progress(100 + n)).unwrap();
            assert_eq!(down_rx.open(&b), Ok(progress(100 + n)));
        }
    }

    #[test]
    fn a_lost_beacon_is_skipped_but_a_replay_is_refused() {
        let (mut s, mut o) = link();
        let b1 = s.seal(&progress(1)).unwrap();
        let _lost = s.seal(&progress(2)).unwrap();
        let b3 = s.seal(&progress(3)).unwrap();
        assert_eq!(o.open(&b1), Ok(progress(1)));
        assert_eq!(o.open(&b3), Ok(progress(3)));
        assert_eq!(
            o.open(&b3),
            Err(BeaconError::Replayed { found: 3, last: 3 })
        );
        assert_eq!(
            o.open(&b1),
            Err(BeaconError::Replayed { found: 1, last: 3 })
        );
        // A late one (reordered) is refused too: the counter only rises.
        assert_eq!(
            o.open(&_lost),
            Err(BeaconError::Replayed { found: 2, last: 3 })
        );
    }

    #[test]
    fn forged_and_corrupted_beacons_are_refused() {
        let (mut s, mut o) = link();
        let good = s.seal(&progress(9)).unwrap();
        // Every byte of the sealed part and of the header fields bound in it.
        for i in (8..24).chain(HEADER_LEN..BEACON_LEN) {
            let mut bad = good;
            bad[i] ^= 0x40;
            assert!(o.open(&bad).is_err(), "byte {i} changed and accepted");
        }
        // A counter rewritten upwards does not verify (nonce differs), and
        // does not advance the replay window.
        let mut ahead = good;
        ahead[16..24].copy_from_slice(&1000u64.to_le_bytes());
        assert_eq!(o.open(&ahead), Err(BeaconError::Authentication(1000)));
        assert_eq!(o.open(&good), Ok(progress(9)));
        // Sealed by someone with another key, same session id and counter.
        let (i2, _, _) = sessions(8);
        let mut forger = BeaconSealer::new(i2, o.session, Direction::FromPrimary);
        let forged = forger.seal(&progress(1)).unwrap();
        let mut forged2 = forged;
        forged2[16..24].copy_from_slice(&2u64.to_le_bytes());
        assert!(matches!(
            o.open(&forged2),
            Err(BeaconError::Authentication(2))
        ));
    }

    #[test]
    fn other_sessions_directions_and_shapes_are_refused() {
        let (mut s, mut o) = link();
        // Another session (fresh ephemeral keys, same key file).
        let (i2, _, sid2) = sessions(7);
        assert_ne!(sid2, o.session);
        let mut other = BeaconSealer::new(i2, sid2, Direction::FromPrimary);
        let b = other.seal(&progress(1)).unwrap();
        assert!(matches!(o.open(&b), Err(BeaconError::OtherSession { .. })));
        // The other session's beacon relabelled with our session id.
        let mut relabelled = b;
        relabelled[8..16].copy_from_slice(&o.session.to_le_bytes());
        assert_eq!(o.open(&relabelled), Err(BeaconError::Authentication(1)));
        // Our own beacon reflected back at us.
        let mut back =
            BeaconOpener::new(Arc::clone(&s.transport), s.session, Direction::FromBackup);
        let mine = s.seal(&progress(1)).unwrap();
        assert_eq!(back.open(&mine), Err(BeaconError::Direction(0)));
        // Shapes.
        assert_eq!(o.open(&mine[..40]), Err(BeaconError::Length(40)));
        let mut magic = mine;
        magic[0] = b'X';
        assert_eq!(o.open(&magic), Err(BeaconError::Magic));
        let mut version = mine;
        version[4] = 9;
        assert_eq!(o.open(&version), Err(BeaconError::Version(9)));
        // Refusals leave the real stream of beacons intact.
        assert_eq!(o.open(&mine), Ok(progress(1)));
    }

    #[test]
    fn debug_prints_show_no_key_material() {
        let (mut s, o) = link();
        s.seal(&progress(1)).unwrap();
        let shown = format!("{s:?} {o:?}");
        assert!(shown.starts_with("BeaconSealer { session: 0x"), "{shown}");
        assert!(!shown.contains("transport"), "{shown}");
        assert!(shown.contains("counter: 1"), "{shown}");
    }

    #[test]
    fn the_counter_never_wraps() {
        let (mut s, _) = link();
        s.counter = MAX_COUNTER;
        assert_eq!(s.seal(&progress(0)), Err(BeaconError::Exhausted));
    }
}
