//! Every domain fixture parses, and writing it back and parsing again
//! gives the same model; each refused fixture fails with one line.

use std::path::{Path, PathBuf};

use virtxml::cpu::CpuModel;
use virtxml::devices::chardev::{CharBackend, CharTarget};
use virtxml::devices::disk::{DiskFormat, DiskSource};
use virtxml::devices::interface::InterfaceKind;
use virtxml::Domain;

fn fixtures(prefix: &str) -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let mut out: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            name.starts_with(prefix) && name.ends_with(".xml")
        })
        .collect();
    out.sort();
    out
}

fn read(name: &str) -> String {
    std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures")
            .join(name),
    )
    .unwrap()
}

#[test]
fn every_domain_fixture_round_trips() {
    let all = fixtures("domain-");
    assert!(all.len() >= 3, "{all:?}");
    for path in all {
        let xml = std::fs::read_to_string(&path).unwrap();
        let first = Domain::parse(&xml)
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
            .domain;
        let written = first.to_xml();
        let second = Domain::parse(&written)
            .unwrap_or_else(|e| panic!("{}: rewritten: {e}\n{written}", path.display()));
        assert_eq!(first, second.domain, "{}:\n{written}", path.display());
        // Writing is a fixed point after one pass.
        assert_eq!(written, second.domain.to_xml(), "{}", path.display());
    }
}

#[test]
fn every_refused_fixture_fails_with_one_line() {
    let all = fixtures("refused-");
    assert!(!all.is_empty());
    for path in all {
        let xml = std::fs::read_to_string(&path).unwrap();
        let e = Domain::parse(&xml).unwrap_err().to_string();
        assert!(!e.contains('\n'), "{}: {e}", path.display());
    }
}

#[test]
fn virt_install_output_parses_with_only_warnings() {
    let parsed = Domain::parse(&read("domain-virt-install.xml")).unwrap();
    let d = &parsed.domain;
    assert_eq!(d.name, "deb1");
    assert_eq!(d.uuid.to_string(), "6cb1ce31-3a48-4bf2-ae46-f04010761b37");
    assert_eq!(d.memory_kib, 1 << 20);
    assert_eq!(d.vcpu.count, 2);
    assert_eq!(d.os.kernel, "/tmp/xmlvi/vmlinuz");
    assert_eq!(d.os.initrd.as_deref(), Some("/tmp/xmlvi/initrd.img"));
    assert_eq!(
        d.os.cmdline.as_deref(),
        Some("console=ttyS0 root=/dev/vda1")
    );
    assert_eq!(
        d.cpu.as_ref().unwrap().model,
        CpuModel::Custom(Some("Skylake-Client-IBRS".into()))
    );
    assert_eq!(d.devices.disks.len(), 1);
    assert_eq!(d.devices.disks[0].format, DiskFormat::Qcow2);
    assert_eq!(
        d.devices.disks[0].source,
        DiskSource::File("/tmp/xmlvi/deb1.qcow2".into())
    );
    assert_eq!(
        d.devices.interfaces[0].kind,
        InterfaceKind::Bridge("br0".into())
    );
    assert_eq!(d.devices.interfaces[0].mac.to_string(), "52:54:00:e5:7d:26");
    assert_eq!(d.devices.consoles[0].backend, CharBackend::Pty);
    assert_eq!(d.devices.consoles[0].target, CharTarget::Serial);
    assert_eq!(d.devices.rngs.len(), 1);
    assert!(d.devices.memballoon.as_ref().unwrap().virtio);
    // metadata, machine, apic, match=, clock, pm, emulator, 16 controllers
    // (one USB, the PCIe root, 14 root ports), channel: one warning each.
    assert_eq!(parsed.warnings.len(), 24, "{:#?}", parsed.warnings);
    for w in &parsed.warnings {
        let line = w.to_string();
        assert!(
            line.starts_with("/domain") && !line.contains('\n'),
            "{line}"
        );
    }
}

#[test]
fn virt_install_output_without_a_format_is_refused_saying_why() {
    let e = Domain::parse(&read("refused-virt-install-no-format.xml")).unwrap_err();
    assert_eq!(
        e.to_string(),
        "/domain/devices/disk[1] (line 37, column 5): the disk has no <driver type=...>: Vireo never probes an image's format; state it, as <driver name='qemu' type='raw'/> or type='qcow2'"
    );
}

#[test]
fn full_fixture_has_every_modelled_element() {
    let d = Domain::parse(&read("domain-full.xml")).unwrap().domain;
    assert_eq!(d.title.as_deref(), Some("Web server & cache"));
    assert!(d.description.as_deref().unwrap().contains("<markup>"));
    assert_eq!(d.memory_kib, 2 << 20);
    assert_eq!(d.current_memory_kib, Some(1536 << 10));
    assert_eq!(d.devices.disks.len(), 2);
    assert_eq!(d.devices.interfaces.len(), 2);
    assert_eq!(d.devices.consoles.len(), 2);
    assert_eq!(d.cpu.unwrap().topology.unwrap().vcpus(), Some(4));
    let minimal = Domain::parse(&read("domain-minimal.xml")).unwrap();
    assert!(minimal.warnings.is_empty(), "{:?}", minimal.warnings);
}
