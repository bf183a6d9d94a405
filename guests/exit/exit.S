/*
 * exit: powers off at once, for start-up benchmarks. One instruction at the
 * PVH entry (it overrides the weak pvh_start of common/start32.S, whose PVH
 * note then points here). Prints nothing.
 */
#include "guest.h"

        .section .text.entry, "ax"
        .code32
        .globl  pvh_start
pvh_start:
        movb    $ACPI_SLEEP_S5, ACPI_SLEEP_CONTROL
        /* Not reached on Vireo. On QEMU (bench/startup.py) the store above
         * hits nothing, and this write to isa-debug-exit ends the run. */
        xorl    %eax, %eax
        outb    %al, $0xf4
1:      cli
        hlt
        jmp     1b
