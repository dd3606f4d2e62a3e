// Copyright 2026 The ft-cloud-hypervisor authors.
// SPDX-License-Identifier: Apache-2.0

//! A hostile peer at a backup's channel port, in process (the same, with
//! real VMM processes, is `tests/hostile_peer.rs`): a stranger that
//! connects and stalls does not keep the real primary out; once paired,
//! strangers sending random bytes, an oversized handshake message, a
//! handshake with the wrong key, a second primary with the right key, and
//! a flood of stalled connections are all refused and counted, and the
//! primary's channel carries on, acknowledged.

mod fuzz_support;

use std::io::{Read, Write};
use std::net::{Ipv4Addr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ft_backend::channel::{
    self, ChannelConfig, ChannelKey, HandshakeError, Hello, Position, Role, MAGIC, PREAMBLE_LEN,
    PROTOCOL_VERSION,
};
use ft_backend::pair::backup::{Backup, BackupSetup};
use ft_backend::{Entry, LogHeader, LogWriter, Setup};
use fuzz_support::within;

const DIGEST: u64 = 0x00ab_cdef;

#[derive(Clone, Default)]
struct Shared(Arc<Mutex<Vec<u8>>>);

impl Write for Shared {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("buffer").extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn free_port() -> SocketAddr {
    let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("a free port");
    l.local_addr().expect("its address")
}

fn connect_when_listening(addr: SocketAddr) -> TcpStream {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match TcpStream::connect(addr) {
            Ok(s) => return s,
            Err(e) if Instant::now() < deadline => {
                let _ = e;
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(e) => panic!("the backup never listened on {addr}: {e}"),
        }
    }
}

/// The start of a log: header and setup frame, as a primary sends it.
fn log_start() -> Vec<u8> {
    let out = Shared::default();
    let header = LogHeader {
        config_digest: DIGEST,
        max_delay_us: 2000,
    };
    let mut w = LogWriter::to_stream(Path::new("primary"), Box::new(out.clone()), header)
        .expect("a log writer");
    w.append(&Entry::Setup(Setup::default())).expect("setup");
    w.flush().expect("flush");
    drop(w);
    let bytes = out.0.lock().expect("buffer").clone();
    bytes
}

/// Sends `bytes` and waits until the backup closes the connection.
fn send_and_wait_close(addr: SocketAddr, bytes: &[u8]) {
    let mut s = TcpStream::connect(addr).expect("connect to the backup");
    s.set_read_timeout(Some(Duration::from_secs(20))).ok();
    let _ = s.write_all(bytes);
    let _ = s.shutdown(Shutdown::Write);
    let mut sink = Vec::new();
    let r = s.read_to_end(&mut sink);
    assert!(
        !matches!(&r, Err(e) if e.kind() == std::io::ErrorKind::WouldBlock),
        "the backup kept a stranger's connection open"
    );
}

fn counter(backup: &Backup, name: &str) -> u64 {
    backup.status.counters()[name].as_u64().unwrap_or(0)
}

#[test]
fn strangers_neither_keep_the_primary_out_nor_disturb_the_pair() {
    let addr = free_port();
    let key = ChannelKey::from_bytes([3; 32]);
    let dir = std::env::temp_dir().join(format!("fuzz-backup-port-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("a directory");
    let tiebreaker = format!("file:{}", dir.join("pair.tb").display())
        .parse()
        .expect("a file tiebreaker");
    // The backup gives each handshake 10 s; the primary gives up on the
    // backup after 3 s: a backup that served one handshake at a time
    // would keep it out behind the stalled stranger.
    let backup_key = key.clone();
    let backup = std::thread::spawn(move || {
        Backup::accept(BackupSetup {
            listen: addr,
            key: backup_key,
            tiebreaker,
            channel: ChannelConfig {
                connect_timeout: Duration::from_secs(10),
                timeout: Duration::from_secs(5),
                ..ChannelConfig::default()
            },
            config_digest: DIGEST,
            disks: Vec::new(),
            copy: None,
            stop: || false,
        })
    });
    let stalled = connect_when_listening(addr);
    let primary_cfg = ChannelConfig {
        connect_timeout: Duration::from_secs(3),
        timeout: Duration::from_secs(5),
        ..ChannelConfig::default()
    };
    let hello = Hello::new(Role::Primary, DIGEST, Vec::new(), 0);
    let mut primary = channel::connect(addr, &key, &hello, &primary_cfg)
        .expect("the primary gets in past a stalled stranger");
    primary
        .sender
        .send_frames(&log_start())
        .expect("send the log's start");
    let backup = backup
        .join()
        .expect("the backup thread")
        .expect("the backup paired with the primary");
    drop(stalled);

    // Paired: the port is guarded. Random bytes, a preamble and then an
    // oversized handshake message, a wrong preamble.
    send_and_wait_close(addr, &[0x5a; 300]);
    let mut oversized = MAGIC.to_vec();
    oversized.extend_from_slice(&PROTOCOL_VERSION.to_le_bytes());
    oversized.extend_from_slice(&[0; 4]);
    oversized.extend_from_slice(&u16::MAX.to_le_bytes());
    oversized.extend_from_slice(&[0xee; 2000]);
    assert_eq!(oversized.len(), PREAMBLE_LEN + 2 + 2000);
    send_and_wait_close(addr, &oversized);
    let mut other_version = MAGIC.to_vec();
    other_version.extend_from_slice(&(PROTOCOL_VERSION + 1).to_le_bytes());
    other_version.extend_from_slice(&[0; 4]);
    send_and_wait_close(addr, &other_version);

    // The wrong key: refused and reported as an authentication failure.
    let wrong = channel::connect(addr, &ChannelKey::from_bytes([4; 32]), &hello, &primary_cfg);
    assert!(
        matches!(wrong, Err(HandshakeError::Authentication(_))),
        "{wrong:?}"
    );
    // A second primary with the right key: refused, told why.
    let second = channel::connect(addr, &key, &hello, &primary_cfg);
    match second {
        Err(HandshakeError::Refused(text)) => {
            assert!(text.contains("already serves its primary"), "{text}")
        }
        other => panic!("a second primary was not refused: {other:?}"),
    }
    // A flood of stalled connections: the handshakes beyond the cap are
    // closed at once.
    let flood: Vec<TcpStream> = (0..20)
        .map(|_| TcpStream::connect(addr).expect("connect"))
        .collect();

    // The pair carries on: progress is acknowledged, nothing was lost.
    for i in 1..=5u64 {
        let p = Position {
            exits: i,
            guest_ns: i * 1000,
        };
        primary.sender.send_progress(p).expect("progress");
        let handle = primary.handle.clone();
        within("an acknowledgement", move || handle.wait_acked(p)).expect("acknowledged");
    }
    assert!(
        primary.handle.lost().is_none(),
        "the primary lost its backup"
    );
    assert!(
        backup.handle().lost().is_none(),
        "the backup lost its primary"
    );
    drop(flood);
    let deadline = Instant::now() + Duration::from_secs(30);
    while counter(&backup, "connections_refused") < 5 + 12 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(counter(&backup, "auth_failures"), 1);
    // The stalled stranger of the start, the three byte strangers, the
    // wrong key, the second primary, and the flood (12 beyond the cap at
    // once, 8 when they close).
    assert!(
        counter(&backup, "connections_refused") >= 5 + 12,
        "{}",
        backup.status.counters()
    );
    drop(backup);
    drop(primary);
    let _ = std::fs::remove_dir_all(&dir);
}
