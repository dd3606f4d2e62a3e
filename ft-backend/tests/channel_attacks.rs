// Copyright 2026 The ft-cloud-hypervisor authors.
// SPDX-License-Identifier: Apache-2.0

//! Attacks on the logging channel over real loopback TCP: a relay between
//! the primary and the backup flips, replays, reorders, truncates or
//! brings records from another session; the backup delivers nothing of a
//! refused record and loses the channel saying why.

mod channel_support;

use std::sync::Arc;
use std::time::Duration;

use channel_support::relay::{relay, Script, Verdict};
use channel_support::{hello, key, listener, open_pair, quiet, record_error};
use ft_backend::channel::{Incoming, RecordError, Role, SessionError, RECORD_HEADER_LEN};

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
