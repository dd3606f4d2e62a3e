//! `workload=idle [hz=H]`: sleeps forever with the timer running; only the
//! VMM ends it.

use super::{start_timer, WorkloadError};
use crate::arch;

/// Runs the workload (never returns unless the timer cannot start).
pub fn run(hz: u64) -> Result<(), WorkloadError> {
    arch::disable_interrupts();
    start_timer(hz)?;
    loop {
        arch::wait_for_interrupt();
    }
}
