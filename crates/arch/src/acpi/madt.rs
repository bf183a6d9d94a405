//! The MADT ("APIC" table): the interrupt controllers of a Vireo VM.
//!
//! `acpi_tables::madt::MADT` cannot set the header flags (PCAT_COMPAT) and
//! has no Interrupt Source Override, Local APIC NMI or x2APIC structures,
//! so the table is assembled on `acpi_tables::sdt::Sdt` (which keeps the
//! length and checksum right). The Processor Local APIC and I/O APIC
//! entries still come from `acpi_tables`; only the missing structures are
//! encoded here, field by field, following ACPI 6.5 section 5.2.12.

use acpi_tables::madt::{EnabledStatus, IoApic, ProcessorLocalApic};
use acpi_tables::sdt::Sdt;
use acpi_tables::Aml;

use crate::layout::{APIC_START, IOAPIC_START};

/// MADT revision of ACPI 6.2+, the first with every structure used here.
const MADT_REVISION: u8 = 5;
/// Length of the MADT header: the standard header, the local APIC address
/// and the flags.
const MADT_HEADER_LEN: u32 = 44;
/// MADT flag: the machine also has dual 8259 PICs, so the OS must mask
/// them before using the I/O APIC (KVM's in-kernel irqchip has both).
const PCAT_COMPAT: u32 = 1;

/// The MADT holds 32-bit interrupt controller addresses; the asserts make
/// a layout change that breaks that a compile error.
#[allow(clippy::cast_possible_truncation)]
const LOCAL_APIC_ADDRESS: u32 = {
    assert!(APIC_START <= u32::MAX as u64);
    APIC_START as u32
};
#[allow(clippy::cast_possible_truncation)]
const IOAPIC_ADDRESS: u32 = {
    assert!(IOAPIC_START <= u32::MAX as u64);
    IOAPIC_START as u32
};

/// Highest APIC ID an xAPIC MADT entry may carry. 255 is the xAPIC
/// broadcast ID, so the spec requires x2APIC entries from there on.
pub(super) const MAX_XAPIC_ID: u32 = 254;
/// The only I/O APIC; its pins are GSIs 0..24.
const IOAPIC_ID: u8 = 0;
/// First GSI of the I/O APIC.
const IOAPIC_GSI_BASE: u32 = 0;

/// Processor UID meaning "all processors" in a Local APIC NMI structure.
const ALL_XAPIC_PROCESSORS: u8 = 0xff;
/// Processor UID meaning "all processors" in a Local x2APIC NMI structure.
const ALL_X2APIC_PROCESSORS: u32 = 0xffff_ffff;
/// Local APIC input the NMI is wired to, as on every PC.
const NMI_LINT: u8 = 1;

/// MPS INTI flags: active high, edge triggered (spelled out rather than
/// "conforms to bus", so the guest does not have to know ISA defaults).
const INTI_EDGE_ACTIVE_HIGH: u16 = 0b01 << 2 | 0b01;

/// Structure types (ACPI 6.5 table 5.21).
const TYPE_INTERRUPT_SOURCE_OVERRIDE: u8 = 2;
const TYPE_LOCAL_APIC_NMI: u8 = 4;
const TYPE_LOCAL_X2APIC: u8 = 9;
const TYPE_LOCAL_X2APIC_NMI: u8 = 0xa;

/// Bus number of ISA in an Interrupt Source Override.
const BUS_ISA: u8 = 0;
/// Like real PCs, the PIT's ISA IRQ 0 arrives on I/O APIC pin 2 (pin 0 is
/// the 8259's cascade output).
const TIMER_ISA_IRQ: u8 = 0;
const TIMER_GSI: u32 = 2;

/// Local x2APIC flag: the processor is usable.
const X2APIC_ENABLED: u32 = 1;

