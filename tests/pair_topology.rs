// Copyright 2026 The ft-cloud-hypervisor authors.
// SPDX-License-Identifier: Apache-2.0

//! The two-hosts-on-one-machine topology the fault-tolerant pair's tests
//! run in (`tests/common/pair.rs`), proved with plain VMs: the test
//! guest's KV service on host A's bridged tap serves a client across the
//! LAN; the same guest (same MAC, IP and disk) moved to host B is reached
//! again, with and without a RARP announcement (the times are printed);
//! the logging link and the LAN ports are cut alone; and nothing is left
//! behind, also after a panic.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::pair::{GuestVmm, Host, PairNames, PairNet, HOST_A_LAN, HOST_B_LAN, LOG_B};
use common::{test_guest, TempDir};
use ft_kv_client::{
    run_stream, Connection, StreamConfig, StreamControl, StreamEnd, StreamReport, VerifiedOn,
};

/// Boots the KV guest on `host` with `disk` and waits for the service.
fn start_kv(net: &PairNet, host: Host, dir: &TempDir, disk: &Path, name: &str) -> GuestVmm {
    let guest = test_guest().to_str().expect("utf-8 path").to_string();
    let mut vm = net.spawn_vmm(
        host,
        &dir.0,
        name,
        &[
            "--kernel",
            &guest,
            "--cmdline",
            &net.kv_cmdline(),
            "--memory",
            "size=128M",
            "--disk",
            &format!("path={}", disk.display()),
            "--net",
            &net.guest_net(host),
        ],
    );
    vm.wait_serial("kv: listening on", Duration::from_secs(60));
    vm
}

fn sparse_disk(dir: &TempDir) -> PathBuf {
    let path = dir.path("kv.img");
    std::fs::File::create(&path)
        .and_then(|f| f.set_len(16 << 20))
        .expect("create the disk image");
    path
}

/// A verified stream from the client namespace.
fn stream(net: &PairNet, seconds: f64, prefix: &str) -> StreamReport {
    let mut config = StreamConfig::new(net.kv_addr());
    config.duration = Some(Duration::from_secs_f64(seconds));
    config.get_every = 4;
    config.prefix = format!("{prefix}{}", net.tag);
    config.connect_timeout = Duration::from_secs(20);
    net.client
        .run(|| run_stream(&config))
        .unwrap_or_else(|e| panic!("stream: {e}: {:?}", std::error::Error::source(&e)))
}

fn assert_verified(report: &StreamReport) {
    assert!(report.ok(), "{report}: {:?}", report.bad_keys);
    assert!(report.acked > 0, "{report}");
    let v = report.verification.as_ref().expect("verified");
    assert_eq!(v.on, VerifiedOn::SameConnection, "{report}");
    assert_eq!(v.checked, report.acked, "{report}");
    assert_eq!(
        report.timeline.len() as u64,
        report.acked + report.gets,
        "{report}"
    );
}

fn assert_clean(names: &PairNames) {
    let left = names.leftovers();
    assert!(left.is_empty(), "left behind: {left:#?}");
}

#[test]
fn a_plain_vm_on_host_a_serves_the_client_over_the_lan() {
    let dir = TempDir::new("pair-lan");
    let disk = sparse_disk(&dir);
    let net = PairNet::new();
    let names = net.names();
    let vm = start_kv(&net, Host::A, &dir, &disk, "a");
    let report = stream(&net, 2.0, "a");
    eprintln!("pair_topology: host A over the LAN: {report}");
    assert_verified(&report);
    assert!(report.gets > 0, "{report}");
    // The traffic crossed the LAN bridge: it learnt the guest behind
    // host A's port.
    assert_eq!(net.lan_port_of(&net.guest_mac), Some(Host::A));
    drop(vm);
    drop(net);
    assert_clean(&names);
}

