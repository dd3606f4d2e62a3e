//! `workload=malformed [kind=all|index|loop|range|direction]`: hands the
//! virtio-blk device malformed descriptor chains on purpose, to test that
//! the VMM refuses them and keeps serving.
//!
//! For each kind: a valid write/read round trip first, then one malformed
//! chain, then up to 2 s (APIC timer at 100 Hz) for the device to react.
//! Prints `malformed: <kind>: device needs reset` (status
//! DEVICE_NEEDS_RESET), `malformed: <kind>: completed with status <s>`
//! (the device returned the chain with an error status), or
//! `malformed: <kind>: no reaction`; then resets and re-initialises the
//! device and checks another round trip:
//! `malformed: <kind>: device works after reset`. Ends with
//! `malformed=ok` when every kind got a reaction and the device worked
//! after each.

use test_guest::config::MalformedKind;

use super::{start_timer, ticks, WorkloadError};
use crate::pci::Access;
use crate::println;
use crate::virtio::blk::{Blk, SECTOR};

/// IDT vector of the disk's queue interrupt.
const BLK_VECTOR: u8 = 0x40;
const HZ: u64 = 100;
const NEEDS_RESET: u8 = 0x40;
/// Descriptor flags.
const NEXT: u16 = 1;
const WRITE: u16 = 2;

/// Runs the workload.
pub fn run(kind: MalformedKind) -> Result<(), WorkloadError> {
    start_timer(HZ)?;
    let access = Access::detect();
    let kinds: &[MalformedKind] = match kind {
        MalformedKind::All => &[
            MalformedKind::Index,
            MalformedKind::Loop,
            MalformedKind::Range,
            MalformedKind::Direction,
        ],
        _ => core::slice::from_ref(&kind),
    };
    let mut all_ok = true;
    for &kind in kinds {
        all_ok &= one(&access, kind)?;
    }
    if all_ok {
        println!("malformed=ok");
    }
    Ok(())
}

/// One malformed chain; returns whether the device reacted and recovered.
fn one(access: &Access, kind: MalformedKind) -> Result<bool, WorkloadError> {
    let name = kind.name();
    let mut blk = Blk::open(access, BLK_VECTOR).map_err(WorkloadError::Disk)?;
    round_trip(&mut blk, 1)?;
    let header = [1u32.to_le(), 0, 0, 0]; // VIRTIO_BLK_T_OUT, sector 0
    let data = [0u8; SECTOR];
    let mut status = [0xffu8; 1];
    let h = header.as_ptr() as u64;
    let d = data.as_ptr() as u64;
    let s = status.as_mut_ptr() as u64;
    match kind {
        // `next` far past the queue size.
        MalformedKind::Index => blk.send_raw(&[(h, 16, NEXT, 60000)]),
        // 0 -> 1 -> 0 -> ...
        MalformedKind::Loop => blk.send_raw(&[(h, 16, NEXT, 1), (d, 512, NEXT, 0)]),
        // A data buffer far outside guest memory.
        MalformedKind::Range => blk.send_raw(&[
            (h, 16, NEXT, 1),
            (0x7fff_0000_0000, 512, NEXT, 2),
            (s, 1, WRITE, 0),
        ]),
        // The header device-writable, then a device-readable buffer.
        MalformedKind::Direction => blk.send_raw(&[
            (h, 16, WRITE | NEXT, 1),
            (d, 512, NEXT, 2),
            (s, 1, WRITE, 0),
        ]),
        MalformedKind::All => {}
    }
    let start = ticks();
    let reacted = loop {
        let device_status = blk.device_status();
        if device_status & NEEDS_RESET != 0 {
            println!("malformed: {name}: device needs reset (status {device_status:#x})");
            break true;
        }
        if blk.has_completion() {
            // SAFETY: the device returned the chain: it no longer writes
            // `status`; volatile because the compiler cannot see its write.
            let s = unsafe { core::ptr::read_volatile(status.as_ptr()) };
            println!("malformed: {name}: completed with status {s}");
            break true;
        }
        if ticks() - start > 2 * HZ {
            println!("malformed: {name}: no reaction");
            break false;
        }
        crate::arch::disable_interrupts();
        crate::arch::wait_for_interrupt();
    };
    // Re-open: resets the device and sets it up again.
    let mut blk = Blk::open(access, BLK_VECTOR).map_err(WorkloadError::Disk)?;
    round_trip(&mut blk, 2)?;
    println!("malformed: {name}: device works after reset");
    Ok(reacted)
}

/// Writes a sector, reads it back, compares.
fn round_trip(blk: &mut Blk, tag: u8) -> Result<(), WorkloadError> {
    let out = [tag; SECTOR];
    let mut back = [0u8; SECTOR];
    blk.write(1, &out).map_err(WorkloadError::Disk)?;
    blk.read(1, &mut back).map_err(WorkloadError::Disk)?;
    if out != back {
        println!("malformed: read back differs from what was written");
    }
    Ok(())
}
