/* Probe: the cost of one exit from guest CPL3 under each KVM configuration
 * the VMM might differ in. Long mode, a CPL3 loop doing either
 *   pio:   out 0x80, al        (IOPL 3)
 *   mmio:  mov [0xd0000000], al (no memory slot there: a user-space exit)
 *   apic:  mov eax, [0xfee00030] (the xAPIC version register: handled in
 *          the kernel when an in-kernel LAPIC exists, else a user-space exit)
 * and KVM_RUN in a loop. Options (any order, after the target):
 *   irqchip=none|split|full   no in-kernel irqchip / KVM_CAP_SPLIT_IRQCHIP /
 *                             KVM_CREATE_IRQCHIP
 *   tss          KVM_SET_TSS_ADDR
 *   cpuid        KVM_SET_CPUID2 with KVM_GET_SUPPORTED_CPUID
 *   dirty        KVM_MEM_LOG_DIRTY_PAGES on the RAM slot
 *   syncregs     kvm_run.kvm_valid_regs = KVM_SYNC_X86_REGS
 *   window       request_interrupt_window = 1 on every entry (guest IF=0)
 *   usermsr      KVM_CAP_X86_USER_SPACE_MSR + an MSR filter
 *   sigmask      KVM_SET_SIGNAL_MASK (empty)
 *   pin          pin the thread to CPU 0
 *   mem=MiB      RAM slot size (default 2)
 *   n=N          exits to time (default 200000)
 * Build: cc -O2 -o /tmp/exit_config scripts/probes/exit_config.c
 * Prints: accesses/s and us per access, and how many left the kernel.
 */
#include "kvm_probe.h"

