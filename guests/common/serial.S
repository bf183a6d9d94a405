/*
 * serial.S: output on the COM1 16550 (32-bit code, CPL 0: port I/O does not
 * work at CPL 3 on kvm-pvm). The transmitter is not polled: Vireo's UART is
 * always ready, and every port access is a VM exit, so polling would double
 * the cost of each byte. Every routine preserves every register.
 */
#include "guest.h"

        .code32
        .text

/* serial_putc: print %al. */
        .globl  serial_putc
serial_putc:
        push    %edx
        mov     $COM1_PORT, %edx
        out     %al, %dx
        pop     %edx
        ret

/* serial_puts: print the NUL-terminated string at %esi. */
        .globl  serial_puts
serial_puts:
        push    %eax
        push    %edx
        push    %esi
        mov     $COM1_PORT, %edx
1:      movb    (%esi), %al
        inc     %esi
        test    %al, %al
        jz      2f
        out     %al, %dx
        jmp     1b
2:      pop     %esi
        pop     %edx
        pop     %eax
        ret

/* serial_hex32: print %eax as 8 lowercase hex digits. */
        .globl  serial_hex32
serial_hex32:
        push    %eax
        push    %ebx
        push    %ecx
        push    %edx
        mov     %eax, %ebx
        mov     $8, %ecx
        mov     $COM1_PORT, %edx
1:      rol     $4, %ebx
        mov     %ebx, %eax
        and     $0xf, %eax
        movb    hex_digits(%eax), %al
        out     %al, %dx
        dec     %ecx
        jnz     1b
        pop     %edx
        pop     %ecx
        pop     %ebx
        pop     %eax
        ret

/* serial_hex64: print %edx:%eax as 16 lowercase hex digits. */
        .globl  serial_hex64
serial_hex64:
        push    %eax
        mov     %edx, %eax
        call    serial_hex32
        pop     %eax
        jmp     serial_hex32

/* serial_dec32: print %eax as an unsigned decimal number. */
        .globl  serial_dec32
serial_dec32:
        push    %eax
        push    %ebx
        push    %ecx
        push    %edx
        mov     $10, %ebx
        xor     %ecx, %ecx
1:      xor     %edx, %edx
        div     %ebx
        push    %edx                    /* digits come out last first */
        inc     %ecx
        test    %eax, %eax
        jnz     1b
        mov     $COM1_PORT, %edx
2:      pop     %eax
        add     $'0', %al
        out     %al, %dx
        dec     %ecx
        jnz     2b
        pop     %edx
        pop     %ecx
        pop     %ebx
        pop     %eax
        ret

        .section .rodata
        .globl  hex_digits
hex_digits:
        .ascii  "0123456789abcdef"
