// Copyright 2026 The ft-cloud-hypervisor authors.
// SPDX-License-Identifier: Apache-2.0

//! Creates the platform devices from the configuration and maps them on the
//! buses, at Cloud Hypervisor's addresses: the legacy ports, then PCI
//! segment 0 (configuration through ports 0xcf8/0xcfc and ECAM, BARs in
//! the 32-bit device window) with the virtio-blk and virtio-net devices.
//!
//! A replaying VM builds its virtio devices [without host
//! backends](DeviceManager::without_backends): no disk image or tap is
//! opened, no I/O thread started, and their outputs are dropped. They keep
//! their host configuration (image paths, tap names and addresses) and
//! attach their backends when they go live
//! ([`DeviceManager::go_live_devices`]).

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Write;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use devices::async_event::{AsyncEventSource, Waker};
use devices::bus::{Bus, BusError};
use devices::irq::{IrqLine, IrqLines, MsiQueue};
use devices::legacy::{
    DebugPort, I8042Device, Pm1Device, Serial, ShutdownDevice, DEBUG_PORT, DEBUG_PORT_SIZE,
    I8042_BASE, I8042_SIZE, PM1_PORT_BASE, PM1_PORT_SIZE, SERIAL_IRQ, SERIAL_PORT_BASE,
    SERIAL_PORT_SIZE, SHUTDOWN_PORT, SHUTDOWN_PORT_SIZE,
};
use serde_json::json;
use virtio_devices::pci::{PCI_CONFIG_IO_PORT, PCI_CONFIG_IO_PORT_SIZE};

use virtio_devices::block::{BlockError, ImageMode};
use virtio_devices::net::NetError;
use virtio_devices::pci::root::PciRootError;
use virtio_devices::pci::{PciConfigIo, PciConfigMmio, PciMmioWindow, PciRoot};
use virtio_devices::transport::{TransportError, BAR_SIZE};
use virtio_devices::{
    Block, Counters, DroppedOutput, GoLiveDevices, ImmediateOutput, Net, OutputSink, VirtioDevice,
    VirtioPciDevice, VirtioPciEvents,
};

use crate::config::{parse_mac, ConsoleOutputMode, VmConfig};
use crate::layout::{
    MEM_32BIT_DEVICES_SIZE, MEM_32BIT_DEVICES_START, PCI_MMCONFIG_SIZE, PCI_MMCONFIG_START,
};
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
    /// A disk cannot be used.
    #[error("disk {id}")]
    Disk {
        /// The device id.
        id: String,
        /// Why.
        #[source]
        source: BlockError,
    },
    /// A net device cannot be used.
    #[error("net device {id}")]
    Net {
        /// The device id.
        id: String,
        /// Why.
        #[source]
        source: NetError,
    },
    /// A MAC that does not parse (validation catches it first).
    #[error("invalid MAC address {0:?}")]
    Mac(String),
    /// PCI bus 0 is full.
    #[error("cannot add a PCI device")]
    Pci(#[source] PciRootError),
    /// The virtio-pci transport cannot be built.
    #[error("cannot build the virtio-pci transport of {id}")]
    Transport {
        /// The device id.
        id: String,
        /// Why.
        #[source]
        source: TransportError,
    },
    /// The device window is full.
    #[error("no room left for the BAR of {0} in the 32-bit device window")]
    NoBarSpace(String),
    /// Building without backends, a disk whose size the recording does
    /// not give.
    #[error("disk {0} is not in the recording's device setup")]
    NotRecorded(String),
}

/// Where the virtio devices' host side comes from.
#[derive(Debug, Clone)]
enum Backends<'a> {
    /// Disk images and taps are opened, their I/O threads started; they
    /// call the waker when host work has finished.
    Host(Arc<dyn Waker>),
    /// None (replay): disk sizes by device id, from the recording.
    None(&'a [(String, u64)], BackupDisks),
}

/// What a VM built without backends does with its disks while it replays.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackupDisks {
    /// Nothing: the image is shared with (or belongs to) the recording VM;
    /// it is opened only at go-live.
    Shared,
    /// Each disk's image is the backup's own copy (`disks=separate`):
    /// opened at once, its size checked against the recording's, and
    /// written with every write and flush the guest issues.
    Separate,
}

/// A virtio device on PCI, as `vm.info` and `vm.counters` show it.
#[derive(Debug, Clone)]
pub struct PciDeviceInfo {
    /// Device id (`_disk0`, or the configured id).
    pub id: String,
    /// PCI device number on bus 0.
    pub device_number: u8,
    /// BAR 0 address.
    pub bar_base: u64,
    /// BAR 0 size.
    pub bar_size: u64,
    /// The device's counters.
    pub counters: Arc<Counters>,
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
    /// The virtio-pci devices.
    pub pci_devices: Vec<PciDeviceInfo>,
    /// The same devices, for saving and restoring their state
    /// ([`VirtioPciDevice::save_state`]).
    pub virtio_devices: Vec<Arc<Mutex<VirtioPciDevice>>>,
    /// Each disk's image size in bytes, by device id.
    pub disk_sizes: Vec<(String, u64)>,
    /// Each disk's written blocks (in the order of `disk_sizes`), for a
    /// copy of its image made while the guest runs.
    pub disk_writes: Vec<Arc<virtio_devices::block::written::WrittenBlocks>>,
}

impl DeviceManager {
    /// Creates the devices `config` asks for. `memory` is the guest RAM
    /// devices may access (only on the vCPU thread); `waker` is what their
    /// I/O threads call when host work has finished.
    pub fn new(
        config: &VmConfig,
        memory: &GuestMemoryMmapT,
        waker: Arc<dyn Waker>,
    ) -> Result<Self, DeviceError> {
        Self::with_output(config, memory, waker, Arc::new(ImmediateOutput))
    }

    /// As [`new`](Self::new), with devices' outputs (TX frames, disk
    /// writes) going through `output` (the Output Rule's seam).
    pub fn with_output(
        config: &VmConfig,
        memory: &GuestMemoryMmapT,
        waker: Arc<dyn Waker>,
        output: Arc<dyn OutputSink>,
    ) -> Result<Self, DeviceError> {
        Self::build(config, memory, output, Backends::Host(waker))
    }

    /// The devices of `config` for a VM that replays: the virtio devices
    /// have no host side. No disk image is opened (each disk's size comes
    /// from `disk_sizes`, the recording's, by device id), no tap is opened
    /// or created, no I/O thread is started, and every output is dropped
    /// ([`DroppedOutput`]): their events come from the log alone.
    pub fn without_backends(
        config: &VmConfig,
        memory: &GuestMemoryMmapT,
        disk_sizes: &[(String, u64)],
    ) -> Result<Self, DeviceError> {
        Self::for_backup(
            config,
            memory,
            disk_sizes,
            BackupDisks::Shared,
            Arc::new(DroppedOutput::default()),
        )
    }

    /// As [`without_backends`](Self::without_backends), with `disks`
    /// saying whether each disk's image is the backup's own copy, written
    /// while replaying ([`BackupDisks::Separate`]: the images are opened
    /// now and a size that is not the recording's is an error), and the
    /// outputs going to `output` (a pair's backup keeps its latest frames
    /// there, to send them again when it goes live).
    pub fn for_backup(
        config: &VmConfig,
        memory: &GuestMemoryMmapT,
        disk_sizes: &[(String, u64)],
        disks: BackupDisks,
        output: Arc<dyn OutputSink>,
    ) -> Result<Self, DeviceError> {
        Self::build(config, memory, output, Backends::None(disk_sizes, disks))
    }

    /// The virtio devices, for the VMM to keep and make go live (attach
    /// their host backends) when a VM built without backends stops
    /// replaying. Devices built with their backends refuse to go live.
    pub fn go_live_devices(&self) -> GoLiveDevices {
        GoLiveDevices::new(self.virtio_devices.clone())
    }

    /// What record/replay needs: the disk sizes (a recording's setup) and
    /// the devices with guest-visible state besides the interrupt
    /// controller, serial port first, then the virtio devices in PCI order.
    pub fn ft_devices(&self) -> crate::vcpu::FtDevices {
        let mut states: Vec<crate::vcpu::DeviceState> = Vec::new();
        if let Some(s) = &self.serial {
            states.push(s.clone());
        }
        for d in &self.virtio_devices {
            states.push(d.clone());
        }
        crate::vcpu::FtDevices {
            setup: ft_backend::Setup {
                disks: self.disk_sizes.clone(),
            },
            states,
        }
    }

    /// What a backup calls when it goes live: every virtio device gains
    /// its host side (the disks and taps its configuration names), its
    /// outputs are performed from then on, and its I/O threads wake the
    /// vCPU through `waker`. Disks re-issue what was in flight; taps
    /// announce the guest's MAC.
    pub fn go_live_hook(
        &self,
        waker: Arc<dyn Waker>,
    ) -> Box<dyn FnMut() -> Result<(), String> + Send> {
        self.go_live_hook_with(waker, Arc::new(ImmediateOutput))
    }