int main(int argc, char **argv) {
  if (argc < 2) {
    fprintf(stderr, "usage: %s pio|mmio|apic [options]\n", argv[0]);
    return 2;
  }
  const char *target = argv[1];
  const char *irqchip = "none";
  int tss = 0, cpuid = 0, dirty = 0, syncregs = 0, window = 0, usermsr = 0,
      sigmask = 0, pin = 0;
  long mem_mib = 2, n = 200000;
  for (int i = 2; i < argc; i++) {
    const char *a = argv[i];
    if (!strncmp(a, "irqchip=", 8)) irqchip = a + 8;
    else if (!strcmp(a, "tss")) tss = 1;
    else if (!strcmp(a, "cpuid")) cpuid = 1;
    else if (!strcmp(a, "dirty")) dirty = 1;
    else if (!strcmp(a, "syncregs")) syncregs = 1;
    else if (!strcmp(a, "window")) window = 1;
    else if (!strcmp(a, "usermsr")) usermsr = 1;
    else if (!strcmp(a, "sigmask")) sigmask = 1;
    else if (!strcmp(a, "pin")) pin = 1;
    else if (!strncmp(a, "mem=", 4)) mem_mib = atol(a + 4);
    else if (!strncmp(a, "n=", 2)) n = atol(a + 2);
    else {
      fprintf(stderr, "unknown option %s\n", a);
      return 2;
    }
  }
  if (pin) {
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(0, &set);
    CHECK(sched_setaffinity(0, sizeof set, &set));
  }
  int kvm = open("/dev/kvm", O_RDWR);
  CHECK(kvm);
  int vm = ioctl(kvm, KVM_CREATE_VM, 0);
  CHECK(vm);
  if (tss) CHECK(ioctl(vm, KVM_SET_TSS_ADDR, 0xfffbd000));
  if (!strcmp(irqchip, "full")) {
    CHECK(ioctl(vm, KVM_CREATE_IRQCHIP, 0));
  } else if (!strcmp(irqchip, "split")) {
    struct kvm_enable_cap cap = {.cap = KVM_CAP_SPLIT_IRQCHIP, .args = {24}};
    CHECK(ioctl(vm, KVM_ENABLE_CAP, &cap));
  }
  if (usermsr) {
    struct kvm_enable_cap cap = {.cap = KVM_CAP_X86_USER_SPACE_MSR,
                                 .args = {KVM_MSR_EXIT_REASON_FILTER}};
    CHECK(ioctl(vm, KVM_ENABLE_CAP, &cap));
    static uint8_t bitmap[1] = {0};
    struct kvm_msr_filter f = {.flags = KVM_MSR_FILTER_DEFAULT_ALLOW};
    f.ranges[0].flags = KVM_MSR_FILTER_READ | KVM_MSR_FILTER_WRITE;
    f.ranges[0].base = 0x4b564d00; /* an unused range: deny */
    f.ranges[0].nmsrs = 1;
    f.ranges[0].bitmap = bitmap;
    CHECK(ioctl(vm, KVM_X86_SET_MSR_FILTER, &f));
  }
  size_t MEM = (size_t)mem_mib << 20;
  uint8_t *mem = mmap(0, MEM, PROT_READ | PROT_WRITE,
                      MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  struct kvm_userspace_memory_region r = {
      0, dirty ? KVM_MEM_LOG_DIRTY_PAGES : 0, 0, MEM, (uint64_t)mem};
  CHECK(ioctl(vm, KVM_SET_USER_MEMORY_REGION, &r));

  /* Page tables: PML4 0x1000, PDPT 0x2000, PD(0-1G) 0x3000, PD(3-4G)
   * 0x4000; 2 MiB pages, user-accessible. */
  uint64_t *pml4 = (uint64_t *)(mem + 0x1000), *pdpt = (uint64_t *)(mem + 0x2000),
           *pd0 = (uint64_t *)(mem + 0x3000), *pd3 = (uint64_t *)(mem + 0x4000);
  pml4[0] = 0x2000 | 7;
  pdpt[0] = 0x3000 | 7;
  pdpt[3] = 0x4000 | 7;
  pd0[0] = 0x0 | 0x87;
  pd3[0x80] = 0xd0000000 | 0x87 | 0x10; /* PCD */
  pd3[0x1f7] = 0xfee00000 | 0x87 | 0x10;

  /* mov rcx, n; l: <op>; dec rcx; jnz l; out 0x81, al */
  uint8_t op[2];
  if (!strcmp(target, "pio")) {
    op[0] = 0xe6, op[1] = 0x80; /* out 0x80, al */
  } else if (!strcmp(target, "mmio")) {
    op[0] = 0x88, op[1] = 0x07; /* mov [rdi], al */
  } else if (!strcmp(target, "apic")) {
    op[0] = 0x8b, op[1] = 0x06; /* mov eax, [rsi] */
  } else {
    fprintf(stderr, "unknown target %s\n", target);
    return 2;
  }
  uint8_t code[32];
  size_t len = 0;
  code[len++] = 0x48, code[len++] = 0xb9;
  memcpy(code + len, &n, 8), len += 8;
  code[len++] = op[0], code[len++] = op[1];
  code[len++] = 0x48, code[len++] = 0xff, code[len++] = 0xc9;
  code[len++] = 0x75, code[len++] = 0xf9;
  code[len++] = 0xe6, code[len++] = 0x81;
  memcpy(mem + 0x100000, code, len);

  int vcpu = ioctl(vm, KVM_CREATE_VCPU, 0);
  CHECK(vcpu);
  if (cpuid) {
    int nent = 100;
    struct kvm_cpuid2 *c =
        calloc(1, sizeof *c + nent * sizeof(struct kvm_cpuid_entry2));
    c->nent = nent;
    CHECK(ioctl(kvm, KVM_GET_SUPPORTED_CPUID, c));
    CHECK(ioctl(vcpu, KVM_SET_CPUID2, c));
  }
  if (sigmask) {
    struct kvm_signal_mask *m = calloc(1, sizeof *m + 8);
    m->len = 8;
    CHECK(ioctl(vcpu, KVM_SET_SIGNAL_MASK, m));
  }
  int sz = ioctl(kvm, KVM_GET_VCPU_MMAP_SIZE, 0);
  struct kvm_run *run =
      mmap(0, sz, PROT_READ | PROT_WRITE, MAP_SHARED, vcpu, 0);
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
  regs.rdi = 0xd0000000;
  regs.rsi = 0xfee00030;
  CHECK(ioctl(vcpu, KVM_SET_REGS, &regs));
  if (syncregs) run->kvm_valid_regs = KVM_SYNC_X86_REGS;

  struct timespec a, b;
  long exits = 0;
  clock_gettime(CLOCK_MONOTONIC, &a);
  for (;;) {
    if (window) run->request_interrupt_window = 1;
    CHECK(ioctl(vcpu, KVM_RUN, 0));
    if (run->exit_reason == KVM_EXIT_IO && run->io.port == 0x81) break;
    if (run->exit_reason != KVM_EXIT_IO && run->exit_reason != KVM_EXIT_MMIO) {
      fprintf(stderr, "unexpected exit %u after %ld\n", run->exit_reason, exits);
      return 1;
    }
    exits++;
  }
  clock_gettime(CLOCK_MONOTONIC, &b);
  double dt = (b.tv_sec - a.tv_sec) + (b.tv_nsec - a.tv_nsec) / 1e9;
  printf("%-5s", target);
  for (int i = 2; i < argc; i++) printf(" %s", argv[i]);
  printf(": %ld accesses, %ld user-space exits, %.0f accesses/s, %.2f us each\n",
         n, exits, n / dt, dt / n * 1e6);
  return 0;
}