/// Builds the MADT for vCPUs with `apic_ids` (by vCPU index); vCPU `i`
/// has ACPI processor UID `i`.
pub(super) fn build(
    apic_ids: &[u32],
    oem_id: [u8; 6],
    oem_table_id: [u8; 8],
    oem_revision: u32,
) -> Vec<u8> {
    let mut madt = Sdt::new(
        *b"APIC",
        MADT_HEADER_LEN,
        MADT_REVISION,
        oem_id,
        oem_table_id,
        oem_revision,
    );
    madt.write_u32(36, LOCAL_APIC_ADDRESS);
    madt.write_u32(40, PCAT_COMPAT);

    // Entries are gathered first and appended once: `Sdt` recomputes the
    // checksum on every append.
    let mut entries = Vec::new();
    let mut any_x2apic = false;
    for (uid, &apic_id) in (0u32..).zip(apic_ids) {
        match (u8::try_from(uid), u8::try_from(apic_id)) {
            (Ok(uid8), Ok(id)) if apic_id <= MAX_XAPIC_ID => {
                ProcessorLocalApic::new(uid8, id, EnabledStatus::Enabled).to_aml_bytes(&mut entries)
            }
            _ => {
                any_x2apic = true;
                entries.extend_from_slice(&local_x2apic(apic_id, uid));
            }
        }
    }
    IoApic::new(IOAPIC_ID, IOAPIC_ADDRESS, IOAPIC_GSI_BASE).to_aml_bytes(&mut entries);
    entries.extend_from_slice(&interrupt_source_override(
        BUS_ISA,
        TIMER_ISA_IRQ,
        TIMER_GSI,
        INTI_EDGE_ACTIVE_HIGH,
    ));
    entries.extend_from_slice(&local_apic_nmi(
        ALL_XAPIC_PROCESSORS,
        INTI_EDGE_ACTIVE_HIGH,
        NMI_LINT,
    ));
    // Processors described by x2APIC entries take their NMI wiring only
    // from the x2APIC flavour of the structure.
    if any_x2apic {
        entries.extend_from_slice(&local_x2apic_nmi(
            ALL_X2APIC_PROCESSORS,
            INTI_EDGE_ACTIVE_HIGH,
            NMI_LINT,
        ));
    }
    madt.append_slice(&entries);
    madt.as_slice().to_vec()
}

/// Interrupt Source Override (type 2, 10 bytes): ISA `source` IRQ on bus
/// `bus` arrives at `gsi` with `flags` polarity/trigger.
fn interrupt_source_override(bus: u8, source: u8, gsi: u32, flags: u16) -> [u8; 10] {
    let mut s = [0u8; 10];
    s[0] = TYPE_INTERRUPT_SOURCE_OVERRIDE;
    s[1] = 10;
    s[2] = bus;
    s[3] = source;
    s[4..8].copy_from_slice(&gsi.to_le_bytes());
    s[8..10].copy_from_slice(&flags.to_le_bytes());
    s
}

/// Local APIC NMI (type 4, 6 bytes): NMI arrives on `lint` of processor
/// `uid` (0xff: all).
fn local_apic_nmi(uid: u8, flags: u16, lint: u8) -> [u8; 6] {
    let mut s = [0u8; 6];
    s[0] = TYPE_LOCAL_APIC_NMI;
    s[1] = 6;
    s[2] = uid;
    s[3..5].copy_from_slice(&flags.to_le_bytes());
    s[5] = lint;
    s
}

/// Processor Local x2APIC (type 9, 16 bytes), enabled.
fn local_x2apic(x2apic_id: u32, uid: u32) -> [u8; 16] {
    let mut s = [0u8; 16];
    s[0] = TYPE_LOCAL_X2APIC;
    s[1] = 16;
    // s[2..4] reserved.
    s[4..8].copy_from_slice(&x2apic_id.to_le_bytes());
    s[8..12].copy_from_slice(&X2APIC_ENABLED.to_le_bytes());
    s[12..16].copy_from_slice(&uid.to_le_bytes());
    s
}

/// Local x2APIC NMI (type 0xa, 12 bytes): NMI arrives on `lint` of
/// processor `uid` (0xffffffff: all).
fn local_x2apic_nmi(uid: u32, flags: u16, lint: u8) -> [u8; 12] {
    let mut s = [0u8; 12];
    s[0] = TYPE_LOCAL_X2APIC_NMI;
    s[1] = 12;
    s[2..4].copy_from_slice(&flags.to_le_bytes());
    s[4..8].copy_from_slice(&uid.to_le_bytes());
    s[8] = lint;
    // s[9..12] reserved.
    s
}
