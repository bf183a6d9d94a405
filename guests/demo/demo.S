/*
 * demo: the guest embedded in the vireo binary. Prints what the VMM gave it:
 *   demo: vireo demo guest
 *   demo: cpus=<N, enabled local APICs in the MADT>
 *   demo: mem 0x<start>-0x<end, inclusive> <ram|reserved|type N>   (one per memmap entry)
 *   demo: cmdline=<the command line>
 *   demo: ok
 * then powers off. Addresses are 16 lowercase hex digits. Runs at CPL 0 in
 * 32-bit mode (a few thousand instructions).
 */
#include "guest.h"

        .code32
        .text
        .globl  main32
main32:
        PUTS    "demo: vireo demo guest\n"
        call    madt_find_cpus
        PUTS    "demo: cpus="
        call    serial_dec32
        PUTS    "\n"

        mov     start_info, %ebx
        test    %ebx, %ebx
        jz      .Lcmdline
        mov     SI_MEMMAP(%ebx), %esi
        mov     SI_MEMMAP_ENTRIES(%ebx), %ecx
        test    %esi, %esi
        jz      .Lcmdline
.Lentry:
        test    %ecx, %ecx
        jz      .Lcmdline
        PUTS    "demo: mem 0x"
        mov     0(%esi), %eax           /* start */
        mov     4(%esi), %edx
        call    serial_hex64
        PUTS    "-0x"
        add     8(%esi), %eax           /* end = start + size - 1 */
        adc     12(%esi), %edx
        sub     $1, %eax
        sbb     $0, %edx
        call    serial_hex64
        mov     16(%esi), %eax          /* type */
        cmp     $MEMMAP_TYPE_RAM, %eax
        jne     1f
        PUTS    " ram\n"
        jmp     3f
1:      cmp     $MEMMAP_TYPE_RESERVED, %eax
        jne     2f
        PUTS    " reserved\n"
        jmp     3f
2:      PUTS    " type "
        call    serial_dec32
        PUTS    "\n"
3:      add     $MEMMAP_ENTRY_SIZE, %esi
        dec     %ecx
        jmp     .Lentry

.Lcmdline:
        PUTS    "demo: cmdline="
        call    start_info_cmdline
        call    serial_puts
        PUTS    "\n"
        PUTS    "demo: ok\n"
        ret
