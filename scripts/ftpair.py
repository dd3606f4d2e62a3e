# Copyright 2026 The ft-cloud-hypervisor authors.
# SPDX-License-Identifier: Apache-2.0
"""Two hosts on one machine for scripts/bench-ft and scripts/soak-pair.

The same layout as tests/common/pair.rs (read its module text), written in
Python for the scripts:

    host A netns                   lan netns                    host B netns
   [tap tpa*]--[bridge bra*]--upa*==lna*--[bridge lan*]--lnb*==upb*--[bridge brb*]--[tap tpb*]
                192.168.253.1         192.168.253.254              192.168.253.2
        lga* 10.253.0.1/30 ============== logging link ============== lgb* 10.253.0.2/30
                                            ||
                                      lnc*==cli* 192.168.253.100   client netns

Namespaces are named ``ftbench-<pid>-<n>-<role>`` and every interface name
is a three-letter role and the tag ``<pid hex>y<n>`` (the tests use ``x``),
so that the names are unique on the machine. ``PairNet.close`` (also run at
exit and on SIGINT/SIGTERM) kills every process left in the namespaces,
deletes the persistent taps and then the namespaces; ``sweep_stale`` removes
what a killed run of these scripts left behind; ``leftovers`` checks that
nothing is left.

Also here: starting a VMM in a namespace (serial, stderr, API socket and
event monitor in a run directory), its REST API over the Unix socket,
reading its event-monitor file, a private etcd, and statistics helpers.
One failover trial on top of these is in scripts/fttrial.py. Standard
library only.
"""
import atexit
import http.client
import json
import os
import signal
import socket
import subprocess
import threading
import time

NS_PREFIX = "ftbench-"
LAN_PREFIX_LEN = 24
HOST_A_LAN = "192.168.253.1"
HOST_B_LAN = "192.168.253.2"
GUEST_IP = "192.168.253.10"
CLIENT_IP = "192.168.253.100"
LAN_IP = "192.168.253.254"
LOG_A = "10.253.0.1"
LOG_B = "10.253.0.2"
KV_PORT = 7000
CHANNEL_PORT = 7410
ETCD_PORT = 2479
# The KV service's log grows with its disk (about 1000 records per MiB).
KV_DISK_SIZE = 1 << 30

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class PairError(Exception):
    """A step of the harness failed (setup, a VMM that did not start...)."""


def sh(args, check=True, capture=True):
    """Runs a command (a list); returns its stdout; raises PairError on
    failure when ``check``."""
    p = subprocess.run(args, stdin=subprocess.DEVNULL,
                       stdout=subprocess.PIPE if capture else subprocess.DEVNULL,
                       stderr=subprocess.PIPE if capture else subprocess.DEVNULL)
    if check and p.returncode != 0:
        err = p.stderr.decode(errors="replace").strip() if capture else ""
        raise PairError(f"{' '.join(args)}: exit {p.returncode}: {err}")
    return p.stdout.decode(errors="replace") if capture else ""


def ip(*args, check=True):
    return sh(["ip", *args], check=check)


def build():
    """Builds the release binaries and the test guest; returns
    (vmm, kv_client, guest)."""
    subprocess.run(["cargo", "build", "--release", "--locked", "-p", "cloud-hypervisor",
                    "-p", "ft-kv-client"], cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
    guest = os.environ.get("TEST_GUEST_ELF")
    if not guest or not os.path.isfile(guest):
        out = subprocess.run([os.path.join(ROOT, "scripts/build-test-guest")], cwd=ROOT,
                             check=True, stdout=subprocess.PIPE)
        guest = out.stdout.decode().strip().splitlines()[-1]
    target = os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target"))
    rel = os.path.join(target, "release")
    # FTPAIR_VMM: another build of ours (an earlier commit's binary) to
    # measure side by side with the same scripts.
    vmm = os.environ.get("FTPAIR_VMM") or os.path.join(rel, "cloud-hypervisor")
    return vmm, os.path.join(rel, "ft-kv-client"), guest


def pids_in(ns):
    out = sh(["ip", "netns", "pids", ns], check=False)
    return [int(p) for p in out.split() if p.isdigit()]


def kill_all_in(ns, wait=30.0):
    """SIGKILLs every process in namespace ``ns`` (all of them were started
    by this script) and waits until none is left. The wait is long: on a
    loaded host a killed VMM took over 5 s to be gone (its exit frees the
    guest's memory and KVM's shadow pages)."""
    deadline = time.monotonic() + wait
    while True:
        pids = pids_in(ns)
        if not pids or time.monotonic() > deadline:
            return
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.02)


