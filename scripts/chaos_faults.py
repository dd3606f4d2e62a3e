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
import subprocess
import threading
import time

import ftpair
import fttrial
from ftpair import PairError, Vmm, ip, sh, tail

# The scenarios of scripts/chaos, in the order they run and are reported.
SCENARIO_ORDER = ("kill-primary", "kill-backup", "host-down", "cut-log", "cut-log-heal", "cut-lan",
                  "cut-both-a", "cut-both-b", "flap-short", "flap-long", "slow-backup", "slow-link",
                  "kill-backup-reprotect", "kill-receiver-seeding", "kill-primary-seeding",
                  "repeated-failover")

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

    def client_survives(self):
        """Whether the client's session must survive the fault (known once
        ``apply`` returned); when not, the client's stream is stopped:
        nothing is left to answer or verify it."""
        return True

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
        budget = str(int(self.params["quota"] * 1e5))
        _write(os.path.join(self.group, "cpu.cfs_period_us"), "100000")
        _write(os.path.join(self.group, "cpu.cfs_quota_us"), budget)
        # The channel's reader and writer are real-time threads: a child
        # group has no real-time budget unless given one, and the kernel
        # refuses (EINVAL) to move a real-time thread into it. The same
        # share of the period as the CFS quota starves them alike.
        _write(os.path.join(self.group, "cpu.rt_period_us"), "100000")
        _write(os.path.join(self.group, "cpu.rt_runtime_us"), budget)
        # Every thread of the VMM at once (the `ip netns exec` wrapper
        # exec()s it): moving thread by thread raced with threads that
        # exit (ESRCH) and missed threads started later.
        _write(os.path.join(self.group, "cgroup.procs"), str(backup.proc.pid))

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


class EmptyVmm(Vmm):
    """A VMM with no VM yet (``--api-socket`` only), waiting to become a
    backup by ``ch-remote ft-receive-backup`` (FT VMotion)."""

    def __init__(self, net, host, vmm_bin, run_dir, name):  # noqa: super-init-not-called
        self.name = name
        self.serial = os.path.join(run_dir, f"serial-{name}.txt")
        self.stderr = os.path.join(run_dir, f"stderr-{name}.txt")
        self.events = os.path.join(run_dir, f"events-{name}.json")
        self.api = os.path.join(run_dir, f"api-{name}.sock")
        self.host = host
        for p in (self.serial, self.events, self.api):
            if os.path.exists(p):
                os.unlink(p)
        with open(self.stderr, "wb") as err:
            self.proc = subprocess.Popen(
                ["ip", "netns", "exec", net.host_ns(host), vmm_bin, "--api-socket",
                 f"path={self.api}", "--event-monitor", f"path={self.events}", "-v"],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err)
        self.started = time.monotonic()
        deadline = time.monotonic() + 10
        while not os.path.exists(self.api):
            if time.monotonic() > deadline or not self.running():
                raise PairError(f"{name}: no API socket; {tail(self.stderr_text(), 5)}")
            time.sleep(0.02)


def ch_remote_bin(vmm_bin):
    return os.path.join(os.path.dirname(vmm_bin), "ch-remote")


class Reprotect:
    """FT VMotion after a failure: a fresh VMM on the failed side's host
    receives a backup seed from the live VMM (``ft-receive-backup`` /
    ``ft-add-backup``), and the pair is protected again. Used by the
    scenarios that kill the backup, and by repeated failovers."""

    def __init__(self, net, vmm_bin, run_dir, key, tiebreaker):
        self.net, self.vmm_bin, self.run_dir = net, vmm_bin, run_dir
        self.key, self.tb = key, tiebreaker
        self.started = []
        self.seedings = []
        self.pauses_ms = []
        self.count = 0

    def seed(self, live, host, timeout=60.0):
        """A new backup on ``host`` (``a`` or ``b``) seeded from ``live``;
        returns the new backup's Vmm once both say ``protected``."""
        return self.complete(self.begin(live, host, timeout), timeout)

    def begin(self, live, host, timeout=60.0):
        """Starts seeding a new backup on ``host`` from ``live`` and returns
        at once: the seeding runs in ``ch-remote`` processes, and
        ``complete`` waits for it (a fault may kill a side in between)."""
        self.count += 1
        name = f"backup-r{self.count}"
        empty = EmptyVmm(self.net, host, self.vmm_bin, self.run_dir, name)
        self.started.append(empty)
        addr = ftpair.LOG_A if host == "a" else ftpair.LOG_B
        port = ftpair.CHANNEL_PORT + self.count
        chr_bin = ch_remote_bin(self.vmm_bin)
        tap = self.net.links[host]["tap"]
        receiver = subprocess.Popen(
            ["ip", "netns", "exec", self.net.host_ns(host), chr_bin, "--api-socket", empty.api,
             "ft-receive-backup",
             f"listen=tcp:{addr}:{port},key={self.key},tiebreaker={self.tb},"
             f"net_taps={tap},serial={empty.serial}"],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        time.sleep(0.2)
        add = subprocess.Popen(
            [chr_bin, "--api-socket", live.api, "ft-add-backup",
             f"peer=tcp:{addr}:{port},key={self.key},tiebreaker={self.tb}"],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        seeding = Seeding(live, host, empty, receiver, add)
        self.seedings.append(seeding)
        return seeding

    def complete(self, s, timeout=60.0):
        """Waits for ``begin``'s seeding; returns the new backup's Vmm once
        both sides say ``protected`` (PairError otherwise)."""
        add_rc, add_out, out = s.finish(timeout)
        live, host, empty = s.live, s.host, s.empty
        if add_rc != 0:
            raise PairError(f"ft-add-backup to {host}: {add_out}; receiver: {out}; "
                            f"{tail(empty.stderr_text(), 5)}")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            states = []
            for vm in (live, empty):
                try:
                    states.append((vm.get("vm.info").get("fault_tolerance") or {}).get("state"))
                except (OSError, PairError, ValueError, http.client.HTTPException):
                    states.append(None)
            if states == ["protected", "protected"]:
                break
            time.sleep(0.05)
        else:
            raise PairError(f"not protected again after ft-add-backup to {host}: {states}")
        self.pauses_ms.append(seeded_pause_ms(live.events))
        return empty

    def cleanup(self):
        for s in self.seedings:
            for proc in (s.add, s.receiver):
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
        for vm in self.started:
            vm.kill9()


class Seeding:
    """An FT VMotion under way: the live VMM, the receiving VMM and the two
    ``ch-remote`` processes (``ft-add-backup``, ``ft-receive-backup``)."""

    def __init__(self, live, host, empty, receiver, add):
        self.live, self.host, self.empty = live, host, empty
        self.receiver, self.add = receiver, add
        self.result = None

    def finished(self):
        """Whether ``ft-add-backup`` has answered."""
        return self.add.poll() is not None

    def finish(self, timeout, receiver_timeout=None):
        """Both ``ch-remote``s' ends: ``(add exit code, add output, receiver
        output)``; either is killed past its timeout (``receiver_timeout``,
        default ``timeout``, for ``ft-receive-backup``), and
        ``receiver_waited`` says whether that one still waited."""
        if self.result is None:
            outs = []
            self.receiver_waited = False
            for proc, t in ((self.add, timeout), (self.receiver, receiver_timeout or timeout)):
                try:
                    o, _ = proc.communicate(timeout=t)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    o, _ = proc.communicate()
                    self.receiver_waited = proc is self.receiver
                outs.append(o.decode(errors="replace").strip())
            self.result = (self.add.returncode, outs[0], outs[1])
        return self.result


def seeded_pause_ms(events_path):
    """The pause of the last ``seeded`` event in an event-monitor file."""
    pauses = []
    for e in ftpair.read_events(events_path):
        if e.get("event") != "seeded":
            continue
        props = e.get("properties") or {}
        try:
            pauses.append(float(props.get("pause_ms")))
        except (TypeError, ValueError):
            pass
    return pauses[-1] if pauses else None


class KillBackupReprotect(Fault):
    """``kill -9`` of the backup, then a new backup on its host by FT
    VMotion: the primary goes on, and is protected again."""

    name = "kill-backup-reprotect"
    expect = "reprotected"

    def __init__(self):
        super().__init__()
        self.re = None

    def apply(self, net, primary, backup, rng):
        t = self.trial
        self.re = Reprotect(net, t["vmm_bin"], t["run_dir"], t["key"], t["tiebreaker"])
        backup.kill9()
        self.new_backup = self.re.seed(primary, "b")

    def check(self, r, primary, backup):
        r["expect"] = self.expect
        r["vmotion_pause_ms"] = self.re.pauses_ms if self.re else []
        if not primary.running():
            r["problems"].append("the primary stopped")

    def cleanup(self):
        if self.re:
            self.re.cleanup()


class RepeatedFailover(Fault):
    """``rounds`` failovers in a row under one client session: kill -9 of
    the side that runs the VM, wait for the other to go live, protect it
    again by FT VMotion to a fresh VMM on the killed side's host, and
    again. Every failover gap and VMotion pause is kept."""

    name = "repeated-failover"
    expect = "reprotected"

    def __init__(self, rounds):
        super().__init__(rounds=rounds)
        self.re = None
        self.gaps_at = []

    def apply(self, net, primary, backup, rng):
        t = self.trial
        self.re = Reprotect(net, t["vmm_bin"], t["run_dir"], t["key"], t["tiebreaker"])
        live, standby, standby_host = primary, backup, "b"
        for _ in range(self.params["rounds"]):
            time.sleep(rng.uniform(0.3, 1.0))
            live.kill9()
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                try:
                    st = (standby.get("vm.info").get("fault_tolerance") or {}).get("state")
                except (OSError, PairError, ValueError, http.client.HTTPException):
                    st = None
                if st == "live-unprotected":
                    break
                time.sleep(0.02)
            else:
                raise PairError(f"{standby.name} did not go live")
            dead_host = "a" if standby_host == "b" else "b"
            live, standby = standby, self.re.seed(standby, dead_host)
            standby_host = dead_host
        self.final = (live, standby)

    def check(self, r, primary, backup):
        r["expect"] = self.expect
        r["vmotion_pause_ms"] = self.re.pauses_ms if self.re else []
        r["failovers"] = self.re.count if self.re else 0

    def cleanup(self):
        if self.re:
            self.re.cleanup()


def wait_state(vm, want, timeout):
    """Polls ``vm``'s ``vm.info`` until its fault-tolerance state is in
    ``want``; the state last seen (None: no answer)."""
    deadline = time.monotonic() + timeout
    st = None
    while time.monotonic() < deadline and vm.running():
        try:
            st = (vm.get("vm.info", timeout=0.5).get("fault_tolerance") or {}).get("state")
        except (OSError, PairError, ValueError, http.client.HTTPException):
            st = None
        if st in want:
            break
        time.sleep(0.02)
    return st


class KillDuringSeeding(Fault):
    """FT VMotion interrupted: the backup is killed, a new one is being
    seeded on its host (``ft-add-backup``), and ``kill -9`` hits one side
    at a random moment of the seeding (up to ``window_s`` after it began,
    so some kills land just after it ended: both are checked).

    ``victim="receiver"``: the VMM being seeded dies. The primary must go
    on serving (it was the only copy), end the seeding with a clear error
    or, if the seed had completed, detect the lost backup; a second FT
    VMotion to the same host must then protect it again.

    ``victim="primary"``: the only running copy dies. A receiver whose seed
    was incomplete must never go live (a half-copied VM answering clients
    would be corruption): it ends the seeding with an error and runs no
    guest; the client's session is lost with the VM, as it must be. A
    receiver whose seed had completed (the pair said ``protected``) must
    go live with nothing acknowledged lost, as any backup."""

    expect = "reprotected"

    def __init__(self, victim, window_s):
        super().__init__(victim=victim, window_s=window_s)
        self.name = f"kill-{victim}-seeding"
        self.re = None
        self.seeding = None
        self.survives = True
        self.notes = {}
        self.final_backup = None

    def client_survives(self):
        return self.survives

    def apply(self, net, primary, backup, rng):
        t = self.trial
        self.re = Reprotect(net, t["vmm_bin"], t["run_dir"], t["key"], t["tiebreaker"])
        backup.kill9()
        if wait_state(primary, {"live-unprotected"}, 10) != "live-unprotected":
            raise PairError("the primary did not go on alone after its backup was killed")
        before = len(primary.ft_events())
        s = self.seeding = self.re.begin(primary, "b")
        # The kill is drawn from when the live side starts seeding.
        deadline = time.monotonic() + 10
        while "seed-connecting" not in primary.ft_events()[before:]:
            if time.monotonic() > deadline or s.finished():
                raise PairError("the seeding did not start")
            time.sleep(0.005)
        delay = rng.uniform(0.0, self.params["window_s"])
        time.sleep(delay)
        self.notes["kill_after_start_s"] = round(delay, 3)
        self.notes["add_answered_before_kill"] = s.finished()
        self.seed_events_from = before
        if self.params["victim"] == "receiver":
            s.empty.kill9()
            add_rc, add_out, _ = s.finish(30)
            self.notes["add_rc"] = add_rc
            self.notes["add_out"] = add_out[-300:]
            st = wait_state(primary, {"live-unprotected"}, 10)
            self.notes["primary_after"] = st
            if st != "live-unprotected":
                raise PairError(f"the primary is {st} after its seeding target died")
            self.final_backup = self.re.seed(primary, "b")
            return
        # The primary dies.
        primary.kill9()
        add_rc, _, recv_out = s.finish(30, receiver_timeout=5)
        self.notes["add_rc"] = add_rc
        self.notes["receiver_out"] = recv_out[-300:]
        # A primary that died before its handshake completed never reached
        # the receiver, which goes on waiting for one, as it should.
        self.notes["receiver_still_waiting"] = s.receiver_waited
        seen = set()
        deadline = time.monotonic() + 3.0
        while time.monotonic() < deadline and s.empty.running():
            seen.add(wait_state(s.empty, {"going-live", "live-unprotected"}, 0.05))
            if "live-unprotected" in seen:
                break
        self.notes["receiver_states"] = sorted(str(x) for x in seen)
        self.survives = bool(seen & {"going-live", "live-unprotected"})

    def check(self, r, primary, backup):
        if self.params["victim"] == "receiver":
            r["expect"] = "reprotected"
        else:
            r["expect"] = "failover" if self.survives else "vm-lost"
        r.update({f"fault_{k}": v for k, v in self.params.items()})
        r.update(self.notes)
        r["vmotion_pause_ms"] = self.re.pauses_ms if self.re else []
        if self.seeding is None:
            return
        # Whether the kill landed during the seeding: the live side had not
        # reported it protected when it ended or went on.
        live_events = primary.ft_events()[self.seed_events_from:]
        if self.params["victim"] == "primary":
            # `protected` is the contract: the primary reports it only
            # once the backup has the stream's header and can take over.
            r["phase"] = "after" if "protected" in live_events else "during"
        else:
            # The first ft-add-backup's answer: done, or failed mid-way.
            r["phase"] = "after" if self.notes.get("add_rc") == 0 else "during"
        empty = self.seeding.empty
        if self.params["victim"] == "receiver":
            check_still_protected(r, primary, self.final_backup)
            return
        events = empty.ft_events()
        r["events_receiver"] = events
        if self.survives:
            r.update(fttrial.takeover(empty))
            # Only a completed seed may go live.
            # The receiver's end of the seed (its end record and digest
            # checked); its `protected` may not come: a primary lost while
            # it built the VM makes it go live first.
            if "seed-received" not in events:
                r["problems"].append(f"the receiver went live without a complete seed: {events}")
            if "live-unprotected" not in r["receiver_states"]:
                r["problems"].append(f"the receiver did not finish going live: {events}")
            return
        if any(e in ("tiebreak-won", "go-live") for e in events):
            r["problems"].append(f"the incomplete receiver started going live: {events}")
        # ft-add-backup answers once the receiver acknowledged the stream's
        # header: from then on it can take over.
        if self.notes.get("add_rc") == 0:
            r["problems"].append("the seed completed, yet the receiver did not go live")
        if self.notes.get("receiver_still_waiting"):
            if "seed-receiving" in events:
                r["problems"].append("the receiver still waits on a seed its primary "
                                     f"abandoned: {events}")
            if not empty.running():
                r["problems"].append("the receiving VMM exited while still waiting")
        elif not self.notes.get("receiver_out"):
            r["problems"].append("ft-receive-backup ended without a message")
        if os.path.exists(empty.serial) and os.path.getsize(empty.serial) > 0:
            r["problems"].append("the incomplete receiver ran the guest (serial output)")

    def cleanup(self):
        if self.re:
            self.re.cleanup()


def build_commit():
    """The commit the campaign's binaries were built from (``+dirty`` when
    the tree had changes), recorded with the results."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    try:
        head = sh(["git", "-C", root, "rev-parse", "--short=12", "HEAD"]).strip()
        dirty = sh(["git", "-C", root, "status", "--porcelain", "--untracked-files=no"]).strip()
    except PairError:
        return "unknown"
    return head + ("+dirty" if dirty else "")


def summarise(results):
    """Per-scenario figures (also what reliability-report tabulates)."""
    gaps = [r["failover_gap_ms"] for r in results
            if r.get("failover_gap_ms") == r.get("failover_gap_ms") is not None]
    pauses = [p for r in results for p in r.get("vmotion_pause_ms") or [] if p is not None]
    outcomes = {}
    for r in results:
        key = r.get("expect", "?") + (f" ({r['phase']})" if r.get("phase") else "")
        outcomes[key] = outcomes.get(key, 0) + 1
    return {
        "outcomes": outcomes,
        "trials": len(results),
        "ok": sum(r["ok"] for r in results),
        "lost": sum(r.get("lost", 0) + r.get("wrong", 0) for r in results),
        "resets": sum(bool(r.get("reset")) for r in results),
        "double_live": sum(r.get("double_live", 0) > 0 for r in results),
        "false_failovers": sum(bool(r.get("false_failover")) for r in results),
        "gap_p50_ms": ftpair.percentile(gaps, 50), "gap_p99_ms": ftpair.percentile(gaps, 99),
        "gap_max_ms": max(gaps, default=float("nan")),
        "lag_max_ms": max((r["lag_ms_max"] for r in results
                           if r.get("lag_ms_max") is not None), default=None),
        "vmotion_pause_p50_ms": ftpair.percentile(pauses, 50) if pauses else None,
        "vmotion_pause_max_ms": max(pauses, default=None),
    }
