//! Tests read the tables back from guest memory the way an OS does: from
//! the RSDP, through the XSDT, to each table, checking every checksum on
//! the way. `iasl` (ACPICA), when installed, is the independent oracle.

use std::path::{Path, PathBuf};
use std::process::Command;

use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use super::*;
use crate::layout::{ACPI_S5_SLEEP_TYPE, APIC_START, COM1_IRQ, COM1_PORT, IOAPIC_START};

mod numa;

type Mem = GuestMemoryMmap<()>;

fn guest_memory() -> Mem {
    GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 2 << 20)]).unwrap()
}

fn config(num_cpus: u32) -> AcpiConfig {
    AcpiConfig {
        num_cpus,
        pci: Some(PCI),
        ged: Some(GedConfig::standard(true)),
        ..Default::default()
    }
}

const PCI: crate::acpi::PciHostBridge = crate::acpi::PciHostBridge {
    ecam_base: 0xe000_0000,
    last_bus: 0,
    mmio32: (0xc000_0000, 0x2000_0000),
    mmio64: (0x40_0000_0000, 0x10_0000_0000),
};

fn read(mem: &Mem, addr: u64, len: usize) -> Vec<u8> {
    let mut buf = vec![0; len];
    mem.read_slice(&mut buf, GuestAddress(addr)).unwrap();
    buf
}

fn u16_at(b: &[u8], off: usize) -> u16 {
    u16::from_le_bytes(b[off..off + 2].try_into().unwrap())
}

fn u32_at(b: &[u8], off: usize) -> u32 {
    u32::from_le_bytes(b[off..off + 4].try_into().unwrap())
}

fn u64_at(b: &[u8], off: usize) -> u64 {
    u64::from_le_bytes(b[off..off + 8].try_into().unwrap())
}

/// Reads the system description table at `addr`, checking that it lies in
/// the ACPI region and that its checksum is right.
fn read_table(mem: &Mem, addr: u64) -> Vec<u8> {
    let header = read(mem, addr, 36);
    let len = u32_at(&header, 4) as usize;
    assert!(len >= 36, "table at {addr:#x} is shorter than its header");
    assert!(addr >= ACPI_START && addr + len as u64 <= ACPI_END);
    let table = read(mem, addr, len);
    assert_eq!(
        checksum(&table),
        0,
        "bad checksum in {}",
        signature_string(&table)
    );
    table
}

/// Every table an OS reaches from the RSDP: the RSDP itself, the XSDT, the
/// tables it lists and the DSDT, each with its address.
struct Walk {
    rsdp: Vec<u8>,
    xsdt: (u64, Vec<u8>),
    listed: Vec<(u64, Vec<u8>)>,
    dsdt: (u64, Vec<u8>),
}

impl Walk {
    fn new(mem: &Mem, rsdp_addr: GuestAddress) -> Self {
        assert_eq!(rsdp_addr.0, ACPI_START);
        let rsdp = read(mem, rsdp_addr.0, 36);
        assert_eq!(&rsdp[..8], b"RSD PTR ");
        assert_eq!(checksum(&rsdp[..20]), 0, "RSDP v1 checksum");
        assert_eq!(rsdp[15], 2, "RSDP revision");
        assert_eq!(u32_at(&rsdp, 20), 36, "RSDP length");
        assert_eq!(checksum(&rsdp), 0, "RSDP extended checksum");

        let xsdt_addr = u64_at(&rsdp, 24);
        let xsdt = read_table(mem, xsdt_addr);
        assert_eq!(&xsdt[..4], b"XSDT");
        assert_eq!((xsdt.len() - 36) % 8, 0);
        let listed: Vec<_> = xsdt[36..]
            .chunks(8)
            .map(|entry| {
                let addr = u64::from_le_bytes(entry.try_into().unwrap());
                (addr, read_table(mem, addr))
            })
            .collect();

        let fadt = &listed.iter().find(|(_, t)| &t[..4] == b"FACP").unwrap().1;
        assert_eq!(u32_at(fadt, 40), 0, "32-bit DSDT pointer must be unused");
        let dsdt_addr = u64_at(fadt, 140);
        let dsdt = read_table(mem, dsdt_addr);
        assert_eq!(&dsdt[..4], b"DSDT");

        Walk {
            rsdp,
            xsdt: (xsdt_addr, xsdt),
            listed,
            dsdt: (dsdt_addr, dsdt),
        }
    }

