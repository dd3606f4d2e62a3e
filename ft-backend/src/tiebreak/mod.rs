// Copyright 2026 The ft-cloud-hypervisor authors.
// SPDX-License-Identifier: Apache-2.0

//! Split-brain tiebreakers: an atomic test-and-set per pair generation.
//!
//! When a side of the pair loses its peer, it claims the generation's
//! *slot* before it continues alone; at most one claim can succeed, and the
//! loser stops itself. Two media:
//! - `file:PATH` ([`FileTiebreaker`]): on storage both hosts share (next to
//!   the shared disk), the slot is the file `PATH.GENERATION`, created by
//!   `link(2)` of a fully written and synced temporary file: the slot
//!   appears atomically, complete, or not at all, and `link` fails with
//!   `EEXIST` for every later claimant.
//! - `etcd:http://HOST:PORT/PREFIX` ([`EtcdTiebreaker`]): the key
//!   `/PREFIX/GENERATION` created by an etcd v3 transaction "if the key's
//!   create revision is 0 (absent), put it; else read it", sent through
//!   etcd's JSON gateway (`POST /v3/kv/txn`).
//!
//! The slot records who won: see [`SlotRecord`]. A claim by the side that
//! already holds the slot wins again (a retry after a lost reply).
//!
//! **Fail safe**: any error (storage or etcd unreachable, a timeout, a
//! reply that cannot be read) is not a win. [`Tiebreaker::decide`] turns
//! errors into [`Decision::NotWon`]: the caller stops, so two sides are
//! never live at once, at the price of none being live when the medium is
//! down.

mod etcd;
mod file;
mod http;

use crate::error_chain;
use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

pub use etcd::{EtcdError, EtcdTiebreaker};
pub use file::{FileError, FileTiebreaker};
pub use http::HttpError;

/// The slot record's first line.
const SLOT_MAGIC: &str = "ft-cloud-hypervisor tiebreak 1";

/// The longest claimant name.
pub const MAX_CLAIMANT: usize = 200;

/// The default bound on one etcd claim (connect, send, reply).
pub const DEFAULT_ETCD_TIMEOUT: Duration = Duration::from_secs(2);

/// Parsing a tiebreaker, or claiming its slot.
#[derive(Debug, thiserror::Error)]
pub enum TiebreakError {
    /// The `tiebreaker=` value is not understood.
    #[error("invalid tiebreaker {value:?}: {reason} (expected file:PATH or etcd:http://HOST:PORT/PREFIX)")]
    Parse {
        /// The value given.
        value: String,
        /// What is wrong.
        reason: &'static str,
    },
    /// The claimant name cannot be stored.
    #[error("invalid tiebreak claimant {0:?}: 1 to 200 printable ASCII characters")]
    Claimant(String),
    /// The file tiebreaker failed.
    #[error("the file tiebreaker failed")]
    File(#[source] FileError),
    /// The etcd tiebreaker failed.
    #[error("the etcd tiebreaker failed")]
    Etcd(#[source] EtcdError),
}

/// The result of a claim.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// This claimant holds the slot.
    Won,
    /// Another claimant holds it.
    Lost {
        /// Who, as its record says (`"?"` if the record cannot be read).
        winner: String,
    },
}

/// A claim's result with errors folded in, fail safe.
#[derive(Debug)]
pub enum Decision {
    /// Continue alone.
    Won,
    /// Stop: another side won, or the tiebreaker could not be reached.
    NotWon {
        /// Why, for the exit message and the event.
        reason: String,
    },
}

/// Who won a generation's slot: the slot's contents.
///
/// ```text
/// ft-cloud-hypervisor tiebreak 1
/// generation G
/// winner NAME
/// crc32 XXXXXXXX      CRC-32 (IEEE) of the three lines above, newlines included
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlotRecord {
    /// The pair generation.
    pub generation: u64,
    /// The claimant that won.
    pub winner: String,
}

impl SlotRecord {
    /// The record's bytes.
    pub fn encode(&self) -> String {
        let body = format!(
            "{SLOT_MAGIC}\ngeneration {}\nwinner {}\n",
            self.generation, self.winner
        );
        let crc = crc32fast::hash(body.as_bytes());
        format!("{body}crc32 {crc:08x}\n")
    }

    /// Parses a record; `None` if it is not one (or its CRC fails).
    pub fn decode(data: &[u8]) -> Option<Self> {
        let text = std::str::from_utf8(data).ok()?;
        let crc_at = text.rfind("crc32 ")?;
        let (body, crc_line) = text.split_at(crc_at);
        let crc = u32::from_str_radix(crc_line.strip_prefix("crc32 ")?.trim_end(), 16).ok()?;
        if crc != crc32fast::hash(body.as_bytes()) {
            return None;
        }
        let mut lines = body.lines();
        if lines.next()? != SLOT_MAGIC {
            return None;
        }
        let generation = lines.next()?.strip_prefix("generation ")?.parse().ok()?;
        let winner = lines.next()?.strip_prefix("winner ")?.to_string();
        if lines.next().is_some() {
            return None;
        }
        Some(SlotRecord { generation, winner })
    }

    /// The outcome for `claimant` of finding this record in the slot.
    fn outcome_for(record: Option<Self>, claimant: &str) -> Outcome {
        match record {
            Some(r) if r.winner == claimant => Outcome::Won,
            Some(r) => Outcome::Lost { winner: r.winner },
            None => Outcome::Lost {
                winner: "?".to_string(),
            },
        }
    }
}

/// A parsed `tiebreaker=` value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Tiebreaker {
    /// `file:PATH`.
    File(FileTiebreaker),
    /// `etcd:http://HOST:PORT/PREFIX`.
    Etcd(EtcdTiebreaker),
}

impl FromStr for Tiebreaker {
    type Err = TiebreakError;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        let err = |reason| TiebreakError::Parse {
            value: value.to_string(),
            reason,
        };
        if let Some(path) = value.strip_prefix("file:") {
            if path.is_empty() {
                return Err(err("file: needs a path"));
            }
            if path.ends_with('/') {
                return Err(err("file: names a file, not a directory"));
            }
            Ok(Tiebreaker::File(FileTiebreaker::new(PathBuf::from(path))))
        } else if let Some(url) = value.strip_prefix("etcd:") {
            EtcdTiebreaker::parse(url, DEFAULT_ETCD_TIMEOUT)
                .map(Tiebreaker::Etcd)
                .map_err(err)
        } else {
            Err(err("unknown kind"))
        }
    }
}

impl fmt::Display for Tiebreaker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Tiebreaker::File(t) => write!(f, "file:{}", t.path().display()),
            Tiebreaker::Etcd(t) => write!(f, "etcd:{t}"),
        }
    }
}

impl Tiebreaker {
    /// Claims the slot of `generation` for `claimant` (a name unique to
    /// this side, e.g. role, host and process id): exactly one claimant
    /// of a generation wins, however many race.
    pub fn test_and_set(&self, generation: u64, claimant: &str) -> Result<Outcome, TiebreakError> {
        check_claimant(claimant)?;
        match self {
            Tiebreaker::File(t) => t
                .test_and_set(generation, claimant)
                .map_err(TiebreakError::File),
            Tiebreaker::Etcd(t) => t
                .test_and_set(generation, claimant)
                .map_err(TiebreakError::Etcd),
        }
    }

    /// [`Tiebreaker::test_and_set`], fail safe: an error is not a win.
    pub fn decide(&self, generation: u64, claimant: &str) -> Decision {
        match self.test_and_set(generation, claimant) {
            Ok(Outcome::Won) => Decision::Won,
            Ok(Outcome::Lost { winner }) => Decision::NotWon {
                reason: format!("lost the tiebreak for pair generation {generation} to {winner}"),
            },
            Err(e) => Decision::NotWon {
                reason: format!(
                    "could not claim the tiebreak for pair generation {generation} ({}), stopping to stay safe",
                    error_chain(&e)
                ),
            },
        }
    }
}

