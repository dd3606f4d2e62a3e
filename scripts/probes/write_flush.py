#!/usr/bin/env python3
# Copyright 2026 The ft-cloud-hypervisor authors.
# SPDX-License-Identifier: Apache-2.0
"""What does one 4 KiB write + fdatasync cost on this host, buffered (page
cache, as our VMM's default disk and QEMU's cache=writeback) against
O_DIRECT (our --disk direct=on, QEMU's cache=none)? No VMM, no KVM: the
host side of the 4 KiB write+flush row of scripts/bench-kv in isolation.

Like the test guest's `workload=disk` flush phase: the 16 blocks it
rotates over are written (allocated) first, then each round writes 4 KiB
to the next of them and calls fdatasync. The modes alternate in rounds
so that a change in the machine's load hits both alike.

Usage: scripts/probes/write_flush.py [DIR] [ROUNDS] [N]
  DIR     where the scratch file goes (default /tmp: the bench's work dir)
  ROUNDS  alternating rounds per mode (default 5)
  N       write+fdatasync pairs per round (default 1000)
"""

import mmap
import os
import statistics
import sys
import time

BLOCK = 4096
SLOTS = 16


def one_round(path, direct, n):
    flags = os.O_RDWR | (os.O_DIRECT if direct else 0)
    fd = os.open(path, flags)
    try:
        # An anonymous mapping is page-aligned, as O_DIRECT needs.
        buf = mmap.mmap(-1, BLOCK)
        buf.write(b"\x5a" * BLOCK)
        lat = []
        start = time.perf_counter()
        for i in range(n):
            t = time.perf_counter()
            if os.pwrite(fd, buf, (i % SLOTS) * BLOCK) != BLOCK:
                raise OSError("short write")
            os.fdatasync(fd)
            lat.append(time.perf_counter() - t)
        total = time.perf_counter() - start
        buf.close()
    finally:
        os.close(fd)
    lat.sort()
    return n / total, lat[len(lat) // 2] * 1e6, lat[int(len(lat) * 0.99)] * 1e6


def main():
    where = sys.argv[1] if len(sys.argv) > 1 else "/tmp"
    rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 5
    n = int(sys.argv[3]) if len(sys.argv) > 3 else 1000
    path = os.path.join(where, f"write_flush.{os.getpid()}")
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.ftruncate(fd, 1 << 30)
        os.pwrite(fd, b"\0" * (SLOTS * BLOCK), 0)
        os.fdatasync(fd)
        os.close(fd)
        try:
            os.close(os.open(path, os.O_RDWR | os.O_DIRECT))
        except OSError as e:
            sys.exit(f"{where} refuses O_DIRECT: {e}")
        print(f"load average {os.getloadavg()}; {path}; {rounds} rounds x {n}")
        results = {"buffered": [], "direct": []}
        for r in range(rounds):
            for mode in results:
                rate, p50, p99 = one_round(path, mode == "direct", n)
                results[mode].append((rate, p50, p99))
                print(f"round {r + 1} {mode:8s} {rate:8.0f}/s  p50 {p50:7.1f} us  p99 {p99:7.1f} us")
        print("\nmedians      write+fdatasync/s    p50 us    p99 us")
        for mode, rows in results.items():
            med = [statistics.median(x[i] for x in rows) for i in range(3)]
            print(f"{mode:12s} {med[0]:18.0f} {med[1]:9.1f} {med[2]:9.1f}")
    finally:
        os.unlink(path)


if __name__ == "__main__":
    main()