    fn table(&self, signature: &[u8; 4]) -> &[u8] {
        let mut found = self.listed.iter().filter(|(_, t)| &t[..4] == signature);
        let table = &found.next().unwrap().1;
        assert!(found.next().is_none(), "two {signature:?} tables");
        table
    }

    /// Every table with its address, the RSDP included.
    fn all(&self) -> Vec<(u64, &[u8])> {
        let mut all = vec![(ACPI_START, self.rsdp.as_slice())];
        all.push((self.xsdt.0, &self.xsdt.1));
        all.push((self.dsdt.0, &self.dsdt.1));
        all.extend(self.listed.iter().map(|(a, t)| (*a, t.as_slice())));
        all
    }
}

fn build(num_cpus: u32) -> (Mem, Walk) {
    let mem = guest_memory();
    let rsdp = create_acpi_tables(&mem, &config(num_cpus)).unwrap();
    let walk = Walk::new(&mem, rsdp);
    (mem, walk)
}

/// The MADT's structures as (type, bytes).
fn madt_entries(madt: &[u8]) -> Vec<(u8, &[u8])> {
    let mut entries = Vec::new();
    let mut off = 44;
    while off < madt.len() {
        let len = madt[off + 1] as usize;
        assert!(len >= 2 && off + len <= madt.len(), "bad MADT entry length");
        entries.push((madt[off], &madt[off..off + len]));
        off += len;
    }
    entries
}

#[test]
fn tables_are_reachable_from_the_rsdp_and_do_not_overlap() {
    let (_mem, walk) = build(2);
    let signatures: Vec<_> = walk.listed.iter().map(|(_, t)| &t[..4]).collect();
    assert_eq!(signatures, [b"FACP", b"APIC", b"MCFG"]);

    let mut spans: Vec<_> = walk
        .all()
        .iter()
        .map(|(addr, t)| (*addr, *addr + t.len() as u64))
        .collect();
    spans.sort();
    for pair in spans.windows(2) {
        assert!(pair[0].1 <= pair[1].0, "tables overlap: {spans:x?}");
    }
    for (addr, _) in walk.all() {
        assert_eq!(addr % 16, 0, "table at {addr:#x} is not 16-byte aligned");
    }
}

#[test]
fn fadt_describes_the_hw_reduced_platform() {
    let (_mem, walk) = build(1);
    let fadt = walk.table(b"FACP");
    assert_eq!(fadt.len(), 276, "ACPI 6 FADT length");
    assert_eq!(fadt[8], 6, "FADT major revision");
    let flags = u32_at(fadt, 112);
    assert_ne!(flags & (1 << 20), 0, "HW_REDUCED_ACPI");
    assert_ne!(flags & (1 << 10), 0, "RESET_REG_SUP");
    assert_eq!(fadt[45], 0, "PM profile unspecified");

    let iapc = u16_at(fadt, 109);
    // Clear: Vireo's i8042 only resets; a guest that believed it present
    // probed it for seconds and failed (issue 10).
    assert_eq!(iapc & (1 << 1), 0, "8042 must not be announced");
    assert_ne!(iapc & (1 << 2), 0, "VGA not present");
    assert_eq!(iapc & (1 << 3), 0, "MSI must stay supported");

    // Generic Address Structures: system memory, 8 bits, byte access.
    let gas = |off: usize| {
        (
            fadt[off],
            fadt[off + 1],
            fadt[off + 3],
            u64_at(fadt, off + 4),
        )
    };
    let pm = crate::layout::ACPI_PM_MMIO_START;
    assert_eq!(gas(116), (0, 8, 1, pm + ACPI_RESET_OFFSET), "RESET_REG");
    assert_eq!(fadt[128], ACPI_RESET_VALUE, "RESET_VALUE");
    assert_eq!(
        gas(244),
        (0, 8, 1, pm + ACPI_SLEEP_CONTROL_OFFSET),
        "SLEEP_CONTROL_REG"
    );
    assert_eq!(
        gas(256),
        (0, 8, 1, pm + ACPI_SLEEP_STATUS_OFFSET),
        "SLEEP_STATUS_REG"
    );
    assert_eq!(&fadt[268..276], b"VIREOVMM");
}

