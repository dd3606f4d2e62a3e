// Copyright 2026 The ft-cloud-hypervisor authors.
// SPDX-License-Identifier: Apache-2.0

//! Structured fuzzing of the logging channel: its messages (encoded and
//! decoded alone), and its records on a real loopback connection between
//! a real primary (`channel::connect`) and a real backup
//! (`channel::accept`), through a relay that damages one record of the
//! primary's stream after the handshake: a bit flipped in the header or
//! the ciphertext, a record replayed, dropped, swapped with the next,
//! given an impossible or an oversized length, cut short, or preceded by
//! garbage. Properties: no panic, no hang; the backup delivers only what
//! the primary sent, in order, up to the damaged record, and then loses the
//! channel with an error that says why (never a damaged or replayed item).

mod fuzz_support;

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use ft_backend::channel::{
    self, ChannelConfig, ChannelKey, DiskDigest, ErrorCode, Hello, Incoming, Message, Position,
    RecordError, Role, SessionError, MAX_FRAMES_CHUNK, PREAMBLE_LEN,
};
use fuzz_support::{config, within};
use proptest::prelude::*;

fn position() -> impl Strategy<Value = Position> {
    (any::<u64>(), any::<u64>()).prop_map(|(exits, guest_ns)| Position { exits, guest_ns })
}

fn message() -> impl Strategy<Value = Message> {
    let hello = (
        any::<u32>(),
        any::<bool>(),
        any::<u64>(),
        proptest::collection::vec(("\\PC{0,20}", any::<u64>()), 0..4),
        any::<u64>(),
    )
        .prop_map(|(version, primary, config_digest, disks, generation)| {
            Message::Hello(Hello {
                version,
                role: if primary { Role::Primary } else { Role::Backup },
                config_digest,
                disks: disks
                    .into_iter()
                    .map(|(id, digest)| DiskDigest { id, digest })
                    .collect(),
                generation,
            })
        });
    let code = prop_oneof![
        Just(ErrorCode::Other),
        Just(ErrorCode::ConfigDiffers),
        Just(ErrorCode::DiskDiffers),
        Just(ErrorCode::SameRole),
        Just(ErrorCode::Generation),
    ];
    prop_oneof![
        hello,
        proptest::collection::vec(any::<u8>(), 0..2048).prop_map(Message::LogFrames),
        position().prop_map(Message::Progress),
        (position(), any::<u64>(), position()).prop_map(|(position, log_bytes, applied)| {
            Message::Ack {
                position,
                log_bytes,
                applied,
            }
        }),
        Just(Message::Heartbeat),
        Just(Message::Goodbye),
        (code, "\\PC{0,200}").prop_map(|(code, text)| Message::Error { code, text }),
    ]
}

/// One damage to the primary's record stream.
#[derive(Debug, Clone)]
enum Damage {
    FlipHeader(u8),
    FlipBody(usize, u8),
    Replay,
    Drop,
    SwapWithNext,
    BadLength(u16),
    Oversize(Vec<u8>),
    Cut(usize),
    Garbage(Vec<u8>),
}

fn damage() -> impl Strategy<Value = Damage> {
    prop_oneof![
        (0u8..80).prop_map(Damage::FlipHeader),
        (any::<usize>(), 0u8..8).prop_map(|(at, bit)| Damage::FlipBody(at, bit)),
        Just(Damage::Replay),
        Just(Damage::Drop),
        Just(Damage::SwapWithNext),
        (0u16..17).prop_map(Damage::BadLength),
        proptest::collection::vec(any::<u8>(), 1..2048).prop_map(Damage::Oversize),
        any::<usize>().prop_map(Damage::Cut),
        proptest::collection::vec(any::<u8>(), 1..64).prop_map(Damage::Garbage),
    ]
}

fn read_record(s: &mut TcpStream) -> Option<Vec<u8>> {
    let mut header = [0u8; 10];
    s.read_exact(&mut header).ok()?;
    let len = usize::from(u16::from_le_bytes([header[8], header[9]]));
    let mut rec = header.to_vec();
    rec.resize(10 + len, 0);
    s.read_exact(&mut rec[10..]).ok()?;
    Some(rec)
}

/// Relays one primary's connection to the backup at `backup`, damaging
/// record `target` (counted from the hello, record 0) of the primary's
/// stream with `damage`.
fn relay(listener: TcpListener, backup: SocketAddr, target: usize, damage: Damage) {
    let Ok((mut from, _)) = listener.accept() else {
        return;
    };
    let Ok(mut to) = TcpStream::connect(backup) else {
        return;
    };
    let (mut back_from, mut back_to) = match (to.try_clone(), from.try_clone()) {
        (Ok(a), Ok(b)) => (a, b),
        _ => return,
    };
    let back = std::thread::spawn(move || {
        let _ = std::io::copy(&mut back_from, &mut back_to);
        let _ = back_to.shutdown(Shutdown::Write);
    });
    let forward = |from: &mut TcpStream, to: &mut TcpStream| -> Option<()> {
        // Preamble, then Noise message 1 (u16 length + message).
        let mut pre = [0u8; PREAMBLE_LEN + 2];
        from.read_exact(&mut pre).ok()?;
        to.write_all(&pre).ok()?;
        let len = usize::from(u16::from_le_bytes([
            pre[PREAMBLE_LEN],
            pre[PREAMBLE_LEN + 1],
        ]));
        let mut msg = vec![0u8; len];
        from.read_exact(&mut msg).ok()?;
        to.write_all(&msg).ok()?;
        let mut previous: Option<Vec<u8>> = None;
        let mut i = 0usize;
        while let Some(mut rec) = read_record(from) {
            if i == target {
                match &damage {
                    Damage::FlipHeader(bit) => rec[usize::from(bit / 8)] ^= 1 << (bit % 8),
                    Damage::FlipBody(at, bit) => {
                        let n = rec.len() - 10;
                        rec[10 + at % n] ^= 1 << bit;
                    }
                    Damage::Replay => {
                        to.write_all(previous.as_deref().unwrap_or(&rec)).ok()?;
                    }
                    Damage::Drop => rec.clear(),
                    Damage::SwapWithNext => {
                        // The next record first (none: this one is lost).
                        if let Some(next) = read_record(from) {
                            to.write_all(&next).ok()?;
                            i += 1;
                        } else {
                            rec.clear();
                        }
                    }
                    Damage::BadLength(len) => rec[8..10].copy_from_slice(&len.to_le_bytes()),
                    Damage::Oversize(extra) => {
                        let len = u16::try_from(rec.len() - 10 + extra.len()).unwrap_or(u16::MAX);
                        rec[8..10].copy_from_slice(&len.to_le_bytes());
                        rec.extend_from_slice(extra);
                        rec.truncate(10 + usize::from(len));
                    }
                    Damage::Cut(keep) => {
                        let keep = keep % rec.len();
                        let _ = to.write_all(&rec[..keep]);
                        return None;
                    }
                    Damage::Garbage(bytes) => to.write_all(bytes).ok()?,
                }
            }
            to.write_all(&rec).ok()?;
            if !rec.is_empty() {
                previous = Some(rec);
            }
            i += 1;
        }
        Some(())
    };
    let _ = forward(&mut from, &mut to);
    let _ = to.shutdown(Shutdown::Write);
    let _ = back.join();
}

/// What the backup received before it lost the channel, and why it lost
/// it (`None`: the channel ended with the primary's goodbye).
struct Outcome {
    frames: Vec<u8>,
    progress: Vec<Position>,
    end: Option<SessionError>,
}

