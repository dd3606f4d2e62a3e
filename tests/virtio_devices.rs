// Copyright 2026 The ft-cloud-hypervisor authors.
// SPDX-License-Identifier: Apache-2.0

//! The VMM side of virtio-blk and virtio-net, from the host: devices are
//! created from `--disk` / `--net`, shown by `vm.info` and `vm.counters`,
//! the tap is created and configured (in a network namespace of the test)
//! and removed with the VM, and unusable disks or taps are clear errors at
//! start. The guest drivers' own tests are `disk_workload` and `kv_service`.

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::netns::Netns;
use common::{api, run_vmm, test_guest, text, vmm_bin, wait_timeout, wait_until, TempDir};

fn sparse(dir: &TempDir, name: &str, size: u64) -> String {
    let path = dir.path(name);
    let f = std::fs::File::create(&path).expect("create disk image");
    f.set_len(size).expect("size disk image");
    path.to_str().expect("utf-8 path").to_string()
}

#[test]
fn devices_show_in_vm_info_and_counters_and_the_tap_is_configured() {
    let dir = TempDir::new("virtio-info");
    let ns = Netns::new("ftvd");
    let disk = sparse(&dir, "a.img", 1 << 20);
    let disk_arg = format!("path={disk},readonly=on,id=data");
    let socket = dir.path("api.sock");
    let log = dir.path("vmm.log");
    let vmm_log = || std::fs::read_to_string(&log).unwrap_or_default();
    let mut child = Command::new("ip")
        .args(["netns", "exec", &ns.0, vmm_bin()])
        .args(["--kernel", test_guest().to_str().expect("utf-8 path")])
        .args(["--cmdline", "workload=idle"])
        .args(["--memory", "size=64M", "--serial", "off"])
        .args(["--disk", &disk_arg])
        .args([
            "--net",
            "tap=ftvd0,mac=12:34:56:78:9a:bc,ip=192.168.249.1,mask=255.255.255.0",
        ])
        .arg("--api-socket")
        .arg(&socket)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).expect("create the VMM log"))
        .spawn()
        .expect("start the VMM");
    let up = wait_until(Duration::from_secs(20), || {
        socket.exists() && api(&socket, "GET", "vm.info", None).0 == 200
    });
    assert!(up, "the VMM did not answer vm.info");

    let (code, body) = api(&socket, "GET", "vm.info", None);
    assert_eq!(code, 200, "{body}");
    let info: serde_json::Value = serde_json::from_str(&body).expect("vm.info is JSON");
    let tree = &info["device_tree"];
    assert_eq!(tree["data"]["parent"], "_virtio-pci-data");
    let pci = &tree["_virtio-pci-data"];
    assert_eq!(pci["pci_bdf"], "0000:00:01.0");
    assert_eq!(pci["children"][0], "data");
    let bar = &pci["resources"][0]["PciBar"];
    assert_eq!(bar["base"], 0xc000_0000u64);
    assert_eq!(bar["type_"], "Mmio32");
    // Ids come from one counter, disks first, as upstream.
    assert_eq!(tree["_virtio-pci-_net1"]["pci_bdf"], "0000:00:02.0");
    assert_eq!(info["config"]["disks"][0]["readonly"], true);
    assert_eq!(info["config"]["net"][0]["mac"], "12:34:56:78:9a:bc");
    assert_eq!(info["config"]["net"][0]["tap"], "ftvd0");

    // The tap exists in the namespace, up, with the host-side address.
    let (ok, addr) = ns.exec(&["ip", "-br", "addr", "show", "ftvd0"]);
    assert!(ok, "{addr}");
    assert!(addr.contains("192.168.249.1/24"), "{addr}");
    // Frames towards a guest without a driver (ARP requests for its
    // address) are read from the tap and dropped, harmlessly.
    ns.run(|| {
        let udp = std::net::UdpSocket::bind("192.168.249.1:0").expect("bind in the namespace");
        for _ in 0..3 {
            let _ = udp.send_to(b"hello", "192.168.249.2:9");
            std::thread::sleep(Duration::from_millis(100));
        }
    });

    let (code, body) = api(&socket, "GET", "vm.counters", None);
    assert_eq!(code, 200, "{body}");
    let counters: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    for key in ["read_bytes", "read_ops", "write_bytes", "write_ops"] {
        assert_eq!(counters["data"][key], 0, "{key}: {body}");
    }
    for key in ["rx_bytes", "rx_frames", "tx_bytes", "tx_frames"] {
        assert_eq!(counters["_net1"][key], 0, "{key}: {body}");
    }
    assert!(counters["vcpu0"]["exits"].as_u64().is_some(), "{body}");
    let (code, _) = api(&socket, "GET", "vm.info", None);
    assert_eq!(code, 200, "still running");

    // A reboot closes the devices and opens them again (the tap too).
    let reboot = std::panic::catch_unwind(|| api(&socket, "PUT", "vm.reboot", None));
    let Ok((code, body)) = reboot else {
        panic!("vm.reboot got no answer; VMM log: {}", vmm_log());
    };
    assert_eq!(code, 204, "{body} {}", vmm_log());
    let (ok, addr) = ns.exec(&["ip", "-br", "addr", "show", "ftvd0"]);
    assert!(ok && addr.contains("192.168.249.1/24"), "{addr}");
    let (code, body) = api(&socket, "GET", "vm.counters", None);
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("\"_net1\""), "{body}");

    // Shutting the VM down closes its devices: the tap the VMM created goes.
    let (code, body) = api(&socket, "PUT", "vm.shutdown", None);
    assert_eq!(code, 204, "{body}");
    let (ok, _) = ns.exec(&["ip", "link", "show", "ftvd0"]);
    assert!(!ok, "tap still present after vm.shutdown");
    // The answer to vmm.shutdown may be lost as the process exits.
    let _ = std::panic::catch_unwind(|| api(&socket, "PUT", "vmm.shutdown", None));
    let status = wait_timeout(&mut child, Duration::from_secs(20));
    if status.is_none() {
        let _ = child.kill();
    }
    assert!(status.is_some(), "the VMM did not exit");
}

