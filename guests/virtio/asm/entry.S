/*
 * entry.S: the CPL 0 part of the virtio guest, kept to a handful of simple
 * instructions because kvm-pvm emulates CPL 0. It keeps the command line,
 * enables SSE (the Rust code uses it) and enters CPL 3 through
 * common/longmode.S; all Rust code runs at CPL 3.
 */
#include "guest.h"

#define CR0_MP          (1 << 1)
#define CR0_EM          (1 << 2)
#define CR0_TS          (1 << 3)
#define CR4_OSFXSR      (1 << 9)
#define CR4_OSXMMEXCPT  (1 << 10)

        .code32
        .text
        .globl  main32
main32:
        PUTS    "virtio: entering user mode\n"
        call    start_info_cmdline
        mov     %esi, guest_cmdline
        /* Without OSFXSR an SSE instruction raises #UD on hardware
         * virtualization and under QEMU, and we have no IDT to survive it. */
        mov     %cr0, %eax
        and     $~(CR0_EM | CR0_TS), %eax
        or      $CR0_MP, %eax
        mov     %eax, %cr0
        mov     %cr4, %eax
        or      $(CR4_OSFXSR | CR4_OSXMMEXCPT), %eax
        mov     %eax, %cr4
        mov     $user_entry, %edi
        mov     $user_stack_top, %esi
        jmp     enter_user64

        .code64
/* A call, not a jump, so Rust sees the stack alignment its ABI expects. */
user_entry:
        mov     guest_cmdline, %edi
        call    virtio_main
        jmp     dbg_poweroff

        .bss
        .balign 4
guest_cmdline:
        .long   0
        .balign 16
        .skip   65536
user_stack_top:
