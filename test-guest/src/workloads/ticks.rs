//! `workload=ticks count=N [hz=H]`: sleeps (hlt) until N timer interrupts
//! have arrived, prints `ticks=N`.

use super::{start_timer, ticks, WorkloadError};
use crate::{arch, lapic, println};

/// Runs the workload.
pub fn run(count: u64, hz: u64) -> Result<(), WorkloadError> {
    arch::disable_interrupts();
    let start = ticks();
    start_timer(hz)?;
    let seen = loop {
        let seen = ticks() - start;
        if seen >= count {
            break seen;
        }
        // Interrupts are off between the check and the sleep.
        arch::wait_for_interrupt();
        arch::disable_interrupts();
    };
    lapic::stop_timer();
    println!("ticks={seen}");
    Ok(())
}
