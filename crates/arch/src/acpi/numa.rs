//! SRAT and SLIT: which vCPUs and which memory belong to which NUMA node
//! (proximity domain), and how far the nodes are from each other.
//!
//! `acpi_tables::srat::SRAT` has no Local APIC or x2APIC affinity
//! structures and `acpi_tables::slit::SLIT` can only write symmetric
//! distances, so both tables are assembled on `acpi_tables::sdt::Sdt`
//! (which keeps length and checksum right); the memory affinity
//! structures still come from `acpi_tables`. Field layouts follow ACPI 6.5
//! sections 5.2.16 and 5.2.17.

use acpi_tables::sdt::Sdt;
use acpi_tables::srat::MemoryAffinity;
use acpi_tables::Aml;

use super::madt::MAX_XAPIC_ID;

/// SRAT revision of ACPI 3.0+ (32-bit proximity domains).
const SRAT_REVISION: u8 = 3;
/// SRAT header: the standard header, a reserved dword that must be 1 and
/// eight reserved bytes.
const SRAT_HEADER_LEN: u32 = 48;
/// SLIT revision.
const SLIT_REVISION: u8 = 1;
/// SLIT header: the standard header and the number of localities.
const SLIT_HEADER_LEN: u32 = 44;

/// SRAT structure types.
const TYPE_LOCAL_APIC_AFFINITY: u8 = 0;
const TYPE_LOCAL_X2APIC_AFFINITY: u8 = 2;
/// Affinity flag: the entry is in use.
const AFFINITY_ENABLED: u32 = 1;

/// The guest's NUMA layout, as the SRAT and SLIT describe it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NumaTables {
    /// The node of each vCPU, by vCPU index.
    pub cpu_nodes: Vec<u32>,
    /// Each RAM range with its node: (node, guest-physical base, length).
    pub memory: Vec<(u32, u64, u64)>,
    /// `distances[from][to]`, one row and column per node; 10 on the
    /// diagonal.
    pub distances: Vec<Vec<u8>>,
}

/// Builds the SRAT: one processor affinity structure per vCPU (Local APIC
/// for APIC IDs up to 254, Local x2APIC above), then one memory affinity
/// structure per RAM range.
pub(super) fn srat(
    numa: &NumaTables,
    apic_ids: &[u32],
    oem_id: [u8; 6],
    oem_table_id: [u8; 8],
    oem_revision: u32,
) -> Vec<u8> {
    let mut srat = Sdt::new(
        *b"SRAT",
        SRAT_HEADER_LEN,
        SRAT_REVISION,
        oem_id,
        oem_table_id,
        oem_revision,
    );
    srat.write_u32(36, 1);
    let mut entries = Vec::new();
    for (&apic_id, &node) in apic_ids.iter().zip(&numa.cpu_nodes) {
        match u8::try_from(apic_id) {
            Ok(id) if apic_id <= MAX_XAPIC_ID => {
                entries.extend_from_slice(&local_apic_affinity(id, node))
            }
            _ => entries.extend_from_slice(&local_x2apic_affinity(apic_id, node)),
        }
    }
    for &(node, base, len) in &numa.memory {
        MemoryAffinity::new(node, base, len)
            .enabled()
            .to_aml_bytes(&mut entries);
    }
    srat.append_slice(&entries);
    srat.as_slice().to_vec()
}

/// Builds the SLIT from `distances` (row = from, column = to).
pub(super) fn slit(
    distances: &[Vec<u8>],
    oem_id: [u8; 6],
    oem_table_id: [u8; 8],
    oem_revision: u32,
) -> Vec<u8> {
    let mut slit = Sdt::new(
        *b"SLIT",
        SLIT_HEADER_LEN,
        SLIT_REVISION,
        oem_id,
        oem_table_id,
        oem_revision,
    );
    slit.write_u64(36, distances.len() as u64);
    let matrix: Vec<u8> = distances.iter().flatten().copied().collect();
    slit.append_slice(&matrix);
    slit.as_slice().to_vec()
}

/// Processor Local APIC/SAPIC Affinity (type 0, 16 bytes), enabled.
fn local_apic_affinity(apic_id: u8, node: u32) -> [u8; 16] {
    let d = node.to_le_bytes();
    let mut s = [0u8; 16];
    s[0] = TYPE_LOCAL_APIC_AFFINITY;
    s[1] = 16;
    // The proximity domain is split: bits 7:0 here, 31:8 at offset 9.
    s[2] = d[0];
    s[3] = apic_id;
    s[4..8].copy_from_slice(&AFFINITY_ENABLED.to_le_bytes());
    // s[8]: local SAPIC EID, unused on x86.
    s[9..12].copy_from_slice(&d[1..4]);
    // s[12..16]: clock domain 0.
    s
}

/// Processor Local x2APIC Affinity (type 2, 24 bytes), enabled.
fn local_x2apic_affinity(x2apic_id: u32, node: u32) -> [u8; 24] {
    let mut s = [0u8; 24];
    s[0] = TYPE_LOCAL_X2APIC_AFFINITY;
    s[1] = 24;
    // s[2..4] reserved.
    s[4..8].copy_from_slice(&node.to_le_bytes());
    s[8..12].copy_from_slice(&x2apic_id.to_le_bytes());
    s[12..16].copy_from_slice(&AFFINITY_ENABLED.to_le_bytes());
    // s[16..20] clock domain 0, s[20..24] reserved.
    s
}
