// Copyright 2026 The ft-cloud-hypervisor authors.
// SPDX-License-Identifier: Apache-2.0

//! The shared-storage tiebreaker: `file:PATH`.
//!
//! A claim of generation G by claimant C:
//! 1. writes the slot record (G, C) to a temporary file unique to this
//!    claim in PATH's directory, and syncs it;
//! 2. `link(2)`s it to `PATH.G`. Exactly one link of a name can succeed,
//!    on a local file system as on NFS; the slot, when it appears, is
//!    complete (unlike `O_CREAT|O_EXCL` followed by a write, which a racing
//!    reader can see empty). `EEXIST`: another claim was first, and the
//!    slot names its winner. If `link` reports another error, the
//!    temporary file's link count still tells whether it took effect (an
//!    NFS reply lost after the server linked it);
//! 3. removes the temporary name and syncs the directory, so the slot
//!    survives a crash of the host once the claim has returned.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use super::{Outcome, SlotRecord};

/// A claim on the file tiebreaker failed (the outcome is unknown: not a
/// win).
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    /// The directory of PATH does not exist or is not one.
    #[error("the tiebreak directory {0} does not exist")]
    NoDirectory(PathBuf),
    /// Writing the claim failed.
    #[error("cannot write the tiebreak claim {path}")]
    Write {
        /// The temporary file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// Linking the slot failed for another reason than "it exists".
    #[error("cannot create the tiebreak slot {path}")]
    Link {
        /// The slot.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The slot exists but cannot be read.
    #[error("cannot read the tiebreak slot {path}")]
    Read {
        /// The slot.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// Syncing the directory after winning failed.
    #[error("cannot sync the tiebreak directory {path}")]
    Sync {
        /// The directory.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
}

/// `file:PATH`: slots `PATH.GENERATION` on shared storage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileTiebreaker {
    path: PathBuf,
}

/// Makes temporary names unique between threads of one process.
static CLAIMS: AtomicU64 = AtomicU64::new(0);

impl FileTiebreaker {
    /// The tiebreaker whose slots are `path.GENERATION`.
    pub fn new(path: PathBuf) -> Self {
        FileTiebreaker { path }
    }

    /// PATH.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The slot of `generation`.
    pub fn slot(&self, generation: u64) -> PathBuf {
        let mut name = self.path.as_os_str().to_owned();
        name.push(format!(".{generation}"));
        PathBuf::from(name)
    }

    fn dir(&self) -> PathBuf {
        match self.path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        }
    }

    /// Claims the slot of `generation` for `claimant`.
    pub fn test_and_set(&self, generation: u64, claimant: &str) -> Result<Outcome, FileError> {
        let dir = self.dir();
        if !dir.is_dir() {
            return Err(FileError::NoDirectory(dir));
        }
        let slot = self.slot(generation);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        let mut tmp = slot.as_os_str().to_owned();
        tmp.push(format!(
            ".claim.{}.{}.{nanos}",
            std::process::id(),
            CLAIMS.fetch_add(1, Ordering::Relaxed)
        ));
        let tmp = PathBuf::from(tmp);
        let record = SlotRecord {
            generation,
            winner: claimant.to_string(),
        }
        .encode();
        if let Err(source) = write_synced(&tmp, record.as_bytes()) {
            let _ = fs::remove_file(&tmp);
            return Err(FileError::Write { path: tmp, source });
        }
        let linked = fs::hard_link(&tmp, &slot);
        let outcome = match linked {
            Ok(()) => Ok(Outcome::Won),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => match fs::read(&slot) {
                Ok(data) => Ok(SlotRecord::outcome_for(SlotRecord::decode(&data), claimant)),
                Err(source) => Err(FileError::Read {
                    path: slot.clone(),
                    source,
                }),
            },
            Err(source) => match fs::metadata(&tmp) {
                // The link took effect although it reported an error.
                Ok(m) if m.nlink() == 2 => Ok(Outcome::Won),
                _ => Err(FileError::Link {
                    path: slot.clone(),
                    source,
                }),
            },
        };
        let _ = fs::remove_file(&tmp);
        if outcome.as_ref().is_ok_and(|o| *o == Outcome::Won) {
            File::open(&dir)
                .and_then(|d| d.sync_all())
                .map_err(|source| FileError::Sync { path: dir, source })?;
        }
        outcome
    }
}

fn write_synced(path: &Path, data: &[u8]) -> io::Result<()> {
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o644)
        .open(path)?;
    f.write_all(data)?;
    f.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("ft-tb-{}-{name}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).expect("temp dir");
        dir
    }

    #[test]
    fn first_claim_wins_later_ones_lose_and_the_winner_may_claim_again() {
        let dir = temp_dir("seq");
        let t = FileTiebreaker::new(dir.join("vm.tiebreak"));
        assert_eq!(t.test_and_set(1, "a").expect("claim"), Outcome::Won);
        assert_eq!(
            t.test_and_set(1, "b").expect("claim"),
            Outcome::Lost { winner: "a".into() }
        );
        assert_eq!(t.test_and_set(1, "a").expect("again"), Outcome::Won);
        assert_eq!(
            t.test_and_set(2, "b").expect("next generation"),
            Outcome::Won
        );
        let record = SlotRecord::decode(&fs::read(t.slot(2)).expect("slot")).expect("record");
        assert_eq!(record.winner, "b");
        assert_eq!(record.generation, 2);
        // No temporary file is left behind.
        let names: Vec<_> = fs::read_dir(&dir)
            .expect("list")
            .map(|e| e.expect("entry").file_name().into_string().expect("utf8"))
            .collect();
        assert_eq!(names.len(), 2, "{names:?}");
        fs::remove_dir_all(&dir).expect("cleanup");
    }

    #[test]
    fn a_damaged_slot_is_lost_not_won() {
        let dir = temp_dir("damaged");
        let t = FileTiebreaker::new(dir.join("vm.tiebreak"));
        fs::write(t.slot(5), b"garbage").expect("write");
        assert_eq!(
            t.test_and_set(5, "a").expect("claim"),
            Outcome::Lost { winner: "?".into() }
        );
        fs::remove_dir_all(&dir).expect("cleanup");
    }

    #[test]
    fn a_missing_directory_is_an_error() {
        let t = FileTiebreaker::new("/nonexistent-ft-dir/vm.tiebreak".into());
        assert!(matches!(
            t.test_and_set(1, "a"),
            Err(FileError::NoDirectory(_))
        ));
    }
}
