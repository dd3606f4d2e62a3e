// Copyright 2026 The ft-cloud-hypervisor authors.
// SPDX-License-Identifier: Apache-2.0

//! The logging channel over real loopback TCP: a primary and a backup in
//! two threads, and, for the attacks, a relay in between that forwards,
//! changes, replays, reorders, cuts or stalls records.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use ft_backend::channel::{
    accept, connect, Channel, ChannelConfig, ChannelKey, DiskDigest, HandshakeError, Hello,
    Incoming, Position, RecordError, Role, SessionError, MAGIC, PREAMBLE_LEN, PROTOCOL_VERSION,
    RECORD_HEADER_LEN,
};

fn key(byte: u8) -> ChannelKey {
    ChannelKey::from_bytes([byte; 32])
}

fn hello(role: Role) -> Hello {
    Hello::new(
        role,
        0x1234_5678_9abc_def0,
        vec![DiskDigest {
            id: "_disk0".into(),
            digest: 77,
        }],
        1,
    )
}

/// Generous timeouts (a loaded machine must not lose the peer) and no
/// heartbeat during the test, so that record numbers are the messages sent.
fn quiet() -> ChannelConfig {
    ChannelConfig {
        heartbeat: Duration::from_secs(30),
        timeout: Duration::from_secs(60),
        connect_timeout: Duration::from_secs(10),
        window_bytes: 1 << 20,
        recv_buffer_bytes: 4 << 20,
    }
}

fn listener() -> TcpListener {
    TcpListener::bind("127.0.0.1:0").expect("bind loopback")
}

/// Opens a pair; the primary connects to `via` (the backup's listener, or a
/// relay in front of it).
fn open_pair(
    listener: TcpListener,
    via: SocketAddr,
    keys: (ChannelKey, ChannelKey),
    hellos: (Hello, Hello),
    config: &ChannelConfig,
) -> (
    Result<Channel, HandshakeError>,
    Result<Channel, HandshakeError>,
) {
    let (pkey, bkey) = keys;
    let (phello, bhello) = hellos;
    let bconfig = config.clone();
    let backup = thread::spawn(move || accept(&listener, &bkey, &bhello, &bconfig));
    let primary = connect(via, &pkey, &phello, config);
    let backup = backup.join().expect("backup thread");
    (primary, backup)
}

fn good_pair(config: &ChannelConfig) -> (Channel, Channel) {
    let l = listener();
    let addr = l.local_addr().expect("addr");
    let (p, b) = open_pair(
        l,
        addr,
        (key(1), key(1)),
        (hello(Role::Primary), hello(Role::Backup)),
        config,
    );
    (p.expect("primary"), b.expect("backup"))
}

/// Deterministic, distinct bytes.
fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn pos(exits: u64) -> Position {
    Position {
        exits,
        guest_ns: exits * 1000,
    }
}

