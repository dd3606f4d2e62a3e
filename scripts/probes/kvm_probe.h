/* Shared by the C probes of this directory: headers, an ioctl check that
 * exits with the failing call, and a flat 4 GiB segment for long mode. */
#ifndef KVM_PROBE_H
#define KVM_PROBE_H
#define _GNU_SOURCE
#include <fcntl.h>
#include <linux/kvm.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#define CHECK(x)                                                               \
  do {                                                                         \
    if ((x) < 0) {                                                             \
      perror(#x);                                                              \
      exit(1);                                                                 \
    }                                                                          \
  } while (0)

static void seg(struct kvm_segment *s, uint16_t sel, uint8_t type, uint8_t dpl,
                uint8_t l, uint8_t db) {
  memset(s, 0, sizeof *s);
  s->base = 0;
  s->limit = 0xffffffff;
  s->selector = sel;
  s->type = type;
  s->present = 1;
  s->dpl = dpl;
  s->db = db;
  s->s = 1;
  s->l = l;
  s->g = 1;
}

#endif
