// CPL0 interrupt and exception entry points of the test guest (AT&T syntax).
//
// Every instruction here is emulated on the project's machines (~0.25 us
// each), so the paths are short:
// - vectors 0x20..0xfe: count the interrupt in IRQ_COUNTS[vector], EOI the
//   local APIC, iretq (8 instructions);
// - vector 0xff (APIC spurious): iretq, no EOI;
// - #GP at CPL3 on `hlt` (the user->kernel call: wait for an interrupt,
//   or stop) or on `out`/`in`/`cli`/`sti` (emulated: see gp_entry);
// - any other exception: iretq to `exception_report` at CPL3 on a stack of
//   its own, with (vector, rip, error code, cr2) as arguments.

    .section .text.traps, "ax"
    .code64

// One 16-byte stub per vector: the IDT gate of vector v points at
// isr_stubs + 16 * v (see boot.s).
.macro exc_noerr v
    .org isr_stubs + \v * 16
    pushq $0
    pushq $\v
    jmp exc_common
.endm
.macro exc_err v
    .org isr_stubs + \v * 16
    pushq $\v
    jmp exc_common
.endm
.macro irq v
    .org isr_stubs + \v * 16
    pushq %rax
    movl $\v, %eax
    jmp irq_common
.endm
.macro irq16 base
    irq (\base+0)
    irq (\base+1)
    irq (\base+2)
    irq (\base+3)
    irq (\base+4)
    irq (\base+5)
    irq (\base+6)
    irq (\base+7)
    irq (\base+8)
    irq (\base+9)
    irq (\base+10)
    irq (\base+11)
    irq (\base+12)
    irq (\base+13)
    irq (\base+14)
    irq (\base+15)
.endm

    .balign 16
    .globl isr_stubs
isr_stubs:
    exc_noerr 0
    exc_noerr 1
    exc_noerr 2
    exc_noerr 3
    exc_noerr 4
    exc_noerr 5
    exc_noerr 6
    exc_noerr 7
    exc_err 8
    exc_noerr 9
    exc_err 10
    exc_err 11
    exc_err 12
    .org isr_stubs + 13 * 16
    jmp gp_entry
    exc_err 14
    exc_noerr 15
    exc_noerr 16
    exc_err 17
    exc_noerr 18
    exc_noerr 19
    exc_noerr 20
    exc_err 21
    exc_noerr 22
    exc_noerr 23
    exc_noerr 24
    exc_noerr 25
    exc_noerr 26
    exc_noerr 27
    exc_noerr 28
    exc_err 29
    exc_err 30
    exc_noerr 31
    irq16 0x20
    irq16 0x30
    irq16 0x40
    irq16 0x50
    irq16 0x60
    irq16 0x70
    irq16 0x80
    irq16 0x90
    irq16 0xa0
    irq16 0xb0
    irq16 0xc0
    irq16 0xd0
    irq16 0xe0
    irq (0xf0+0)
    irq (0xf0+1)
    irq (0xf0+2)
    irq (0xf0+3)
    irq (0xf0+4)
    irq (0xf0+5)
    irq (0xf0+6)
    irq (0xf0+7)
    irq (0xf0+8)
    irq (0xf0+9)
    irq (0xf0+10)
    irq (0xf0+11)
    irq (0xf0+12)
    irq (0xf0+13)
    irq (0xf0+14)
    .org isr_stubs + 0xff * 16
    iretq                           // APIC spurious vector: no EOI
    .org isr_stubs + 256 * 16

// Stack: rax (saved by the stub), rip, cs, rflags, rsp, ss; %eax = vector.
irq_common:
    incq IRQ_COUNTS(, %rax, 8)
    movl $0xfee000b0, %eax          // local APIC EOI register
    movl $0, (%rax)
    popq %rax
    iretq

// #GP from CPL3 on one of the single-byte instructions below is a request
// from user code; anything else is a fault to report.
//
// The instructions a user program with IOPL=3 would run itself are
// emulated: this host ignores IOPL for guest user mode, so `out`, `in`,
// `cli` and `sti` fault here (on hosts that honour IOPL they run natively
// and never come here). `hlt` is the kernel call proper:
//   %eax = 0: enable interrupts and sleep until one has been handled;
//             return with interrupts enabled. Race-free when the caller
//             checks its condition with interrupts disabled (cli) first.
//   %eax = 2: invalidate the translation of the page at %rdx (invlpg);
//   %eax = 3: reload CR3 (flush every non-global translation);
//   any other %eax: stop for good.
//
// Stack: error code, rip, cs, rflags, rsp, ss.
gp_entry:
    testb $3, 16(%rsp)
    jz gp_fault                     // #GP at CPL0: a real fault
    pushq %rax                      // rax, error, rip, cs, rflags, rsp, ss
    movq 16(%rsp), %rax
    movzbl (%rax), %eax             // the opcode
    incq 16(%rsp)                   // every instruction handled is 1 byte
    cmpb $0xee, %al
    je gp_out_al
    cmpb $0xf4, %al
    je gp_hlt
    cmpb $0xfa, %al
    je gp_cli
    cmpb $0xfb, %al
    je gp_sti
    cmpb $0xec, %al
    je gp_in_al
    cmpb $0xef, %al
    je gp_out_eax
    cmpb $0xed, %al
    je gp_in_eax
    decq 16(%rsp)                   // not ours: report it where it was
    popq %rax
gp_fault:
    pushq $13
    jmp exc_common

gp_out_al:
    popq %rax
    outb %al, %dx
    addq $8, %rsp
    iretq
gp_out_eax:
    popq %rax
    outl %eax, %dx
    addq $8, %rsp
    iretq
gp_in_al:
    popq %rax
    inb %dx, %al
    addq $8, %rsp
    iretq
gp_in_eax:
    popq %rax
    inl %dx, %eax
    addq $8, %rsp
    iretq
gp_cli:
    andl $~0x200, 32(%rsp)          // clear IF in the saved rflags
    popq %rax
    addq $8, %rsp
    iretq
gp_sti:
    orl $0x200, 32(%rsp)            // set IF in the saved rflags
    popq %rax
    addq $8, %rsp
    iretq
gp_hlt:
    popq %rax
    addq $8, %rsp                   // rip, cs, rflags, rsp, ss
    cmpl $2, %eax
    je gp_invlpg
    cmpl $3, %eax
    je gp_reload_cr3
    testl %eax, %eax
    jnz stop_forever
    orl $0x200, 16(%rsp)            // the caller returns with IF=1
    sti                             // the sti shadow covers the hlt
    hlt
    iretq

gp_invlpg:
    invlpg (%rdx)                   // the page at %rdx
    iretq
gp_reload_cr3:
    movq %cr3, %rax                 // every non-global translation
    movq %rax, %cr3
    movl $3, %eax
    iretq

// Stack: vector, error code, rip, cs, rflags, rsp, ss.
exc_common:
    cmpb $0, in_exception_report(%rip)
    jne stop_forever                // fault while reporting one: give up
    movb $1, in_exception_report(%rip)
    movq (%rsp), %rdi
    movq 16(%rsp), %rsi
    movq 8(%rsp), %rdx
    movq %cr2, %rcx
    pushq $0x23                     // SS
    pushq $exception_stack_top - 8  // RSP
    pushq $0x3002                   // RFLAGS: IOPL=3, IF=0
    pushq $0x1b                     // CS
    pushq $exception_report         // RIP
    iretq

    .globl stop_forever
stop_forever:
    cli
1:
    hlt
    jmp 1b

    .section .data, "aw"
    .balign 8
    // Interrupts taken per vector since boot; IRQ_COUNTS[0x20] is the APIC
    // timer tick counter. Written at CPL0 only, read by CPL3 code.
    .globl IRQ_COUNTS
IRQ_COUNTS:
    .fill 256, 8, 0
in_exception_report:
    .byte 0

    .text
