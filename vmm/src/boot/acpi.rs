// Copyright 2026 The ft-cloud-hypervisor authors.
// SPDX-License-Identifier: Apache-2.0

//! The ACPI tables the guest finds its platform in, built with the
//! `acpi_tables` crate as Cloud Hypervisor does.
//!
//! Why ACPI and not an MP table: Linux can find the local APIC and the
//! IOAPIC from either, but only ACPI gives it a way to power off
//! (`PM1_CNT` through the FADT and a `\_S5` object).
//!
//! Why full ACPI and not hardware-reduced: a guest recorded for replay
//! must be able to run without the TSC (RDTSC cannot be trapped), so it
//! needs a legacy timer, the i8254 PIT on IRQ 0. Linux uses the PIT (and
//! the legacy interrupt setup it rests on) only on a classic ACPI PC: with
//! the FADT's `HW_REDUCED_ACPI` flag, x86 Linux skips `timer_init` and the
//! legacy PIC entirely. So the FADT describes the fixed hardware ACPICA
//! requires: a PM1 event and control block ([`devices::legacy::Pm1Device`],
//! ports 0x610..0x616), the SCI on IRQ 9 (never raised), no SMI command
//! port (always in ACPI mode), and a FACS; still no PM timer and no GPE
//! blocks. The reset register stays the shutdown port (0x600).
//!
//! ACPI also costs boot time here, because guest kernel code is emulated
//! (the interpreter took ~9 s with QEMU's large DSDT). The tables are
//! therefore as small as they can be: an XSDT, the FADT and its FACS, a
//! MADT with one local APIC, the IOAPIC and two interrupt source
//! overrides, and a DSDT holding `\_S5`, the serial port and the PCI host
//! bridge.
//!
//! Layout: the RSDP at [`RSDP_START`] (inside the BIOS area Linux scans,
//! and also handed over by PVH's `rsdp_paddr` and bzImage's
//! `acpi_rsdp_addr`), then the tables, below 1 MiB.

use acpi_tables::facs::FACS;
use acpi_tables::fadt::{FADTBuilder, Flags};
use acpi_tables::gas::{AccessSize, AddressSpace, GAS};
use acpi_tables::madt::{
    EnabledStatus, IoApic, LocalInterruptController, ProcessorLocalApic, MADT,
};
use acpi_tables::rsdp::Rsdp;
use acpi_tables::sdt::Sdt;
use acpi_tables::xsdt::XSDT;
use acpi_tables::{aml, Aml};
use devices::interrupt::{IOAPIC_BASE, LAPIC_BASE};
use devices::legacy::{
    PM1_CNT_LEN, PM1_CNT_PORT, PM1_EVT_LEN, PM1_PORT_BASE, PM1_S5_SLEEP_TYPE, SERIAL_IRQ,
    SERIAL_PORT_BASE, SERIAL_PORT_SIZE, SHUTDOWN_PORT,
};
use vm_memory::{Bytes, GuestAddress};

use super::BootError;
use crate::layout::{ACPI_END, MEM_32BIT_DEVICES_SIZE, MEM_32BIT_DEVICES_START, RSDP_START};

/// The PCI configuration mechanism #1 ports (0xcf8 address, 0xcfc data).
const PCI_CONFIG_PORT: u16 = 0xcf8;
use crate::memory::GuestMemoryMmapT;