fn check_claimant(claimant: &str) -> Result<(), TiebreakError> {
    let ok = !claimant.is_empty()
        && claimant.len() <= MAX_CLAIMANT
        && claimant.bytes().all(|b| b.is_ascii_graphic() || b == b' ');
    if ok {
        Ok(())
    } else {
        Err(TiebreakError::Claimant(claimant.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_both_kinds() {
        let t: Tiebreaker = "file:/shared/vm1.tiebreak".parse().expect("file");
        assert_eq!(
            t,
            Tiebreaker::File(FileTiebreaker::new("/shared/vm1.tiebreak".into()))
        );
        assert_eq!(t.to_string(), "file:/shared/vm1.tiebreak");
        let t: Tiebreaker = "etcd:http://127.0.0.1:2379/ft/vm1".parse().expect("etcd");
        assert_eq!(t.to_string(), "etcd:http://127.0.0.1:2379/ft/vm1");
        let Tiebreaker::Etcd(e) = &t else {
            panic!("not etcd: {t:?}");
        };
        assert_eq!(e.key(7), "/ft/vm1/7");
        let t: Tiebreaker = "etcd:http://[::1]:2379/p".parse().expect("v6");
        assert_eq!(t.to_string(), "etcd:http://[::1]:2379/p");
        let t: Tiebreaker = "etcd:http://etcd.local/p/".parse().expect("default port");
        assert_eq!(t.to_string(), "etcd:http://etcd.local:2379/p");
    }

    #[test]
    fn bad_values_say_why() {
        for (value, why) in [
            ("", "unknown kind"),
            ("disk:/x", "unknown kind"),
            ("file:", "needs a path"),
            ("file:/tmp/", "not a directory"),
            ("etcd:https://h:1/p", "http://"),
            ("etcd:h:1/p", "http://"),
            ("etcd:http://h:1", "prefix"),
            ("etcd:http://h:1/", "prefix"),
            ("etcd:http://:1/p", "host"),
            ("etcd:http://h:x/p", "port"),
            ("etcd:http://h:0/p", "port"),
            ("etcd:http://[::1/p", "host"),
            ("etcd:http://h:1/p?q", "prefix"),
        ] {
            let e = value.parse::<Tiebreaker>().expect_err(value);
            let text = e.to_string();
            assert!(text.contains(why), "{value}: {text}");
            assert!(text.contains("expected file:PATH"), "{text}");
        }
    }

    #[test]
    fn slot_records_round_trip_and_refuse_damage() {
        let r = SlotRecord {
            generation: 42,
            winner: "backup host-b pid 7".into(),
        };
        let bytes = r.encode();
        assert_eq!(SlotRecord::decode(bytes.as_bytes()), Some(r.clone()));
        let mut damaged = bytes.clone().into_bytes();
        damaged[40] ^= 1;
        assert_eq!(SlotRecord::decode(&damaged), None);
        assert_eq!(SlotRecord::decode(b""), None);
        assert_eq!(
            SlotRecord::decode(&bytes.as_bytes()[..bytes.len() - 3]),
            None
        );
        assert_eq!(
            SlotRecord::outcome_for(Some(r.clone()), "backup host-b pid 7"),
            Outcome::Won
        );
        assert_eq!(
            SlotRecord::outcome_for(Some(r), "primary"),
            Outcome::Lost {
                winner: "backup host-b pid 7".into()
            }
        );
    }

    #[test]
    fn claimants_are_checked() {
        assert!(check_claimant("primary host-a 123").is_ok());
        assert!(check_claimant("").is_err());
        assert!(check_claimant("a\nwinner b").is_err());
        assert!(check_claimant(&"x".repeat(MAX_CLAIMANT + 1)).is_err());
    }
}
