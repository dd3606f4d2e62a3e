// Copyright 2026 The ft-cloud-hypervisor authors.
// SPDX-License-Identifier: Apache-2.0

//! The `cloud-hypervisor` command line, in Cloud Hypervisor's syntax.
//!
//! Every flag upstream has is recognised. The ones this VMM implements
//! build a [`VmConfig`] (checked by [`VmConfig::validate`]); the others
//! are refused by name ("--disk is not supported yet"); anything
//! upstream does not have is an unknown argument. Both `--flag value`
//! and `--flag=value` are accepted.
//!
//! One deliberate difference: upstream's default virtio-console is `tty`;
//! this VMM has no virtio-console, so the default is `off`, and an
//! explicit `--console tty|pty|file=...` is refused.

use std::path::PathBuf;

use thiserror::Error;

use super::option_parser::{OptionParser, OptionParserError};
use super::validate::ValidationError;
use super::virtio::{parse_disk, parse_net, DeviceConfigError};
use super::vm_config::{
    ConsoleConfig, ConsoleOutputMode, CoreScheduling, CpuTopology, CpusConfig, HotplugMethod,
    MemoryConfig, PayloadConfig, VmConfig, DEFAULT_MEMORY_MB,
};

/// What the command line asks for.
// Built once per process: the size of `Run` does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, PartialEq)]
pub enum CliCommand {
    /// Run the VMM.
    Run(VmmArgs),
    /// Print this help text to stdout and exit 0.
    Help(String),
    /// Print this version text to stdout and exit 0.
    Version(String),
}

/// The VMM's settings from the command line.
#[derive(Debug, PartialEq)]
pub struct VmmArgs {
    /// The VM to create and boot at start (`--kernel` given), validated.
    /// `None`: wait for `vm.create` on the API socket.
    pub vm_config: Option<VmConfig>,
    /// `--api-socket`: where to serve the REST API.
    pub api_socket: Option<PathBuf>,
    /// `--event-monitor path=`: where to write lifecycle events.
    pub event_monitor: Option<PathBuf>,
    /// Number of `-v`: 0 warn, 1 info, 2 debug, 3 or more trace.
    pub verbosity: u8,
    /// `--log-file`: log here instead of standard error.
    pub log_file: Option<PathBuf>,
    /// `--restore`: the snapshot to restore at start.
    pub restore: Option<crate::api::RestoreConfig>,
}