#[test]
fn frames_progress_and_acks_round_trip_over_loopback() {
    let (mut p, mut b) = good_pair(&quiet());
    assert_eq!(p.peer.role, Role::Backup);
    assert_eq!(b.peer.role, Role::Primary);
    assert_eq!(b.peer.generation, 1);
    // Nothing sent yet: the backup's replay waits.
    assert_eq!(
        b.receiver
            .recv_timeout(Duration::from_millis(50))
            .expect("alive"),
        None
    );

    let sizes = [1usize, 100, 65_518, 65_519, 200_000, 1 << 20, 7];
    let sender = thread::spawn(move || {
        let mut all = Vec::new();
        for (i, &n) in sizes.iter().enumerate() {
            let data = pattern(n, i as u64);
            p.sender.send_frames(&data).expect("send frames");
            all.extend_from_slice(&data);
            p.sender
                .send_progress(pos(i as u64 + 1))
                .expect("send progress");
        }
        p.handle.wait_acked(pos(sizes.len() as u64)).expect("acked");
        (p, all)
    });

    let mut received = Vec::new();
    let mut progress = Vec::new();
    while progress.len() < sizes.len() {
        match b.receiver.recv().expect("recv") {
            Incoming::LogFrames(bytes) => {
                assert!(!bytes.is_empty());
                received.extend_from_slice(&bytes);
            }
            Incoming::Progress(p) => {
                // Every frame before the progress has arrived before it.
                let expected: usize = sizes[..=progress.len()].iter().sum();
                assert_eq!(received.len(), expected);
                progress.push(p);
            }
        }
    }
    let (p, sent) = sender.join().expect("sender");
    assert_eq!(received, sent, "the frames arrive intact and in order");
    assert_eq!(
        progress,
        (1..=sizes.len() as u64).map(pos).collect::<Vec<_>>()
    );
    assert_eq!(p.handle.acked(), pos(sizes.len() as u64));
    assert_eq!(
        p.handle.frame_bytes(),
        (sent.len() as u64, sent.len() as u64)
    );

    // Both ends are live: an ack or heartbeat may be in flight, or counted
    // by its writer only just after its peer read it. Read the two sides'
    // counters until they agree on what crossed (bounded).
    let settle = Instant::now() + Duration::from_secs(2);
    let (pc, bc) = loop {
        let (pc, bc) = (p.handle.counters(), b.handle.counters());
        let agree = pc.acks_received == bc.acks_sent && pc.bytes_sent == bc.bytes_received;
        if agree || Instant::now() > settle {
            break (pc, bc);
        }
        thread::sleep(Duration::from_millis(1));
    };
    assert_eq!(pc.frame_bytes_sent, sent.len() as u64);
    assert_eq!(bc.frame_bytes_received, sent.len() as u64);
    assert_eq!(pc.progress_sent, sizes.len() as u64);
    assert_eq!(bc.progress_received, sizes.len() as u64);
    assert!(
        pc.acks_received >= 1 && pc.acks_received == bc.acks_sent,
        "{pc:?}\n{bc:?}"
    );
    assert!(pc.ack_round_trips >= 1, "{pc:?}");
    assert_eq!(pc.bytes_sent, bc.bytes_received);
    assert!(
        pc.bytes_sent > sent.len() as u64,
        "headers and tags cost bytes"
    );

    // Goodbye: the backup sees it after everything else, as a loss it can
    // tell from a failure.
    let Channel {
        sender: ps,
        handle: ph,
        ..
    } = p;
    ps.close().expect("goodbye");
    assert!(matches!(b.receiver.recv(), Err(SessionError::Goodbye)));
    assert!(matches!(ph.lost(), Some(SessionError::Closed)));
}

#[test]
fn a_wrong_key_is_refused_on_both_sides() {
    let l = listener();
    let addr = l.local_addr().expect("addr");
    let (p, b) = open_pair(
        l,
        addr,
        (key(1), key(2)),
        (hello(Role::Primary), hello(Role::Backup)),
        &quiet(),
    );
    for (side, result) in [("primary", p), ("backup", b)] {
        let err = result.expect_err("a wrong key must be refused");
        assert!(
            matches!(err, HandshakeError::Authentication(_)),
            "{side}: {err}"
        );
        let text = format!("{err} {err:?}");
        assert!(text.contains("authentication failed: wrong key?"), "{text}");
        assert!(!text.contains("0101010101") && !text.contains("0202020202"));
    }
}

#[test]
fn another_configuration_is_refused_on_both_sides() {
    let cases: Vec<(Hello, &str)> = vec![
        (
            Hello::new(Role::Backup, 1, hello(Role::Backup).disks, 1),
            "peer's configuration differs",
        ),
        (
            Hello::new(
                Role::Backup,
                hello(Role::Backup).config_digest,
                vec![DiskDigest {
                    id: "_disk0".into(),
                    digest: 78,
                }],
                1,
            ),
            "copy of disk _disk0 differs",
        ),
        (
            Hello::new(
                Role::Backup,
                hello(Role::Backup).config_digest,
                hello(Role::Backup).disks,
                2,
            ),
            "pair generation",
        ),
        (hello(Role::Primary), "is a primary too"),
    ];
    for (backup_hello, expected) in cases {
        let l = listener();
        let addr = l.local_addr().expect("addr");
        let (p, b) = open_pair(
            l,
            addr,
            (key(1), key(1)),
            (hello(Role::Primary), backup_hello),
            &quiet(),
        );
        for (side, result) in [("primary", p), ("backup", b)] {
            let err = result.expect_err("must be refused");
            assert!(err.to_string().contains(expected), "{side}: {err}");
        }
    }
}

/// A peer of another protocol version: its preamble, written by hand.
fn other_version_preamble() -> [u8; PREAMBLE_LEN] {
    let mut p = [0u8; PREAMBLE_LEN];
    p[..8].copy_from_slice(&MAGIC);
    p[8..12].copy_from_slice(&(PROTOCOL_VERSION + 1).to_le_bytes());
    p
}

