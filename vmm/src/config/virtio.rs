// Copyright 2026 The ft-cloud-hypervisor authors.
// SPDX-License-Identifier: Apache-2.0

//! `disks` and `net`: the virtio-blk and virtio-net devices, in Cloud
//! Hypervisor's JSON shape, their `--disk` / `--net` option syntax and
//! what this VMM supports of them.
//!
//! Differences from upstream, on purpose: `ip` and `mask` of a net device
//! are optional (upstream fills in 192.168.249.1/24): the host side of the
//! tap gets an address only when both are given. The offload flags are
//! kept for compatibility, but no offload is offered to the guest.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::option_parser::{OptionParser, OptionParserError};

/// Upstream's default number of block queues.
pub const DEFAULT_DISK_NUM_QUEUES: usize = 1;
/// Upstream's default block queue size.
pub const DEFAULT_DISK_QUEUE_SIZE: u16 = 128;
/// Upstream's default number of net queues (one RX/TX pair).
pub const DEFAULT_NET_NUM_QUEUES: usize = 2;
/// Upstream's default net queue size.
pub const DEFAULT_NET_QUEUE_SIZE: u16 = 256;

fn default_disk_num_queues() -> usize {
    DEFAULT_DISK_NUM_QUEUES
}
fn default_disk_queue_size() -> u16 {
    DEFAULT_DISK_QUEUE_SIZE
}
fn default_net_num_queues() -> usize {
    DEFAULT_NET_NUM_QUEUES
}
fn default_net_queue_size() -> u16 {
    DEFAULT_NET_QUEUE_SIZE
}
fn default_true() -> bool {
    true
}

/// One `disks` entry (`--disk`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DiskConfig {
    /// The raw image file.
    #[serde(default)]
    pub path: Option<PathBuf>,
    /// Refuse guest writes.
    #[serde(default)]
    pub readonly: bool,
    /// Open the image with O_DIRECT (the host's page cache bypassed), as
    /// upstream; off by default.
    #[serde(default)]
    pub direct: bool,
    /// Behind the virtual IOMMU (not supported).
    #[serde(default)]
    pub iommu: bool,
    /// Request queues (only 1 supported).
    #[serde(default = "default_disk_num_queues")]
    pub num_queues: usize,
    /// Queue size (only 128 supported).
    #[serde(default = "default_disk_queue_size")]
    pub queue_size: u16,
    /// vhost-user backend (not supported).
    #[serde(default)]
    pub vhost_user: bool,
    /// vhost-user socket (not supported).
    #[serde(default)]
    pub vhost_socket: Option<String>,
    /// Rate-limit group (not supported).
    #[serde(default)]
    pub rate_limit_group: Option<String>,
    /// Rate limiter (not supported).
    #[serde(default)]
    pub rate_limiter_config: Option<serde_json::Value>,
    /// Device id (`_diskN` when absent).
    #[serde(default)]
    pub id: Option<String>,
    /// Upstream's io_uring switch (no effect: this VMM uses a thread).
    #[serde(default)]
    pub disable_io_uring: bool,
    /// Upstream's AIO switch (no effect: this VMM uses a thread).
    #[serde(default)]
    pub disable_aio: bool,
    /// PCI segment (only 0).
    #[serde(default)]
    pub pci_segment: u16,
    /// Serial reported by get-id (the id when absent).
    #[serde(default)]
    pub serial: Option<String>,
    /// Queue to host CPU affinity (not supported).
    #[serde(default)]
    pub queue_affinity: Option<serde_json::Value>,
}

