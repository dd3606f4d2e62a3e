// Copyright 2026 The ft-cloud-hypervisor authors.
// SPDX-License-Identifier: Apache-2.0

//! After an FT VMotion with `disks=separate`: the primary reads its disk
//! images against the tables of block digests the seed compared with the
//! backup's (`vm_migration::migration::BlockDigests`), on a thread of its
//! own at low priority while the guest runs.
//!
//! The pause compares tables: each side's digests of the blocks as sent
//! and as written, so the backup's copy holds every block as the primary
//! last sent it. What a table cannot show is a write the written-block
//! tracker missed (the block was not sent again: both tables agree, the
//! images differ). This read finds it: every block of the image is read
//! and compared with the table, except the blocks the guest wrote since
//! the switch (the same tracker's reader, kept from the seed, marks them:
//! their bytes have changed on both sides by then), which cannot be
//! checked and are counted. A block that differs and was not written since
//! is reported (`seed-disks-differ` event, an error in the log, `vm.info`'s
//! `fault_tolerance.seed.disks.verify`); one that matches is proof for
//! that block. The pair is protected meanwhile, on the tracker's word.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use ft_backend::pair::PairStatus;
use vm_migration::migration::{BlockDigests, DiskSource};
use xxhash_rust::xxh3::xxh3_64;

use crate::migration::disks::VmDisks;

/// Blocks that differ listed in a report, at most.
const MAX_LISTED: usize = 16;

/// The verification's state for `vm.info` (`{"state": "running"}`, then
/// its outcome).
pub type VerifyState = Arc<Mutex<serde_json::Value>>;

/// What the read of one image found.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ImageCheck {
    /// Blocks read and found as the table says.
    pub matched: u64,
    /// Blocks in holes (not read), as the table says.
    pub holes: u64,
    /// Blocks the guest wrote since the switch (not checkable).
    pub written_since: u64,
    /// Blocks that differ from the table and were not written since.
    pub differ: Vec<u64>,
    /// Bytes read.
    pub bytes: u64,
}

fn is_set(bits: &[u64], b: u64) -> bool {
    bits.get((b / 64) as usize)
        .is_some_and(|w| w & (1 << (b % 64)) != 0)
}

/// Reads image `disk` of `source` against `table`. The source's written
/// blocks must be those since the switch (its reader was last taken in
/// the pause).
pub fn check_image(
    source: &mut dyn DiskSource,
    disk: usize,
    table: &BlockDigests,
) -> Result<ImageCheck, vm_migration::migration::BoxError> {
    let mut out = ImageCheck::default();
    let block = table.block_size();
    let zeros = vec![0u8; block as usize];
    let mut ranges = source.data_ranges(disk)?.into_iter().peekable();
    let mut buf = vec![0u8; block as usize];
    let mut candidates = Vec::new();
    for b in 0..table.blocks() {
        let Some((offset, len)) = table.range(b) else {
            break;
        };
        while ranges.peek().is_some_and(|(s, l)| s + l <= offset) {
            ranges.next();
        }
        let has_data = ranges.peek().is_some_and(|(s, _)| *s < offset + len);
        let ok = if has_data {
            let data = &mut buf[..len as usize];
            source.read_disk(disk, offset, data)?;
            out.bytes += len;
            table.check(b, data)
        } else {
            out.holes += 1;
            table.check_digest(b, xxh3_64(&zeros[..len as usize]))
        };
        if ok {
            if has_data {
                out.matched += 1;
            }
        } else {
            candidates.push(b);
        }
    }
    // Written since the switch: marked after the write reached the file,
    // so a block read after a write is marked by now.
    let written = source.written_blocks(disk)?;
    out.written_since = written.iter().map(|w| u64::from(w.count_ones())).sum();
    out.differ = candidates
        .into_iter()
        .filter(|b| !is_set(&written, *b))
        .collect();
    Ok(out)
}

/// Lowers the calling thread's scheduling priority (nice 19): the guest's
/// vCPU and the pair's threads go first.
fn lower_priority() {
    // SAFETY: gettid takes no argument and only returns the caller's id.
    let tid = unsafe { libc::syscall(libc::SYS_gettid) };
    // SAFETY: setpriority on this thread's own id; it changes only its
    // nice value and reports failure in its return value (ignored: the
    // check runs at the default priority then).
    let _ = unsafe { libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, 19) };
}

/// Starts the check of `disks` against `tables` (by index) on a thread of
/// its own; its outcome goes to `state`, to `status`'s events and to the
/// log.
pub fn spawn(
    mut disks: VmDisks,
    tables: Vec<BlockDigests>,
    status: Arc<PairStatus>,
) -> VerifyState {
    let state: VerifyState = Arc::new(Mutex::new(serde_json::json!({"state": "running"})));
    let shared = state.clone();
    let set = move |v: serde_json::Value| {
        *shared.lock().unwrap_or_else(|e| e.into_inner()) = v;
    };
    let spawned = std::thread::Builder::new()
        .name("seed-verify".into())
        .spawn(move || {
            lower_priority();
            let t = Instant::now();
            let mut checks = Vec::with_capacity(tables.len());
            for (d, table) in tables.iter().enumerate() {
                match check_image(&mut disks, d, table) {
                    Ok(c) => checks.push(c),
                    Err(e) => {
                        let why = format!("disk {d}: {e}");
                        log::error!("fault tolerance: cannot verify the seeded disks: {why}");
                        status.event("seed-disks-unverified", &[("reason", why.clone())]);
                        set(serde_json::json!({"state": "failed", "reason": why}));
                        return;
                    }
                }
            }
            report(&checks, t.elapsed().as_secs_f64() * 1e3, &status, set);
        });
    if let Err(e) = spawned {
        log::error!("fault tolerance: cannot start the seeded disks' check: {e}");
        *state.lock().unwrap_or_else(|e| e.into_inner()) =
            serde_json::json!({"state": "failed", "reason": e.to_string()});
    }
    state
}

