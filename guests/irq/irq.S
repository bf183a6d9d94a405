/*
 * irq: takes one interrupt from COM1 through the I/O APIC. Prints
 *   irq: ioapic version 0x<hex32>
 *   irq: pin 4 entry 0x<high hex32><low hex32>
 *   irq: waiting
 *   irq: vector 0x40 count=<decimal>
 *   irq: ok
 * and powers off; `irq: no interrupt` instead of the last two lines if none
 * arrived within a bounded wait. With a command line starting `level`, the
 * pin is level triggered (entry 0x...8040), so the guest's EOI of vector
 * 0x40 reaches the I/O APIC (with a split irqchip, as a KVM exit). Masks the 8259s, enables the local APIC,
 * points IOAPIC pin 4 (edge, active high, fixed, to APIC 0) at vector 0x40,
 * enables the UART's transmitter-empty interrupt and prints: each byte then
 * raises IRQ 4. The handler counts, reads the UART's IIR, ends the
 * interrupt at the local APIC and jumps back to the main line with the
 * stack it had (kvm-pvm does not emulate a 32-bit iret). Runs all at CPL 0
 * in 32-bit protected mode.
 */
#include "guest.h"

#define IOAPIC_MMIO     0xfec00000
#define IOWIN           0x10
#define IRQ_VECTOR      0x40
#define LAPIC_EOI       0xb0
#define COM1_IER        (COM1_PORT + 1)
#define COM1_IIR        (COM1_PORT + 2)
#define COM1_MCR        (COM1_PORT + 4)
#define WAIT_LOOPS      2000000
#define RTE_LEVEL       0x8000

        .code32
        .text
        .globl  main32
main32:
        /* A machine with 8259s (KVM's in-kernel irqchip) must not also
         * deliver IRQ 4 through them; without any the writes go nowhere. */
        mov     $0xff, %al
        out     %al, $0x21
        out     %al, $0xa1

        /* IDT entry for IRQ_VECTOR: a 32-bit interrupt gate on our CS. */
        mov     $irq_handler, %eax
        mov     %cs, %edx
        shl     $16, %edx
        mov     %ax, %dx
        mov     %edx, idt + IRQ_VECTOR * 8
        mov     $0x8e00, %ax
        mov     %eax, idt + IRQ_VECTOR * 8 + 4
        lidt    idt_descriptor

        /* Local APIC on, spurious vector 0xff. */
        movl    $0x1ff, LAPIC_MMIO + LAPIC_SVR

        PUTS    "irq: ioapic version 0x"
        movl    $1, IOAPIC_MMIO
        mov     IOAPIC_MMIO + IOWIN, %eax
        call    serial_hex32
        PUTS    "\n"

        /* Pin 4: high half (destination APIC 0) first, then the low half,
         * which unmasks it. */
        movl    $0x19, IOAPIC_MMIO
        movl    $0, IOAPIC_MMIO + IOWIN
        mov     $IRQ_VECTOR, %eax
        call    start_info_cmdline
        cmpb    $'l', (%esi)
        jne     1f
        or      $RTE_LEVEL, %eax
1:      movl    $0x18, IOAPIC_MMIO
        mov     %eax, IOAPIC_MMIO + IOWIN
        PUTS    "irq: pin 4 entry 0x"
        movl    $0x19, IOAPIC_MMIO
        mov     IOAPIC_MMIO + IOWIN, %eax
        call    serial_hex32
        movl    $0x18, IOAPIC_MMIO
        mov     IOAPIC_MMIO + IOWIN, %eax
        call    serial_hex32
        PUTS    "\n"

        /* OUT2 gates the UART's interrupt line on a PC; THRE interrupt on. */
        mov     $0x08, %al
        mov     $COM1_MCR, %dx
        out     %al, %dx
        mov     $0x02, %al
        mov     $COM1_IER, %dx
        out     %al, %dx
        /* Each byte raises IRQ 4; it waits in the local APIC until sti. */
        PUTS    "irq: waiting\n"
        mov     %esp, saved_esp
        sti
        mov     $WAIT_LOOPS, %ecx
1:      cmpl    $0, irq_count
        jne     2f
        dec     %ecx
        jnz     1b
irq_taken:
2:      cli
        xor     %al, %al
        mov     $COM1_IER, %dx
        out     %al, %dx
        mov     irq_count, %eax
        test    %eax, %eax
        jz      3f
        PUTS    "irq: vector 0x40 count="
        call    serial_dec32
        PUTS    "\nirq: ok\n"
        ret
3:      PUTS    "irq: no interrupt\n"
        ret

/* Entered with interrupts off (an interrupt gate); never returns. */
irq_handler:
        incl    irq_count
        mov     $COM1_IIR, %dx
        in      %dx, %al
        movl    $0, LAPIC_MMIO + LAPIC_EOI
        mov     saved_esp, %esp
        jmp     irq_taken

        .data
        .balign 8
idt:
        .fill   (IRQ_VECTOR + 1) * 2, 4, 0
idt_end:
        .balign 4
        .word   0
idt_descriptor:
        .word   idt_end - idt - 1
        .long   idt
irq_count:
        .long   0
saved_esp:
        .long   0
