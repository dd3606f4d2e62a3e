//! PCI configuration space from user mode, and enumeration of bus 0.
//!
//! Configuration space is read through ECAM (memory-mapped, one VM exit
//! per access, no fault emulation) when the platform has it where the
//! guest can find it without ACPI: Cloud Hypervisor's window at
//! 0xe800_0000, or the one QEMU's q35 host bridge reports in its PCIEXBAR
//! register. Otherwise the legacy ports 0xcf8/0xcfc are used (two emulated
//! port accesses per read). Both ECAM candidates lie in the top GiB, which
//! boot.s maps uncached; 64-bit BARs above 4 GiB are mapped on demand
//! ([`map_high_mmio`]).

use core::ptr::{addr_of_mut, read_volatile, write_volatile};
use core::sync::atomic::{AtomicUsize, Ordering};

use thiserror::Error;

use crate::arch;

/// Cloud Hypervisor's PCI MMCONFIG (ECAM) base on x86-64.
const CH_ECAM_BASE: usize = 0xe800_0000;
/// Legacy configuration address and data ports.
const CONFIG_ADDRESS: u16 = 0xcf8;
const CONFIG_DATA: u16 = 0xcfc;
/// QEMU q35's host bridge (Intel MCH) and its PCIEXBAR register.
const Q35_HOST_ID: u32 = 0x29c0_8086;
const Q35_PCIEXBAR: u16 = 0x60;

/// Configuration register offsets.
pub const COMMAND: u16 = 0x04;
const STATUS_CAP_LIST: u32 = 1 << (16 + 4);
const CAP_POINTER: u16 = 0x34;
const BAR0: u16 = 0x10;
/// Command register: memory space and bus master enable.
const COMMAND_MEMORY: u32 = 1 << 1;
const COMMAND_BUS_MASTER: u32 = 1 << 2;

/// A PCI problem the guest cannot work around.
#[derive(Debug, Error)]
pub enum PciError {
    /// A BAR a capability points into is not a memory BAR.
    #[error("BAR {0} of {1} is not a memory BAR")]
    NotMemoryBar(u8, Address),
    /// A BAR the driver needs has no address assigned.
    #[error("BAR {0} of {1} has no address assigned")]
    UnassignedBar(u8, Address),
    /// A BAR index outside 0..=5.
    #[error("capability of {1} names BAR {0}")]
    BadBarIndex(u8, Address),
    /// A BAR too high for the guest's page tables.
    #[error("BAR at {0:#x} is above 512 GiB (not mapped by the test guest)")]
    TooHigh(u64),
    /// More high-memory GiB regions than spare page directories.
    #[error("too many BAR regions above 4 GiB (the test guest has 4 spare page directories)")]
    NoSparePageDirectory,
    /// The capability list loops or leaves the header.
    #[error("capability list of {0} is malformed")]
    BadCapabilityList(Address),
}

/// Device and function number on bus 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Address {
    /// Device number (0..32).
    pub device: u8,
    /// Function number (0..8).
    pub function: u8,
}

impl core::fmt::Display for Address {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "00:{:02x}.{}", self.device, self.function)
    }
}

/// How configuration space is reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// ECAM window at this physical (= virtual) address.
    Ecam(usize),
    /// Ports 0xcf8/0xcfc.
    Ports,
}

impl core::fmt::Display for Access {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Access::Ecam(base) => write!(f, "ECAM at {base:#x}"),
            Access::Ports => write!(f, "ports 0xcf8/0xcfc"),
        }
    }
}

impl Access {
    /// Finds the cheapest working access method.
    pub fn detect() -> Access {
        let host_id = Access::Ports.read32(HOST_BRIDGE, 0);
        let mut candidates = [CH_ECAM_BASE, 0];
        if host_id == Q35_HOST_ID {
            let bar = Access::Ports.read32(HOST_BRIDGE, Q35_PCIEXBAR);
            if bar & 1 != 0 {
                // Bits 2:1 give the size (256, 128 or 64 MiB): the base is
                // aligned to it.
                let mask = match (bar >> 1) & 3 {
                    1 => 0xf800_0000,
                    2 => 0xfc00_0000,
                    _ => 0xf000_0000,
                };
                candidates = [(bar & mask) as usize, CH_ECAM_BASE];
            }
        }
        candidates
            .into_iter()
            .filter(|&base| base != 0)
            .inspect(|&base| map_uncached_low(base))
            .map(Access::Ecam)
            .find(|access| host_id != u32::MAX && access.read32(HOST_BRIDGE, 0) == host_id)
            .unwrap_or(Access::Ports)
    }

