/*
 * bad-insn: prints
 *   bad-insn: executing xrstor
 * then executes xrstor from a valid, zeroed, 64-byte aligned area at CPL 0.
 * KVM's instruction emulator has no xrstor, so on kvm-pvm (where CPL 0 code
 * is emulated) the VMM gets KVM_EXIT_INTERNAL_ERROR (emulation failure). On
 * hardware virtualization the CPU runs it itself: CR4.OSXSAVE is clear, so it
 * raises #UD and, with no IDT of ours, the VM most likely shuts down. If
 * execution ever continues, the guest says so and powers off.
 */
#include "guest.h"

        .code32
        .text
        .globl  main32
main32:
        PUTS    "bad-insn: executing xrstor\n"
        xor     %eax, %eax              /* requested-feature bitmap: none */
        xor     %edx, %edx
        xrstor  xsave_area
        PUTS    "bad-insn: xrstor completed\n"
        ret

        .bss
        .balign 64
xsave_area:                             /* legacy area + XSAVE header, zeroed */
        .skip   4096