#[test]
fn madt_lists_every_cpu_and_the_legacy_interrupt_wiring() {
    for n in [1, 2, 8, 64, 254] {
        let (_mem, walk) = build(n);
        let madt = walk.table(b"APIC");
        assert_eq!(
            u64::from(u32_at(madt, 36)),
            APIC_START,
            "local APIC address"
        );
        assert_eq!(u32_at(madt, 40) & 1, 1, "PCAT_COMPAT");
        let entries = madt_entries(madt);

        let lapics: Vec<_> = entries.iter().filter(|(t, _)| *t == 0).collect();
        assert_eq!(lapics.len(), n as usize);
        for (i, (_, e)) in lapics.iter().enumerate() {
            assert_eq!(e[2] as usize, i, "processor UID");
            assert_eq!(e[3] as usize, i, "APIC ID");
            assert_eq!(u32_at(e, 4) & 1, 1, "enabled");
        }
        assert!(entries.iter().all(|(t, _)| *t != 9), "no x2APIC below 255");

        let ioapics: Vec<_> = entries.iter().filter(|(t, _)| *t == 1).collect();
        assert_eq!(ioapics.len(), 1);
        let ioapic = ioapics[0].1;
        assert_eq!(ioapic[2], 0, "IOAPIC id");
        assert_eq!(u64::from(u32_at(ioapic, 4)), IOAPIC_START);
        assert_eq!(u32_at(ioapic, 8), 0, "GSI base");

        let isos: Vec<_> = entries.iter().filter(|(t, _)| *t == 2).collect();
        assert_eq!(isos.len(), 1);
        let iso = isos[0].1;
        assert_eq!(
            (iso[2], iso[3], u32_at(iso, 4)),
            (0, 0, 2),
            "ISA IRQ0 -> GSI 2"
        );
        assert_eq!(u16_at(iso, 8), 0b0101, "edge, active high");

        let nmis: Vec<_> = entries.iter().filter(|(t, _)| *t == 4).collect();
        assert_eq!(nmis.len(), 1);
        assert_eq!((nmis[0].1[2], nmis[0].1[5]), (0xff, 1), "all CPUs, LINT1");
    }
}

#[test]
fn madt_uses_x2apic_entries_from_apic_id_255() {
    let (_mem, walk) = build(300);
    let entries = madt_entries(walk.table(b"APIC"));
    let lapic_ids: Vec<u32> = entries
        .iter()
        .filter(|(t, _)| *t == 0)
        .map(|(_, e)| u32::from(e[3]))
        .collect();
    assert_eq!(lapic_ids, (0..255).collect::<Vec<_>>());
    let x2apics: Vec<_> = entries.iter().filter(|(t, _)| *t == 9).collect();
    assert_eq!(x2apics.len(), 45);
    for (i, (_, e)) in x2apics.iter().enumerate() {
        let id = 255 + u32::try_from(i).unwrap();
        assert_eq!(u32_at(e, 4), id, "x2APIC ID");
        assert_eq!(u32_at(e, 8) & 1, 1, "enabled");
        assert_eq!(u32_at(e, 12), id, "processor UID");
    }
    let x2nmi: Vec<_> = entries.iter().filter(|(t, _)| *t == 0xa).collect();
    assert_eq!(x2nmi.len(), 1);
    assert_eq!((u32_at(x2nmi[0].1, 4), x2nmi[0].1[8]), (u32::MAX, 1));
}

#[test]
fn dsdt_has_s5_and_com1() {
    let (_mem, walk) = build(1);
    let aml = &walk.dsdt.1[36..];
    let find = |needle: &[u8]| aml.windows(needle.len()).any(|w| w == needle);
    // NameOp, '\', "_S5_", PackageOp, PkgLength 4, 2 elements, BytePrefix 5, Zero.
    assert!(find(&[
        0x08,
        b'\\',
        b'_',
        b'S',
        b'5',
        b'_',
        0x12,
        0x05,
        0x02,
        0x0a,
        ACPI_S5_SLEEP_TYPE,
        0x00
    ]));
    // EISAID("PNP0501") encodes to 0x0105d041.
    assert!(find(&[
        b'_', b'H', b'I', b'D', 0x0c, 0x41, 0xd0, 0x05, 0x01
    ]));
    // IO (Decode16, 0x3f8, 0x3f8, 0, 8) and Interrupt (...) { 4 }.
    let [lo, hi] = COM1_PORT.to_le_bytes();
    assert!(find(&[0x47, 0x01, lo, hi, lo, hi, 0x00, 0x08]));
    let irq = COM1_IRQ.to_le_bytes();
    assert!(find(&[
        0x89, 0x06, 0x00, 0x03, 0x01, irq[0], irq[1], irq[2], irq[3]
    ]));
}

#[test]
fn dsdt_has_the_cmos_rtc_without_an_interrupt() {
    let (_mem, walk) = build(1);
    let aml = &walk.dsdt.1[36..];
    let find = |needle: &[u8]| aml.windows(needle.len()).any(|w| w == needle);
    // EISAID("PNP0B00") encodes to 0x000bd041: without it Linux made a
    // platform RTC on IRQ 8 and rtc_cmos failed with -EINVAL.
    assert!(find(&[
        b'_', b'H', b'I', b'D', 0x0c, 0x41, 0xd0, 0x0b, 0x00
    ]));
    // IO (Decode16, 0x70, 0x70, 0, 2) directly followed by the end tag:
    // no IRQ, since the CMOS device raises none.
    assert!(find(&[
        0x47, 0x01, 0x70, 0x00, 0x70, 0x00, 0x00, 0x02, 0x79
    ]));
}

#[test]
fn extra_tables_are_listed_in_the_xsdt() {
    let oem = acpi_tables::sdt::Sdt::new(*b"OEM1", 36, 1, OEM_ID, OEM_TABLE_ID, OEM_REVISION);
    let mut config = config(4);
    config.extra_tables.push(AcpiTable::new(&oem).unwrap());

    let mem = guest_memory();
    let walk = Walk::new(&mem, create_acpi_tables(&mem, &config).unwrap());
    let signatures: Vec<_> = walk.listed.iter().map(|(_, t)| &t[..4]).collect();
    assert_eq!(signatures, [b"FACP", b"APIC", b"MCFG", b"OEM1"]);
    // The generated MCFG points at the host bridge's ECAM.
    assert_eq!(u64_at(walk.table(b"MCFG"), 44), 0xe000_0000);
}

#[test]
fn malformed_extra_tables_are_refused() {
    let good = aml_bytes(&acpi_tables::sdt::Sdt::new(
        *b"OEM1",
        36,
        1,
        OEM_ID,
        OEM_TABLE_ID,
        1,
    ));
    assert!(AcpiTable::from_bytes(good.clone()).is_ok());

    let mut bad_sum = good.clone();
    bad_sum[10] ^= 1;
    assert!(matches!(
        AcpiTable::from_bytes(bad_sum),
        Err(AcpiError::InvalidTable { .. })
    ));
    assert!(matches!(
        AcpiTable::from_bytes(good[..good.len() - 1].to_vec()),
        Err(AcpiError::InvalidTable { .. })
    ));
    assert!(matches!(
        AcpiTable::from_bytes(b"MCFG".to_vec()),
        Err(AcpiError::InvalidTable { .. })
    ));
    let madt = madt::build(&[0], OEM_ID, OEM_TABLE_ID, 1);
    assert!(matches!(
        AcpiTable::from_bytes(madt),
        Err(AcpiError::DuplicateTable(s)) if s == "APIC"
    ));
}

#[test]
fn no_cpus_is_an_error() {
    let mem = guest_memory();
    assert!(matches!(
        create_acpi_tables(&mem, &config(0)),
        Err(AcpiError::NoCpus)
    ));
}

#[test]
fn tables_that_do_not_fit_write_nothing() {
    let mem = guest_memory();
    // 16 bytes per x2APIC entry: 10,000 vCPUs need more than 128 KiB.
    let err = create_acpi_tables(&mem, &config(10_000)).unwrap_err();
    assert!(
        matches!(&err, AcpiError::OutOfSpace { signature, .. } if signature == "APIC"),
        "{err}"
    );
    // Everything around and inside the region is still zero.
    let all = read(
        &mem,
        ACPI_START - 0x1000,
        usize::try_from(ACPI_END - ACPI_START).unwrap() + 0x2000,
    );
    assert!(all.iter().all(|b| *b == 0));
}

#[test]
fn memory_without_the_acpi_region_is_an_error() {
    // Memory that ends in the middle of the ACPI region.
    let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 0xe0100)]).unwrap();
    let err = create_acpi_tables(&mem, &config(64)).unwrap_err();
    assert!(
        matches!(err, AcpiError::RegionNotInGuestMemory { .. }),
        "{err}"
    );
    assert!(read(&mem, ACPI_START, 0x100).iter().all(|b| *b == 0));
}

/// Runs `iasl -d` on `file`, returning its disassembly, or `None` when
/// iasl is not installed.
fn iasl_disassemble(file: &Path) -> Option<String> {
    let output = match Command::new("iasl").arg("-d").arg(file).output() {
        Ok(output) => output,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
        Err(e) => panic!("running iasl: {e}"),
    };
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "iasl -d {} failed:\n{stdout}\n{stderr}",
        file.display()
    );
    // iasl reports problems it survives as "Error"/"Warning" lines (in the
    // disassembly too, as comments).
    let dsl = std::fs::read_to_string(file.with_extension("dsl")).unwrap();
    for text in [&*stdout, &*stderr, &*dsl] {
        for line in text.lines() {
            let lower = line.to_lowercase();
            assert!(
                !["error", "warning", "invalid", "incorrect"]
                    .iter()
                    .any(|word| lower.contains(word)),
                "iasl complains about {}: {line}\n{dsl}",
                file.display()
            );
        }
    }
    Some(dsl)
}

