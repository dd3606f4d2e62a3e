// Copyright 2026 The ft-cloud-hypervisor authors.
// SPDX-License-Identifier: Apache-2.0

//! Structured fuzzing of the log's decoders: the whole-log reader
//! (`LogReader::parse`) and the stream decoder of the logging channel
//! (`StreamDecoder`), fed valid logs and valid logs damaged on purpose
//! (bit flips, truncations, splices, length fields changed, CRCs forged
//! to match the damage, codec and tag bytes rewritten). Properties: no
//! panic, no hang, every damaged log refused with an error that names the
//! log, every valid log read back entry for entry.
//!
//! A few cases run by default; `scripts/fuzz` runs many
//! (`PROPTEST_CASES`). Failures proptest finds are kept in
//! `proptest-regressions/` next to this file and replayed first.

mod fuzz_support;

use std::io::Write;
use std::path::Path;
use std::sync::{Arc, Mutex};

use ft_backend::log_read::{frame_spans, refresh_crc};
use ft_backend::stream::StreamDecoder;
use ft_backend::{Checkpoint, EndReason, Entry, Event, ExitId, LogError, LogHeader, Setup};
use ft_backend::{LogReader, LogWriter};
use fuzz_support::{config, within};
use proptest::prelude::*;

const NAME: &str = "fuzzed.log";
const DIGEST: u64 = 0x5eed_f00d;

#[derive(Clone, Default)]
struct Shared(Arc<Mutex<Vec<u8>>>);