    /// Reads the 32-bit register at `offset` (a multiple of 4, below 256
    /// for the ports).
    pub fn read32(&self, address: Address, offset: u16) -> u32 {
        match *self {
            Access::Ecam(base) => {
                let ptr = ecam_ptr(base, address, offset);
                // SAFETY: the ECAM window is identity-mapped uncached (top
                // GiB) and `ecam_ptr` stays inside bus 0's 1 MiB; reading
                // configuration space has no side effects on memory.
                unsafe { read_volatile(ptr) }
            }
            Access::Ports => {
                // SAFETY: the PCI configuration ports select and read a
                // register; they touch no memory.
                unsafe { arch::outl(CONFIG_ADDRESS, port_address(address, offset)) };
                // SAFETY: as above.
                unsafe { arch::inl(CONFIG_DATA) }
            }
        }
    }

    /// Writes the 32-bit register at `offset`.
    pub fn write32(&self, address: Address, offset: u16, value: u32) {
        match *self {
            Access::Ecam(base) => {
                let ptr = ecam_ptr(base, address, offset);
                // SAFETY: as in `read32`; the caller chose the register.
                unsafe { write_volatile(ptr, value) }
            }
            Access::Ports => {
                // SAFETY: as in `read32`.
                unsafe { arch::outl(CONFIG_ADDRESS, port_address(address, offset)) };
                // SAFETY: as in `read32`; the caller chose the register.
                unsafe { arch::outl(CONFIG_DATA, value) };
            }
        }
    }

    /// Reads the 16-bit register at `offset` (2-byte aligned).
    pub fn read16(&self, address: Address, offset: u16) -> u16 {
        (self.read32(address, offset & !3) >> ((offset & 2) * 8)) as u16
    }

    /// Reads the byte at `offset`.
    pub fn read8(&self, address: Address, offset: u16) -> u8 {
        (self.read32(address, offset & !3) >> ((offset & 3) * 8)) as u8
    }

    /// Writes the 16-bit register at `offset` (2-byte aligned) by a
    /// read-modify-write of its dword (the other half written back as read).
    pub fn write16(&self, address: Address, offset: u16, value: u16) {
        let shift = (offset & 2) * 8;
        let old = self.read32(address, offset & !3);
        let new = (old & !(0xffff << shift)) | (u32::from(value) << shift);
        self.write32(address, offset & !3, new);
    }

    /// Every function on bus 0 with its vendor and device ID.
    pub fn enumerate(&self) -> impl Iterator<Item = Function> + '_ {
        (0..32u8)
            .flat_map(|device| (0..8u8).map(move |function| Address { device, function }))
            .filter_map(move |address| {
                if address.function != 0 {
                    // Functions 1..8 exist only on multi-function devices.
                    let header = self.read8(
                        Address {
                            function: 0,
                            ..address
                        },
                        0x0e,
                    );
                    let id0 = self.read32(
                        Address {
                            function: 0,
                            ..address
                        },
                        0,
                    );
                    if id0 & 0xffff == 0xffff || header & 0x80 == 0 {
                        return None;
                    }
                }
                let id = self.read32(address, 0);
                (id & 0xffff != 0xffff && id != 0).then_some(Function {
                    address,
                    vendor: id as u16,
                    device: (id >> 16) as u16,
                })
            })
    }

    /// The capabilities of `address`: (offset, id) pairs.
    pub fn capabilities(&self, address: Address) -> Result<alloc::vec::Vec<(u16, u8)>, PciError> {
        let mut caps = alloc::vec::Vec::new();
        if self.read32(address, COMMAND) & STATUS_CAP_LIST == 0 {
            return Ok(caps);
        }
        let mut offset = u16::from(self.read8(address, CAP_POINTER) & 0xfc);
        while offset != 0 {
            if offset < 0x40 || caps.len() > 48 {
                return Err(PciError::BadCapabilityList(address));
            }
            let header = self.read32(address, offset);
            caps.push((offset, header as u8));
            offset = ((header >> 8) & 0xfc) as u16;
        }
        Ok(caps)
    }

    /// The guest-physical address of memory BAR `bar`, mapped for user
    /// access (above 4 GiB through [`map_high_mmio`]).
    pub fn memory_bar(&self, address: Address, bar: u8) -> Result<u64, PciError> {
        if bar > 5 {
            return Err(PciError::BadBarIndex(bar, address));
        }
        let offset = BAR0 + 4 * u16::from(bar);
        let low = self.read32(address, offset);
        if low & 1 != 0 {
            return Err(PciError::NotMemoryBar(bar, address));
        }
        let mut base = u64::from(low & !0xf);
        if (low >> 1) & 3 == 2 && bar < 5 {
            base |= u64::from(self.read32(address, offset + 4)) << 32;
        }
        if base == 0 {
            return Err(PciError::UnassignedBar(bar, address));
        }
        if base >= 1 << 32 {
            map_high_mmio(base)?;
        }
        Ok(base)
    }

    /// Enables memory decoding and bus mastering (DMA) for `address`.
    pub fn enable_memory_and_dma(&self, address: Address) {
        let command = self.read32(address, COMMAND) & 0xffff;
        self.write32(
            address,
            COMMAND,
            command | COMMAND_MEMORY | COMMAND_BUS_MASTER,
        );
    }
}