fn scratch_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("vireo-acpi-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn iasl_disassembles_every_table() {
    for n in [1, 8, 300] {
        let (_mem, walk) = build(n);
        let dir = scratch_dir(&format!("{n}cpus"));
        let mut dsls = Vec::new();
        // Skip the RSDP: iasl only loads tables with a standard header.
        for (i, (_, table)) in walk.all().into_iter().enumerate().skip(1) {
            let name = String::from_utf8_lossy(&table[..4]).replace(' ', "_");
            let file = dir.join(format!("{i}-{name}.dat"));
            std::fs::write(&file, table).unwrap();
            let Some(dsl) = iasl_disassemble(&file) else {
                eprintln!("SKIP iasl_disassembles_every_table: iasl not found (apt-get install acpica-tools)");
                let _ = std::fs::remove_dir_all(&dir);
                return;
            };
            dsls.push((name, dsl));
        }
        let dsdt = &dsls.iter().find(|(name, _)| name == "DSDT").unwrap().1;
        assert!(dsdt.contains("_S5_"), "{dsdt}");
        assert!(dsdt.contains("PNP0501"), "{dsdt}");
        assert!(dsdt.contains("0x03F8"), "{dsdt}");
        assert!(dsdt.contains("PNP0B00"), "{dsdt}");
        assert!(dsdt.contains("PNP0A08"), "{dsdt}");
        assert!(dsdt.contains("0xDFFFFFFF"), "32-bit window end: {dsdt}");
        assert!(
            dsdt.contains("0x0000004FFFFFFFFF"),
            "64-bit window end: {dsdt}"
        );
        for needle in [
            "Device (GED)",
            "\"ACPI0013\"",
            "Method (_EVT, 1, Serialized)",
            "OperationRegion (EREG, SystemMemory, 0xFEB03000, 0x04)",
            "Notify (\\_SB.PWRB, 0x80)",
            "\\_SB.PCI0.PCNT ()",
            "Device (PWRB)",
            "PNP0C0C",
            "Method (_OSC, 4, NotSerialized)",
            "33db4d5b-1ff7-401c-9657-7441c03dd766",
            "OperationRegion (PCST, SystemMemory, 0xFEB04000, 0x0C)",
            "Method (PCNT, 0, Serialized)",
            "Notify (S03, One) // Device Check",
            "Notify (S1F, 0x03) // Eject Request",
            "Device (S01)",
            "Device (S1F)",
            "Name (_ADR, 0x001F0000)",
            "\\_SB.PCI0.B0EJ = 0x80000000",
        ] {
            assert!(dsdt.contains(needle), "no {needle:?} in:\n{dsdt}");
        }
        assert!(
            !dsdt.contains("Device (S00)"),
            "slot 0 is the host bridge's"
        );
        assert_eq!(dsdt.matches("Method (_EJ0, 1").count(), 31, "{dsdt}");
        // The GED's interrupt: edge triggered, active high, GSI 5.
        let ged = &dsdt[dsdt.find("Device (GED)").unwrap()..];
        let irq = &ged[ged.find("Interrupt (").unwrap()..];
        assert!(irq.starts_with("Interrupt (ResourceConsumer, Edge, ActiveHigh, Exclusive"));
        assert!(irq.contains("0x00000005,"), "{irq}");
        let mcfg = &dsls.iter().find(|(name, _)| name == "MCFG").unwrap().1;
        assert!(mcfg.contains("00000000E0000000"), "{mcfg}");
        let madt = &dsls.iter().find(|(name, _)| name == "APIC").unwrap().1;
        assert_eq!(
            madt.matches("Processor Local APIC").count()
                + madt.matches("Processor Local x2APIC").count(),
            n as usize,
            "{madt}"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}

/// Whether the DSDT's AML contains `needle`.
fn dsdt_has(walk: &Walk, needle: &[u8]) -> bool {
    walk.dsdt.1[36..].windows(needle.len()).any(|w| w == needle)
}

#[test]
fn the_ged_and_hot_plug_are_optional() {
    let mem = guest_memory();
    let mut config = config(1);
    config.ged = None;
    let walk = Walk::new(&mem, create_acpi_tables(&mem, &config).unwrap());
    for absent in [
        &b"GED_"[..],
        b"PWRB",
        b"_EVT",
        b"PCNT",
        b"B0EJ",
        b"_OSC",
        b"S01_",
    ] {
        assert!(
            !dsdt_has(&walk, absent),
            "{}",
            String::from_utf8_lossy(absent)
        );
    }

    // A GED without hot-plug: the power button, but no slots, and _EVT
    // does not call a PCNT that is not there.
    config.ged = Some(GedConfig::standard(false));
    let walk = Walk::new(&mem, create_acpi_tables(&mem, &config).unwrap());
    assert!(dsdt_has(&walk, b"ACPI0013"));
    assert!(dsdt_has(&walk, b"PWRB"));
    for absent in [&b"PCNT"[..], b"B0EJ", b"S01_"] {
        assert!(
            !dsdt_has(&walk, absent),
            "{}",
            String::from_utf8_lossy(absent)
        );
    }
}

#[test]
fn hot_plug_without_pci_is_an_error() {
    let mem = guest_memory();
    let mut config = config(1);
    config.pci = None;
    assert!(matches!(
        create_acpi_tables(&mem, &config),
        Err(AcpiError::HotplugWithoutPci)
    ));
    config.ged = Some(GedConfig::standard(false));
    let walk = Walk::new(&mem, create_acpi_tables(&mem, &config).unwrap());
    assert!(dsdt_has(&walk, b"ACPI0013"));
    assert!(!dsdt_has(&walk, b"PCI0"));
}

/// A table of test methods for acpiexec: set the registers the way the
/// VMM would (acpiexec backs SystemMemory regions with plain memory, so
/// nothing clears on read), run the GED's _EVT, eject a slot, and ask
/// _OSC for everything, with the host bridge's UUID and with another.
const EXEC_TEST_ASL: &str = r#"
DefinitionBlock ("", "SSDT", 2, "VIREO ", "EXECTEST", 1)
{
    External (\_SB.GED._EVT, MethodObj)
    External (\_SB.GED.ESTA, FieldUnitObj)
    External (\_SB.PCI0.PCIU, FieldUnitObj)
    External (\_SB.PCI0.PCID, FieldUnitObj)
    External (\_SB.PCI0._OSC, MethodObj)
    Method (EVT1, 0)
    {
        \_SB.GED.ESTA = 3
        \_SB.PCI0.PCIU = 0x80000008
        \_SB.PCI0.PCID = 0x20
        \_SB.GED._EVT (5)
    }
    Method (OSC1, 0)
    {
        Local0 = Buffer (12) { 0, 0, 0, 0, 0x1f, 0, 0, 0, 0xff, 0, 0, 0 }
        Return (\_SB.PCI0._OSC (ToUUID ("33DB4D5B-1FF7-401C-9657-7441C03DD766"), 1, 3, Local0))
    }
    Method (OSC2, 0)
    {
        Local0 = Buffer (12) { 0, 0, 0, 0, 0x1f, 0, 0, 0, 0xff, 0, 0, 0 }
        Return (\_SB.PCI0._OSC (ToUUID ("00000000-0000-0000-0000-000000000000"), 1, 3, Local0))
    }
}
"#;

/// Runs the DSDT's methods in ACPICA's own interpreter (acpiexec), when
/// acpica-tools is installed: the AML must not only disassemble but do
/// what the hot-plug and power-button protocol says.
#[test]
fn acpiexec_runs_the_event_methods() {
    let (_mem, walk) = build(2);
    let dir = scratch_dir("acpiexec");
    let dsdt = dir.join("dsdt.aml");
    std::fs::write(&dsdt, &walk.dsdt.1).unwrap();
    let asl = dir.join("exectest.asl");
    std::fs::write(&asl, EXEC_TEST_ASL).unwrap();
    let compiled = match Command::new("iasl").arg(&asl).output() {
        Ok(output) => output,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            eprintln!("SKIP acpiexec_runs_the_event_methods: iasl not found (apt-get install acpica-tools)");
            return;
        }
        Err(e) => panic!("running iasl: {e}"),
    };
    assert!(
        compiled.status.success(),
        "{}",
        String::from_utf8_lossy(&compiled.stdout)
    );
    let batch = "execute EVT1; execute \\_SB.PCI0.S05._EJ0 1; execute \\_SB.PCI0.B0EJ; \
                 execute \\_SB.PCI0.S03._ADR; execute \\_SB.PCI0.S03._SUN; \
                 execute OSC1; execute OSC2";
    let output = match Command::new("acpiexec")
        .arg("-b")
        .arg(batch)
        .arg(&dsdt)
        .arg(dir.join("exectest.aml"))
        .output()
    {
        Ok(output) => output,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            eprintln!("SKIP acpiexec_runs_the_event_methods: acpiexec not found (apt-get install acpica-tools)");
            return;
        }
        Err(e) => panic!("running acpiexec: {e}"),
    };
    let out = String::from_utf8_lossy(&output.stdout).into_owned()
        + &String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{out}");
    for bad in ["AE_", "Error", "Warning"] {
        assert!(!out.contains(bad), "acpiexec reports {bad}:\n{out}");
    }

    // _EVT with bits 0 and 1: the power button, and PCNT's device checks
    // for slots 3 and 31 and eject request for slot 5. acpiexec delivers
    // notifications from a queue, in no fixed order: compare them sorted.
    let mut notifies: Vec<(&str, &str)> = out
        .lines()
        .filter_map(|l| {
            let name = l.split("Notify on [").nth(1)?.split(']').next()?;
            let value = l.split("Value ").nth(1)?.split(' ').next()?;
            Some((name, value))
        })
        .collect();
    notifies.sort();
    assert_eq!(
        notifies,
        [
            ("PWRB", "0x80"),
            ("S03_", "0x01"),
            ("S05_", "0x03"),
            ("S1F_", "0x01")
        ],
        "{out}"
    );
    // Results in order: B0EJ after S05._EJ0, S03's _ADR and _SUN, then
    // _OSC's answers.
    let results: Vec<&str> = out
        .lines()
        .filter(|l| l.contains("[Integer] =") || l.contains("[Buffer]"))
        .map(str::trim)
        .collect();
    assert_eq!(results.len(), 5, "{out}");
    assert!(results[0].ends_with("= 0000000000000020"), "B0EJ: {out}");
    assert!(results[1].ends_with("= 0000000000030000"), "_ADR: {out}");
    assert!(results[2].ends_with("= 0000000000000003"), "_SUN: {out}");
    // Asked for 0xff: granted 0xfc (no native or SHPC hot-plug), with
    // "capabilities masked" set in the status dword.
    assert!(
        results[3].contains("10 00 00 00 1F 00 00 00 FC 00 00 00"),
        "_OSC: {out}"
    );
    // Another UUID: "unrecognized UUID", nothing changed.
    assert!(
        results[4].contains("04 00 00 00 1F 00 00 00 FF 00 00 00"),
        "_OSC: {out}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
