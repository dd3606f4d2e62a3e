# Copyright 2026 The ft-cloud-hypervisor authors.
# SPDX-License-Identifier: Apache-2.0
"""The chaos campaign's faults and its state monitor (scripts/chaos).

A fault is applied to a running pair during a verified KV stream by
``fttrial.run_trial(fault=...)``: ``apply`` injects it (and heals it when
the scenario heals), ``check`` states what must hold afterwards, and
``cleanup`` undoes whatever it set up on the host (cgroups, firewall
rules, rate limits) however the trial ended.

What each fault expects is the product's contract:
  failover     the victim is gone; the other side is live and unprotected
               (``fttrial.check_survivor``).
  one-live     a partition: exactly one VMM runs at the end, live and
               unprotected, and the other exited after losing the tiebreak.
  no-failover  a disturbance the pair must ride out (a short cut that heals
               within the timeout, a slow backup, a slow or lossy link, the
               LAN cut on one host): both VMMs still run and the pair is
               still protected; a failover here is a *false failover*.
Every fault also expects what every trial checks (nothing acknowledged
lost, no reset, the stream completes) and, from the monitor, that the two
sides were never live at once (double-live).
"""
import http.client
import os
import shutil
import threading
import time

import fttrial
from ftpair import PairError, ip, sh, tail

# Sampling period of the state monitor.
MONITOR_PERIOD_S = 0.05
# A side that emits outputs nobody else has: the primary once it runs
# unprotected, the backup once it goes live. A primary that still says
# `protected` releases only outputs the backup acknowledged having replayed
# (the Output Rule), so the backup's history contains them: that is not
# split brain, even after the backup went live.
LIVE_STATES = {"primary": {"live-unprotected"},
               "backup": {"going-live", "live-unprotected"}}


class Fault:
    """Base: no host state to undo; subclasses set ``expect``."""

    expect = "failover"
    victim = None

    def __init__(self, **params):
        self.params = params

    def describe(self):
        return {"fault": self.name, **self.params}

    def apply(self, net, primary, backup, rng):
        raise NotImplementedError

    def check(self, r, primary, backup):
        r["expect"] = self.expect
        r.update({f"fault_{k}": v for k, v in self.params.items()})
        if self.expect == "failover":
            fttrial.check_survivor(r, self.victim, primary, backup)
        elif self.expect == "one-live":
            fttrial.check_survivor(r, "link", primary, backup)
        else:
            check_still_protected(r, primary, backup)

    def cleanup(self):
        pass


class Kill(Fault):
    """``kill -9`` of one side (optionally the whole host first)."""

    def __init__(self, victim, host_down=False):
        super().__init__(victim=victim, host_down=host_down)
        self.victim = "primary-host" if host_down else victim
        self.name = "host-down" if host_down else f"kill-{victim}"

    def apply(self, net, primary, backup, rng):
        vm = primary if self.params["victim"] == "primary" else backup
        if self.params["host_down"]:
            net.isolate_host("a" if vm is primary else "b")
        vm.kill9()


class Cut(Fault):
    """A partition: links of one host down, healed after ``heal_s`` (or
    never). ``links``: ``log`` (the logging link only), ``lan`` (the
    host's LAN uplink only), ``both``."""

    def __init__(self, host, links, heal_s=None, expect=None):
        super().__init__(host=host, links=links, heal_s=heal_s)
        self.name = f"cut-{links}-{host}" + ("-heal" if heal_s is not None else "")
        # The logging link is what the pair watches: cutting it (alone or
        # with the LAN) longer than the timeout ends the pair on one side.
        # The LAN alone is not the pair's business: no failover.
        self.expect = expect or ("no-failover" if links == "lan" else "one-live")

    def _devs(self, net):
        l = net.links[self.params["host"]]
        return {"log": [l["log"]], "lan": [l["uplink"]],
                "both": [l["log"], l["uplink"]]}[self.params["links"]]

    def apply(self, net, primary, backup, rng):
        ns = net.host_ns(self.params["host"])
        for dev in self._devs(net):
            ip("-n", ns, "link", "set", dev, "down")
        if self.params["heal_s"] is not None:
            time.sleep(self.params["heal_s"])
            for dev in self._devs(net):
                ip("-n", ns, "link", "set", dev, "up")


class Flap(Fault):
    """The logging link goes down and up ``cycles`` times: down for
    ``down_s`` (a list, one per cycle), then up for ``up_s``. A cut
    shorter than the timeout must not end the pair; a longer one ends it
    on exactly one side."""

    def __init__(self, down_s, up_s, timeout_s):
        super().__init__(down_s=down_s, up_s=up_s)
        self.name = "flap-log"
        self.timeout_s = timeout_s
        self.expect = "one-live" if max(down_s) > timeout_s else "no-failover"

    def apply(self, net, primary, backup, rng):
        ns, dev = net.ns["hostA"], net.links["a"]["log"]
        for down, up in zip(self.params["down_s"], self.params["up_s"]):
            ip("-n", ns, "link", "set", dev, "down")
            time.sleep(down)
            ip("-n", ns, "link", "set", dev, "up")
            time.sleep(up)

    def check(self, r, primary, backup):
        if self.expect == "one-live" or primary.running() and backup.running():
            return super().check(r, primary, backup)
        # Every cut was shorter than the timeout, yet the pair ended: TCP
        # retransmits a segment lost in a cut only after its RTO (200 ms or
        # more, doubling while cuts repeat), so the receiver can hear
        # nothing for longer than the cut. Ending cleanly on one side is
        # correct (the partition rules hold) but counts as a false failover.
        r["expect"] = "no-failover or one-live"
        r["false_failover"] = True
        fttrial.check_survivor(r, "link", primary, backup)


class StarveBackup(Fault):
    """The backup's VMM in a cgroup v1 ``cpu`` group with ``quota`` of
    one CPU for the rest of the stream."""

    expect = "no-failover"
    name = "slow-backup"

    def __init__(self, quota):
        super().__init__(quota=quota)
        self.group = None

    def apply(self, net, primary, backup, rng):
        root = "/sys/fs/cgroup/cpu"
        if not os.path.isdir(root):
            raise PairError("no cgroup v1 cpu controller at /sys/fs/cgroup/cpu")
        self.group = os.path.join(root, f"ftchaos-{os.getpid()}-{net.tag}")
        os.makedirs(self.group, exist_ok=True)
        _write(os.path.join(self.group, "cpu.cfs_period_us"), "100000")
        _write(os.path.join(self.group, "cpu.cfs_quota_us"), str(int(self.params["quota"] * 1e5)))
        # Every thread of the VMM (the `ip netns exec` wrapper exec()s it).
        for tid in os.listdir(f"/proc/{backup.proc.pid}/task"):
            _write(os.path.join(self.group, "tasks"), tid)

    def cleanup(self):
        if self.group and os.path.isdir(self.group):
            parent = os.path.dirname(self.group)
            try:
                with open(os.path.join(self.group, "tasks")) as f:
                    for tid in f.read().split():
                        _write(os.path.join(parent, "tasks"), tid, missing_ok=True)
            except OSError:
                pass
            try:
                os.rmdir(self.group)
            except OSError:
                pass
        self.group = None


class SlowLink(Fault):
    """The logging link limited to ``rate`` (tbf, both ends) and dropping
    a random ``loss`` share of the packets arriving at either end
    (iptables ``statistic``), for the rest of the stream."""

    expect = "no-failover"
    name = "slow-link"

    def __init__(self, rate, loss):
        super().__init__(rate=rate, loss=loss)

    def apply(self, net, primary, backup, rng):
        for h in "ab":
            ns, dev = net.host_ns(h), net.links[h]["log"]
            sh(["ip", "netns", "exec", ns, "tc", "qdisc", "add", "dev", dev, "root", "tbf",
                "rate", self.params["rate"], "burst", "32kbit", "latency", "400ms"])
            if self.params["loss"] > 0:
                if not shutil.which("iptables"):
                    raise PairError("slow-link with loss needs iptables "
                                    "(apt-get install iptables)")
                sh(["ip", "netns", "exec", ns, "iptables", "-A", "INPUT", "-i", dev, "-m",
                    "statistic", "--mode", "random", "--probability",
                    str(self.params["loss"]), "-j", "DROP"])
        # Both live in the pair's namespaces: they go with them.