/// One `net` entry (`--net`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetConfig {
    /// Tap interface name (created if missing; `vmtapN` when absent).
    #[serde(default)]
    pub tap: Option<String>,
    /// Host-side IPv4 address of the tap.
    #[serde(default)]
    pub ip: Option<Ipv4Addr>,
    /// Its netmask.
    #[serde(default)]
    pub mask: Option<Ipv4Addr>,
    /// Guest MAC address (a random local one when absent).
    #[serde(default = "random_mac")]
    pub mac: String,
    /// Host-side MAC (not supported yet).
    #[serde(default)]
    pub host_mac: Option<String>,
    /// MTU (not supported yet).
    #[serde(default)]
    pub mtu: Option<u16>,
    /// Behind the virtual IOMMU (not supported).
    #[serde(default)]
    pub iommu: bool,
    /// Queues (only 2: one RX/TX pair).
    #[serde(default = "default_net_num_queues")]
    pub num_queues: usize,
    /// Queue size (only 256).
    #[serde(default = "default_net_queue_size")]
    pub queue_size: u16,
    /// vhost-user backend (not supported).
    #[serde(default)]
    pub vhost_user: bool,
    /// vhost-user socket (not supported).
    #[serde(default)]
    pub vhost_socket: Option<String>,
    /// vhost-user mode (not supported).
    #[serde(default)]
    pub vhost_mode: Option<serde_json::Value>,
    /// Device id (`_netN` when absent).
    #[serde(default)]
    pub id: Option<String>,
    /// Pre-opened tap fds (not supported).
    #[serde(default)]
    pub fds: Option<Vec<i32>>,
    /// Rate limiter (not supported).
    #[serde(default)]
    pub rate_limiter_config: Option<serde_json::Value>,
    /// PCI segment (only 0).
    #[serde(default)]
    pub pci_segment: u16,
    /// TSO offload (kept for compatibility; never offered).
    #[serde(default = "default_true")]
    pub offload_tso: bool,
    /// UFO offload (kept for compatibility; never offered).
    #[serde(default = "default_true")]
    pub offload_ufo: bool,
    /// Checksum offload (kept for compatibility; never offered).
    #[serde(default = "default_true")]
    pub offload_csum: bool,
}

/// A random locally administered unicast MAC, as upstream generates.
pub fn random_mac() -> String {
    let mut bytes = [0u8; 6];
    let ok = std::fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut bytes))
        .is_ok();
    if !ok {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        bytes.copy_from_slice(&(nanos as u64 ^ u64::from(std::process::id())).to_le_bytes()[..6]);
    }
    bytes[0] = (bytes[0] & 0xfe) | 0x02;
    format_mac(&bytes)
}

