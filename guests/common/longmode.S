/*
 * longmode.S: from the 32-bit PVH entry to 64-bit code at CPL 3.
 *
 * enter_user64 switches to long mode with static page tables that identity
 * map the first 4 GiB with 2 MiB pages, all user-accessible (so CPL 3 code can
 * reach the image and the MMIO devices at 0xfeb00000), loads a GDT with
 * kernel and user segments and a TSS, and enters CPL 3 with iretq (a far
 * return to CPL 3 is not emulated on kvm-pvm). Everything is prebuilt by the
 * assembler so the emulated CPL 0 part is a few dozen instructions.
 */
#include "guest.h"

#define PTE_PRESENT     0x001
#define PTE_WRITABLE    0x002
#define PTE_USER        0x004
#define PTE_LARGE       0x080   /* 2 MiB page in a PD */
#define PTE_TABLE       (PTE_PRESENT | PTE_WRITABLE | PTE_USER)
#define PTE_2M          (PTE_PRESENT | PTE_WRITABLE | PTE_USER | PTE_LARGE)

#define KERNEL_CS       0x08
#define KERNEL_DS       0x10
#define USER_DS         (0x18 | 3)
#define USER_CS         (0x20 | 3)
#define TSS_SELECTOR    0x28
#define TSS_SIZE        104

#define CR0_PE          (1 << 0)
#define CR0_PG          (1 << 31)
#define CR4_PAE         (1 << 5)
#define MSR_EFER        0xc0000080
#define EFER_LME        (1 << 8)
#define RFLAGS_RESERVED 0x2     /* bit 1 is always set; IF stays 0 (no IDT) */

        .code32
        .text

/*
 * enter_user64: %edi = 64-bit user entry point, %esi = user stack top (both
 * below 4 GiB). Never returns. The entry runs at CPL 3 with interrupts off.
 */
        .globl  enter_user64
enter_user64:
        mov     $tss64, %eax            /* TSS base into its descriptor */
        mov     %ax, gdt64_tss + 2
        shr     $16, %eax
        mov     %al, gdt64_tss + 4
        mov     %ah, gdt64_tss + 7
        lgdt    gdt64_ptr
        mov     %cr4, %eax
        or      $CR4_PAE, %eax
        mov     %eax, %cr4
        mov     $pml4, %eax
        mov     %eax, %cr3
        mov     $MSR_EFER, %ecx
        rdmsr
        or      $EFER_LME, %eax
        wrmsr
        mov     %cr0, %eax
        or      $(CR0_PE | CR0_PG), %eax
        mov     %eax, %cr0
        ljmp    $KERNEL_CS, $1f

        .code64
1:      mov     $KERNEL_DS, %eax
        mov     %eax, %ds
        mov     %eax, %es
        mov     %eax, %ss
        mov     %eax, %fs
        mov     %eax, %gs
        mov     $boot_stack_top, %esp   /* zero-extends into %rsp */
        mov     $TSS_SELECTOR, %eax
        ltr     %ax
        mov     %esi, %esi              /* clear the upper halves */
        mov     %edi, %edi
        push    $USER_DS                /* ss */
        push    %rsi                    /* rsp */
        push    $RFLAGS_RESERVED        /* rflags */
        push    $USER_CS                /* cs */
        push    %rdi                    /* rip */
        iretq

        .data
        .balign 4096
pml4:
        .quad   pdpt + PTE_TABLE
        .fill   511, 8, 0
pdpt:
        .quad   pd + 0x0000 + PTE_TABLE
        .quad   pd + 0x1000 + PTE_TABLE
        .quad   pd + 0x2000 + PTE_TABLE
        .quad   pd + 0x3000 + PTE_TABLE
        .fill   508, 8, 0
pd:                                     /* 2048 x 2 MiB = 4 GiB */
        .set    .Lpage, 0
        .rept   2048
        .quad   .Lpage + PTE_2M
        .set    .Lpage, .Lpage + 0x200000
        .endr

        .balign 16
gdt64:
        .quad   0
        .quad   0x00af9a000000ffff      /* 0x08 kernel code, 64-bit */
        .quad   0x00cf92000000ffff      /* 0x10 kernel data */
        .quad   0x00cff2000000ffff      /* 0x18 user data, DPL 3 */
        .quad   0x00affa000000ffff      /* 0x20 user code, 64-bit, DPL 3 */
gdt64_tss:                              /* 0x28 64-bit TSS (available); base set at run time */
        .quad   0x0000890000000000 + TSS_SIZE - 1
        .quad   0
gdt64_end:
gdt64_ptr:
        .word   gdt64_end - gdt64 - 1
        .quad   gdt64

        .balign 16
tss64:
        .long   0
        .quad   boot_stack_top          /* rsp0: the stack for traps from CPL 3 */
        .fill   90, 1, 0                /* rsp1, rsp2, ist1-7, reserved */
        .word   TSS_SIZE                /* I/O bitmap offset: none */