const OEM_ID: [u8; 6] = *b"FTCLHV";
const OEM_REVISION: u32 = 1;
/// `SLP_TYP` for S5 (soft off) in `\_S5`: `PM1_CNT` then receives
/// `(5 << 10) | SLP_EN (1 << 13)` = 0x3400, which the PM1 device takes as
/// power off.
const S5_SLEEP_TYPE: u8 = PM1_S5_SLEEP_TYPE as u8;
/// Value written to the reset register (port 0x600) to reset the VM.
const RESET_VALUE: u8 = 1;
/// The SCI's ISA IRQ (FADT `SCI_INT`), identity-mapped to GSI 9 by an
/// interrupt source override. Nothing raises it: no fixed event or GPE
/// ever fires.
const SCI_IRQ: u8 = 9;
/// The GSI (IOAPIC pin) the PIT (ISA IRQ 0) interrupts on, as on PC
/// chipsets since the IOAPIC: pin 0 is the 8259's ExtINT.
const PIT_GSI: u32 = 2;
/// FADT `IAPC_BOOT_ARCH`: VGA not present (bit 2) and CMOS RTC not present
/// (bit 5), so Linux probes neither. `LEGACY_DEVICES` (bit 0) and `8042`
/// (bit 1) stay clear, as before: Linux then skips PNP BIOS and does not
/// probe the i8042 (whose port 0x61 and 0xfe reset still work).
const IAPC_BOOT_ARCH: u16 = (1 << 2) | (1 << 5);
/// MADT flags: `PCAT_COMPAT` (bit 0).
const MADT_PCAT_COMPAT: u32 = 1;
/// Offset of the MADT flags: after the 36-byte header and the local APIC
/// address.
const MADT_FLAGS_OFFSET: usize = 40;
/// MADT interrupt source override flags: polarity active high (bits 1:0 =
/// 01) and trigger level (bits 3:2 = 11), for the SCI.
const MPS_INTI_ACTIVE_HIGH_LEVEL: u16 = 0x000d;
/// Alignment the FACS must have.
const FACS_ALIGN: u64 = 64;
/// Offset of the checksum in an ACPI table header.
const CHECKSUM_OFFSET: usize = 9;

/// Serialises an `acpi_tables` object.
fn bytes_of(table: &dyn Aml) -> Vec<u8> {
    let mut v = Vec::new();
    table.to_aml_bytes(&mut v);
    v
}

/// The DSDT: `\_S5` and the serial port (COM1).
///
/// The serial port is described so that Linux's driver for it (8250_pnp
/// through PNP ACPI) finds it with `_CRS`: its I/O range and IRQ 4 (edge,
/// active high), as Cloud Hypervisor describes it. (On the earlier
/// hardware-reduced platform, without a legacy PIC, this was the only way
/// Linux would allocate the ISA IRQ.)
fn dsdt() -> Vec<u8> {
    let mut dsdt = Sdt::new(*b"DSDT", 36, 6, OEM_ID, *b"FTCHDSDT", OEM_REVISION);
    let s5 = aml::Name::new(
        "_S5_".into(),
        &aml::Package::new(vec![&S5_SLEEP_TYPE, &0u8, &0u8, &0u8]),
    );
    s5.to_aml_bytes(&mut dsdt);
    let hid = aml::Name::new("_HID".into(), &aml::EISAName::new("PNP0501"));
    let uid = aml::Name::new("_UID".into(), &aml::ZERO);
    let io = aml::IO::new(
        SERIAL_PORT_BASE as u16,
        SERIAL_PORT_BASE as u16,
        1,
        SERIAL_PORT_SIZE as u8,
    );
    let irq = aml::Interrupt::new(true, true, false, false, SERIAL_IRQ);
    let crs = aml::Name::new("_CRS".into(), &aml::ResourceTemplate::new(vec![&io, &irq]));
    let com1 = aml::Device::new("_SB_.COM1".into(), vec![&hid, &uid, &crs]);
    com1.to_aml_bytes(&mut dsdt);
    pci_host_bridge().to_aml_bytes(&mut dsdt);
    dsdt.update_checksum();
    dsdt.as_slice().to_vec()
}

/// The PCI host bridge: segment 0, bus 0, configuration through ports
/// 0xcf8..0xcff, and the 32-bit device window for BARs.
/// With ACPI enabled, Linux scans PCI only below the host bridges the DSDT
/// describes. There is no `_PRT`: devices interrupt through MSI-X.
fn pci_host_bridge() -> PciHostBridge {
    PciHostBridge
}

/// See [`pci_host_bridge`].
struct PciHostBridge;

