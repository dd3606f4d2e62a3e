// Copyright 2026 The ft-cloud-hypervisor authors.
// SPDX-License-Identifier: Apache-2.0

//! The typed payload of one channel record.
//!
//! ```text
//! tag u8, then (integers little-endian; str = u16 length + UTF-8):
//!   1 hello      version u32, role u8 (1 primary, 2 backup), config u64,
//!                generation u64, n u16, n x (disk id str, digest u64)
//!   2 log frames the rest of the record: opaque bytes of the log's frames
//!   3 progress   exits u64, guest_ns u64
//!   4 ack        exits u64, guest_ns u64, log_bytes u64,
//!                applied exits u64, applied guest_ns u64
//!   5 heartbeat  (nothing)
//!   6 goodbye    (nothing)
//!   7 error      code u8, text str
//!   8 diverged   exit u64, reason str (a backup whose replay diverged;
//!                the channel closes after it: protocol version 5)
//! ```
//!
//! A decoder refuses unknown tags, short payloads and trailing bytes.

use std::fmt;

/// The largest plaintext of one record: a Noise message is at most 65535
/// bytes, 16 of which are the authentication tag.
pub const MAX_PLAINTEXT: usize = 65535 - 16;

/// The largest run of log-frame bytes in one [`Message::LogFrames`].
pub const MAX_FRAMES_CHUNK: usize = MAX_PLAINTEXT - 1;

const TAG_HELLO: u8 = 1;
const TAG_LOG_FRAMES: u8 = 2;
const TAG_PROGRESS: u8 = 3;
const TAG_ACK: u8 = 4;
const TAG_HEARTBEAT: u8 = 5;
const TAG_GOODBYE: u8 = 6;
const TAG_ERROR: u8 = 7;
const TAG_DIVERGED: u8 = 8;

/// Decoding a record's payload.
#[derive(Debug, thiserror::Error)]
pub enum MessageError {
    /// The record is empty.
    #[error("empty message")]
    Empty,
    /// The tag names no message.
    #[error("unknown message tag {0}")]
    UnknownTag(u8),
    /// The payload ends early.
    #[error("message {tag} is truncated")]
    Short {
        /// The message tag.
        tag: u8,
    },
    /// The payload has bytes after the message.
    #[error("message {tag} has {extra} trailing bytes")]
    Trailing {
        /// The message tag.
        tag: u8,
        /// Bytes left over.
        extra: usize,
    },
    /// A field holds an invalid value.
    #[error("message {tag}: {what}")]
    Invalid {
        /// The message tag.
        tag: u8,
        /// What is wrong.
        what: &'static str,
    },
    /// The message does not fit in one record.
    #[error("a {what} message of {len} bytes does not fit in one record ({MAX_PLAINTEXT} bytes)")]
    TooLarge {
        /// The message kind.
        what: &'static str,
        /// Its encoded size.
        len: usize,
    },
}

/// Which side of the pair a VMM is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Runs the guest and streams its log.
    Primary,
    /// Replays the primary's log.
    Backup,
}

impl Role {
    fn code(self) -> u8 {
        match self {
            Role::Primary => 1,
            Role::Backup => 2,
        }
    }

    fn from_code(code: u8) -> Option<Self> {
        match code {
            1 => Some(Role::Primary),
            2 => Some(Role::Backup),
            _ => None,
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Role::Primary => "primary",
            Role::Backup => "backup",
        })
    }
}

/// A point of the guest's execution: the exit count, and the guest time
/// there. Ordered by exit count first.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Position {
    /// Guest-caused exits since boot.
    pub exits: u64,
    /// Guest time in nanoseconds at that exit.
    pub guest_ns: u64,
}

/// The digest of one disk image (pairs with separate disks compare them).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskDigest {
    /// The disk's device id.
    pub id: String,
    /// A digest of the image's contents.
    pub digest: u64,
}

