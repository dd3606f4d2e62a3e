# Copyright 2026 The ft-cloud-hypervisor authors.
# SPDX-License-Identifier: Apache-2.0
"""One failover trial of the fault-tolerant pair, for scripts/bench-ft and
scripts/soak-pair: a fresh pair (scripts/ftpair.py) serving a verified KV
stream, one side failed during it, and every expectation checked after.
"""
import http.client
import os
import random
import shutil
import subprocess
import time

import ftpair
from ftpair import (GUEST_IP, KV_DISK_SIZE, LAN_PREFIX_LEN, Etcd, PairError, PairNet,
                    client_cmd, pair_args, parse_kv, read_text, sparse_disk, start_pair,
                    tail, write_key)

STREAM_SECONDS = 4.0


def run_trial(bins, base_dir, index, seed, victim="primary", disks="shared",
              tiebreaker="file", stream_seconds=STREAM_SECONDS, kill_after=None,
              keep="failed", fault=None, monitor=None):
    """One pair serving a verified KV stream from the client; ``victim``
    (``primary`` or ``backup``: kill -9 of that VMM; ``primary-host``: host
    A off both links, then kill -9 of its VMM, so that the backup detects
    the loss by its timeout; ``link``: the logging link cut) fails
    ``kill_after`` seconds into the stream, once its replies flow (chosen
    from ``seed`` when not
    given). Returns a dict of what happened; ``problems`` lists every
    violated expectation (empty: the trial passed). The trial's files stay
    in ``dir`` unless ``keep`` is ``never``, or ``failed`` and it passed.

    With ``FTTRIAL_PCAP=1`` in the environment, the client's interface is
    captured to ``client.pcap`` and each host's tap to ``tap-a.pcap`` and
    ``tap-b.pcap`` in the trial's directory (tcpdump).

    ``fault`` (scripts/chaos_faults.py) replaces ``victim``'s failure and
    the survivor check with its own (``apply(net, primary, backup, rng)``,
    ``check(r, primary, backup)``, ``cleanup()``); ``monitor``, started
    with the pair and stopped after the failure, samples both sides
    (``start(primary, backup)``, ``stop(r, failed_at)``)."""
    vmm_bin, client_bin, guest = bins
    rng = random.Random(seed)
    if kill_after is None:
        kill_after = round(rng.uniform(0.8, 2.2), 3)
    run_dir = os.path.join(base_dir, f"trial-{index}-seed-{seed}")
    os.makedirs(run_dir, exist_ok=True)
    r = {"trial": index, "seed": seed, "victim": victim, "disks": disks,
         "tiebreaker": tiebreaker, "kill_after_s": kill_after, "dir": run_dir, "problems": []}
    net = PairNet()
    etcd = None
    primary = backup = stream = pcap = None
    try:
        if tiebreaker == "etcd":
            etcd = Etcd(net, os.path.join(run_dir, "etcd"))
            tb = etcd.tiebreaker(f"ft/{net.tag}/{seed}")
        else:
            tb = f"file:{os.path.join(run_dir, 'tiebreak')}"
        disk_a = sparse_disk(os.path.join(run_dir, "kv-a.img"), KV_DISK_SIZE)
        disk_b = disk_a
        if disks == "separate":
            # A copy of a fresh image: another fresh image of its size.
            disk_b = sparse_disk(os.path.join(run_dir, "kv-b.img"), KV_DISK_SIZE)
        cmdline = f"workload=kv ip={GUEST_IP}/{LAN_PREFIX_LEN}"
        mac = net.guest_mac
        args_a = pair_args(guest, cmdline, disk=disk_a,
                           net=f"tap={net.links['a']['tap']},mac={mac}")
        args_b = pair_args(guest, cmdline, disk=disk_b,
                           net=f"tap={net.links['b']['tap']},mac={mac}")
        extra = ",disks=separate" if disks == "separate" else ""
        key = write_key(os.path.join(run_dir, "pair.key"))
        if os.environ.get("FTTRIAL_PCAP"):
            # What the client and each host's tap saw, for a trial to be
            # read packet by packet.
            pcap = [subprocess.Popen(
                ["ip", "netns", "exec", ns, "tcpdump", "-q", "-n", "-s", "128",
                 "-i", dev, "-w", os.path.join(run_dir, f"{name}.pcap")],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                for name, ns, dev in (("client", net.ns["client"], net.client_if),
                                      ("tap-a", net.host_ns("a"), net.links["a"]["tap"]),
                                      ("tap-b", net.host_ns("b"), net.links["b"]["tap"]))]
            time.sleep(0.5)
        primary, backup = start_pair(net, vmm_bin, run_dir, args_a, args_b, key, tb, extra)
        primary.wait_serial("kv: listening on", 90)
        if monitor:
            monitor.start(primary, backup)
        timeline = os.path.join(run_dir, "timeline.csv")
        out_path = os.path.join(run_dir, "stream.txt")
        with open(out_path, "wb") as out:
            stream = subprocess.Popen(
                client_cmd(net, client_bin, "stream", "--duration", str(stream_seconds),
                           "--verify", "--get-every", "4", "--timeline", timeline,
                           "--prefix", f"ft{net.tag}s{seed}", "--timeout", "30"),
                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT)
        started = _wait_stream_running(net, stream)
        time.sleep(kill_after)
        if stream.poll() is not None:
            r["problems"].append(f"the stream ended before the failure: {read_text(out_path)}")
        failed_at = time.monotonic()
        if fault:
            fault.trial = {"vmm_bin": vmm_bin, "run_dir": run_dir, "key": key,
                           "tiebreaker": tb}
            fault.apply(net, primary, backup, rng)
        elif victim == "primary":
            primary.kill9()
        elif victim == "primary-host":
            net.isolate_host("a")
            primary.kill9()
        elif victim == "backup":
            backup.kill9()
        else:
            net.cut_log_link()
        # When the failure happened on the client's timeline (which counts
        # from its first request): from when its replies were seen flowing,
        # some 15 replies later (so this is early by some 50 ms).
        r["failed_at_mono"] = failed_at if fault else time.monotonic()
        r["failed_at_s"] = r["failed_at_mono"] - started
        survives = fault is None or fault.client_survives()
        if not survives:
            # The VM is gone with its only copy: nothing will answer.
            stream.terminate()
        try:
            stream.wait(timeout=stream_seconds + 90)
        except subprocess.TimeoutExpired:
            stream.kill()
            stream.wait()
            r["problems"].append("the stream did not end")
        text = read_text(out_path)
        line = next((l for l in text.splitlines() if l.startswith("stream:")), "")
        f = parse_kv(line)
        r.update({"stream": line, "acked": int(f.get("acked", 0)), "lost": int(f.get("lost", 0)),
                  "wrong": int(f.get("wrong", 0)), "reset": f.get("reset") == "true",
                  "end": f.get("end", "?"), "max_gap_ms": f.get("max_gap", float("nan")),
                  "max_gap_at_s": f.get("max_gap_at", float("nan")),
                  "verified": f.get("verified", "no"), "timeline": timeline})
        r.update(failover_gap(timeline, r["failed_at_s"]))
        if not survives:
            if r["wrong"]:
                r["problems"].append(f"wrong={r['wrong']} acknowledged SETs read back changed")
        elif not line:
            r["problems"].append(f"no stream report: {text.strip()[-400:]}")
        else:
            if r["lost"] or r["wrong"]:
                r["problems"].append(f"lost={r['lost']} wrong={r['wrong']} acknowledged SETs")
            if r["reset"]:
                r["problems"].append("the client's connection was reset")
            if r["end"] != "completed":
                r["problems"].append(f"the stream ended: {r['end']}")
            if r["verified"] != float(r["acked"]):
                r["problems"].append(f"verified {r['verified']} of {r['acked']} acknowledged")
        if monitor:
            monitor.stop(r, failed_at)
        if fault:
            fault.check(r, primary, backup)
        else:
            check_survivor(r, victim, primary, backup)
    except PairError as e:
        r["problems"].append(str(e))
    finally:
        if monitor:
            monitor.stop(r, None)
        if fault:
            fault.cleanup()
        for vm in (primary, backup):
            if vm:
                vm.kill9()
        if stream and stream.poll() is None:
            stream.kill()
            stream.wait()
        for p in pcap or []:
            p.terminate()
            p.wait()
        close_trial(r, net, etcd)
    if keep == "never" or (keep == "failed" and r["ok"]):
        shutil.rmtree(run_dir, ignore_errors=True)
    return r


def close_trial(r, net, etcd):
    """The end of a trial, once its VMMs are killed: stops ``etcd`` (when
    there is one), removes ``net``, adds what it left behind to ``r``'s
    problems and sets ``r["ok"]`` (no problem: passed)."""
    if etcd:
        etcd.stop()
    net.close()
    left = net.leftovers()
    if left:
        r["problems"].append(f"left behind: {left}")
    r["ok"] = not r["problems"]


def _wait_stream_running(net, stream, timeout=60.0):
    """Waits until the client's stream is past its connection and getting
    replies (1000 bytes received on the client's interface since now), so
    that a failure ``kill_after`` seconds later lands in the stream and
    its time can be put on the stream's timeline; returns that moment."""
    base = net.client_bytes()[1]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and stream.poll() is None:
        if net.client_bytes()[1] - base >= 1000:
            break
        time.sleep(0.01)
    return time.monotonic()


def failover_gap(timeline, failed_at, before=0.25, after=0.5):
    """The longest wait between two consecutive replies of a stream
    timeline (CSV ``at_s,latency_ms,request``) that began between
    ``before`` seconds before and ``after`` seconds after ``failed_at``
    (seconds on the stream's timeline): the gap the failure caused, told
    apart from gaps elsewhere in the stream. Returns ``failover_gap_ms`` and
    ``failover_gap_at_s`` (its start, from the failure)."""
    try:
        with open(timeline) as f:
            at = [float(l.split(",")[0]) for l in f.read().splitlines()[1:] if l]
    except (OSError, ValueError):
        return {}
    best = None
    for prev, cur in zip(at, at[1:]):
        if failed_at - before <= prev <= failed_at + after and (best is None
                                                               or cur - prev > best[0]):
            best = (cur - prev, prev)
    if best is None:
        return {}
    return {"failover_gap_ms": best[0] * 1000, "failover_gap_at_s": best[1] - failed_at}


def takeover(vm, failed_at=None):
    """How a VMM that went live spent the time (its event timestamps):
    ``detect_ms`` from the failure to its ``peer-lost`` (approximate: the
    event clock starts with the process), ``tiebreak_ms`` from
    ``peer-lost`` to ``tiebreak-won``, ``live_ms`` from there to
    ``go-live``, and the frames it sent again at go-live."""
    at = {}
    props = {}
    for e in ftpair.read_events(vm.events):
        if e.get("source") != "fault-tolerance":
            continue
        ts = e.get("timestamp") or {}
        at[e.get("event")] = ts.get("secs", 0) + ts.get("nanos", 0) / 1e9
        props[e.get("event")] = e.get("properties") or {}
    out = {}
    if "peer-lost" in at and "tiebreak-won" in at:
        out["tiebreak_ms"] = round((at["tiebreak-won"] - at["peer-lost"]) * 1000, 1)
    if "tiebreak-won" in at and "go-live" in at:
        out["live_ms"] = round((at["go-live"] - at["tiebreak-won"]) * 1000, 1)
        out["resent_frames"] = props["go-live"].get("resent_frames")
    if failed_at is not None and "peer-lost" in at and getattr(vm, "started", None):
        out["detect_ms"] = round((vm.started + at["peer-lost"] - failed_at) * 1000, 1)
    return out


def check_survivor(r, victim, primary, backup):
    """After the failure: exactly one VMM still running, live and
    unprotected, with its events in order; the other gone (killed, or
    exited saying it lost the tiebreak)."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and primary.running() and backup.running():
        time.sleep(0.1)
    alive = [vm for vm in (primary, backup) if vm.running()]
    r["live_vmms"] = len(alive)
    r["events_primary"] = primary.ft_events()
    r["events_backup"] = backup.ft_events()
    if len(alive) != 1:
        r["problems"].append(f"{len(alive)} VMMs running after the failure")
        return
    survivor = alive[0]
    r["survivor"] = survivor.name
    r.update(takeover(survivor, r.get("failed_at_mono")))
    if victim != "link" and victim.startswith(survivor.name):
        r["problems"].append(f"the killed {victim} still runs")
    try:
        info = survivor.get("vm.info").get("fault_tolerance") or {}
        r["survivor_state"] = info.get("state")
        if info.get("state") != "live-unprotected":
            r["problems"].append(f"the survivor ({survivor.name}) is {info.get('state')}")
    except (OSError, PairError, ValueError, http.client.HTTPException) as e:
        r["problems"].append(f"vm.info of the survivor ({survivor.name}): {e}")
    events = survivor.ft_events()
    want = ["connected", "protected", "peer-lost", "tiebreak-won"]
    want += ["go-live", "unprotected"] if survivor is backup else ["unprotected"]
    if events != want:
        r["problems"].append(f"{survivor.name} events {events}, expected {want}")
    if victim == "link":
        loser = primary if survivor is backup else backup
        if "tiebreak-lost" not in loser.ft_events():
            r["problems"].append(f"{loser.name} exited without a tiebreak-lost event "
                                 f"(exit {loser.proc.poll()}): {tail(loser.stderr_text(), 3)}")