/// A command line that cannot be run.
#[derive(Debug, Error)]
pub enum CliError {
    /// Neither a flag of Cloud Hypervisor nor a value.
    #[error("unknown argument '{0}' (see --help)")]
    UnknownArgument(String),
    /// A flag given without its value.
    #[error("{0} needs a value")]
    MissingValue(&'static str),
    /// A value given to a flag that takes none.
    #[error("{0} takes no value")]
    UnexpectedValue(&'static str),
    /// A flag given twice.
    #[error("{0} was given more than once")]
    Duplicate(&'static str),
    /// A Cloud Hypervisor flag or option value this VMM does not implement.
    #[error("{0} is not supported yet")]
    Unsupported(String),
    /// A VM option without a payload.
    #[error("{0} requires --kernel")]
    NeedsKernel(&'static str),
    /// No VM and no API socket.
    #[error("nothing to run: give --kernel to boot a VM, or --api-socket to wait for vm.create (see --help)")]
    NothingToDo,
    /// `--event-monitor` without `path=` or `fd=`.
    #[error("Error parsing --event-monitor: path or fd required")]
    BareEventMonitor,
    /// A malformed option list.
    #[error("Error parsing {0}")]
    Parse(&'static str, #[source] OptionParserError),
    /// A bad `--fault-tolerance` value.
    #[error("Invalid --fault-tolerance option")]
    FaultTolerance(#[source] super::FaultToleranceError),
    /// A `--disk` or `--net` that cannot be parsed or run.
    #[error(transparent)]
    Device(#[from] DeviceConfigError),
    /// A VM configuration this VMM cannot run.
    #[error("Invalid VM configuration")]
    Validation(#[source] ValidationError),
    /// `--restore` with VM options: the snapshot has its own configuration.
    #[error("--restore cannot be used with {0}: the VM's configuration comes from the snapshot")]
    RestoreConflict(&'static str),
    /// `--restore` without `source_url=`.
    #[error("Error parsing --restore: source_url required")]
    RestoreNoSource,
}

/// Flags that take a value and that this VMM implements.
const VALUE_FLAGS: &[&str] = &[
    "--api-socket",
    "--cmdline",
    "--console",
    "--cpus",
    "--event-monitor",
    "--fault-tolerance",
    "--initramfs",
    "--kernel",
    "--log-file",
    "--memory",
    "--restore",
    "--seccomp",
    "--serial",
];

/// Cloud Hypervisor's switches (flags without a value) that this VMM
/// does not implement yet.
const UNSUPPORTED_SWITCHES: &[&str] = &[
    "--dbus-system-bus",
    "--landlock",
    "--no-shutdown",
    "--pvmemcontrol",
    "--pvpanic",
    "--watchdog",
];

/// Cloud Hypervisor's flags with values that this VMM does not implement
/// yet. Some take several values (`--disk A B`), as upstream.
const UNSUPPORTED_FLAGS: &[&str] = &[
    "--balloon",
    "--dbus-object-path",
    "--dbus-service-name",
    "--debug-console",
    "--device",
    "--firmware",
    "--fs",
    "--fw-cfg-config",
    "--gdb",
    "--generic-vhost-user",
    "--host-data",
    "--igvm",
    "--ivshmem",
    "--landlock-rules",
    "--memory-zone",
    "--numa",
    "--pci-segment",
    "--platform",
    "--pmem",
    "--rate-limit-group",
    "--rng",
    "--sgx-epc",
    "--tpm",
    "--user-device",
    "--vdpa",
    "--vsock",
];

/// Flags that take one or more values and may be repeated (`--disk A B
/// --disk C`), as upstream.
const MULTI_FLAGS: &[&str] = &["--disk", "--net"];

/// The flags that describe the VM and so need `--kernel`.
const VM_FLAGS: &[&str] = &[
    "--cmdline",
    "--console",
    "--cpus",
    "--disk",
    "--fault-tolerance",
    "--initramfs",
    "--memory",
    "--net",
    "--serial",
];

/// The flags as scanned, before any is interpreted.
#[derive(Debug, Default)]
struct RawArgs {
    values: Vec<(&'static str, String)>,
    multi: Vec<(&'static str, String)>,
    unsupported: Option<String>,
    verbosity: u8,
    help: bool,
    version: bool,
}

impl RawArgs {
    fn get(&self, flag: &str) -> Option<&str> {
        self.values
            .iter()
            .chain(&self.multi)
            .find(|(name, _)| *name == flag)
            .map(|(_, value)| value.as_str())
    }

    fn all<'a>(&'a self, flag: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.multi
            .iter()
            .filter(move |(name, _)| *name == flag)
            .map(|(_, value)| value.as_str())
    }
}

fn scan<I: IntoIterator<Item = String>>(args: I) -> Result<RawArgs, CliError> {
    let mut raw = RawArgs::default();
    let mut args = args.into_iter().peekable();
    while let Some(arg) = args.next() {
        if arg == "-h" || arg == "--help" {
            raw.help = true;
            // As clap: help wins over whatever follows.
            return Ok(raw);
        }
        if arg == "-V" || arg == "--version" {
            raw.version = true;
            continue;
        }
        if arg.len() > 1 && arg.starts_with('-') && !arg.starts_with("--") {
            if arg[1..].bytes().all(|b| b == b'v') {
                let count = u8::try_from(arg.len() - 1).unwrap_or(u8::MAX);
                raw.verbosity = raw.verbosity.saturating_add(count);
                continue;
            }
            return Err(CliError::UnknownArgument(arg));
        }
        if !arg.starts_with("--") || arg == "--" {
            return Err(CliError::UnknownArgument(arg));
        }
        let (name, inline) = match arg.split_once('=') {
            Some((name, value)) => (name, Some(value.to_string())),
            None => (arg.as_str(), None),
        };
        if matches!(name, "--help" | "--version") {
            return Err(CliError::UnexpectedValue(if name == "--help" {
                "--help"
            } else {
                "--version"
            }));
        }
        // Unsupported flags are remembered (the first one) and refused
        // after --version had its chance, as upstream would print it.
        if let Some(flag) = UNSUPPORTED_SWITCHES.iter().find(|flag| **flag == name) {
            if inline.is_some() {
                return Err(CliError::UnexpectedValue(flag));
            }
            raw.unsupported.get_or_insert_with(|| (*flag).to_string());
            continue;
        }
        if let Some(flag) = UNSUPPORTED_FLAGS.iter().find(|flag| **flag == name) {
            raw.unsupported.get_or_insert_with(|| (*flag).to_string());
            if inline.is_none() {
                // Skip its values: everything up to the next flag.
                while args.peek().is_some_and(|next| !next.starts_with('-')) {
                    args.next();
                }
            }
            continue;
        }
        if let Some(flag) = MULTI_FLAGS.iter().copied().find(|flag| *flag == name) {
            match inline {
                Some(value) => raw.multi.push((flag, value)),
                None => {
                    let before = raw.multi.len();
                    while let Some(value) = args.next_if(|next| !next.starts_with('-')) {
                        raw.multi.push((flag, value));
                    }
                    if raw.multi.len() == before {
                        return Err(CliError::MissingValue(flag));
                    }
                }
            }
            continue;
        }
        let Some(flag) = VALUE_FLAGS.iter().copied().find(|flag| *flag == name) else {
            return Err(CliError::UnknownArgument(arg));
        };
        let value = match inline {
            Some(value) => value,
            None => match args.next() {
                Some(value) if !value.starts_with("--") => value,
                _ => return Err(CliError::MissingValue(flag)),
            },
        };
        if raw.get(flag).is_some() {
            return Err(CliError::Duplicate(flag));
        }
        raw.values.push((flag, value));
    }
    Ok(raw)
}

/// Parses the `cloud-hypervisor` arguments (without `argv[0]`).
pub fn parse_args<I: IntoIterator<Item = String>>(args: I) -> Result<CliCommand, CliError> {
    let raw = scan(args)?;
    if raw.help {
        return Ok(CliCommand::Help(help_text()));
    }
    if raw.version {
        let mut text = format!("cloud-hypervisor v{}", env!("CARGO_PKG_VERSION"));
        if raw.verbosity > 0 {
            text.push_str("\nEnabled features: [\"kvm\"]");
        }
        return Ok(CliCommand::Version(text));
    }
    if let Some(flag) = raw.unsupported {
        return Err(CliError::Unsupported(flag));
    }
    if let Some(seccomp) = raw.get("--seccomp") {
        match seccomp {
            // No filter is what this VMM does anyway.
            "false" => {}
            "true" | "log" => {
                return Err(CliError::Unsupported(format!("--seccomp {seccomp}")));
            }
            _ => {
                return Err(CliError::Parse(
                    "--seccomp",
                    OptionParserError::InvalidValue {
                        key: "seccomp".into(),
                        value: seccomp.into(),
                        reason: "expected true, false or log".into(),
                    },
                ));
            }
        }
    }

    let api_socket = raw.get("--api-socket").map(parse_api_socket).transpose()?;
    let event_monitor = raw
        .get("--event-monitor")
        .map(parse_event_monitor)
        .transpose()?;

    let restore = raw.get("--restore").map(parse_restore).transpose()?;
    if restore.is_some() {
        if let Some(flag) = ["--kernel"]
            .iter()
            .chain(VM_FLAGS)
            .find(|flag| raw.get(flag).is_some())
        {
            return Err(CliError::RestoreConflict(flag));
        }
    }
    let vm_config = match raw.get("--kernel") {
        Some(kernel) => {
            let config = build_vm_config(&raw, kernel)?;
            config.validate().map_err(CliError::Validation)?;
            Some(config)
        }
        None => {
            if let Some(flag) = VM_FLAGS.iter().find(|flag| raw.get(flag).is_some()) {
                return Err(CliError::NeedsKernel(flag));
            }
            None
        }
    };
    if vm_config.is_none() && api_socket.is_none() && restore.is_none() {
        return Err(CliError::NothingToDo);
    }
    Ok(CliCommand::Run(VmmArgs {
        vm_config,
        api_socket,
        event_monitor,
        verbosity: raw.verbosity,
        log_file: raw.get("--log-file").map(PathBuf::from),
        restore,
    }))
}

/// `--restore source_url=file:///DIR[,prefault=on|off][,resume=true|false]`.
pub fn parse_restore(value: &str) -> Result<crate::api::RestoreConfig, CliError> {
    let parser = OptionParser::parse(value, &["source_url", "prefault", "resume"])
        .map_err(|e| CliError::Parse("--restore", e))?;
    let source_url = match parser.get("source_url") {
        Some(url) if !url.is_empty() => url.to_string(),
        _ => return Err(CliError::RestoreNoSource),
    };
    let toggle = |key: &str| {
        parser
            .get(key)
            .map(|v| super::option_parser::parse_toggle(key, v))
            .transpose()
            .map(Option::unwrap_or_default)
            .map_err(|e| CliError::Parse("--restore", e))
    };
    Ok(crate::api::RestoreConfig {
        source_url,
        prefault: toggle("prefault")?,
        resume: toggle("resume")?,
    })
}

fn parse_api_socket(value: &str) -> Result<PathBuf, CliError> {
    // As upstream: `path=` or `fd=` if it parses as an option list,
    // otherwise the whole value is the path.
    let path = match OptionParser::parse(value, &["path", "fd"]) {
        Ok(parser) if parser.is_set("fd") => {
            return Err(CliError::Unsupported("--api-socket fd=".into()));
        }
        Ok(parser) if parser.is_set("path") => parser.get("path").unwrap_or_default().to_string(),
        _ => value.to_string(),
    };
    if path.is_empty() {
        return Err(CliError::MissingValue("--api-socket"));
    }
    Ok(PathBuf::from(path))
}

fn parse_event_monitor(value: &str) -> Result<PathBuf, CliError> {
    let parser = OptionParser::parse(value, &["path", "fd"])
        .map_err(|e| CliError::Parse("--event-monitor", e))?;
    if parser.is_set("fd") {
        return Err(CliError::Unsupported("--event-monitor fd=".into()));
    }
    match parser.get("path") {
        Some(path) if !path.is_empty() => Ok(PathBuf::from(path)),
        _ => Err(CliError::BareEventMonitor),
    }
}

fn build_vm_config(raw: &RawArgs, kernel: &str) -> Result<VmConfig, CliError> {
    let mut config = VmConfig::with_kernel(PathBuf::from(kernel));
    config.payload = Some(PayloadConfig {
        kernel: Some(PathBuf::from(kernel)),
        cmdline: raw.get("--cmdline").map(str::to_string),
        initramfs: raw.get("--initramfs").map(PathBuf::from),
        ..PayloadConfig::default()
    });
    if let Some(cpus) = raw.get("--cpus") {
        config.cpus = parse_cpus(cpus)?;
    }
    if let Some(memory) = raw.get("--memory") {
        config.memory = parse_memory(memory)?;
    }
    if let Some(serial) = raw.get("--serial") {
        config.serial = parse_console("--serial", serial)?;
    }
    if let Some(console) = raw.get("--console") {
        config.console = parse_console("--console", console)?;
    }
    let disks = raw
        .all("--disk")
        .map(parse_disk)
        .collect::<Result<Vec<_>, _>>()?;
    if !disks.is_empty() {
        config.disks = Some(disks);
    }
    let nets = raw
        .all("--net")
        .map(parse_net)
        .collect::<Result<Vec<_>, _>>()?;
    if !nets.is_empty() {
        config.net = Some(nets);
    }
    if let Some(ft) = raw.get("--fault-tolerance") {
        config.fault_tolerance =
            Some(super::FaultToleranceConfig::parse(ft).map_err(CliError::FaultTolerance)?);
    }
    Ok(config)
}

fn parse_cpus(value: &str) -> Result<CpusConfig, CliError> {
    const FLAG: &str = "--cpus";
    let err = |e| CliError::Parse(FLAG, e);
    let parser = OptionParser::parse(
        value,
        &[
            "boot",
            "max",
            "topology",
            "kvm_hyperv",
            "max_phys_bits",
            "affinity",
            "features",
            "nested",
            "core_scheduling",
        ],
    )
    .map_err(err)?;
    for key in ["affinity", "features"] {
        if parser.is_set(key) {
            return Err(CliError::Unsupported(format!("--cpus {key}")));
        }
    }
    let mut cpus = CpusConfig::default();
    if let Some(boot) = parser.number("boot").map_err(err)? {
        cpus.boot_vcpus = boot;
    }
    cpus.max_vcpus = parser
        .number("max")
        .map_err(err)?
        .unwrap_or(cpus.boot_vcpus);
    if let Some(topology) = parser.get("topology") {
        cpus.topology = Some(parse_topology(topology).map_err(err)?);
    }
    if let Some(hyperv) = parser.toggle("kvm_hyperv").map_err(err)? {
        cpus.kvm_hyperv = hyperv;
    }
    if let Some(bits) = parser.number("max_phys_bits").map_err(err)? {
        cpus.max_phys_bits = bits;
    }
    if let Some(nested) = parser.toggle("nested").map_err(err)? {
        cpus.nested = nested;
    }
    if let Some(mode) = parser.get("core_scheduling") {
        cpus.core_scheduling = match mode {
            "vm" => CoreScheduling::Vm,
            "vcpu" => CoreScheduling::Vcpu,
            "off" => CoreScheduling::Off,
            _ => {
                return Err(err(OptionParserError::InvalidValue {
                    key: "core_scheduling".into(),
                    value: mode.into(),
                    reason: "expected vm, vcpu or off".into(),
                }))
            }
        };
    }
    Ok(cpus)
}

fn parse_topology(value: &str) -> Result<CpuTopology, OptionParserError> {
    let invalid = || OptionParserError::InvalidValue {
        key: "topology".into(),
        value: value.into(),
        reason: "expected <threads_per_core>:<cores_per_die>:<dies_per_package>:<packages>".into(),
    };
    let parts = value
        .split(':')
        .map(|part| part.parse::<u16>().map_err(|_| invalid()))
        .collect::<Result<Vec<_>, _>>()?;
    match parts[..] {
        [threads_per_core, cores_per_die, dies_per_package, packages] => Ok(CpuTopology {
            threads_per_core,
            cores_per_die,
            dies_per_package,
            packages,
        }),
        _ => Err(invalid()),
    }
}

fn parse_memory(value: &str) -> Result<MemoryConfig, CliError> {
    const FLAG: &str = "--memory";
    let err = |e| CliError::Parse(FLAG, e);
    let parser = OptionParser::parse(
        value,
        &[
            "size",
            "mergeable",
            "shared",
            "hugepages",
            "hugepage_size",
            "hotplug_method",
            "hotplug_size",
            "hotplugged_size",
            "prefault",
            "thp",
        ],
    )
    .map_err(err)?;
    let mut memory = MemoryConfig {
        size: parser
            .byte_size("size")
            .map_err(err)?
            .unwrap_or(DEFAULT_MEMORY_MB << 20),
        ..MemoryConfig::default()
    };
    memory.mergeable = parser.toggle("mergeable").map_err(err)?.unwrap_or(false);
    memory.shared = parser.toggle("shared").map_err(err)?.unwrap_or(false);
    memory.hugepages = parser.toggle("hugepages").map_err(err)?.unwrap_or(false);
    memory.hugepage_size = parser.byte_size("hugepage_size").map_err(err)?;
    memory.hotplug_size = parser.byte_size("hotplug_size").map_err(err)?;
    memory.hotplugged_size = parser.byte_size("hotplugged_size").map_err(err)?;
    memory.prefault = parser.toggle("prefault").map_err(err)?.unwrap_or(false);
    memory.thp = parser.toggle("thp").map_err(err)?.unwrap_or(true);
    if let Some(method) = parser.get("hotplug_method") {
        memory.hotplug_method = match method.to_ascii_lowercase().as_str() {
            "acpi" => HotplugMethod::Acpi,
            "virtio-mem" => HotplugMethod::VirtioMem,
            _ => {
                return Err(err(OptionParserError::InvalidValue {
                    key: "hotplug_method".into(),
                    value: method.into(),
                    reason: "expected acpi or virtio-mem".into(),
                }))
            }
        };
    }
    Ok(memory)
}

fn parse_console(flag: &'static str, value: &str) -> Result<ConsoleConfig, CliError> {
    let err = |e| CliError::Parse(flag, e);
    let parser = OptionParser::parse(
        value,
        &["off", "null", "pty", "tty", "file", "socket", "iommu"],
    )
    .map_err(err)?;
    let mut modes = Vec::new();
    for (key, mode) in [
        ("off", ConsoleOutputMode::Off),
        ("null", ConsoleOutputMode::Null),
        ("pty", ConsoleOutputMode::Pty),
        ("tty", ConsoleOutputMode::Tty),
        ("file", ConsoleOutputMode::File),
        ("socket", ConsoleOutputMode::Socket),
    ] {
        if parser.is_set(key) {
            modes.push(mode);
        }
    }
    let [mode] = modes[..] else {
        return Err(err(OptionParserError::InvalidSyntax(format!(
            "{value:?}: expected exactly one of off|null|pty|tty|file=<path>|socket=<path>"
        ))));
    };
    let path = |key: &str| -> Result<Option<PathBuf>, CliError> {
        if !parser.is_set(key) {
            return Ok(None);
        }
        match parser.get(key) {
            Some(path) if !path.is_empty() => Ok(Some(PathBuf::from(path))),
            _ => Err(err(OptionParserError::InvalidValue {
                key: key.into(),
                value: String::new(),
                reason: "a path is required".into(),
            })),
        }
    };
    Ok(ConsoleConfig {
        file: path("file")?,
        mode,
        iommu: parser.toggle("iommu").map_err(err)?.unwrap_or(false),
        socket: path("socket")?,
    })
}

/// The `--help` text.
pub fn help_text() -> String {
    let mut text = String::from(
        "Launch a cloud-hypervisor VMM.\n\
         \n\
         Usage: cloud-hypervisor [OPTIONS]\n\
         \n\
         Options:\n\
         \x20     --api-socket <api-socket>  HTTP API socket (UNIX domain socket): path=</path/to/a/file> or a bare path\n\
         \x20     --cmdline <cmdline>        Kernel command line\n\
         \x20     --console <console>        Control (virtio) console: \"off|null\" [default: off]\n\
         \x20     --disk <disk>              Raw disk image(s): path=<file>[,readonly=on|off][,id=<name>][,serial=<id>]\n\
         \x20     --net <net>                Network device(s) on a tap: tap=<name>[,mac=<mac>][,ip=<ip>,mask=<mask>][,id=<name>]\n\
         \x20     --cpus <cpus>              boot=1,max=1 (only one vCPU is supported for now) [default: boot=1]\n\
         \x20     --event-monitor <monitor>  File to report events on: path=</path/to/a/file>\n\
         \x20     --initramfs <initramfs>    Path to initramfs image\n\
         \x20     --kernel <kernel>          Path to kernel to load: a PVH ELF (e.g. vmlinux) or a bzImage\n\
         \x20     --log-file <log-file>      Log file. Standard error is used if not specified\n\
         \x20     --memory <memory>          Memory parameters \"size=<guest_memory_size>\" (K/M/G suffixes) [default: size=512M]\n\
         \x20     --restore <restore>        Restore from a VM snapshot: source_url=file:///<dir>[,prefault=on|off][,resume=true|false]\n\
         \x20     --seccomp <seccomp>        Only \"false\" is supported: no seccomp filtering yet\n\
         \x20     --serial <serial>          Control serial port: off|null|tty|file=</path/to/a/file> [default: null]\n\
         \x20     --fault-tolerance <ft>     Record, replay or protect the VM (this project's extension): mode=record|replay,log=<file>[,max_delay_us=<n>]; mode=primary,peer=tcp:<host>:<port>,key=<file>,tiebreaker=file:<path>|etcd:<url>[,disks=shared|separate][,heartbeat_ms=<n>][,timeout_ms=<n>][,max_lag_ms=<n>][,max_delay_us=<n>]; mode=backup,listen=tcp:<addr>:<port>,key=<file>,tiebreaker=<t>[,log=<file>][,disks=...][,spares=tcp:<h>:<p>;...]\n\
         \x20 -v...                          Sets the level of debugging output\n\
         \x20 -h, --help                     Print help\n\
         \x20 -V, --version                  Print version\n\
         \n\
         Cloud Hypervisor options that are not supported yet:\n ",
    );
    let mut unsupported: Vec<&str> = UNSUPPORTED_FLAGS
        .iter()
        .chain(UNSUPPORTED_SWITCHES)
        .copied()
        .collect();
    unsupported.sort_unstable();
    for flag in unsupported {
        text.push(' ');
        text.push_str(flag);
    }
    text.push('\n');
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<CliCommand, CliError> {
        parse_args(args.iter().map(|s| s.to_string()))
    }

    fn run(args: &[&str]) -> VmmArgs {
        match parse(args) {
            Ok(CliCommand::Run(vmm)) => vmm,
            other => panic!("expected Run for {args:?}, got {other:?}"),
        }
    }

    fn error(args: &[&str]) -> String {
        match parse(args) {
            Err(e) => {
                let mut text = e.to_string();
                let mut source = std::error::Error::source(&e);
                while let Some(cause) = source {
                    text.push_str(": ");
                    text.push_str(&cause.to_string());
                    source = cause.source();
                }
                text
            }
            Ok(other) => panic!("expected an error for {args:?}, got {other:?}"),
        }
    }

    #[test]
    fn restore_option() {
        let a = run(&["--restore", "source_url=file:///s,resume=true,prefault=on"]);
        assert_eq!(
            a.restore,
            Some(crate::api::RestoreConfig {
                source_url: "file:///s".into(),
                prefault: true,
                resume: true,
            })
        );
        assert!(a.vm_config.is_none());
        let a = run(&["--restore", "source_url=file:///s", "--api-socket", "/x"]);
        assert_eq!(a.restore.map(|r| r.resume), Some(false));
        assert!(error(&["--restore", "prefault=on"]).contains("source_url required"));
        assert!(error(&["--restore", "source_url=file:///s,bogus=1"]).contains("--restore"));
        assert!(error(&["--restore", "source_url=file:///s,resume=maybe"]).contains("--restore"));
        assert_eq!(
            error(&["--restore", "source_url=file:///s", "--memory", "size=1G"]),
            "--restore cannot be used with --memory: the VM's configuration comes from the snapshot"
        );
    }

    #[test]
    fn the_notes_command_line() {
        let vmm = run(&[
            "--kernel",
            "/g.elf",
            "--serial",
            "tty",
            "--console",
            "off",
            "--memory",
            "size=128M",
            "--cpus",
            "boot=1",
        ]);
        let config = vmm.vm_config.expect("a VM");
        assert_eq!(config.cpus.boot_vcpus, 1);
        assert_eq!(config.cpus.max_vcpus, 1);
        assert_eq!(config.memory.size, 128 << 20);
        assert_eq!(config.serial.mode, ConsoleOutputMode::Tty);
        assert_eq!(config.console.mode, ConsoleOutputMode::Off);
        let payload = config.payload.expect("payload");
        assert_eq!(payload.kernel, Some(PathBuf::from("/g.elf")));
        assert_eq!(payload.cmdline, None);
        assert_eq!(vmm.api_socket, None);
        assert_eq!(vmm.verbosity, 0);
    }

    #[test]
    fn kernel_alone_gets_the_json_defaults() {
        let vmm = run(&["--kernel", "/k"]);
        let from_json: VmConfig =
            serde_json::from_str(r#"{"payload":{"kernel":"/k"}}"#).expect("json");
        assert_eq!(vmm.vm_config, Some(from_json));
    }

    #[test]
    fn equals_form_and_all_supported_flags() {
        let vmm = run(&[
            "--kernel=/k",
            "--cmdline=console=ttyS0 quiet",
            "--initramfs",
            "/i",
            "--memory=size=1G",
            "--cpus=boot=1,max=1",
            "--serial=file=/tmp/s.log",
            "--console=null",
            "--api-socket=path=/tmp/api.sock",
            "--event-monitor",
            "path=/tmp/ev.json",
            "-v",
            "-vv",
            "--log-file",
            "/tmp/log",
            "--seccomp",
            "false",
        ]);
        let config = vmm.vm_config.expect("a VM");
        let payload = config.payload.expect("payload");
        assert_eq!(payload.cmdline.as_deref(), Some("console=ttyS0 quiet"));
        assert_eq!(payload.initramfs, Some(PathBuf::from("/i")));
        assert_eq!(config.memory.size, 1 << 30);
        assert_eq!(config.serial.mode, ConsoleOutputMode::File);
        assert_eq!(config.serial.file, Some(PathBuf::from("/tmp/s.log")));
        assert_eq!(config.console.mode, ConsoleOutputMode::Null);
        assert_eq!(vmm.api_socket, Some(PathBuf::from("/tmp/api.sock")));
        assert_eq!(vmm.event_monitor, Some(PathBuf::from("/tmp/ev.json")));
        assert_eq!(vmm.verbosity, 3);
        assert_eq!(vmm.log_file, Some(PathBuf::from("/tmp/log")));
    }

    #[test]
    fn api_socket_only_waits_for_create() {
        for value in ["/tmp/a.sock", "path=/tmp/a.sock"] {
            let vmm = run(&["--api-socket", value]);
            assert_eq!(vmm.vm_config, None);
            assert_eq!(vmm.api_socket, Some(PathBuf::from("/tmp/a.sock")));
        }
        assert!(error(&["--api-socket", "fd=3"]).contains("fd= is not supported yet"));
        assert!(error(&["--api-socket", "path="]).contains("--api-socket needs a value"));
    }

    #[test]
    fn nothing_to_do() {
        assert!(error(&[]).contains("nothing to run"));
        assert!(error(&["-v", "--log-file", "/x"]).contains("nothing to run"));
    }

    #[test]
    fn vm_flags_need_a_kernel() {
        for flag in [
            "--cmdline",
            "--initramfs",
            "--memory",
            "--cpus",
            "--serial",
            "--console",
        ] {
            let message = error(&["--api-socket", "/s", flag, "x"]);
            assert_eq!(message, format!("{flag} requires --kernel"));
        }
    }

    #[test]
    fn help_and_version() {
        match parse(&["--kernel", "/k", "--help"]) {
            Ok(CliCommand::Help(text)) => {
                assert!(text.contains("--kernel"));
                assert!(text.contains("--disk"));
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(parse(&["-h", "--bogus"]), Ok(CliCommand::Help(_))));
        match parse(&["-V"]) {
            Ok(CliCommand::Version(text)) => assert!(text.starts_with("cloud-hypervisor v")),
            other => panic!("{other:?}"),
        }
        match parse(&["--version", "-v"]) {
            Ok(CliCommand::Version(text)) => assert!(text.contains("Enabled features")),
            other => panic!("{other:?}"),
        }
        // As upstream, --version wins over flags this VMM refuses.
        assert!(matches!(
            parse(&["--version", "--disk", "path=/d"]),
            Ok(CliCommand::Version(_))
        ));
        assert!(error(&["--help=1"]).contains("takes no value"));
    }

    #[test]
    fn unsupported_flags_are_named() {
        for flag in UNSUPPORTED_FLAGS {
            let message = error(&["--kernel", "/k", flag, "x", "y", "-v"]);
            assert_eq!(message, format!("{flag} is not supported yet"));
            let message = error(&["--kernel", "/k", &format!("{flag}=x")]);
            assert_eq!(message, format!("{flag} is not supported yet"));
        }
        for flag in UNSUPPORTED_SWITCHES {
            let message = error(&["--kernel", "/k", flag]);
            assert_eq!(message, format!("{flag} is not supported yet"));
            assert!(error(&["--kernel", "/k", flag, "x"]).starts_with("unknown argument"));
            assert!(error(&[&format!("{flag}=x")]).contains("takes no value"));
        }
        assert!(error(&["--kernel", "/k", "--seccomp", "true"]).contains("--seccomp true"));
        assert!(error(&["--kernel", "/k", "--seccomp", "bogus"]).contains("expected true"));
    }

    #[test]
    fn unknown_arguments() {
        for args in [
            &["--bogus"][..],
            &["--kernel", "/k", "extra"],
            &["-x"],
            &["--"],
            &["--kernels", "/k"],
        ] {
            assert!(error(args).starts_with("unknown argument"), "{args:?}");
        }
    }

    #[test]
    fn missing_and_duplicate_values() {
        assert_eq!(error(&["--kernel"]), "--kernel needs a value");
        assert_eq!(
            error(&["--kernel", "--cmdline", "x"]),
            "--kernel needs a value"
        );
        assert_eq!(
            error(&["--kernel", "/a", "--kernel", "/b"]),
            "--kernel was given more than once"
        );
    }

    #[test]
    fn refused_option_values() {
        let message = error(&["--kernel", "/k", "--cpus", "boot=2"]);
        assert!(message.contains("only 1 vCPU"), "{message}");
        assert!(error(&["--kernel", "/k", "--cpus", "boot=1,max=2"]).contains("max=2"));
        assert!(error(&["--kernel", "/k", "--cpus", "affinity=[0@[0]]"])
            .contains("--cpus affinity is not supported yet"));
        assert!(error(&["--kernel", "/k", "--cpus", "kvm_hyperv=on"]).contains("kvm_hyperv"));
        assert!(
            error(&["--kernel", "/k", "--memory", "size=128M,shared=on"])
                .contains("--memory shared=on is not supported yet")
        );
        assert!(error(&[
            "--kernel",
            "/k",
            "--memory",
            "size=128M,hotplug_method=virtio-mem"
        ])
        .contains("virtio-mem"));
        assert!(error(&["--kernel", "/k", "--serial", "pty"]).contains("--serial pty"));
        assert!(error(&["--kernel", "/k", "--console", "tty"]).contains("no virtio-console"));
        assert!(error(&["--kernel", "/k", "--console", "file=/x"]).contains("--console file"));
        assert!(error(&["--kernel", "/k", "--memory", "size=1M"]).contains("out of range"));
        assert!(error(&["--kernel", "/k", "--memory", "size=3000000"]).contains("4 KiB"));
    }

    #[test]
    fn malformed_option_values() {
        assert!(
            error(&["--kernel", "/k", "--memory", "size=12X"]).contains("Error parsing --memory")
        );
        assert!(error(&["--kernel", "/k", "--memory", "bogus=1"]).contains("unknown option: bogus"));
        assert!(error(&["--kernel", "/k", "--cpus", "boot=one"]).contains("Error parsing --cpus"));
        assert!(error(&["--kernel", "/k", "--cpus", "topology=1:2"]).contains("topology"));
        assert!(error(&["--kernel", "/k", "--serial", "tty,off"]).contains("exactly one"));
        assert!(error(&["--kernel", "/k", "--serial", "file="]).contains("a path is required"));
        assert!(error(&["--kernel", "/k", "--serial", "bogus"]).contains("unknown option"));
        assert_eq!(
            error(&["--api-socket", "/s", "--event-monitor", "/tmp/x"]),
            "Error parsing --event-monitor: unknown option: /tmp/x"
        );
        assert!(error(&["--api-socket", "/s", "--event-monitor", "fd=3"]).contains("fd="));
        assert_eq!(
            error(&["--api-socket", "/s", "--event-monitor", "path="]),
            "Error parsing --event-monitor: path or fd required"
        );
    }

    #[test]
    fn cpus_and_memory_options_parse() {
        let cpus = parse_cpus("boot=1,max=1,max_phys_bits=40,nested=off,core_scheduling=vcpu")
            .expect("parses");
        assert_eq!(cpus.max_phys_bits, 40);
        assert!(!cpus.nested);
        assert_eq!(cpus.core_scheduling, CoreScheduling::Vcpu);
        let cpus = parse_cpus("boot=2,topology=1:2:1:1").expect("parses");
        assert_eq!(cpus.max_vcpus, 2);
        assert_eq!(cpus.topology.map(|t| t.cores_per_die), Some(2));
        let memory = parse_memory("size=2G,hugepages=on,hugepage_size=2M,thp=off,prefault=on")
            .expect("parses");
        assert_eq!(memory.size, 2 << 30);
        assert!(memory.hugepages && memory.prefault && !memory.thp);
        assert_eq!(memory.hugepage_size, Some(2 << 20));
        assert_eq!(parse_memory("shared=on").expect("parses").size, 512 << 20);
    }

    #[test]
    fn disks_and_nets() {
        let vmm = run(&[
            "--kernel",
            "/k",
            "--disk",
            "path=/a",
            "path=/b,readonly=on",
            "--net",
            "tap=ft0,ip=192.168.249.1,mask=255.255.255.0",
            "--disk=path=/c,id=c",
            "-v",
        ]);
        let config = vmm.vm_config.expect("config");
        let disks = config.disks.expect("disks");
        assert_eq!(disks.len(), 3);
        assert!(disks[1].readonly);
        assert_eq!(disks[2].id.as_deref(), Some("c"));
        assert_eq!(config.net.expect("net")[0].tap.as_deref(), Some("ft0"));
        assert_eq!(vmm.verbosity, 1);
        assert_eq!(error(&["--kernel", "/k", "--disk"]), "--disk needs a value");
        assert_eq!(error(&["--disk", "path=/a"]), "--disk requires --kernel");
        let vmm = run(&["--kernel", "/k", "--disk", "path=/a,direct=on"]);
        let disks = vmm.vm_config.expect("config").disks.expect("disks");
        assert!(disks[0].direct && !disks[0].readonly);
        assert!(error(&["--kernel", "/k", "--disk", "path=/a,direct=1"]).contains("--disk"));
        assert!(error(&["--kernel", "/k", "--net", "tap=a,ip=10.0.0.1"])
            .ends_with("--net ip and mask go together: give both or neither"));
    }
}
