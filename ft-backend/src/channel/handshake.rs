// Copyright 2026 The ft-cloud-hypervisor authors.
// SPDX-License-Identifier: Apache-2.0

//! Opening a channel: preamble, Noise handshake, hellos.
//!
//! ```text
//! 1. preamble, both ways at once, in clear (16 bytes):
//!      magic "CHFTCHAN", version u32 LE, reserved u32 LE (0)
//!    a peer with another version is refused here, with both versions named
//! 2. Noise_NNpsk0_25519_ChaChaPoly_BLAKE2s, the primary initiating; the
//!    prologue is "ft-cloud-hypervisor logging channel\0" + the primary's
//!    preamble + the backup's preamble (so a changed preamble fails too):
//!      -> u16 LE length, message 1 (psk, e)       48 bytes
//!      <- u16 LE length, message 2 (e, ee)        48 bytes
//!    a backup whose key differs cannot read message 1: it answers a
//!    length of 0 (refused) and closes; both sides report "authentication
//!    failed: wrong key?"
//! 3. records (`record`), each way: record 0 is the sender's hello; each
//!    side checks the other's (version, role, configuration digest, disk
//!    digests, generation). On a mismatch it sends an error record and
//!    closes; the peer finds the same mismatch in the hello it received.
//! ```

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use snow::{Builder, StatelessTransportState};

use super::key::ChannelKey;
use super::message::{ErrorCode, Hello, Message, Role};
use super::record::{RecordError, RecordReader, RecordWriter};
use super::ChannelConfig;

/// The channel protocol version this build speaks (5: the beacon beside
/// the stream, `beacon`, and the backup's `Diverged` message; 4 had the
/// beacon only).
pub const PROTOCOL_VERSION: u32 = 5;

/// The preamble's magic.
pub const MAGIC: [u8; 8] = *b"CHFTCHAN";

/// Bytes of the preamble.
pub const PREAMBLE_LEN: usize = 16;

/// The Noise protocol.
pub const NOISE_PARAMS: &str = "Noise_NNpsk0_25519_ChaChaPoly_BLAKE2s";

const PROLOGUE_LABEL: &[u8] = b"ft-cloud-hypervisor logging channel\0";

/// The pause between connection attempts while the backup is not up yet.
const RETRY_PAUSE: Duration = Duration::from_millis(50);

/// Opening a channel.
#[derive(Debug, thiserror::Error)]
pub enum HandshakeError {
    /// No connection within the connect timeout.
    #[error("cannot reach the peer at {peer} within {ms} ms")]
    Connect {
        /// The peer's address.
        peer: SocketAddr,
        /// The connect timeout.
        ms: u128,
        /// The last attempt's error.
        #[source]
        source: io::Error,
    },
    /// Waiting for a connection failed.
    #[error("cannot accept a connection")]
    Accept(#[source] io::Error),
    /// The socket failed during the handshake.
    #[error("the connection failed during the handshake")]
    Io(#[source] io::Error),
    /// The handshake took longer than the connect timeout.
    #[error("the peer did not complete the handshake within {ms} ms")]
    TimedOut {
        /// The timeout.
        ms: u128,
    },
    /// The peer closed the connection during the handshake.
    #[error("the peer closed the connection during the handshake")]
    Closed,
    /// The peer does not speak this protocol.
    #[error("the peer is not a fault-tolerance logging channel (bad magic)")]
    NotAChannel,
    /// The peer speaks another version.
    #[error("peer runs protocol version {peer}, we run {ours}")]
    Version {
        /// The peer's version.
        peer: u32,
        /// Ours.
        ours: u32,
    },
    /// The Noise handshake did not authenticate.
    #[error("authentication failed: wrong key? ({0})")]
    Authentication(&'static str),
    /// The peer's configuration digest differs.
    #[error("peer's configuration differs (its digest {peer:#018x}, ours {ours:#018x})")]
    ConfigDiffers {
        /// The peer's digest.
        peer: u64,
        /// Ours.
        ours: u64,
    },
    /// A disk image differs between the two sides.
    #[error("peer's copy of disk {id} differs from ours (digest {peer:#018x}, ours {ours:#018x})")]
    DiskDiffers {
        /// The disk's id.
        id: String,
        /// The peer's digest.
        peer: u64,
        /// Ours.
        ours: u64,
    },
    /// The two sides name different sets of disks.
    #[error("peer's disks ({peer}) are not ours ({ours})")]
    DiskSetDiffers {
        /// The peer's disk ids.
        peer: String,
        /// Ours.
        ours: String,
    },
    /// Both sides claim the same role.
    #[error("the peer is a {0} too")]
    SameRole(Role),
    /// The pair generations differ.
    #[error("peer is at pair generation {peer}, we are at {ours}")]
    Generation {
        /// The peer's generation.
        peer: u64,
        /// Ours.
        ours: u64,
    },
    /// The peer refused for another reason.
    #[error("the peer refused the channel: {0}")]
    Refused(String),
    /// This side refused a peer that authenticated (a backup that
    /// already serves its primary).
    #[error("refused an authenticated peer: {0}")]
    Busy(String),
    /// The first record was not a hello.
    #[error("the peer sent a {0} message instead of its hello")]
    NoHello(&'static str),
    /// Reading or writing a hello failed.
    #[error("exchanging hellos failed")]
    Record(#[source] RecordError),
    /// The channel's threads did not start.
    #[error("cannot start the channel")]
    Start(#[source] super::session::SessionError),
    /// The Noise library refused our parameters (a bug).
    #[error("cannot set up the Noise handshake")]
    Noise(#[source] snow::Error),
}

/// An authenticated connection whose hellos matched.
#[derive(Debug)]
pub struct Established {
    /// The socket.
    pub stream: TcpStream,
    /// The writer, at record 1.
    pub writer: RecordWriter,
    /// The reader, at record 1.
    pub reader: RecordReader,
    /// The peer's hello.
    pub peer: Hello,
    /// The peer's address.
    pub peer_addr: SocketAddr,
    /// The session's transport keys (the beacon's too).
    pub transport: Arc<StatelessTransportState>,
    /// The session's id: the first 8 bytes of the Noise handshake hash.
    pub session_id: u64,
    /// Whether this side initiated (the primary).
    pub initiator: bool,
}

/// Connects to the backup at `peer` (retrying while it is not listening,
/// for at most the connect timeout) and runs the handshake as primary.
pub fn connect(
    peer: SocketAddr,
    key: &ChannelKey,
    hello: &Hello,
    config: &ChannelConfig,
) -> Result<Established, HandshakeError> {
    let deadline = Instant::now() + config.connect_timeout;
    let ms = config.connect_timeout.as_millis();
    let stream = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let attempt = if left.is_zero() {
            Err(io::Error::from(io::ErrorKind::TimedOut))
        } else {
            TcpStream::connect_timeout(&peer, left)
        };
        match attempt {
            Ok(stream) => break stream,
            Err(source) => {
                if Instant::now() + RETRY_PAUSE >= deadline {
                    return Err(HandshakeError::Connect { peer, ms, source });
                }
                std::thread::sleep(RETRY_PAUSE);
            }
        }
    };
    run(stream, peer, true, key, hello, config, None)
}

/// Accepts one connection on `listener` and runs the handshake as backup.
/// A refused connection (wrong key, other configuration, not a channel)
/// is an error for that connection only: the caller may accept again.
pub fn accept(
    listener: &TcpListener,
    key: &ChannelKey,
    hello: &Hello,
    config: &ChannelConfig,
) -> Result<Established, HandshakeError> {
    let (stream, peer) = listener.accept().map_err(HandshakeError::Accept)?;
    run(stream, peer, false, key, hello, config, None)
}

/// Runs the handshake as backup on a connection already accepted from
/// `peer_addr`.
pub fn accept_stream(
    stream: TcpStream,
    peer_addr: SocketAddr,
    key: &ChannelKey,
    hello: &Hello,
    config: &ChannelConfig,
) -> Result<Established, HandshakeError> {
    run(stream, peer_addr, false, key, hello, config, None)
}

/// Runs the handshake as a backup that already serves a primary: a peer
/// that authenticates is sent an error record saying `reason` instead of
/// a hello (its side ends with [`HandshakeError::Refused`]) and the
/// connection is closed. Returns why the connection ended: the
/// handshake's error for a stranger (wrong key, not a channel, ...),
/// [`HandshakeError::Busy`] for a peer that authenticated.
pub fn refuse_stream(
    stream: TcpStream,
    peer_addr: SocketAddr,
    key: &ChannelKey,
    hello: &Hello,
    config: &ChannelConfig,
    reason: &str,
) -> HandshakeError {
    match run(stream, peer_addr, false, key, hello, config, Some(reason)) {
        Err(e) => e,
        Ok(_) => HandshakeError::Busy(reason.to_string()),
    }
}

fn run(
    mut stream: TcpStream,
    peer_addr: SocketAddr,
    initiator: bool,
    key: &ChannelKey,
    hello: &Hello,
    config: &ChannelConfig,
    refusal: Option<&str>,
) -> Result<Established, HandshakeError> {
    let ms = config.connect_timeout.as_millis();
    let io_err = |e: io::Error| match e.kind() {
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => HandshakeError::TimedOut { ms },
        io::ErrorKind::UnexpectedEof => HandshakeError::Closed,
        _ => HandshakeError::Io(e),
    };
    stream.set_nodelay(true).map_err(HandshakeError::Io)?;
    stream
        .set_read_timeout(Some(config.connect_timeout))
        .and_then(|()| stream.set_write_timeout(Some(config.connect_timeout)))
        .map_err(HandshakeError::Io)?;

    // 1. Preambles.
    let mut ours = [0u8; PREAMBLE_LEN];
    ours[..8].copy_from_slice(&MAGIC);
    ours[8..12].copy_from_slice(&PROTOCOL_VERSION.to_le_bytes());
    stream.write_all(&ours).map_err(io_err)?;
    let mut theirs = [0u8; PREAMBLE_LEN];
    stream.read_exact(&mut theirs).map_err(io_err)?;
    if theirs[..8] != MAGIC {
        return Err(HandshakeError::NotAChannel);
    }
    let peer_version = u32::from_le_bytes([theirs[8], theirs[9], theirs[10], theirs[11]]);
    if peer_version != PROTOCOL_VERSION {
        return Err(HandshakeError::Version {
            peer: peer_version,
            ours: PROTOCOL_VERSION,
        });
    }

    // 2. Noise.
    let (first, second) = if initiator {
        (&ours, &theirs)
    } else {
        (&theirs, &ours)
    };
    let mut prologue = Vec::with_capacity(PROLOGUE_LABEL.len() + 2 * PREAMBLE_LEN);
    prologue.extend_from_slice(PROLOGUE_LABEL);
    prologue.extend_from_slice(first);
    prologue.extend_from_slice(second);
    let params = NOISE_PARAMS.parse().map_err(HandshakeError::Noise)?;
    let builder = Builder::new(params)
        .prologue(&prologue)
        .and_then(|b| b.psk(0, key.bytes()))
        .map_err(HandshakeError::Noise)?;
    let mut noise = if initiator {
        builder.build_initiator()
    } else {
        builder.build_responder()
    }
    .map_err(HandshakeError::Noise)?;
    let mut buf = [0u8; 1024];
    let mut payload = [0u8; 1024];
    if initiator {
        let n = noise
            .write_message(&[], &mut buf)
            .map_err(HandshakeError::Noise)?;
        send_handshake(&mut stream, &buf[..n]).map_err(io_err)?;
        let msg = recv_handshake(&mut stream, &mut buf).map_err(io_err)?;
        if msg.is_empty() {
            return Err(HandshakeError::Authentication(
                "the backup refused our handshake",
            ));
        }
        noise
            .read_message(msg, &mut payload)
            .map_err(|_| HandshakeError::Authentication("the backup's answer did not verify"))?;
    } else {
        let msg = recv_handshake(&mut stream, &mut buf).map_err(io_err)?;
        if noise.read_message(msg, &mut payload).is_err() {
            // Tell the primary, so that it reports the key rather than a
            // dropped connection; it carries nothing secret.
            let _ = send_handshake(&mut stream, &[]);
            return Err(HandshakeError::Authentication(
                "the primary's handshake did not verify",
            ));
        }
        let n = noise
            .write_message(&[], &mut buf)
            .map_err(HandshakeError::Noise)?;
        send_handshake(&mut stream, &buf[..n]).map_err(io_err)?;
    }
    let session_id = super::beacon::session_id(noise.get_handshake_hash());
    let transport = Arc::new(
        noise
            .into_stateless_transport_mode()
            .map_err(HandshakeError::Noise)?,
    );

    // 3. Hellos.
    let clone = |s: &TcpStream| s.try_clone().map_err(HandshakeError::Io);
    let mut writer = RecordWriter::new(clone(&stream)?, Arc::clone(&transport));
    let mut reader = RecordReader::new(
        clone(&stream)?,
        Arc::clone(&transport),
        config.connect_timeout,
    );
    if let Some(reason) = refusal {
        let _ = writer.send(&Message::Error {
            code: ErrorCode::Other,
            text: reason.to_string(),
        });
        let _ = stream.shutdown(std::net::Shutdown::Both);
        return Err(HandshakeError::Busy(reason.to_string()));
    }
    writer
        .send(&Message::Hello(hello.clone()))
        .map_err(HandshakeError::Record)?;
    let peer = match reader.recv().map_err(HandshakeError::Record)?.0 {
        Message::Hello(h) => h,
        Message::Error { text, .. } => return Err(HandshakeError::Refused(text)),
        other => return Err(HandshakeError::NoHello(other.kind())),
    };
    if let Err(e) = check_peer(hello, &peer) {
        let code = match e {
            HandshakeError::ConfigDiffers { .. } => ErrorCode::ConfigDiffers,
            HandshakeError::DiskDiffers { .. } | HandshakeError::DiskSetDiffers { .. } => {
                ErrorCode::DiskDiffers
            }
            HandshakeError::SameRole(_) => ErrorCode::SameRole,
            HandshakeError::Generation { .. } => ErrorCode::Generation,
            _ => ErrorCode::Other,
        };
        let _ = writer.send(&Message::Error {
            code,
            text: e.to_string(),
        });
        let _ = stream.shutdown(std::net::Shutdown::Both);
        return Err(e);
    }
    stream
        .set_read_timeout(Some(super::record::detector_tick(config.timeout)))
        .and_then(|()| stream.set_write_timeout(None))
        .map_err(HandshakeError::Io)?;
    reader.detect_failure(config.timeout);
    Ok(Established {
        stream,
        writer,
        reader,
        peer,
        peer_addr,
        transport,
        session_id,
        initiator,
    })
}

/// The checks both sides make on the other's hello.
fn check_peer(ours: &Hello, peer: &Hello) -> Result<(), HandshakeError> {
    if peer.version != ours.version {
        return Err(HandshakeError::Version {
            peer: peer.version,
            ours: ours.version,
        });
    }
    if peer.role == ours.role {
        return Err(HandshakeError::SameRole(peer.role));
    }
    // A backup waiting for a seed (FT VMotion) says 0: it checks the
    // seed's configuration itself, and has no disks of its own yet.
    if peer.config_digest == 0 || ours.config_digest == 0 {
        return Ok(());
    }
    if peer.config_digest != ours.config_digest {
        return Err(HandshakeError::ConfigDiffers {
            peer: peer.config_digest,
            ours: ours.config_digest,
        });
    }
    let ids = |h: &Hello| {
        h.disks
            .iter()
            .map(|d| d.id.as_str())
            .collect::<Vec<_>>()
            .join(",")
    };
    if ids(peer) != ids(ours) {
        return Err(HandshakeError::DiskSetDiffers {
            peer: ids(peer),
            ours: ids(ours),
        });
    }
    for (p, o) in peer.disks.iter().zip(&ours.disks) {
        if p.digest != o.digest {
            return Err(HandshakeError::DiskDiffers {
                id: o.id.clone(),
                peer: p.digest,
                ours: o.digest,
            });
        }
    }
    // A backup that waits for a new pair says 0: it takes the primary's.
    if peer.generation != ours.generation && ours.generation != 0 && peer.generation != 0 {
        return Err(HandshakeError::Generation {
            peer: peer.generation,
            ours: ours.generation,
        });
    }
    Ok(())
}

fn send_handshake(stream: &mut TcpStream, msg: &[u8]) -> io::Result<()> {
    let len = u16::try_from(msg.len()).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    let mut out = Vec::with_capacity(2 + msg.len());
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(msg);
    stream.write_all(&out)
}

fn recv_handshake<'a>(stream: &mut TcpStream, buf: &'a mut [u8]) -> io::Result<&'a [u8]> {
    let mut len = [0u8; 2];
    stream.read_exact(&mut len)?;
    let len = usize::from(u16::from_le_bytes(len));
    let msg = buf
        .get_mut(..len)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "handshake message too long"))?;
    stream.read_exact(msg)?;
    Ok(msg)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::channel::message::DiskDigest;

    fn hello(role: Role) -> Hello {
        Hello {
            version: PROTOCOL_VERSION,
            role,
            config_digest: 1,
            disks: vec![DiskDigest {
                id: "d0".into(),
                digest: 5,
            }],
            generation: 3,
        }
    }

    #[test]
    fn hello_checks() {
        let p = hello(Role::Primary);
        let b = hello(Role::Backup);
        check_peer(&p, &b).expect("matching hellos");
        assert!(matches!(
            check_peer(&p, &p),
            Err(HandshakeError::SameRole(Role::Primary))
        ));
        let mut x = b.clone();
        x.config_digest = 2;
        let e = check_peer(&p, &x).expect_err("config");
        assert!(
            e.to_string().starts_with("peer's configuration differs"),
            "{e}"
        );
        let mut x = b.clone();
        x.disks[0].digest = 6;
        assert!(matches!(
            check_peer(&p, &x),
            Err(HandshakeError::DiskDiffers { .. })
        ));
        let mut x = b.clone();
        x.disks.clear();
        assert!(matches!(
            check_peer(&p, &x),
            Err(HandshakeError::DiskSetDiffers { .. })
        ));
        let mut x = b.clone();
        x.generation = 4;
        assert!(matches!(
            check_peer(&p, &x),
            Err(HandshakeError::Generation { peer: 4, ours: 3 })
        ));
        // A backup waiting for a new pair (generation 0) takes any.
        let mut x = b.clone();
        x.generation = 0;
        check_peer(&p, &x).unwrap();
        let mut x = b;
        x.version = 9;
        let e = check_peer(&p, &x).expect_err("version");
        assert_eq!(
            e.to_string(),
            format!("peer runs protocol version 9, we run {PROTOCOL_VERSION}")
        );
    }
}