def describe_process(pid):
    """A process's name, state and kernel wait channel, for a report."""
    def read(name):
        try:
            with open(f"/proc/{pid}/{name}") as f:
                return f.read().strip()
        except OSError:
            return "?"
    state = next((l.split(":", 1)[1].strip() for l in read("status").splitlines()
                  if l.startswith("State:")), "?")
    return f"{read('comm')}, {state}, waiting in {read('wchan') or '-'}"


def sweep_stale():
    """Deletes namespaces of runs of these scripts whose process is gone."""
    for line in sh(["ip", "netns", "list"], check=False).splitlines():
        name = line.split()[0] if line.split() else ""
        if not name.startswith(NS_PREFIX):
            continue
        pid = name[len(NS_PREFIX):].split("-")[0]
        if pid.isdigit() and not os.path.exists(f"/proc/{pid}"):
            kill_all_in(name)
            ip("netns", "del", name, check=False)


_OPEN = []
_COUNTER = [0]
_LOCK = threading.Lock()


def _close_all():
    for net in list(_OPEN):
        net.close()


def _on_signal(signum, _frame):
    raise SystemExit(128 + signum)


def install_cleanup():
    """Cleans up every open PairNet at exit and on SIGINT/SIGTERM/SIGHUP."""
    atexit.register(_close_all)
    for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(s, _on_signal)