impl Aml for PciHostBridge {
    fn to_aml_bytes(&self, sink: &mut dyn acpi_tables::AmlSink) {
        let hid = aml::Name::new("_HID".into(), &aml::EISAName::new("PNP0A08"));
        let cid = aml::Name::new("_CID".into(), &aml::EISAName::new("PNP0A03"));
        let adr = aml::Name::new("_ADR".into(), &aml::ZERO);
        let seg = aml::Name::new("_SEG".into(), &aml::ZERO);
        let uid = aml::Name::new("_UID".into(), &aml::ZERO);
        let bbn = aml::Name::new("_BBN".into(), &aml::ZERO);
        let buses = aml::AddressSpace::new_bus_number(0u16, 0u16);
        let cfg = aml::IO::new(PCI_CONFIG_PORT, PCI_CONFIG_PORT, 1, 8);
        let io_low = aml::AddressSpace::new_io(0u16, PCI_CONFIG_PORT - 1, None);
        let io_high = aml::AddressSpace::new_io(PCI_CONFIG_PORT + 8, 0xffffu16, None);
        let mmio = aml::AddressSpace::new_memory(
            aml::AddressSpaceCacheable::NotCacheable,
            true,
            MEM_32BIT_DEVICES_START as u32,
            (MEM_32BIT_DEVICES_START + MEM_32BIT_DEVICES_SIZE - 1) as u32,
            None,
        );
        let crs = aml::Name::new(
            "_CRS".into(),
            &aml::ResourceTemplate::new(vec![&buses, &cfg, &io_low, &io_high, &mmio]),
        );
        aml::Device::new(
            "_SB_.PCI0".into(),
            vec![&hid, &cid, &adr, &seg, &uid, &bbn, &crs],
        )
        .to_aml_bytes(sink);
    }
}

/// A full (not hardware-reduced) FADT pointing at the DSDT and the FACS.
///
/// - `SMI_CMD`, `ACPI_ENABLE` and `ACPI_DISABLE` are 0: the platform is
///   always in ACPI mode (and `SCI_EN` always reads 1), so ACPICA never
///   switches modes.
/// - `SCI_INT` 9, level and active high by the MADT's override.
/// - `PM1a_EVT_BLK` (status and enable, 16 bits each) and `PM1a_CNT_BLK`,
///   in both the 32-bit fields and the `X_` GAS fields, with equal
///   addresses and a bit width of 8 times the length (ACPICA warns about
///   and overrides any mismatch). Word access: every PM1 register is 16
///   bits. No PM1b blocks, no PM2, no PM timer, no GPE blocks.
/// - `FIRMWARE_CTRL` holds the FACS address and `X_FIRMWARE_CTRL` stays 0:
///   the FACS is below 4 GiB, and the specification wants
///   `X_FIRMWARE_CTRL` zero when `FIRMWARE_CTRL` is set.
/// - The reset register is the shutdown port (0x600, value 1). No sleep
///   control/status registers: those are for hardware-reduced platforms.
fn fadt(dsdt_addr: u64, facs_addr: u32) -> Vec<u8> {
    let mut b = FADTBuilder::new(OEM_ID, *b"FTCHFACP", OEM_REVISION)
        .dsdt_64(dsdt_addr)
        .firmware_ctrl_32(facs_addr)
        .flag(Flags::ResetRegSup);
    b.sci_int = u16::from(SCI_IRQ).into();
    b.pm1a_evt_blk = (PM1_PORT_BASE as u32).into();
    b.pm1a_cnt_blk = (PM1_CNT_PORT as u32).into();
    b.pm1_evt_len = PM1_EVT_LEN;
    b.pm1_cnt_len = PM1_CNT_LEN;
    let io = |bytes: u8, access: AccessSize, port: u64| {
        GAS::new(AddressSpace::SystemIo, bytes * 8, 0, access, port)
    };
    b.x_pm1a_evt_blk = io(PM1_EVT_LEN, AccessSize::WordAccess, PM1_PORT_BASE);
    b.x_pm1a_cnt_blk = io(PM1_CNT_LEN, AccessSize::WordAccess, PM1_CNT_PORT);
    b.iapc_boot_arch = IAPC_BOOT_ARCH.into();
    b.reset_reg = io(1, AccessSize::ByteAccess, SHUTDOWN_PORT);
    b.reset_value = RESET_VALUE;
    bytes_of(&b.finalize())
}

/// A MADT interrupt source override (type 2): ISA IRQ `source` is GSI
/// `gsi`, with MPS INTI `flags` (0: conforms to the bus, edge high).
fn interrupt_source_override(source: u8, gsi: u32, flags: u16) -> [u8; 10] {
    let mut e = [0u8; 10];
    e[0] = 2; // type
    e[1] = 10; // length
    e[2] = 0; // bus: ISA
    e[3] = source;
    e[4..8].copy_from_slice(&gsi.to_le_bytes());
    e[8..10].copy_from_slice(&flags.to_le_bytes());
    e
}

/// Sets the checksum byte of the ACPI table `t` so that its bytes sum to 0.
fn update_checksum(t: &mut [u8]) {
    t[CHECKSUM_OFFSET] = 0;
    let sum = t.iter().fold(0u8, |a, &x| a.wrapping_add(x));
    t[CHECKSUM_OFFSET] = sum.wrapping_neg();
}

/// The MADT: the boot CPU's local APIC, the IOAPIC (GSIs 0..23) and two
/// interrupt source overrides: ISA IRQ 0 (the PIT) on GSI 2, and the SCI
/// (IRQ 9) on GSI 9, level, active high. Other ISA IRQs map to GSIs 1:1.
///
/// The `PCAT_COMPAT` flag is set although there is still no 8259 PIC:
/// Linux then "pretends the PIC is there" instead of probing it (its
/// writes to ports 0x20/0x21/0xa0/0xa1 go nowhere: the bus ignores
/// them) and keeps the 16 legacy IRQs and the PIT timer path. The
/// `acpi_tables` MADT has no setter for the flags, nor a type for the
/// overrides: both are patched into the serialised table.
fn madt() -> Vec<u8> {
    let mut madt = MADT::new(
        OEM_ID,
        *b"FTCHAPIC",
        OEM_REVISION,
        LocalInterruptController::Address(LAPIC_BASE as u32),
    );
    madt.add_structure(ProcessorLocalApic::new(0, 0, EnabledStatus::Enabled));
    madt.add_structure(IoApic::new(0, IOAPIC_BASE as u32, 0));
    let mut t = bytes_of(&madt);
    t.extend_from_slice(&interrupt_source_override(0, PIT_GSI, 0));
    t.extend_from_slice(&interrupt_source_override(
        SCI_IRQ,
        u32::from(SCI_IRQ),
        MPS_INTI_ACTIVE_HIGH_LEVEL,
    ));
    t[MADT_FLAGS_OFFSET..MADT_FLAGS_OFFSET + 4].copy_from_slice(&MADT_PCAT_COMPAT.to_le_bytes());
    let len = t.len() as u32;
    t[4..8].copy_from_slice(&len.to_le_bytes());
    update_checksum(&mut t);
    t
}