/// Polls the guest from the client with fresh connections (one SYN each,
/// every ~300 ms) until `GET key` answers `value`; the time it took.
fn time_to_reach(net: &PairNet, key: &str, value: &str, limit: Duration) -> Option<Duration> {
    let addr: SocketAddr = net.kv_addr();
    net.client.run(|| {
        let start = Instant::now();
        while start.elapsed() < limit {
            let attempt = Instant::now();
            if let Ok(mut c) = Connection::connect(addr, Duration::from_millis(250)) {
                let _ = c.set_timeout(Duration::from_secs(1));
                if c.get(key).ok().flatten().as_deref() == Some(value) {
                    return Some(start.elapsed());
                }
            }
            std::thread::sleep(Duration::from_millis(300).saturating_sub(attempt.elapsed()));
        }
        None
    })
}

/// Runs a stream on host A, kills that VM with SIGKILL, boots the same
/// guest (MAC, IP, disk) on host B, optionally announces it, and returns
/// how long the client took to reach it, after a check that the key set
/// on host A reads back on host B and a verified stream there.
fn move_guest_to_host_b(announce: bool) -> Duration {
    let dir = TempDir::new("pair-move");
    let disk = sparse_disk(&dir);
    let net = PairNet::new();
    let names = net.names();
    let mut vm_a = start_kv(&net, Host::A, &dir, &disk, "a");
    let before = stream(&net, 1.0, "a");
    assert_verified(&before);
    assert_eq!(net.lan_port_of(&net.guest_mac), Some(Host::A));
    net.client.run(|| {
        let mut c = Connection::connect(net.kv_addr(), Duration::from_secs(10)).expect("connect");
        c.set("moved", "from-a").expect("SET moved");
    });
    vm_a.kill9();
    let vm_b = start_kv(&net, Host::B, &dir, &disk, "b");
    if announce {
        net.announce_guest(Host::B);
    }
    let limit = Duration::from_secs(120);
    let took = time_to_reach(&net, "moved", "from-a", limit);
    let fdb = net.lan_port_of(&net.guest_mac);
    let took = took.unwrap_or_else(|| {
        panic!(
            "the client did not reach the guest on host B within {limit:?} (LAN bridge port: {fdb:?}); serial:\n{}",
            vm_b.serial_text()
        )
    });
    eprintln!(
        "pair_topology: guest moved to host B ({}): reachable {:.3} s after it listened; LAN bridge now has it behind {fdb:?}",
        if announce {
            "RARP announced"
        } else {
            "no announcement"
        },
        took.as_secs_f64()
    );
    assert_eq!(fdb, Some(Host::B));
    let after = stream(&net, 1.0, "b");
    eprintln!("pair_topology: host B over the LAN: {after}");
    assert_verified(&after);
    drop(vm_b);
    drop(vm_a);
    drop(net);
    assert_clean(&names);
    took
}

#[test]
fn the_same_guest_on_host_b_is_reached_without_an_announcement() {
    // Nothing tells the LAN bridge that the MAC moved: it keeps
    // forwarding to host A's port until the client's ARP entry goes
    // stale, its unicast probes fail and it asks by broadcast, which
    // reaches host B; the guest's reply teaches the bridge. The time is
    // the measurement (printed).
    move_guest_to_host_b(false);
}

#[test]
fn an_announcement_moves_the_guest_at_once() {
    let took = move_guest_to_host_b(true);
    // The first poll gets through: no ARP or bridge ageing involved.
    assert!(took < Duration::from_secs(5), "{took:?}");
}

#[test]
fn a_stream_across_a_plain_vm_move_is_reset_and_loses_nothing() {
    // What the failover tests must never see, shown to be seen: a plain
    // VM has no replica, so the guest booted on host B does not know the
    // client's connection and answers its next segment with a reset. The
    // SETs acknowledged before the kill are on the shared disk and read
    // back on a new connection.
    let dir = TempDir::new("pair-reset");
    let disk = sparse_disk(&dir);
    let net = PairNet::new();
    let names = net.names();
    let mut vm_a = start_kv(&net, Host::A, &dir, &disk, "a");
    let control = std::sync::Arc::new(StreamControl::default());
    let mut config = StreamConfig::new(net.kv_addr());
    config.duration = Some(Duration::from_secs(60));
    config.get_every = 4;
    config.prefix = format!("r{}", net.tag);
    config.control = Some(control.clone());
    let spawned = Instant::now();
    let (report, vm_b, b_up) = std::thread::scope(|s| {
        let stream = s.spawn(|| net.client.run(|| run_stream(&config)));
        let started = common::wait_until(Duration::from_secs(30), || control.acked() >= 200);
        assert!(started, "the stream did not start");
        vm_a.kill9();
        let vm_b = start_kv(&net, Host::B, &dir, &disk, "b");
        let b_up = Instant::now();
        net.announce_guest(Host::B);
        let report = stream
            .join()
            .expect("the stream thread")
            .expect("the stream");
        (report, vm_b, b_up)
    });
    eprintln!("pair_topology: a stream across a plain VM move: {report}");
    // The reset came from the guest on host B: the stream (which began
    // after `spawned`) ended after that guest listened.
    assert!(spawned + report.ended_at >= b_up, "{report}");
    assert_eq!(report.end, StreamEnd::Reset, "{report}");
    assert!(report.reset() && !report.ok());
    assert!(report.acked >= 200, "{report}");
    let v = report.verification.as_ref().expect("verified");
    assert_eq!(v.on, VerifiedOn::NewConnection, "{report}");
    assert_eq!(v.end, StreamEnd::Completed, "{report}");
    assert_eq!(v.checked, report.acked, "{report}");
    assert_eq!((report.lost, report.wrong), (0, 0), "{report}");
    drop(vm_b);
    drop(vm_a);
    drop(net);
    assert_clean(&names);
}

/// One line there and back on `a` and `b` (the ends of one connection).
fn round_trip(a: &mut TcpStream, b: &mut TcpStream, text: &str) {
    a.write_all(text.as_bytes()).expect("write");
    let mut got = vec![0u8; text.len()];
    b.read_exact(&mut got).expect("read");
    assert_eq!(got, text.as_bytes());
}

/// A connection from `from` to a listener of `to`, both sockets created
/// in their namespaces (sockets stay in the namespace they were made in).
fn connect(
    from: &common::netns::Netns,
    listener: &TcpListener,
    timeout: Duration,
) -> std::io::Result<(TcpStream, TcpStream)> {
    let addr = listener.local_addr().expect("listener address");
    let client = from.run(|| TcpStream::connect_timeout(&addr, timeout))?;
    let (server, _) = listener.accept()?;
    client.set_read_timeout(Some(Duration::from_secs(10)))?;
    server.set_read_timeout(Some(Duration::from_secs(10)))?;
    Ok((client, server))
}

