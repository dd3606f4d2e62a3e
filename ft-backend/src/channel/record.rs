// Copyright 2026 The ft-cloud-hypervisor authors.
// SPDX-License-Identifier: Apache-2.0

//! Records: the encrypted, sequenced units on the wire after the
//! handshake.
//!
//! ```text
//! record:
//!   seq   u64 LE  this direction's record number: 0 (the hello), 1, 2, ...
//!   len   u16 LE  bytes of ciphertext (16..=65535)
//!   ciphertext    ChaCha20-Poly1305 of one encoded message (`message`),
//!                 under this direction's Noise transport key, nonce = seq
//! ```
//!
//! The sequence number is explicit and is also the AEAD nonce: a record
//! whose `seq` is not the next expected one (replayed, reordered, dropped)
//! is refused before decryption ([`RecordError::OutOfOrder`]), and one whose
//! `seq` was rewritten to the expected value, or whose bytes were changed,
//! or that comes from another session (other keys), fails authentication
//! ([`RecordError::Authentication`]). Both end the session: nothing of a
//! refused record is delivered.

use std::io::{self, BufReader, Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use snow::StatelessTransportState;

use super::message::{Message, MessageError, MAX_PLAINTEXT};

/// Bytes of a record header.
pub const HEADER_LEN: usize = 10;

/// Bytes of the AEAD tag.
pub const TAG_LEN: usize = 16;

/// Sending or receiving one record.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    /// The socket failed.
    #[error("the connection failed")]
    Io(#[source] io::Error),
    /// End of stream between records, without a goodbye.
    #[error("the peer closed the connection")]
    Closed,
    /// End of stream inside a record.
    #[error("the stream ends inside record {seq}: truncated")]
    Truncated {
        /// The record being read.
        seq: u64,
    },
    /// Nothing arrived for the read timeout.
    #[error("nothing arrived from the peer for {ms} ms")]
    TimedOut {
        /// The timeout.
        ms: u128,
    },
    /// The record's sequence number is not the next one.
    #[error(
        "record {found} arrived where record {expected} was due (replayed, reordered or dropped)"
    )]
    OutOfOrder {
        /// The next sequence number.
        expected: u64,
        /// The one received.
        found: u64,
    },
    /// The length field cannot hold a record.
    #[error("record {seq} has an impossible length {len}")]
    BadLength {
        /// The record.
        seq: u64,
        /// Its length field.
        len: u16,
    },
    /// The AEAD tag does not verify.
    #[error("record {seq} failed authentication (forged, corrupted, or from another session)")]
    Authentication {
        /// The record.
        seq: u64,
    },
    /// The record decrypted but its message does not decode.
    #[error("record {seq} holds no valid message")]
    Message {
        /// The record.
        seq: u64,
        /// The cause.
        #[source]
        source: MessageError,
    },
    /// A message to send does not encode.
    #[error("cannot encode a message")]
    Encode(#[source] MessageError),
    /// Encryption failed (nonce exhausted).
    #[error("cannot encrypt record {seq}")]
    Encrypt {
        /// The record.
        seq: u64,
        /// The cause.
        #[source]
        source: snow::Error,
    },
}

/// The sending half: encodes, encrypts and writes records.
#[derive(Debug)]
pub struct RecordWriter {
    stream: TcpStream,
    transport: Arc<StatelessTransportState>,
    seq: u64,
    plain: Vec<u8>,
    wire: Vec<u8>,
}

impl RecordWriter {
    /// A writer whose first record is number 0.
    pub fn new(stream: TcpStream, transport: Arc<StatelessTransportState>) -> Self {
        RecordWriter {
            stream,
            transport,
            seq: 0,
            plain: Vec::with_capacity(MAX_PLAINTEXT),
            wire: vec![0; HEADER_LEN + MAX_PLAINTEXT + TAG_LEN],
        }
    }

    /// Sends one message as one record; returns the bytes written.
    pub fn send(&mut self, msg: &Message) -> Result<usize, RecordError> {
        let total = self.seal_in_place(msg)?;
        self.stream
            .write_all(&self.wire[..total])
            .map_err(RecordError::Io)?;
        Ok(total)
    }

    /// Seals one message as the next record (its sequence number taken)
    /// and appends the record to `out`, for [`write_sealed`]
    /// (Self::write_sealed) later: several records in one write. Returns
    /// the record's bytes.
    pub fn seal(&mut self, msg: &Message, out: &mut Vec<u8>) -> Result<usize, RecordError> {
        let total = self.seal_in_place(msg)?;
        out.extend_from_slice(&self.wire[..total]);
        Ok(total)
    }

    /// Writes records sealed by [`seal`](Self::seal), in their order.
    pub fn write_sealed(&mut self, records: &[u8]) -> Result<(), RecordError> {
        self.stream.write_all(records).map_err(RecordError::Io)
    }

    /// Encodes and encrypts `msg` as record `self.seq` into `self.wire`;
    /// returns its length there.
    fn seal_in_place(&mut self, msg: &Message) -> Result<usize, RecordError> {
        msg.encode(&mut self.plain).map_err(RecordError::Encode)?;
        let seq = self.seq;
        let len = self
            .transport
            .write_message(seq, &self.plain, &mut self.wire[HEADER_LEN..])
            .map_err(|source| RecordError::Encrypt { seq, source })?;
        let len16 =
            u16::try_from(len).map_err(|_| RecordError::BadLength { seq, len: u16::MAX })?;
        self.wire[..8].copy_from_slice(&seq.to_le_bytes());
        self.wire[8..HEADER_LEN].copy_from_slice(&len16.to_le_bytes());
        self.seq += 1;
        Ok(HEADER_LEN + len)
    }
}

/// The receiving half: reads, checks, decrypts and decodes records.
#[derive(Debug)]
pub struct RecordReader {
    stream: BufReader<TcpStream>,
    transport: Arc<StatelessTransportState>,
    seq: u64,
    timeout: Duration,
    /// With the failure detector on, the socket's read timeout: how often
    /// a waiting reader looks at the clock.
    tick: Option<Duration>,
    /// The longest time this side itself did not run while it waited
    /// (not counted as the peer's silence).
    stall_max: Duration,
    /// Counts every read that brought bytes (the beacon's failure
    /// detector watches it).
    heard: Option<Arc<AtomicU64>>,
    wire: Vec<u8>,
    plain: Vec<u8>,
}

/// The socket read timeout of a reader whose failure detector waits
/// `timeout` (see [`RecordReader::detect_failure`]).
pub fn detector_tick(timeout: Duration) -> Duration {
    (timeout / 6).max(Duration::from_millis(1))
}

impl RecordReader {
    /// A reader expecting record 0 first; `timeout` is the socket's read
    /// timeout, for the error message.
    pub fn new(
        stream: TcpStream,
        transport: Arc<StatelessTransportState>,
        timeout: Duration,
    ) -> Self {
        RecordReader {
            stream: BufReader::with_capacity(256 * 1024, stream),
            transport,
            seq: 0,
            timeout,
            tick: None,
            stall_max: Duration::ZERO,
            heard: None,
            wire: vec![0; MAX_PLAINTEXT + TAG_LEN],
            plain: vec![0; MAX_PLAINTEXT + TAG_LEN],
        }
    }

    /// Turns the failure detector on: the peer is declared silent
    /// ([`RecordError::TimedOut`]) after `timeout` without a byte from it,
    /// counting only time in which this side ran. The caller sets the
    /// socket's read timeout to [`detector_tick`]`(timeout)`.
    ///
    /// Why: a plain socket timeout counts wall time. When this side itself
    /// does not run for a while (its process or the whole machine stalled,
    /// or starved of CPU: on a loaded host a thread can wait hundreds of
    /// milliseconds for a CPU), the timer still expires, and on waking the
    /// reader sees no data because the peer, stalled or starved too, has
    /// not run either: a false failure. Here the reader wakes every tick;
    /// a wake later than a tick and a half counts as a tick and a half, so
    /// a stall of this side is not blamed on the peer.
    pub fn detect_failure(&mut self, timeout: Duration) {
        self.timeout = timeout;
        self.tick = Some(detector_tick(timeout));
    }

    /// Sets the timeout a plain socket read timeout stands for (for the
    /// error message), with the failure detector off: the seed of FT
    /// VMotion waits longer than the pair's failure timeout.
    pub fn set_timeout(&mut self, timeout: Duration) {
        self.timeout = timeout;
        self.tick = None;
    }

    /// Counts every read that brings bytes from the peer into `heard`.
    pub fn report_heard(&mut self, heard: Arc<AtomicU64>) {
        self.heard = Some(heard);
    }

    /// The longest time this side did not run while waiting for the peer
    /// (beyond a tick and a half), since the detector was turned on.
    pub fn stall_max(&self) -> Duration {
        self.stall_max
    }

    /// Whether every byte received so far has been consumed (nothing more
    /// is waiting in this side's buffer): the ack coalescer's cue.
    pub fn drained(&self) -> bool {
        self.stream.buffer().is_empty()
    }

    /// Receives the next record; returns its message and its size on the
    /// wire.
    pub fn recv(&mut self) -> Result<(Message, usize), RecordError> {
        let expected = self.seq;
        let mut header = [0u8; HEADER_LEN];
        match self.read_full(&mut header)? {
            0 => return Err(RecordError::Closed),
            HEADER_LEN => {}
            _ => return Err(RecordError::Truncated { seq: expected }),
        }
        let (seq_bytes, len_bytes) = header.split_at(8);
        let found = u64::from_le_bytes(seq_bytes.try_into().unwrap_or_default());
        let len = u16::from_le_bytes(len_bytes.try_into().unwrap_or_default());
        if found != expected {
            return Err(RecordError::OutOfOrder { expected, found });
        }
        if usize::from(len) < TAG_LEN + 1 {
            return Err(RecordError::BadLength { seq: found, len });
        }
        let len = usize::from(len);
        // Split borrows: read into `wire`, decrypt into `plain`.
        let mut wire = std::mem::take(&mut self.wire);
        let got = self.read_full(&mut wire[..len]);
        let result = match got {
            Ok(n) if n == len => self
                .transport
                .read_message(found, &wire[..len], &mut self.plain)
                .map_err(|_| RecordError::Authentication { seq: found }),
            Ok(_) => Err(RecordError::Truncated { seq: found }),
            Err(e) => Err(e),
        };
        self.wire = wire;
        let plain_len = result?;
        let msg = Message::decode(&self.plain[..plain_len])
            .map_err(|source| RecordError::Message { seq: found, source })?;
        self.seq += 1;
        Ok((msg, HEADER_LEN + len))
    }

    /// Reads until `buf` is full or the stream ends; returns the bytes read.
    fn read_full(&mut self, buf: &mut [u8]) -> Result<usize, RecordError> {
        let mut done = 0;
        let mut silence = Duration::ZERO;
        let mut last = Instant::now();
        while done < buf.len() {
            match self.stream.read(&mut buf[done..]) {
                Ok(0) => break,
                Ok(n) => {
                    done += n;
                    if let Some(heard) = &self.heard {
                        heard.fetch_add(1, Ordering::Relaxed);
                    }
                    silence = Duration::ZERO;
                    last = Instant::now();
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    let Some(tick) = self.tick else {
                        return Err(self.timed_out());
                    };
                    let now = Instant::now();
                    let waited = now.saturating_duration_since(last);
                    last = now;
                    let counted = waited.min(tick + tick / 2);
                    self.stall_max = self.stall_max.max(waited - counted);
                    silence += counted;
                    if silence >= self.timeout {
                        return Err(self.timed_out());
                    }
                }
                Err(e) => return Err(RecordError::Io(e)),
            }
        }
        Ok(done)
    }

    fn timed_out(&self) -> RecordError {
        RecordError::TimedOut {
            ms: self.timeout.as_millis(),
        }
    }
}