impl Write for Shared {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("log buffer").extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn exit_id() -> impl Strategy<Value = ExitId> {
    (0u8..10, any::<u64>(), any::<u64>()).prop_map(|(kind, addr, rip)| ExitId { kind, addr, rip })
}

fn event() -> impl Strategy<Value = Event> {
    prop_oneof![
        Just(Event::TimerFire),
        proptest::collection::vec(any::<u8>(), 0..64).prop_map(Event::SerialInput),
        (
            "[a-z_0-9]{1,12}",
            proptest::collection::vec(any::<u8>(), 0..300)
        )
            .prop_map(|(id, data)| Event::Device { id, data }),
    ]
}

/// One entry after the setup, as a step from the previous exit count.
#[derive(Debug, Clone)]
enum Step {
    Clock(u64),
    Event(ExitId, Event),
    Checkpoint(ExitId, Vec<(u64, Vec<u8>)>, Vec<u8>, bool, Option<u64>),
}

fn step() -> impl Strategy<Value = (u64, Step)> {
    let pages = proptest::collection::vec(
        (
            any::<u64>(),
            prop_oneof![
                Just(vec![0u8; 4096]),
                proptest::collection::vec(any::<u8>(), 0..512),
            ],
        ),
        0..3,
    );
    (
        0u64..1000,
        prop_oneof![
            3 => any::<u64>().prop_map(Step::Clock),
            3 => (exit_id(), event()).prop_map(|(a, e)| Step::Event(a, e)),
            1 => (exit_id(), pages, proptest::collection::vec(any::<u8>(), 0..200), any::<bool>(), any::<Option<u64>>())
                .prop_map(|(a, p, v, r, d)| Step::Checkpoint(a, p, v, r, d)),
        ],
    )
}

/// A valid log's entries: the setup, entries at non-decreasing exits
/// (checkpoints numbered from 1), the end.
fn entries() -> impl Strategy<Value = Vec<Entry>> {
    (
        proptest::collection::vec(("[a-z_0-9]{1,10}", any::<u64>()), 0..3),
        proptest::collection::vec(step(), 0..24),
        1u8..5,
        any::<u64>(),
    )
        .prop_map(|(disks, steps, reason, digest)| {
            let mut v = vec![Entry::Setup(Setup { disks })];
            let (mut exit, mut seq) = (0u64, 0u64);
            for (delta, s) in steps {
                exit += delta;
                v.push(match s {
                    Step::Clock(value) => Entry::ClockRead { exit, value },
                    Step::Event(at, event) => Entry::Event { exit, at, event },
                    Step::Checkpoint(at, pages, vcpu, ready, digest) => {
                        seq += 1;
                        Entry::Checkpoint(Box::new(Checkpoint {
                            exit,
                            at,
                            seq,
                            pages,
                            vcpu,
                            devices: vec![("serial".into(), vec![1, 2, 3])],
                            ready_for_interrupt: ready,
                            digest,
                            start_registers: digest.map(|d| d.rotate_left(7)),
                        }))
                    }
                });
            }
            let reason = match reason {
                1 => EndReason::Shutdown,
                2 => EndReason::Reset,
                3 => EndReason::Stopped,
                _ => EndReason::Error,
            };
            v.push(Entry::End {
                exit,
                reason,
                digest,
            });
            v
        })
}

fn write_log(entries: &[Entry]) -> Vec<u8> {
    let out = Shared::default();
    let header = LogHeader {
        config_digest: DIGEST,
        max_delay_us: 2000,
    };
    let mut w =
        LogWriter::to_stream(Path::new(NAME), Box::new(out.clone()), header).expect("a log writer");
    for e in entries {
        w.append(e).expect("append");
    }
    w.flush().expect("flush");
    drop(w);
    let bytes = out.0.lock().expect("log buffer").clone();
    bytes
}

/// Everything the stream decoder makes of `bytes` pushed in chunks of
/// `chunk`: the entries, then its error if any.
fn stream_decode(bytes: &[u8], chunk: usize) -> (Vec<Entry>, Option<LogError>) {
    let mut d = StreamDecoder::new(Path::new(NAME), Some(DIGEST));
    let mut got = Vec::new();
    for c in bytes.chunks(chunk.max(1)) {
        d.push(c);
        loop {
            match d.next_entry() {
                Ok(Some(e)) => got.push(e),
                Ok(None) => break,
                Err(e) => return (got, Some(e)),
            }
        }
    }
    (got, None)
}

/// A damage done to a valid log.
#[derive(Debug, Clone)]
enum Damage {
    /// Flip bit `bit` of byte `at` (modulo the length).
    Flip { at: usize, bit: u8 },
    /// Keep only the first `keep` bytes (modulo the length).
    Truncate { keep: usize },
    /// Replace bytes `at..at+len` with `with`.
    Splice {
        at: usize,
        len: usize,
        with: Vec<u8>,
    },
    /// Set frame `frame`'s length field to `len`.
    Length { frame: usize, len: u32 },
    /// Set frame `frame`'s raw length field to `len`, CRC recomputed.
    RawLength { frame: usize, len: u32 },
    /// Overwrite one byte of frame `frame` (codec, tag or body) and
    /// recompute its CRC, so that the damage passes the CRC.
    ForgedCrc {
        frame: usize,
        offset: usize,
        value: u8,
    },
    /// Duplicate frame `frame` right after itself.
    Replay { frame: usize },
    /// Swap frames `a` and `b`.
    Swap { a: usize, b: usize },
}

fn damage() -> impl Strategy<Value = Damage> {
    prop_oneof![
        (any::<usize>(), 0u8..8).prop_map(|(at, bit)| Damage::Flip { at, bit }),
        any::<usize>().prop_map(|keep| Damage::Truncate { keep }),
        (
            any::<usize>(),
            0usize..64,
            proptest::collection::vec(any::<u8>(), 0..64)
        )
            .prop_map(|(at, len, with)| Damage::Splice { at, len, with }),
        (
            any::<usize>(),
            prop_oneof![
                any::<u32>(),
                Just(0),
                Just(5),
                Just(u32::MAX),
                Just(1 << 31)
            ]
        )
            .prop_map(|(frame, len)| Damage::Length { frame, len }),
        (
            any::<usize>(),
            prop_oneof![any::<u32>(), Just(0), Just(u32::MAX), Just(1 << 31)]
        )
            .prop_map(|(frame, len)| Damage::RawLength { frame, len }),
        (any::<usize>(), any::<usize>(), any::<u8>()).prop_map(|(frame, offset, value)| {
            Damage::ForgedCrc {
                frame,
                offset,
                value,
            }
        }),
        any::<usize>().prop_map(|frame| Damage::Replay { frame }),
        (any::<usize>(), any::<usize>()).prop_map(|(a, b)| Damage::Swap { a, b }),
    ]
}

fn apply(log: &[u8], d: &Damage) -> Vec<u8> {
    let mut b = log.to_vec();
    let spans = frame_spans(&b);
    let n = spans.len().max(1);
    match d {
        Damage::Flip { at, bit } => {
            let i = at % b.len();
            b[i] ^= 1 << bit;
        }
        Damage::Truncate { keep } => b.truncate(keep % b.len()),
        Damage::Splice { at, len, with } => {
            let at = at % b.len();
            let end = (at + len).min(b.len());
            b.splice(at..end, with.iter().copied());
        }
        Damage::Length { frame, len } => {
            if let Some(s) = spans.get(frame % n) {
                b[s.offset..s.offset + 4].copy_from_slice(&len.to_le_bytes());
            }
        }
        Damage::RawLength { frame, len } => {
            if let Some(s) = spans.get(frame % n) {
                b[s.offset + 6..s.offset + 10].copy_from_slice(&len.to_le_bytes());
                refresh_crc(&mut b, s);
            }
        }
        Damage::ForgedCrc {
            frame,
            offset,
            value,
        } => {
            if let Some(s) = spans.get(frame % n) {
                let covered = s.crc_covered();
                let i = covered.start + offset % covered.len();
                b[i] = *value;
                refresh_crc(&mut b, s);
            }
        }
        Damage::Replay { frame } => {
            if let Some(s) = spans.get(frame % n) {
                let bytes = b[s.offset..s.body.end + 4].to_vec();
                b.splice(s.body.end + 4..s.body.end + 4, bytes);
            }
        }
        Damage::Swap { a, b: other } => {
            let (x, y) = (a % n, other % n);
            if x != y && x < spans.len() && y < spans.len() {
                let (x, y) = (x.min(y), x.max(y));
                let (sx, sy) = (&spans[x], &spans[y]);
                let fx = b[sx.offset..sx.body.end + 4].to_vec();
                let fy = b[sy.offset..sy.body.end + 4].to_vec();
                let mid = b[sx.body.end + 4..sy.offset].to_vec();
                let mut out = b[..sx.offset].to_vec();
                out.extend_from_slice(&fy);
                out.extend_from_slice(&mid);
                out.extend_from_slice(&fx);
                out.extend_from_slice(&b[sy.body.end + 4..]);
                b = out;
            }
        }
    }
    b
}

/// The checks on one refusal: it names the log and says something.
fn check_refusal(e: &LogError) -> Result<(), TestCaseError> {
    let msg = ft_backend::error_chain(e);
    prop_assert!(msg.contains(NAME), "the error does not name the log: {msg}");
    prop_assert!(msg.len() > NAME.len() + 10, "a terse error: {msg}");
    Ok(())
}

proptest! {
    #![proptest_config(config())]

    /// Valid logs read back entry for entry, whole and as a stream cut
    /// into chunks of any size.
    #[test]
    fn valid_logs_round_trip(entries in entries(), chunk in 1usize..4096) {
        let log = write_log(&entries);
        let (read, streamed) = within("decoding a valid log", move || {
            let read = LogReader::parse(Path::new(NAME), &log, Some(DIGEST)).map(|r| r.entries);
            (read, stream_decode(&log, chunk))
        });
        let read = read.map_err(|e| TestCaseError::fail(ft_backend::error_chain(&e)))?;
        prop_assert_eq!(&read, &entries);
        prop_assert!(streamed.1.is_none(), "stream refused a valid log: {:?}", streamed.1);
        prop_assert_eq!(&streamed.0, &entries);
    }

    /// Damaged logs: never a panic or a hang; when the reader refuses, the
    /// error names the log; when it accepts (a damage that kept the log
    /// valid, such as a flip in an unused bit... or none at all), the stream
    /// decoder agrees with it.
    #[test]
    fn damaged_logs_are_refused_cleanly(
        entries in entries(),
        damages in proptest::collection::vec(damage(), 1..4),
        chunk in 1usize..2048,
    ) {
        let log = write_log(&entries);
        let mut bad = log.clone();
        for d in &damages {
            if bad.is_empty() {
                break;
            }
            bad = apply(&bad, d);
        }
        let changed = bad != log;
        let (read, streamed) = within("decoding a damaged log", move || {
            let read = LogReader::parse(Path::new(NAME), &bad, Some(DIGEST)).map(|r| r.entries);
            (read, stream_decode(&bad, chunk))
        });
        match &read {
            Err(e) => check_refusal(e)?,
            Ok(got) => {
                // Accepted: only if the damage changed nothing the format
                // checks, and then both decoders saw the same entries.
                prop_assert_eq!(got, &streamed.0);
                if !changed {
                    prop_assert_eq!(got, &entries);
                }
            }
        }
        if let Some(e) = &streamed.1 {
            check_refusal(e)?;
        }
    }

    /// Random bytes after a valid header, and random bytes alone.
    #[test]
    fn random_bytes_are_refused(tail in proptest::collection::vec(any::<u8>(), 0..4096), header in any::<bool>()) {
        let mut bytes = Vec::new();
        if header {
            bytes.extend_from_slice(&LogHeader { config_digest: DIGEST, max_delay_us: 1 }.encode());
        }
        bytes.extend_from_slice(&tail);
        let read = within("decoding random bytes", move || {
            LogReader::parse(Path::new(NAME), &bytes, Some(DIGEST)).map(|r| r.entries.len())
        });
        match read {
            Err(e) => check_refusal(&e)?,
            Ok(n) => prop_assert!(false, "random bytes accepted as a log of {} entries", n),
        }
    }

    /// The entry payload decoder alone, on any tag and bytes.
    #[test]
    fn entry_payloads_never_panic(tag in any::<u8>(), payload in proptest::collection::vec(any::<u8>(), 0..512)) {
        let r = within("decoding an entry payload", move || Entry::decode(tag, &payload).map_err(|e| e.to_string()));
        if let Err(msg) = r {
            prop_assert!(!msg.is_empty());
        }
    }
}

/// The stream decoder does not wait for a frame whose length field is
/// beyond the format's limit: it refuses it at once, naming the log.
#[test]
fn absurd_length_is_refused_at_once() {
    let log = write_log(&[
        Entry::Setup(Setup::default()),
        Entry::End {
            exit: 0,
            reason: EndReason::Shutdown,
            digest: 0,
        },
    ]);
    let mut bad = log.clone();
    let spans = frame_spans(&bad);
    let s = &spans[0];
    bad[s.offset..s.offset + 4].copy_from_slice(&u32::MAX.to_le_bytes());
    let (_, err) = stream_decode(&bad[..s.offset + 4], 1);
    let e = err.expect("refused without waiting for 4 GiB");
    assert!(ft_backend::error_chain(&e).contains("impossible frame length"));
}
