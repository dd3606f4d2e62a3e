// Copyright 2026 The ft-cloud-hypervisor authors.
// SPDX-License-Identifier: Apache-2.0

//! A TCP relay between a primary and a backup that forwards, changes,
//! replays, reorders, cuts or stalls the primary's records.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;

use ft_backend::channel::{PREAMBLE_LEN, RECORD_HEADER_LEN};

use super::listener;

/// What the relay does with one primary-to-backup record.
pub enum Verdict {
    /// Forward these bytes instead (empty: drop it).
    Send(Vec<u8>),
    /// Forward these bytes, then close both connections.
    Cut(Vec<u8>),
    /// Forward nothing more, either way, but keep the connections open.
    Stall,
}

pub type Script = Box<dyn FnMut(u64, Vec<u8>) -> Verdict + Send>;

/// A TCP relay in front of `target` for one connection: the backup-to-
/// primary direction is copied; the primary-to-backup direction is parsed
/// (preamble, handshake message, then records) and each record (numbered
/// by its header) goes through `script`.
pub fn relay(target: SocketAddr, mut script: Script) -> SocketAddr {
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
