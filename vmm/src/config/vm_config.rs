// Copyright 2026 The ft-cloud-hypervisor authors.
// SPDX-License-Identifier: Apache-2.0

//! The VM configuration, in Cloud Hypervisor's JSON shape.
//!
//! Field names, nesting, defaults and enum spellings follow upstream's
//! `VmConfig` so that a `vm.create` body written for Cloud Hypervisor is
//! read the same way here and `vm.info` prints the same document. Where
//! this project differs it says so on the item.
//!
//! The structs we model field by field reject unknown keys
//! (`deny_unknown_fields`): an option we do not know is refused, never
//! silently dropped. Device lists we do not support yet (disks, net, ...)
//! are kept as opaque JSON values: they parse, so `validate` can name them
//! in its refusal, and they are replaced by typed structs when the devices
//! arrive.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// Upstream's default number of vCPUs.
pub const DEFAULT_VCPUS: u32 = 1;
/// Upstream's default guest physical address width (PVH limit).
pub const DEFAULT_MAX_PHYS_BITS: u8 = 46;
/// Upstream's default guest memory size, in MiB.
pub const DEFAULT_MEMORY_MB: u64 = 512;
/// Upstream's default entropy source of the virtio-rng device.
pub const DEFAULT_RNG_SOURCE: &str = "/dev/urandom";
/// Upstream's default I/O port of the debug console (port 0xe9 hack).
pub const DEFAULT_DEBUG_CONSOLE_IOBASE: u16 = 0xe9;

/// An opaque configuration item for a device this VMM does not support
/// yet. It is kept as JSON only so that `validate` can refuse it by name.
pub type Unsupported = serde_json::Value;

fn default_true() -> bool {
    true
}

fn default_max_phys_bits() -> u8 {
    DEFAULT_MAX_PHYS_BITS
}

/// Pinning of one vCPU to host CPUs (`--cpus affinity=`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CpuAffinity {
    /// The vCPU index.
    pub vcpu: u32,
    /// The host CPUs it may run on.
    pub host_cpus: Vec<usize>,
}

/// Optional CPU features (`--cpus features=`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CpuFeatures {
    /// Intel AMX.
    #[serde(default)]
    pub amx: bool,
}

/// The guest CPU topology (`--cpus topology=`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CpuTopology {
    /// Threads per core.
    pub threads_per_core: u16,
    /// Cores per die.
    pub cores_per_die: u16,
    /// Dies per package.
    pub dies_per_package: u16,
    /// Packages (sockets).
    pub packages: u16,
}

/// Host core scheduling of the vCPU threads (`--cpus core_scheduling=`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum CoreScheduling {
    /// All vCPUs of the VM in one core-scheduling group (upstream's default).
    #[default]
    Vm,
    /// One group per vCPU.
    Vcpu,
    /// No core scheduling.
    Off,
}

/// `cpus`: the vCPUs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CpusConfig {
    /// vCPUs started at boot.
    pub boot_vcpus: u32,
    /// vCPUs the VM may grow to.
    pub max_vcpus: u32,
    /// Guest topology, if not the default flat one.
    #[serde(default)]
    pub topology: Option<CpuTopology>,
    /// Hyper-V enlightenments.
    #[serde(default)]
    pub kvm_hyperv: bool,
    /// Guest physical address width.
    #[serde(default = "default_max_phys_bits")]
    pub max_phys_bits: u8,
    /// vCPU to host CPU pinning.
    #[serde(default)]
    pub affinity: Option<Vec<CpuAffinity>>,
    /// Optional features.
    #[serde(default)]
    pub features: CpuFeatures,
    /// Expose hardware virtualisation to the guest.
    #[serde(default = "default_true")]
    pub nested: bool,
    /// Host core scheduling.
    #[serde(default)]
    pub core_scheduling: CoreScheduling,
}

impl Default for CpusConfig {
    fn default() -> Self {
        CpusConfig {
            boot_vcpus: DEFAULT_VCPUS,
            max_vcpus: DEFAULT_VCPUS,
            topology: None,
            kvm_hyperv: false,
            max_phys_bits: DEFAULT_MAX_PHYS_BITS,
            affinity: None,
            features: CpuFeatures::default(),
            nested: true,
            core_scheduling: CoreScheduling::Vm,
        }
    }
}

/// How memory is hot-plugged.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum HotplugMethod {
    /// ACPI memory hotplug (upstream's default).
    #[default]
    Acpi,
    /// virtio-mem.
    VirtioMem,
}

/// `memory`: guest RAM.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MemoryConfig {
    /// Guest RAM size in bytes.
    pub size: u64,
    /// KSM-mergeable guest RAM.
    #[serde(default)]
    pub mergeable: bool,
    /// Hotplug mechanism.
    #[serde(default)]
    pub hotplug_method: HotplugMethod,
    /// Room for hot-plugged memory, in bytes.
    #[serde(default)]
    pub hotplug_size: Option<u64>,
    /// Memory already hot-plugged, in bytes.
    #[serde(default)]
    pub hotplugged_size: Option<u64>,
    /// Guest RAM shared (`MAP_SHARED`) with other processes.
    #[serde(default)]
    pub shared: bool,
    /// Guest RAM backed by huge pages.
    #[serde(default)]
    pub hugepages: bool,
    /// Huge page size, in bytes.
    #[serde(default)]
    pub hugepage_size: Option<u64>,
    /// Fault guest RAM in at start.
    #[serde(default)]
    pub prefault: bool,
    /// User-defined memory zones (opaque: not supported yet).
    #[serde(default)]
    pub zones: Option<Vec<Unsupported>>,
    /// Transparent huge pages for guest RAM.
    #[serde(default = "default_true")]
    pub thp: bool,
}

impl Default for MemoryConfig {
    fn default() -> Self {
        MemoryConfig {
            size: DEFAULT_MEMORY_MB << 20,
            mergeable: false,
            hotplug_method: HotplugMethod::Acpi,
            hotplug_size: None,
            hotplugged_size: None,
            shared: false,
            hugepages: false,
            hugepage_size: None,
            prefault: false,
            zones: None,
            thp: true,
        }
    }
}

/// `payload`: what the VM boots.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PayloadConfig {
    /// Firmware image.
    #[serde(default)]
    pub firmware: Option<PathBuf>,
    /// Kernel image (PVH ELF or bzImage).
    #[serde(default)]
    pub kernel: Option<PathBuf>,
    /// Kernel command line.
    #[serde(default)]
    pub cmdline: Option<String>,
    /// Initramfs image.
    #[serde(default)]
    pub initramfs: Option<PathBuf>,
    /// IGVM file (upstream feature `igvm`; not serialised when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub igvm: Option<PathBuf>,
    /// SEV-SNP host data (upstream feature `sev_snp`; not serialised when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_data: Option<String>,
}

/// Where a console's output goes. Upstream's `ConsoleOutputMode`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ConsoleOutputMode {
    /// No device.
    Off,
    /// A new pseudo-terminal.
    Pty,
    /// The VMM's own terminal (stdin/stdout).
    Tty,
    /// A file (`file`).
    File,
    /// A Unix socket (`socket`).
    Socket,
    /// The device exists, its output is dropped.
    Null,
}

/// `serial` and `console`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsoleConfig {
    /// Output file for [`ConsoleOutputMode::File`].
    #[serde(default)]
    pub file: Option<PathBuf>,
    /// Where output goes.
    pub mode: ConsoleOutputMode,
    /// Behind the virtual IOMMU.
    #[serde(default)]
    pub iommu: bool,
    /// Socket path for [`ConsoleOutputMode::Socket`].
    #[serde(default)]
    pub socket: Option<PathBuf>,
}

impl ConsoleConfig {
    /// A console of `mode` with no file or socket.
    pub fn with_mode(mode: ConsoleOutputMode) -> Self {
        ConsoleConfig {
            file: None,
            mode,
            iommu: false,
            socket: None,
        }
    }
}

/// Upstream's default serial port: present, output dropped.
pub fn default_serial() -> ConsoleConfig {
    ConsoleConfig::with_mode(ConsoleOutputMode::Null)
}

/// The default virtio-console. Upstream's is `Tty`; this VMM has no
/// virtio-console yet, so its default is `Off` (an explicit `Tty` is
/// refused by `validate`).
pub fn default_console() -> ConsoleConfig {
    ConsoleConfig::with_mode(ConsoleOutputMode::Off)
}

fn default_debug_console_iobase() -> Option<u16> {
    Some(DEFAULT_DEBUG_CONSOLE_IOBASE)
}

/// `debug_console`: the port-0xe9 debug console.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DebugConsoleConfig {
    /// Output file for [`ConsoleOutputMode::File`].
    #[serde(default)]
    pub file: Option<PathBuf>,
    /// Where output goes.
    pub mode: ConsoleOutputMode,
    /// I/O port.
    #[serde(default = "default_debug_console_iobase")]
    pub iobase: Option<u16>,
}

impl Default for DebugConsoleConfig {
    fn default() -> Self {
        DebugConsoleConfig {
            file: None,
            mode: ConsoleOutputMode::Off,
            iobase: default_debug_console_iobase(),
        }
    }
}

/// `rng`: the virtio-rng entropy source.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RngConfig {
    /// Host entropy source.
    pub src: PathBuf,
    /// Behind the virtual IOMMU.
    #[serde(default)]
    pub iommu: bool,
}

impl Default for RngConfig {
    fn default() -> Self {
        RngConfig {
            src: PathBuf::from(DEFAULT_RNG_SOURCE),
            iommu: false,
        }
    }
}

/// The whole VM configuration: the body of `vm.create` and the `config`
/// of `vm.info`. Field order is upstream's, so the JSON reads the same.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VmConfig {
    /// vCPUs.
    #[serde(default)]
    pub cpus: CpusConfig,
    /// Guest RAM.
    #[serde(default)]
    pub memory: MemoryConfig,
    /// What to boot.
    #[serde(default)]
    pub payload: Option<PayloadConfig>,
    /// I/O rate-limit groups (not supported yet).
    #[serde(default)]
    pub rate_limit_groups: Option<Vec<Unsupported>>,
    /// Block devices (virtio-blk).
    #[serde(default)]
    pub disks: Option<Vec<super::virtio::DiskConfig>>,
    /// Network devices (virtio-net on taps).
    #[serde(default)]
    pub net: Option<Vec<super::virtio::NetConfig>>,
    /// Entropy device.
    #[serde(default)]
    pub rng: RngConfig,
    /// Memory balloon (not supported yet).
    #[serde(default)]
    pub balloon: Option<Unsupported>,
    /// virtio-fs shares (not supported yet).
    #[serde(default)]
    pub fs: Option<Vec<Unsupported>>,
    /// Generic vhost-user devices (not supported yet).
    #[serde(default)]
    pub generic_vhost_user: Option<Vec<Unsupported>>,
    /// Persistent memory devices (not supported yet).
    #[serde(default)]
    pub pmem: Option<Vec<Unsupported>>,
    /// The legacy serial port (COM1).
    #[serde(default = "default_serial")]
    pub serial: ConsoleConfig,
    /// The virtio-console.
    #[serde(default = "default_console")]
    pub console: ConsoleConfig,
    /// The debug console.
    #[serde(default)]
    pub debug_console: DebugConsoleConfig,
    /// VFIO devices (not supported yet).
    #[serde(default)]
    pub devices: Option<Vec<Unsupported>>,
    /// vfio-user devices (not supported yet).
    #[serde(default)]
    pub user_devices: Option<Vec<Unsupported>>,
    /// vDPA devices (not supported yet).
    #[serde(default)]
    pub vdpa: Option<Vec<Unsupported>>,
    /// vsock device (not supported yet).
    #[serde(default)]
    pub vsock: Option<Unsupported>,
    /// pvpanic device.
    #[serde(default)]
    pub pvpanic: bool,
    /// Virtual IOMMU.
    #[serde(default)]
    pub iommu: bool,
    /// Guest NUMA nodes (not supported yet).
    #[serde(default)]
    pub numa: Option<Vec<Unsupported>>,
    /// virtio-watchdog.
    #[serde(default)]
    pub watchdog: bool,
    /// PCI segments (not supported yet).
    #[serde(default)]
    pub pci_segments: Option<Vec<Unsupported>>,
    /// Platform options (not supported yet).
    #[serde(default)]
    pub platform: Option<Unsupported>,
    /// TPM (not supported yet).
    #[serde(default)]
    pub tpm: Option<Unsupported>,
    /// Landlock sandboxing of the VMM.
    #[serde(default)]
    pub landlock_enable: bool,
    /// Extra Landlock rules (not supported yet).
    #[serde(default)]
    pub landlock_rules: Option<Vec<Unsupported>>,
    /// Record/replay (this project's extension, `--fault-tolerance`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fault_tolerance: Option<super::FaultToleranceConfig>,
}

impl VmConfig {
    /// The configuration upstream builds for `--kernel PATH` alone
    /// (except the console, see [`default_console`]).
    pub fn with_kernel(kernel: PathBuf) -> Self {
        VmConfig {
            payload: Some(PayloadConfig {
                kernel: Some(kernel),
                ..PayloadConfig::default()
            }),
            ..VmConfig::default()
        }
    }
}

impl Default for VmConfig {
    fn default() -> Self {
        VmConfig {
            cpus: CpusConfig::default(),
            memory: MemoryConfig::default(),
            payload: None,
            rate_limit_groups: None,
            disks: None,
            net: None,
            rng: RngConfig::default(),
            balloon: None,
            fs: None,
            generic_vhost_user: None,
            pmem: None,
            serial: default_serial(),
            console: default_console(),
            debug_console: DebugConsoleConfig::default(),
            devices: None,
            user_devices: None,
            vdpa: None,
            vsock: None,
            pvpanic: false,
            iommu: false,
            numa: None,
            watchdog: false,
            pci_segments: None,
            platform: None,
            tpm: None,
            landlock_enable: false,
            landlock_rules: None,
            fault_tolerance: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minimal_json_gets_upstream_defaults() {
        let config: VmConfig =
            serde_json::from_str(r#"{"payload":{"kernel":"/k"}}"#).expect("valid config");
        assert_eq!(config, VmConfig::with_kernel(PathBuf::from("/k")));
        assert_eq!(config.cpus.boot_vcpus, 1);
        assert_eq!(config.cpus.max_vcpus, 1);
        assert_eq!(config.cpus.max_phys_bits, 46);
        assert_eq!(config.memory.size, 512 << 20);
        assert!(config.memory.thp);
        assert_eq!(config.rng.src, PathBuf::from("/dev/urandom"));
        assert_eq!(config.serial.mode, ConsoleOutputMode::Null);
        assert_eq!(config.console.mode, ConsoleOutputMode::Off);
        assert_eq!(config.debug_console.iobase, Some(0xe9));
    }

    #[test]
    fn notes_example_parses() {
        let text = r#"{"payload":{"kernel":"/path/guest.elf","cmdline":"console=ttyS0"},
            "memory":{"size":134217728},"cpus":{"boot_vcpus":1,"max_vcpus":1},
            "serial":{"mode":"File","file":"/path/serial.log"},"console":{"mode":"Off"}}"#;
        let config: VmConfig = serde_json::from_str(text).expect("valid config");
        assert_eq!(config.memory.size, 128 << 20);
        assert_eq!(config.serial.mode, ConsoleOutputMode::File);
        assert_eq!(config.serial.file, Some(PathBuf::from("/path/serial.log")));
        let payload = config.payload.expect("payload");
        assert_eq!(payload.cmdline.as_deref(), Some("console=ttyS0"));
    }

    #[test]
    fn serialises_in_upstream_shape() {
        let config = VmConfig::with_kernel(PathBuf::from("/k"));
        let value = serde_json::to_value(&config).expect("serialise");
        let keys: Vec<&str> = value
            .as_object()
            .expect("object")
            .keys()
            .map(String::as_str)
            .collect();
        for key in [
            "cpus", "memory", "payload", "disks", "net", "rng", "serial", "console", "devices",
            "vsock", "iommu", "watchdog", "pvpanic", "platform", "numa", "tpm",
        ] {
            assert!(keys.contains(&key), "missing {key}");
        }
        assert_eq!(value["disks"], serde_json::Value::Null);
        assert_eq!(value["rng"]["src"], "/dev/urandom");
        assert_eq!(value["serial"]["mode"], "Null");
        assert_eq!(value["memory"]["hotplug_method"], "Acpi");
        assert_eq!(value["cpus"]["features"]["amx"], false);
        assert_eq!(value["payload"]["kernel"], "/k");
        assert_eq!(value["payload"]["firmware"], serde_json::Value::Null);
        assert!(value["payload"].get("igvm").is_none());
        // Round trip.
        let back: VmConfig = serde_json::from_value(value).expect("round trip");
        assert_eq!(back, config);
    }

    #[test]
    fn unknown_keys_are_refused() {
        let err = serde_json::from_str::<VmConfig>(r#"{"payload":{"kernel":"/k"},"bogus":1}"#)
            .expect_err("unknown key");
        assert!(err.to_string().contains("unknown field `bogus`"), "{err}");
        let err = serde_json::from_str::<VmConfig>(r#"{"memory":{"size":1,"reserve":true}}"#)
            .expect_err("unknown key");
        assert!(err.to_string().contains("reserve"), "{err}");
    }

    #[test]
    fn required_fields_are_required() {
        assert!(serde_json::from_str::<VmConfig>(r#"{"memory":{}}"#).is_err());
        assert!(serde_json::from_str::<VmConfig>(r#"{"cpus":{"boot_vcpus":1}}"#).is_err());
        assert!(serde_json::from_str::<VmConfig>(r#"{"serial":{"file":"/x"}}"#).is_err());
        assert!(serde_json::from_str::<VmConfig>(r#"{"serial":{"mode":"Bogus"}}"#).is_err());
    }

    #[test]
    fn unsupported_devices_parse_opaquely() {
        let config: VmConfig = serde_json::from_str(
            r#"{"payload":{"kernel":"/k"},"disks":[{"path":"/d"}],"vsock":{"cid":3,"socket":"/s"}}"#,
        )
        .expect("parses");
        assert_eq!(config.disks.as_ref().map(Vec::len), Some(1));
        assert!(config.vsock.is_some());
    }
}
