// Copyright 2026 The ft-cloud-hypervisor authors.
// SPDX-License-Identifier: Apache-2.0

//! Two hosts on one machine, for the fault-tolerant pair's tests.
//!
//! ```text
//!   host A netns                      lan netns                      host B netns
//!  [tap tpa*]--[bridge bra*]--upa*==lna*--[bridge lan*]--lnb*==upb*--[bridge brb*]--[tap tpb*]
//!               192.168.253.1          192.168.253.254              192.168.253.2
//!       lga* 10.253.0.1/30 ================ logging link ================= lgb* 10.253.0.2/30
//!                                            ||
//!                                      lnc*==cli* 192.168.253.100   client netns
//! ```
//!
//! (`*`: every interface name ends with this pair's tag, `<pid>x<n>` in
//! hex, so that names are unique on the machine and a leak into the root
//! namespace can be recognised.) The guest is 192.168.253.10 with the
//! same MAC on both hosts; each host has a **persistent** tap (created
//! with `ip tuntap`, the flags the VMM's `Tap::open` uses: `IFF_TAP |
//! IFF_NO_PI | IFF_VNET_HDR`, single queue) enslaved to its bridge, which
//! the VMM opens by name (`--net tap=NAME,mac=MAC`, no `ip=`). The LAN
//! bridge has a namespace of its own (`lan`) rather than living in the
//! client's: the client stays a plain one-NIC host, each host's LAN port
//! can be cut on the LAN side, the bridge's forwarding table can be read
//! on its own, and services both hosts must reach even with the logging
//! link cut (an etcd tiebreaker) have a neutral place on the LAN
//! (192.168.253.254). The logging link is its own veth pair between the
//! two host namespaces, so it can be cut alone. IPv6 is off in all four
//! namespaces (no router solicitations or DAD on the LAN).
//!
//! Everything is removed on drop, also when the test panics: processes
//! still in the namespaces are killed, the taps deleted, the namespaces
//! deleted (which deletes their interfaces). [`PairNames::leftovers`]
//! checks that.

use std::net::{Ipv4Addr, SocketAddr};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use super::netns::{KillOnDrop, Netns};

mod cleanup;
mod rarp;

pub use cleanup::PairNames;
use cleanup::{kill_all_in, sweep_stale};

/// Prefix of every pair namespace: `ftpair-<pid>-<n>-<role>`.
pub(crate) const NS_PREFIX: &str = "ftpair-";
/// The LAN, with its prefix length.
pub const LAN_PREFIX_LEN: u8 = 24;
/// Host A's address on the LAN (its bridge).
pub const HOST_A_LAN: Ipv4Addr = Ipv4Addr::new(192, 168, 253, 1);
/// Host B's address on the LAN (its bridge).
pub const HOST_B_LAN: Ipv4Addr = Ipv4Addr::new(192, 168, 253, 2);
/// The guest's address (the same on both hosts).
pub const GUEST_IP: Ipv4Addr = Ipv4Addr::new(192, 168, 253, 10);
/// The client's address.
pub const CLIENT_IP: Ipv4Addr = Ipv4Addr::new(192, 168, 253, 100);
/// The LAN namespace's own address (for shared services: a tiebreaker).
pub const LAN_IP: Ipv4Addr = Ipv4Addr::new(192, 168, 253, 254);
/// Host A's end of the logging link (a /30).
pub const LOG_A: Ipv4Addr = Ipv4Addr::new(10, 253, 0, 1);
/// Host B's end of the logging link.
pub const LOG_B: Ipv4Addr = Ipv4Addr::new(10, 253, 0, 2);
/// The test guest's key-value port.
pub const KV_PORT: u16 = 7000;

/// One of the two hosts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Host {
    /// Host A (the primary's, in the pair tests).
    A,
    /// Host B (the backup's).
    B,
}

/// The interfaces of one host.
#[derive(Debug, Clone)]
pub struct HostLinks {
    /// The host's bridge (its LAN address is on it).
    pub bridge: String,
    /// The guest's persistent tap, a port of `bridge`.
    pub tap: String,
    /// The host's end of its veth to the LAN, a port of `bridge`.
    pub uplink: String,
    /// The LAN's end of that veth, a port of the LAN bridge.
    pub lan_port: String,
    /// The host's end of the logging link.
    pub log: String,
}