/// `aa:bb:cc:dd:ee:ff`.
pub fn format_mac(bytes: &[u8; 6]) -> String {
    bytes
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// Parses `aa:bb:cc:dd:ee:ff`.
pub fn parse_mac(text: &str) -> Option<[u8; 6]> {
    let mut out = [0u8; 6];
    let mut parts = text.split(':');
    for b in &mut out {
        let part = parts.next()?;
        if part.len() != 2 {
            return None;
        }
        *b = u8::from_str_radix(part, 16).ok()?;
    }
    parts.next().is_none().then_some(out)
}

impl Default for NetConfig {
    fn default() -> Self {
        NetConfig {
            tap: None,
            ip: None,
            mask: None,
            mac: random_mac(),
            host_mac: None,
            mtu: None,
            iommu: false,
            num_queues: DEFAULT_NET_NUM_QUEUES,
            queue_size: DEFAULT_NET_QUEUE_SIZE,
            vhost_user: false,
            vhost_socket: None,
            vhost_mode: None,
            id: None,
            fds: None,
            rate_limiter_config: None,
            pci_segment: 0,
            offload_tso: true,
            offload_ufo: true,
            offload_csum: true,
        }
    }
}

impl Default for DiskConfig {
    fn default() -> Self {
        DiskConfig {
            path: None,
            readonly: false,
            direct: false,
            iommu: false,
            num_queues: DEFAULT_DISK_NUM_QUEUES,
            queue_size: DEFAULT_DISK_QUEUE_SIZE,
            vhost_user: false,
            vhost_socket: None,
            rate_limit_group: None,
            rate_limiter_config: None,
            id: None,
            disable_io_uring: false,
            disable_aio: false,
            pci_segment: 0,
            serial: None,
            queue_affinity: None,
        }
    }
}

/// A `--disk` or `--net` that cannot be parsed or run.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DeviceConfigError {
    /// The option list is malformed.
    #[error("Error parsing {0}")]
    Parse(&'static str, #[source] OptionParserError),
    /// An option this VMM does not implement.
    #[error("{0} is not supported yet")]
    Unsupported(String),
    /// `--disk` without `path=`.
    #[error("--disk needs path=FILE")]
    NoPath,
    /// A MAC address that does not parse.
    #[error("invalid MAC address {0:?} (expected aa:bb:cc:dd:ee:ff)")]
    Mac(String),
    /// A multicast MAC.
    #[error("MAC address {0} is multicast: a device needs a unicast address")]
    MulticastMac(String),
    /// ip without mask or the other way round.
    #[error("--net ip and mask go together: give both or neither")]
    IpWithoutMask,
    /// Two devices with one id.
    #[error("device id {0:?} is used twice")]
    DuplicateId(String),
    /// An id that cannot be a device name.
    #[error("invalid device id {0:?} (1 to 64 bytes of letters, digits, '_', '-' or '.')")]
    BadId(String),
    /// Two net devices on one tap.
    #[error("tap {0:?} is used by two net devices")]
    DuplicateTap(String),
}

const DISK_KEYS: &[&str] = &[
    "path",
    "readonly",
    "direct",
    "iommu",
    "queue_size",
    "num_queues",
    "vhost_user",
    "socket",
    "rate_limit_group",
    "bw_size",
    "bw_one_time_burst",
    "bw_refill_time",
    "ops_size",
    "ops_one_time_burst",
    "ops_refill_time",
    "id",
    "_disable_io_uring",
    "_disable_aio",
    "pci_segment",
    "serial",
    "queue_affinity",
    "image_type",
    "sparse",
    "backing_files",
];

/// Parses one `--disk` value.
pub fn parse_disk(value: &str) -> Result<DiskConfig, DeviceConfigError> {
    const FLAG: &str = "--disk";
    let err = |e| DeviceConfigError::Parse(FLAG, e);
    let p = OptionParser::parse(value, DISK_KEYS).map_err(err)?;
    for key in p.keys() {
        if !matches!(key, "path" | "readonly" | "direct" | "id" | "serial") {
            return Err(DeviceConfigError::Unsupported(format!("--disk {key}")));
        }
    }
    let path = match p.get("path") {
        Some(path) if !path.is_empty() => PathBuf::from(path),
        _ => return Err(DeviceConfigError::NoPath),
    };
    Ok(DiskConfig {
        path: Some(path),
        readonly: p.toggle("readonly").map_err(err)?.unwrap_or(false),
        direct: p.toggle("direct").map_err(err)?.unwrap_or(false),
        id: p.get("id").map(str::to_string),
        serial: p.get("serial").map(str::to_string),
        ..DiskConfig::default()
    })
}

const NET_KEYS: &[&str] = &[
    "tap",
    "ip",
    "mask",
    "mac",
    "host_mac",
    "offload_tso",
    "offload_ufo",
    "offload_csum",
    "mtu",
    "iommu",
    "queue_size",
    "num_queues",
    "vhost_user",
    "socket",
    "vhost_mode",
    "id",
    "fd",
    "bw_size",
    "bw_one_time_burst",
    "bw_refill_time",
    "ops_size",
    "ops_one_time_burst",
    "ops_refill_time",
    "pci_segment",
];

/// Parses one `--net` value.
pub fn parse_net(value: &str) -> Result<NetConfig, DeviceConfigError> {
    const FLAG: &str = "--net";
    let err = |e| DeviceConfigError::Parse(FLAG, e);
    let p = OptionParser::parse(value, NET_KEYS).map_err(err)?;
    for key in p.keys() {
        if !matches!(key, "tap" | "ip" | "mask" | "mac" | "id") {
            return Err(DeviceConfigError::Unsupported(format!("--net {key}")));
        }
    }
    let addr = |key: &str| -> Result<Option<Ipv4Addr>, DeviceConfigError> {
        p.get(key)
            .map(|v| {
                v.parse::<Ipv4Addr>().map_err(|e| {
                    err(OptionParserError::InvalidValue {
                        key: key.to_string(),
                        value: v.to_string(),
                        reason: e.to_string(),
                    })
                })
            })
            .transpose()
    };
    let mut net = NetConfig {
        tap: p.get("tap").map(str::to_string),
        ip: addr("ip")?,
        mask: addr("mask")?,
        id: p.get("id").map(str::to_string),
        ..NetConfig::default()
    };
    if let Some(mac) = p.get("mac") {
        net.mac = mac.to_ascii_lowercase();
    }
    Ok(net)
}

fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
}

fn unsupported(what: &str) -> DeviceConfigError {
    DeviceConfigError::Unsupported(what.to_string())
}

