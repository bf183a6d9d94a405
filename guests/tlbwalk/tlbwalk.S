/*
 * tlbwalk: a TLB-bound load loop at CPL 3, for bench/memory.py.
 *
 * At CPL 3 it first writes one word in every 4 KiB page of a 1 GiB buffer
 * at guest-physical 256 MiB (identity mapped with 2 MiB guest pages), so
 * every translation the walk needs exists before it starts. With a command
 * line starting "walk" it then loads WALK_LOADS words from that buffer at
 * addresses drawn from a 64-bit LCG, each load's value added into the LCG's
 * state so that no load can start before the previous one is done: every
 * load pays its full miss, the translation included, which defeats the TLB
 * unless the host backs the buffer with pages as large as the guest's. Then it powers off
 * from CPL 3 through Vireo's ACPI sleep register and, failing that, QEMU
 * microvm's (its generic event device's sleep register at 0xfea00200
 * takes the same S5 value), so one ELF serves both VMMs.
 *
 * The benchmark times the guest with and without "walk" and takes the
 * difference: the walk alone, without start-up or the first touches.
 * Needs at least 1280 MiB of guest RAM. Prints nothing.
 */
#include "guest.h"

#define BUF_BASE        0x10000000      /* 256 MiB */
#define BUF_SIZE        0x40000000      /* 1 GiB, a power of two */
#define WALK_LOADS      10000000
#define LCG_MULTIPLIER  6364136223846793005
#define LCG_INCREMENT   1442695040888963407
#define QEMU_GED_SLEEP  0xfea00200

        .code32
        .text
        .globl  main32
main32:
        call    start_info_cmdline
        cmpl    $0x6b6c6177, (%esi)     /* "walk" */
        jne     1f
        movl    $1, walk_wanted
1:      mov     $user_main, %edi
        mov     $user_stack_top, %esi
        jmp     enter_user64

        .code64
user_main:
        mov     $BUF_BASE, %rdi
        mov     $(BUF_SIZE / 4096), %ecx
1:      mov     %rdi, (%rdi)
        add     $4096, %rdi
        dec     %ecx
        jnz     1b

        cmpl    $0, walk_wanted
        je      .Lpoweroff
        mov     $1, %eax
        movabs  $LCG_MULTIPLIER, %rcx
        movabs  $LCG_INCREMENT, %rdx
        mov     $(BUF_SIZE - 8), %r10d
        mov     $WALK_LOADS, %r8d
2:      imul    %rcx, %rax
        add     %rdx, %rax
        mov     %rax, %rsi
        shr     $24, %rsi               /* the LCG's high bits are its good ones */
        and     %r10, %rsi
        add     BUF_BASE(%rsi), %rax    /* the next address waits for this load */
        dec     %r8d
        jnz     2b

.Lpoweroff:
        mov     $ACPI_SLEEP_CONTROL, %eax
        movb    $ACPI_SLEEP_S5, (%rax)
        mov     $QEMU_GED_SLEEP, %eax
        movb    $ACPI_SLEEP_S5, (%rax)
3:      pause
        jmp     3b

        .data
        .balign 4
walk_wanted:
        .long   0

        .bss
        .balign 16
        .skip   4096
user_stack_top:
