//! `workload=disk [mib=M] [flushes=F]`: exercises the virtio-blk driver.
//!
//! Prints `disk: id=<id> sectors=<n> flush=<yes|no> read-only=<yes|no>`,
//! then on a writable disk: writes M MiB of a pattern that depends on the
//! sector number and a SplitMix64 stream (64 KiB requests, 8 per batch),
//! flushes, reads everything back and compares; then F rounds of a 4 KiB
//! write followed by a flush. Timings (APIC timer at 1000 Hz) are printed
//! as `disk: write ...`, `disk: read ...`, `disk: flush ...`. Ends with
//! `disk=ok`, or `disk: mismatch at sector S byte B: wrote X read Y` /
//! `disk: error: ...`. On a read-only disk it reads the first sector,
//! checks that a write is refused with an error status, and prints
//! `disk: write refused on the read-only disk` and `disk=ok`.

use alloc::vec;

use test_guest::splitmix;

use super::{start_timer, ticks, WorkloadError};
use crate::pci::Access;
use crate::println;
use crate::virtio::blk::{Blk, BlkError, Op, Request, SECTOR};

/// IDT vector of the disk's queue interrupt.
const BLK_VECTOR: u8 = 0x40;
/// Bytes per request and requests per batch.
const CHUNK: usize = 64 * 1024;
const BATCH: usize = 8;
/// Timer rate for the measurements.
const HZ: u64 = 1000;

/// Runs the workload.
pub fn run(mib: u64, flushes: u64) -> Result<(), WorkloadError> {
    start_timer(HZ)?;
    let access = Access::detect();
    println!("disk: PCI configuration through {access}");
    let mut blk = Blk::open(&access, BLK_VECTOR).map_err(WorkloadError::Disk)?;
    let id = blk.get_id().map_err(WorkloadError::Disk)?;
    let id_len = id.iter().position(|&b| b == 0).unwrap_or(id.len());
    println!(
        "disk: id={} sectors={} flush={} read-only={}",
        core::str::from_utf8(&id[..id_len]).unwrap_or("<not UTF-8>"),
        blk.capacity(),
        if blk.has_flush() { "yes" } else { "no" },
        if blk.read_only() { "yes" } else { "no" }
    );
    if blk.read_only() {
        return read_only(&mut blk);
    }
    let bytes = (mib as usize) * 1024 * 1024;
    let sectors = (bytes / SECTOR) as u64;
    if sectors > blk.capacity() {
        println!(
            "disk: error: {mib} MiB do not fit a disk of {} sectors",
            blk.capacity()
        );
        return Ok(());
    }
    let seed = ticks();
    // One batch at a time: the pattern is recomputed for verification.
    let batch_bytes = CHUNK * BATCH;
    let mut buffer = vec![0u8; batch_bytes];
    let start = ticks();
    for offset in (0..bytes).step_by(batch_bytes) {
        let len = batch_bytes.min(bytes - offset);
        let data = &mut buffer[..len];
        fill_pattern(data, seed, offset);
        let first = (offset / SECTOR) as u64;
        let mut requests: vec::Vec<Request<'_>> = data
            .chunks(CHUNK)
            .enumerate()
            .map(|(i, chunk)| Request {
                sector: first + (i * CHUNK / SECTOR) as u64,
                op: Op::Write(chunk),
            })
            .collect();
        blk.submit(&mut requests).map_err(WorkloadError::Disk)?;
    }
    blk.flush().map_err(WorkloadError::Disk)?;
    report("write", bytes, ticks() - start);

    let mut expected = vec![0u8; batch_bytes];
    let start = ticks();
    let mut mismatch = None;
    for offset in (0..bytes).step_by(batch_bytes) {
        let len = batch_bytes.min(bytes - offset);
        let data = &mut buffer[..len];
        let first = (offset / SECTOR) as u64;
        let mut requests: vec::Vec<Request<'_>> = data
            .chunks_mut(CHUNK)
            .enumerate()
            .map(|(i, chunk)| Request {
                sector: first + (i * CHUNK / SECTOR) as u64,
                op: Op::Read(chunk),
            })
            .collect();
        blk.submit(&mut requests).map_err(WorkloadError::Disk)?;
        let want = &mut expected[..len];
        fill_pattern(want, seed, offset);
        if mismatch.is_none() {
            mismatch = want
                .iter()
                .zip(buffer.iter())
                .position(|(a, b)| a != b)
                .map(|at| (offset + at, want[at], buffer[at]));
        }
    }
    report("read", bytes, ticks() - start);
    if let Some((at, wrote, read)) = mismatch {
        println!(
            "disk: mismatch at sector {} byte {}: wrote {wrote:#04x} read {read:#04x}",
            at / SECTOR,
            at % SECTOR,
        );
        return Ok(());
    }

    let block = vec![0x5au8; 4096];
    let start = ticks();
    for round in 0..flushes {
        blk.write(round % 16 * 8, &block)
            .map_err(WorkloadError::Disk)?;
        blk.flush().map_err(WorkloadError::Disk)?;
    }
    let elapsed = ticks() - start;
    if flushes > 0 {
        println!(
            "disk: flush: {flushes} x (4 KiB write + flush) in {elapsed} ms ({} per second)",
            (flushes * HZ).checked_div(elapsed).unwrap_or(flushes * HZ)
        );
    }
    println!("disk=ok");
    Ok(())
}

/// On a read-only disk: reads work, a write fails with an error status.
fn read_only(blk: &mut Blk) -> Result<(), WorkloadError> {
    let mut sector = [0u8; SECTOR];
    blk.read(0, &mut sector).map_err(WorkloadError::Disk)?;
    match blk.write(0, &sector) {
        Err(BlkError::Status { op: "write", .. }) => {
            println!("disk: write refused on the read-only disk");
            println!("disk=ok");
        }
        Ok(()) => println!("disk: error: a write to the read-only disk succeeded"),
        Err(e) => return Err(WorkloadError::Disk(e)),
    }
    Ok(())
}

/// Fills `data`, which sits at byte `offset` of the disk, with a pattern
/// unique to each 8-byte word and run (`seed`).
fn fill_pattern(data: &mut [u8], seed: u64, offset: usize) {
    for (i, word) in data.chunks_mut(8).enumerate() {
        let x = splitmix::mix(seed ^ ((offset / 8 + i) as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15));
        let bytes = x.to_le_bytes();
        word.copy_from_slice(&bytes[..word.len()]);
    }
}

/// Prints a throughput line.
fn report(what: &str, bytes: usize, ms: u64) {
    let kib_per_s = (bytes as u64 / 1024 * HZ).checked_div(ms).unwrap_or(0);
    println!(
        "disk: {what}: {} KiB in {ms} ms ({}.{:02} MB/s)",
        bytes / 1024,
        kib_per_s * 1024 / 1_000_000,
        kib_per_s * 1024 % 1_000_000 / 10_000
    );
}