/// Checks the devices: only what this VMM implements, unique ids and taps.
pub fn validate_devices(disks: &[DiskConfig], nets: &[NetConfig]) -> Result<(), DeviceConfigError> {
    let mut ids = BTreeSet::new();
    for d in disks {
        match &d.path {
            Some(p) if !p.as_os_str().is_empty() => {}
            _ => return Err(DeviceConfigError::NoPath),
        }
        let checks: [(bool, &str); 10] = [
            (d.iommu, "--disk iommu=on"),
            (
                d.num_queues != DEFAULT_DISK_NUM_QUEUES,
                "--disk num_queues other than 1",
            ),
            (
                d.queue_size != DEFAULT_DISK_QUEUE_SIZE,
                "--disk queue_size other than 128",
            ),
            (d.vhost_user, "--disk vhost_user=on"),
            (d.vhost_socket.is_some(), "--disk socket"),
            (d.rate_limit_group.is_some(), "--disk rate_limit_group"),
            (d.rate_limiter_config.is_some(), "--disk rate limiting"),
            (d.pci_segment != 0, "--disk pci_segment other than 0"),
            (d.queue_affinity.is_some(), "--disk queue_affinity"),
            (
                d.serial.as_ref().is_some_and(|s| s.len() > 20),
                "--disk serial longer than 20 bytes",
            ),
        ];
        if let Some((_, what)) = checks.iter().find(|(bad, _)| *bad) {
            return Err(unsupported(what));
        }
        check_id(&d.id, &mut ids)?;
    }
    let mut taps = BTreeSet::new();
    for n in nets {
        let checks: [(bool, &str); 11] = [
            (n.host_mac.is_some(), "--net host_mac"),
            (n.mtu.is_some(), "--net mtu"),
            (n.iommu, "--net iommu=on"),
            (
                n.num_queues != DEFAULT_NET_NUM_QUEUES,
                "--net num_queues other than 2",
            ),
            (
                n.queue_size != DEFAULT_NET_QUEUE_SIZE,
                "--net queue_size other than 256",
            ),
            (n.vhost_user, "--net vhost_user=on"),
            (n.vhost_socket.is_some(), "--net socket"),
            (n.vhost_mode.is_some(), "--net vhost_mode"),
            (n.fds.is_some(), "--net fd"),
            (n.rate_limiter_config.is_some(), "--net rate limiting"),
            (n.pci_segment != 0, "--net pci_segment other than 0"),
        ];
        if let Some((_, what)) = checks.iter().find(|(bad, _)| *bad) {
            return Err(unsupported(what));
        }
        let mac = parse_mac(&n.mac).ok_or_else(|| DeviceConfigError::Mac(n.mac.clone()))?;
        if mac[0] & 1 != 0 {
            return Err(DeviceConfigError::MulticastMac(n.mac.clone()));
        }
        if n.ip.is_some() != n.mask.is_some() {
            return Err(DeviceConfigError::IpWithoutMask);
        }
        if let Some(tap) = &n.tap {
            if !taps.insert(tap.clone()) {
                return Err(DeviceConfigError::DuplicateTap(tap.clone()));
            }
        }
        check_id(&n.id, &mut ids)?;
    }
    Ok(())
}

fn check_id(id: &Option<String>, ids: &mut BTreeSet<String>) -> Result<(), DeviceConfigError> {
    if let Some(id) = id {
        if !valid_id(id) || id.starts_with("__") {
            return Err(DeviceConfigError::BadId(id.clone()));
        }
        if !ids.insert(id.clone()) {
            return Err(DeviceConfigError::DuplicateId(id.clone()));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn disk_options() {
        let d = parse_disk("path=/tmp/d.img,readonly=on,id=data").unwrap();
        assert_eq!(d.path, Some(PathBuf::from("/tmp/d.img")));
        assert!(d.readonly);
        assert_eq!(d.id.as_deref(), Some("data"));
        assert_eq!(d.num_queues, 1);
        assert_eq!(parse_disk("readonly=on"), Err(DeviceConfigError::NoPath));
        assert!(!d.direct, "direct is off by default, as upstream");
        let d = parse_disk("path=/d,direct=on").unwrap();
        assert!(d.direct && !d.readonly);
        assert!(!parse_disk("path=/d,direct=off").unwrap().direct);
        let d = parse_disk("path=/d,readonly=on,direct=on").unwrap();
        assert!(d.direct && d.readonly);
        validate_devices(&[d], &[]).unwrap();
        assert!(matches!(
            parse_disk("path=/d,direct=sometimes"),
            Err(DeviceConfigError::Parse(..))
        ));
        assert!(matches!(
            parse_disk("path=/d,bogus=1"),
            Err(DeviceConfigError::Parse(..))
        ));
        assert!(matches!(
            parse_disk("path=/d,readonly=maybe"),
            Err(DeviceConfigError::Parse(..))
        ));
    }

    #[test]
    fn net_options() {
        let n =
            parse_net("tap=ft0,mac=12:34:56:78:9A:bc,ip=192.168.249.1,mask=255.255.255.0,id=n0")
                .unwrap();
        assert_eq!(n.tap.as_deref(), Some("ft0"));
        assert_eq!(n.mac, "12:34:56:78:9a:bc");
        assert_eq!(n.ip, Some(Ipv4Addr::new(192, 168, 249, 1)));
        assert_eq!(n.num_queues, 2);
        assert!(matches!(
            parse_net("tap=ft0,ip=300.1.1.1,mask=255.0.0.0"),
            Err(DeviceConfigError::Parse(..))
        ));
        assert_eq!(
            parse_net("tap=ft0,mtu=9000"),
            Err(DeviceConfigError::Unsupported("--net mtu".into()))
        );
        let r = parse_net("tap=x").unwrap();
        let mac = parse_mac(&r.mac).unwrap();
        assert_eq!(mac[0] & 3, 2, "local unicast");
    }

    #[test]
    fn validation() {
        let disk = parse_disk("path=/d,id=a").unwrap();
        let net = parse_net("tap=t0,id=b").unwrap();
        validate_devices(std::slice::from_ref(&disk), std::slice::from_ref(&net)).unwrap();
        let mut dup = net.clone();
        dup.id = Some("a".into());
        dup.tap = Some("t1".into());
        assert_eq!(
            validate_devices(std::slice::from_ref(&disk), &[dup]),
            Err(DeviceConfigError::DuplicateId("a".into()))
        );
        let mut same_tap = net.clone();
        same_tap.id = None;
        assert_eq!(
            validate_devices(&[], &[net.clone(), same_tap]),
            Err(DeviceConfigError::DuplicateTap("t0".into()))
        );
        let mut bad = net.clone();
        bad.mac = "01:00:00:00:00:01".into();
        assert!(matches!(
            validate_devices(&[], &[bad]),
            Err(DeviceConfigError::MulticastMac(_))
        ));
        let mut bad = net.clone();
        bad.mac = "zz".into();
        assert!(matches!(
            validate_devices(&[], &[bad]),
            Err(DeviceConfigError::Mac(_))
        ));
        let mut bad = net.clone();
        bad.ip = Some(Ipv4Addr::LOCALHOST);
        assert_eq!(
            validate_devices(&[], &[bad]),
            Err(DeviceConfigError::IpWithoutMask)
        );
        let mut bad = disk.clone();
        bad.id = Some("__serial".into());
        assert!(matches!(
            validate_devices(&[bad], &[]),
            Err(DeviceConfigError::BadId(_))
        ));
        let mut bad = disk;
        bad.queue_size = 256;
        assert!(matches!(
            validate_devices(&[bad], &[]),
            Err(DeviceConfigError::Unsupported(_))
        ));
    }

    #[test]
    fn json_shape() {
        let d: DiskConfig = serde_json::from_str(r#"{"path":"/d"}"#).unwrap();
        assert_eq!(d.queue_size, 128);
        let v = serde_json::to_value(&d).unwrap();
        assert_eq!(v["readonly"], false);
        assert_eq!(v["num_queues"], 1);
        let n: NetConfig =
            serde_json::from_str(r#"{"tap":"t","ip":"10.0.0.1","mask":"255.255.255.0"}"#).unwrap();
        assert_eq!(n.ip, Some(Ipv4Addr::new(10, 0, 0, 1)));
        assert!(parse_mac(&n.mac).is_some());
        assert!(serde_json::from_str::<NetConfig>(r#"{"tap":"t","bogus":1}"#).is_err());
        assert_eq!(parse_mac("00:11:22:33:44"), None);
        assert_eq!(parse_mac("00:11:22:33:44:55:66"), None);
    }
}
