/*
 * start32.S: the PVH entry every guest shares.
 *
 * The VMM enters pvh_start in 32-bit protected mode, paging off, flat
 * segments, interrupts off, no stack, %ebx = &hvm_start_info. We set a stack,
 * keep the start info pointer (0 if its magic is wrong), call the guest's
 * main32 and power off when it returns.
 *
 * pvh_start is weak: a guest that needs none of this (exit) defines its own,
 * and the PVH note below then points at that one.
 */
#include "guest.h"

        .section .note.Xen, "a"
        .balign 4
        .long   4                       /* namesz: "Xen\0" */
        .long   8                       /* descsz: the entry, as Linux writes it */
        .long   XEN_ELFNOTE_PHYS32_ENTRY
        .asciz  "Xen"
        .balign 4
        .quad   pvh_start
        .balign 4

        .section .text.entry, "ax"
        .code32
        .weak   pvh_start
pvh_start:
        mov     $boot_stack_top, %esp
        cmpl    $START_INFO_MAGIC, SI_MAGIC(%ebx)
        je      1f
        xor     %ebx, %ebx
1:      mov     %ebx, start_info
        call    main32
        /* fall through */

/* poweroff: ACPI S5 through the sleep control register; never returns. */
        .globl  poweroff
poweroff:
        movb    $ACPI_SLEEP_S5, ACPI_SLEEP_CONTROL
1:      cli
        hlt
        jmp     1b

/*
 * start_info_cmdline: %esi = the command line (NUL-terminated), or an empty
 * string if the start info has none. Preserves the other registers.
 */
        .globl  start_info_cmdline
start_info_cmdline:
        mov     start_info, %esi
        test    %esi, %esi
        jz      1f
        mov     SI_CMDLINE(%esi), %esi
        test    %esi, %esi
        jz      1f
        ret
1:      mov     $empty_string, %esi
        ret

        .section .rodata
empty_string:
        .byte   0

        .bss
        .globl  start_info, boot_stack_top
        .balign 4
start_info:                             /* &hvm_start_info, or 0 */
        .long   0
        .balign 16
        .skip   8192
boot_stack_top:
