// Copyright 2026 The ft-cloud-hypervisor authors.
// SPDX-License-Identifier: Apache-2.0

//! The read-back after a stream: every acknowledged SET is fetched again
//! and compared, with GETs pipelined in batches (the service answers
//! pipelined requests in order) so that thousands of keys take a few round
//! trips. It runs on the stream's own connection when that one completed,
//! on a new connection otherwise.

use std::fmt;
use std::time::Instant;

use super::stream::{BadKey, StreamConfig, StreamEnd};
use super::Connection;

/// GETs sent before their answers are read.
const BATCH: usize = 32;

/// Which connection the verification used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VerifiedOn {
    /// The stream's own connection (it completed).
    SameConnection,
    /// A new connection (the stream's connection had failed).
    NewConnection,
}

impl fmt::Display for VerifiedOn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            VerifiedOn::SameConnection => "same",
            VerifiedOn::NewConnection => "new",
        })
    }
}

/// What the verification did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verification {
    /// The connection it used.
    pub on: VerifiedOn,
    /// Acknowledged keys read back (good or bad).
    pub checked: u64,
    /// How its connection ended: [`StreamEnd::Completed`] when every key
    /// was read back.
    pub end: StreamEnd,
    /// How long it took.
    pub elapsed: std::time::Duration,
}

/// Reads every `(key, value)` of `acked` back, on `same` or on a new
/// connection; returns what it did and the keys that did not match.
pub fn verify(
    config: &StreamConfig,
    same: Option<Connection>,
    acked: &[(String, String)],
) -> (Verification, Vec<BadKey>) {
    let start = Instant::now();
    let mut verification = Verification {
        on: if same.is_some() {
            VerifiedOn::SameConnection
        } else {
            VerifiedOn::NewConnection
        },
        checked: 0,
        end: StreamEnd::Completed,
        elapsed: std::time::Duration::ZERO,
    };
    let mut bad = Vec::new();
    let connection = match same {
        Some(c) => Ok(c),
        None => Connection::connect(config.addr, config.connect_timeout).and_then(|mut c| {
            c.set_timeout(config.reply_timeout)?;
            Ok(c)
        }),
    };
    match connection {
        Ok(mut c) => {
            if let Err(end) = read_back(&mut c, acked, &mut verification, &mut bad) {
                verification.end = end;
            }
        }
        Err(e) => verification.end = StreamEnd::of(&e),
    }
    verification.elapsed = start.elapsed();
    (verification, bad)
}

fn read_back(
    c: &mut Connection,
    acked: &[(String, String)],
    verification: &mut Verification,
    bad: &mut Vec<BadKey>,
) -> Result<(), StreamEnd> {
    for batch in acked.chunks(BATCH) {
        let lines: Vec<String> = batch.iter().map(|(key, _)| format!("GET {key}")).collect();
        c.send(&lines).map_err(|e| StreamEnd::of(&e))?;
        for (key, expected) in batch {
            let answer = c.read_answer().map_err(|e| StreamEnd::of(&e))?;
            let got = if answer == "NONE" {
                None
            } else if let Some(value) = answer.strip_prefix("VALUE ") {
                Some(value.to_string())
            } else {
                return Err(StreamEnd::Unexpected(format!(
                    "answer {answer:?} to GET {key}"
                )));
            };
            verification.checked += 1;
            if got.as_deref() != Some(expected.as_str()) {
                bad.push(BadKey {
                    key: key.clone(),
                    expected: expected.clone(),
                    got,
                });
            }
        }
    }
    Ok(())
}
