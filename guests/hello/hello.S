/*
 * hello: the smallest useful guest. Prints
 *   hello: vireo guest booted
 *   hello: cmdline=<the command line>
 * on COM1 and powers off.
 */
#include "guest.h"

        .code32
        .text
        .globl  main32
main32:
        PUTS    "hello: vireo guest booted\n"
        PUTS    "hello: cmdline="
        call    start_info_cmdline
        call    serial_puts
        PUTS    "\n"
        ret