    /// As [`go_live_hook`](Self::go_live_hook), outputs going to `sink`
    /// once live.
    pub fn go_live_hook_with(
        &self,
        waker: Arc<dyn Waker>,
        sink: Arc<dyn OutputSink>,
    ) -> Box<dyn FnMut() -> Result<(), String> + Send> {
        let devices = self.go_live_devices();
        Box::new(move || {
            let live = virtio_devices::GoLive {
                waker: waker.clone(),
                sink: sink.clone(),
            };
            devices.go_live(&live).map_err(|e| {
                let mut s = e.to_string();
                let mut cause = std::error::Error::source(&e);
                while let Some(c) = cause {
                    s.push_str(": ");
                    s.push_str(&c.to_string());
                    cause = c.source();
                }
                s
            })
        })
    }

    fn build(
        config: &VmConfig,
        memory: &GuestMemoryMmapT,
        output: Arc<dyn OutputSink>,
        backends: Backends<'_>,
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
        // The ACPI PM1 event and control registers the FADT names.
        pio.insert(
            Arc::new(Mutex::new(Pm1Device::new())),
            PM1_PORT_BASE,
            PM1_PORT_SIZE,
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
        let mut dm = DeviceManager {
            pio,
            mmio: Bus::new(),
            serial: serial_dev,
            irq_lines,
            msi_queue: MsiQueue::new(),
            async_sources: Vec::new(),
            serial_is_tty: serial.mode == ConsoleOutputMode::Tty,
            pci_devices: Vec::new(),
            virtio_devices: Vec::new(),
            disk_sizes: Vec::new(),
            disk_writes: Vec::new(),
        };
        dm.add_pci(config, memory, output, backends)?;
        Ok(dm)
    }

    /// PCI segment 0 and its virtio devices: disks first, then net
    /// devices, ids `_diskN` / `_netN` from one counter, as upstream.
    fn add_pci(
        &mut self,
        config: &VmConfig,
        memory: &GuestMemoryMmapT,
        output: Arc<dyn OutputSink>,
        backends: Backends<'_>,
    ) -> Result<(), DeviceError> {
        let mut root = PciRoot::new();
        let mut counter = 0usize;
        let mut next_id = |prefix: &str, given: &Option<String>| {
            let id = given
                .clone()
                .unwrap_or_else(|| format!("{prefix}{counter}"));
            counter += 1;
            id
        };
        let mut models: Vec<(String, Box<dyn VirtioDevice>, Arc<Counters>)> = Vec::new();
        for disk in config.disks.as_deref().unwrap_or_default() {
            let id = next_id("_disk", &disk.id);
            let path = disk.path.clone().unwrap_or_default();
            let mode = ImageMode {
                readonly: disk.readonly,
                direct: disk.direct,
            };
            let block = match &backends {
                Backends::Host(waker) => Block::open(
                    &id,
                    &path,
                    mode,
                    disk.serial.as_deref(),
                    output.clone(),
                    waker.clone(),
                )
                .map_err(|source| DeviceError::Disk {
                    id: id.clone(),
                    source,
                })?,
                Backends::None(sizes, disks) => {
                    let size = sizes
                        .iter()
                        .find(|(d, _)| *d == id)
                        .map(|(_, s)| *s)
                        .ok_or_else(|| DeviceError::NotRecorded(id.clone()))?;
                    match disks {
                        BackupDisks::Shared => Block::without_backend(
                            &id,
                            &path,
                            size,
                            mode,
                            disk.serial.as_deref(),
                            output.clone(),
                        ),
                        BackupDisks::Separate => Block::backup_separate(
                            &id,
                            &path,
                            mode,
                            disk.serial.as_deref(),
                            size,
                            output.clone(),
                        )
                        .map_err(|source| DeviceError::Disk {
                            id: id.clone(),
                            source,
                        })?,
                    }
                }
            };
            self.disk_sizes.push((id.clone(), block.size()));
            self.disk_writes.push(block.written_blocks());
            let counters = block.counters();
            models.push((id, Box::new(block), counters));
        }
        for net in config.net.as_deref().unwrap_or_default() {
            let id = next_id("_net", &net.id);
            let mac = parse_mac(&net.mac).ok_or_else(|| DeviceError::Mac(net.mac.clone()))?;
            let address = net.ip.zip(net.mask);
            let dev = match &backends {
                Backends::Host(waker) => Net::new(
                    &id,
                    net.tap.as_deref(),
                    address,
                    mac,
                    output.clone(),
                    waker.clone(),
                )
                .map_err(|source| DeviceError::Net {
                    id: id.clone(),
                    source,
                })?,
                Backends::None(..) => {
                    Net::without_backend(&id, net.tap.as_deref(), address, mac, output.clone())
                }
            };
            let counters = dev.counters();
            models.push((id, Box::new(dev), counters));
        }
        for (index, (id, model, counters)) in models.into_iter().enumerate() {
            let bar_base = MEM_32BIT_DEVICES_START + index as u64 * BAR_SIZE;
            if bar_base + BAR_SIZE > MEM_32BIT_DEVICES_START + MEM_32BIT_DEVICES_SIZE {
                return Err(DeviceError::NoBarSpace(id));
            }
            let transport =
                VirtioPciDevice::new(&id, model, memory.clone(), self.msi_queue.clone(), bar_base)
                    .map_err(|source| DeviceError::Transport {
                        id: id.clone(),
                        source,
                    })?;
            let transport = Arc::new(Mutex::new(transport));
            let device_number = root
                .add_device(transport.clone())
                .map_err(DeviceError::Pci)?;
            self.virtio_devices.push(transport.clone());
            self.async_sources
                .push(Arc::new(Mutex::new(VirtioPciEvents::new(transport))));
            self.pci_devices.push(PciDeviceInfo {
                id,
                device_number,
                bar_base,
                bar_size: BAR_SIZE,
                counters,
            });
        }
        let root = Arc::new(Mutex::new(root));
        self.pio
            .insert(
                Arc::new(Mutex::new(PciConfigIo::new(root.clone()))),
                PCI_CONFIG_IO_PORT,
                PCI_CONFIG_IO_PORT_SIZE,
            )
            .map_err(DeviceError::Bus)?;
        self.mmio
            .insert(
                Arc::new(Mutex::new(PciConfigMmio::new(root.clone()))),
                PCI_MMCONFIG_START,
                PCI_MMCONFIG_SIZE,
            )
            .map_err(DeviceError::Bus)?;
        self.mmio
            .insert(
                Arc::new(Mutex::new(PciMmioWindow::new(
                    root,
                    MEM_32BIT_DEVICES_START,
                ))),
                MEM_32BIT_DEVICES_START,
                MEM_32BIT_DEVICES_SIZE,
            )
            .map_err(DeviceError::Bus)?;
        Ok(())
    }

    /// Counters of the virtio devices, by device id (`vm.counters`).
    pub fn counters(devices: &[PciDeviceInfo]) -> BTreeMap<String, serde_json::Value> {
        devices
            .iter()
            .map(|d| (d.id.clone(), json!(d.counters.snapshot())))
            .collect()
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
        tree.insert("__pm1".into(), pio("__pm1", PM1_PORT_BASE, PM1_PORT_SIZE));
        tree.insert("__i8042".into(), pio("__i8042", I8042_BASE, I8042_SIZE));
        // The i8254 PIT lives in the interrupt controller, not on the port
        // bus, but the guest sees it at ports 0x40..0x43.
        const PIT_PORT_BASE: u64 = 0x40;
        const PIT_PORT_SIZE: u64 = 4;
        tree.insert("__pit".into(), pio("__pit", PIT_PORT_BASE, PIT_PORT_SIZE));
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
        for d in &self.pci_devices {
            let pci_id = format!("_virtio-pci-{}", d.id);
            tree.insert(
                d.id.clone(),
                json!({
                    "id": d.id,
                    "resources": [],
                    "parent": pci_id,
                    "children": [],
                    "pci_bdf": null,
                }),
            );
            tree.insert(
                pci_id.clone(),
                json!({
                    "id": pci_id,
                    "resources": [{"PciBar": {
                        "index": 0,
                        "base": d.bar_base,
                        "size": d.bar_size,
                        "type_": "Mmio32",
                        "prefetchable": false,
                    }}],
                    "parent": null,
                    "children": [d.id],
                    "pci_bdf": format!("0000:00:{:02x}.0", d.device_number),
                }),
            );
        }
        tree
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use vm_memory::GuestAddress;

    use super::*;
    use crate::config::{DiskConfig, NetConfig};

    fn memory() -> GuestMemoryMmapT {
        GuestMemoryMmapT::from_ranges(&[(GuestAddress(0), 1 << 20)]).unwrap()
    }

    /// A disk image that does not exist and a tap name no tap can take.
    fn config() -> VmConfig {
        let mut c = VmConfig::with_kernel(PathBuf::from("/nonexistent/kernel"));
        c.serial = crate::config::ConsoleConfig::with_mode(ConsoleOutputMode::Off);
        c.disks = Some(vec![DiskConfig {
            path: Some(PathBuf::from("/nonexistent/disk.img")),
            ..DiskConfig::default()
        }]);
        c.net = Some(vec![NetConfig {
            tap: Some("not/a/tap".into()),
            mac: "52:54:00:12:34:56".into(),
            ..NetConfig::default()
        }]);
        c
    }

    #[test]
    fn without_backends_nothing_is_opened() {
        let c = config();
        let mem = memory();
        assert!(matches!(
            DeviceManager::new(&c, &mem, crate::vcpu::VcpuControl::new()),
            Err(DeviceError::Disk { .. })
        ));
        let sizes = vec![("_disk0".to_string(), 8 << 20)];
        let dm = DeviceManager::without_backends(&c, &mem, &sizes).unwrap();
        assert_eq!(dm.disk_sizes, sizes);
        let ids: Vec<&str> = dm.pci_devices.iter().map(|d| d.id.as_str()).collect();
        assert_eq!(ids, ["_disk0", "_net1"]);
        let ft = dm.ft_devices();
        assert_eq!(ft.setup.disks, sizes);
        // The virtio devices' states, under their ids.
        let names: Vec<String> = ft
            .states
            .iter()
            .map(|s| s.lock().unwrap().snapshot_id().to_string())
            .collect();
        assert_eq!(names, ["_disk0", "_net1"]);
        // The capacity the guest reads comes from the recorded size.
        let mut cap = [0u8; 8];
        let mut dev = dm.virtio_devices[0].lock().unwrap();
        virtio_devices::pci::root::PciDevice::bar_read(
            &mut *dev,
            0,
            virtio_devices::transport::DEVICE_CFG_OFFSET,
            &mut cap,
        );
        assert_eq!(u64::from_le_bytes(cap), (8 << 20) / 512);
    }

    #[test]
    fn devices_built_without_backends_go_live_once() {
        let path = std::env::temp_dir().join(format!("vmm-dm-golive-{}", std::process::id()));
        std::fs::write(&path, vec![0u8; 8192]).unwrap();
        let mut c = config();
        c.net = None;
        c.disks.as_mut().unwrap()[0].path = Some(path.clone());
        let mem = memory();
        let live = virtio_devices::GoLive {
            waker: crate::vcpu::VcpuControl::new(),
            sink: Arc::new(ImmediateOutput),
        };
        let sizes = vec![("_disk0".to_string(), 8192)];
        let dm = DeviceManager::without_backends(&c, &mem, &sizes).unwrap();
        let devices = dm.go_live_devices();
        // What the VMM keeps works after the device manager is gone.
        drop(dm);
        assert_eq!(devices.len(), 1);
        devices.go_live(&live).unwrap();
        let err = devices.go_live(&live).unwrap_err();
        assert_eq!(
            err.to_string(),
            "device _disk0 already has its host backend"
        );
        // Built with its backend: nothing to attach.
        let dm = DeviceManager::new(&c, &mem, crate::vcpu::VcpuControl::new()).unwrap();
        assert!(dm.go_live_devices().go_live(&live).is_err());
        // A backup's own copy must have the recorded size.
        let dm = DeviceManager::for_backup(
            &c,
            &mem,
            &sizes,
            BackupDisks::Separate,
            Arc::new(DroppedOutput::default()),
        )
        .unwrap();
        dm.go_live_devices().go_live(&live).unwrap();
        let other = vec![("_disk0".to_string(), 4096)];
        let err = DeviceManager::for_backup(
            &c,
            &mem,
            &other,
            BackupDisks::Separate,
            Arc::new(DroppedOutput::default()),
        )
        .unwrap_err();
        assert_eq!(
            virtio_devices::transport::error_chain(&err),
            format!(
                "disk _disk0: disk image {} has 8192 bytes, the recording has 4096",
                path.display()
            )
        );
        // Shared: nothing is opened before go-live, which then checks.
        let dm = DeviceManager::for_backup(
            &c,
            &mem,
            &other,
            BackupDisks::Shared,
            Arc::new(DroppedOutput::default()),
        )
        .unwrap();
        assert!(dm.go_live_devices().go_live(&live).is_err());
        std::fs::remove_file(&path).unwrap();
    }

    #[test]
    fn without_backends_a_disk_must_be_recorded() {
        let err = DeviceManager::without_backends(&config(), &memory(), &[]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "disk _disk0 is not in the recording's device setup"
        );
    }
}
