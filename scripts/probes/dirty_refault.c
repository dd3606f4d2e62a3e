/* Probe: what a guest pays, per page, for the VMM's dirty-page tracking
 * after each read of the dirty log (issue 11), and whether
 * KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2 lets the VMM leave chosen pages
 * writable. A CPL3 loop writes one byte to each of P pages, then
 * `out 0x80, al`; the VMM runs R such rounds, and between rounds:
 *   none     no dirty logging on the slot;
 *   auto     dirty logging, KVM_GET_DIRTY_LOG (returns and re-protects);
 *   keep     dirty logging, MANUAL_PROTECT2, KVM_GET_DIRTY_LOG only (the
 *            pages stay writable and stay reported dirty);
 *   clear    dirty logging, MANUAL_PROTECT2, GET then KVM_CLEAR_DIRTY_LOG
 *            of every page reported (re-protects, as auto);
 *   half     as clear, but the clear leaves the first half of the P pages
 *            writable (the VMM's "hot pages").
 * Prints us per round, us per page over `none`, and the pages the log
 * reported in the last round (keep/half must still report all P).
 * Build: cc -O2 -o /tmp/dirty_refault scripts/probes/dirty_refault.c
 * Usage: /tmp/dirty_refault MODE [P=64] [R=2000]
 */
#include "kvm_probe.h"

#define MEM (8ul << 20)
#define DATA 0x400000ul
#define WORDS (MEM / 4096 / 64)

int main(int argc, char **argv) {
  if (argc < 2) {
    fprintf(stderr, "usage: %s none|auto|keep|clear|half [P] [R]\n", argv[0]);
    return 2;
  }
  const char *mode = argv[1];
  long pages = argc > 2 ? atol(argv[2]) : 64, rounds = argc > 3 ? atol(argv[3]) : 2000;
  if (pages < 1 || pages > 1024) {
    fprintf(stderr, "P must be 1..1024\n");
    return 2;
  }
  int logging = strcmp(mode, "none") != 0;
  int manual = !strcmp(mode, "keep") || !strcmp(mode, "clear") || !strcmp(mode, "half");
  int kvm = open("/dev/kvm", O_RDWR);
  CHECK(kvm);
  int vm = ioctl(kvm, KVM_CREATE_VM, 0);
  CHECK(vm);
  if (manual) {
    printf("KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2: %d\n",
           ioctl(kvm, KVM_CHECK_EXTENSION, KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2));
    struct kvm_enable_cap cap = {.cap = KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2,
                                 .args = {KVM_DIRTY_LOG_MANUAL_PROTECT_ENABLE}};
    CHECK(ioctl(vm, KVM_ENABLE_CAP, &cap));
  }
  uint8_t *mem = mmap(0, MEM, PROT_READ | PROT_WRITE,
                      MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  struct kvm_userspace_memory_region r = {
      0, logging ? KVM_MEM_LOG_DIRTY_PAGES : 0, 0, MEM, (uint64_t)mem};
  CHECK(ioctl(vm, KVM_SET_USER_MEMORY_REGION, &r));
  /* Identity map of the first 8 MiB with 2 MiB pages, user-accessible. */
  uint64_t *pml4 = (uint64_t *)(mem + 0x1000), *pdpt = (uint64_t *)(mem + 0x2000),
           *pd0 = (uint64_t *)(mem + 0x3000);
  pml4[0] = 0x2000 | 7;
  pdpt[0] = 0x3000 | 7;
  for (int i = 0; i < 4; i++) pd0[i] = ((uint64_t)i << 21) | 0x87;
  /* l: xor rcx,rcx; w: mov rax,rcx; shl rax,12; mov [rbx+rax],dl; inc rcx;
   * cmp rcx,rsi; jne w; inc rdx; out 0x80,al; jmp l */
  static const uint8_t code[] = {0x48, 0x31, 0xc9, 0x48, 0x89, 0xc8, 0x48, 0xc1, 0xe0,
                                 0x0c, 0x88, 0x14, 0x03, 0x48, 0xff, 0xc1, 0x48, 0x39,
                                 0xf1, 0x75, 0xee, 0x48, 0xff, 0xc2, 0xe6, 0x80, 0xeb,
                                 0xe4};
  memcpy(mem + 0x100000, code, sizeof code);
  int vcpu = ioctl(vm, KVM_CREATE_VCPU, 0);
  CHECK(vcpu);
  int sz = ioctl(kvm, KVM_GET_VCPU_MMAP_SIZE, 0);
  struct kvm_run *run = mmap(0, sz, PROT_READ | PROT_WRITE, MAP_SHARED, vcpu, 0);
  struct kvm_sregs s;
  CHECK(ioctl(vcpu, KVM_GET_SREGS, &s));
  seg(&s.cs, 0x1b, 11, 3, 1, 0);
  seg(&s.ds, 0x23, 3, 3, 0, 1);
  s.es = s.fs = s.gs = s.ss = s.ds;
  memset(&s.tr, 0, sizeof s.tr);
  s.tr.base = 0x5000;
  s.tr.limit = 0x67;
  s.tr.selector = 0x28;
  s.tr.type = 11;
  s.tr.present = 1;
  s.cr0 = 0x80050033;
  s.cr3 = 0x1000;
  s.cr4 = 0x20;
  s.efer = 0x500;
  CHECK(ioctl(vcpu, KVM_SET_SREGS, &s));
  struct kvm_regs regs = {0};
  regs.rip = 0x100000;
  regs.rflags = 2 | 0x3000; /* IOPL 3, IF 0 */
  regs.rbx = DATA;
  regs.rsi = pages;
  CHECK(ioctl(vcpu, KVM_SET_REGS, &regs));

  static uint64_t bitmap[WORDS], clear[WORDS];
  long reported = 0;
  struct timespec a, b;
  for (long i = -1; i < rounds; i++) {
    if (i == 0) clock_gettime(CLOCK_MONOTONIC, &a); /* round -1 warms up */
    CHECK(ioctl(vcpu, KVM_RUN, 0));
    if (run->exit_reason != KVM_EXIT_IO || run->io.port != 0x80) {
      fprintf(stderr, "unexpected exit %u in round %ld\n", run->exit_reason, i);
      return 1;
    }
    if (!logging) continue;
    struct kvm_dirty_log d = {.slot = 0, .dirty_bitmap = bitmap};
    CHECK(ioctl(vm, KVM_GET_DIRTY_LOG, &d));
    reported = 0;
    for (size_t w = DATA / 4096 / 64; w < WORDS; w++)
      reported += __builtin_popcountll(bitmap[w]);
    if (!strcmp(mode, "clear") || !strcmp(mode, "half")) {
      memcpy(clear, bitmap, sizeof clear);
      if (!strcmp(mode, "half"))
        for (long p = 0; p < pages / 2; p++) {
          uint64_t page = DATA / 4096 + p;
          clear[page / 64] &= ~(1ull << (page % 64));
        }
      struct kvm_clear_dirty_log c = {
          .slot = 0, .num_pages = MEM / 4096, .first_page = 0, .dirty_bitmap = clear};
      CHECK(ioctl(vm, KVM_CLEAR_DIRTY_LOG, &c));
    }
  }
  clock_gettime(CLOCK_MONOTONIC, &b);
  double us = ((b.tv_sec - a.tv_sec) * 1e9 + (b.tv_nsec - a.tv_nsec)) / 1e3 / rounds;
  printf("%-5s P=%ld R=%ld: %.1f us per round, %.2f us per page; last round reported %ld data pages\n",
         mode, pages, rounds, us, us / pages, reported);
  return 0;
}
