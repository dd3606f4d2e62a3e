// Copyright 2026 The ft-cloud-hypervisor authors.
// SPDX-License-Identifier: Apache-2.0

//! The test guest's TCP key-value service (`workload=kv`) on the real VMM:
//! virtio-net (smoltcp in the guest) and virtio-blk (its log) together.
//!
//! Each test builds its own network: a fresh network namespace in which
//! the VMM runs (`ip netns exec`) and creates its tap with the host-side
//! address 192.168.249.1/24; the guest is 192.168.249.2. The client
//! (`ft-kv-client`'s library) runs on a thread that has entered that
//! namespace, so no traffic leaves it. The namespace is deleted at the end.

mod common;

use std::fs::File;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use common::netns::Netns;
use common::{test_guest, vmm_bin, wait_until, TempDir};
use ft_kv_client::{run_load, Connection, LoadConfig};

const GUEST: &str = "192.168.249.2";
const KV_PORT: u16 = 7000;

fn addr() -> SocketAddr {
    format!("{GUEST}:{KV_PORT}")
        .parse()
        .expect("a socket address")
}

/// A running VMM with the kv workload.
struct KvVm {
    child: Child,
    serial: PathBuf,
}

impl KvVm {
    /// Boots the guest in `ns` with `disk` (a `--disk` argument) and waits
    /// for the service to listen.
    fn start(ns: &Netns, dir: &TempDir, disk: &str) -> KvVm {
        static N: AtomicU32 = AtomicU32::new(0);
        let serial = dir.path(&format!("serial-{}.txt", N.fetch_add(1, Ordering::SeqCst)));
        let guest = test_guest().to_str().expect("utf-8 path").to_string();
        let child = Command::new("ip")
            .args(["netns", "exec", &ns.0, vmm_bin()])
            .args(["--kernel", &guest])
            .args([
                "--cmdline",
                &format!("workload=kv ip={GUEST}/24 gw=192.168.249.1"),
            ])
            .args(["--memory", "size=128M", "--disk", disk])
            .args(["--net", "tap=ftkv0,ip=192.168.249.1,mask=255.255.255.0"])
            .args([
                "--serial",
                &format!("file={}", serial.display()),
                "--console",
                "off",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn cloud-hypervisor");
        let mut vm = KvVm { child, serial };
        let up = wait_until(Duration::from_secs(60), || {
            vm.serial_text().contains("kv: listening on")
                || matches!(vm.child.try_wait(), Ok(Some(_)))
        });
        assert!(
            up && vm.serial_text().contains("kv: listening on"),
            "the service did not start; serial:\n{}\nstderr:\n{}",
            vm.serial_text(),
            vm.stop()
        );
        vm
    }

    fn serial_text(&self) -> String {
        std::fs::read_to_string(&self.serial).unwrap_or_default()
    }

    /// Kills the VMM (no clean shutdown: acknowledged data must already be
    /// in the disk file) and returns its stderr.
    fn stop(&mut self) -> String {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let mut err = String::new();
        if let Some(mut stderr) = self.child.stderr.take() {
            let _ = std::io::Read::read_to_string(&mut stderr, &mut err);
        }
        err
    }
}

impl Drop for KvVm {
    fn drop(&mut self) {
        self.stop();
    }
}

fn sparse_disk(dir: &TempDir, size: u64) -> PathBuf {
    let path = dir.path("kv.img");
    File::create(&path)
        .and_then(|f| f.set_len(size))
        .expect("create the disk image");
    path
}

fn connect() -> Connection {
    Connection::connect(addr(), Duration::from_secs(20)).expect("connect to the guest")
}

#[test]
fn round_trips_and_protocol_errors() {
    let dir = TempDir::new("kv-rt");
    let disk = sparse_disk(&dir, 16 << 20);
    let ns = Netns::new("ftkv");
    let vm = KvVm::start(&ns, &dir, &format!("path={}", disk.display()));
    assert!(
        vm.serial_text().contains("kv: formatted the disk"),
        "{}",
        vm.serial_text()
    );
    ns.run(|| {
        let mut c = connect();
        assert_eq!(c.get("foo").unwrap(), None);
        c.set("foo", "bar").unwrap();
        assert_eq!(c.get("foo").unwrap().as_deref(), Some("bar"));
        c.set("foo", "baz").unwrap();
        assert_eq!(c.get("foo").unwrap().as_deref(), Some("baz"));
        let key = "k".repeat(64);
        let value = "~".repeat(512);
        c.set(&key, &value).unwrap();
        assert_eq!(c.get(&key).unwrap(), Some(value));
        for (line, answer) in [
            ("DEL foo", "ERR unknown command (expected SET or GET)"),
            ("SET foo", "ERR SET needs a key and a value"),
            ("GET", "ERR GET needs one key"),
            ("GET a b", "ERR GET needs one key"),
            ("", "ERR empty request"),
        ] {
            assert_eq!(c.request(line).unwrap(), answer, "{line:?}");
        }
        let long_key = format!("GET {}", "k".repeat(65));
        assert_eq!(
            c.request(&long_key).unwrap(),
            "ERR key longer than 64 bytes"
        );
        let long_value = format!("SET k {}", "v".repeat(513));
        assert_eq!(
            c.request(&long_value).unwrap(),
            "ERR value longer than 512 bytes"
        );
        let huge = "x".repeat(3000);
        assert_eq!(c.request(&huge).unwrap(), "ERR line too long");
        // The connection still works after every error.
        assert_eq!(c.get("foo").unwrap().as_deref(), Some("baz"));
        // Pipelined requests are answered in order: the GET sent with the
        // SET is answered after it, with its value.
        assert_eq!(c.request("SET p 1\nGET p").unwrap(), "OK");
        assert_eq!(c.request("GET p").unwrap(), "VALUE 1");
    });
}

#[test]
fn many_concurrent_clients_all_verified() {
    let dir = TempDir::new("kv-many");
    let disk = sparse_disk(&dir, 64 << 20);
    let ns = Netns::new("ftkv");
    let _vm = KvVm::start(&ns, &dir, &format!("path={}", disk.display()));
    let report = ns.run(|| {
        let mut config = LoadConfig::new(addr());
        config.connections = 32;
        config.count = Some(100);
        config.keys = 10;
        config.timeout = Duration::from_secs(30);
        run_load(&config)
            .unwrap_or_else(|e| panic!("load failed: {e}: {:?}", std::error::Error::source(&e)))
    });
    assert_eq!(report.requests, 3200);
    assert!(report.sets > 0 && report.gets > 0);
    assert!(report.verified > 0);
}

#[test]
fn acknowledged_data_survives_a_vm_restart() {
    let dir = TempDir::new("kv-restart");
    let disk = sparse_disk(&dir, 16 << 20);
    let ns = Netns::new("ftkv");
    let disk_arg = format!("path={}", disk.display());
    let mut vm = KvVm::start(&ns, &dir, &disk_arg);
    ns.run(|| {
        let mut c = connect();
        for i in 0..20 {
            c.set(&format!("key{i}"), &format!("value{i}")).unwrap();
        }
        c.set("key0", "updated").unwrap();
    });
    // Killed, not shut down: an `OK` means the record is in the file.
    vm.stop();
    drop(vm);
    let vm = KvVm::start(&ns, &dir, &disk_arg);
    let serial = vm.serial_text();
    assert!(
        serial.contains("kv: log replayed: 21 records, 0 corrupt skipped, 20 keys"),
        "{serial}"
    );
    assert!(!serial.contains("formatted"), "{serial}");
    ns.run(|| {
        let mut c = connect();
        assert_eq!(c.get("key0").unwrap().as_deref(), Some("updated"));
        for i in 1..20 {
            assert_eq!(
                c.get(&format!("key{i}")).unwrap(),
                Some(format!("value{i}"))
            );
        }
        assert_eq!(c.get("key20").unwrap(), None);
    });
}

#[test]
fn a_read_only_disk_serves_gets_and_refuses_sets() {
    let dir = TempDir::new("kv-ro");
    let disk = sparse_disk(&dir, 16 << 20);
    let ns = Netns::new("ftkv");
    let mut vm = KvVm::start(&ns, &dir, &format!("path={}", disk.display()));
    ns.run(|| connect().set("kept", "yes").unwrap());
    vm.stop();
    drop(vm);
    let before = std::fs::read(&disk).expect("read the image");
    let vm = KvVm::start(&ns, &dir, &format!("path={},readonly=on", disk.display()));
    ns.run(|| {
        let mut c = connect();
        assert_eq!(c.get("kept").unwrap().as_deref(), Some("yes"));
        assert_eq!(
            c.request("SET new value").unwrap(),
            "ERR the disk is read-only"
        );
        assert_eq!(c.get("new").unwrap(), None);
    });
    drop(vm);
    assert!(
        std::fs::read(&disk).expect("read the image") == before,
        "the read-only image changed"
    );
}

#[test]
fn a_corrupt_record_is_reported_and_skipped() {
    let dir = TempDir::new("kv-corrupt");
    let disk = sparse_disk(&dir, 16 << 20);
    let ns = Netns::new("ftkv");
    let disk_arg = format!("path={}", disk.display());
    let mut vm = KvVm::start(&ns, &dir, &disk_arg);
    ns.run(|| {
        let mut c = connect();
        // One client, one SET at a time: records land in slots 0, 1, 2.
        c.set("a", "first").unwrap();
        c.set("b", "second").unwrap();
        c.set("c", "third").unwrap();
    });
    vm.stop();
    drop(vm);
    // Slot 1 starts at sector 8 + 2; flip a byte of its value ("second").
    let mut image = std::fs::read(&disk).expect("read the image");
    let value_at = 8 * 512 + 1024 + 24 + 1;
    assert_eq!(&image[value_at..value_at + 6], b"second");
    image[value_at] ^= 0x01;
    std::fs::write(&disk, &image).expect("write the image");

    let vm = KvVm::start(&ns, &dir, &disk_arg);
    let serial = vm.serial_text();
    assert!(
        serial.contains("kv: corrupt record in slot 1 skipped: checksum mismatch"),
        "{serial}"
    );
    assert!(
        serial.contains("kv: log replayed: 2 records, 1 corrupt skipped, 2 keys"),
        "{serial}"
    );
    ns.run(|| {
        let mut c = connect();
        assert_eq!(c.get("a").unwrap().as_deref(), Some("first"));
        assert_eq!(c.get("b").unwrap(), None);
        assert_eq!(c.get("c").unwrap().as_deref(), Some("third"));
        c.set("b", "again").unwrap();
        assert_eq!(c.get("b").unwrap().as_deref(), Some("again"));
    });
}

#[test]
fn a_foreign_disk_is_formatted() {
    let dir = TempDir::new("kv-foreign");
    let disk = dir.path("kv.img");
    std::fs::write(&disk, vec![0x5au8; 4 << 20]).expect("write the image");
    let ns = Netns::new("ftkv");
    let vm = KvVm::start(&ns, &dir, &format!("path={}", disk.display()));
    let serial = vm.serial_text();
    assert!(serial.contains("kv: formatted the disk"), "{serial}");
    ns.run(|| {
        let mut c = connect();
        assert_eq!(c.get("anything").unwrap(), None);
        c.set("x", "y").unwrap();
        assert_eq!(c.get("x").unwrap().as_deref(), Some("y"));
    });
}