/// What each side tells the other first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hello {
    /// The channel protocol version (as in the preamble).
    pub version: u32,
    /// The sender's role.
    pub role: Role,
    /// The digest of the guest-visible configuration (host paths and tap
    /// names taken out by the caller).
    pub config_digest: u64,
    /// With separate disks, each image's digest; empty with a shared disk.
    pub disks: Vec<DiskDigest>,
    /// The pair's generation (a new one after every failover).
    pub generation: u64,
}

/// Why a side refused the other in the handshake.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    /// Anything else.
    Other,
    /// The configuration digests differ.
    ConfigDiffers,
    /// A disk image's digest differs.
    DiskDiffers,
    /// Both sides claim the same role.
    SameRole,
    /// The pair generations differ.
    Generation,
}

impl ErrorCode {
    fn code(self) -> u8 {
        match self {
            ErrorCode::Other => 0,
            ErrorCode::ConfigDiffers => 1,
            ErrorCode::DiskDiffers => 2,
            ErrorCode::SameRole => 3,
            ErrorCode::Generation => 4,
        }
    }

    fn from_code(code: u8) -> Self {
        match code {
            1 => ErrorCode::ConfigDiffers,
            2 => ErrorCode::DiskDiffers,
            3 => ErrorCode::SameRole,
            4 => ErrorCode::Generation,
            _ => ErrorCode::Other,
        }
    }
}

/// One message of the channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// The first message each way.
    Hello(Hello),
    /// Bytes of the log's frames, opaque to the channel.
    LogFrames(Vec<u8>),
    /// The primary has run up to here (and sent every frame up to here).
    Progress(Position),
    /// The backup has received everything up to `position` (the last
    /// progress it received) and `log_bytes` bytes of log frames.
    Ack {
        /// The last progress position received.
        position: Position,
        /// Total log-frame bytes received.
        log_bytes: u64,
        /// How far the backup's replay has got (for the lag).
        applied: Position,
    },
    /// Nothing to say, but alive.
    Heartbeat,
    /// Closing on purpose.
    Goodbye,
    /// Closing because of an error.
    Error {
        /// What kind of error.
        code: ErrorCode,
        /// Why, for the peer's operator.
        text: String,
    },
    /// A backup closing because its replay diverged from the stream: the
    /// primary is alive and the backup is not lost to a fault, so the
    /// primary goes on unprotected without a tiebreak and seeds it again.
    Diverged {
        /// The exit count where the backup noticed it.
        exit: u64,
        /// What differed.
        reason: String,
    },
}

