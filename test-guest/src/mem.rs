//! The C memory functions the compiler's output calls (`memcpy` and
//! friends). Without a C library, the guest provides them itself. They run
//! at CPL3, where `rep movsb` / `rep stosb` are native and fast.
//!
//! The comparisons read through `read_volatile` so that the optimiser
//! cannot turn their loops back into calls to themselves.

use core::arch::asm;
use core::ptr::read_volatile;

/// Copies `n` bytes from `src` to `dst` (non-overlapping).
///
/// # Safety
/// The C contract: both ranges valid, not overlapping.
#[no_mangle]
pub unsafe extern "C" fn memcpy(dst: *mut u8, src: *const u8, n: usize) -> *mut u8 {
    // SAFETY: the caller guarantees both ranges; DF is clear (ABI).
    unsafe {
        asm!(
            "rep movsb",
            inout("rcx") n => _,
            inout("rdi") dst => _,
            inout("rsi") src => _,
            options(nostack, preserves_flags)
        );
    }
    dst
}

/// Copies `n` bytes from `src` to `dst`; the ranges may overlap.
///
/// # Safety
/// The C contract: both ranges valid.
#[no_mangle]
pub unsafe extern "C" fn memmove(dst: *mut u8, src: *const u8, n: usize) -> *mut u8 {
    if (dst as usize).wrapping_sub(src as usize) >= n {
        // dst is below src, or past its end: a forward copy is safe.
        // SAFETY: the caller guarantees both ranges.
        return unsafe { memcpy(dst, src, n) };
    }
    // SAFETY: the caller guarantees both ranges; copying backwards (DF=1)
    // from the last byte handles the overlap; DF is cleared again after.
    unsafe {
        asm!(
            "std",
            "rep movsb",
            "cld",
            inout("rcx") n => _,
            inout("rdi") dst.wrapping_add(n).wrapping_sub(1) => _,
            inout("rsi") src.wrapping_add(n).wrapping_sub(1) => _,
            options(nostack)
        );
    }
    dst
}

/// Fills `n` bytes at `dst` with `value`.
///
/// # Safety
/// The C contract: the range is valid.
#[no_mangle]
pub unsafe extern "C" fn memset(dst: *mut u8, value: i32, n: usize) -> *mut u8 {
    // SAFETY: the caller guarantees the range; DF is clear (ABI).
    unsafe {
        asm!(
            "rep stosb",
            inout("rcx") n => _,
            inout("rdi") dst => _,
            in("al") value as u8,
            options(nostack, preserves_flags)
        );
    }
    dst
}

/// Compares `n` bytes: negative, zero or positive like C's `memcmp`.
///
/// # Safety
/// The C contract: both ranges valid.
#[no_mangle]
pub unsafe extern "C" fn memcmp(a: *const u8, b: *const u8, n: usize) -> i32 {
    for i in 0..n {
        // SAFETY: the caller guarantees n readable bytes at `a`; i < n.
        let x = unsafe { read_volatile(a.wrapping_add(i)) };
        // SAFETY: the same for `b`.
        let y = unsafe { read_volatile(b.wrapping_add(i)) };
        if x != y {
            return i32::from(x) - i32::from(y);
        }
    }
    0
}

/// Compares `n` bytes for equality only (zero when equal).
///
/// # Safety
/// The C contract: both ranges valid.
#[no_mangle]
pub unsafe extern "C" fn bcmp(a: *const u8, b: *const u8, n: usize) -> i32 {
    // SAFETY: same contract.
    unsafe { memcmp(a, b, n) }
}

/// Referenced by `core`'s unwind tables; never called, since the guest
/// aborts on panic and has no unwinder.
#[no_mangle]
pub extern "C" fn rust_eh_personality() {}
