// Copyright 2026 The ft-cloud-hypervisor authors.
// SPDX-License-Identifier: Apache-2.0

//! The logging channel: one TCP connection from the primary to the backup
//! carrying the log's frames, progress, acks and heartbeats, every record
//! authenticated and encrypted.
//!
//! # Why Noise (`snow`) rather than TLS 1.3 with a PSK (`rustls`)
//!
//! Both give what the pair needs: keys derived from the shared key file and
//! fresh randomness from both sides (forward secrecy for a session's log),
//! authenticated encryption of every record, and refusal of replayed,
//! reordered or other-session records. The difference is weight and fit:
//! - `snow` with only ChaCha20-Poly1305, BLAKE2s and X25519 (no default
//!   features) adds a few small RustCrypto crates and no C or assembly;
//!   `rustls` needs a crypto provider (`ring`, with C and assembly, or
//!   `aws-lc-rs`, a large C build) plus its certificate machinery, which a
//!   PSK-only pair would not use (and external-PSK-only TLS 1.3 is not
//!   what `rustls` is built around).
//! - Noise's `NNpsk0` is exactly "both sides know one symmetric key": no
//!   certificates, names or sessions to configure, a two-message
//!   handshake, and a transport mode with an explicit nonce
//!   ([`snow::StatelessTransportState`]) that lets the sequence number of
//!   each record be its nonce and the two directions be used from two
//!   threads without a lock.
//!
//! # Shape
//! [`connect`] (the primary) and [`accept`] (the backup) run the handshake
//! (`handshake`: preamble with version check, Noise, hellos with
//! configuration checks) and return a [`Channel`]: a [`ChannelSender`] for
//! log frames and progress under flow control, a [`ChannelReceiver`] for
//! what the peer sent, and a [`ChannelHandle`] for acks (the Output Rule),
//! the channel's state and counters. The wire format is in `record`,
//! `message` and `ft-backend/README.md`.

mod ack;
mod beacon;
mod counters;
mod detector;
mod handshake;
mod key;
mod message;
mod priority;
mod record;
mod session;
mod writer;

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::Duration;

pub use ack::AckCoalescer;
pub use beacon::{
    BeaconError, BeaconOpener, BeaconProgress, BeaconSealer, Direction as BeaconDirection,
    BEACON_LEN, BEACON_MAGIC, BEACON_VERSION,
};
pub use counters::{ChannelCounters, CounterSnapshot};
pub use handshake::{
    refuse_stream, Established, HandshakeError, MAGIC, NOISE_PARAMS, PREAMBLE_LEN, PROTOCOL_VERSION,
};
pub use key::{ChannelKey, KeyError, KEY_LEN};
pub use message::{
    DiskDigest, ErrorCode, Hello, Message, MessageError, Position, Role, MAX_FRAMES_CHUNK,
    MAX_PLAINTEXT,
};
pub use record::{RecordError, HEADER_LEN as RECORD_HEADER_LEN, TAG_LEN};
pub use session::{ChannelHandle, ChannelReceiver, ChannelSender, Incoming, SessionError};

/// The channel's timing and buffer sizes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelConfig {
    /// A side that has sent nothing for this long sends a heartbeat.
    pub heartbeat: Duration,
    /// A side that has heard neither the stream nor the peer's beacon for
    /// this long declares the peer lost (the stream alone: after
    /// [`stream_timeout`](Self::stream_timeout)).
    pub timeout: Duration,
    /// The primary gives up reaching the backup (connecting and the whole
    /// handshake) after this long; also the handshake's bound on the
    /// backup.
    pub connect_timeout: Duration,
    /// Unacknowledged log-frame bytes after which the sender waits.
    pub window_bytes: usize,
    /// Bytes the receiver buffers before it stops reading.
    pub recv_buffer_bytes: usize,
}

/// The stream's own bound while the beacon is heard (see
/// [`ChannelConfig::stream_timeout`]).
pub const STREAM_TIMEOUT: Duration = Duration::from_secs(2);

impl ChannelConfig {
    /// How long the stream alone may bring nothing while the peer's beacon
    /// still comes: [`STREAM_TIMEOUT`], or `timeout` when longer. A stream
    /// stalled by lost segments resumes after TCP's retransmission, 200 ms
    /// later, then 400 and 800 ms when the resent segment is lost again
    /// (three losses of one segment in a row are 1.4 s of silence); a
    /// connection that carries nothing for 2 s while both sides send a
    /// heartbeat every 50 ms is dead, whatever its beacon says.
    pub fn stream_timeout(&self) -> Duration {
        self.timeout.max(STREAM_TIMEOUT)
    }
}

