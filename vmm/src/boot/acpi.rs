// Copyright 2026 The ft-cloud-hypervisor authors.
// SPDX-License-Identifier: Apache-2.0

//! The ACPI tables the guest finds its platform in, built with the
//! `acpi_tables` crate as Cloud Hypervisor does.
//!
//! Why ACPI and not an MP table: Linux can find the local APIC and the
//! IOAPIC from either, but only ACPI gives it a way to power off. Our
//! shutdown device (port 0x600) is the hardware-reduced ACPI sleep control
//! register, so `poweroff` reaches it only through the FADT and a `\_S5`
//! object. ACPI also costs boot time here, because guest kernel code is
//! emulated (the interpreter took ~9 s with QEMU's large DSDT). The tables
//! are therefore as small as they can be: an XSDT, a hardware-reduced FADT
//! (no PM timer, no PM1 blocks, no SCI, no FACS), a MADT with one local
//! APIC and the IOAPIC, and a DSDT holding `\_S5`, the serial port and
//! the PCI host bridge.
//!
//! Layout: the RSDP at [`RSDP_START`] (inside the BIOS area Linux scans,
//! and also handed over by PVH's `rsdp_paddr` and bzImage's
//! `acpi_rsdp_addr`), then the tables, below 1 MiB.

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
use devices::legacy::{SERIAL_IRQ, SERIAL_PORT_BASE, SERIAL_PORT_SIZE, SHUTDOWN_PORT};
use vm_memory::{Bytes, GuestAddress};

use super::BootError;
use crate::layout::{ACPI_END, MEM_32BIT_DEVICES_SIZE, MEM_32BIT_DEVICES_START, RSDP_START};

/// The PCI configuration mechanism #1 ports (0xcf8 address, 0xcfc data).
const PCI_CONFIG_PORT: u16 = 0xcf8;
use crate::memory::GuestMemoryMmapT;

const OEM_ID: [u8; 6] = *b"FTCLHV";
const OEM_REVISION: u32 = 1;
/// `SLP_TYP` for S5 (soft off) in `\_S5`: the sleep control register then
/// receives `(5 << 2) | SLP_EN (0x20)` = 0x34, which the shutdown device
/// takes as power off.
const S5_SLEEP_TYPE: u8 = 5;
/// Value written to the reset register (port 0x600) to reset the VM.
const RESET_VALUE: u8 = 1;

/// Serialises an `acpi_tables` object.
fn bytes_of(table: &dyn Aml) -> Vec<u8> {
    let mut v = Vec::new();
    table.to_aml_bytes(&mut v);
    v
}

/// The DSDT: `\_S5` and the serial port (COM1).
///
/// The serial port is described because its interrupt is otherwise
/// unusable: without an 8259 PIC, Linux allocates ISA IRQs only for GSIs
/// some table names, so the port's driver (8250_pnp through PNP ACPI) needs
/// `_CRS` with its I/O range and IRQ 4 (edge, active high), as Cloud
/// Hypervisor describes it.
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

/// A hardware-reduced FADT pointing at the DSDT, with the sleep control and
/// status registers and the reset register on the shutdown port.
fn fadt(dsdt_addr: u64) -> Vec<u8> {
    let io = |port: u64| GAS::new(AddressSpace::SystemIo, 8, 0, AccessSize::ByteAccess, port);
    let mut b = FADTBuilder::new(OEM_ID, *b"FTCHFACP", OEM_REVISION)
        .dsdt_64(dsdt_addr)
        .flag(Flags::HwReducedAcpi)
        .flag(Flags::ResetRegSup);
    b.sleep_control_reg = io(SHUTDOWN_PORT);
    b.sleep_status_reg = io(SHUTDOWN_PORT + 1);
    b.reset_reg = io(SHUTDOWN_PORT);
    b.reset_value = RESET_VALUE;
    bytes_of(&b.finalize())
}

/// The MADT: the boot CPU's local APIC and the IOAPIC (GSIs 0..23). No
/// PCAT_COMPAT flag: there is no 8259 PIC; ISA IRQs map to GSIs 1:1.
fn madt() -> Vec<u8> {
    let mut madt = MADT::new(
        OEM_ID,
        *b"FTCHAPIC",
        OEM_REVISION,
        LocalInterruptController::Address(LAPIC_BASE as u32),
    );
    madt.add_structure(ProcessorLocalApic::new(0, 0, EnabledStatus::Enabled));
    madt.add_structure(IoApic::new(0, IOAPIC_BASE as u32, 0));
    bytes_of(&madt)
}

/// Writes the tables into guest memory and returns the RSDP's address.
pub(super) fn write_tables(mem: &GuestMemoryMmapT) -> Result<GuestAddress, BootError> {
    let align = |a: u64| (a + 15) & !15;
    let mut next = align(RSDP_START.0 + Rsdp::len() as u64);
    let mut place = |what: &'static str, data: &[u8]| -> Result<u64, BootError> {
        let addr = next;
        let end = addr + data.len() as u64;
        if end > ACPI_END.0 {
            return Err(BootError::AcpiTooLarge);
        }
        mem.write_slice(data, GuestAddress(addr))
            .map_err(|source| BootError::GuestMemory { what, source })?;
        next = align(end);
        Ok(addr)
    };
    let dsdt_addr = place("the ACPI DSDT", &dsdt())?;
    let fadt_addr = place("the ACPI FADT", &fadt(dsdt_addr))?;
    let madt_addr = place("the ACPI MADT", &madt())?;
    let mut xsdt = XSDT::new(OEM_ID, *b"FTCHXSDT", OEM_REVISION);
    xsdt.add_entry(fadt_addr);
    xsdt.add_entry(madt_addr);
    let xsdt_addr = place("the ACPI XSDT", &bytes_of(&xsdt))?;
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
                assert_ne!(flags & (1 << 20), 0, "hardware reduced");
                // SLEEP_CONTROL_REG: system I/O, port 0x600.
                assert_eq!(t[244], 1);
                assert_eq!(u64::from_le_bytes(t[248..256].try_into().unwrap()), 0x600);
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
                // Processor local APIC (type 0) then IOAPIC (type 1).
                assert_eq!(t[44], 0);
                assert_eq!(t[44 + 8], 1);
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
