//! `workload=compute steps=N [hz=H]`: N SplitMix64 steps at native speed
//! while the timer interrupts H times a second. Every 10th tick is
//! reported as `tick=<k> step=<i>` (k: ticks since the workload started,
//! i: steps done when the guest noticed), so the output shows where the
//! interrupts landed. Ends with `result=<x_N as 16 hex digits>`.

use test_guest::splitmix;

use super::{start_timer, ticks, WorkloadError};
use crate::{arch, println};

/// Runs the workload.
pub fn run(steps: u64, hz: u64) -> Result<(), WorkloadError> {
    let start = ticks();
    start_timer(hz)?;
    arch::enable_interrupts();
    let mut seen = 0;
    let mut x = 0;
    for i in 0..steps {
        // One volatile load per step: cheap next to the arithmetic.
        let tick = ticks() - start;
        if tick != seen {
            if tick / 10 != seen / 10 {
                report(tick, i);
            }
            seen = tick;
        }
        x = splitmix::step(x);
    }
    println!("result={x:016x}");
    Ok(())
}

/// Out of line, to keep the loop tight.
#[inline(never)]
#[cold]
fn report(tick: u64, step: u64) {
    println!("tick={tick} step={step}");
}
