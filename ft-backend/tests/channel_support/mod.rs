// Copyright 2026 The ft-cloud-hypervisor authors.
// SPDX-License-Identifier: Apache-2.0

//! What the logging channel's tests share (`channel`, `channel_attacks`
//! and `channel_liveness` include this module): keys, hellos, a quiet
//! configuration, a pair of real channels over loopback TCP, test data,
//! and (in [`relay`]) a relay that runs a script on the primary's records.

#![allow(dead_code)]

pub mod relay;

use std::net::{SocketAddr, TcpListener};
use std::thread;
use std::time::Duration;

use ft_backend::channel::{
    accept, connect, Channel, ChannelConfig, ChannelKey, DiskDigest, HandshakeError, Hello,
    Position, RecordError, Role, SessionError,
};

pub fn key(byte: u8) -> ChannelKey {
    ChannelKey::from_bytes([byte; 32])
}

pub fn hello(role: Role) -> Hello {
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
pub fn quiet() -> ChannelConfig {
    ChannelConfig {
        heartbeat: Duration::from_secs(30),
        timeout: Duration::from_secs(60),
        connect_timeout: Duration::from_secs(10),
        window_bytes: 1 << 20,
        recv_buffer_bytes: 4 << 20,
    }
}

pub fn listener() -> TcpListener {
    TcpListener::bind("127.0.0.1:0").expect("bind loopback")
}

/// Opens a pair; the primary connects to `via` (the backup's listener, or a
/// relay in front of it).
pub fn open_pair(
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

pub fn good_pair(config: &ChannelConfig) -> (Channel, Channel) {
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
pub fn pattern(len: usize, seed: u64) -> Vec<u8> {
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

pub fn pos(exits: u64) -> Position {
    Position {
        exits,
        guest_ns: exits * 1000,
    }
}

pub fn record_error(e: &SessionError) -> &RecordError {
    e.record_error()
        .unwrap_or_else(|| panic!("not a record failure: {e}"))
}
