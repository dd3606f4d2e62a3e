// Copyright 2026 The ft-cloud-hypervisor authors.
// SPDX-License-Identifier: Apache-2.0

//! Removing a pair's processes and namespaces, also those of a test run
//! that was killed from outside, and checking that nothing is left.

use std::collections::BTreeSet;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::NS_PREFIX;

/// What [`PairNames::leftovers`] looks for once a
/// [`PairNet`](super::PairNet) is gone.
#[derive(Debug, Clone)]
pub struct PairNames {
    /// The namespaces' common prefix, `ftpair-<pid>-<n>-`.
    pub ns_prefix: String,
    /// The suffix of every interface name.
    pub tag: String,
    /// The namespaces' inodes (a process in one of them is a leak).
    pub inodes: BTreeSet<u64>,
}

/// The pids in namespace `name` (`ip netns pids`).
fn pids_in(name: &str) -> Vec<i32> {
    Command::new("ip")
        .args(["netns", "pids", name])
        .stderr(Stdio::null())
        .output()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .split_whitespace()
                .filter_map(|p| p.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// SIGKILLs every process in namespace `name`, and waits (a while) until
/// none is left in it.
pub fn kill_all_in(name: &str) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let pids = pids_in(name);
        if pids.is_empty() || Instant::now() > deadline {
            return;
        }
        for pid in pids {
            // SAFETY: kill(2) with a pid read from the namespace; it
            // touches no memory of ours.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Deletes pair namespaces left by test processes that no longer exist
/// (a test run killed from outside cannot clean up after itself), with the
/// processes still in them.
pub fn sweep_stale() {
    let Ok(out) = Command::new("ip").args(["netns", "list"]).output() else {
        return;
    };
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Some(name) = line.split_whitespace().next() else {
            continue;
        };
        let Some(pid) = name
            .strip_prefix(NS_PREFIX)
            .and_then(|rest| rest.split('-').next())
            .and_then(|pid| pid.parse::<u32>().ok())
        else {
            continue;
        };
        if !Path::new(&format!("/proc/{pid}")).exists() {
            kill_all_in(name);
            let _ = Command::new("ip").args(["netns", "del", name]).status();
        }
    }
}

impl PairNames {
    /// What is left of a pair after its [`PairNet`](super::PairNet) was
    /// dropped: namespaces with its prefix, interfaces with its tag in
    /// the root namespace, and processes (or threads of this process)
    /// still in one of its namespaces. Empty when everything was cleaned
    /// up.
    pub fn leftovers(&self) -> Vec<String> {
        let mut left = Vec::new();
        let out = Command::new("ip")
            .args(["netns", "list"])
            .output()
            .expect("ip netns list");
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            if line.starts_with(&self.ns_prefix) {
                left.push(format!("namespace {line}"));
            }
        }
        let out = Command::new("ip")
            .args(["-o", "link", "show"])
            .output()
            .expect("ip link show");
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            let name = line.split(": ").nth(1).unwrap_or_default();
            let name = name.split('@').next().unwrap_or_default();
            // Every name is a three-letter role and the tag.
            let ours = name.strip_suffix(&self.tag).is_some_and(|role| {
                role.len() == 3 && role.bytes().all(|b| b.is_ascii_lowercase())
            });
            if ours {
                left.push(format!("root-namespace link {name}"));
            }
        }
        // Namespace inodes are reused: one that now belongs to another named
        // namespace (another test's) is not ours.
        let mut reused = BTreeSet::new();
        if let Ok(dir) = std::fs::read_dir("/var/run/netns") {
            for entry in dir.flatten() {
                let ours = entry
                    .file_name()
                    .to_string_lossy()
                    .starts_with(&self.ns_prefix);
                if let (false, Ok(meta)) = (ours, entry.metadata()) {
                    reused.insert(meta.ino());
                }
            }
        }
        let mut ns_links = Vec::new();
        if let Ok(dir) = std::fs::read_dir("/proc") {
            for entry in dir.flatten() {
                ns_links.push(entry.path().join("ns/net"));
            }
        }
        if let Ok(dir) = std::fs::read_dir("/proc/self/task") {
            for entry in dir.flatten() {
                ns_links.push(entry.path().join("ns/net"));
            }
        }
        for link in ns_links {
            let Ok(target) = std::fs::read_link(&link) else {
                continue;
            };
            let inode = target
                .to_string_lossy()
                .strip_prefix("net:[")
                .and_then(|t| t.strip_suffix(']'))
                .and_then(|t| t.parse::<u64>().ok());
            if inode.is_some_and(|i| self.inodes.contains(&i) && !reused.contains(&i)) {
                left.push(format!("process in a pair namespace: {}", link.display()));
            }
        }
        left
    }
}
