//! The heap of the user-mode code: a linked-list allocator over the
//! `heap_start..heap_end` region that `boot.s` reserves (not stored in the
//! image). Memory is identity-mapped, so a heap address is also the
//! physical address a device can use for DMA.

use core::ptr::addr_of_mut;

use linked_list_allocator::LockedHeap;

#[global_allocator]
static ALLOCATOR: LockedHeap = LockedHeap::empty();

unsafe extern "C" {
    /// First byte of the heap region (boot.s).
    static mut heap_start: u8;
    /// One past the last byte of the heap region (boot.s).
    static mut heap_end: u8;
}

/// Hands the heap region to the allocator. Called once, first thing in
/// `rust_main`, before anything allocates.
pub fn init() {
    let start = addr_of_mut!(heap_start);
    let end = addr_of_mut!(heap_end);
    let size = (end as usize).saturating_sub(start as usize);
    // SAFETY: boot.s reserves `heap_start..heap_end` for the heap alone;
    // nothing else references it, and `init` runs once before any
    // allocation (rust_main calls it first).
    unsafe { ALLOCATOR.lock().init(start, size) };
}

/// The physical address one past the heap region (boot.s): RAM above it
/// is not used by the image, the heap or the boot page tables.
pub fn end() -> u64 {
    addr_of_mut!(heap_end) as u64
}
