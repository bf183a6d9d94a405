/*
 * guest.h: constants and macros shared by Vireo's test guests.
 *
 * The addresses are Vireo's platform ABI (crates/arch/src/layout.rs) and the
 * PVH boot ABI (Xen's hvm_start_info). Included by every .S file in guests/.
 */
#ifndef VIREO_GUEST_H
#define VIREO_GUEST_H

/* Platform devices. */
#define COM1_PORT               0x3f8
#define ACPI_SLEEP_CONTROL      0xfeb00000
#define ACPI_RESET_REGISTER     0xfeb00002
#define ACPI_SLEEP_S5           0x34        /* SLP_TYP 5 << 2 | SLP_EN 1 << 5 */
#define DEBUGCON_MMIO           0xfeb01000  /* each byte stored here is printed */
#define LAPIC_MMIO              0xfee00000
#define LAPIC_ID                0x20        /* bits 31:24 */
#define LAPIC_SVR               0xf0
#define LAPIC_ICR_LOW           0x300
#define LAPIC_ICR_HIGH          0x310

/* PVH: the ELF note and hvm_start_info. */
#define XEN_ELFNOTE_PHYS32_ENTRY 18
#define START_INFO_MAGIC        0x336ec578
#define SI_MAGIC                0           /* u32 */
#define SI_NR_MODULES           12          /* u32 */
#define SI_MODLIST              16          /* u64 physical address */
#define SI_CMDLINE              24          /* u64 physical address */
#define MOD_PADDR               0           /* hvm_modlist_entry: u64 */
#define MOD_SIZE                8           /* u64 */
#define SI_RSDP                 32          /* u64 physical address */
#define SI_MEMMAP               40          /* u64 physical address */
#define SI_MEMMAP_ENTRIES       48          /* u32 */
#define MEMMAP_ENTRY_SIZE       24          /* { u64 addr; u64 size; u32 type; u32 reserved } */
#define MEMMAP_TYPE_RAM         1
#define MEMMAP_TYPE_RESERVED    2

/* Most CPUs a guest records (xAPIC ids are 8 bits). */
#define MAX_CPUS                256

#ifdef __ASSEMBLER__

/*
 * PUTS "text": print a string literal on COM1 (32-bit code, CPL 0).
 * Preserves every register. Escapes such as \n work inside the literal.
 */
.macro PUTS text:req
        .pushsection .rodata.str, "a"
.Lputs_\@:
        .asciz "\text"
        .popsection
        push    %esi
        mov     $.Lputs_\@, %esi
        call    serial_puts
        pop     %esi
.endm

/*
 * DPUTS "text": print a string literal on the debug console MMIO register
 * (64-bit code; works at CPL 3). Preserves every register.
 */
.macro DPUTS text:req
        .pushsection .rodata.str, "a"
.Ldputs_\@:
        .asciz "\text"
        .popsection
        push    %rsi
        mov     $.Ldputs_\@, %esi
        call    dbg_puts
        pop     %rsi
.endm

#endif /* __ASSEMBLER__ */
#endif /* VIREO_GUEST_H */
