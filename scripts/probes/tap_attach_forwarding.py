#!/usr/bin/env python3
# Copyright 2026 The ft-cloud-hypervisor authors.
# SPDX-License-Identifier: Apache-2.0
"""Probe: does a persistent tap in a bridge forward the frames written to it
at once after a process attaches to it?

A backup goes live by attaching to its tap (TUNSETIFF) and at once sends a
RARP and the frames its replay produced. In a chaos trial the client saw
none of those (and neither the first RARP), only the announcement sent
50 ms later. This probe shows why, with no VMM: in a fresh namespace, a
bridge with a persistent tap and a veth port to a listener namespace; the
probe attaches to the tap and writes one numbered broadcast frame every
0.5 ms for 30 ms, while sampling the tap's IFF_RUNNING flag and its bridge
port state (/sys/class/net/TAP/brport/state: 3 = forwarding). The listener
counts which frames it received. Repeated ROUNDS times.

Expected on Linux: the carrier comes on at the attach, but the operational
state and the bridge port's state follow only when the kernel's linkwatch
work runs (asynchronously, later under load): frames written before that
are dropped by the bridge. The first frame that arrives is written after
IFF_RUNNING is seen.

Usage (root): scripts/probes/tap_attach_forwarding.py [ROUNDS]
"""
import ctypes
import fcntl
import os
import socket
import struct
import subprocess
import sys
import time

TUNSETIFF = 0x400454CA
SIOCGIFFLAGS = 0x8913
IFF_TAP = 0x0002
IFF_NO_PI = 0x1000
IFF_RUNNING = 0x40
CLONE_NEWNET = 0x40000000
TAG = f"pr{os.getpid() % 100000}"
NS_A, NS_L = f"tapprobe-{TAG}-a", f"tapprobe-{TAG}-l"
TAP, BR, VA, VL = f"t{TAG}", f"b{TAG}", f"v{TAG}", f"w{TAG}"


def sh(*args):
    subprocess.run(args, check=True, stdin=subprocess.DEVNULL)


def setup():
    for ns in (NS_A, NS_L):
        sh("ip", "netns", "add", ns)
    sh("ip", "-n", NS_A, "link", "add", BR, "type", "bridge")
    sh("ip", "-n", NS_A, "link", "set", BR, "up")
    sh("ip", "-n", NS_A, "tuntap", "add", "dev", TAP, "mode", "tap")
    sh("ip", "-n", NS_A, "link", "set", TAP, "master", BR, "up")
    sh("ip", "-n", NS_A, "link", "add", VA, "type", "veth", "peer", "name", VL, "netns", NS_L)
    sh("ip", "-n", NS_A, "link", "set", VA, "master", BR, "up")
    sh("ip", "-n", NS_L, "link", "set", VL, "up")


def teardown():
    for ns in (NS_A, NS_L):
        subprocess.run(["ip", "netns", "del", ns], stdin=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL)


def in_ns(ns):
    fd = os.open(f"/var/run/netns/{ns}", os.O_RDONLY)
    if ctypes.CDLL(None, use_errno=True).setns(fd, CLONE_NEWNET) != 0:
        sys.exit(f"setns {ns}: {os.strerror(ctypes.get_errno())}")
    os.close(fd)


def flags(sock):
    req = struct.pack("16sH22x", TAP.encode(), 0)
    return struct.unpack("16sH22x", fcntl.ioctl(sock, SIOCGIFFLAGS, req))[1]


def port_state():
    with open(f"/sys/class/net/{TAP}/brport/state") as f:
        return int(f.read())


def one_round():
    """Attaches to the tap and writes frames; returns (events, frame times)."""
    tun = os.open("/dev/net/tun", os.O_RDWR)
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    t0 = time.monotonic()
    fcntl.ioctl(tun, TUNSETIFF, struct.pack("16sH22x", TAP.encode(), IFF_TAP | IFF_NO_PI))
    running_at = forwarding_at = None
    sent = []
    k = 0
    while time.monotonic() - t0 < 0.030:
        now = time.monotonic() - t0
        if running_at is None and flags(sock) & IFF_RUNNING:
            running_at = now
        if forwarding_at is None and port_state() == 3:
            forwarding_at = now
        frame = b"\xff" * 6 + b"\x02\x00\x00\x00\x00\x01" + b"\x88\xb5" + struct.pack("!I", k)
        os.write(tun, frame + b"\0" * (60 - len(frame)))
        sent.append(now)
        k += 1
        time.sleep(0.0005)
    time.sleep(0.05)
    os.close(tun)
    sock.close()
    # Let the carrier go off before the next round.
    time.sleep(0.2)
    return running_at, forwarding_at, sent


def main():
    if os.geteuid() != 0:
        sys.exit("tap_attach_forwarding: needs root")
    if len(sys.argv) > 2 and sys.argv[1] == "--inner":
        # In NS_A, through `ip netns exec`, which mounts NS_A's /sys.
        global TAP, VL, NS_L
        TAP, VL, NS_L = sys.argv[3], sys.argv[4], sys.argv[5]
        return inner(int(sys.argv[2]))
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 10
    teardown()
    setup()
    try:
        subprocess.run(["ip", "netns", "exec", NS_A, sys.executable, os.path.abspath(__file__),
                        "--inner", str(rounds), TAP, VL, NS_L], check=True)
    finally:
        teardown()


def inner(rounds):
    if True:
        print(f"load average {open('/proc/loadavg').read().split()[:3]}")
        print("round  IFF_RUNNING after  port forwarding after  first frame through "
              "(written at)  frames lost of sent")
        for r in range(rounds):
            rd, wr = os.pipe()
            pid = os.fork()
            if pid == 0:
                os.close(rd)
                in_ns(NS_L)
                s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x88B5))
                s.bind((VL, 0))
                s.settimeout(0.4)
                os.write(wr, b"r")
                got = []
                try:
                    while True:
                        data = s.recv(100)
                        got.append(struct.unpack("!I", data[14:18])[0])
                except socket.timeout:
                    pass
                os.write(wr, (",".join(map(str, got)) + "\n").encode())
                os._exit(0)
            os.close(wr)
            os.read(rd, 1)
            running_at, forwarding_at, sent = one_round()
            out = b""
            while not out.endswith(b"\n"):
                chunk = os.read(rd, 65536)
                if not chunk:
                    break
                out += chunk
            os.waitpid(pid, 0)
            os.close(rd)
            got = [int(x) for x in out.decode().strip().split(",") if x]
            first = min(got) if got else None
            ms = lambda v: "never" if v is None else f"{v * 1000:7.2f} ms"  # noqa: E731
            print(f"{r:5}  {ms(running_at):>17}  {ms(forwarding_at):>21}  "
                  f"{'none' if first is None else ms(sent[first]):>20}             "
                  f"{len(sent) - len(got)} of {len(sent)}")


if __name__ == "__main__":
    main()
