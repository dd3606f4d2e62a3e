//! The CPL0 part of the guest (assembly) and the CPL3 side of its
//! interface: interrupt counters, interrupt flag, waiting, port I/O.
//!
//! `boot.s` enters long mode and calls `rust_main` at CPL3 with IOPL=3 and
//! interrupts disabled; `traps.s` holds every interrupt and exception entry
//! point. User code reaches CPL0 only through interrupts and deliberate
//! faults: `hlt` at CPL3 raises #GP, which the kernel turns into "wait for
//! an interrupt" (`%eax` = 0) or "stop for good" (`%eax` = 1). The project's
//! hosts ignore IOPL in guest user mode, so `out`, `in`, `cli` and `sti`
//! fault as well and the #GP handler emulates them (a few CPL0
//! instructions each); hosts that honour IOPL run them natively.

use core::arch::{asm, global_asm};
use core::ptr::{addr_of, read_volatile};

global_asm!(include_str!("boot.s"), options(att_syntax));
global_asm!(include_str!("traps.s"), options(att_syntax));

/// Vector of the local APIC timer interrupt.
pub const TIMER_VECTOR: u8 = 0x20;

/// Vector of the local APIC's spurious interrupt (no EOI).
pub const SPURIOUS_VECTOR: u8 = 0xff;

/// Port of Cloud Hypervisor's shutdown device; writing
/// [`SHUTDOWN_VALUE`] powers the VM off.
const SHUTDOWN_PORT: u16 = 0x600;
const SHUTDOWN_VALUE: u8 = 0x34;

unsafe extern "C" {
    /// Interrupts taken per vector since boot (see `traps.s`).
    static IRQ_COUNTS: [u64; 256];
}

/// How many interrupts of `vector` the guest has taken since boot.
pub fn irq_count(vector: u8) -> u64 {
    // SAFETY: IRQ_COUNTS is a static array of 256 u64 defined in traps.s;
    // the interrupt stubs increment it asynchronously, hence the volatile
    // read of an aligned element.
    unsafe { read_volatile(addr_of!(IRQ_COUNTS[usize::from(vector)])) }
}

/// Kernel call number (in `%eax` at the `hlt`): wait for an interrupt.
const CALL_WAIT: u32 = 0;
/// Kernel call number (in `%eax` at the `hlt`): stop for good.
const CALL_STOP: u32 = 1;
/// Kernel call number: `invlpg` of the page at `%rdx`.
const CALL_INVLPG: u32 = 2;
/// Kernel call number: reload CR3.
const CALL_RELOAD_CR3: u32 = 3;

/// Disables interrupts (`cli`: native with IOPL=3, else emulated).
#[inline(always)]
pub fn disable_interrupts() {
    // SAFETY: `cli` only changes RFLAGS.IF (natively, or through the #GP
    // handler). The asm is a compiler barrier, as a critical section needs.
    unsafe { asm!("cli", options(nostack)) }
}

/// Enables interrupts (`sti`: native with IOPL=3, else emulated).
#[inline(always)]
pub fn enable_interrupts() {
    // SAFETY: `sti` only changes RFLAGS.IF; the IDT handles every vector.
    unsafe { asm!("sti", options(nostack)) }
}

/// Enables interrupts and sleeps until one has been handled; returns with
/// interrupts enabled.
///
/// To wait for a condition without missing its interrupt, disable
/// interrupts, check the condition, then call this: the kernel enables
/// interrupts and halts atomically.
#[inline(always)]
pub fn wait_for_interrupt() {
    // SAFETY: `hlt` at CPL3 faults into the kernel's #GP handler, which
    // with %eax = CALL_WAIT waits for an interrupt and returns past the
    // `hlt` (see traps.s). The asm is a compiler barrier: interrupt
    // handlers update memory.
    unsafe { asm!("hlt", in("eax") CALL_WAIT, options(nostack)) }
}

/// Makes the CPU forget its translation of the page holding `addr`
/// (`invlpg` at CPL0), after its page-table entry changed.
pub fn invalidate_page(addr: u64) {
    // SAFETY: `hlt` at CPL3 faults into the #GP handler, which with
    // %eax = CALL_INVLPG runs `invlpg (%rdx)` and returns past the `hlt`.
    // The asm is a compiler barrier: the page-table write must come first.
    unsafe { asm!("hlt", in("eax") CALL_INVLPG, in("rdx") addr, options(nostack)) }
}

/// Flushes every non-global translation (reloads CR3 at CPL0).
pub fn reload_cr3() {
    // SAFETY: as `invalidate_page`, with %eax = CALL_RELOAD_CR3: the
    // handler reloads CR3 and returns past the `hlt`.
    unsafe { asm!("hlt", in("eax") CALL_RELOAD_CR3, options(nostack)) }
}

/// Stops the vCPU for good (a `hlt` loop at CPL0 with interrupts off).
pub fn halt() -> ! {
    loop {
        // SAFETY: `hlt` with %eax = CALL_STOP never returns (traps.s).
        unsafe { asm!("hlt", in("eax") CALL_STOP, options(nostack)) }
    }
}

/// Writes `value` to I/O `port`.
///
/// # Safety
/// The write must be harmless to the device at `port`.
#[inline(always)]
pub unsafe fn outb(port: u16, value: u8) {
    // SAFETY: the caller vouches for the device; the instruction runs
    // natively with IOPL=3 or is emulated by the #GP handler.
    unsafe {
        asm!("out dx, al", in("dx") port, in("al") value, options(nomem, nostack, preserves_flags))
    }
}

/// Powers the VM off through the shutdown port, or halts if that port does
/// nothing (QEMU without `-device isa-debug-exit,iobase=0x600`).
pub fn power_off() -> ! {
    // SAFETY: the shutdown port ends the VM; nothing else listens there.
    unsafe { outb(SHUTDOWN_PORT, SHUTDOWN_VALUE) };
    halt()
}

/// Writes the 32-bit `value` to I/O `port`.
///
/// # Safety
/// The write must be harmless to the device at `port`.
#[inline(always)]
pub unsafe fn outl(port: u16, value: u32) {
    // SAFETY: the caller vouches for the device; `out %eax,%dx` runs
    // natively with IOPL=3 or is emulated by the #GP handler.
    unsafe {
        asm!("out dx, eax", in("dx") port, in("eax") value, options(nomem, nostack, preserves_flags))
    }
}

/// Reads a 32-bit value from I/O `port`.
///
/// # Safety
/// The read must be harmless to the device at `port`.
#[inline(always)]
pub unsafe fn inl(port: u16) -> u32 {
    let value: u32;
    // SAFETY: the caller vouches for the device; `in %dx,%eax` runs
    // natively with IOPL=3 or is emulated by the #GP handler.
    unsafe {
        asm!("in eax, dx", in("dx") port, out("eax") value, options(nomem, nostack, preserves_flags))
    }
    value
}
