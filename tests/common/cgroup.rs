// Copyright 2026 The ft-cloud-hypervisor authors.
// SPDX-License-Identifier: Apache-2.0

//! A cgroup (v1 `cpu` controller) that starves its processes of CPU: a
//! CFS budget per period, so that they all stop together for the rest of
//! each period once the budget is spent. Removed on drop however the test
//! ends (its processes are moved back to the root group first).

use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

const ROOT: &str = "/sys/fs/cgroup/cpu";

pub struct CpuLimit {
    dir: PathBuf,
}

fn write(path: &PathBuf, value: &str) {
    std::fs::write(path, value).unwrap_or_else(|e| panic!("write {value} to {path:?}: {e}"));
}

impl CpuLimit {
    /// A new group allowing `budget` of CPU time per `period`, and
    /// `rt_budget` per period to real-time threads (a child group has none
    /// unless given some, and then cannot take real-time threads at all).
    pub fn new(tag: &str, budget: Duration, period: Duration, rt_budget: Duration) -> CpuLimit {
        static N: AtomicU32 = AtomicU32::new(0);
        let dir = PathBuf::from(ROOT).join(format!(
            "{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir(&dir).unwrap_or_else(|e| panic!("create {dir:?}: {e}"));
        let limit = CpuLimit { dir };
        let us = |d: Duration| d.as_micros().to_string();
        write(&limit.dir.join("cpu.cfs_period_us"), &us(period));
        write(&limit.dir.join("cpu.cfs_quota_us"), &us(budget));
        write(&limit.dir.join("cpu.rt_period_us"), &us(period));
        write(&limit.dir.join("cpu.rt_runtime_us"), &us(rt_budget));
        limit
    }

    /// Moves process `pid` (all its threads) into the group.
    pub fn add(&self, pid: u32) {
        write(&self.dir.join("cgroup.procs"), &pid.to_string());
    }

    /// Times the group was stopped for its budget, and for how long in all.
    pub fn throttled(&self) -> (u64, Duration) {
        let stat = std::fs::read_to_string(self.dir.join("cpu.stat")).expect("cpu.stat");
        let field = |name: &str| {
            stat.lines()
                .find_map(|l| l.strip_prefix(name)?.trim().parse::<u64>().ok())
                .unwrap_or(0)
        };
        (
            field("nr_throttled "),
            Duration::from_nanos(field("throttled_time ")),
        )
    }
}

impl Drop for CpuLimit {
    fn drop(&mut self) {
        let procs = std::fs::read_to_string(self.dir.join("cgroup.procs")).unwrap_or_default();
        for pid in procs.split_whitespace() {
            let _ = std::fs::write(PathBuf::from(ROOT).join("cgroup.procs"), pid);
        }
        let _ = std::fs::remove_dir(&self.dir);
    }
}
