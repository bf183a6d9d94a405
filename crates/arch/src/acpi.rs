//! ACPI tables for a Vireo guest.
//!
//! The platform is HW-reduced ACPI (as in Cloud Hypervisor): no PM1 event or
//! control blocks, no SCI, no GPEs. Power-off and reset go through three
//! byte-wide MMIO registers in the platform page at
//! [`ACPI_PM_MMIO_START`], announced in
//! the FADT. Everything lives in `[ACPI_START, ACPI_END)`, with the RSDP at
//! its very start so both a legacy BIOS-area scan and a boot protocol that
//! passes the RSDP address (boot_params, PVH) find it:
//!
//! ```text
//! ACPI_START  RSDP  (rev 2, points at the XSDT)
//!             DSDT  (\_S5, \_SB.COM1, \_SB.RTC_, \_SB.PCI0 when there is PCI,
//!                    \_SB.GED_ and \_SB.PWRB when there is a GED)
//!             FACP  (FADT rev 6, points at the DSDT)
//!             APIC  (MADT)
//!             MCFG  (when there is PCI: where ECAM is)
//!             ...   (AcpiConfig::extra_tables)
//!             XSDT  (last, because it lists every table above but the DSDT)
//! ```
//!
//! Every table is built with `acpi_tables`; only what that crate lacks is
//! written by hand (the MADT header flags and some MADT entries, see
//! `acpi/madt.rs`). The whole layout is computed and checked before the first
//! byte reaches guest memory, so a set of tables that does not fit fails
//! without writing anything.

mod dsdt;
mod ged;
mod madt;
mod numa;
mod pci;
mod pci_hotplug;
#[cfg(test)]
mod tests;

pub use numa::NumaTables;

use acpi_tables::fadt::{FADTBuilder, Flags, PmProfile};
use acpi_tables::gas::{AccessSize, AddressSpace, GAS};
use acpi_tables::rsdp::Rsdp;
use acpi_tables::xsdt::XSDT;
use acpi_tables::Aml;
use vm_memory::{Bytes, GuestAddress, GuestMemory, GuestMemoryError, Permissions};

use crate::layout::{
    ACPI_END, ACPI_PM_MMIO_START, ACPI_RESET_OFFSET, ACPI_RESET_VALUE, ACPI_SLEEP_CONTROL_OFFSET,
    ACPI_SLEEP_STATUS_OFFSET, ACPI_START,
};

/// OEM ID in every table header and the RSDP.
const OEM_ID: [u8; 6] = *b"VIREO ";
/// OEM table ID in every table header. The ACPI spec wants the FADT's to
/// match the XSDT's; using one for all tables keeps that true.
const OEM_TABLE_ID: [u8; 8] = *b"VIREOVM ";
/// OEM revision in every table header.
const OEM_REVISION: u32 = 1;
/// FADT "Hypervisor Vendor Identity" (ACPI 6.0+), so a guest can tell
/// which VMM built its tables.
const HYPERVISOR_VENDOR_ID: [u8; 8] = *b"VIREOVMM";

/// Tables are placed on 16-byte boundaries: the RSDP must be (the legacy
/// scan only looks there) and aligned tables make the XSDT's 64-bit
/// pointers and the guest's reads natural.
const TABLE_ALIGNMENT: u64 = 16;

/// Size of the standard header every system description table starts with.
const SDT_HEADER_LEN: usize = 36;

/// FADT IA-PC boot architecture flag: probing VGA ports is unsafe/useless.
const IAPC_BOOT_ARCH_VGA_NOT_PRESENT: u16 = 1 << 2;

/// Signatures of the tables this module generates itself; an extra table
/// with one of these would make the guest see two, so it is refused.
const GENERATED_SIGNATURES: [[u8; 4]; 8] = [
    *b"FACP", *b"APIC", *b"DSDT", *b"XSDT", *b"RSDT", *b"MCFG", *b"SRAT", *b"SLIT",
];

