/*
 * smp: finds the CPUs in the ACPI MADT and starts every application
 * processor with INIT-SIPI-SIPI. Output on COM1:
 *   smp: madt cpus=<N>
 *   smp: cpu <index> apic <local APIC id> cpuid-apic <CPUID.1:EBX[31:24]>   (one per CPU)
 *   smp: ok <N> cpus
 * then power-off. The BSP is cpu 0; the APs follow sorted by APIC id. All
 * numbers are decimal. If the APs do not all check in within ~10 s (TSC
 * based, so robust to slow emulated CPL 0 code), it prints instead
 *   smp: timeout waiting for APs (got <K> of <N>)
 * followed by the lines of the K CPUs that did, and no "ok" line.
 *
 * Each AP starts in real mode at the trampoline (copied to TRAMPOLINE_BASE),
 * which loads a flat GDT and jumps to ap_main32 in 32-bit protected mode. An
 * AP takes a slot with a locked xadd, records its ids there, then bumps
 * ap_done (locked) and halts forever.
 */
#include "guest.h"

#define TRAMPOLINE_BASE 0x10000                 /* free RAM below 1 MiB */
#define SIPI_VECTOR     (TRAMPOLINE_BASE >> 12)
#define ICR_INIT        0x00004500              /* INIT, level assert, physical */
#define ICR_STARTUP     0x00004600              /* start-up IPI | vector */
#define ICR_PENDING     (1 << 12)               /* delivery status */
#define INIT_DELAY_TSC  (1 << 22)               /* ~1 ms; KVM and modern CPUs need none */
#define SIPI_DELAY_TSC  (1 << 18)
#define WAIT_TSC_HIGH   8                       /* give up after 8 << 32 TSC cycles */
#define WAIT_MAX_POLLS  0x8000000               /* backstop if the TSC does not run */

        .code32
        .text
        .globl  main32
main32:
        movl    $0, ap_slots
        movl    $0, ap_done
        call    madt_find_cpus
        mov     %eax, madt_cpus
        PUTS    "smp: madt cpus="
        call    serial_dec32
        PUTS    "\n"
        test    %eax, %eax
        jnz     1f
        PUTS    "smp: no MADT found\n"
        ret

1:      mov     LAPIC_MMIO + LAPIC_ID, %eax     /* the BSP is cpu 0 */
        shr     $24, %eax
        mov     %eax, cpu_apic
        mov     $1, %eax
        cpuid
        shr     $24, %ebx
        mov     %ebx, cpu_cpuid_apic
        movl    $0x1ff, LAPIC_MMIO + LAPIC_SVR  /* software-enable, spurious vector 0xff */

        mov     $trampoline_start, %esi
        mov     $TRAMPOLINE_BASE, %edi
        mov     $((trampoline_end - trampoline_start + 3) / 4), %ecx
2:      mov     (%esi), %eax
        mov     %eax, (%edi)
        add     $4, %esi
        add     $4, %edi
        dec     %ecx
        jnz     2b

        xor     %esi, %esi                      /* MADT index */
        xor     %edi, %edi                      /* APs started */
3:      cmp     madt_cpus, %esi
        jae     5f
        movzbl  madt_apic_ids(%esi), %eax
        cmp     cpu_apic, %eax
        je      4f
        call    start_ap
        inc     %edi
4:      inc     %esi
        jmp     3b
5:      lea     1(%edi), %eax
        mov     %eax, expected_cpus

        rdtsc                                   /* wait for %edi APs */
        mov     %eax, %esi
        mov     %edx, %ebp
        mov     $WAIT_MAX_POLLS, %ebx
6:      mov     ap_done, %eax
        cmp     %edi, %eax
        jae     .Lall_in
        pause
        dec     %ebx
        jz      .Ltimeout
        rdtsc
        sub     %esi, %eax
        sbb     %ebp, %edx
        cmp     $WAIT_TSC_HIGH, %edx
        jb      6b

.Ltimeout:
        PUTS    "smp: timeout waiting for APs (got "
        mov     ap_done, %eax
        inc     %eax
        call    serial_dec32
        PUTS    " of "
        mov     expected_cpus, %eax
        call    serial_dec32
        PUTS    ")\n"
        mov     ap_done, %eax
        inc     %eax
        call    print_cpus
        ret

.Lall_in:
        mov     expected_cpus, %eax
        call    print_cpus
        PUTS    "smp: ok "
        call    serial_dec32
        PUTS    " cpus\n"
        ret

/* print_cpus: sort cpus 1 .. %eax-1 by APIC id, print cpus 0 .. %eax-1. */
print_cpus:
        push    %eax
        push    %ecx
        push    %edx
        push    %esi
        push    %edi
        mov     %eax, %ecx
        cmp     $MAX_CPUS, %ecx
        jbe     1f
        mov     $MAX_CPUS, %ecx
1:      mov     $2, %esi                        /* insertion sort, cpu 0 stays */
2:      cmp     %ecx, %esi
        jae     5f
        mov     %esi, %edi
3:      cmp     $1, %edi
        jbe     4f
        mov     cpu_apic - 4(,%edi,4), %eax
        mov     cpu_apic(,%edi,4), %edx
        cmp     %edx, %eax
        jbe     4f
        mov     %edx, cpu_apic - 4(,%edi,4)
        mov     %eax, cpu_apic(,%edi,4)
        mov     cpu_cpuid_apic - 4(,%edi,4), %eax
        mov     cpu_cpuid_apic(,%edi,4), %edx
        mov     %edx, cpu_cpuid_apic - 4(,%edi,4)
        mov     %eax, cpu_cpuid_apic(,%edi,4)
        dec     %edi
        jmp     3b
4:      inc     %esi
        jmp     2b
5:      xor     %esi, %esi
6:      cmp     %ecx, %esi
        jae     7f
        PUTS    "smp: cpu "
        mov     %esi, %eax
        call    serial_dec32
        PUTS    " apic "
        mov     cpu_apic(,%esi,4), %eax
        call    serial_dec32
        PUTS    " cpuid-apic "
        mov     cpu_cpuid_apic(,%esi,4), %eax
        call    serial_dec32
        PUTS    "\n"
        inc     %esi
        jmp     6b
7:      pop     %edi
        pop     %esi
        pop     %edx
        pop     %ecx
        pop     %eax
        ret

/* start_ap: INIT, SIPI, SIPI to the local APIC id in %eax. */
start_ap:
        push    %eax
        push    %ebx
        mov     %eax, %ebx
        shl     $24, %ebx
        mov     %ebx, LAPIC_MMIO + LAPIC_ICR_HIGH
        movl    $ICR_INIT, LAPIC_MMIO + LAPIC_ICR_LOW
        call    icr_wait
        mov     $INIT_DELAY_TSC, %eax
        call    tsc_delay
        mov     %ebx, LAPIC_MMIO + LAPIC_ICR_HIGH
        movl    $(ICR_STARTUP | SIPI_VECTOR), LAPIC_MMIO + LAPIC_ICR_LOW
        call    icr_wait
        mov     $SIPI_DELAY_TSC, %eax
        call    tsc_delay
        mov     %ebx, LAPIC_MMIO + LAPIC_ICR_HIGH
        movl    $(ICR_STARTUP | SIPI_VECTOR), LAPIC_MMIO + LAPIC_ICR_LOW
        call    icr_wait
        mov     $SIPI_DELAY_TSC, %eax
        call    tsc_delay
        pop     %ebx
        pop     %eax
        ret

/* icr_wait: wait (bounded) until the last IPI has been sent. */
icr_wait:
        push    %ecx
        mov     $100000, %ecx
1:      testl   $ICR_PENDING, LAPIC_MMIO + LAPIC_ICR_LOW
        jz      2f
        pause
        dec     %ecx
        jnz     1b
2:      pop     %ecx
        ret

/* tsc_delay: spin for %eax TSC cycles (bounded if the TSC stands still). */
tsc_delay:
        push    %eax
        push    %ebx
        push    %ecx
        push    %edx
        push    %esi
        mov     %eax, %ecx
        mov     $0x100000, %esi
        rdtsc
        mov     %eax, %ebx
1:      pause
        dec     %esi
        jz      2f
        rdtsc
        sub     %ebx, %eax
        cmp     %ecx, %eax
        jb      1b
2:      pop     %esi
        pop     %edx
        pop     %ecx
        pop     %ebx
        pop     %eax
        ret

/* The AP, once in 32-bit protected mode with the trampoline's flat GDT. */
ap_main32:
        mov     $0x10, %eax
        mov     %eax, %ds
        mov     %eax, %es
        mov     %eax, %ss
        mov     LAPIC_MMIO + LAPIC_ID, %esi
        shr     $24, %esi
        mov     $1, %eax
        cpuid
        shr     $24, %ebx
        mov     $1, %ecx
        lock xadd %ecx, ap_slots
        inc     %ecx                            /* slot 0 is the BSP's */
        cmp     $MAX_CPUS, %ecx
        jae     1f
        mov     %esi, cpu_apic(,%ecx,4)
        mov     %ebx, cpu_cpuid_apic(,%ecx,4)
1:      lock incl ap_done
2:      cli
        hlt
        jmp     2b

/*
 * The real-mode trampoline, copied to TRAMPOLINE_BASE and entered there by
 * SIPI with CS = TRAMPOLINE_BASE >> 4, IP = 0. Position-independent except
 * for the GDT pointer, which names the copy.
 */
        .section .rodata
        .balign 16
        .code16
trampoline_start:
        cli
        mov     %cs, %ax
        mov     %ax, %ds
        lgdtl   tramp_gdt_ptr - trampoline_start
        mov     %cr0, %eax
        or      $1, %eax                        /* PE */
        mov     %eax, %cr0
        ljmpl   $0x08, $ap_main32
        .balign 8
tramp_gdt:
        .quad   0
        .quad   0x00cf9a000000ffff              /* 0x08 flat 32-bit code */
        .quad   0x00cf92000000ffff              /* 0x10 flat 32-bit data */
tramp_gdt_ptr:
        .word   tramp_gdt_ptr - tramp_gdt - 1
        .long   TRAMPOLINE_BASE + tramp_gdt - trampoline_start
trampoline_end:
        .code32

        .bss
        .balign 4
madt_cpus:      .long 0
expected_cpus:  .long 0
ap_slots:       .long 0                         /* APs that took a slot */
ap_done:        .long 0                         /* APs that wrote their slot */
cpu_apic:       .skip 4 * MAX_CPUS              /* local APIC id, per slot */
cpu_cpuid_apic: .skip 4 * MAX_CPUS              /* initial APIC id, per slot */