/// A function found on bus 0.
#[derive(Debug, Clone, Copy)]
pub struct Function {
    /// Where it is.
    pub address: Address,
    /// Vendor ID.
    pub vendor: u16,
    /// Device ID.
    pub device: u16,
}

/// The host bridge, 00:00.0.
const HOST_BRIDGE: Address = Address {
    device: 0,
    function: 0,
};

fn ecam_ptr(base: usize, address: Address, offset: u16) -> *mut u32 {
    let index = (usize::from(address.device & 31) << 15)
        | (usize::from(address.function & 7) << 12)
        | usize::from(offset & 0xffc);
    (base + index) as *mut u32
}

fn port_address(address: Address, offset: u16) -> u32 {
    0x8000_0000
        | (u32::from(address.device & 31) << 11)
        | (u32::from(address.function & 7) << 8)
        | u32::from(offset & 0xfc)
}

unsafe extern "C" {
    /// The four page directories mapping 0..4 GiB with 2 MiB pages (boot.s).
    static mut pd: [u64; 2048];
    /// The page-directory-pointer table covering 0..512 GiB (boot.s).
    static mut pdpt: [u64; 512];
    /// Four spare page directories (boot.s).
    static mut pd_spare: [[u64; 512]; 4];
}

/// Makes the 2 MiB page holding bus 0's ECAM window at `base` (below
/// 4 GiB) uncached. boot.s maps the top GiB uncached already; below it
/// (QEMU q35 puts ECAM at 0xb000_0000) the page is normal memory. The
/// guest has not touched the page before, so no TLB entry needs flushing.
fn map_uncached_low(base: usize) {
    let index = base >> 21;
    if index >= 1536 {
        return;
    }
    // SAFETY: single-threaded user code; `pd` is the identity map from
    // boot.s, in writable user memory; index < 2048. Only the cache bits
    // (PWT | PCD) of a page the guest has never accessed change.
    let entry = unsafe { addr_of_mut!(pd[index]) };
    // SAFETY: `entry` is that page-directory entry (see above).
    let value = unsafe { read_volatile(entry) };
    // SAFETY: as above.
    unsafe { write_volatile(entry, value | 0x18) };
}

/// Spare page directories used so far.
static SPARE_USED: AtomicUsize = AtomicUsize::new(0);

/// Maps the GiB holding `address` (at or above 4 GiB, below 512 GiB)
/// identity, user-accessible and uncached, if it is not mapped yet.
pub fn map_high_mmio(address: u64) -> Result<(), PciError> {
    let gib = usize::try_from(address >> 30).map_err(|_| PciError::TooHigh(address))?;
    if gib >= 512 {
        return Err(PciError::TooHigh(address));
    }
    // The tables are in identity-mapped, writable user memory, touched
    // only here by single-threaded user code (boot.s fills pdpt[0..4]
    // before user mode starts). A new entry needs no TLB flush
    // (not-present entries are not cached).
    // SAFETY: pdpt is a static from boot.s; gib < 512.
    let pdpt_entry = unsafe { addr_of_mut!(pdpt[gib]) };
    // SAFETY: as above.
    if unsafe { read_volatile(pdpt_entry) } & 1 != 0 {
        return Ok(());
    }
    let used = SPARE_USED.load(Ordering::Relaxed);
    if used >= 4 {
        return Err(PciError::NoSparePageDirectory);
    }
    // SAFETY: pd_spare is a static from boot.s; used < 4.
    let table = unsafe { addr_of_mut!(pd_spare[used]) }.cast::<u64>();
    for i in 0..512 {
        let page = ((gib as u64) << 30) | ((i as u64) << 21);
        // Present, writable, user, PWT | PCD (uncached), 2 MiB page.
        // SAFETY: entry i < 512 of that spare directory.
        unsafe { write_volatile(table.wrapping_add(i), page | 0x9f) };
    }
    SPARE_USED.store(used + 1, Ordering::Relaxed);
    // SAFETY: links the filled directory (identity-mapped address).
    unsafe { write_volatile(pdpt_entry, (table as u64) | 0x7) };
    Ok(())
}
