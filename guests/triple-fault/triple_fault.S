/*
 * triple-fault: prints
 *   triple-fault: faulting now
 * then loads an empty IDT (limit 0) and executes ud2: the #UD cannot be
 * delivered, nor can the #GP that follows, nor the #DF after it, so the CPU
 * shuts down (the VMM sees KVM_EXIT_SHUTDOWN). Checked on kvm-pvm, where KVM's
 * emulator runs this CPL 0 code and raises the #UD itself.
 */
#include "guest.h"

        .code32
        .text
        .globl  main32
main32:
        PUTS    "triple-fault: faulting now\n"
        lidt    empty_idt
        ud2
        PUTS    "triple-fault: still running after the fault\n"
        ret

        .section .rodata
        .balign 8
empty_idt:
        .word   0                       /* limit */
        .long   0                       /* base */
