/*
 * idle: prints
 *   idle: waiting
 * on COM1, then halts with interrupts off forever. Tests use it to stop a
 * running VM from the host (signals, console escape).
 */
#include "guest.h"

        .code32
        .text
        .globl  main32
main32:
        PUTS    "idle: waiting\n"
1:      cli
        hlt
        jmp     1b
