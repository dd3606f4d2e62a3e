#!/usr/bin/env python3
# Copyright 2026 The ft-cloud-hypervisor authors.
# SPDX-License-Identifier: Apache-2.0
"""Probe: how long after a process attaches to a persistent tap does the
kernel report it running (IFF_RUNNING), depending on whether the tap was
brought up before or after the attach?

A backup going live, or a VMM started on a tap created by `ip tuntap add`,
attaches to the tap (TUNSETIFF, which turns its carrier on) and brings it
up. Frames the host sends to the tap, and a bridge's forwarding from it,
wait until the kernel's link-watch work has handled the carrier change.
The kernel handles a change at once when it is "urgent" (among others: the
device is up and its queues still have the no-op qdisc, which is the case
for a tap that is up while its carrier comes on); any other change waits
for the rate-limited work, up to a second. In CI, a go-live on a tap that
was down waited more than a second for it.

Each round: a fresh network namespace (after a pause of PAUSE seconds, the
quiet in which the wait shows), a persistent tap in it, then in one order
or the other: attach and bring up, or bring up and attach; the time until
IFF_RUNNING is printed per order.

Usage (root): scripts/probes/tap_running_delay.py [ROUNDS] [PAUSE]
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
SIOCSIFFLAGS = 0x8914
IFF_UP = 0x1
IFF_RUNNING = 0x40
IFF_TAP = 0x0002
IFF_NO_PI = 0x1000
CLONE_NEWNET = 0x40000000
LIBC = ctypes.CDLL(None, use_errno=True)


def flags(sock, name):
    req = struct.pack("16sH22x", name.encode(), 0)
    return struct.unpack("16sH22x", fcntl.ioctl(sock, SIOCGIFFLAGS, req))[1]


def set_up(sock, name):
    req = struct.pack("16sH22x", name.encode(), flags(sock, name) | IFF_UP)
    fcntl.ioctl(sock, SIOCSIFFLAGS, req)


def attach(name):
    fd = os.open("/dev/net/tun", os.O_RDWR)
    fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH22x", name.encode(), IFF_TAP | IFF_NO_PI))
    return fd


def round_ms(tag, up_first, pause):
    """One round in a fresh namespace; the ms until the tap runs."""
    time.sleep(pause)
    ns = f"taprun-{tag}"
    subprocess.run(["ip", "netns", "add", ns], check=True)
    home = os.open("/proc/self/ns/net", os.O_RDONLY)
    try:
        nsfd = os.open(f"/run/netns/{ns}", os.O_RDONLY)
        if LIBC.setns(nsfd, CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), "setns")
        os.close(nsfd)
        subprocess.run(["ip", "tuntap", "add", "dev", "tp0", "mode", "tap"], check=True)
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        start = time.monotonic()
        if up_first:
            set_up(sock, "tp0")
            fd = attach("tp0")
        else:
            fd = attach("tp0")
            set_up(sock, "tp0")
        while not flags(sock, "tp0") & IFF_RUNNING:
            if time.monotonic() - start > 5:
                break
            time.sleep(0.0002)
        ms = (time.monotonic() - start) * 1000
        os.close(fd)
        sock.close()
        return ms
    finally:
        LIBC.setns(home, CLONE_NEWNET)
        os.close(home)
        subprocess.run(["ip", "netns", "del", ns], check=False)


def main():
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 10
    pause = float(sys.argv[2]) if len(sys.argv) > 2 else 1.2
    for up_first, label in ((False, "attach, then up"), (True, "up, then attach")):
        ms = sorted(round_ms(f"{os.getpid()}-{k}", up_first, pause) for k in range(rounds))
        slow = sum(1 for m in ms if m > 100)
        print(f"{label}: {rounds} rounds, median {ms[len(ms) // 2]:.2f} ms, "
              f"max {ms[-1]:.1f} ms, over 100 ms: {slow}")


if __name__ == "__main__":
    main()
