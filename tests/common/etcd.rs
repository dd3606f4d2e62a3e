// Copyright 2026 The ft-cloud-hypervisor authors.
// SPDX-License-Identifier: Apache-2.0

//! A private etcd (Debian's `etcd-server`) for a test: started in a
//! namespace on an address the test created, stopped and its data
//! removed on drop.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpStream};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use super::netns::{KillOnDrop, Netns};

/// A running etcd.
pub struct Etcd {
    child: Option<KillOnDrop>,
    dir: PathBuf,
    ns: String,
    /// Its client address.
    pub addr: Ipv4Addr,
    /// Its client port.
    pub port: u16,
}

impl Etcd {
    /// Starts etcd in `ns` on `addr:port` (peer port `port + 1`), data in
    /// `dir`. Panics with its log if it does not become healthy.
    pub fn start(ns: &Netns, addr: Ipv4Addr, port: u16, dir: PathBuf) -> Etcd {
        std::fs::create_dir_all(&dir).expect("etcd dir");
        let client = format!("http://{addr}:{port}");
        let peer = format!("http://{addr}:{}", port + 1);
        let log = std::fs::File::create(dir.join("etcd.log")).expect("etcd log");
        let child = KillOnDrop::spawn(
            ns.command("etcd")
                .arg("--name=ft-test")
                .arg(format!("--data-dir={}", dir.join("data").display()))
                .arg(format!("--listen-client-urls={client}"))
                .arg(format!("--advertise-client-urls={client}"))
                .arg(format!("--listen-peer-urls={peer}"))
                .arg(format!("--initial-advertise-peer-urls={peer}"))
                .arg(format!("--initial-cluster=ft-test={peer}"))
                .stdin(std::process::Stdio::null())
                .stdout(log.try_clone().expect("log"))
                .stderr(log),
        );
        let etcd = Etcd {
            child: Some(child),
            dir,
            ns: ns.0.clone(),
            addr,
            port,
        };
        etcd.wait_healthy(ns);
        etcd
    }

    fn wait_healthy(&self, ns: &Netns) {
        let deadline = Instant::now() + Duration::from_secs(30);
        let (addr, port) = (self.addr, self.port);
        loop {
            let healthy = ns.run(|| {
                let mut reply = String::new();
                TcpStream::connect((addr, port)).is_ok_and(|mut s| {
                    s.set_read_timeout(Some(Duration::from_secs(2))).is_ok()
                        && s.write_all(b"GET /health HTTP/1.0\r\n\r\n").is_ok()
                        && s.read_to_string(&mut reply).is_ok()
                }) && reply.contains("\"health\":\"true\"")
            });
            if healthy {
                return;
            }
            let log = std::fs::read_to_string(self.dir.join("etcd.log")).unwrap_or_default();
            assert!(
                Instant::now() < deadline,
                "etcd did not start in {}:\n{log}",
                self.ns
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// `tiebreaker=` for keys under `prefix`.
    pub fn tiebreaker(&self, prefix: &str) -> String {
        format!("etcd:http://{}:{}/{prefix}", self.addr, self.port)
    }

    /// Stops etcd (kill -9).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill9();
        }
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