impl Default for ChannelConfig {
    /// Heartbeats every 50 ms (beacons every 25 ms) and a 300 ms timeout:
    /// six heartbeats (twelve beacons) lost before a failover, which rides
    /// out the scheduling stalls of a loaded 2-core host and the
    /// retransmission stalls of a lossy link (the beacon), yet leaves room
    /// for a client-visible failover gap under 500 ms. 10 s to reach the backup; an 8 MiB window and a 32 MiB
    /// receive buffer (a few large checkpoints).
    fn default() -> Self {
        ChannelConfig {
            heartbeat: Duration::from_millis(50),
            timeout: Duration::from_millis(300),
            connect_timeout: Duration::from_secs(10),
            window_bytes: 8 << 20,
            recv_buffer_bytes: 32 << 20,
        }
    }
}

impl Hello {
    /// This build's hello.
    pub fn new(role: Role, config_digest: u64, disks: Vec<DiskDigest>, generation: u64) -> Self {
        Hello {
            version: PROTOCOL_VERSION,
            role,
            config_digest,
            disks,
            generation,
        }
    }
}

/// An open channel.
#[derive(Debug)]
pub struct Channel {
    /// Sends log frames and progress. It owns the channel's threads:
    /// dropping it closes the channel, so the backup keeps it too.
    pub sender: ChannelSender,
    /// Receives what the peer sent.
    pub receiver: ChannelReceiver,
    /// Acks, state and counters, for any thread.
    pub handle: ChannelHandle,
    /// The peer's hello.
    pub peer: Hello,
    /// The peer's address.
    pub peer_addr: SocketAddr,
}

/// Connects to the backup at `peer` as primary; gives up after
/// `config.connect_timeout`.
pub fn connect(
    peer: SocketAddr,
    key: &ChannelKey,
    hello: &Hello,
    config: &ChannelConfig,
) -> Result<Channel, HandshakeError> {
    open(handshake::connect(peer, key, hello, config)?, config)
}

/// Accepts one primary on `listener` as backup. A refused connection is
/// an error for that connection only: the caller may accept again.
pub fn accept(
    listener: &TcpListener,
    key: &ChannelKey,
    hello: &Hello,
    config: &ChannelConfig,
) -> Result<Channel, HandshakeError> {
    open(handshake::accept(listener, key, hello, config)?, config)
}

/// Runs the handshake as backup on a connection already accepted (see
/// [`accept`]).
pub fn accept_stream(
    stream: TcpStream,
    peer_addr: SocketAddr,
    key: &ChannelKey,
    hello: &Hello,
    config: &ChannelConfig,
) -> Result<Channel, HandshakeError> {
    open(
        handshake::accept_stream(stream, peer_addr, key, hello, config)?,
        config,
    )
}

/// Connects to a backup waiting for a seed (FT VMotion): the handshake
/// only; the caller exchanges the seed's records, then
/// [`open_established`] starts the channel.
pub fn connect_established(
    peer: SocketAddr,
    key: &ChannelKey,
    hello: &Hello,
    config: &ChannelConfig,
) -> Result<Established, HandshakeError> {
    handshake::connect(peer, key, hello, config)
}

/// Accepts one primary on `listener`: the handshake only (see
/// [`connect_established`]).
pub fn accept_established(
    listener: &TcpListener,
    key: &ChannelKey,
    hello: &Hello,
    config: &ChannelConfig,
) -> Result<Established, HandshakeError> {
    handshake::accept(listener, key, hello, config)
}

/// Starts the channel on a connection whose handshake (and seed) is done.
pub fn open_established(
    est: Established,
    config: &ChannelConfig,
) -> Result<Channel, HandshakeError> {
    open(est, config)
}

fn open(est: Established, config: &ChannelConfig) -> Result<Channel, HandshakeError> {
    let peer = est.peer.clone();
    let peer_addr = est.peer_addr;
    let (sender, receiver, handle) = session::start(est, config).map_err(HandshakeError::Start)?;
    Ok(Channel {
        sender,
        receiver,
        handle,
        peer,
        peer_addr,
    })
}
