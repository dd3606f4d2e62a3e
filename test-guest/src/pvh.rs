//! The PVH boot protocol's `struct hvm_start_info`, as far as the guest
//! uses it: the kernel command line and the memory map.

use core::ptr::read_volatile;

use thiserror::Error;

/// `hvm_start_info.magic`.
const MAGIC: u32 = 0x336e_c578;
/// Offset of `cmdline_paddr` (u64).
const CMDLINE_PADDR_OFFSET: u64 = 24;
/// Offset of `version` (u32): the memory map is there from version 1.
const VERSION_OFFSET: u64 = 4;
/// Offset of `memmap_paddr` (u64).
const MEMMAP_PADDR_OFFSET: u64 = 40;
/// Offset of `memmap_entries` (u32).
const MEMMAP_ENTRIES_OFFSET: u64 = 48;
/// Size of one `hvm_memmap_table_entry`: addr u64, size u64, type u32,
/// reserved u32.
const MEMMAP_ENTRY_SIZE: u64 = 24;
/// `hvm_memmap_table_entry.type` of RAM (E820 numbering).
const MEMMAP_RAM: u32 = 1;
/// Most memory-map entries read.
const MAX_MEMMAP_ENTRIES: u64 = 128;
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
    /// The start info predates the memory map (version 0).
    #[error("hvm_start_info version 0 has no memory map")]
    NoMemmap,
    /// The memory map is not in the mapped first 4 GiB, or too long.
    #[error("memory map at {0:#x} with {1} entries is not readable")]
    MemmapUnmapped(u64, u64),
    /// No RAM entry of the memory map holds the address.
    #[error("no RAM at {0:#x} in the memory map")]
    NotRam(u64),
}

/// The u32 at physical address `addr`, read unaligned (the VMM chose the
/// start info's base).
///
/// # Safety
/// `addr..addr + 4` lies in the identity-mapped first 4 GiB.
unsafe fn read_u32(addr: u64) -> u32 {
    // SAFETY: the caller guarantees the range is mapped.
    unsafe { (addr as *const u32).read_unaligned() }
}

/// The u64 at physical address `addr`, read unaligned.
///
/// # Safety
/// `addr..addr + 8` lies in the identity-mapped first 4 GiB.
unsafe fn read_u64(addr: u64) -> u64 {
    // SAFETY: the caller guarantees the range is mapped.
    unsafe { (addr as *const u64).read_unaligned() }
}

/// Checks the start info's magic number at `start_info`.
fn check_magic(start_info: u64) -> Result<(), PvhError> {
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
    Ok(())
}

/// The end (exclusive) of the RAM entry of the memory map that holds
/// `addr`, from the start info at physical address `start_info`.
pub fn ram_end(start_info: u64, addr: u64) -> Result<u64, PvhError> {
    check_magic(start_info)?;
    // SAFETY: the start info is mapped and checked above.
    let version = unsafe { read_u32(start_info + VERSION_OFFSET) };
    // SAFETY: as above.
    let paddr = unsafe { read_u64(start_info + MEMMAP_PADDR_OFFSET) };
    // SAFETY: as above.
    let entries = u64::from(unsafe { read_u32(start_info + MEMMAP_ENTRIES_OFFSET) });
    if version == 0 {
        return Err(PvhError::NoMemmap);
    }
    if entries > MAX_MEMMAP_ENTRIES || paddr > MAPPED_LIMIT - entries * MEMMAP_ENTRY_SIZE {
        return Err(PvhError::MemmapUnmapped(paddr, entries));
    }
    for i in 0..entries {
        let entry = paddr + i * MEMMAP_ENTRY_SIZE;
        // SAFETY: the table lies below the mapped limit (checked above).
        let base = unsafe { read_u64(entry) };
        // SAFETY: as above.
        let size = unsafe { read_u64(entry + 8) };
        // SAFETY: as above.
        let kind = unsafe { read_u32(entry + 16) };
        if kind == MEMMAP_RAM && base <= addr && addr - base < size {
            return Ok(base.saturating_add(size));
        }
    }
    Err(PvhError::NotRam(addr))
}

/// The kernel command line passed through the start info at physical
/// address `start_info` (empty if the VMM passed none).
pub fn cmdline(start_info: u64) -> Result<&'static str, PvhError> {
    check_magic(start_info)?;
    // SAFETY: the start info is mapped and checked above; the field is 8-byte aligned in the structure, read
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