#[test]
fn another_protocol_version_is_refused_with_both_versions() {
    let want = format!(
        "peer runs protocol version {}, we run {}",
        PROTOCOL_VERSION + 1,
        PROTOCOL_VERSION
    );
    // A newer primary connects to our backup.
    let l = listener();
    let addr = l.local_addr().expect("addr");
    let backup = thread::spawn(move || accept(&l, &key(1), &hello(Role::Backup), &quiet()));
    let mut s = TcpStream::connect(addr).expect("connect");
    s.write_all(&other_version_preamble()).expect("preamble");
    let err = backup.join().expect("join").expect_err("refused");
    assert_eq!(err.to_string(), want);
    // Our primary connects to a newer backup.
    let l = listener();
    let addr = l.local_addr().expect("addr");
    let fake = thread::spawn(move || {
        let (mut s, _) = l.accept().expect("accept");
        s.write_all(&other_version_preamble()).expect("preamble");
        let mut theirs = [0u8; PREAMBLE_LEN];
        s.read_exact(&mut theirs).expect("their preamble");
        theirs
    });
    let err = connect(addr, &key(1), &hello(Role::Primary), &quiet()).expect_err("refused");
    assert_eq!(err.to_string(), want);
    let theirs = fake.join().expect("join");
    assert_eq!(&theirs[..8], &MAGIC);
}

#[test]
fn a_stranger_is_not_a_channel() {
    let l = listener();
    let addr = l.local_addr().expect("addr");
    let backup = thread::spawn(move || accept(&l, &key(1), &hello(Role::Backup), &quiet()));
    let mut s = TcpStream::connect(addr).expect("connect");
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .expect("write");
    let err = backup.join().expect("join").expect_err("refused");
    assert!(matches!(err, HandshakeError::NotAChannel), "{err}");
}

#[test]
fn an_unreachable_backup_fails_in_bounded_time() {
    let l = listener();
    let addr = l.local_addr().expect("addr");
    drop(l);
    let config = ChannelConfig {
        connect_timeout: Duration::from_millis(500),
        ..quiet()
    };
    let started = Instant::now();
    let err = connect(addr, &key(1), &hello(Role::Primary), &config).expect_err("nobody there");
    assert!(started.elapsed() >= Duration::from_millis(400));
    assert!(started.elapsed() < Duration::from_secs(30));
    assert_eq!(
        err.to_string(),
        format!("cannot reach the peer at {addr} within 500 ms")
    );
    // A backup that accepts but never answers: the handshake's bound.
    let silent = listener();
    let addr = silent.local_addr().expect("addr");
    let err = connect(addr, &key(1), &hello(Role::Primary), &config).expect_err("silent peer");
    assert!(matches!(err, HandshakeError::TimedOut { ms: 500 }), "{err}");
    drop(silent);
}

/// What the relay does with one primary-to-backup record.
enum Verdict {
    /// Forward these bytes instead (empty: drop it).
    Send(Vec<u8>),
    /// Forward these bytes, then close both connections.
    Cut(Vec<u8>),
    /// Forward nothing more, either way, but keep the connections open.
    Stall,
}

type Script = Box<dyn FnMut(u64, Vec<u8>) -> Verdict + Send>;

