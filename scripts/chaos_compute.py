# Copyright 2026 The ft-cloud-hypervisor authors.
# SPDX-License-Identifier: Apache-2.0
"""The chaos campaign's compute workload (scripts/chaos, scenario
``kill-primary-compute``): a pair runs the test guest's
``workload=compute`` (SplitMix64 steps with a 100 Hz timer, no devices
but the serial port), the primary is killed with ``kill -9`` at a random
moment of the computation, and the backup must go live and print the
``result=`` line of an uninterrupted plain run of the same steps (taken
once per campaign). The computation is the guest's state: a backup that
lost or repeated one step, or one interrupt's effect, prints another
number."""
import os
import re
import time

import ftpair
import fttrial
from ftpair import PairError

STEPS = 600_000_000
HZ = 100
CMDLINE = f"workload=compute steps={STEPS} hz={HZ}"
# Seconds the guest computes before the kill (its run takes ~3.3 s here
# at ~185 M steps/s; a later kill would find it done).
KILL_WINDOW_S = (0.2, 2.5)


def result_of(serial):
    m = re.search(r"^result=([0-9a-f]{16})$", serial, re.M)
    return m.group(1) if m else None


def wait_result(vm, timeout):
    """The whole ``result=`` line of ``vm``'s serial port (the UART writes
    a byte per exit: "result=" can be there before its 16 digits), or None
    when it does not come or the VMM exits without it."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = result_of(vm.serial_text())
        if result is not None:
            return result
        if not vm.running():
            return result_of(vm.serial_text())
        time.sleep(0.05)
    return None


def reference(bins, work):
    """The ``result=`` of a plain VM running the same steps."""
    vmm, _client, guest = bins
    os.makedirs(work, exist_ok=True)
    net = ftpair.PairNet()
    vm = None
    try:
        vm = ftpair.Vmm(net, "a", vmm, work, "compute-reference",
                        ftpair.pair_args(guest, CMDLINE), api=False)
        result = wait_result(vm, 120)
        if result is None:
            raise PairError(f"the plain compute run printed no result: {vm.serial_text()[-300:]}")
        return result
    finally:
        if vm:
            vm.kill9()
        net.close()


def run_trial(bins, base_dir, index, seed, tiebreaker, rng, expected):
    """One pair computing, its primary killed; a dict as fttrial's
    ``run_trial`` returns (``problems`` empty: passed)."""
    vmm, _client, guest = bins
    run_dir = os.path.join(base_dir, f"trial-{index}-seed-{seed}")
    os.makedirs(run_dir, exist_ok=True)
    kill_after = round(rng.uniform(*KILL_WINDOW_S), 3)
    r = {"trial": index, "seed": seed, "victim": "primary", "disks": "none",
         "tiebreaker": tiebreaker, "kill_after_s": kill_after, "dir": run_dir,
         "expect": "failover", "problems": [], "acked": 0, "lost": 0}
    net = ftpair.PairNet()
    etcd = None
    vms = []
    try:
        if tiebreaker == "etcd":
            etcd = ftpair.Etcd(net, os.path.join(run_dir, "etcd"))
            tb = etcd.tiebreaker(f"ft/{net.tag}/{seed}")
        else:
            tb = f"file:{os.path.join(run_dir, 'tiebreak')}"
        key = ftpair.write_key(os.path.join(run_dir, "pair.key"))
        args = ftpair.pair_args(guest, CMDLINE)
        primary, backup = ftpair.start_pair(net, vmm, run_dir, args, args, key, tb)
        vms = [primary, backup]
        # The first tick report: the computation has begun.
        primary.wait_serial("tick=", 60)
        time.sleep(kill_after)
        if result_of(primary.serial_text()) is not None:
            r["problems"].append(f"the primary finished before the kill at {kill_after} s")
        killed = time.monotonic()
        primary.kill9()
        got = wait_result(backup, 120)
        r["finished_s"] = round(time.monotonic() - killed, 3)
        r["result"] = got
        events = backup.ft_events()
        if "go-live" not in events:
            r["problems"].append(f"the backup did not go live: {events}")
        if got != expected:
            r["problems"].append(f"the survivor computed {got}, a plain run {expected}")
    except PairError as e:
        r["problems"].append(str(e))
    finally:
        for vm in vms:
            vm.kill9()
        fttrial.close_trial(r, net, etcd)
    return r
