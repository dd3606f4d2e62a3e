// PVH entry of the test guest (AT&T syntax, assembled by global_asm!).
//
// The loader enters `pvh_start` in 32-bit protected mode with paging off
// and %ebx holding the physical address of `struct hvm_start_info`. This
// code runs at CPL0, which is emulated (slow) on the project's machines, so
// it does the least it can: every table that can be static data is static
// data, and the code only fills in what the assembler cannot compute (the
// TSS base in the GDT, the IDT gates), enables long mode and drops to CPL3
// via `iretq` into `rust_main(start_info_paddr)`.

// --- The Xen PVH ELF note: XEN_ELFNOTE_PHYS32_ENTRY (18) -------------------
    .section .note.Xen, "a", @note
    .balign 4
    .long 4                         // namesz: "Xen\0"
    .long 4                         // descsz: a 32-bit entry address
    .long 18                        // type: XEN_ELFNOTE_PHYS32_ENTRY
    .asciz "Xen"
    .balign 4
    .long pvh_start
    .balign 4

// --- 32-bit entry -----------------------------------------------------------
    .section .text.boot, "ax"
    .code32
    .globl pvh_start
pvh_start:
    cli
    cld
    movl %ebx, boot_start_info
    lgdt gdt_ptr

    // Base of the TSS into its GDT descriptor (the image is below 4 GiB).
    movl $tss, %eax
    movw %ax, gdt_tss + 2
    shrl $16, %eax
    movb %al, gdt_tss + 4
    movb %ah, gdt_tss + 7

    // IDT: gate v points at isr_stubs + 16 * v, interrupt gate, DPL0.
    movl $idt, %edi
    movl $isr_stubs, %esi
    movl $256, %ecx
1:
    movl %esi, %eax
    movw %ax, (%edi)
    movw $0x08, 2(%edi)
    movw $0x8e00, 4(%edi)
    shrl $16, %eax
    movw %ax, 6(%edi)
    movl $0, 8(%edi)
    addl $16, %esi
    addl $16, %edi
    decl %ecx
    jnz 1b
    // #DF (vector 8) runs on IST1.
    movb $1, idt + 8 * 16 + 4

    // CR4: PAE | OSFXSR | OSXMMEXCPT (SSE for user mode).
    movl %cr4, %eax
    orl $0x620, %eax
    movl %eax, %cr4
    movl $pml4, %eax
    movl %eax, %cr3
    // EFER.LME
    movl $0xc0000080, %ecx
    rdmsr
    orl $0x100, %eax
    wrmsr
    // CR0: PG | NE | MP | PE, and clear EM and TS.
    movl %cr0, %eax
    andl $~0xc, %eax
    orl $0x80000023, %eax
    movl %eax, %cr0
    ljmp $0x08, $start64

// --- 64-bit, still CPL0 -----------------------------------------------------
    .code64
start64:
    movw $0x10, %ax
    movw %ax, %ds
    movw %ax, %es
    movw %ax, %ss
    movq $kernel_stack_top, %rsp
    movw $0x28, %ax
    ltr %ax
    lidt idt_ptr(%rip)

    // iretq to rust_main(start_info) at CPL3 with IOPL=3 and IF=0. The stack
    // pointer is as if a `call` had pushed a return address (SysV ABI).
    movl boot_start_info(%rip), %edi
    pushq $0x23                     // SS: user data | RPL3
    pushq $user_stack_top - 8       // RSP
    pushq $0x3002                   // RFLAGS: IOPL=3, IF=0
    pushq $0x1b                     // CS: user code | RPL3
    pushq $rust_main                // RIP
    iretq

// --- Static tables ------------------------------------------------------------
    .section .data, "aw"
    .balign 16
    // 0x08 kernel code (64-bit), 0x10 kernel data, 0x18 user code (64-bit,
    // DPL3), 0x20 user data (DPL3), 0x28 the 64-bit TSS (16 bytes).
gdt:
    .quad 0
    .quad 0x00af9a000000ffff
    .quad 0x00cf92000000ffff
    .quad 0x00affa000000ffff
    .quad 0x00cff2000000ffff
gdt_tss:
    .word 103                       // limit
    .word 0                         // base 15:0 (filled at boot)
    .byte 0                         // base 23:16 (filled at boot)
    .byte 0x89                      // present, 64-bit TSS (available)
    .byte 0                         // limit 19:16, flags
    .byte 0                         // base 31:24 (filled at boot)
    .long 0                         // base 63:32
    .long 0
gdt_end:

    .balign 8
gdt_ptr:
    .word gdt_end - gdt - 1
    .quad gdt
    .balign 8
idt_ptr:
    .word 256 * 16 - 1
    .quad idt

    .balign 16
    // The 64-bit TSS: RSP0 is the stack interrupts and exceptions from CPL3
    // switch to; IST1 is a separate stack for #DF. No I/O bitmap: IOPL=3.
tss:
    .long 0
    .quad kernel_stack_top          // RSP0
    .quad 0                         // RSP1
    .quad 0                         // RSP2
    .quad 0
    .quad double_fault_stack_top    // IST1
    .quad 0, 0, 0, 0, 0, 0          // IST2..IST7
    .quad 0
    .word 0
    .word 104                       // I/O map base: past the limit, none

    .balign 8
    // Physical address of `struct hvm_start_info`, saved from %ebx.
boot_start_info:
    .quad 0

    // The IDT (filled at boot). In .data rather than .bss so that every load
    // of the image starts from zeroes, even into reused memory.
    .balign 16
idt:
    .fill 256 * 16, 1, 0

// Identity map of the first 4 GiB with 2 MiB pages, all user-accessible
// (the CPL3 code drives the serial port and the local APIC itself). The
// top GiB (PCI hole, local APIC at 0xfee00000) is uncached.
    .section .data.pagetables, "aw"
    .balign 4096
pml4:
    .quad pdpt + 0x7
    .fill 511, 8, 0
    .globl pdpt
pdpt:
    .quad pd + 0x0000 + 0x7
    .quad pd + 0x1000 + 0x7
    .quad pd + 0x2000 + 0x7
    .quad pd + 0x3000 + 0x7
    .fill 508, 8, 0
    .globl pd
pd:
    .set page, 0
    .rept 1536
    .quad (page << 21) | 0x87       // present, writable, user, 2 MiB
    .set page, page + 1
    .endr
    .rept 512
    .quad (page << 21) | 0x9f       // ... and PWT | PCD (uncached)
    .set page, page + 1
    .endr
// Spare page directories for device memory above 4 GiB (64-bit PCI BARs):
// user code fills one and links it into `pdpt` when a BAR lives there
// (`pci::map_high_mmio`). Adding a mapping needs no TLB flush.
    .globl pd_spare
pd_spare:
    .fill 4 * 512, 8, 0

// --- Stacks (not zeroed, not in the file) -------------------------------------
    .section .stack, "aw", @nobits
    .balign 4096
    .space 16384
kernel_stack_top:
    .space 4096
double_fault_stack_top:
    .space 16384
    .globl exception_stack_top
exception_stack_top:
    .space 1048576
user_stack_top:
// The heap of the user-mode code (and its DMA buffers: physical =
// virtual), handed to the allocator by `heap::init`.
    .balign 4096
    .globl heap_start
heap_start:
    .space 16 * 1048576
    .globl heap_end
heap_end:

    .text