fn assert_start_error(args: &[&str], needles: &[&str]) {
    let guest = test_guest().to_str().expect("utf-8 path").to_string();
    let mut all = vec!["--kernel", &guest, "--cmdline", "workload=idle"];
    all.extend_from_slice(args);
    let out = run_vmm(&all, Duration::from_secs(30));
    let err = text(&out.stderr);
    assert!(!out.status.success(), "{args:?} was accepted");
    assert!(!err.contains("panicked"), "{args:?} panicked: {err}");
    for needle in needles {
        assert!(
            err.contains(needle),
            "{args:?}: expected {needle:?} in: {err}"
        );
    }
}

#[test]
fn unusable_disks_are_clear_errors_at_start() {
    let dir = TempDir::new("virtio-bad-disk");
    let missing = dir.path("missing.img");
    let missing = missing.to_str().expect("utf-8 path");
    assert_start_error(
        &["--disk", &format!("path={missing}")],
        &["cannot open disk image", missing, "No such file"],
    );
    // A directory is not a disk image, read-write or read-only.
    let d = dir.path("");
    let d = d.to_str().expect("utf-8 path");
    assert_start_error(
        &["--disk", &format!("path={d}")],
        &["cannot open disk image"],
    );
    assert_start_error(
        &["--disk", &format!("path={d},readonly=on")],
        &["not a usable regular file"],
    );
    assert_start_error(&["--disk", "readonly=on"], &["--disk needs path=FILE"]);
    assert_start_error(
        &["--disk", "path=/x,iommu=on"],
        &["--disk iommu is not supported yet"],
    );
    // direct=on is supported; a directory is still no disk image.
    assert_start_error(
        &["--disk", &format!("path={d},direct=on")],
        &["cannot open disk image", "(read-write, O_DIRECT)"],
    );
    let img = sparse(&dir, "ok.img", 4096);
    assert_start_error(
        &[
            "--disk",
            &format!("path={img},id=a"),
            &format!("path={img},id=a"),
        ],
        &["device id \"a\" is used twice"],
    );
}

#[test]
fn unusable_taps_are_clear_errors_at_start() {
    // An existing interface that is not a tap.
    assert_start_error(&["--net", "tap=lo"], &["cannot attach to tap lo"]);
    assert_start_error(&["--net", "tap=a-name-far-too-long"], &["invalid tap name"]);
    assert_start_error(
        &["--net", "tap=ftvdx,ip=192.168.249.1"],
        &["ip and mask go together"],
    );
    assert_start_error(
        &["--net", "tap=ftvdx,mac=01:00:00:00:00:01"],
        &["multicast"],
    );
    assert_start_error(
        &["--net", "tap=ftvdx,mtu=9000"],
        &["--net mtu is not supported yet"],
    );
}