fn report(
    checks: &[ImageCheck],
    ms: f64,
    status: &PairStatus,
    set: impl FnOnce(serde_json::Value),
) {
    let sum = |f: fn(&ImageCheck) -> u64| checks.iter().map(f).sum::<u64>();
    let (matched, holes, written, bytes) = (
        sum(|c| c.matched),
        sum(|c| c.holes),
        sum(|c| c.written_since),
        sum(|c| c.bytes),
    );
    let differ: Vec<(usize, u64)> = checks
        .iter()
        .enumerate()
        .flat_map(|(d, c)| c.differ.iter().map(move |b| (d, *b)))
        .collect();
    let props = [
        ("blocks_matched", matched.to_string()),
        ("blocks_in_holes", holes.to_string()),
        ("blocks_written_since", written.to_string()),
        ("bytes_read", bytes.to_string()),
        ("ms", format!("{ms:.1}")),
    ];
    let mut info = serde_json::json!({
        "blocks_matched": matched,
        "blocks_in_holes": holes,
        "blocks_written_since": written,
        "bytes_read": bytes,
        "ms": (ms * 10.0).round() / 10.0,
    });
    if differ.is_empty() {
        info["state"] = "verified".into();
        log::info!(
            "fault tolerance: the seeded disks are verified: {matched} blocks read as sent, {holes} in holes, {written} written since the switch ({ms:.1} ms)"
        );
        status.event("seed-disks-verified", &props);
    } else {
        let listed: Vec<String> = differ
            .iter()
            .take(MAX_LISTED)
            .map(|(d, b)| format!("{d}:{b}"))
            .collect();
        info["state"] = "differs".into();
        info["blocks_differ"] = differ.len().into();
        info["first_blocks"] = listed.clone().into();
        log::error!(
            "fault tolerance: {} blocks of the seeded disks differ from what was sent (disk:block {}): the backup's copy is not the image",
            differ.len(),
            listed.join(" ")
        );
        let mut props = props.to_vec();
        props.push(("blocks_differ", differ.len().to_string()));
        props.push(("first_blocks", listed.join(" ")));
        status.event("seed-disks-differ", &props);
    }
    set(info);
}

#[cfg(test)]
mod tests {
    use super::*;
    use vm_migration::migration::BoxError;

    /// An image in memory whose holes and writes since the switch are
    /// given.
    struct Image {
        data: Vec<u8>,
        ranges: Vec<(u64, u64)>,
        written: Vec<u64>,
    }

    impl DiskSource for Image {
        fn disk_sizes(&self) -> Vec<u64> {
            vec![self.data.len() as u64]
        }
        fn block_size(&self) -> u64 {
            4096
        }
        fn data_ranges(&self, _: usize) -> Result<Vec<(u64, u64)>, BoxError> {
            Ok(self.ranges.clone())
        }
        fn read_disk(&self, _: usize, offset: u64, buf: &mut [u8]) -> Result<(), BoxError> {
            let at = offset as usize;
            buf.copy_from_slice(&self.data[at..at + buf.len()]);
            Ok(())
        }
        fn written_blocks(&mut self, _: usize) -> Result<Vec<u64>, BoxError> {
            Ok(std::mem::take(&mut self.written))
        }
    }

    #[test]
    fn a_missed_write_is_found_and_a_write_since_the_switch_is_not_blamed() {
        let size = 10 * 4096 + 100;
        let mut data = vec![0u8; size];
        data[..3 * 4096].fill(1);
        data[size - 50..].fill(2);
        let mut table = BlockDigests::new(size as u64, 4096).unwrap();
        for b in [0u64, 1, 2, 10] {
            let (o, l) = table.range(b).unwrap();
            table.set(b, &data[o as usize..(o + l) as usize]).unwrap();
        }
        let ranges = vec![(0, 3 * 4096), (10 * 4096, 100)];
        let mut img = Image {
            data: data.clone(),
            ranges: ranges.clone(),
            written: Vec::new(),
        };
        let c = check_image(&mut img, 0, &table).unwrap();
        assert_eq!((c.matched, c.holes, c.written_since), (4, 7, 0));
        assert!(c.differ.is_empty());
        assert_eq!(c.bytes, 3 * 4096 + 100);
        // A write the tracker missed (block 1), one it marked since the
        // switch (block 2), data in a former hole (block 5), unmarked.
        let mut img = Image {
            data,
            ranges: vec![(0, 3 * 4096), (5 * 4096, 4096), (10 * 4096, 100)],
            written: vec![1 << 2],
        };
        img.data[4096 + 7] = 9;
        img.data[2 * 4096] = 9;
        img.data[5 * 4096] = 9;
        let c = check_image(&mut img, 0, &table).unwrap();
        assert_eq!(c.differ, vec![1, 5]);
        assert_eq!(c.written_since, 1);
    }
}
