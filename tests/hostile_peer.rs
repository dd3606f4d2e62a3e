// Copyright 2026 The ft-cloud-hypervisor authors.
// SPDX-License-Identifier: Apache-2.0

//! A hostile peer against a running fault-tolerant pair, with real VMM
//! processes on two namespace hosts (`common::pair`) and real TCP on the
//! logging link: from host A (where the primary runs; the primary itself
//! listens on nothing), the test process connects to the backup's channel
//! port and sends random bytes, mutated and replayed handshakes, an
//! oversized handshake message, another protocol version, a handshake
//! with the wrong key, a second primary with the right key, and a flood
//! of stalled connections, some of them before the primary is there.
//! The pair forms anyway, stays protected while attacked, replays the
//! guest exactly, and the backup reports the attempts (`auth-failed`
//! events, `connections_refused` and `auth_failures` in `vm.counters`).

mod common;

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::path::Path;
use std::time::{Duration, Instant};

use common::ftpair::{
    assert_clean, final_digest, ft_events, start_primary, vmm_args, wait_exit, write_key, Setup,
    CHANNEL_PORT,
};
use common::pair::{Host, PairNet, LOG_B};
use common::{api, wait_until, TempDir};
use ft_backend::channel::{
    self, ChannelConfig, ChannelKey, HandshakeError, Hello, Role, MAGIC, PROTOCOL_VERSION,
};
use serde_json::Value;

/// A small deterministic generator (the bytes need not be secret).
struct Lcg(u64);

impl Lcg {
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n)
            .map(|_| {
                self.0 = self
                    .0
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                (self.0 >> 56) as u8
            })
            .collect()
    }
}

fn json(socket: &Path, what: &str) -> Value {
    let (status, body) = api(socket, "GET", what, None);
    assert_eq!(status, 200, "{what}: {body}");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("{what}: {e}: {body}"))
}

fn ft_state(socket: &Path) -> String {
    json(socket, "vm.info")["fault_tolerance"]["state"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

/// Sends `bytes` and waits until the backup closes the connection (it
/// must, within the handshake bound).
fn send_and_wait_close(to: SocketAddr, bytes: &[u8]) {
    let mut s = TcpStream::connect(to).expect("connect to the backup's port");
    s.set_read_timeout(Some(Duration::from_secs(30))).ok();
    let _ = s.write_all(bytes);
    let _ = s.shutdown(Shutdown::Write);
    let mut sink = Vec::new();
    let r = s.read_to_end(&mut sink);
    assert!(
        !matches!(&r, Err(e) if e.kind() == std::io::ErrorKind::WouldBlock),
        "the backup kept a stranger's connection open"
    );
}

fn preamble(version: u32) -> Vec<u8> {
    let mut p = MAGIC.to_vec();
    p.extend_from_slice(&version.to_le_bytes());
    p.extend_from_slice(&[0; 4]);
    p
}

/// Every attack once; returns how many connections it made.
fn attack(to: SocketAddr, key: &ChannelKey, rng: &mut Lcg) -> u64 {
    let cfg = ChannelConfig {
        connect_timeout: Duration::from_secs(5),
        ..ChannelConfig::default()
    };
    let mut n = 0;
    // Random bytes, small and large.
    for len in [1, 17, 64, 4096, 70_000] {
        send_and_wait_close(to, &rng.bytes(len));
        n += 1;
    }
    // Another protocol version, and a preamble then garbage.
    send_and_wait_close(to, &preamble(PROTOCOL_VERSION + 7));
    let mut p = preamble(PROTOCOL_VERSION);
    p.extend_from_slice(&rng.bytes(100));
    send_and_wait_close(to, &p);
    // An oversized handshake message.
    let mut p = preamble(PROTOCOL_VERSION);
    p.extend_from_slice(&u16::MAX.to_le_bytes());
    p.extend_from_slice(&rng.bytes(3000));
    send_and_wait_close(to, &p);
    n += 3;
    // A handshake message 1 replayed from an earlier connection (a
    // stranger's, here one made with the right key's shape but random
    // bytes) and the same with one bit flipped.
    let mut p = preamble(PROTOCOL_VERSION);
    p.extend_from_slice(&48u16.to_le_bytes());
    p.extend_from_slice(&rng.bytes(48));
    send_and_wait_close(to, &p);
    let last = p.len() - 1;
    p[last] ^= 1;
    send_and_wait_close(to, &p);
    n += 2;
    // The wrong key: refused as an authentication failure.
    let wrong = ChannelKey::from_bytes([0x42; 32]);
    let hello = Hello::new(Role::Primary, 0, Vec::new(), 0);
    let r = channel::connect(to, &wrong, &hello, &cfg);
    assert!(matches!(r, Err(HandshakeError::Authentication(_))), "{r:?}");
    n += 1;
    // The right key, as a second primary: refused, told why.
    match channel::connect(to, key, &hello, &cfg) {
        Err(HandshakeError::Refused(text)) => {
            assert!(text.contains("already serves its primary"), "{text}")
        }
        other => panic!("a second primary was not refused: {other:?}"),
    }
    n += 1;
    // A flood of connections that send nothing, then go.
    let flood: Vec<TcpStream> = (0..24)
        .filter_map(|_| TcpStream::connect(to).ok())
        .collect();
    n += flood.len() as u64;
    std::thread::sleep(Duration::from_millis(300));
    drop(flood);
    n
}

#[test]
fn a_hostile_peer_does_not_disturb_a_running_pair() {
    let dir = TempDir::new("hostile-peer");
    let net = PairNet::new();
    let names = net.names();
    let mut s = Setup::compute(
        "workload=ticks count=2500 hz=100",
        format!("file:{}", dir.path("tiebreak").display()),
    );
    s.api = true;
    let key_path = write_key(&dir);
    let key = ChannelKey::load(&key_path).expect("the pair's key");
    let port = SocketAddr::from((LOG_B, CHANNEL_PORT));

    // The backup, with an API socket of its own.
    let backup_sock = dir.path("backup.sock");
    let mut b = vmm_args(
        &net,
        Host::B,
        &s,
        format!(
            "mode=backup,listen=tcp:{LOG_B}:{CHANNEL_PORT},key={},tiebreaker={}",
            key_path.display(),
            s.tiebreaker
        ),
        &dir.path("events-backup.json"),
    );
    b.extend([
        "--api-socket".into(),
        format!("path={}", backup_sock.display()),
    ]);
    let b: Vec<&str> = b.iter().map(String::as_str).collect();
    let mut backup = net.spawn_vmm(Host::B, &dir.0, "backup", &b);

    // Before the primary comes: strangers that stall (longer than the
    // primary's 10 s to reach its backup) and a wrong key.
    let host_a = net.host(Host::A);
    let stalled = host_a.run(|| {
        let deadline = Instant::now() + Duration::from_secs(20);
        let first = loop {
            match TcpStream::connect(port) {
                Ok(s) => break s,
                Err(_) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20))
                }
                Err(e) => panic!("the backup never listened: {e}"),
            }
        };
        let mut v = vec![first];
        v.extend((0..3).filter_map(|_| TcpStream::connect(port).ok()));
        let r = channel::connect(
            port,
            &ChannelKey::from_bytes([0x24; 32]),
            &Hello::new(Role::Primary, 0, Vec::new(), 0),
            &ChannelConfig::default(),
        );
        assert!(matches!(r, Err(HandshakeError::Authentication(_))), "{r:?}");
        v
    });

    let mut primary = start_primary(&net, &dir, &s, &key_path, "primary");
    let primary_sock = dir.path("primary.sock");
    assert!(
        wait_until(Duration::from_secs(60), || primary_sock.exists()
            && ft_state(&primary_sock) == "protected"),
        "the pair did not form past the strangers; primary:\n{}\nbackup:\n{}",
        primary.stderr_text(),
        backup.stderr_text()
    );
    drop(stalled);

    // Attacks while the pair runs, from host A, in rounds; the pair must
    // stay protected and keep acknowledging.
    let mut rng = Lcg(0x5eed ^ u64::from(std::process::id()));
    let mut attempts = 4 + 1;
    for round in 0..3 {
        let before = json(&primary_sock, "vm.info")["fault_tolerance"]["position_acknowledged"]
            ["exits"]
            .as_u64()
            .unwrap_or(0);
        attempts += host_a.run(|| attack(port, &key, &mut rng));
        assert_eq!(ft_state(&primary_sock), "protected", "round {round}");
        assert_eq!(ft_state(&backup_sock), "protected", "round {round}");
        assert!(
            wait_until(Duration::from_secs(20), || {
                json(&primary_sock, "vm.info")["fault_tolerance"]["position_acknowledged"]["exits"]
                    .as_u64()
                    .unwrap_or(0)
                    > before
            }),
            "round {round}: the backup stopped acknowledging"
        );
    }

    // The backup reports what it refused.
    assert!(
        wait_until(Duration::from_secs(30), || {
            json(&backup_sock, "vm.counters")["fault_tolerance"]["connections_refused"]
                .as_u64()
                .unwrap_or(0)
                >= attempts
        }),
        "expected {attempts} refusals: {}",
        json(&backup_sock, "vm.counters")["fault_tolerance"]
    );
    // The four wrong keys at least (one before the pair formed, one per
    // round; random handshake messages fail authentication too).
    let counters = json(&backup_sock, "vm.counters")["fault_tolerance"].clone();
    let auth_failures = counters["auth_failures"].as_u64().unwrap_or(0);
    assert!(auth_failures >= 4, "{counters}");

    // The guest runs to its end on the primary, and the backup's replay
    // ends in the same state.
    let ps = wait_exit(&mut primary, Duration::from_secs(180));
    let bs = wait_exit(&mut backup, Duration::from_secs(60));
    let (pe, be) = (primary.stderr_text(), backup.stderr_text());
    assert!(
        ps.success() && bs.success(),
        "primary {ps}, backup {bs}:\n{pe}\n{be}"
    );
    let digest = final_digest(&pe).expect("the primary's final digest");
    assert_eq!(final_digest(&be).as_deref(), Some(digest.as_str()), "{be}");
    assert_eq!(primary.serial_text(), backup.serial_text());
    let events = ft_events(&dir.path("events-backup.json"));
    let auth = events.iter().filter(|e| *e == "auth-failed").count();
    assert_eq!(auth as u64, auth_failures, "{events:?}");
    let others: Vec<&String> = events.iter().filter(|e| *e != "auth-failed").collect();
    assert_eq!(others, ["connected", "protected"], "{events:?}");
    drop(primary);
    drop(backup);
    drop(net);
    assert_clean(&names);
}
