// Copyright 2026 The ft-cloud-hypervisor authors.
// SPDX-License-Identifier: Apache-2.0

//! The logging channel over real loopback TCP: a primary and a backup in
//! two threads; frames, progress and acks round trip, and the handshake
//! refuses a wrong key, another configuration or protocol version, a
//! stranger, and gives up on an unreachable backup in bounded time; a
//! backup's divergence report reaches the primary, which closes.

mod channel_support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::thread;
use std::time::{Duration, Instant};

use channel_support::{good_pair, hello, key, listener, open_pair, pattern, pos, quiet};
use ft_backend::channel::{
    accept, connect, Channel, ChannelConfig, DiskDigest, HandshakeError, Hello, Incoming, Role,
    SessionError, MAGIC, PREAMBLE_LEN, PROTOCOL_VERSION,
};

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

/// Pins the calling thread (and the threads it starts after) to one CPU
/// of those it may use.
fn pin_to_one_cpu() {
    // SAFETY: an all-zero cpu_set_t is a valid, empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    let size = size_of::<libc::cpu_set_t>();
    // SAFETY: pid 0 is the calling thread; `set` is a valid cpu_set_t of
    // `size` bytes that outlives the call.
    let rc = unsafe { libc::sched_getaffinity(0, size, &mut set) };
    assert_eq!(rc, 0, "{}", std::io::Error::last_os_error());
    let cpus = usize::try_from(libc::CPU_SETSIZE).expect("CPU_SETSIZE");
    // SAFETY: `set` is a valid cpu_set_t and every index is below CPU_SETSIZE.
    let first = (0..cpus)
        .find(|&c| unsafe { libc::CPU_ISSET(c, &set) })
        .expect("an allowed CPU");
    // SAFETY: an all-zero cpu_set_t is a valid, empty set.
    let mut one: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: `one` is a valid cpu_set_t and `first` is below CPU_SETSIZE.
    unsafe { libc::CPU_SET(first, &mut one) };
    // SAFETY: pid 0 is the calling thread; `one` is a valid cpu_set_t of
    // `size` bytes that outlives the call.
    let rc = unsafe { libc::sched_setaffinity(0, size, &one) };
    assert_eq!(rc, 0, "{}", std::io::Error::last_os_error());
}

/// Short enough for the channels' threads to end within a second of a
/// close, long enough for a loaded machine.
fn brief() -> ChannelConfig {
    ChannelConfig {
        heartbeat: Duration::from_millis(500),
        timeout: Duration::from_secs(6),
        ..quiet()
    }
}

#[test]
fn a_divergence_report_the_primary_answers_by_closing_is_told_not_failed() {
    let config = brief();
    // The whole pair on one CPU: the channel's real-time threads write the
    // report, the primary reads it and closes its side, and the backup's
    // reader sees the end of the stream, all before the (ordinary) thread
    // that asked for the report goes on to close the channel.
    let outcomes = thread::spawn(move || {
        pin_to_one_cpu();
        (0..10)
            .map(|_| {
                let (p, b) = good_pair(&config);
                let primary = thread::spawn(move || {
                    let lost = p.handle.wait_lost(Duration::from_secs(30));
                    drop(p);
                    lost
                });
                let told = b.sender.close_diverged(7, "expected rip 0x10, found 0x20");
                (told, primary.join().expect("primary thread"))
            })
            .collect::<Vec<_>>()
    })
    .join()
    .expect("pinned thread");
    for (told, heard) in outcomes {
        assert!(
            matches!(
                &heard,
                Some(SessionError::PeerDiverged { exit: 7, reason })
                    if reason == "expected rip 0x10, found 0x20"
            ),
            "{heard:?}"
        );
        assert!(told.is_ok(), "the primary was told: {told:?}");
    }
}

#[test]
fn a_divergence_report_on_a_lost_channel_is_an_error() {
    let (p, b) = good_pair(&brief());
    p.handle.shut_down();
    assert!(b.handle.wait_lost(Duration::from_secs(30)).is_some());
    let err = b.sender.close_diverged(7, "x").expect_err("nobody to tell");
    assert!(err.to_string().starts_with("lost the peer"), "{err}");
}