class PairNet:
    """The four namespaces and their links (see the module text)."""

    def __init__(self):
        with _LOCK:
            n = _COUNTER[0]
            _COUNTER[0] += 1
        pid = os.getpid()
        self.tag = f"{pid:x}y{n:x}"
        self.ns_prefix = f"{NS_PREFIX}{pid}-{n}-"
        self.guest_mac = "52:54:%02x:%02x:%02x:%02x" % (
            (pid >> 16) & 0xff, (pid >> 8) & 0xff, pid & 0xff, 0x80 | (n & 0x7f))
        t = self.tag
        self.links = {h: {"bridge": f"br{h}{t}", "tap": f"tp{h}{t}", "uplink": f"up{h}{t}",
                          "lan_port": f"ln{h}{t}", "log": f"lg{h}{t}"} for h in "ab"}
        self.client_if = f"cli{t}"
        self.client_port = f"lnc{t}"
        self.lan_bridge = f"lan{t}"
        self.ns = {r: f"{self.ns_prefix}{r}" for r in ("hostA", "hostB", "client", "lan")}
        self.closed = False
        self.inodes = set()
        _OPEN.append(self)
        try:
            self._build()
        except BaseException:
            self.close()
            raise

    def host_ns(self, host):
        return self.ns["hostA" if host == "a" else "hostB"]

    def _build(self):
        for name in self.ns.values():
            ip("netns", "del", name, check=False)
            ip("netns", "add", name)
            self.inodes.add(os.stat(f"/var/run/netns/{name}").st_ino)
            ip("-n", name, "link", "set", "lo", "up")
            sh(["ip", "netns", "exec", name, "sysctl", "-q", "-w",
                "net.ipv6.conf.all.disable_ipv6=1", "-w", "net.ipv6.conf.default.disable_ipv6=1"])
        lan, lb, ln = self.ns["lan"], self.lan_bridge, LAN_PREFIX_LEN
        ip("-n", lan, "link", "add", lb, "type", "bridge")
        ip("-n", lan, "addr", "add", f"{LAN_IP}/{ln}", "dev", lb)
        ip("-n", lan, "link", "set", lb, "up")
        for h, addr in (("a", HOST_A_LAN), ("b", HOST_B_LAN)):
            ns, l = self.host_ns(h), self.links[h]
            ip("-n", ns, "link", "add", l["bridge"], "type", "bridge")
            ip("-n", ns, "addr", "add", f"{addr}/{ln}", "dev", l["bridge"])
            ip("-n", ns, "link", "set", l["bridge"], "up")
            ip("-n", ns, "link", "add", l["uplink"], "type", "veth", "peer", "name",
               l["lan_port"], "netns", lan)
            ip("-n", ns, "link", "set", l["uplink"], "master", l["bridge"], "up")
            ip("-n", lan, "link", "set", l["lan_port"], "master", lb, "up")
            ip("-n", ns, "tuntap", "add", "dev", l["tap"], "mode", "tap", "vnet_hdr")
            ip("-n", ns, "link", "set", l["tap"], "master", l["bridge"], "up")
        cl = self.ns["client"]
        ip("-n", cl, "link", "add", self.client_if, "type", "veth", "peer", "name",
           self.client_port, "netns", lan)
        ip("-n", cl, "addr", "add", f"{CLIENT_IP}/{ln}", "dev", self.client_if)
        ip("-n", cl, "link", "set", self.client_if, "up")
        ip("-n", lan, "link", "set", self.client_port, "master", lb, "up")
        a, b = self.ns["hostA"], self.ns["hostB"]
        la, lbg = self.links["a"]["log"], self.links["b"]["log"]
        ip("-n", a, "link", "add", la, "type", "veth", "peer", "name", lbg, "netns", b)
        ip("-n", a, "addr", "add", f"{LOG_A}/30", "dev", la)
        ip("-n", b, "addr", "add", f"{LOG_B}/30", "dev", lbg)
        ip("-n", a, "link", "set", la, "up")
        ip("-n", b, "link", "set", lbg, "up")
        for ns, to in ((cl, LAN_IP), (cl, HOST_A_LAN), (cl, HOST_B_LAN), (a, LOG_B)):
            self._wait_reachable(ns, to)

    def _wait_reachable(self, ns, to, timeout=10.0):
        """A link just set up drops frames for a moment: wait until ``to``
        answers a TCP connection attempt from ``ns`` to a port nothing
        listens on (a refusal is an answer)."""
        probe = ("import socket,sys\n"
                 "try:\n"
                 f"    socket.create_connection(('{to}', 9), timeout=0.3)\n"
                 "except ConnectionRefusedError:\n"
                 "    pass\n"
                 "except OSError:\n"
                 "    sys.exit(1)\n")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            p = subprocess.run(["ip", "netns", "exec", ns, "python3", "-c", probe],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            if p.returncode == 0:
                return
            time.sleep(0.1)
        raise PairError(f"{ns} cannot reach {to} after setup")

    def cut_log_link(self):
        ip("-n", self.ns["hostA"], "link", "set", self.links["a"]["log"], "down")

    def isolate_host(self, host):
        """Takes ``host`` off both links at once (its logging link end and
        its LAN uplink down), as a host that loses power: its peer gets no
        FIN or RST and notices only by its timeout."""
        ns, l = self.host_ns(host), self.links[host]
        ip("-n", ns, "link", "set", l["log"], "down")
        ip("-n", ns, "link", "set", l["uplink"], "down")

    def client_bytes(self):
        """(tx, rx) bytes of the client's interface so far."""
        out = ip("-n", self.ns["client"], "-j", "-s", "link", "show", "dev", self.client_if)
        stats = json.loads(out)[0]["stats64"]
        return stats["tx"]["bytes"], stats["rx"]["bytes"]

    def close(self):
        if self.closed:
            return
        self.closed = True
        for name in self.ns.values():
            kill_all_in(name)
        for h in "ab":
            ip("-n", self.host_ns(h), "link", "del", self.links[h]["tap"], check=False)
        for name in self.ns.values():
            ip("netns", "del", name, check=False)
        if self in _OPEN:
            _OPEN.remove(self)

    def leftovers(self):
        """What is left of this pair after ``close``: namespaces, root
        namespace links with its tag, processes in its namespaces."""
        left = [f"namespace {l.split()[0]}" for l in sh(["ip", "netns", "list"]).splitlines()
                if l.startswith(self.ns_prefix)]
        for line in sh(["ip", "-o", "link", "show"]).splitlines():
            name = line.split(": ")[1].split("@")[0] if ": " in line else ""
            if name.endswith(self.tag) and len(name) == 3 + len(self.tag):
                left.append(f"root-namespace link {name}")
        # A process still in one of the namespaces keeps it alive after its
        # name is gone (inodes another namespace reuses are not ours).
        reused = set()
        for entry in os.scandir("/var/run/netns") if os.path.isdir("/var/run/netns") else []:
            if not entry.name.startswith(self.ns_prefix):
                try:
                    reused.add(entry.stat().st_ino)
                except OSError:
                    pass
        for pid in os.listdir("/proc"):
            if not pid.isdigit():
                continue
            try:
                link = os.readlink(f"/proc/{pid}/ns/net")
            except OSError:
                continue
            ino = int(link[len("net:["):-1]) if link.startswith("net:[") else None
            if ino in self.inodes and ino not in reused:
                left.append(f"process {pid} ({describe_process(pid)}) in a namespace of this pair")
        return left


# CPU pinning for benchmarks: {"a": "1", "b": "0", "client": "0"} runs host
# A's VMMs on CPU 1 and everything else on CPU 0 (``taskset -c``; threads
# inherit it), so a primary has a core of its own as on real hosts. None:
# no pinning (tests and the chaos campaign).
PIN = None


def pinned(place):
    """``taskset -c CPUS`` for ``place`` ("a", "b" or "client"), or nothing."""
    return ["taskset", "-c", PIN[place]] if PIN and place in PIN else []


class Vmm:
    """A cloud-hypervisor process in a namespace; its files in ``run_dir``."""

    def __init__(self, net, host, vmm_bin, run_dir, name, args, api=True):
        self.name = name
        self.serial = os.path.join(run_dir, f"serial-{name}.txt")
        self.stderr = os.path.join(run_dir, f"stderr-{name}.txt")
        self.events = os.path.join(run_dir, f"events-{name}.json")
        self.api = os.path.join(run_dir, f"api-{name}.sock") if api else None
        for p in (self.serial, self.events, self.api):
            if p and os.path.exists(p):
                os.unlink(p)
        full = [*args, "--serial", f"file={self.serial}", "--console", "off",
                "--event-monitor", f"path={self.events}", "-v"]
        if self.api:
            full += ["--api-socket", f"path={self.api}"]
        with open(self.stderr, "wb") as err:
            self.proc = subprocess.Popen(["ip", "netns", "exec", net.host_ns(host), *pinned(host),
                                          vmm_bin, *full],
                                         stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                         stderr=err)
        self.started = time.monotonic()

    def running(self):
        return self.proc.poll() is None

    def cpu_seconds(self):
        """User + system CPU time used so far (0 once reaped)."""
        try:
            with open(f"/proc/{self.proc.pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        except (OSError, IndexError, ValueError):
            return 0.0

    def kill9(self):
        """``kill -9``, as a host failure; returns when it is reaped."""
        if self.running():
            self.proc.kill()
        self.proc.wait()

    def wait(self, timeout):
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None

    def serial_text(self):
        return read_text(self.serial)

    def stderr_text(self):
        return read_text(self.stderr)

    def wait_serial(self, text, timeout):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if text in self.serial_text():
                return
            if not self.running():
                break
            time.sleep(0.05)
        raise PairError(f"{self.name}: no {text!r} on the serial port "
                        f"(exit {self.proc.poll()}); stderr tail:\n{tail(self.stderr_text())}")

    def ft_events(self):
        """The names of the fault-tolerance events so far, in order."""
        return [e.get("event") for e in read_events(self.events)
                if e.get("source") == "fault-tolerance"]

    def get(self, endpoint, timeout=2.0):
        """``GET /api/v1/<endpoint>`` over the API socket: the JSON body."""
        conn = _UnixHTTP(self.api, timeout)
        try:
            conn.request("GET", f"/api/v1/{endpoint}")
            r = conn.getresponse()
            body = r.read()
            if r.status != 200:
                raise PairError(f"{self.name}: GET {endpoint}: {r.status} {body[:200]!r}")
            return json.loads(body)
        finally:
            conn.close()

    def wait_api(self, timeout=20.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                return self.get("vm.info")
            except (OSError, PairError, ValueError, http.client.HTTPException):
                if not self.running():
                    break
                time.sleep(0.05)
        raise PairError(f"{self.name}: the API did not answer; stderr tail:\n"
                        f"{tail(self.stderr_text())}")


class _UnixHTTP(http.client.HTTPConnection):
    def __init__(self, path, timeout):
        super().__init__("localhost", timeout=timeout)
        self.path = path

    def connect(self):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(self.timeout)
        s.connect(self.path)
        self.sock = s


def read_text(path):
    try:
        with open(path, errors="replace") as f:
            return f.read()
    except FileNotFoundError:
        return ""


def tail(text, n=15):
    return "\n".join(text.splitlines()[-n:])


def read_events(path):
    """The JSON objects of an event-monitor file (concatenated, pretty
    printed objects)."""
    text, out, dec, i = read_text(path), [], json.JSONDecoder(), 0
    while True:
        while i < len(text) and text[i].isspace():
            i += 1
        if i >= len(text):
            return out
        try:
            obj, i = dec.raw_decode(text, i)
        except ValueError:
            return out  # a partly written last object
        out.append(obj)


def write_key(path):
    """A fresh 32-byte pair key, mode 0600."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(os.urandom(32))
    os.chmod(path, 0o600)
    return path


def sparse_disk(path, size=16 << 20):
    with open(path, "wb") as f:
        f.truncate(size)
    return path


class Etcd:
    """A private etcd in the LAN namespace (Debian's etcd-server)."""

    def __init__(self, net, data_dir, port=ETCD_PORT):
        os.makedirs(data_dir, exist_ok=True)
        self.url = f"http://{LAN_IP}:{port}"
        peer = f"http://{LAN_IP}:{port + 1}"
        self.log = os.path.join(data_dir, "etcd.log")
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(
                ["ip", "netns", "exec", net.ns["lan"], "etcd", "--name=ft-bench",
                 f"--data-dir={os.path.join(data_dir, 'data')}",
                 f"--listen-client-urls={self.url}", f"--advertise-client-urls={self.url}",
                 f"--listen-peer-urls={peer}", f"--initial-advertise-peer-urls={peer}",
                 f"--initial-cluster=ft-bench={peer}"],
                stdin=subprocess.DEVNULL, stdout=log, stderr=log)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            p = subprocess.run(["ip", "netns", "exec", net.ns["lan"], "python3", "-c",
                                "import urllib.request,sys;"
                                f"sys.stdout.write(urllib.request.urlopen('{self.url}/health',"
                                "timeout=2).read().decode())"],
                               stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
            if b'"health":"true"' in p.stdout:
                return
            if self.proc.poll() is not None:
                break
            time.sleep(0.2)
        self.stop()
        raise PairError(f"etcd did not start:\n{tail(read_text(self.log))}")

    def tiebreaker(self, prefix):
        return f"etcd:{self.url}/{prefix}"

    def stop(self):
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()


def pair_args(guest, cmdline, memory="128M", disk=None, net=None):
    """The VM options both sides share (paths and taps may differ)."""
    args = ["--kernel", guest, "--cmdline", cmdline, "--memory", f"size={memory}"]
    if disk:
        args += ["--disk", f"path={disk}"]
    if net:
        args += ["--net", net]
    return args


def start_pair(net, vmm_bin, run_dir, vm_args_a, vm_args_b, key, tiebreaker, extra="",
               log=None, tag=""):
    """A backup on host B, then its primary on host A: (primary, backup);
    their files are named `<kind>-primary<tag>.*` and `<kind>-backup<tag>.*`."""
    common = f"key={key},tiebreaker={tiebreaker}{extra}"
    b_ft = f"mode=backup,listen=tcp:{LOG_B}:{CHANNEL_PORT},{common}"
    if log:
        b_ft += f",log={log}"
    backup = Vmm(net, "b", vmm_bin, run_dir, f"backup{tag}",
                 [*vm_args_b, "--fault-tolerance", b_ft])
    p_ft = f"mode=primary,peer=tcp:{LOG_B}:{CHANNEL_PORT},{common}"
    primary = Vmm(net, "a", vmm_bin, run_dir, f"primary{tag}",
                  [*vm_args_a, "--fault-tolerance", p_ft])
    return primary, backup


def client_cmd(net, client_bin, *args):
    """``ft-kv-client --addr GUEST:7000 ARGS`` in the client namespace."""
    return ["ip", "netns", "exec", net.ns["client"], *pinned("client"), client_bin,
            "--addr", f"{GUEST_IP}:{KV_PORT}", *args]


def parse_kv(line):
    """``k=v`` fields of an ft-kv-client report line (numbers as floats)."""
    out = {}
    for word in line.split():
        if "=" in word:
            k, v = word.split("=", 1)
            try:
                out[k] = float(v)
            except ValueError:
                out[k] = v
    return out


def percentile(values, p):
    """The p-th percentile (nearest rank) of ``values``."""
    if not values:
        return float("nan")
    s = sorted(values)
    rank = max(1, -(-len(s) * p // 100))
    return s[min(rank, len(s)) - 1]


def median(values):
    return percentile(values, 50)