/// Errors from building ACPI tables.
#[derive(Debug, thiserror::Error)]
pub enum AcpiError {
    /// The MADT cannot describe a machine without processors.
    #[error("cannot build ACPI tables for a VM with no vCPUs")]
    NoCpus,
    /// A table would end past `ACPI_END`; nothing was written.
    #[error(
        "ACPI table {signature} ({len} bytes at {addr:#x}) does not fit in the ACPI region \
         [{ACPI_START:#x}, {ACPI_END:#x})"
    )]
    OutOfSpace {
        /// Signature of the table that did not fit.
        signature: String,
        /// Where it would have started.
        addr: u64,
        /// Its length in bytes.
        len: usize,
    },
    /// An extra table handed in by the caller is not a well-formed ACPI table.
    #[error("extra ACPI table {signature} is malformed: {reason}")]
    InvalidTable {
        /// Signature as found in the table (may be garbage).
        signature: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// An extra table has the signature of a table Vireo builds itself.
    #[error("extra ACPI table {0} duplicates a table Vireo generates itself")]
    DuplicateTable(String),
    /// The vCPU, APIC ID and NUMA descriptions do not agree.
    #[error("inconsistent ACPI configuration: expected {0}")]
    Inconsistent(&'static str),
    /// PCI hot-plug was asked for on a VM without a PCI host bridge.
    #[error("PCI hot-plug needs a PCI host bridge")]
    HotplugWithoutPci,
    /// The guest memory does not cover the ACPI region; nothing was written.
    #[error("guest memory does not cover the ACPI region [{ACPI_START:#x}, {end:#x})")]
    RegionNotInGuestMemory {
        /// End of the part of the region the tables need.
        end: u64,
    },
    /// Writing a table into guest memory failed.
    #[error("failed to write ACPI table {signature} at {addr:#x}")]
    GuestMemory {
        /// Signature of the table being written.
        signature: String,
        /// Its guest-physical address.
        addr: u64,
        /// What the guest memory reported.
        #[source]
        source: GuestMemoryError,
    },
}

/// A complete, checksummed ACPI system description table supplied by
/// another part of the VMM (for example the MCFG once PCI exists), to be
/// placed after the generated tables and listed in the XSDT.
///
/// Construction checks the header, so a bad table is reported where it was
/// built, not by the guest's kernel.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AcpiTable {
    bytes: Vec<u8>,
}

impl AcpiTable {
    /// Serializes a table built with `acpi_tables` (e.g.
    /// `acpi_tables::mcfg::MCFG`) and checks it.
    pub fn new(table: &dyn Aml) -> Result<Self, AcpiError> {
        let mut bytes = Vec::new();
        table.to_aml_bytes(&mut bytes);
        Self::from_bytes(bytes)
    }

    /// Takes the raw bytes of a table and checks its header length,
    /// checksum and signature.
    pub fn from_bytes(bytes: Vec<u8>) -> Result<Self, AcpiError> {
        let invalid = |reason| AcpiError::InvalidTable {
            signature: signature_string(&bytes),
            reason,
        };
        if bytes.len() < SDT_HEADER_LEN {
            return Err(invalid("shorter than the 36-byte table header"));
        }
        let header_len = u32::from_le_bytes([bytes[4], bytes[5], bytes[6], bytes[7]]);
        if usize::try_from(header_len).ok() != Some(bytes.len()) {
            return Err(invalid("header length differs from the table's size"));
        }
        if checksum(&bytes) != 0 {
            return Err(invalid("bytes do not sum to zero (bad checksum)"));
        }
        if GENERATED_SIGNATURES.iter().any(|s| bytes[..4] == *s) {
            return Err(AcpiError::DuplicateTable(signature_string(&bytes)));
        }
        Ok(Self { bytes })
    }

    /// The table's four-character signature.
    pub fn signature(&self) -> [u8; 4] {
        [self.bytes[0], self.bytes[1], self.bytes[2], self.bytes[3]]
    }

    /// The table's bytes, header included.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }
}

