/*
 * triple-fault: prints
 *   triple-fault: faulting now
 * then loads an empty IDT (limit 0) and divides by zero: #DE cannot be
 * delivered, nor can the #GP that follows, nor the #DF after it, so the CPU
 * shuts down (the VMM sees KVM_EXIT_SHUTDOWN). A divide error is used rather
 * than ud2 because KVM's instruction emulator (which runs all CPL 0 code on
 * kvm-pvm) raises it as a real guest exception, while an opcode it does not
 * know (ud2) would be reported as an emulation failure instead.
 */
#include "guest.h"

        .code32
        .text
        .globl  main32
main32:
        PUTS    "triple-fault: faulting now\n"
        lidt    empty_idt
        xor     %edx, %edx
        xor     %eax, %eax
        xor     %ecx, %ecx
        div     %ecx
        PUTS    "triple-fault: still running after the fault\n"
        ret

        .section .rodata
        .balign 8
empty_idt:
        .word   0                       /* limit */
        .long   0                       /* base */