#[test]
fn malformed_chains_from_the_guest_are_refused_and_the_device_serves_on() {
    let dir = TempDir::new("virtio-malformed");
    let disk = sparse(&dir, "m.img", 1 << 20);
    let guest = test_guest().to_str().expect("utf-8 path").to_string();
    let out = run_vmm(
        &[
            "--kernel",
            &guest,
            "--cmdline",
            "workload=malformed kind=all",
            "--memory",
            "size=64M",
            "--serial",
            "tty",
            "--disk",
            &format!("path={disk}"),
            "-v",
        ],
        Duration::from_secs(60),
    );
    let stdout = text(&out.stdout);
    let stderr = text(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    for kind in ["index", "loop", "range", "direction"] {
        assert!(
            stdout.contains(&format!("malformed: {kind}: device needs reset")),
            "{kind}: {stdout}"
        );
        assert!(
            stdout.contains(&format!("malformed: {kind}: device works after reset")),
            "{kind}: {stdout}"
        );
    }
    assert!(stdout.contains("malformed=ok"), "{stdout}");
    // The VMM says why, once per refusal.
    assert_eq!(stderr.matches("device needs reset").count(), 4, "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn disks_through_the_api() {
    let dir = TempDir::new("virtio-api");
    let socket = dir.path("api.sock");
    let mut child = Command::new(vmm_bin())
        .arg("--api-socket")
        .arg(&socket)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start the VMM");
    assert!(
        wait_until(Duration::from_secs(20), || socket.exists()),
        "no API socket"
    );
    let guest = test_guest().to_str().expect("utf-8 path");
    let config = |disks: &str| {
        format!(
            r#"{{"payload":{{"kernel":"{guest}","cmdline":"workload=idle"}},
                "memory":{{"size":67108864}},"serial":{{"mode":"Off"}},"disks":{disks}}}"#
        )
    };
    // An option this VMM does not implement is refused at vm.create.
    let (code, body) = api(
        &socket,
        "PUT",
        "vm.create",
        Some(&config(r#"[{"path":"/x","iommu":true}]"#)),
    );
    assert_eq!(code, 500, "{body}");
    assert!(
        body.contains("--disk iommu=on is not supported yet"),
        "{body}"
    );
    // A missing file is refused at vm.boot, and the VMM serves on.
    let missing = dir.path("missing.img");
    let missing = missing.to_str().expect("utf-8 path");
    let (code, body) = api(
        &socket,
        "PUT",
        "vm.create",
        Some(&config(&format!(r#"[{{"path":"{missing}"}}]"#))),
    );
    assert_eq!(code, 204, "{body}");
    let (code, body) = api(&socket, "PUT", "vm.boot", None);
    assert_eq!(code, 500, "{body}");
    assert!(body.contains(missing), "{body}");
    let (code, _) = api(&socket, "PUT", "vm.delete", None);
    assert_eq!(code, 204);
    let disk = sparse(&dir, "ok.img", 1 << 20);
    let (code, body) = api(
        &socket,
        "PUT",
        "vm.create",
        Some(&config(&format!(r#"[{{"path":"{disk}","id":"d0"}}]"#))),
    );
    assert_eq!(code, 204, "{body}");
    let (code, body) = api(&socket, "PUT", "vm.boot", None);
    assert_eq!(code, 204, "{body}");
    let (code, body) = api(&socket, "GET", "vm.info", None);
    assert_eq!(code, 200, "{body}");
    let info: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(
        info["device_tree"]["_virtio-pci-d0"]["pci_bdf"],
        "0000:00:01.0"
    );
    assert_eq!(info["config"]["disks"][0]["queue_size"], 128);
    let (code, _) = api(&socket, "PUT", "vm.shutdown", None);
    assert_eq!(code, 204);
    let _ = std::panic::catch_unwind(|| api(&socket, "PUT", "vmm.shutdown", None));
    if wait_timeout(&mut child, Duration::from_secs(20)).is_none() {
        let _ = child.kill();
        panic!("the VMM did not exit");
    }
}