/// What the ACPI tables describe about the VM.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AcpiConfig {
    /// Number of vCPUs. vCPU `i` has APIC ID `i` and ACPI processor UID `i`;
    /// IDs below 255 get xAPIC MADT entries, the rest x2APIC entries (the
    /// ACPI spec requires exactly that split). Limited only by the space
    /// in the ACPI region (several thousand).
    pub num_cpus: u32,
    /// The APIC ID of each vCPU, by index, when they are not the indexes
    /// themselves (a `--cpu-topology` whose counts are not powers of two
    /// leaves gaps); empty means vCPU `i` has APIC ID `i`. Either empty or
    /// `num_cpus` long.
    pub apic_ids: Vec<u32>,
    /// The guest's NUMA nodes: adds an SRAT and a SLIT when present.
    pub numa: Option<NumaTables>,
    /// Tables built elsewhere in the VMM, placed after the generated ones
    /// and listed in the XSDT in this order.
    pub extra_tables: Vec<AcpiTable>,
    /// The PCI host bridge, if the VM has one: adds `\_SB.PCI0` to the
    /// DSDT and an MCFG table for its ECAM.
    pub pci: Option<PciHostBridge>,
    /// The Generic Event Device, if the VM has one: adds `\_SB.GED_` and
    /// the power button `\_SB.PWRB` to the DSDT, and with
    /// [`GedConfig::pci_hotplug_mmio`] the hot-plug slots of `\_SB.PCI0`.
    pub ged: Option<GedConfig>,
}

/// Where the Generic Event Device (`devices::Ged`) and the PCI hot-plug
/// registers (`devices::PciHotplug`) are, as the DSDT announces them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GedConfig {
    /// Address of the GED's event register (`layout::GED_MMIO_START`).
    pub mmio: u64,
    /// The GED's GSI, edge triggered and active high (`layout::GED_IRQ`).
    pub irq: u32,
    /// Address of the PCI hot-plug registers
    /// (`layout::PCI_HOTPLUG_MMIO_START`), if bus 0 supports hot-plug;
    /// requires [`AcpiConfig::pci`].
    pub pci_hotplug_mmio: Option<u64>,
}

impl GedConfig {
    /// The GED and hot-plug registers at their places in Vireo's layout.
    pub fn standard(pci_hotplug: bool) -> Self {
        Self {
            mmio: crate::layout::GED_MMIO_START,
            irq: crate::layout::GED_IRQ,
            pci_hotplug_mmio: pci_hotplug.then_some(crate::layout::PCI_HOTPLUG_MMIO_START),
        }
    }
}

/// Where the PCI host bridge decodes, as the DSDT and MCFG announce it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PciHostBridge {
    /// ECAM base (bus 0); the MCFG covers buses 0 to `last_bus`.
    pub ecam_base: u64,
    /// Last bus number ECAM covers.
    pub last_bus: u8,
    /// 32-bit MMIO window for BARs: (base, size).
    pub mmio32: (u64, u64),
    /// 64-bit MMIO window for BARs: (base, size).
    pub mmio64: (u64, u64),
}

/// Builds the RSDP, XSDT, FADT, MADT, DSDT and `config.extra_tables` into
/// `[ACPI_START, ACPI_END)` of `mem` and returns the RSDP's address (always
/// `ACPI_START`), which the boot protocol hands to the guest.
///
/// The layout is checked before anything is written: on
/// [`AcpiError::OutOfSpace`] or [`AcpiError::RegionNotInGuestMemory`]
/// guest memory is untouched, and nothing is ever written outside the
/// ACPI region.
pub fn create_acpi_tables<M: GuestMemory + ?Sized>(
    mem: &M,
    config: &AcpiConfig,
) -> Result<GuestAddress, AcpiError> {
    if config.num_cpus == 0 {
        return Err(AcpiError::NoCpus);
    }
    let apic_ids: Vec<u32> = if config.apic_ids.is_empty() {
        (0..config.num_cpus).collect()
    } else {
        config.apic_ids.clone()
    };
    if apic_ids.len() != config.num_cpus as usize {
        return Err(AcpiError::Inconsistent("one APIC ID per vCPU"));
    }
    if let Some(numa) = &config.numa {
        let nodes = numa.distances.len();
        let node_ok = |n: &u32| (*n as usize) < nodes;
        if numa.cpu_nodes.len() != apic_ids.len()
            || !numa.cpu_nodes.iter().all(node_ok)
            || !numa.memory.iter().all(|(n, _, _)| node_ok(n))
            || numa.distances.iter().any(|row| row.len() != nodes)
        {
            return Err(AcpiError::Inconsistent(
                "every vCPU and memory range in a node, and a square distance matrix",
            ));
        }
    }
    let hotplug = config.ged.and_then(|g| g.pci_hotplug_mmio);
    if hotplug.is_some() && config.pci.is_none() {
        return Err(AcpiError::HotplugWithoutPci);
    }

    let mut layout = Layout::new();
    let rsdp_addr = layout.place(*b"RSD ", Rsdp::len())?;

    let dsdt = dsdt::build(
        OEM_ID,
        OEM_TABLE_ID,
        OEM_REVISION,
        config.pci.as_ref(),
        config.ged.as_ref(),
    );
    let dsdt_addr = layout.place_table(dsdt)?;

    // Every table the XSDT lists, in order. Adding a table is one line.
    let mut listed = vec![
        fadt(dsdt_addr),
        madt::build(&apic_ids, OEM_ID, OEM_TABLE_ID, OEM_REVISION),
    ];
    if let Some(numa) = &config.numa {
        listed.push(numa::srat(
            numa,
            &apic_ids,
            OEM_ID,
            OEM_TABLE_ID,
            OEM_REVISION,
        ));
        listed.push(numa::slit(
            &numa.distances,
            OEM_ID,
            OEM_TABLE_ID,
            OEM_REVISION,
        ));
    }
    if let Some(pci) = &config.pci {
        listed.push(pci::mcfg(OEM_ID, OEM_TABLE_ID, OEM_REVISION, pci));
    }
    listed.extend(config.extra_tables.iter().map(|t| t.bytes.clone()));

    let mut xsdt = XSDT::new(OEM_ID, OEM_TABLE_ID, OEM_REVISION);
    for table in listed {
        xsdt.add_entry(layout.place_table(table)?);
    }
    let xsdt_addr = layout.place_table(aml_bytes(&xsdt))?;
    layout.fill(rsdp_addr, aml_bytes(&Rsdp::new(OEM_ID, xsdt_addr)));

    layout.write(mem)?;
    Ok(GuestAddress(rsdp_addr))
}

/// Builds the FADT for the HW-reduced platform.
fn fadt(dsdt_addr: u64) -> Vec<u8> {
    let pm_register = |offset| {
        GAS::new(
            AddressSpace::SystemMemory,
            8,
            0,
            AccessSize::ByteAccess,
            ACPI_PM_MMIO_START + offset,
        )
    };
    let mut fadt = FADTBuilder::new(OEM_ID, OEM_TABLE_ID, OEM_REVISION)
        // 64-bit pointer only: X_DSDT wins over DSDT anyway, and one
        // pointer cannot disagree with another.
        .dsdt_64(dsdt_addr)
        // No FACS either: HW-reduced ACPI makes it optional, and there is
        // no firmware waking vector or global lock to put in it.
        .flag(Flags::HwReducedAcpi)
        .flag(Flags::ResetRegSup)
        // A VMM cannot know whether the guest is a desktop or a server;
        // "unspecified" keeps the guest's own defaults.
        .preferred_pm_profile(PmProfile::Unspecified);
    fadt.reset_reg = pm_register(ACPI_RESET_OFFSET);
    fadt.reset_value = ACPI_RESET_VALUE;
    fadt.sleep_control_reg = pm_register(ACPI_SLEEP_CONTROL_OFFSET);
    fadt.sleep_status_reg = pm_register(ACPI_SLEEP_STATUS_OFFSET);
    // The 8042 flag stays clear: Vireo's i8042 exists only for the classic
    // reset (command 0xfe, Linux `reboot=k`, which writes the port without
    // any driver) and has no keyboard, mouse or interrupt line. With the
    // flag set Linux probed ports 0x60/0x64 directly, spent seconds in
    // polling loops and then failed the probe (IRQ 1 has no descriptor on a
    // HW-reduced platform, so request_irq gave -EINVAL); without it Linux
    // skips the controller, as with Firecracker's and Cloud Hypervisor's
    // FADTs. MSI stays supported (the "MSI not supported" bit is clear)
    // for virtio-pci, and there is no VGA to probe.
    fadt.iapc_boot_arch = IAPC_BOOT_ARCH_VGA_NOT_PRESENT.into();
    fadt.hypervisor_vendor_identity = u64::from_le_bytes(HYPERVISOR_VENDOR_ID).into();
    aml_bytes(&fadt.finalize())
}

/// Serializes an `acpi_tables` object.
fn aml_bytes(table: &dyn Aml) -> Vec<u8> {
    let mut bytes = Vec::new();
    table.to_aml_bytes(&mut bytes);
    bytes
}

/// The 8-bit sum of `bytes`; zero for a table with a correct checksum.
fn checksum(bytes: &[u8]) -> u8 {
    bytes.iter().fold(0u8, |sum, b| sum.wrapping_add(*b))
}

/// A table's signature for error messages.
fn signature_string(bytes: &[u8]) -> String {
    String::from_utf8_lossy(&bytes[..bytes.len().min(4)]).into_owned()
}

/// Where each table goes in the ACPI region, decided (and bounds-checked)
/// before anything is written.
struct Layout {
    /// First free address.
    next: u64,
    /// Tables in placement order, with their addresses.
    tables: Vec<(u64, Vec<u8>)>,
}

impl Layout {
    fn new() -> Self {
        Self {
            next: ACPI_START,
            tables: Vec::new(),
        }
    }

    /// Reserves `len` bytes for a table whose content is filled in later
    /// (the RSDP, which must come first but points at the XSDT, which comes
    /// last).
    fn place(&mut self, signature: [u8; 4], len: usize) -> Result<u64, AcpiError> {
        let addr = self.next;
        let out_of_space = || AcpiError::OutOfSpace {
            signature: signature_string(&signature),
            addr,
            len,
        };
        let end = u64::try_from(len)
            .ok()
            .and_then(|len| addr.checked_add(len))
            .filter(|end| *end <= ACPI_END)
            .ok_or_else(out_of_space)?;
        // ACPI_END is aligned, so this never passes it.
        self.next = end.next_multiple_of(TABLE_ALIGNMENT);
        self.tables.push((addr, vec![0; len]));
        Ok(addr)
    }

    /// Places a complete table and returns its address.
    fn place_table(&mut self, table: Vec<u8>) -> Result<u64, AcpiError> {
        let signature = [table[0], table[1], table[2], table[3]];
        let addr = self.place(signature, table.len())?;
        self.fill(addr, table);
        Ok(addr)
    }

    /// Sets the content of the table reserved at `addr`.
    fn fill(&mut self, addr: u64, bytes: Vec<u8>) {
        for (table_addr, table) in &mut self.tables {
            if *table_addr == addr {
                assert_eq!(
                    table.len(),
                    bytes.len(),
                    "table changed size after placement"
                );
                *table = bytes;
                return;
            }
        }
        unreachable!("no table was placed at {addr:#x}");
    }

    /// Copies every table into guest memory.
    fn write<M: GuestMemory + ?Sized>(&self, mem: &M) -> Result<(), AcpiError> {
        // Checked up front so a partial region fails before the first write
        // rather than after some tables are already in place.
        let used = usize::try_from(self.next - ACPI_START).unwrap_or(usize::MAX);
        if !mem.check_range(GuestAddress(ACPI_START), used, Permissions::Write) {
            return Err(AcpiError::RegionNotInGuestMemory { end: self.next });
        }
        for (addr, table) in &self.tables {
            mem.write_slice(table, GuestAddress(*addr))
                .map_err(|source| AcpiError::GuestMemory {
                    signature: signature_string(table),
                    addr: *addr,
                    source,
                })?;
        }
        Ok(())
    }
}