/// The two hosts, the client and the LAN (see the module's text).
pub struct PairNet {
    /// The suffix of every interface name.
    pub tag: String,
    /// The guest's MAC, the same on both hosts.
    pub guest_mac: String,
    /// Host A's interfaces.
    pub a: HostLinks,
    /// Host B's interfaces.
    pub b: HostLinks,
    /// The client's interface.
    pub client_if: String,
    /// The LAN's end of the client's veth.
    pub client_port: String,
    /// The LAN bridge.
    pub lan_bridge: String,
    names: PairNames,
    // The namespaces last: they are deleted after `drop` has run.
    /// Host A.
    pub host_a: Netns,
    /// Host B.
    pub host_b: Netns,
    /// The client.
    pub client: Netns,
    /// The LAN bridge's namespace.
    pub lan: Netns,
}

/// How long one reachability probe waits.
const PROBE_TIMEOUT: Duration = Duration::from_millis(200);

/// Whether `to` answers a TCP connection attempt to a port nothing
/// listens on (a refusal is an answer), from the calling thread's
/// namespace.
pub fn reachable(to: Ipv4Addr, timeout: Duration) -> bool {
    match std::net::TcpStream::connect_timeout(&SocketAddr::from((to, 9)), timeout) {
        Ok(_) => true,
        Err(e) => e.kind() == std::io::ErrorKind::ConnectionRefused,
    }
}

/// Runs `ip ARGS` (`args` split at spaces: the names here have none),
/// panicking with its output when it fails.
fn ip(args: &str) {
    let out = Command::new("ip")
        .args(args.split_whitespace())
        .output()
        .expect("run ip (iproute2)");
    assert!(
        out.status.success(),
        "ip {args}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn inode_of(ns: &Netns) -> u64 {
    std::fs::metadata(format!("/var/run/netns/{}", ns.0))
        .expect("stat the namespace")
        .ino()
}

impl PairNet {
    /// Builds the topology; panics (after removing what it made) when a
    /// step fails.
    pub fn new() -> PairNet {
        static N: AtomicU32 = AtomicU32::new(0);
        sweep_stale();
        let pid = std::process::id();
        let n = N.fetch_add(1, Ordering::SeqCst);
        let tag = format!("{pid:x}x{n:x}");
        let ns_prefix = format!("{NS_PREFIX}{pid}-{n}-");
        // Three-letter roles (what the leftovers check expects) + tag.
        let links = |h: char| HostLinks {
            bridge: format!("br{h}{tag}"),
            tap: format!("tp{h}{tag}"),
            uplink: format!("up{h}{tag}"),
            lan_port: format!("ln{h}{tag}"),
            log: format!("lg{h}{tag}"),
        };
        // Locally administered, unique to this pair.
        let guest_mac = format!(
            "52:54:{:02x}:{:02x}:{:02x}:{:02x}",
            (pid >> 16) & 0xff,
            (pid >> 8) & 0xff,
            pid & 0xff,
            n & 0xff
        );
        let host_a = Netns::named(&format!("{ns_prefix}hostA"));
        let host_b = Netns::named(&format!("{ns_prefix}hostB"));
        let client = Netns::named(&format!("{ns_prefix}client"));
        let lan = Netns::named(&format!("{ns_prefix}lan"));
        let inodes = [&host_a, &host_b, &client, &lan]
            .into_iter()
            .map(inode_of)
            .collect();
        let net = PairNet {
            a: links('a'),
            b: links('b'),
            client_if: format!("cli{tag}"),
            client_port: format!("lnc{tag}"),
            lan_bridge: format!("lan{tag}"),
            guest_mac,
            names: PairNames {
                ns_prefix,
                tag: tag.clone(),
                inodes,
            },
            tag,
            host_a,
            host_b,
            client,
            lan,
        };
        net.build();
        net
    }

    fn build(&self) {
        for ns in [&self.host_a, &self.host_b, &self.client, &self.lan] {
            let (ok, out) = ns.exec(&[
                "sysctl",
                "-q",
                "-w",
                "net.ipv6.conf.all.disable_ipv6=1",
                "-w",
                "net.ipv6.conf.default.disable_ipv6=1",
            ]);
            assert!(ok, "disable IPv6 in {}: {out}", ns.0);
        }
        let lan = &self.lan.0;
        let lan_bridge = &self.lan_bridge;
        let len = LAN_PREFIX_LEN;
        ip(&format!("-n {lan} link add {lan_bridge} type bridge"));
        ip(&format!(
            "-n {lan} addr add {LAN_IP}/{len} dev {lan_bridge}"
        ));
        ip(&format!("-n {lan} link set {lan_bridge} up"));
        for (ns, links, addr) in [
            (&self.host_a, &self.a, HOST_A_LAN),
            (&self.host_b, &self.b, HOST_B_LAN),
        ] {
            let ns = &ns.0;
            let HostLinks {
                bridge,
                tap,
                uplink,
                lan_port,
                ..
            } = links;
            ip(&format!("-n {ns} link add {bridge} type bridge"));
            ip(&format!("-n {ns} addr add {addr}/{len} dev {bridge}"));
            ip(&format!("-n {ns} link set {bridge} up"));
            ip(&format!(
                "-n {ns} link add {uplink} type veth peer name {lan_port} netns {lan}"
            ));
            ip(&format!("-n {ns} link set {uplink} master {bridge} up"));
            ip(&format!(
                "-n {lan} link set {lan_port} master {lan_bridge} up"
            ));
            ip(&format!("-n {ns} tuntap add dev {tap} mode tap vnet_hdr"));
            ip(&format!("-n {ns} link set {tap} master {bridge} up"));
        }
        let (client, client_if, port) = (&self.client.0, &self.client_if, &self.client_port);
        ip(&format!(
            "-n {client} link add {client_if} type veth peer name {port} netns {lan}"
        ));
        ip(&format!(
            "-n {client} addr add {CLIENT_IP}/{len} dev {client_if}"
        ));
        ip(&format!("-n {client} link set {client_if} up"));
        ip(&format!("-n {lan} link set {port} master {lan_bridge} up"));
        let (a, b, log_a, log_b) = (&self.host_a.0, &self.host_b.0, &self.a.log, &self.b.log);
        ip(&format!(
            "-n {a} link add {log_a} type veth peer name {log_b} netns {b}"
        ));
        ip(&format!("-n {a} addr add {LOG_A}/30 dev {log_a}"));
        ip(&format!("-n {b} addr add {LOG_B}/30 dev {log_b}"));
        ip(&format!("-n {a} link set {log_a} up"));
        ip(&format!("-n {b} link set {log_b} up"));
        self.wait_ready();
    }

    /// Waits until every path carries traffic: a link just set up drops
    /// frames for a moment (carrier, bridge port state, the first ARP
    /// request), which a test would otherwise see as a cut.
    fn wait_ready(&self) {
        for (ns, to) in [
            (&self.client, LAN_IP),
            (&self.client, HOST_A_LAN),
            (&self.client, HOST_B_LAN),
            (&self.host_a, LOG_B),
        ] {
            let reached = ns.run(|| {
                super::wait_until(Duration::from_secs(10), || reachable(to, PROBE_TIMEOUT))
            });
            assert!(reached, "{} cannot reach {to} after setup", ns.0);
        }
    }

    /// The namespace of `host`.
    pub fn host(&self, host: Host) -> &Netns {
        match host {
            Host::A => &self.host_a,
            Host::B => &self.host_b,
        }
    }

    /// The interfaces of `host`.
    pub fn links(&self, host: Host) -> &HostLinks {
        match host {
            Host::A => &self.a,
            Host::B => &self.b,
        }
    }

    /// What [`PairNames::leftovers`] needs, to keep past the drop.
    pub fn names(&self) -> PairNames {
        self.names.clone()
    }

    /// The guest's key-value service.
    pub fn kv_addr(&self) -> SocketAddr {
        SocketAddr::from((GUEST_IP, KV_PORT))
    }

    /// `--net` for the guest on `host`: its tap there, the shared MAC.
    pub fn guest_net(&self, host: Host) -> String {
        format!("tap={},mac={}", self.links(host).tap, self.guest_mac)
    }

    /// The test guest's command line for the KV service on the LAN.
    pub fn kv_cmdline(&self) -> String {
        format!("workload=kv ip={GUEST_IP}/{LAN_PREFIX_LEN}")
    }

    fn set_link(&self, ns: &Netns, dev: &str, state: &str) {
        ip(&format!("-n {} link set {dev} {state}", ns.0));
    }

    /// Cuts the logging link alone (host A's end down; B's loses carrier).
    pub fn cut_log_link(&self) {
        self.set_link(&self.host_a, &self.a.log, "down");
    }

    /// Brings the logging link back.
    pub fn heal_log_link(&self) {
        self.set_link(&self.host_a, &self.a.log, "up");
    }

    /// Cuts `host` off the LAN (the LAN's port to it down). The LAN
    /// bridge then forgets the MACs it learnt on that port.
    pub fn cut_lan(&self, host: Host) {
        self.set_link(&self.lan, &self.links(host).lan_port, "down");
    }

    /// Puts `host` back on the LAN.
    pub fn heal_lan(&self, host: Host) {
        self.set_link(&self.lan, &self.links(host).lan_port, "up");
    }

    /// The host behind the LAN bridge's port for `mac`, from its
    /// forwarding table (`None`: not learnt, or learnt at the client).
    pub fn lan_port_of(&self, mac: &str) -> Option<Host> {
        let (ok, out) = self
            .lan
            .exec(&["bridge", "fdb", "show", "br", &self.lan_bridge]);
        assert!(ok, "bridge fdb show: {out}");
        out.lines()
            .filter(|l| l.starts_with(&format!("{mac} ")))
            .find_map(|l| {
                if l.contains(&format!(" dev {} ", self.a.lan_port)) {
                    Some(Host::A)
                } else if l.contains(&format!(" dev {} ", self.b.lan_port)) {
                    Some(Host::B)
                } else {
                    None
                }
            })
    }

    /// Announces the guest's MAC on the LAN from `host`, as a VMM does
    /// after a migration or a go-live: one RARP frame (broadcast, source
    /// the guest's MAC) sent on the host's bridge, which floods it to the
    /// LAN, whose bridge learns the MAC behind that host's port.
    pub fn announce_guest(&self, host: Host) {
        let mut mac = [0u8; 6];
        for (byte, text) in mac.iter_mut().zip(self.guest_mac.split(':')) {
            *byte = u8::from_str_radix(text, 16).expect("a MAC byte");
        }
        let bridge = self.links(host).bridge.clone();
        self.host(host).run(move || rarp::send_rarp(&bridge, mac));
    }

    /// Spawns `program ARGS` in namespace `ns` (one of this pair's), killed
    /// on drop; its output goes nowhere.
    pub fn spawn(&self, ns: &Netns, program: &str, args: &[&str]) -> KillOnDrop {
        KillOnDrop::spawn(
            ns.command(program)
                .args(args)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null()),
        )
    }

    /// Spawns the VMM on `host` with `args` (add `--kernel`, `--net`...);
    /// its serial port goes to `dir/serial-<name>.txt`, its stderr to
    /// `dir/stderr-<name>.txt`.
    pub fn spawn_vmm(&self, host: Host, dir: &Path, name: &str, args: &[&str]) -> GuestVmm {
        let serial = dir.join(format!("serial-{name}.txt"));
        let stderr = dir.join(format!("stderr-{name}.txt"));
        let err = std::fs::File::create(&stderr).expect("create the stderr file");
        let child = KillOnDrop::spawn(
            self.host(host)
                .command(super::vmm_bin())
                .args(args)
                .args(["--serial", &format!("file={}", serial.display())])
                .args(["--console", "off"])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(err),
        );
        GuestVmm {
            child,
            serial,
            stderr,
        }
    }
}

impl Default for PairNet {
    fn default() -> Self {
        PairNet::new()
    }
}

impl Drop for PairNet {
    fn drop(&mut self) {
        for ns in [&self.host_a, &self.host_b, &self.client, &self.lan] {
            kill_all_in(&ns.0);
        }
        // Persistent taps outlive their users; delete them before their
        // namespaces go.
        for (ns, links) in [(&self.host_a, &self.a), (&self.host_b, &self.b)] {
            let _ = Command::new("ip")
                .args(["-n", &ns.0, "link", "del", &links.tap])
                .stderr(Stdio::null())
                .status();
        }
        // The `Netns` fields delete the namespaces after this.
    }
}

/// A VMM started with [`PairNet::spawn_vmm`], killed on drop.
pub struct GuestVmm {
    /// The process.
    pub child: KillOnDrop,
    /// Its serial output.
    pub serial: PathBuf,
    /// Its stderr.
    pub stderr: PathBuf,
}

impl GuestVmm {
    /// The serial output so far.
    pub fn serial_text(&self) -> String {
        std::fs::read_to_string(&self.serial).unwrap_or_default()
    }

    /// The stderr so far.
    pub fn stderr_text(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// Waits until the serial output contains `text`; panics with the
    /// serial output and stderr if the VMM exits or `timeout` passes.
    pub fn wait_serial(&mut self, text: &str, timeout: Duration) {
        let seen = super::wait_until(timeout, || {
            self.serial_text().contains(text) || !self.child.running()
        });
        assert!(
            seen && self.serial_text().contains(text),
            "no {text:?} on the serial port; serial:\n{}\nstderr:\n{}",
            self.serial_text(),
            self.stderr_text()
        );
    }

    /// `kill -9`, as a host failure.
    pub fn kill9(&mut self) {
        self.child.kill9();
    }
}
