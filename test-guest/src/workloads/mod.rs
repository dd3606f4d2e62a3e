//! The workloads the command line chooses from. Each prints
//! `test-guest: ready` first, then its own output.

mod compute;
mod dirty;
mod disk;
mod exits;
mod fault;
mod idle;
mod kv;
mod malformed;
mod remap;
mod reset;
mod ticks;

use test_guest::apic_timer::TimerError;
use test_guest::config::Workload;
use thiserror::Error;

use crate::arch::{self, TIMER_VECTOR};
use crate::lapic;

/// A workload that could not run.
#[derive(Debug, Error)]
pub enum WorkloadError {
    /// The APIC timer could not be programmed.
    #[error("cannot start the APIC timer")]
    Timer(#[source] TimerError),
    /// The virtio disk failed.
    #[error("disk")]
    Disk(#[source] crate::virtio::blk::BlkError),
    /// The key-value service could not start.
    #[error("kv")]
    Kv(#[source] kv::KvError),
    /// `workload=dirty fill=` asked for more RAM than lies above the heap.
    #[error("fill")]
    Fill(#[source] dirty::FillError),
}

/// Runs `workload`; returns when it is done (the caller powers off).
/// `start_info` is the PVH start info's address (its memory map).
pub fn run(workload: Workload, start_info: u64) -> Result<(), WorkloadError> {
    crate::println!("test-guest: ready");
    match workload {
        Workload::Compute { steps, hz } => compute::run(steps, hz),
        Workload::Ticks { count, hz } => ticks::run(count, hz),
        Workload::Idle { hz } => idle::run(hz),
        Workload::Exits { count } => {
            exits::run(count);
            Ok(())
        }
        Workload::Reset { via } => reset::run(via),
        Workload::Fault { kind } => fault::run(kind),
        Workload::Disk { mib, flushes } => disk::run(mib, flushes),
        Workload::Kv {
            ip,
            prefix,
            gateway,
        } => kv::run(ip, prefix, gateway),
        Workload::Malformed { kind } => malformed::run(kind),
        Workload::Dirty {
            mib,
            pages,
            hz,
            fill,
        } => dirty::run(
            mib,
            pages,
            hz,
            dirty::Fill::new(fill, start_info).map_err(WorkloadError::Fill)?,
        ),
        Workload::Remap {
            rounds,
            iters,
            flush,
            hz,
        } => remap::run(rounds, iters, flush, hz),
    }
}

/// Timer ticks since boot.
fn ticks() -> u64 {
    arch::irq_count(TIMER_VECTOR)
}

/// Starts the periodic APIC timer at `hz` (interrupts stay as they are).
fn start_timer(hz: u64) -> Result<(), WorkloadError> {
    lapic::enable();
    lapic::start_periodic_timer(TIMER_VECTOR, hz).map_err(WorkloadError::Timer)
}