fn run_case(
    chunks: Vec<Vec<u8>>,
    target: usize,
    damage: Damage,
) -> (Vec<u8>, Vec<Position>, Outcome) {
    let key = ChannelKey::from_bytes([7; 32]);
    let cfg = ChannelConfig {
        timeout: Duration::from_secs(3),
        ..ChannelConfig::default()
    };
    let backup_listener = TcpListener::bind("127.0.0.1:0").expect("backup listener");
    let backup_addr = backup_listener.local_addr().expect("backup address");
    let relay_listener = TcpListener::bind("127.0.0.1:0").expect("relay listener");
    let relay_addr = relay_listener.local_addr().expect("relay address");
    let relay = std::thread::spawn(move || relay(relay_listener, backup_addr, target, damage));
    let (bkey, bcfg) = (key.clone(), cfg.clone());
    let backup = std::thread::spawn(move || {
        let hello = Hello::new(Role::Backup, 1, Vec::new(), 0);
        let mut ch = channel::accept(&backup_listener, &bkey, &hello, &bcfg).expect("handshake");
        let mut out = Outcome {
            frames: Vec::new(),
            progress: Vec::new(),
            end: None,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            match ch.receiver.recv_timeout(Duration::from_millis(100)) {
                Ok(Some(Incoming::LogFrames(b))) => out.frames.extend_from_slice(&b),
                Ok(Some(Incoming::Progress(p))) => out.progress.push(p),
                Ok(None) => {}
                Err(SessionError::Goodbye) => return out,
                Err(e) => {
                    out.end = Some(e);
                    return out;
                }
            }
        }
        panic!("the backup neither lost the channel nor got a goodbye");
    });
    let hello = Hello::new(Role::Primary, 1, Vec::new(), 0);
    let mut sent = Vec::new();
    let mut progress = Vec::new();
    if let Ok(mut ch) = channel::connect(relay_addr, &key, &hello, &cfg) {
        for (i, c) in chunks.iter().enumerate() {
            if ch.sender.send_frames(c).is_err() {
                break;
            }
            sent.extend_from_slice(c);
            let p = Position {
                exits: i as u64 + 1,
                guest_ns: i as u64 * 1000,
            };
            if ch.sender.send_progress(p).is_err() {
                break;
            }
            progress.push(p);
        }
        let _ = ch.sender.close();
    }
    let outcome = backup.join().expect("the backup thread");
    let _ = relay.join();
    (sent, progress, outcome)
}

proptest! {
    #![proptest_config(config())]

    /// Every message that encodes decodes to itself.
    #[test]
    fn messages_round_trip(msg in message()) {
        let mut out = Vec::new();
        if msg.encode(&mut out).is_ok() {
            let back = Message::decode(&out).map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(back, msg);
        }
    }

    /// Any bytes: a message or a clear error, never a panic.
    #[test]
    fn message_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
        if let Err(e) = Message::decode(&bytes) {
            prop_assert!(!e.to_string().is_empty());
        }
    }

    /// A valid message with one byte changed or cut: a message or a clear
    /// error.
    #[test]
    fn damaged_messages_never_panic(msg in message(), at in any::<usize>(), value in any::<u8>(), cut in any::<bool>()) {
        let mut out = Vec::new();
        if msg.encode(&mut out).is_ok() && !out.is_empty() {
            let i = at % out.len();
            if cut { out.truncate(i) } else { out[i] = value }
            if let Err(e) = Message::decode(&out) {
                prop_assert!(!e.to_string().is_empty());
            }
        }
    }
}

proptest! {
    // Each case opens a real channel: fewer cases than the decoders'.
    #![proptest_config({
        let mut c = config();
        c.cases = c.cases.div_ceil(4);
        c
    })]

    /// One damaged record on a real channel: the backup delivers a prefix
    /// of what was sent and then loses the channel, saying why.
    #[test]
    fn damaged_records_end_the_channel(
        sizes in proptest::collection::vec(1usize..MAX_FRAMES_CHUNK.min(4000), 2..8),
        target in 1usize..6,
        damage in damage(),
    ) {
        let chunks: Vec<Vec<u8>> = sizes
            .iter()
            .enumerate()
            .map(|(i, n)| (0..*n).map(|j| (i * 31 + j) as u8 ^ (j >> 8) as u8).collect())
            .collect();
        let shown = format!("{damage:?}");
        let (sent, progress, out) = within("a channel with a damaged record", move || {
            run_case(chunks, target, damage)
        });
        prop_assert!(sent.starts_with(&out.frames), "the backup got frame bytes never sent ({})", shown);
        prop_assert!(progress.starts_with(&out.progress), "the backup got progress never sent ({})", shown);
        let end = out.end.ok_or_else(|| TestCaseError::fail(format!("{shown}: the damage went unnoticed")))?;
        let why = ft_backend::error_chain(&end);
        let record = end.record_error();
        prop_assert!(
            matches!(
                record,
                Some(RecordError::Authentication { .. }
                    | RecordError::OutOfOrder { .. }
                    | RecordError::BadLength { .. }
                    | RecordError::Truncated { .. }
                    | RecordError::Closed
                    | RecordError::TimedOut { .. }
                    | RecordError::Io(_))
            ) || matches!(end, SessionError::Protocol(_) | SessionError::Silent { .. }),
            "{}: unexpected end {}", shown, why
        );
    }
}
