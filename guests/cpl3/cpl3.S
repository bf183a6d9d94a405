/*
 * cpl3: a short CPL 0 stub that enters 64-bit long mode and CPL 3 (through
 * common/longmode.S), where a long compute loop runs natively even on
 * kvm-pvm. Output (debug console MMIO, since port I/O does not work at CPL 3):
 *   cpl3: running at cpl 3
 *   cpl3: result=0x<16 lowercase hex digits>
 *   cpl3: ok
 * then it powers off from CPL 3 through the ACPI sleep control register.
 * (Before the switch it prints "cpl3: entering user mode" on COM1.)
 *
 * The computation (a 64-bit linear congruential generator, Knuth's MMIX
 * constants), all arithmetic modulo 2^64:
 *   x = 1
 *   repeat 200000000 times: x = x * 6364136223846793005 + 1442695040888963407
 *   result = x
 */
#include "guest.h"

#define LCG_ITERATIONS  200000000
#define LCG_MULTIPLIER  6364136223846793005
#define LCG_INCREMENT   1442695040888963407

        .code32
        .text
        .globl  main32
main32:
        PUTS    "cpl3: entering user mode\n"
        mov     $user_main, %edi
        mov     $user_stack_top, %esi
        jmp     enter_user64

        .code64
user_main:
        DPUTS   "cpl3: running at cpl "
        mov     %cs, %eax
        and     $3, %eax
        add     $'0', %eax
        call    dbg_putc
        DPUTS   "\n"

        mov     $1, %eax
        movabs  $LCG_MULTIPLIER, %rcx
        movabs  $LCG_INCREMENT, %rdx
        mov     $LCG_ITERATIONS, %r8d
1:      imul    %rcx, %rax
        add     %rdx, %rax
        dec     %r8d
        jnz     1b

        DPUTS   "cpl3: result=0x"
        call    dbg_hex64
        DPUTS   "\ncpl3: ok\n"
        jmp     dbg_poweroff

        .bss
        .balign 16
        .skip   8192
user_stack_top:
