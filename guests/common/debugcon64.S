/*
 * debugcon64.S: output and power-off for 64-bit code at any CPL, through
 * MMIO only (Vireo's debug console register and ACPI sleep control register),
 * since port I/O and hlt do not work at CPL 3 on kvm-pvm. The pages must be
 * mapped user-accessible (longmode.S maps the first 4 GiB so). Every routine
 * preserves every register.
 */
#include "guest.h"

        .code64
        .text

/* dbg_putc: print %al. */
        .globl  dbg_putc
dbg_putc:
        push    %rdi
        mov     $DEBUGCON_MMIO, %edi
        movb    %al, (%rdi)
        pop     %rdi
        ret

/* dbg_puts: print the NUL-terminated string at %rsi. */
        .globl  dbg_puts
dbg_puts:
        push    %rax
        push    %rsi
        push    %rdi
        mov     $DEBUGCON_MMIO, %edi
1:      movb    (%rsi), %al
        inc     %rsi
        test    %al, %al
        jz      2f
        movb    %al, (%rdi)
        jmp     1b
2:      pop     %rdi
        pop     %rsi
        pop     %rax
        ret

/* dbg_hex64: print %rax as 16 lowercase hex digits. */
        .globl  dbg_hex64
dbg_hex64:
        push    %rax
        push    %rcx
        push    %rdx
        push    %rdi
        mov     %rax, %rdx
        mov     $16, %ecx
        mov     $DEBUGCON_MMIO, %edi
1:      rol     $4, %rdx
        mov     %edx, %eax
        and     $0xf, %eax
        movb    hex_digits(%rax), %al
        movb    %al, (%rdi)
        dec     %ecx
        jnz     1b
        pop     %rdi
        pop     %rdx
        pop     %rcx
        pop     %rax
        ret

/* dbg_poweroff: ACPI S5 through the sleep control register; never returns. */
        .globl  dbg_poweroff
dbg_poweroff:
        mov     $ACPI_SLEEP_CONTROL, %eax
        movb    $ACPI_SLEEP_S5, (%rax)
1:      pause
        jmp     1b
