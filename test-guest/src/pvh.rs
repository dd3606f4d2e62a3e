//! The PVH boot protocol's `struct hvm_start_info`, as far as the guest
//! uses it: the kernel command line.

use core::ptr::read_volatile;

use thiserror::Error;

/// `hvm_start_info.magic`.
const MAGIC: u32 = 0x336e_c578;
/// Offset of `cmdline_paddr` (u64).
const CMDLINE_PADDR_OFFSET: u64 = 24;
/// End of the identity map set up in boot.s.
const MAPPED_LIMIT: u64 = 1 << 32;
/// Longest command line read, NUL excluded.
pub const MAX_CMDLINE: usize = 4096;

/// A start-info structure or command line the guest cannot use.
#[derive(Debug, Error)]
pub enum PvhError {
    /// No start info (not booted through PVH?).
    #[error("no hvm_start_info (EBX was 0 at the PVH entry)")]
    NoStartInfo,
    /// Wrong magic number.
    #[error("bad hvm_start_info magic {0:#x} (expected {MAGIC:#x})")]
    BadMagic(u32),
    /// The command line is not in the mapped first 4 GiB.
    #[error("command line at {0:#x} is above the mapped 4 GiB")]
    CmdlineUnmapped(u64),
    /// No NUL within [`MAX_CMDLINE`] bytes.
    #[error("command line longer than {MAX_CMDLINE} bytes")]
    CmdlineTooLong,
    /// Not UTF-8.
    #[error("command line is not UTF-8")]
    CmdlineNotUtf8(#[source] core::str::Utf8Error),
}

/// The kernel command line passed through the start info at physical
/// address `start_info` (empty if the VMM passed none).
pub fn cmdline(start_info: u64) -> Result<&'static str, PvhError> {
    if start_info == 0 {
        return Err(PvhError::NoStartInfo);
    }
    // SAFETY: all of the first 4 GiB is identity-mapped and readable; the
    // VMM placed the start info at `start_info` (below 4 GiB: it came from
    // a 32-bit register).
    let magic = unsafe { read_volatile(start_info as *const u32) };
    if magic != MAGIC {
        return Err(PvhError::BadMagic(magic));
    }
    // SAFETY: as above; the field is 8-byte aligned in the structure, read
    // unaligned anyway since the VMM chose the base.
    let paddr = unsafe { ((start_info + CMDLINE_PADDR_OFFSET) as *const u64).read_unaligned() };
    if paddr == 0 {
        return Ok("");
    }
    if paddr > MAPPED_LIMIT - (MAX_CMDLINE as u64 + 1) {
        return Err(PvhError::CmdlineUnmapped(paddr));
    }
    let base = paddr as *const u8;
    let mut len = 0;
    loop {
        if len > MAX_CMDLINE {
            return Err(PvhError::CmdlineTooLong);
        }
        // SAFETY: guest-physical memory is identity-mapped (4 GiB; reads of
        // unbacked addresses return device data, never fault).
        if unsafe { read_volatile(base.wrapping_add(len)) } == 0 {
            break;
        }
        len += 1;
    }
    // SAFETY: the `len` bytes at `base` were just read, are mapped, and the
    // VMM does not change them while the guest runs.
    let bytes = unsafe { core::slice::from_raw_parts(base, len) };
    core::str::from_utf8(bytes).map_err(PvhError::CmdlineNotUtf8)
}
