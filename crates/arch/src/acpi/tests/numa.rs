//! SRAT and SLIT, read back from guest memory and through iasl.

use super::*;
use crate::topology::CpuTopology;

/// Two nodes of two vCPUs each on a topology with gaps in its APIC IDs
/// (2 sockets of 3 cores: IDs 0 1 2 4 5 6), node 0 split around a hole.
fn numa_config() -> AcpiConfig {
    let topology: CpuTopology = "sockets=2,cores=3,threads=1".parse().unwrap();
    AcpiConfig {
        num_cpus: 6,
        apic_ids: topology.apic_ids(),
        numa: Some(NumaTables {
            cpu_nodes: vec![0, 0, 0, 1, 1, 1],
            memory: vec![
                (0, 0, 0xc000_0000),
                (0, 0x1_0000_0000, 0x4000_0000),
                (1, 0x1_4000_0000, 0x8000_0000),
            ],
            distances: vec![vec![10, 21], vec![31, 10]],
        }),
        ..config(6)
    }
}

fn build_numa(config: &AcpiConfig) -> (Mem, Walk) {
    let mem = guest_memory();
    let rsdp = create_acpi_tables(&mem, config).unwrap();
    let walk = Walk::new(&mem, rsdp);
    (mem, walk)
}

#[test]
fn srat_lists_every_vcpu_and_memory_range_with_its_node() {
    let (_mem, walk) = build_numa(&numa_config());
    let signatures: Vec<_> = walk.listed.iter().map(|(_, t)| &t[..4]).collect();
    assert_eq!(signatures, [b"FACP", b"APIC", b"SRAT", b"SLIT", b"MCFG"]);
    let srat = walk.table(b"SRAT");
    assert_eq!(srat[8], 3, "SRAT revision");
    assert_eq!(u32_at(srat, 36), 1, "reserved dword must be 1");
    assert_eq!(srat.len(), 48 + 6 * 16 + 3 * 40);
    let mut off = 48;
    let mut cpus = Vec::new();
    let mut memory = Vec::new();
    while off < srat.len() {
        let (kind, len) = (srat[off], srat[off + 1] as usize);
        let e = &srat[off..off + len];
        match kind {
            0 => {
                assert_eq!(len, 16);
                let domain = u32::from(e[2]) | u32::from_le_bytes([0, e[9], e[10], e[11]]);
                assert_eq!(u32_at(e, 4), 1, "enabled");
                cpus.push((e[3], domain));
            }
            1 => {
                assert_eq!(len, 40);
                assert_eq!(u32_at(e, 28), 1, "enabled, not hot-pluggable");
                memory.push((u32_at(e, 2), u64_at(e, 8), u64_at(e, 16)));
            }
            other => panic!("unexpected SRAT structure {other}"),
        }
        off += len;
    }
    assert_eq!(cpus, [(0, 0), (1, 0), (2, 0), (4, 1), (5, 1), (6, 1)]);
    assert_eq!(memory, numa_config().numa.unwrap().memory);

    // The MADT lists the same (gapped) APIC IDs, UIDs by index.
    let madt = walk.table(b"APIC");
    let lapics: Vec<_> = super::madt_entries(madt)
        .into_iter()
        .filter(|(t, _)| *t == 0)
        .map(|(_, e)| (e[2], e[3]))
        .collect();
    assert_eq!(lapics, [(0, 0), (1, 1), (2, 2), (3, 4), (4, 5), (5, 6)]);
}

#[test]
fn slit_keeps_asymmetric_distances() {
    let (_mem, walk) = build_numa(&numa_config());
    let slit = walk.table(b"SLIT");
    assert_eq!(slit[8], 1, "SLIT revision");
    assert_eq!(u64_at(slit, 36), 2);
    assert_eq!(&slit[44..], [10, 21, 31, 10]);
}

#[test]
fn large_apic_ids_get_x2apic_affinity() {
    let mut config = numa_config();
    config.apic_ids = vec![0, 1, 2, 300, 301, 302];
    let (_mem, walk) = build_numa(&config);
    let srat = walk.table(b"SRAT");
    assert_eq!(srat.len(), 48 + 3 * 16 + 3 * 24 + 3 * 40);
    let x2 = &srat[48 + 3 * 16..48 + 3 * 16 + 24];
    assert_eq!((x2[0], x2[1]), (2, 24));
    assert_eq!((u32_at(x2, 4), u32_at(x2, 8), u32_at(x2, 12)), (1, 300, 1));
}

#[test]
fn without_numa_there_is_no_srat_or_slit_and_bad_layouts_are_refused() {
    let (_mem, walk) = build_numa(&config(4));
    assert!(walk
        .listed
        .iter()
        .all(|(_, t)| &t[..4] != b"SRAT" && &t[..4] != b"SLIT"));
    let mem = guest_memory();
    let mut bad = numa_config();
    bad.numa.as_mut().unwrap().cpu_nodes[0] = 2;
    assert!(matches!(
        create_acpi_tables(&mem, &bad),
        Err(AcpiError::Inconsistent(_))
    ));
    let mut bad = numa_config();
    bad.apic_ids.pop();
    assert!(create_acpi_tables(&mem, &bad).is_err());
    let mut bad = numa_config();
    bad.numa.as_mut().unwrap().distances[1].pop();
    assert!(create_acpi_tables(&mem, &bad).is_err());
    // Vireo builds them itself, so a caller's SLIT is refused.
    assert!(matches!(
        AcpiTable::new(&acpi_tables::slit::SLIT::new(OEM_ID, OEM_TABLE_ID, 1, 1)),
        Err(AcpiError::DuplicateTable(_))
    ));
}

#[test]
fn iasl_disassembles_srat_and_slit() {
    let (_mem, walk) = build_numa(&numa_config());
    let dir = scratch_dir("numa");
    let mut out = Vec::new();
    for sig in [b"SRAT", b"SLIT"] {
        let file = dir.join(format!("{}.dat", String::from_utf8_lossy(sig)));
        std::fs::write(&file, walk.table(sig)).unwrap();
        let Some(dsl) = iasl_disassemble(&file) else {
            eprintln!("SKIP iasl_disassembles_srat_and_slit: iasl not found");
            let _ = std::fs::remove_dir_all(&dir);
            return;
        };
        out.push(dsl);
    }
    let (srat, slit) = (&out[0], &out[1]);
    assert_eq!(
        srat.matches("Processor Local APIC/SAPIC Affinity").count(),
        6,
        "{srat}"
    );
    assert_eq!(srat.matches("Memory Affinity").count(), 3, "{srat}");
    assert!(srat.contains("Base Address : 0000000140000000"), "{srat}");
    assert!(srat.contains("Address Length : 0000000080000000"), "{srat}");
    assert!(srat.contains("Apic ID : 06"), "{srat}");
    assert!(slit.contains("Localities : 0000000000000002"), "{slit}");
    assert!(slit.contains("Locality   0 : 0A 15"), "{slit}");
    assert!(slit.contains("Locality   1 : 1F 0A"), "{slit}");
    let _ = std::fs::remove_dir_all(&dir);
}
