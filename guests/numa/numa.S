/*
 * numa: prints the ACPI SRAT and SLIT on COM1, one line per entry:
 *   numa: srat                                  (or "numa: no srat")
 *   numa: cpu apic <id> node <domain> flags <flags>       (type 0, Local APIC)
 *   numa: x2cpu apic <id> node <domain> flags <flags>     (type 2, Local x2APIC)
 *   numa: mem 0x<base> 0x<length> node <domain> flags <flags>   (type 1)
 *   numa: entry type <t>                        (any other structure)
 *   numa: slit localities=<N>                   (or "numa: no slit")
 *   numa: slit row <i>: <d> <d> ...             (one per locality)
 *   numa: ok
 * then powers off; with a command line starting "spin" it loops forever
 * instead (a vCPU that keeps a host CPU busy, for pinning tests). Numbers are decimal but base and length (16 lowercase
 * hex digits). Runs at CPL 0 in 32-bit mode: a few thousand instructions
 * for a few cells.
 */
#include "guest.h"

#define SIG_SRAT        0x54415253      /* "SRAT" */
#define SIG_SLIT        0x54494c53      /* "SLIT" */
#define SRAT_ENTRIES    48
#define SLIT_MATRIX     44

        .code32
        .text
        .globl  main32
main32:
        mov     $SIG_SRAT, %eax
        call    acpi_find_table
        test    %ebx, %ebx
        jnz     1f
        PUTS    "numa: no srat\n"
        jmp     .Lslit
1:      PUTS    "numa: srat\n"
        mov     4(%ebx), %ecx
        add     %ebx, %ecx              /* end */
        lea     SRAT_ENTRIES(%ebx), %esi
.Lentry:
        lea     2(%esi), %eax
        cmp     %ecx, %eax
        ja      .Lslit
        movzbl  1(%esi), %edi           /* length */
        cmp     $2, %edi
        jb      .Lslit                  /* malformed: stop */
        movzbl  (%esi), %eax
        cmp     $0, %eax
        je      .Lcpu
        cmp     $1, %eax
        je      .Lmem
        cmp     $2, %eax
        je      .Lx2cpu
        PUTS    "numa: entry type "
        call    serial_dec32
        PUTS    "\n"
        jmp     .Lnext
.Lcpu:
        PUTS    "numa: cpu apic "
        movzbl  3(%esi), %eax
        call    serial_dec32
        PUTS    " node "
        mov     8(%esi), %eax           /* domain bits 31:8 at 9..11 */
        movb    2(%esi), %al            /* bits 7:0 at 2 */
        call    serial_dec32
        PUTS    " flags "
        mov     4(%esi), %eax
        call    serial_dec32
        PUTS    "\n"
        jmp     .Lnext
.Lx2cpu:
        PUTS    "numa: x2cpu apic "
        mov     8(%esi), %eax
        call    serial_dec32
        PUTS    " node "
        mov     4(%esi), %eax
        call    serial_dec32
        PUTS    " flags "
        mov     12(%esi), %eax
        call    serial_dec32
        PUTS    "\n"
        jmp     .Lnext
.Lmem:
        PUTS    "numa: mem 0x"
        mov     8(%esi), %eax
        mov     12(%esi), %edx
        call    serial_hex64
        PUTS    " 0x"
        mov     16(%esi), %eax
        mov     20(%esi), %edx
        call    serial_hex64
        PUTS    " node "
        mov     2(%esi), %eax
        call    serial_dec32
        PUTS    " flags "
        mov     28(%esi), %eax
        call    serial_dec32
        PUTS    "\n"
.Lnext:
        add     %edi, %esi
        jmp     .Lentry

.Lslit:
        mov     $SIG_SLIT, %eax
        call    acpi_find_table
        test    %ebx, %ebx
        jnz     1f
        PUTS    "numa: no slit\n"
        jmp     .Ldone
1:      PUTS    "numa: slit localities="
        mov     36(%ebx), %ecx          /* localities (low 32 bits) */
        mov     %ecx, %eax
        call    serial_dec32
        PUTS    "\n"
        cmp     $64, %ecx               /* a sane bound for a test guest */
        ja      .Ldone
        lea     SLIT_MATRIX(%ebx), %esi
        xor     %edi, %edi              /* row */
2:      cmp     %ecx, %edi
        jae     .Ldone
        PUTS    "numa: slit row "
        mov     %edi, %eax
        call    serial_dec32
        PUTS    ":"
        xor     %edx, %edx              /* column */
3:      cmp     %ecx, %edx
        jae     4f
        PUTS    " "
        movzbl  (%esi), %eax
        call    serial_dec32
        inc     %esi
        inc     %edx
        jmp     3b
4:      PUTS    "\n"
        inc     %edi
        jmp     2b
.Ldone:
        PUTS    "numa: ok\n"
        call    start_info_cmdline
        cmpl    $0x6e697073, (%esi)     /* "spin" */
        jne     1f
2:      jmp     2b
1:      ret