impl Message {
    /// A short name, for errors.
    pub fn kind(&self) -> &'static str {
        match self {
            Message::Hello(_) => "hello",
            Message::LogFrames(_) => "log frames",
            Message::Progress(_) => "progress",
            Message::Ack { .. } => "ack",
            Message::Heartbeat => "heartbeat",
            Message::Goodbye => "goodbye",
            Message::Error { .. } => "error",
            Message::Diverged { .. } => "diverged",
        }
    }

    /// Appends the encoded message to `out` (cleared first).
    pub fn encode(&self, out: &mut Vec<u8>) -> Result<(), MessageError> {
        out.clear();
        match self {
            Message::Hello(h) => {
                out.push(TAG_HELLO);
                out.extend_from_slice(&h.version.to_le_bytes());
                out.push(h.role.code());
                out.extend_from_slice(&h.config_digest.to_le_bytes());
                out.extend_from_slice(&h.generation.to_le_bytes());
                let n = u16::try_from(h.disks.len()).map_err(|_| MessageError::TooLarge {
                    what: "hello",
                    len: usize::MAX,
                })?;
                out.extend_from_slice(&n.to_le_bytes());
                for d in &h.disks {
                    put_str(out, &d.id, "hello")?;
                    out.extend_from_slice(&d.digest.to_le_bytes());
                }
            }
            Message::LogFrames(bytes) => {
                out.push(TAG_LOG_FRAMES);
                out.extend_from_slice(bytes);
            }
            Message::Progress(p) => {
                out.push(TAG_PROGRESS);
                put_position(out, p);
            }
            Message::Ack {
                position,
                log_bytes,
                applied,
            } => {
                out.push(TAG_ACK);
                put_position(out, position);
                out.extend_from_slice(&log_bytes.to_le_bytes());
                put_position(out, applied);
            }
            Message::Heartbeat => out.push(TAG_HEARTBEAT),
            Message::Goodbye => out.push(TAG_GOODBYE),
            Message::Error { code, text } => {
                out.push(TAG_ERROR);
                out.push(code.code());
                put_str(out, cut(text, 1024), "error")?;
            }
            Message::Diverged { exit, reason } => {
                out.push(TAG_DIVERGED);
                out.extend_from_slice(&exit.to_le_bytes());
                put_str(out, cut(reason, 1024), "diverged")?;
            }
        }
        if out.len() > MAX_PLAINTEXT {
            return Err(MessageError::TooLarge {
                what: self.kind(),
                len: out.len(),
            });
        }
        Ok(())
    }

    /// Decodes one record's payload.
    pub fn decode(data: &[u8]) -> Result<Self, MessageError> {
        let (&tag, rest) = data.split_first().ok_or(MessageError::Empty)?;
        let mut r = Reader { data: rest, tag };
        let msg = match tag {
            TAG_HELLO => {
                let version = r.u32()?;
                let role = Role::from_code(r.u8()?).ok_or(MessageError::Invalid {
                    tag,
                    what: "unknown role",
                })?;
                let config_digest = r.u64()?;
                let generation = r.u64()?;
                let n = r.u16()?;
                let mut disks = Vec::with_capacity(usize::from(n).min(256));
                for _ in 0..n {
                    let id = r.str()?;
                    let digest = r.u64()?;
                    disks.push(DiskDigest { id, digest });
                }
                Message::Hello(Hello {
                    version,
                    role,
                    config_digest,
                    disks,
                    generation,
                })
            }
            TAG_LOG_FRAMES => return Ok(Message::LogFrames(rest.to_vec())),
            TAG_PROGRESS => Message::Progress(r.position()?),
            TAG_ACK => Message::Ack {
                position: r.position()?,
                log_bytes: r.u64()?,
                applied: r.position()?,
            },
            TAG_HEARTBEAT => Message::Heartbeat,
            TAG_GOODBYE => Message::Goodbye,
            TAG_ERROR => Message::Error {
                code: ErrorCode::from_code(r.u8()?),
                text: r.str()?,
            },
            TAG_DIVERGED => Message::Diverged {
                exit: r.u64()?,
                reason: r.str()?,
            },
            other => return Err(MessageError::UnknownTag(other)),
        };
        if !r.data.is_empty() {
            return Err(MessageError::Trailing {
                tag,
                extra: r.data.len(),
            });
        }
        Ok(msg)
    }
}

/// `text` cut to at most `max` bytes at a character boundary (long texts
/// are cut rather than refused).
fn cut(text: &str, max: usize) -> &str {
    let mut end = text.len().min(max);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

fn put_position(out: &mut Vec<u8>, p: &Position) {
    out.extend_from_slice(&p.exits.to_le_bytes());
    out.extend_from_slice(&p.guest_ns.to_le_bytes());
}

fn put_str(out: &mut Vec<u8>, s: &str, what: &'static str) -> Result<(), MessageError> {
    let len = u16::try_from(s.len()).map_err(|_| MessageError::TooLarge { what, len: s.len() })?;
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(s.as_bytes());
    Ok(())
}

struct Reader<'a> {
    data: &'a [u8],
    tag: u8,
}