def check_still_protected(r, primary, backup):
    """Both VMMs still run and both still say ``protected``."""
    r["live_vmms"] = sum(vm.running() for vm in (primary, backup))
    r["events_primary"] = primary.ft_events()
    r["events_backup"] = backup.ft_events()
    for vm in (primary, backup):
        if not vm.running():
            r["problems"].append(f"false failover: the {vm.name} exited "
                                 f"({vm.proc.poll()}): {tail(vm.stderr_text(), 3)}")
            r["false_failover"] = True
            continue
        try:
            state = (vm.get("vm.info").get("fault_tolerance") or {}).get("state")
        except (OSError, PairError, ValueError, http.client.HTTPException) as e:
            r["problems"].append(f"vm.info of the {vm.name}: {e}")
            continue
        r[f"state_{vm.name}"] = state
        if state != "protected":
            r["problems"].append(f"false failover: the {vm.name} is {state}")
            r["false_failover"] = True


class StateMonitor:
    """Samples both sides' ``vm.info`` every ``MONITOR_PERIOD_S`` on a
    thread: the pair's states and the primary's lag over time, and
    double-live moments (the backup live between two samples that both
    saw the primary live)."""

    def __init__(self):
        self.samples = []
        self.double_live = 0
        self.thread = None
        self.stopping = threading.Event()
        self.t0 = None

    def start(self, primary, backup):
        self.t0 = time.monotonic()
        self.thread = threading.Thread(target=self._run, args=(primary, backup), daemon=True)
        self.thread.start()

    def _state(self, vm):
        if not vm.running():
            return None, None
        try:
            ft = vm.get("vm.info", timeout=0.5).get("fault_tolerance") or {}
        except (OSError, PairError, ValueError, http.client.HTTPException):
            return None, None
        return ft.get("state"), ft

    def _run(self, primary, backup):
        prev_primary_live = False
        while not self.stopping.is_set():
            t = time.monotonic() - self.t0
            p_state, p = self._state(primary)
            b_state, _ = self._state(backup)
            p_live = p_state in LIVE_STATES["primary"]
            b_live = b_state in LIVE_STATES["backup"]
            if b_live and p_live and prev_primary_live:
                self.double_live += 1
            prev_primary_live = p_live
            self.samples.append({"t": round(t, 3), "primary": p_state, "backup": b_state,
                                 "lag_ms": (p or {}).get("lag_ms"),
                                 "throttle": (p or {}).get("throttle")})
            self.stopping.wait(MONITOR_PERIOD_S)

    def stop(self, r, failed_at):
        """Stops sampling (again: a no-op) and adds what was seen to ``r``
        (times relative to the failure)."""
        if self.thread is None:
            return
        self.stopping.set()
        self.thread.join()
        self.thread = None
        base = (failed_at - self.t0) if failed_at is not None else 0.0
        r["samples"] = [{**s, "t": round(s["t"] - base, 3)} for s in self.samples]
        r["double_live"] = self.double_live
        lags = [s["lag_ms"] for s in self.samples if s["lag_ms"] is not None]
        r["lag_ms_max"] = max(lags, default=None)
        throttles = [s["throttle"] for s in self.samples if s["throttle"] is not None]
        r["throttle_max"] = max(throttles, default=None)
        if self.double_live:
            r["problems"].append(f"both sides live at once in {self.double_live} samples")


def _write(path, value, missing_ok=False):
    try:
        with open(path, "w") as f:
            f.write(value)
    except (FileNotFoundError, ProcessLookupError):
        if not missing_ok:
            raise
    except OSError as e:
        # A thread that exited between listing and moving (ESRCH).
        if not missing_ok and e.errno != 3:
            raise


def ensure_tools(need_iptables):
    """Clear errors for missing host tools before any trial starts."""
    missing = [t for t in ("ip", "tc") if not shutil.which(t)]
    if need_iptables and not shutil.which("iptables"):
        missing.append("iptables")
    if missing:
        raise PairError(f"missing host tools: {', '.join(missing)} "
                        "(apt-get install iproute2 iptables)")