/// A TCP relay in front of `target` for one connection: the backup-to-
/// primary direction is copied; the primary-to-backup direction is parsed
/// (preamble, handshake message, then records) and each record (numbered
/// by its header) goes through `script`.
fn relay(target: SocketAddr, mut script: Script) -> SocketAddr {
    let l = listener();
    let addr = l.local_addr().expect("addr");
    thread::spawn(move || {
        let (mut from_primary, _) = l.accept().expect("relay accept");
        let mut to_backup = TcpStream::connect(target).expect("relay connect");
        let stalled = Arc::new(AtomicBool::new(false));
        let mut from_backup = to_backup.try_clone().expect("clone");
        let mut to_primary = from_primary.try_clone().expect("clone");
        let stall = Arc::clone(&stalled);
        thread::spawn(move || {
            let mut buf = [0u8; 16384];
            while let Ok(n) = from_backup.read(&mut buf) {
                if n == 0 {
                    break;
                }
                if !stall.load(Ordering::SeqCst) && to_primary.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
            // A stalled link carries nothing, not even the backup's close.
            if !stall.load(Ordering::SeqCst) {
                let _ = to_primary.shutdown(Shutdown::Write);
            }
        });
        let mut read = |n: usize| -> Option<Vec<u8>> {
            let mut v = vec![0u8; n];
            from_primary.read_exact(&mut v).ok().map(|()| v)
        };
        let forward = |to: &mut TcpStream, b: &[u8]| to.write_all(b).is_ok();
        let Some(preamble) = read(PREAMBLE_LEN) else {
            return;
        };
        let Some(len) = read(2) else { return };
        let Some(msg) = read(usize::from(u16::from_le_bytes([len[0], len[1]]))) else {
            return;
        };
        if !forward(&mut to_backup, &[preamble, len, msg].concat()) {
            return;
        }
        while let Some(header) = read(RECORD_HEADER_LEN) {
            let seq = u64::from_le_bytes(header[..8].try_into().expect("8 bytes"));
            let len = u16::from_le_bytes([header[8], header[9]]);
            let Some(body) = read(usize::from(len)) else {
                break;
            };
            match script(seq, [header, body].concat()) {
                Verdict::Send(bytes) => {
                    if !forward(&mut to_backup, &bytes) {
                        break;
                    }
                }
                Verdict::Cut(bytes) => {
                    forward(&mut to_backup, &bytes);
                    break;
                }
                Verdict::Stall => {
                    stalled.store(true, Ordering::SeqCst);
                    // Swallow the rest until the primary closes.
                    let mut sink = [0u8; 16384];
                    while matches!(from_primary.read(&mut sink), Ok(n) if n > 0) {}
                    // Nor the primary's close.
                    return;
                }
            }
        }
        let _ = to_backup.shutdown(Shutdown::Both);
        let _ = from_primary.shutdown(Shutdown::Both);
    });
    addr
}

/// Opens a pair through a relay running `script`, sends records 1..=5 as
/// five distinct log-frame messages, and returns what the backup received
/// before the channel was lost, the loss, and the primary's view.
fn attack(script: Script) -> (Vec<Vec<u8>>, SessionError, Option<SessionError>) {
    let l = listener();
    let target = l.local_addr().expect("addr");
    let via = relay(target, script);
    let (p, b) = open_pair(
        l,
        via,
        (key(1), key(1)),
        (hello(Role::Primary), hello(Role::Backup)),
        &quiet(),
    );
    let (mut p, mut b) = (p.expect("primary"), b.expect("backup"));
    for i in 1..=5u8 {
        // Sends may fail once the backup has refused a record.
        let _ = p.sender.send_frames(&[i; 100]);
    }
    let mut got = Vec::new();
    let loss = loop {
        match b.receiver.recv() {
            Ok(Incoming::LogFrames(f)) => got.push(f),
            Ok(other) => panic!("unexpected {other:?}"),
            Err(e) => break e,
        }
    };
    let primary_view = p.handle.wait_lost(Duration::from_secs(30));
    (got, loss, primary_view)
}

fn frames(n: u8) -> Vec<Vec<u8>> {
    (1..=n).map(|i| vec![i; 100]).collect()
}

fn record_error(e: &SessionError) -> &RecordError {
    e.record_error()
        .unwrap_or_else(|| panic!("not a record failure: {e}"))
}

#[test]
fn a_flipped_byte_is_refused_and_nothing_of_it_is_delivered() {
    // Flip one ciphertext byte of record 3, then one header length byte.
    let (got, loss, primary) = attack(Box::new(|seq, mut rec| {
        if seq == 3 {
            rec[RECORD_HEADER_LEN + 40] ^= 0x01;
        }
        Verdict::Send(rec)
    }));
    assert_eq!(got, frames(2));
    assert!(
        matches!(record_error(&loss), RecordError::Authentication { seq: 3 }),
        "{loss:?}"
    );
    assert!(primary.is_some(), "the primary sees the channel lost");

    let (got, loss, _) = attack(Box::new(|seq, mut rec| {
        if seq == 2 {
            rec[8] = rec[8].wrapping_add(1);
        }
        Verdict::Send(rec)
    }));
    assert_eq!(got, frames(1));
    assert!(
        matches!(
            record_error(&loss),
            RecordError::Authentication { seq: 2 } | RecordError::Truncated { .. }
        ),
        "{loss:?}"
    );
}

#[test]
fn a_replayed_record_is_refused() {
    // As captured: its sequence number is stale.
    let (got, loss, _) = attack(Box::new(|seq, rec| {
        Verdict::Send(if seq == 3 {
            [&rec[..], &rec[..]].concat()
        } else {
            rec
        })
    }));
    assert_eq!(got, frames(3));
    assert!(
        matches!(
            record_error(&loss),
            RecordError::OutOfOrder {
                expected: 4,
                found: 3
            }
        ),
        "{loss:?}"
    );
    // With the sequence number rewritten to the expected one: the nonce
    // no longer matches the ciphertext.
    let (got, loss, _) = attack(Box::new(|seq, rec| {
        if seq == 3 {
            let mut again = rec.clone();
            again[..8].copy_from_slice(&4u64.to_le_bytes());
            Verdict::Send([rec, again].concat())
        } else {
            Verdict::Send(rec)
        }
    }));
    assert_eq!(got, frames(3));
    assert!(
        matches!(record_error(&loss), RecordError::Authentication { seq: 4 }),
        "{loss:?}"
    );
}

#[test]
fn reordered_records_are_refused() {
    let mut held = None;
    let (got, loss, _) = attack(Box::new(move |seq, rec| match seq {
        3 => {
            held = Some(rec);
            Verdict::Send(Vec::new())
        }
        4 => Verdict::Send([rec, held.take().unwrap_or_default()].concat()),
        _ => Verdict::Send(rec),
    }));
    assert_eq!(got, frames(2));
    assert!(
        matches!(
            record_error(&loss),
            RecordError::OutOfOrder {
                expected: 3,
                found: 4
            }
        ),
        "{loss:?}"
    );
}

#[test]
fn a_record_from_another_session_is_refused() {
    let captured = Arc::new(std::sync::Mutex::new(None));
    let c = Arc::clone(&captured);
    let (got, _, _) = attack(Box::new(move |seq, rec| {
        if seq == 2 {
            *c.lock().expect("lock") = Some(rec.clone());
            return Verdict::Cut(rec);
        }
        Verdict::Send(rec)
    }));
    assert_eq!(got, frames(2));
    let old = captured.lock().expect("lock").take().expect("captured");
    // Same key, same record number, same plaintext: other session keys.
    let (got, loss, _) = attack(Box::new(move |seq, rec| {
        Verdict::Send(if seq == 2 { old.clone() } else { rec })
    }));
    assert_eq!(got, frames(1));
    assert!(
        matches!(record_error(&loss), RecordError::Authentication { seq: 2 }),
        "{loss:?}"
    );
}

#[test]
fn a_truncated_stream_is_the_peer_lost() {
    let (got, loss, primary) = attack(Box::new(|seq, rec| {
        if seq == 3 {
            Verdict::Cut(rec[..20].to_vec())
        } else {
            Verdict::Send(rec)
        }
    }));
    assert_eq!(got, frames(2));
    assert!(
        matches!(record_error(&loss), RecordError::Truncated { seq: 3 }),
        "{loss:?}"
    );
    assert!(primary.is_some());
    // Closed between records, without a goodbye: lost too, not an end.
    let (got, loss, _) = attack(Box::new(|seq, rec| {
        if seq == 3 {
            Verdict::Cut(rec)
        } else {
            Verdict::Send(rec)
        }
    }));
    assert_eq!(got, frames(3));
    assert!(
        matches!(record_error(&loss), RecordError::Closed),
        "{loss:?}"
    );
}

#[test]
fn silence_is_detected_on_both_sides_after_the_timeout() {
    let config = ChannelConfig {
        heartbeat: Duration::from_millis(50),
        timeout: Duration::from_millis(600),
        ..quiet()
    };
    let l = listener();
    let target = l.local_addr().expect("addr");
    let via = relay(
        target,
        Box::new(|seq, rec| {
            if seq >= 3 {
                Verdict::Stall
            } else {
                Verdict::Send(rec)
            }
        }),
    );
    let (p, b) = open_pair(
        l,
        via,
        (key(1), key(1)),
        (hello(Role::Primary), hello(Role::Backup)),
        &config,
    );
    let (p, b) = (p.expect("primary"), b.expect("backup"));
    let started = Instant::now();
    for (side, handle) in [("backup", &b.handle), ("primary", &p.handle)] {
        let lost = handle
            .wait_lost(Duration::from_secs(30))
            .unwrap_or_else(|| panic!("{side} never noticed"));
        // The relay carries the stream only, no beacon: the stream's
        // silence alone decides, after the timeout.
        assert!(
            matches!(lost, SessionError::Silent { ms: 600 }),
            "{side}: {lost:?}"
        );
        assert!(lost.to_string().starts_with("lost the peer"));
    }
    // Heartbeats went through before the stall; nobody gave up early.
    assert!(started.elapsed() >= Duration::from_millis(500));
    assert!(b.handle.counters().heartbeats_received >= 1);
}

#[test]
fn heartbeats_keep_an_idle_channel_alive() {
    let config = ChannelConfig {
        heartbeat: Duration::from_millis(50),
        timeout: Duration::from_millis(1000),
        ..quiet()
    };
    let (p, b) = good_pair(&config);
    thread::sleep(Duration::from_millis(3000));
    assert_eq!(p.handle.lost().map(|e| e.to_string()), None);
    assert_eq!(b.handle.lost().map(|e| e.to_string()), None);
    let (pc, bc) = (p.handle.counters(), b.handle.counters());
    assert!(pc.heartbeats_sent >= 10, "{pc:?}");
    assert!(bc.heartbeats_sent >= 10, "{bc:?}");
    assert!(bc.heartbeats_received >= 10, "{bc:?}");
}

#[test]
fn a_full_window_blocks_the_sender_until_the_receiver_drains() {
    let window = 256 << 10;
    let recv_buffer = 512 << 10;
    let config = ChannelConfig {
        heartbeat: Duration::from_millis(50),
        timeout: Duration::from_secs(20),
        window_bytes: window,
        recv_buffer_bytes: recv_buffer,
        ..quiet()
    };
    let (mut p, mut b) = good_pair(&config);
    let total = 16usize << 20;
    let data = pattern(total, 99);
    let expected = xxhash_rust::xxh3::xxh3_64(&data);
    let handle = p.handle.clone();
    let sender = thread::spawn(move || {
        for piece in data.chunks(32 << 10) {
            p.sender.send_frames(piece).expect("send");
        }
        p.sender.send_progress(pos(1)).expect("progress");
        p.handle.wait_acked(pos(1)).expect("acked");
        p
    });

    // The backup reads nothing: the sender must stop once its window is
    // full and the backup's buffer is full.
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut last = handle.frame_bytes();
    let mut still_since = Instant::now();
    while still_since.elapsed() < Duration::from_millis(500) {
        assert!(Instant::now() < deadline, "the sender never settled");
        thread::sleep(Duration::from_millis(50));
        let now = handle.frame_bytes();
        if now != last {
            last = now;
            still_since = Instant::now();
        }
    }
    let (sent, acked) = last;
    assert!(!sender.is_finished(), "the sender must be waiting");
    assert!(sent - acked <= window as u64, "{sent} - {acked}");
    assert!(
        sent <= (window + recv_buffer) as u64,
        "sent {sent} past window + receive buffer"
    );
    assert!(sent < total as u64);
    assert!(handle.counters().window_waits >= 1);
    assert!(handle.lost().is_none(), "backpressure is not a failure");

    // Drain: everything arrives, intact, and the sender finishes.
    let mut received = Vec::with_capacity(total);
    loop {
        match b.receiver.recv().expect("recv") {
            Incoming::LogFrames(f) => received.extend_from_slice(&f),
            Incoming::Progress(p) => {
                assert_eq!(p, pos(1));
                break;
            }
        }
    }
    let p = sender.join().expect("sender");
    assert_eq!(received.len(), total);
    assert_eq!(xxhash_rust::xxh3::xxh3_64(&received), expected);
    assert_eq!(p.handle.frame_bytes(), (total as u64, total as u64));
}

#[test]
fn closing_does_not_hang_on_a_peer_that_stopped_reading() {
    let config = ChannelConfig {
        heartbeat: Duration::from_millis(50),
        timeout: Duration::from_millis(1000),
        window_bytes: 1 << 20,
        recv_buffer_bytes: 128 << 10,
        ..quiet()
    };
    let (mut p, mut b) = good_pair(&config);
    // Fits the window, overflows the backup's buffer: its reader stops
    // reading (and so never sees the goodbye) while its heartbeats go on.
    p.sender.send_frames(&pattern(512 << 10, 5)).expect("send");
    thread::sleep(Duration::from_millis(200));
    let started = Instant::now();
    p.sender.close().expect("goodbye written");
    assert!(started.elapsed() < Duration::from_secs(30));
    // The backup still gets what was queued, then the end.
    let mut got = 0;
    let end = loop {
        match b.receiver.recv() {
            Ok(Incoming::LogFrames(f)) => got += f.len(),
            Ok(Incoming::Progress(_)) => {}
            Err(e) => break e,
        }
    };
    assert!(got >= 128 << 10, "{got}");
    assert!(!matches!(end, SessionError::Closed), "{end}");
}

/// Carries the beacon across a relay at `relay` for `life`: datagrams to
/// the relay's port (UDP) go to `target`'s, the backup's answers back to
/// the primary's source.
fn beacon_forwarder(relay: SocketAddr, target: SocketAddr, life: Duration) {
    let s = UdpSocket::bind(relay).expect("bind the relay's UDP port");
    s.set_read_timeout(Some(Duration::from_millis(20)))
        .expect("timeout");
    thread::spawn(move || {
        let end = Instant::now() + life;
        let mut primary = None;
        let mut buf = [0u8; 512];
        while Instant::now() < end {
            let Ok((n, from)) = s.recv_from(&mut buf) else {
                continue;
            };
            if from == target {
                if let Some(p) = primary {
                    let _ = s.send_to(&buf[..n], p);
                }
            } else {
                primary = Some(from);
                let _ = s.send_to(&buf[..n], target);
            }
        }
    });
}

/// A pair through a relay that runs `script` on the primary's records,
/// with the beacon carried across.
fn pair_with_beacon(script: Script, config: &ChannelConfig) -> (Channel, Channel) {
    let l = listener();
    let target = l.local_addr().expect("addr");
    let via = relay(target, script);
    beacon_forwarder(via, target, Duration::from_secs(30));
    let (p, b) = open_pair(
        l,
        via,
        (key(1), key(1)),
        (hello(Role::Primary), hello(Role::Backup)),
        config,
    );
    (p.expect("primary"), b.expect("backup"))
}

#[test]
fn a_stream_stalled_past_the_timeout_ends_nothing_while_the_beacon_is_heard() {
    let config = ChannelConfig {
        heartbeat: Duration::from_millis(50),
        timeout: Duration::from_millis(300),
        ..quiet()
    };
    // Record 5 (a heartbeat) held back for 1 s, as a segment waiting for
    // TCP's retransmission holds back the stream behind it.
    let (p, b) = pair_with_beacon(
        Box::new(|seq, rec| {
            if seq == 5 {
                thread::sleep(Duration::from_secs(1));
            }
            Verdict::Send(rec)
        }),
        &config,
    );
    thread::sleep(Duration::from_millis(2500));
    assert_eq!(b.handle.lost().map(|e| e.to_string()), None);
    assert_eq!(p.handle.lost().map(|e| e.to_string()), None);
    let c = b.handle.counters();
    assert!(c.rx_wait_us_max >= 900_000, "{c:?}");
    assert!(c.silences_bridged >= 1, "{c:?}");
    assert!(c.beacons_received >= 20, "{c:?}");
    assert_eq!(c.beacons_refused, 0, "{c:?}");
    assert!(b.handle.peer_beacon().is_some());
    assert!(p.handle.counters().beacons_received >= 20);
}

#[test]
fn a_stream_silent_for_the_stream_timeout_is_lost_though_the_beacon_is_heard() {
    let config = ChannelConfig {
        heartbeat: Duration::from_millis(50),
        timeout: Duration::from_millis(300),
        ..quiet()
    };
    let (p, b) = pair_with_beacon(
        Box::new(|seq, rec| {
            if seq >= 3 {
                Verdict::Stall
            } else {
                Verdict::Send(rec)
            }
        }),
        &config,
    );
    let started = Instant::now();
    for (side, handle) in [("backup", &b.handle), ("primary", &p.handle)] {
        let lost = handle
            .wait_lost(Duration::from_secs(30))
            .unwrap_or_else(|| panic!("{side} never noticed"));
        let ms = config.stream_timeout().as_millis();
        assert_eq!(ms, 2000);
        assert!(
            matches!(record_error(&lost), RecordError::TimedOut { ms: 2000 }),
            "{side}: {lost:?}"
        );
        assert!(handle.counters().beacons_received >= 20, "{side}");
    }
    // The beacon kept both sides from giving up at the 300 ms timeout.
    assert!(started.elapsed() >= Duration::from_millis(1800));
}
