// Copyright 2026 The ft-cloud-hypervisor authors.
// SPDX-License-Identifier: Apache-2.0

//! Creates the platform devices from the configuration and maps them on the
//! buses, at Cloud Hypervisor's addresses.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Write;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use devices::async_event::{AsyncEventSource, Waker};
use devices::bus::{Bus, BusError};
use devices::irq::{IrqLine, IrqLines, MsiQueue};
use devices::legacy::{
    DebugPort, I8042Device, Serial, ShutdownDevice, DEBUG_PORT, DEBUG_PORT_SIZE, I8042_BASE,
    I8042_SIZE, SERIAL_IRQ, SERIAL_PORT_BASE, SERIAL_PORT_SIZE, SHUTDOWN_PORT, SHUTDOWN_PORT_SIZE,
};
use serde_json::json;

use crate::config::{ConsoleOutputMode, VmConfig};
use crate::memory::GuestMemoryMmapT;

/// Errors creating devices.
#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    /// The serial output file cannot be created.
    #[error("cannot create serial output file {path}")]
    SerialFile {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// `--serial file` without a path.
    #[error("serial mode File needs a file path")]
    SerialFileMissing,
    /// Two devices on the same addresses.
    #[error("cannot map a device")]
    Bus(#[source] BusError),
}

/// Standard output, flushed after every write so interactive output appears at once.
#[derive(Debug)]
struct FlushingStdout;

impl Write for FlushingStdout {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let mut out = std::io::stdout().lock();
        let n = out.write(buf)?;
        out.flush()?;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stdout().flush()
    }
}

/// The devices of a VM, on their buses.
#[derive(Debug)]
pub struct DeviceManager {
    /// Port I/O bus.
    pub pio: Bus,
    /// MMIO bus (the interrupt controller is handled apart).
    pub mmio: Bus,
    /// The serial port, if any (for host input).
    pub serial: Option<Arc<Mutex<Serial>>>,
    /// Interrupt lines raised by devices.
    pub irq_lines: Arc<IrqLines>,
    /// MSIs sent by devices.
    pub msi_queue: Arc<MsiQueue>,
    /// Devices whose host-side work is applied on the vCPU thread.
    pub async_sources: Vec<Arc<Mutex<dyn AsyncEventSource>>>,
    /// Whether the serial port reads host standard input.
    pub serial_is_tty: bool,
}

impl DeviceManager {
    /// Creates the devices `config` asks for. `memory` is the guest RAM
    /// devices may access (only on the vCPU thread); `waker` is what their
    /// I/O threads call when host work has finished.
    pub fn new(
        config: &VmConfig,
        _memory: &GuestMemoryMmapT,
        _waker: Arc<dyn Waker>,
    ) -> Result<Self, DeviceError> {
        let serial = &config.serial;
        let irq_lines = IrqLines::new();
        let mut pio = Bus::new();
        let out: Option<Box<dyn Write + Send>> = match serial.mode {
            ConsoleOutputMode::Off => None,
            ConsoleOutputMode::Tty => Some(Box::new(FlushingStdout)),
            ConsoleOutputMode::File => {
                let path = serial.file.clone().ok_or(DeviceError::SerialFileMissing)?;
                let f = File::create(&path)
                    .map_err(|source| DeviceError::SerialFile { path, source })?;
                Some(Box::new(f))
            }
            _ => Some(Box::new(std::io::sink())),
        };
        let serial_dev = out.map(|out| {
            Arc::new(Mutex::new(Serial::new(
                IrqLine::new(irq_lines.clone(), SERIAL_IRQ),
                out,
            )))
        });
        if let Some(s) = &serial_dev {
            pio.insert(s.clone(), SERIAL_PORT_BASE, SERIAL_PORT_SIZE)
                .map_err(DeviceError::Bus)?;
        }
        pio.insert(
            Arc::new(Mutex::new(ShutdownDevice::new())),
            SHUTDOWN_PORT,
            8,
        )
        .map_err(DeviceError::Bus)?;
        pio.insert(
            Arc::new(Mutex::new(DebugPort::new())),
            DEBUG_PORT,
            DEBUG_PORT_SIZE,
        )
        .map_err(DeviceError::Bus)?;
        pio.insert(
            Arc::new(Mutex::new(I8042Device::new())),
            I8042_BASE,
            I8042_SIZE,
        )
        .map_err(DeviceError::Bus)?;
        Ok(DeviceManager {
            pio,
            mmio: Bus::new(),
            serial: serial_dev,
            irq_lines,
            msi_queue: MsiQueue::new(),
            async_sources: Vec::new(),
            serial_is_tty: serial.mode == ConsoleOutputMode::Tty,
        })
    }

    /// The `device_tree` of `vm.info`, in Cloud Hypervisor's shape.
    pub fn device_tree(&self) -> BTreeMap<String, serde_json::Value> {
        let pio = |id: &str, base: u64, size: u64| {
            json!({
                "id": id,
                "resources": [{"PioAddressRange": {"base": base, "size": size}}],
                "parent": null,
                "children": [],
                "pci_bdf": null,
            })
        };
        let mut tree = BTreeMap::new();
        if self.serial.is_some() {
            tree.insert(
                "__serial".into(),
                pio("__serial", SERIAL_PORT_BASE, SERIAL_PORT_SIZE),
            );
        }
        tree.insert(
            "__shutdown".into(),
            pio("__shutdown", SHUTDOWN_PORT, SHUTDOWN_PORT_SIZE),
        );
        tree.insert(
            "__debug_port".into(),
            pio("__debug_port", DEBUG_PORT, DEBUG_PORT_SIZE),
        );
        tree.insert("__i8042".into(), pio("__i8042", I8042_BASE, I8042_SIZE));
        let mmio = |id: &str, base: u64, size: u64| {
            json!({
                "id": id,
                "resources": [{"MmioAddressRange": {"base": base, "size": size}}],
                "parent": null,
                "children": [],
                "pci_bdf": null,
            })
        };
        use devices::interrupt::{IOAPIC_BASE, IOAPIC_SIZE, LAPIC_BASE, LAPIC_SIZE};
        tree.insert("__lapic".into(), mmio("__lapic", LAPIC_BASE, LAPIC_SIZE));
        tree.insert(
            "__ioapic".into(),
            mmio("__ioapic", IOAPIC_BASE, IOAPIC_SIZE),
        );
        tree
    }
}