impl Reader<'_> {
    fn take<const N: usize>(&mut self) -> Result<[u8; N], MessageError> {
        let (head, rest) = self
            .data
            .split_first_chunk::<N>()
            .ok_or(MessageError::Short { tag: self.tag })?;
        self.data = rest;
        Ok(*head)
    }

    fn u8(&mut self) -> Result<u8, MessageError> {
        Ok(self.take::<1>()?[0])
    }

    fn u16(&mut self) -> Result<u16, MessageError> {
        Ok(u16::from_le_bytes(self.take()?))
    }

    fn u32(&mut self) -> Result<u32, MessageError> {
        Ok(u32::from_le_bytes(self.take()?))
    }

    fn u64(&mut self) -> Result<u64, MessageError> {
        Ok(u64::from_le_bytes(self.take()?))
    }

    fn position(&mut self) -> Result<Position, MessageError> {
        Ok(Position {
            exits: self.u64()?,
            guest_ns: self.u64()?,
        })
    }

    fn str(&mut self) -> Result<String, MessageError> {
        let len = usize::from(self.u16()?);
        if self.data.len() < len {
            return Err(MessageError::Short { tag: self.tag });
        }
        let (s, rest) = self.data.split_at(len);
        self.data = rest;
        String::from_utf8(s.to_vec()).map_err(|_| MessageError::Invalid {
            tag: self.tag,
            what: "text is not UTF-8",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn samples() -> Vec<Message> {
        let pos = Position {
            exits: 123_456,
            guest_ns: 9_876_543_210,
        };
        vec![
            Message::Hello(Hello {
                version: 1,
                role: Role::Backup,
                config_digest: 0xdead_beef_0123_4567,
                disks: vec![
                    DiskDigest {
                        id: "_disk0".into(),
                        digest: 42,
                    },
                    DiskDigest {
                        id: "data".into(),
                        digest: u64::MAX,
                    },
                ],
                generation: 7,
            }),
            Message::LogFrames(vec![]),
            Message::LogFrames((0..=255).collect()),
            Message::Progress(pos),
            Message::Ack {
                position: pos,
                log_bytes: 1 << 40,
                applied: Position {
                    exits: 3,
                    guest_ns: 4,
                },
            },
            Message::Heartbeat,
            Message::Goodbye,
            Message::Error {
                code: ErrorCode::ConfigDiffers,
                text: "différent".into(),
            },
            Message::Diverged {
                exit: 42,
                reason: "expected exit 1, found exit 2".into(),
            },
        ]
    }

    #[test]
    fn every_message_round_trips() {
        let mut buf = Vec::new();
        for m in samples() {
            m.encode(&mut buf).expect("encode");
            assert_eq!(Message::decode(&buf).expect("decode"), m);
        }
    }

    #[test]
    fn short_trailing_and_unknown_are_refused() {
        let mut buf = Vec::new();
        for m in samples() {
            m.encode(&mut buf).expect("encode");
            if !matches!(
                m,
                Message::LogFrames(_) | Message::Heartbeat | Message::Goodbye
            ) {
                assert!(Message::decode(&buf[..buf.len() - 1]).is_err(), "{m:?}");
            }
            if !matches!(m, Message::LogFrames(_)) {
                buf.push(0);
                assert!(
                    matches!(Message::decode(&buf), Err(MessageError::Trailing { .. })),
                    "{m:?}"
                );
            }
        }
        assert!(matches!(Message::decode(&[]), Err(MessageError::Empty)));
        assert!(matches!(
            Message::decode(&[99]),
            Err(MessageError::UnknownTag(99))
        ));
    }

    #[test]
    fn oversized_frames_are_refused() {
        let mut buf = Vec::new();
        Message::LogFrames(vec![0; MAX_FRAMES_CHUNK])
            .encode(&mut buf)
            .expect("the largest chunk fits");
        assert_eq!(buf.len(), MAX_PLAINTEXT);
        assert!(Message::LogFrames(vec![0; MAX_FRAMES_CHUNK + 1])
            .encode(&mut buf)
            .is_err());
    }
}
