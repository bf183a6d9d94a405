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
1:      cli
        hlt
        jmp     1b