/// Writes the tables into guest memory and returns the RSDP's address.
pub(super) fn write_tables(mem: &GuestMemoryMmapT) -> Result<GuestAddress, BootError> {
    let align = |a: u64, to: u64| a.next_multiple_of(to);
    let mut next = RSDP_START.0 + Rsdp::len() as u64;
    let mut place = |what: &'static str, data: &[u8], to: u64| -> Result<u64, BootError> {
        let addr = align(next, to);
        let end = addr + data.len() as u64;
        if end > ACPI_END.0 {
            return Err(BootError::AcpiTooLarge);
        }
        mem.write_slice(data, GuestAddress(addr))
            .map_err(|source| BootError::GuestMemory { what, source })?;
        next = end;
        Ok(addr)
    };
    let facs_addr = place("the ACPI FACS", &bytes_of(&FACS::new()), FACS_ALIGN)?;
    let dsdt_addr = place("the ACPI DSDT", &dsdt(), 16)?;
    // Below ACPI_END (1 MiB): fits the 32-bit FIRMWARE_CTRL.
    let fadt_addr = place("the ACPI FADT", &fadt(dsdt_addr, facs_addr as u32), 16)?;
    let madt_addr = place("the ACPI MADT", &madt(), 16)?;
    let mut xsdt = XSDT::new(OEM_ID, *b"FTCHXSDT", OEM_REVISION);
    xsdt.add_entry(fadt_addr);
    xsdt.add_entry(madt_addr);
    let xsdt_addr = place("the ACPI XSDT", &bytes_of(&xsdt), 16)?;
    let rsdp = bytes_of(&Rsdp::new(OEM_ID, xsdt_addr));
    mem.write_slice(&rsdp, RSDP_START)
        .map_err(|source| BootError::GuestMemory {
            what: "the ACPI RSDP",
            source,
        })?;
    Ok(RSDP_START)
}

#[cfg(test)]
mod tests {
    use super::*;
    use vm_memory::GuestMemoryMmap;

    fn sum(b: &[u8]) -> u8 {
        b.iter().fold(0u8, |a, &x| a.wrapping_add(x))
    }

    fn read(m: &GuestMemoryMmapT, addr: u64, len: usize) -> Vec<u8> {
        let mut v = vec![0u8; len];
        m.read_slice(&mut v, GuestAddress(addr)).unwrap();
        v
    }

    fn table(m: &GuestMemoryMmapT, addr: u64) -> Vec<u8> {
        let hdr = read(m, addr, 8);
        let len = u32::from_le_bytes(hdr[4..8].try_into().unwrap()) as usize;
        read(m, addr, len)
    }

    fn u16_at(t: &[u8], o: usize) -> u16 {
        u16::from_le_bytes(t[o..o + 2].try_into().unwrap())
    }

    fn u32_at(t: &[u8], o: usize) -> u32 {
        u32::from_le_bytes(t[o..o + 4].try_into().unwrap())
    }

    fn u64_at(t: &[u8], o: usize) -> u64 {
        u64::from_le_bytes(t[o..o + 8].try_into().unwrap())
    }

