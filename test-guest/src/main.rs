//! The project's test guest: a PVH-bootable kernel whose Rust code all runs
//! at CPL3 (guest CPL0 is emulated, slowly, on the project's machines).
//!
//! `arch/boot.s` enters long mode and iretq's to [`rust_main`] at CPL3 with
//! IOPL=3; the guest then drives the serial port and the local APIC itself,
//! reads the workload from the PVH command line and runs it. See README.md.

#![no_std]
#![no_main]

extern crate alloc;

mod arch;
mod heap;
mod lapic;
mod mem;
mod pci;
mod pvh;
mod serial;
mod virtio;
mod workloads;

use core::panic::PanicInfo;

use test_guest::config::{ErrorChain, Workload};

/// Entered from boot.s at CPL3 with interrupts off; `start_info` is the
/// physical address of the PVH `hvm_start_info`.
#[no_mangle]
extern "C" fn rust_main(start_info: u64) -> ! {
    heap::init();
    let result = pvh::cmdline(start_info)
        .map_err(|e| println!("test-guest: error: {}", ErrorChain(&e)))
        .and_then(|text| {
            Workload::from_cmdline(text)
                .map_err(|e| println!("test-guest: error: {}", ErrorChain(&e)))
        })
        .and_then(|workload| {
            workloads::run(workload, start_info)
                .map_err(|e| println!("test-guest: error: {}", ErrorChain(&e)))
        });
    // Errors are reported above; either way the VM is done.
    let _ = result;
    arch::power_off()
}

/// Entered from traps.s at CPL3 (on a stack of its own, interrupts off)
/// for any exception other than the `hlt` call.
#[no_mangle]
extern "C" fn exception_report(vector: u64, rip: u64, error_code: u64, cr2: u64) -> ! {
    println!("test-guest: exception {vector} at rip={rip:#x}");
    println!("test-guest: exception detail: error_code={error_code:#x} cr2={cr2:#x}");
    arch::halt()
}

#[panic_handler]
fn panic(info: &PanicInfo) -> ! {
    arch::disable_interrupts();
    println!("test-guest: panic: {}", info.message());
    if let Some(location) = info.location() {
        println!(
            "test-guest: panic location: {}:{}",
            location.file(),
            location.line()
        );
    }
    arch::halt()
}
