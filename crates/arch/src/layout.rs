//! The guest-physical memory map every Vireo x86_64 VM shares.
//!
//! Boot structures live in the first megabyte, as on a PC; RAM fills
//! `[1 MiB, 3 GiB)` and continues at 4 GiB; the gap `[3 GiB, 4 GiB)` is the
//! MMIO hole that holds the PCI windows, ECAM and the platform devices.
//! Test guests hard-code some of these addresses, so changing one is an ABI
//! change for `guests/`.

/// GDT used for 64-bit and PVH entry.
pub const BOOT_GDT_START: u64 = 0x500;
/// Empty IDT loaded at entry (the guest installs its own).
pub const BOOT_IDT_START: u64 = 0x520;
/// PVH `hvm_start_info`.
pub const PVH_INFO_START: u64 = 0x6000;
/// PVH module list (the initrd), right after `hvm_start_info`.
pub const PVH_MODLIST_START: u64 = 0x6040;
/// PVH memory map entries.
pub const PVH_MEMMAP_START: u64 = 0x6080;
/// Maximum PVH memory map entries that fit before the zero page.
pub const PVH_MEMMAP_MAX_ENTRIES: u64 = (ZERO_PAGE_START - PVH_MEMMAP_START) / 24;
/// Linux `boot_params` ("zero page").
pub const ZERO_PAGE_START: u64 = 0x7000;
/// Initial stack pointer for 64-bit entry.
pub const BOOT_STACK_POINTER: u64 = 0x8ff0;
/// Identity-mapping page tables for 64-bit entry: PML4, then PDPT, then PDs.
pub const PML4_START: u64 = 0x9000;
/// Page-directory-pointer table.
pub const PDPTE_START: u64 = 0xa000;
/// First of four page directories (2 MiB pages, identity map of 4 GiB).
pub const PDE_START: u64 = 0xb000;
/// Kernel command line.
pub const CMDLINE_START: u64 = 0x20000;
/// Largest command line we place (Linux's own limit is in its setup header).
pub const CMDLINE_MAX_SIZE: usize = 0x10000;
/// Start of the Extended BIOS Data Area; RAM below 1 MiB ends here.
pub const EBDA_START: u64 = 0x9fc00;
/// ACPI tables: RSDP first, where the legacy BIOS-area scan finds it.
pub const ACPI_START: u64 = 0xe0000;
/// End (exclusive) of the region reserved for ACPI tables.
pub const ACPI_END: u64 = 0x100000;
/// Where high memory starts; kernels load here.
pub const HIMEM_START: u64 = 0x100000;

/// Start of the MMIO hole below 4 GiB. RAM below 4 GiB ends here.
pub const MMIO_HOLE_START: u64 = 0xc000_0000;
/// End (exclusive) of the MMIO hole; RAM resumes here.
pub const MMIO_HOLE_END: u64 = 0x1_0000_0000;
/// 32-bit PCI MMIO window for BARs.
pub const PCI_MMIO32_START: u64 = 0xc000_0000;
/// Size of the 32-bit PCI MMIO window.
pub const PCI_MMIO32_SIZE: u64 = 0x2000_0000;
/// Alignment of the 64-bit PCI MMIO window, which starts above RAM.
pub const PCI_MMIO64_ALIGN: u64 = 1 << 30;
/// Size of the 64-bit PCI MMIO window.
pub const PCI_MMIO64_SIZE: u64 = 64 << 30;
/// PCI Express enhanced configuration space (ECAM), buses 0..=255.
pub const PCI_ECAM_START: u64 = 0xe000_0000;
/// Size of ECAM.
pub const PCI_ECAM_SIZE: u64 = 0x1000_0000;

/// Vireo's platform MMIO page: ACPI fixed registers (HW-reduced ACPI).
pub const ACPI_PM_MMIO_START: u64 = 0xfeb0_0000;
/// Size of the ACPI PM register block.
pub const ACPI_PM_MMIO_SIZE: u64 = 0x10;
/// Offset of the ACPI sleep control register (write `SLP_TYP << 2 | SLP_EN`).
pub const ACPI_SLEEP_CONTROL_OFFSET: u64 = 0;
/// Offset of the ACPI sleep status register.
pub const ACPI_SLEEP_STATUS_OFFSET: u64 = 1;
/// Offset of the ACPI reset register.
pub const ACPI_RESET_OFFSET: u64 = 2;
/// Value written to the reset register to reset the machine.
pub const ACPI_RESET_VALUE: u8 = 0x01;
/// SLP_TYP of the S5 (soft-off) state as announced in the DSDT `\_S5`.
pub const ACPI_S5_SLEEP_TYPE: u8 = 5;

/// Debug console: each byte written at offset 0 goes to the serial console's
/// output. It exists so guest code at CPL 3, which cannot use port I/O,
/// can print (like QEMU's `isa-debugcon`, but memory-mapped).
pub const DEBUGCON_MMIO_START: u64 = 0xfeb0_1000;
/// Size of the debug console register block.
pub const DEBUGCON_MMIO_SIZE: u64 = 0x10;

// 0xfeb0_2000 stays unclaimed on purpose: the virtio test guest's
// `bench-mmio` mode times the VMM's MMIO exit with reads there.

/// ACPI Generic Event Device (`ACPI0013`): a 32-bit event register the
/// guest's `_EVT` method reads (and thereby clears) when [`GED_IRQ`] fires.
pub const GED_MMIO_START: u64 = 0xfeb0_3000;
/// Size of the GED register block.
pub const GED_MMIO_SIZE: u64 = 0x10;
/// The GED's interrupt: IOAPIC pin 5, edge triggered, active high (an
/// ISA line nothing else uses; edge because an irqfd without a resample fd
/// can only pulse a line).
pub const GED_IRQ: u32 = 5;
/// GED event register bit: the power button was pressed (the DSDT's
/// `_EVT` notifies `\_SB.PWRB`). Must match `devices::GedEvent`.
pub const GED_EVENT_POWER_BUTTON: u32 = 1 << 0;
/// GED event register bit: PCI slots changed (the DSDT's `_EVT` calls
/// `\_SB.PCI0.PCNT`). Must match `devices::GedEvent`.
pub const GED_EVENT_PCI_HOTPLUG: u32 = 1 << 1;
/// ACPI PCI hot-plug registers of bus 0 (`PCIU`, `PCID`, `B0EJ`), read and
/// written by the DSDT's `\_SB.PCI0.PCNT` and slot `_EJ0` methods.
pub const PCI_HOTPLUG_MMIO_START: u64 = 0xfeb0_4000;
/// Size of the PCI hot-plug register block.
pub const PCI_HOTPLUG_MMIO_SIZE: u64 = 0x10;
/// Offset of `PCIU` (slots that gained a device, read to clear). Each
/// hot-plug register is a 32-bit bitmap, bit n = slot n of bus 0; the
/// offsets must match `devices::pci_hotplug`.
pub const PCI_HOTPLUG_PCIU_OFFSET: u64 = 0x0;
/// Offset of `PCID` (slots asked to give up their device, read to clear).
pub const PCI_HOTPLUG_PCID_OFFSET: u64 = 0x4;
/// Offset of `B0EJ` (the guest writes the slots it has ejected).
pub const PCI_HOTPLUG_B0EJ_OFFSET: u64 = 0x8;

/// IOAPIC registers.
pub const IOAPIC_START: u64 = 0xfec0_0000;
/// Local APIC registers (xAPIC mode).
pub const APIC_START: u64 = 0xfee0_0000;

/// COM1 I/O port base.
pub const COM1_PORT: u16 = 0x3f8;
/// COM1 interrupt line (GSI).
pub const COM1_IRQ: u32 = 4;
/// i8042 data port.
pub const I8042_DATA_PORT: u16 = 0x60;
/// i8042 command/status port.
pub const I8042_COMMAND_PORT: u16 = 0x64;
/// CMOS RTC index port (data is the next port).
pub const CMOS_PORT: u16 = 0x70;
