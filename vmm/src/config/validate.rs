// Copyright 2026 The ft-cloud-hypervisor authors.
// SPDX-License-Identifier: Apache-2.0

//! What this VMM can run today: [`VmConfig::validate`] refuses every
//! option it does not implement yet, with the reason, instead of
//! ignoring it.

use thiserror::Error;

use super::vm_config::{
    ConsoleConfig, ConsoleOutputMode, CoreScheduling, CpuFeatures, HotplugMethod, VmConfig,
    DEFAULT_MAX_PHYS_BITS, DEFAULT_RNG_SOURCE,
};

/// Smallest guest RAM accepted: 2 MiB (a PVH kernel is loaded at 1 MiB).
pub const MIN_MEMORY_SIZE: u64 = 2 << 20;
/// Largest guest RAM accepted: 64 GiB.
pub const MAX_MEMORY_SIZE: u64 = 64 << 30;
/// Guest RAM must be a whole number of these.
pub const MEMORY_ALIGNMENT: u64 = 4 << 10;
/// Longest kernel command line accepted, in bytes, without the final NUL
/// (Linux x86's `COMMAND_LINE_SIZE` is 2048 including it).
pub const MAX_CMDLINE_LEN: usize = 2047;

/// Why a [`VmConfig`] cannot be run by this VMM.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum ValidationError {
    /// No `payload` at all.
    #[error("No payload: a kernel is required (--kernel)")]
    NoPayload,
    /// A payload without a kernel.
    #[error("No kernel in the payload (--kernel)")]
    NoKernel,
    /// An empty kernel path.
    #[error("The kernel path is empty")]
    EmptyKernelPath,
    /// The command line does not fit.
    #[error("The kernel command line is {0} bytes long; at most {MAX_CMDLINE_LEN} are supported")]
    CmdlineTooLong(usize),
    /// The command line contains a NUL byte.
    #[error("The kernel command line contains a NUL byte")]
    CmdlineNul,
    /// More than one vCPU.
    #[error(
        "{field}={value} is not supported: only 1 vCPU is supported for now \
         (record/replay needs a single vCPU)"
    )]
    TooManyVcpus {
        /// `boot` or `max`.
        field: &'static str,
        /// The value asked for.
        value: u32,
    },
    /// Zero vCPUs.
    #[error("The VM needs at least one vCPU (boot_vcpus=0)")]
    NoVcpus,
    /// max_vcpus below boot_vcpus.
    #[error("max_vcpus ({max}) is smaller than boot_vcpus ({boot})")]
    MaxBelowBoot {
        /// boot_vcpus.
        boot: u32,
        /// max_vcpus.
        max: u32,
    },
    /// Guest RAM size out of range.
    #[error(
        "Memory size {0} bytes is out of range: between {MIN_MEMORY_SIZE} (2 MiB) and \
         {MAX_MEMORY_SIZE} (64 GiB) is supported"
    )]
    MemorySizeOutOfRange(u64),
    /// Guest RAM size not a multiple of 4 KiB.
    #[error("Memory size {0} bytes is not a multiple of 4 KiB")]
    MemorySizeUnaligned(u64),
    /// Serial port mode not implemented.
    #[error("--serial {0} is not supported yet (supported: off, null, tty, file=PATH)")]
    SerialMode(&'static str),
    /// virtio-console mode not implemented.
    #[error(
        "--console {0} is not supported yet: there is no virtio-console (supported: off, null)"
    )]
    ConsoleMode(&'static str),
    /// A console option that does not go with its mode.
    #[error("{device}: {field} is set but mode is {mode}")]
    ConsoleFieldWithoutMode {
        /// `serial` or `console`.
        device: &'static str,
        /// The stray field.
        field: &'static str,
        /// The mode.
        mode: &'static str,
    },
    /// File mode without a file.
    #[error("{0}: mode File needs a file")]
    ConsoleFileMissing(&'static str),
    /// A `--disk` or `--net` that cannot be run.
    #[error(transparent)]
    Device(#[from] super::virtio::DeviceConfigError),
    /// Any other option or device that is not implemented yet.
    #[error("{0} is not supported yet")]
    Unsupported(&'static str),
    /// Bad record/replay settings.
    #[error("invalid fault_tolerance settings")]
    FaultTolerance(#[source] super::FaultToleranceError),
}

fn mode_name(mode: ConsoleOutputMode) -> &'static str {
    match mode {
        ConsoleOutputMode::Off => "off",
        ConsoleOutputMode::Pty => "pty",
        ConsoleOutputMode::Tty => "tty",
        ConsoleOutputMode::File => "file",
        ConsoleOutputMode::Socket => "socket",
        ConsoleOutputMode::Null => "null",
    }
}

fn check<T: PartialEq>(value: &T, default: &T, what: &'static str) -> Result<(), ValidationError> {
    if value == default {
        Ok(())
    } else {
        Err(ValidationError::Unsupported(what))
    }
}

fn check_list<T>(list: &Option<Vec<T>>, what: &'static str) -> Result<(), ValidationError> {
    match list {
        Some(items) if !items.is_empty() => Err(ValidationError::Unsupported(what)),
        _ => Ok(()),
    }
}

fn check_console_fields(
    device: &'static str,
    config: &ConsoleConfig,
) -> Result<(), ValidationError> {
    let mode = mode_name(config.mode);
    if config.iommu {
        return Err(ValidationError::Unsupported(if device == "serial" {
            "serial iommu=on"
        } else {
            "console iommu=on"
        }));
    }
    if config.file.is_some() && config.mode != ConsoleOutputMode::File {
        return Err(ValidationError::ConsoleFieldWithoutMode {
            device,
            field: "file",
            mode,
        });
    }
    if config.socket.is_some() && config.mode != ConsoleOutputMode::Socket {
        return Err(ValidationError::ConsoleFieldWithoutMode {
            device,
            field: "socket",
            mode,
        });
    }
    if config.mode == ConsoleOutputMode::File && config.file.is_none() {
        return Err(ValidationError::ConsoleFileMissing(device));
    }
    Ok(())
}

impl VmConfig {
    /// Checks that this VMM can run the configuration as given.
    ///
    /// Anything Cloud Hypervisor accepts but this VMM does not implement
    /// yet is refused with a reason naming the option; nothing is
    /// silently ignored. The one exception is `rng`, which upstream puts
    /// in every configuration: its default is accepted although no
    /// virtio-rng device is created yet.
    pub fn validate(&self) -> Result<(), ValidationError> {
        self.validate_payload()?;
        self.validate_cpus()?;
        self.validate_memory()?;
        self.validate_consoles()?;
        if let Some(ft) = &self.fault_tolerance {
            ft.validate(self.cpus.boot_vcpus)
                .map_err(ValidationError::FaultTolerance)?;
        }
        self.validate_devices()
    }

    fn validate_payload(&self) -> Result<(), ValidationError> {
        let payload = self.payload.as_ref().ok_or(ValidationError::NoPayload)?;
        if payload.firmware.is_some() {
            return Err(ValidationError::Unsupported("--firmware"));
        }
        if payload.igvm.is_some() {
            return Err(ValidationError::Unsupported("--igvm"));
        }
        if payload.host_data.is_some() {
            return Err(ValidationError::Unsupported("--host-data"));
        }
        let kernel = payload.kernel.as_ref().ok_or(ValidationError::NoKernel)?;
        if kernel.as_os_str().is_empty() {
            return Err(ValidationError::EmptyKernelPath);
        }
        if let Some(cmdline) = &payload.cmdline {
            if cmdline.len() > MAX_CMDLINE_LEN {
                return Err(ValidationError::CmdlineTooLong(cmdline.len()));
            }
            if cmdline.contains('\0') {
                return Err(ValidationError::CmdlineNul);
            }
        }
        if let Some(initramfs) = &payload.initramfs {
            if initramfs.as_os_str().is_empty() {
                return Err(ValidationError::Unsupported("an empty initramfs path"));
            }
        }
        Ok(())
    }

    fn validate_cpus(&self) -> Result<(), ValidationError> {
        let cpus = &self.cpus;
        if cpus.boot_vcpus == 0 {
            return Err(ValidationError::NoVcpus);
        }
        if cpus.max_vcpus < cpus.boot_vcpus {
            return Err(ValidationError::MaxBelowBoot {
                boot: cpus.boot_vcpus,
                max: cpus.max_vcpus,
            });
        }
        if cpus.boot_vcpus > 1 {
            return Err(ValidationError::TooManyVcpus {
                field: "boot",
                value: cpus.boot_vcpus,
            });
        }
        if cpus.max_vcpus > 1 {
            return Err(ValidationError::TooManyVcpus {
                field: "max",
                value: cpus.max_vcpus,
            });
        }
        check(&cpus.topology, &None, "--cpus topology")?;
        check(&cpus.kvm_hyperv, &false, "--cpus kvm_hyperv=on")?;
        check(
            &cpus.max_phys_bits,
            &DEFAULT_MAX_PHYS_BITS,
            "--cpus max_phys_bits other than 46",
        )?;
        check(&cpus.affinity, &None, "--cpus affinity")?;
        check(&cpus.features, &CpuFeatures::default(), "--cpus features")?;
        check(&cpus.nested, &true, "--cpus nested=off")?;
        check(
            &cpus.core_scheduling,
            &CoreScheduling::Vm,
            "--cpus core_scheduling other than vm",
        )
    }

    fn validate_memory(&self) -> Result<(), ValidationError> {
        let memory = &self.memory;
        if !(MIN_MEMORY_SIZE..=MAX_MEMORY_SIZE).contains(&memory.size) {
            return Err(ValidationError::MemorySizeOutOfRange(memory.size));
        }
        if memory.size & (MEMORY_ALIGNMENT - 1) != 0 {
            return Err(ValidationError::MemorySizeUnaligned(memory.size));
        }
        check(&memory.mergeable, &false, "--memory mergeable=on")?;
        check(
            &memory.hotplug_method,
            &HotplugMethod::Acpi,
            "--memory hotplug_method=virtio-mem",
        )?;
        check(&memory.hotplug_size, &None, "--memory hotplug_size")?;
        check(&memory.hotplugged_size, &None, "--memory hotplugged_size")?;
        check(&memory.shared, &false, "--memory shared=on")?;
        check(&memory.hugepages, &false, "--memory hugepages=on")?;
        check(&memory.hugepage_size, &None, "--memory hugepage_size")?;
        check(&memory.prefault, &false, "--memory prefault=on")?;
        check(&memory.thp, &true, "--memory thp=off")?;
        check_list(&memory.zones, "--memory-zone")
    }

    fn validate_consoles(&self) -> Result<(), ValidationError> {
        match self.serial.mode {
            ConsoleOutputMode::Off
            | ConsoleOutputMode::Null
            | ConsoleOutputMode::Tty
            | ConsoleOutputMode::File => {}
            mode @ (ConsoleOutputMode::Pty | ConsoleOutputMode::Socket) => {
                return Err(ValidationError::SerialMode(mode_name(mode)));
            }
        }
        check_console_fields("serial", &self.serial)?;
        match self.console.mode {
            ConsoleOutputMode::Off | ConsoleOutputMode::Null => {}
            mode => return Err(ValidationError::ConsoleMode(mode_name(mode))),
        }
        check_console_fields("console", &self.console)?;
        check(
            &self.debug_console.mode,
            &ConsoleOutputMode::Off,
            "--debug-console",
        )
    }

    fn validate_devices(&self) -> Result<(), ValidationError> {
        check_list(&self.rate_limit_groups, "--rate-limit-group")?;
        super::virtio::validate_devices(
            self.disks.as_deref().unwrap_or_default(),
            self.net.as_deref().unwrap_or_default(),
        )?;
        if self.rng.src.as_os_str() != DEFAULT_RNG_SOURCE || self.rng.iommu {
            return Err(ValidationError::Unsupported("--rng"));
        }
        check(&self.balloon, &None, "--balloon")?;
        check_list(&self.fs, "--fs")?;
        check_list(&self.generic_vhost_user, "--generic-vhost-user")?;
        check_list(&self.pmem, "--pmem")?;
        check_list(&self.devices, "--device")?;
        check_list(&self.user_devices, "--user-device")?;
        check_list(&self.vdpa, "--vdpa")?;
        check(&self.vsock, &None, "--vsock")?;
        check(&self.pvpanic, &false, "--pvpanic")?;
        check(&self.iommu, &false, "iommu")?;
        check_list(&self.numa, "--numa")?;
        check(&self.watchdog, &false, "--watchdog")?;
        check_list(&self.pci_segments, "--pci-segment")?;
        check(&self.platform, &None, "--platform")?;
        check(&self.tpm, &None, "--tpm")?;
        check(&self.landlock_enable, &false, "--landlock")?;
        check_list(&self.landlock_rules, "--landlock-rules")
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;

    fn good() -> VmConfig {
        let mut config = VmConfig::with_kernel(PathBuf::from("/k"));
        config.memory.size = 128 << 20;
        config
    }

    fn refused(text: &str) -> ValidationError {
        let mut value = serde_json::to_value(good()).expect("serialise");
        let patch: serde_json::Value = serde_json::from_str(text).expect("patch");
        merge(&mut value, patch);
        let config: VmConfig = serde_json::from_value(value).expect("deserialise");
        config.validate().expect_err(text)
    }

    fn merge(base: &mut serde_json::Value, patch: serde_json::Value) {
        match (base, patch) {
            (serde_json::Value::Object(base), serde_json::Value::Object(patch)) => {
                for (key, value) in patch {
                    merge(base.entry(key).or_insert(serde_json::Value::Null), value);
                }
            }
            (base, patch) => *base = patch,
        }
    }

    #[test]
    fn the_supported_config_passes() {
        good().validate().expect("valid");
        let mut config = good();
        config.serial = ConsoleConfig {
            file: Some(PathBuf::from("/tmp/serial")),
            ..ConsoleConfig::with_mode(ConsoleOutputMode::File)
        };
        config.console = ConsoleConfig::with_mode(ConsoleOutputMode::Null);
        if let Some(payload) = config.payload.as_mut() {
            payload.cmdline = Some("console=ttyS0".into());
            payload.initramfs = Some(PathBuf::from("/i"));
        }
        config.disks = Some(Vec::new());
        config.validate().expect("valid");
        for mode in [
            ConsoleOutputMode::Off,
            ConsoleOutputMode::Null,
            ConsoleOutputMode::Tty,
        ] {
            config.serial = ConsoleConfig::with_mode(mode);
            config.validate().expect("valid serial mode");
        }
    }

    #[test]
    fn payload_problems() {
        let mut config = good();
        config.payload = None;
        assert_eq!(config.validate(), Err(ValidationError::NoPayload));
        assert_eq!(
            refused(r#"{"payload":{"kernel":null}}"#),
            ValidationError::NoKernel
        );
        assert_eq!(
            refused(r#"{"payload":{"kernel":""}}"#),
            ValidationError::EmptyKernelPath
        );
        assert_eq!(
            refused(r#"{"payload":{"firmware":"/fw"}}"#),
            ValidationError::Unsupported("--firmware")
        );
        let long = "x".repeat(MAX_CMDLINE_LEN + 1);
        assert_eq!(
            refused(&format!(r#"{{"payload":{{"cmdline":"{long}"}}}}"#)),
            ValidationError::CmdlineTooLong(MAX_CMDLINE_LEN + 1)
        );
        assert_eq!(
            refused(r#"{"payload":{"cmdline":"a\u0000b"}}"#),
            ValidationError::CmdlineNul
        );
    }

    #[test]
    fn vcpus() {
        let err = refused(r#"{"cpus":{"boot_vcpus":2,"max_vcpus":2}}"#);
        assert!(err.to_string().contains("only 1 vCPU"), "{err}");
        assert_eq!(
            refused(r#"{"cpus":{"boot_vcpus":1,"max_vcpus":4}}"#),
            ValidationError::TooManyVcpus {
                field: "max",
                value: 4
            }
        );
        assert_eq!(
            refused(r#"{"cpus":{"boot_vcpus":0,"max_vcpus":1}}"#),
            ValidationError::NoVcpus
        );
        assert_eq!(
            refused(r#"{"cpus":{"boot_vcpus":2,"max_vcpus":1}}"#),
            ValidationError::MaxBelowBoot { boot: 2, max: 1 }
        );
        assert_eq!(
            refused(r#"{"cpus":{"kvm_hyperv":true}}"#),
            ValidationError::Unsupported("--cpus kvm_hyperv=on")
        );
        assert_eq!(
            refused(r#"{"cpus":{"features":{"amx":true}}}"#),
            ValidationError::Unsupported("--cpus features")
        );
    }

    #[test]
    fn memory() {
        assert_eq!(
            refused(r#"{"memory":{"size":1048576}}"#),
            ValidationError::MemorySizeOutOfRange(1 << 20)
        );
        assert_eq!(
            refused(r#"{"memory":{"size":137438953472}}"#),
            ValidationError::MemorySizeOutOfRange(128 << 30)
        );
        assert_eq!(
            refused(r#"{"memory":{"size":134217729}}"#),
            ValidationError::MemorySizeUnaligned((128 << 20) + 1)
        );
        for (patch, what) in [
            (r#"{"memory":{"shared":true}}"#, "--memory shared=on"),
            (r#"{"memory":{"hugepages":true}}"#, "--memory hugepages=on"),
            (
                r#"{"memory":{"hotplug_size":1073741824}}"#,
                "--memory hotplug_size",
            ),
            (
                r#"{"memory":{"hotplug_method":"VirtioMem"}}"#,
                "--memory hotplug_method=virtio-mem",
            ),
            (r#"{"memory":{"mergeable":true}}"#, "--memory mergeable=on"),
            (r#"{"memory":{"prefault":true}}"#, "--memory prefault=on"),
            (r#"{"memory":{"thp":false}}"#, "--memory thp=off"),
            (r#"{"memory":{"zones":[{"id":"a"}]}}"#, "--memory-zone"),
        ] {
            assert_eq!(
                refused(patch),
                ValidationError::Unsupported(what),
                "{patch}"
            );
        }
    }

    #[test]
    fn consoles() {
        assert_eq!(
            refused(r#"{"serial":{"mode":"Pty"}}"#),
            ValidationError::SerialMode("pty")
        );
        assert_eq!(
            refused(r#"{"serial":{"mode":"Socket","socket":"/s"}}"#),
            ValidationError::SerialMode("socket")
        );
        assert_eq!(
            refused(r#"{"serial":{"mode":"File"}}"#),
            ValidationError::ConsoleFileMissing("serial")
        );
        assert_eq!(
            refused(r#"{"serial":{"mode":"Tty","file":"/f"}}"#),
            ValidationError::ConsoleFieldWithoutMode {
                device: "serial",
                field: "file",
                mode: "tty"
            }
        );
        let err = refused(r#"{"console":{"mode":"Tty"}}"#);
        assert_eq!(err, ValidationError::ConsoleMode("tty"));
        assert!(err.to_string().contains("virtio-console"));
        assert_eq!(
            refused(r#"{"console":{"mode":"File","file":"/f"}}"#),
            ValidationError::ConsoleMode("file")
        );
        assert_eq!(
            refused(r#"{"debug_console":{"mode":"Tty"}}"#),
            ValidationError::Unsupported("--debug-console")
        );
    }

    #[test]
    fn devices_are_named() {
        for (patch, what) in [
            (r#"{"fs":[{"tag":"t","socket":"/s"}]}"#, "--fs"),
            (r#"{"pmem":[{"file":"/f"}]}"#, "--pmem"),
            (r#"{"devices":[{"path":"/p"}]}"#, "--device"),
            (r#"{"vsock":{"cid":3,"socket":"/s"}}"#, "--vsock"),
            (r#"{"balloon":{"size":0}}"#, "--balloon"),
            (r#"{"rng":{"src":"/dev/random"}}"#, "--rng"),
            (r#"{"watchdog":true}"#, "--watchdog"),
            (r#"{"pvpanic":true}"#, "--pvpanic"),
            (r#"{"iommu":true}"#, "iommu"),
            (r#"{"platform":{"num_pci_segments":1}}"#, "--platform"),
            (r#"{"tpm":{"socket":"/s"}}"#, "--tpm"),
            (r#"{"numa":[{"guest_numa_id":0}]}"#, "--numa"),
            (r#"{"landlock_enable":true}"#, "--landlock"),
            (r#"{"user_devices":[{"socket":"/s"}]}"#, "--user-device"),
            (r#"{"vdpa":[{"path":"/p"}]}"#, "--vdpa"),
        ] {
            let err = refused(patch);
            assert_eq!(err, ValidationError::Unsupported(what), "{patch}");
            assert!(err.to_string().ends_with("is not supported yet"));
        }
    }

    #[test]
    fn disks_and_nets_are_checked() {
        let mut config = good();
        let patch = r#"{"disks":[{"path":"/d","readonly":true}],"net":[{"tap":"t0"}]}"#;
        let mut value = serde_json::to_value(&config).expect("serialise");
        merge(&mut value, serde_json::from_str(patch).expect("patch"));
        config = serde_json::from_value(value).expect("deserialise");
        config.validate().expect("supported devices");
        // direct is accepted, and kept as given.
        let mut value = serde_json::to_value(good()).expect("serialise");
        merge(
            &mut value,
            serde_json::from_str(r#"{"disks":[{"path":"/d","direct":true}]}"#).expect("patch"),
        );
        let direct: VmConfig = serde_json::from_value(value).expect("deserialise");
        direct.validate().expect("direct=on is supported");
        assert!(direct.disks.as_deref().expect("disks")[0].direct);
        assert!(
            serde_json::from_str::<crate::config::DiskConfig>(r#"{"path":"/d","direct":"yes"}"#)
                .is_err(),
            "direct is a boolean"
        );
        let err = refused(r#"{"net":[{"tap":"t","mtu":9000}]}"#);
        assert_eq!(err.to_string(), "--net mtu is not supported yet");
        let err = refused(r#"{"disks":[{"readonly":true}]}"#);
        assert!(err.to_string().contains("path"), "{err}");
    }
}