#[test]
fn the_logging_link_and_the_lan_ports_are_cut_alone() {
    let built = Instant::now();
    let net = PairNet::new();
    eprintln!(
        "pair_topology: topology built and reachable in {:.3} s",
        built.elapsed().as_secs_f64()
    );
    let names = net.names();
    let log_b = net
        .host_b
        .run(|| TcpListener::bind((LOG_B, 0)))
        .expect("listen on the logging link");
    let lan_a = net
        .host_a
        .run(|| TcpListener::bind((HOST_A_LAN, 0)))
        .expect("listen on host A's LAN address");
    let lan_b = net
        .host_b
        .run(|| TcpListener::bind((HOST_B_LAN, 0)))
        .expect("listen on host B's LAN address");
    let quick = Duration::from_secs(1);
    let (mut log_a_end, mut log_b_end) =
        connect(&net.host_a, &log_b, quick).expect("A reaches B on the logging link");
    round_trip(&mut log_a_end, &mut log_b_end, "log-1");
    round_trip(&mut log_b_end, &mut log_a_end, "ack-1");
    connect(&net.client, &lan_a, quick).expect("the client reaches host A");

    net.cut_log_link();
    assert!(
        connect(&net.host_a, &log_b, quick).is_err(),
        "a new logging connection got through a cut link"
    );
    log_a_end.write_all(b"log-2").expect("queue while cut");
    log_b_end
        .set_read_timeout(Some(Duration::from_millis(1500)))
        .expect("set a timeout");
    let mut buf = [0u8; 5];
    let err = log_b_end
        .read_exact(&mut buf)
        .expect_err("data crossed a cut logging link");
    assert!(
        matches!(
            err.kind(),
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
        ),
        "{err}"
    );
    // The LAN is untouched: the client reaches both hosts.
    for lan in [&lan_a, &lan_b] {
        let (mut c, mut s) = connect(&net.client, lan, quick).expect("the LAN works");
        round_trip(&mut c, &mut s, "lan");
    }

    net.heal_log_link();
    // TCP retransmits what was queued during the cut; the connection
    // survived.
    log_b_end
        .set_read_timeout(Some(Duration::from_secs(20)))
        .expect("set a timeout");
    log_b_end
        .read_exact(&mut buf)
        .expect("the queued data arrives");
    assert_eq!(&buf, b"log-2");
    round_trip(&mut log_b_end, &mut log_a_end, "ack-2");

    net.cut_lan(Host::A);
    assert!(
        connect(&net.client, &lan_a, quick).is_err(),
        "the client reached host A through a cut LAN port"
    );
    let (mut c, mut s) = connect(&net.client, &lan_b, quick).expect("host B is still on the LAN");
    round_trip(&mut c, &mut s, "lan-b");
    let (mut a, mut b) =
        connect(&net.host_a, &log_b, quick).expect("the logging link is unaffected");
    round_trip(&mut a, &mut b, "log-3");
    net.heal_lan(Host::A);
    let (mut c, mut s) =
        connect(&net.client, &lan_a, Duration::from_secs(5)).expect("host A is back on the LAN");
    round_trip(&mut c, &mut s, "lan-a");

    drop((log_a_end, log_b_end, a, b, c, s));
    drop((log_b, lan_a, lan_b));
    let removed = Instant::now();
    drop(net);
    eprintln!(
        "pair_topology: topology removed in {:.3} s",
        removed.elapsed().as_secs_f64()
    );
    assert_clean(&names);
}

#[test]
fn a_panicking_test_leaves_nothing_behind() {
    let names = std::sync::Mutex::new(None);
    let result = std::panic::catch_unwind(|| {
        let net = PairNet::new();
        *names.lock().unwrap() = Some(net.names());
        // A child the test holds, and an orphan only the namespace knows.
        let _child = net.spawn(&net.host_a, "sleep", &["600"]);
        let (ok, out) = net
            .host_b
            .exec(&["sh", "-c", "sleep 600 >/dev/null 2>&1 & echo started"]);
        assert!(ok && out.contains("started"), "{out}");
        // The check sees a live pair: its namespaces and the processes.
        let live = net.names().leftovers();
        assert_eq!(
            live.iter().filter(|l| l.starts_with("namespace ")).count(),
            4,
            "{live:#?}"
        );
        assert!(
            live.iter()
                .filter(|l| l.starts_with("process in a pair namespace"))
                .count()
                >= 2,
            "{live:#?}"
        );
        panic!("a test failing with the pair up");
    });
    assert!(result.is_err());
    let names = names.lock().unwrap().take().expect("the pair was built");
    assert_clean(&names);
}

#[test]
fn a_stream_to_nobody_times_out_and_is_not_called_a_reset() {
    // A guest address with no guest behind it: the client's connection
    // attempt fails with a clear error; with a listener that never
    // answers (host A's LAN address), the stream ends in a timeout.
    let net = PairNet::new();
    let names = net.names();
    let silent = net
        .host_a
        .run(|| TcpListener::bind((HOST_A_LAN, 0)))
        .expect("listen");
    let mut config = StreamConfig::new(silent.local_addr().expect("address"));
    config.reply_timeout = Duration::from_millis(500);
    let report = net.client.run(|| run_stream(&config)).expect("connected");
    assert_eq!(report.end, StreamEnd::Timeout, "{report}");
    assert!(!report.reset() && !report.ok());
    let mut config = StreamConfig::new(net.kv_addr());
    config.connect_timeout = Duration::from_millis(500);
    let err = net
        .client
        .run(|| run_stream(&config))
        .expect_err("no guest");
    assert!(
        std::error::Error::source(&err).is_some_and(|e| e
            .to_string()
            .starts_with("cannot connect to 192.168.253.10:7000")),
        "{err}"
    );
    drop(silent);
    drop(net);
    assert_clean(&names);
}
