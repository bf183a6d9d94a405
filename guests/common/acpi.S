/*
 * acpi.S: find the CPUs in the ACPI MADT (32-bit code, paging off, CPL 0).
 *
 * RSDP (from hvm_start_info, else a scan of 0xe0000-0xfffff) -> XSDT (if
 * revision >= 2 and present) or RSDT -> the "APIC" table -> its Processor
 * Local APIC entries (type 0) with the enabled flag (bit 0). Tables are
 * assumed below 4 GiB; checksums are not verified. acpi_find_table finds
 * any other table the same way.
 */
#include "guest.h"

#define SIG_RSD_  0x20445352    /* "RSD " */
#define SIG_PTR_  0x20525450    /* "PTR " */
#define SIG_APIC  0x43495041    /* "APIC" */
#define SDT_HEADER_SIZE 36
#define MADT_ENTRIES    44

        .code32
        .text

/*
 * madt_find_cpus: %eax = number of enabled local APICs in the MADT (0 if
 * there is no MADT); madt_apic_ids[0 .. %eax) = their APIC ids, in MADT
 * order (at most MAX_CPUS). Preserves the other registers.
 */
        .globl  madt_find_cpus
madt_find_cpus:
        push    %ebx
        push    %ecx
        push    %edx
        push    %esi
        push    %edi
        push    %ebp
        call    acpi_find_rsdp
        test    %esi, %esi
        jz      .Lnone
        cmpb    $2, 15(%esi)            /* revision */
        jb      .Lrsdt
        mov     24(%esi), %edi          /* XSDT address */
        test    %edi, %edi
        jz      .Lrsdt
        mov     $8, %ebp                /* XSDT entries are 64-bit */
        jmp     .Lwalk_sdt
.Lrsdt:
        mov     16(%esi), %edi          /* RSDT address */
        mov     $4, %ebp
        test    %edi, %edi
        jz      .Lnone
.Lwalk_sdt:
        mov     4(%edi), %ecx           /* length */
        add     %edi, %ecx              /* end */
        lea     SDT_HEADER_SIZE(%edi), %esi
1:      lea     4(%esi), %eax
        cmp     %ecx, %eax
        ja      .Lnone
        mov     (%esi), %ebx            /* a table (low 32 bits) */
        test    %ebx, %ebx
        jz      2f
        cmpl    $SIG_APIC, (%ebx)
        je      .Lmadt
2:      add     %ebp, %esi
        jmp     1b

.Lmadt:                                 /* %ebx = MADT */
        mov     4(%ebx), %ecx
        add     %ebx, %ecx              /* end */
        lea     MADT_ENTRIES(%ebx), %esi
        xor     %eax, %eax              /* count */
1:      lea     2(%esi), %edx
        cmp     %ecx, %edx
        ja      .Ldone
        movzbl  1(%esi), %edx           /* entry length */
        cmp     $2, %edx
        jb      .Ldone                  /* malformed: stop */
        cmpb    $0, (%esi)              /* Processor Local APIC */
        jne     2f
        cmp     $8, %edx
        jb      2f
        testb   $1, 4(%esi)             /* enabled */
        jz      2f
        cmp     $MAX_CPUS, %eax
        jae     2f
        movb    3(%esi), %bl            /* APIC id */
        movb    %bl, madt_apic_ids(%eax)
        inc     %eax
2:      add     %edx, %esi
        jmp     1b

.Lnone:
        xor     %eax, %eax
.Ldone:
        pop     %ebp
        pop     %edi
        pop     %esi
        pop     %edx
        pop     %ecx
        pop     %ebx
        ret

/*
 * acpi_find_table: %ebx = the first table the XSDT (or RSDT) lists whose
 * signature is %eax, or 0. Preserves the other registers.
 */
        .globl  acpi_find_table
acpi_find_table:
        push    %ecx
        push    %edx
        push    %esi
        push    %edi
        push    %ebp
        mov     %eax, %edx
        call    acpi_find_rsdp
        test    %esi, %esi
        jz      .Lft_none
        cmpb    $2, 15(%esi)
        jb      1f
        mov     24(%esi), %edi
        mov     $8, %ebp
        test    %edi, %edi
        jnz     2f
1:      mov     16(%esi), %edi
        mov     $4, %ebp
        test    %edi, %edi
        jz      .Lft_none
2:      mov     4(%edi), %ecx
        add     %edi, %ecx
        lea     SDT_HEADER_SIZE(%edi), %esi
3:      lea     4(%esi), %eax
        cmp     %ecx, %eax
        ja      .Lft_none
        mov     (%esi), %ebx
        test    %ebx, %ebx
        jz      4f
        cmp     %edx, (%ebx)
        je      .Lft_done
4:      add     %ebp, %esi
        jmp     3b
.Lft_none:
        xor     %ebx, %ebx
.Lft_done:
        mov     %edx, %eax
        pop     %ebp
        pop     %edi
        pop     %esi
        pop     %edx
        pop     %ecx
        ret

/* acpi_find_rsdp: %esi = the RSDP, or 0. Clobbers %ebx. */
acpi_find_rsdp:
        mov     start_info, %ebx
        test    %ebx, %ebx
        jz      1f
        mov     SI_RSDP(%ebx), %esi
        test    %esi, %esi
        jnz     3f
1:      mov     $0xe0000, %esi          /* legacy BIOS area, 16-byte steps */
2:      cmpl    $SIG_RSD_, (%esi)
        jne     4f
        cmpl    $SIG_PTR_, 4(%esi)
        je      3f
4:      add     $16, %esi
        cmp     $0x100000, %esi
        jb      2b
        xor     %esi, %esi
3:      ret

        .bss
        .globl  madt_apic_ids
madt_apic_ids:
        .skip   MAX_CPUS
