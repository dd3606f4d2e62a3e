/* Copyright 2026 The ft-cloud-hypervisor authors.
 * SPDX-License-Identifier: Apache-2.0
 *
 * Probe: what the first write to fresh anonymous memory costs on this host,
 * as a migration destination's (or an FT VMotion backup's) guest memory pays
 * it for every page the pre-copy writes. Maps MIB MiB (default 1024), writes
 * one byte per 4 KiB page and times it, then writes the whole range again
 * (memset: no more faults); with `thp` the range is madvise(MADV_HUGEPAGE)d
 * first. Repeats ROUNDS times (default 3), unmapping in between, so that the
 * first round may get memory this machine's kernel never handed out before
 * and the later ones get the pages just freed.
 *
 * usage: cc -O2 -o /tmp/first_touch scripts/probes/first_touch.c &&
 *        /tmp/first_touch [4k|thp] [MIB] [ROUNDS]
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>

static double now(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return t.tv_sec + t.tv_nsec / 1e9;
}

int main(int argc, char **argv)
{
	int thp = argc > 1 && strcmp(argv[1], "thp") == 0;
	size_t mib = argc > 2 ? strtoul(argv[2], NULL, 10) : 1024;
	int rounds = argc > 3 ? atoi(argv[3]) : 3;
	size_t n = mib << 20, align = 2UL << 20;
	for (int r = 0; r < rounds; r++) {
		char *map = mmap(NULL, n + align, PROT_READ | PROT_WRITE,
				 MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
		if (map == MAP_FAILED) {
			perror("mmap");
			return 1;
		}
		char *p = (char *)(((unsigned long)map + align - 1) & ~(align - 1));
		if (thp && madvise(p, n, MADV_HUGEPAGE) != 0)
			perror("madvise(MADV_HUGEPAGE)");
		double t = now();
		for (size_t i = 0; i < n; i += 4096)
			p[i] = 1;
		double first = now() - t;
		t = now();
		memset(p, 2, n);
		double again = now() - t;
		printf("%s round %d: first write to %zu MiB %.3f s (%.0f MiB/s), "
		       "written again %.3f s (%.0f MiB/s)\n",
		       thp ? "thp" : "4k", r, mib, first, mib / first, again, mib / again);
		munmap(map, n + align);
	}
	return 0;
}
