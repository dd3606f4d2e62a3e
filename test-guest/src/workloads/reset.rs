//! `workload=reset [via=port|i8042]`: asks the VMM to reset the VM. Under
//! Cloud Hypervisor (and ours) a reset reboots the VM, so the guest starts
//! again and prints `test-guest: ready` again: a test counts the boots.

use test_guest::config::ResetVia;

use crate::{arch, println};

/// Cloud Hypervisor's ACPI shutdown/reboot port and its reboot value.
const REBOOT_PORT: u16 = 0x600;
const REBOOT_VALUE: u8 = 1;
/// The i8042 command port and its "pulse reset line" command.
const I8042_COMMAND: u16 = 0x64;
const I8042_RESET: u8 = 0xfe;

/// Requests the reset; halts if the VMM ignores it.
pub fn run(via: ResetVia) -> ! {
    println!("reset: requesting");
    let (port, value) = match via {
        ResetVia::Port => (REBOOT_PORT, REBOOT_VALUE),
        ResetVia::I8042 => (I8042_COMMAND, I8042_RESET),
    };
    // SAFETY: both writes ask the platform for a reset; nothing else listens there.
    unsafe { arch::outb(port, value) };
    println!("reset: ignored by the VMM");
    arch::halt()
}