    /// The tables written into a 2 MiB guest, and the table with
    /// `signature` the XSDT lists.
    fn written_table(signature: &[u8; 4]) -> (GuestMemoryMmapT, Vec<u8>) {
        let m: GuestMemoryMmapT =
            GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 2 << 20)]).unwrap();
        let rsdp = read(&m, write_tables(&m).unwrap().0, 36);
        let xsdt = table(&m, u64_at(&rsdp, 24));
        let t = xsdt[36..]
            .chunks(8)
            .map(|a| table(&m, u64::from_le_bytes(a.try_into().unwrap())))
            .find(|t| &t[0..4] == signature)
            .unwrap();
        (m, t)
    }

    /// A GAS at `o`: (address space, bit width, bit offset, access size,
    /// address).
    fn gas_at(t: &[u8], o: usize) -> (u8, u8, u8, u8, u64) {
        (t[o], t[o + 1], t[o + 2], t[o + 3], u64_at(t, o + 4))
    }

    #[test]
    fn fadt_describes_the_pm1_block() {
        let (_, t) = written_table(b"FACP");
        assert_eq!(sum(&t), 0);
        assert_eq!(t[8], 6, "FADT revision");
        let flags = u32_at(&t, 112);
        assert_eq!(flags, 1 << 10, "only RESET_REG_SUP");
        // SCI_INT 9; SMI_CMD, ACPI_ENABLE, ACPI_DISABLE 0: always in ACPI mode.
        assert_eq!(u16_at(&t, 46), 9);
        assert_eq!(u32_at(&t, 48), 0);
        assert_eq!((t[52], t[53]), (0, 0));
        // PM1a_EVT_BLK 0x610 (4 bytes), PM1a_CNT_BLK 0x614 (2 bytes); no
        // PM1b, PM2, PM timer or GPE blocks.
        assert_eq!(u32_at(&t, 56), 0x610);
        assert_eq!(u32_at(&t, 60), 0);
        assert_eq!(u32_at(&t, 64), 0x614);
        for o in [68, 72, 76, 80, 84] {
            assert_eq!(u32_at(&t, o), 0, "block at FADT offset {o}");
        }
        assert_eq!(&t[88..95], &[4, 2, 0, 0, 0, 0, 0]);
        // The same blocks as GAS: system I/O, 32 and 16 bits, word access.
        assert_eq!(gas_at(&t, 148), (1, 32, 0, 2, 0x610));
        assert_eq!(gas_at(&t, 172), (1, 16, 0, 2, 0x614));
        for o in [160, 184, 196, 208, 220, 232] {
            assert_eq!(gas_at(&t, o), (0, 0, 0, 0, 0), "GAS at FADT offset {o}");
        }
        // They match the PM1 device's ports.
        assert_eq!(
            (PM1_PORT_BASE, PM1_CNT_PORT),
            (0x610, 0x614),
            "devices::legacy::Pm1Device"
        );
        // IAPC_BOOT_ARCH: VGA and CMOS RTC not present.
        assert_eq!(u16_at(&t, 109), 0x24);
        // RESET_REG: system I/O byte at 0x600, value 1.
        assert_eq!(gas_at(&t, 116), (1, 8, 0, 1, 0x600));
        assert_eq!(t[128], 1);
        // No hardware-reduced sleep registers.
        assert_eq!(gas_at(&t, 244), (0, 0, 0, 0, 0));
        assert_eq!(gas_at(&t, 256), (0, 0, 0, 0, 0));
    }

    #[test]
    fn facs_is_aligned_and_referenced() {
        let (m, fadt) = written_table(b"FACP");
        let facs_addr = u64::from(u32_at(&fadt, 36));
        assert_ne!(facs_addr, 0, "FIRMWARE_CTRL");
        assert_eq!(facs_addr % 64, 0, "FACS alignment");
        // X_FIRMWARE_CTRL must be 0 when FIRMWARE_CTRL is set.
        assert_eq!(u64_at(&fadt, 132), 0);
        let facs = read(&m, facs_addr, 64);
        assert_eq!(&facs[0..4], b"FACS");
        assert_eq!(u32_at(&facs, 4), 64);
        // Global lock free, no waking vector.
        assert_eq!(u32_at(&facs, 16), 0);
        assert_eq!(u32_at(&facs, 12), 0);
        // It lies below the DSDT and does not overlap it.
        let dsdt_addr = u64_at(&fadt, 140);
        assert!(facs_addr + 64 <= dsdt_addr);
        assert!(facs_addr >= RSDP_START.0 + 36);
    }

    #[test]
    fn madt_is_pcat_compat_with_two_overrides() {
        let (_, t) = written_table(b"APIC");
        assert_eq!(sum(&t), 0);
        assert_eq!(u32_at(&t, 4) as usize, t.len());
        assert_eq!(u32_at(&t, 40), 1, "PCAT_COMPAT");
        // Walk the structures.
        let mut entries = Vec::new();
        let mut o = 44;
        while o < t.len() {
            let len = t[o + 1] as usize;
            assert!(len >= 2 && o + len <= t.len());
            entries.push(&t[o..o + len]);
            o += len;
        }
        assert_eq!(o, t.len());
        let types: Vec<u8> = entries.iter().map(|e| e[0]).collect();
        assert_eq!(types, vec![0, 1, 2, 2]);
        // The IOAPIC: id 0, its address, GSI base 0.
        assert_eq!(entries[1][2], 0);
        assert_eq!(u32_at(entries[1], 4), IOAPIC_BASE as u32);
        assert_eq!(u32_at(entries[1], 8), 0);
        // (bus, source IRQ, GSI, flags)
        let iso = |e: &[u8]| {
            assert_eq!(e.len(), 10);
            (e[2], e[3], u32_at(e, 4), u16_at(e, 8))
        };
        assert_eq!(iso(entries[2]), (0, 0, 2, 0));
        assert_eq!(iso(entries[3]), (0, 9, 9, 0x000d));
    }

    #[test]
    fn tables_are_linked_and_checksummed() {
        let m: GuestMemoryMmapT =
            GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 2 << 20)]).unwrap();
        let rsdp_addr = write_tables(&m).unwrap();
        assert_eq!(rsdp_addr, RSDP_START);
        let rsdp = read(&m, rsdp_addr.0, 36);
        assert_eq!(&rsdp[0..8], b"RSD PTR ");
        assert_eq!(sum(&rsdp[0..20]), 0);
        assert_eq!(sum(&rsdp), 0);
        let xsdt_addr = u64::from_le_bytes(rsdp[24..32].try_into().unwrap());
        let xsdt = table(&m, xsdt_addr);
        assert_eq!(&xsdt[0..4], b"XSDT");
        assert_eq!(sum(&xsdt), 0);
        assert_eq!(xsdt.len(), 36 + 16);
        let mut sigs = Vec::new();
        for i in 0..2 {
            let a = u64::from_le_bytes(xsdt[36 + 8 * i..44 + 8 * i].try_into().unwrap());
            let t = table(&m, a);
            assert_eq!(sum(&t), 0, "checksum of {:?}", &t[0..4]);
            sigs.push(t[0..4].to_vec());
            if &t[0..4] == b"FACP" {
                assert_eq!(t.len(), 276);
                let flags = u32::from_le_bytes(t[112..116].try_into().unwrap());
                assert_eq!(flags & (1 << 20), 0, "hardware reduced");
                // RESET_REG: system I/O, port 0x600, value 1.
                assert_eq!(t[116], 1);
                assert_eq!(u64::from_le_bytes(t[120..128].try_into().unwrap()), 0x600);
                assert_eq!(t[128], 1);
                let facs = read(&m, u32_at(&t, 36) as u64, 64);
                assert_eq!(&facs[0..4], b"FACS");
                let dsdt = table(&m, u64::from_le_bytes(t[140..148].try_into().unwrap()));
                assert_eq!(&dsdt[0..4], b"DSDT");
                assert_eq!(sum(&dsdt), 0);
                // NameOp "_S5_" PackageOp ... with 4 elements, the first 5.
                let body = &dsdt[36..];
                assert_eq!(&body[0..5], &[0x08, b'_', b'S', b'5', b'_']);
                assert_eq!(body[5], 0x12);
                assert_eq!(body[7], 4);
                // Then the serial port device, with its PNP ID.
                let pos = body.windows(4).position(|w| w == b"COM1").unwrap();
                assert!(pos > 8);
                assert!(body.windows(4).any(|w| w == [0x0c, 0x41, 0xd0, 0x05]));
                // And the PCI host bridge (PNP0A08, compatible PNP0A03).
                assert!(body.windows(4).any(|w| w == b"PCI0"));
                assert!(body.windows(5).any(|w| w == [0x0c, 0x41, 0xd0, 0x0a, 0x08]));
            }
            if &t[0..4] == b"APIC" {
                assert_eq!(
                    u32::from_le_bytes(t[36..40].try_into().unwrap()),
                    LAPIC_BASE as u32
                );
                // Processor local APIC (type 0), IOAPIC (type 1), then
                // two interrupt source overrides (type 2).
                assert_eq!(t[44], 0);
                assert_eq!(t[44 + 8], 1);
                assert_eq!(t[44 + 8 + 12], 2);
                assert_eq!(t[44 + 8 + 12 + 10], 2);
                assert_eq!(t.len(), 44 + 8 + 12 + 2 * 10);
            }
        }
        assert_eq!(sigs, vec![b"FACP".to_vec(), b"APIC".to_vec()]);
    }

    #[test]
    fn too_little_memory_is_an_error() {
        let m: GuestMemoryMmapT =
            GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 0xe0000)]).unwrap();
        assert!(matches!(
            write_tables(&m),
            Err(BootError::GuestMemory { .. })
        ));
    }
}
