/*
 * reset: prints
 *   reset: booted, resetting via <acpi|i8042>
 * on COM1 and resets the machine: through the i8042 (command 0xfe on port
 * 0x64) when the command line starts with "i8042", otherwise through the
 * ACPI reset register. Tests use it for reset and --reboot.
 */
#include "guest.h"

        .code32
        .text
        .globl  main32
main32:
        call    start_info_cmdline      /* %esi = command line */
        cmpl    $0x34303869, (%esi)     /* "i804" */
        jne     1f
        cmpb    $'2', 4(%esi)
        jne     1f
        PUTS    "reset: booted, resetting via i8042\n"
        mov     $0xfe, %al
        outb    %al, $0x64
        jmp     2f
1:      PUTS    "reset: booted, resetting via acpi\n"
        movb    $0x01, ACPI_RESET_REGISTER
2:      cli
        hlt
        jmp     2b
