/*
 * hello: the smallest useful guest. Prints
 *   hello: vireo guest booted
 *   hello: cmdline=<the command line>
 * and, when the start info lists modules (an initrd), for the first one
 *   hello: module addr=<hex32> size=<decimal> first=<hex32 of its first dword>
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
        mov     start_info, %ebx
        cmpl    $0, SI_NR_MODULES(%ebx)
        je      1f
        mov     SI_MODLIST(%ebx), %ebx          /* module 0 */
        PUTS    "hello: module addr="
        mov     MOD_PADDR(%ebx), %eax
        call    serial_hex32
        PUTS    " size="
        mov     MOD_SIZE(%ebx), %eax
        call    serial_dec32
        PUTS    " first="
        mov     MOD_PADDR(%ebx), %eax
        mov     (%eax), %eax
        call    serial_hex32
        PUTS    "\n"
1:      ret
