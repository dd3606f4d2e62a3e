// Copyright 2026 The ft-cloud-hypervisor authors.
// SPDX-License-Identifier: Apache-2.0

//! A net device built without its tap that goes live on a real,
//! pre-created persistent tap, in a network namespace the test creates
//! (root is needed: the tests fail without it).

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use vm_memory::{Bytes, GuestAddress};

use super::announce::{rarp_frame, ANNOUNCE_COUNT, ANNOUNCE_INTERVAL, RARP_FRAME_LEN};
use super::tests::{frame, queues, run, wait_event, NoWake, BUF, TX_BASE};
use super::*;
use crate::chain::testing::{desc, memory, publish};
use crate::output::{DroppedOutput, ImmediateOutput};

/// A network namespace of this test, deleted on drop.
struct Netns(String);

impl Netns {
    fn new() -> Netns {
        static N: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "vdgl-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        );
        let ns = Netns(name);
        ns.ip(&["netns", "add", &ns.0]);
        ns
    }

    /// Runs `ip ARGS`, which must succeed (as root).
    fn ip(&self, args: &[&str]) {
        let out = Command::new("ip")
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("run ip (iproute2)");
        assert!(
            out.status.success(),
            "ip {args:?}: {} (these tests need root)",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Runs `ip ARGS` inside the namespace, which must succeed.
    fn ip_in(&self, args: &[&str]) -> String {
        let out = Command::new("ip")
            .args(["netns", "exec", &self.0, "ip"])
            .args(args)
            .output()
            .expect("run ip netns exec");
        assert!(
            out.status.success(),
            "ip {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Runs `f` on a thread that entered the namespace.
    fn run<R: Send>(&self, f: impl FnOnce() -> R + Send) -> R {
        let path = format!("/var/run/netns/{}", self.0);
        std::thread::scope(|scope| {
            scope
                .spawn(|| {
                    let ns = File::open(&path).expect("open the namespace");
                    // SAFETY: setns on this thread only, with a valid
                    // namespace fd; the thread ends when `f` returns.
                    let rc = unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) };
                    assert_eq!(rc, 0, "setns: {}", std::io::Error::last_os_error());
                    f()
                })
                .join()
                .expect("namespace thread panicked")
        })
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.0])
            .stderr(Stdio::null())
            .status();
    }
}

/// A packet socket on interface `name` (of the calling thread's namespace)
/// that sees every frame.
fn packet_socket(name: &str) -> (OwnedFd, i32) {
    let cname = std::ffi::CString::new(name).unwrap();
    // SAFETY: `cname` is a NUL-terminated string.
    let index = unsafe { libc::if_nametoindex(cname.as_ptr()) } as i32;
    assert!(index > 0, "no interface {name}");
    let proto = (libc::ETH_P_ALL as u16).to_be();
    // SAFETY: plain socket(2) call, checked below.
    let fd = unsafe {
        libc::socket(
            libc::AF_PACKET,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC,
            i32::from(proto),
        )
    };
    assert!(
        fd >= 0,
        "packet socket: {}",
        std::io::Error::last_os_error()
    );
    // SAFETY: `fd` is a new socket nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let addr = sockaddr_ll(index, proto);
    // SAFETY: `addr` is a valid sockaddr_ll of the size passed.
    let r = unsafe {
        libc::bind(
            fd.as_raw_fd(),
            std::ptr::from_ref(&addr).cast(),
            size_of::<libc::sockaddr_ll>() as u32,
        )
    };
    assert_eq!(r, 0, "bind: {}", std::io::Error::last_os_error());
    (fd, index)
}

fn sockaddr_ll(index: i32, proto: u16) -> libc::sockaddr_ll {
    // SAFETY: sockaddr_ll is plain old data; all zeroes is valid.
    let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    addr.sll_family = libc::AF_PACKET as u16;
    addr.sll_protocol = proto;
    addr.sll_ifindex = index;
    addr
}

/// The next frame the interface received (written into the tap), within
/// `timeout`; frames the host sent out of it are skipped.
fn next_received(fd: &OwnedFd, timeout: Duration) -> Option<Vec<u8>> {
    let end = Instant::now() + timeout;
    let mut buf = vec![0u8; 65536];
    loop {
        let left = end.checked_duration_since(Instant::now())?;
        let mut pfd = libc::pollfd {
            fd: fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        let r = unsafe { libc::poll(&mut pfd, 1, left.as_millis() as i32 + 1) };
        if r <= 0 {
            continue;
        }
        // SAFETY: sockaddr_ll is plain old data; all zeroes is valid.
        let mut from: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        let mut len = size_of::<libc::sockaddr_ll>() as u32;
        // SAFETY: `buf` and `from` are valid for the lengths passed.
        let n = unsafe {
            libc::recvfrom(
                fd.as_raw_fd(),
                buf.as_mut_ptr().cast(),
                buf.len(),
                0,
                std::ptr::from_mut(&mut from).cast(),
                &mut len,
            )
        };
        if n > 0 && from.sll_pkttype != libc::PACKET_OUTGOING {
            return Some(buf[..n as usize].to_vec());
        }
    }
}

const MAC: [u8; 6] = [0x52, 0x54, 0x00, 0xab, 0xcd, 0x01];

#[test]
fn going_live_on_a_persistent_tap_announces_the_mac_then_carries_frames() {
    let ns = Netns::new();
    // As the pair tests prepare their hosts: a persistent tap, created
    // before the VMM runs.
    ns.ip_in(&["tuntap", "add", "dev", "vdgl0", "mode", "tap", "vnet_hdr"]);
    ns.run(|| {
        let (sock, index) = packet_socket("vdgl0");
        let dropped = Arc::new(DroppedOutput::default());
        let mut net = Net::without_backend(
            "_net0",
            Some("vdgl0"),
            Some((Ipv4Addr::new(10, 77, 0, 1), Ipv4Addr::new(255, 255, 255, 0))),
            MAC,
            dropped.clone(),
        );
        let mem = memory();
        let mut q = queues();
        // Replaying: a TX frame is dropped, nothing reaches the tap.
        let f = frame(0x21, 60);
        mem.write_slice(&f, GuestAddress(BUF)).unwrap();
        desc(&mem, TX_BASE, 0, BUF, f.len() as u32, 0, 0);
        publish(&mem, TX_BASE, &[0]);
        run(&mut net, &mem, &mut q, TX_QUEUE).unwrap();
        assert_eq!(dropped.dropped(), 1);
        assert!(!net.has_backend());

        let start = Instant::now();
        net.go_live(&GoLive {
            waker: Arc::new(NoWake),
            sink: Arc::new(ImmediateOutput),
        })
        .unwrap();
        // Waiting for the repeats would take (ANNOUNCE_COUNT - 1) intervals
        // (100 ms); going live itself waits for the tap to be running,
        // which the kernel's link watch may take tens of ms to report on a
        // loaded host (this bound was 40 ms and failed once beside other
        // tests).
        let elapsed = start.elapsed();
        assert!(
            elapsed < ANNOUNCE_INTERVAL * (ANNOUNCE_COUNT as u32 - 1),
            "go-live waited for the repeated announcements: {elapsed:?}"
        );
        assert!(net.has_backend());
        // The announcements, and nothing before them (the replayed frame
        // was never written).
        for i in 0..ANNOUNCE_COUNT {
            let got = next_received(&sock, Duration::from_secs(5))
                .unwrap_or_else(|| panic!("announcement {i} not seen on the tap"));
            assert_eq!(got.len(), RARP_FRAME_LEN);
            assert_eq!(got[..], rarp_frame(MAC)[..], "announcement {i}");
        }
        // A TX frame after go-live reaches the tap.
        let f = frame(0x42, 80);
        mem.write_slice(&f, GuestAddress(BUF)).unwrap();
        desc(&mem, TX_BASE, 1, BUF, f.len() as u32, 0, 0);
        publish(&mem, TX_BASE, &[0, 1]);
        run(&mut net, &mem, &mut q, TX_QUEUE).unwrap();
        let got = next_received(&sock, Duration::from_secs(5)).expect("TX frame");
        assert_eq!(got, f[VNET_HDR_LEN..]);
        assert_eq!(dropped.dropped(), 1, "the old sink got a frame");
        // A frame sent out of the interface is read from the tap: an event.
        let mut out = [0u8; 64];
        out[..6].copy_from_slice(&MAC);
        out[6..12].copy_from_slice(&[0x02, 0, 0, 0, 0, 9]);
        out[12..14].copy_from_slice(&0x88b5u16.to_be_bytes());
        let to = sockaddr_ll(index, 0x88b5u16.to_be());
        // SAFETY: `out` and `to` are valid for the lengths passed.
        let n = unsafe {
            libc::sendto(
                sock.as_raw_fd(),
                out.as_ptr().cast(),
                out.len(),
                0,
                std::ptr::from_ref(&to).cast(),
                size_of::<libc::sockaddr_ll>() as u32,
            )
        };
        assert_eq!(n, 64, "sendto: {}", std::io::Error::last_os_error());
        // The host stack sends its own frames (IPv6 neighbour discovery)
        // out of the interface too: look for this one.
        let e = loop {
            let e = wait_event(&mut net);
            if e.get(VNET_HDR_LEN + 12..VNET_HDR_LEN + 14) == Some(&[0x88, 0xb5][..]) {
                break e;
            }
        };
        assert_eq!(&e[VNET_HDR_LEN..], &out[..]);
        // Twice is an error, and the device stays live.
        let err = net
            .go_live(&GoLive {
                waker: Arc::new(NoWake),
                sink: Arc::new(ImmediateOutput),
            })
            .unwrap_err();
        assert!(matches!(err, GoLiveError::AlreadyLive(_)), "{err}");
        assert!(net.has_backend());
    });
    // The host address was set and the tap brought up.
    let addr = ns.ip_in(&["-4", "addr", "show", "dev", "vdgl0"]);
    assert!(addr.contains("10.77.0.1/24"), "{addr}");
    assert!(addr.contains("UP"), "{addr}");
}

/// A frame the replay produced, kept by the backup's sink and performed
/// after go-live (the pair's resend of what the dead primary may have
/// held), reaches the tap; performed before go-live it would not.
#[test]
fn a_replayed_frame_performed_after_going_live_reaches_the_tap() {
    let ns = Netns::new();
    ns.ip_in(&["tuntap", "add", "dev", "vdgl1", "mode", "tap", "vnet_hdr"]);
    ns.run(|| {
        let (sock, _) = packet_socket("vdgl1");
        let kept = Arc::new(crate::output::testing::HoldingSink::default());
        let mut net = Net::without_backend("_net0", Some("vdgl1"), None, MAC, kept.clone());
        let mem = memory();
        let mut q = queues();
        let f = frame(0x5a, 70);
        mem.write_slice(&f, GuestAddress(BUF)).unwrap();
        desc(&mem, TX_BASE, 0, BUF, f.len() as u32, 0, 0);
        publish(&mem, TX_BASE, &[0]);
        run(&mut net, &mem, &mut q, TX_QUEUE).unwrap();
        net.go_live(&GoLive {
            waker: Arc::new(NoWake),
            sink: Arc::new(ImmediateOutput),
        })
        .unwrap();
        assert_eq!(kept.release_all(), vec![OutputKind::NetFrame { len: 70 }]);
        // The announcements first (sent at go-live), then the frame.
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let got = next_received(&sock, Duration::from_secs(5)).expect("the replayed frame");
            if got.len() != RARP_FRAME_LEN {
                assert_eq!(got, f[VNET_HDR_LEN..]);
                break;
            }
            assert!(Instant::now() < deadline, "only announcements on the tap");
        }
    });
}

#[test]
fn going_live_without_a_usable_tap_is_an_error() {
    let ns = Netns::new();
    ns.ip_in(&["tuntap", "add", "dev", "vdtun0", "mode", "tun"]);
    ns.run(|| {
        let mut net = Net::without_backend(
            "_net1",
            Some("vdtun0"),
            None,
            MAC,
            Arc::new(DroppedOutput::default()),
        );
        let err = net
            .go_live(&GoLive {
                waker: Arc::new(NoWake),
                sink: Arc::new(ImmediateOutput),
            })
            .unwrap_err();
        assert_eq!(
            crate::transport::error_chain(&err),
            "net device _net1 cannot go live: tap device: cannot attach to tap vdtun0: \
             Invalid argument (os error 22)"
        );
        assert!(!net.has_backend());
        // A device with no tap has nothing to announce on.
        assert!(matches!(net.announce(), Err(NetError::Announce(_))));
    });
}

#[test]
fn persistent_taps_made_by_ip_tuntap_are_attached() {
    let ns = Netns::new();
    // With and without vnet_hdr, single- and multi-queue.
    for (name, extra) in [
        ("vdp0", &[][..]),
        ("vdp1", &["vnet_hdr"][..]),
        ("vdp2", &["vnet_hdr", "multi_queue"][..]),
        ("vdp3", &["multi_queue"][..]),
    ] {
        let mut args = vec!["tuntap", "add", "dev", name, "mode", "tap"];
        args.extend_from_slice(extra);
        ns.ip_in(&args);
    }
    ns.run(|| {
        for name in ["vdp0", "vdp1", "vdp2", "vdp3"] {
            let tap = Tap::open(Some(name))
                .unwrap_or_else(|e| panic!("{name}: {}", crate::transport::error_chain(&e)));
            assert_eq!(tap.name(), name);
            tap.up().unwrap();
            // One frame with its virtio-net header goes through.
            let mut buf = [0u8; VNET_HDR_LEN + RARP_FRAME_LEN];
            buf[VNET_HDR_LEN..].copy_from_slice(&rarp_frame(MAC));
            let file = tap.into_file();
            assert_eq!((&file).write(&buf).unwrap(), buf.len(), "{name}");
        }
    });
    // Still there after the VMM's file is closed: persistent.
    let links = ns.ip_in(&["link", "show"]);
    for name in ["vdp0", "vdp1", "vdp2", "vdp3"] {
        assert!(links.contains(name), "{links}");
    }
}
