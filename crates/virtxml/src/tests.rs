//! Whole-document tests: the rule as the user meets it, and round trips.

use crate::devices::interface::InterfaceKind;
use crate::scalars::LifecycleAction;
use crate::{Domain, Error};

/// A domain with `extra` inside `<devices>` and `top` at the top level.
fn doc(top: &str, devices: &str) -> String {
    format!(
        "<domain type='kvm'>\n  <name>d</name>\n  <memory>65536</memory>\n  <os>\n    <type>hvm</type>\n    <kernel>/k</kernel>\n  </os>\n{top}  <devices>\n{devices}  </devices>\n</domain>\n"
    )
}

fn refusal(xml: &str) -> String {
    match Domain::parse(xml) {
        Ok(p) => panic!("accepted: {:?}", p.domain),
        Err(e) => e.to_string(),
    }
}

fn round_trip(xml: &str) -> Domain {
    let first = Domain::parse(xml).unwrap().domain;
    let written = first.to_xml();
    let second = Domain::parse(&written)
        .unwrap_or_else(|e| panic!("{e}\n{written}"))
        .domain;
    assert_eq!(first, second, "{written}");
    first
}

#[test]
fn unsupported_device_is_refused_with_path_and_position() {
    let xml = doc("", "    <disk type='file'><driver type='raw'/><source file='/a'/><target dev='vda'/></disk>\n    <hostdev mode='subsystem' type='pci'/>\n");
    assert_eq!(
        refusal(&xml),
        "/domain/devices/hostdev[1] (line 10, column 5): <hostdev> is not supported: Vireo has no device assignment"
    );
    let xml = doc("", "    <graphics type='vnc'/>\n");
    assert!(refusal(&xml).starts_with(
        "/domain/devices/graphics[1] (line 9, column 5): <graphics> is not supported"
    ));
    let xml = doc("", "    <frobnicator/>\n");
    assert_eq!(
        refusal(&xml),
        "/domain/devices/frobnicator[1] (line 9, column 5): <frobnicator> is not supported"
    );
    let xml = doc("  <sysinfo type='smbios'/>\n", "");
    assert!(
        refusal(&xml).starts_with("/domain/sysinfo (line 8, column 3): <sysinfo> is not supported")
    );
}

#[test]
fn second_disk_path_is_numbered() {
    let disk = |dev: &str, bus: &str| {
        format!("    <disk><driver type='raw'/><source file='/{dev}'/><target dev='{dev}' bus='{bus}'/></disk>\n")
    };
    let xml = doc("", &(disk("vda", "virtio") + &disk("sda", "scsi")));
    let e = refusal(&xml);
    assert!(
        e.starts_with("/domain/devices/disk[2]/target (line 10, column 52): disk bus scsi"),
        "{e}"
    );
    let xml = doc("", &(disk("vda", "virtio") + &disk("vda", "virtio")));
    assert!(refusal(&xml).contains("a second disk has target 'vda'"));
}

#[test]
fn hints_are_warned_once_each_and_kept() {
    let xml = doc(
        "  <metadata><x:y xmlns:x='urn:x'>v</x:y></metadata>\n  <pm><suspend-to-mem enabled='no'/></pm>\n  <clock offset='utc'/>\n",
        "    <emulator>/usr/bin/qemu-system-x86_64</emulator>\n    <controller type='pci' model='pcie-root-port'/>\n    <memballoon model='none'/>\n    <input type='mouse' bus='ps2'/>\n    <channel type='unix'><target type='virtio' name='org.qemu.guest_agent.0'/></channel>\n    <video><model type='none'/></video>\n",
    );
    let parsed = Domain::parse(&xml).unwrap();
    let paths: Vec<&str> = parsed
        .warnings
        .iter()
        .map(|w| w.location.path.as_str())
        .collect();
    assert_eq!(
        paths,
        [
            "/domain/metadata",
            "/domain/pm",
            "/domain/clock",
            "/domain/devices/emulator[1]",
            "/domain/devices/controller[1]",
            "/domain/devices/input[1]",
            "/domain/devices/channel[1]",
            "/domain/devices/video[1]",
        ]
    );
    assert_eq!(
        parsed.warnings[0].to_string(),
        "/domain/metadata (line 8, column 3): <metadata> is kept but not acted on: it belongs to the applications that wrote it"
    );
    let d = round_trip(&xml);
    assert_eq!(d.kept.len(), 3);
    assert_eq!(d.devices.kept.len(), 4);
    assert!(!d.devices.memballoon.as_ref().unwrap().virtio);
    assert!(d
        .to_xml()
        .contains("<metadata><x:y xmlns:x='urn:x'>v</x:y></metadata>"));
}

#[test]
fn refused_top_level_hints_that_a_guest_would_notice() {
    let e = refusal(&doc("  <clock offset='localtime'/>\n", ""));
    assert!(
        e.contains("clock offset 'localtime' is not supported"),
        "{e}"
    );
    let e = refusal(&doc(
        "  <clock><timer name='hpet' present='yes'/></clock>\n",
        "",
    ));
    assert!(
        e.starts_with("/domain/clock/timer (line 8, column 10)"),
        "{e}"
    );
    let e = refusal(&doc("", "    <video><model type='qxl'/></video>\n"));
    assert!(e.contains("<video> is not supported"), "{e}");
    let e = refusal(&doc("", "    <input type='tablet' bus='usb'/>\n"));
    assert!(e.contains("input type 'tablet'"), "{e}");
}

#[test]
fn name_uuid_and_defaults() {
    let xml = doc("", "");
    let a = Domain::parse(&xml).unwrap().domain;
    let b = Domain::parse(&xml).unwrap().domain;
    assert_ne!(a.uuid, b.uuid, "a missing UUID is generated");
    assert_eq!(a.vcpu.count, 1);
    assert_eq!(a.on_reboot, LifecycleAction::Restart);
    assert_eq!(a.on_poweroff, LifecycleAction::Destroy);
    let undashed = xml.replace(
        "<name>d</name>",
        "<name>d</name><uuid>4DEA22B31D52D8F32516782E98AB3FA0</uuid>",
    );
    let d = round_trip(&undashed);
    assert_eq!(d.uuid.to_string(), "4dea22b3-1d52-d8f3-2516-782e98ab3fa0");
    for (name, why) in [
        ("<name>a/b</name>", "contains '/'"),
        ("<name></name>", "the name is empty"),
        ("<name>a&#10;b</name>", "control character"),
        ("<name>a&#1;b</name>", "control character"),
    ] {
        let e = Domain::parse(&xml.replace("<name>d</name>", name))
            .unwrap_err()
            .to_string();
        assert!(e.contains(why), "{name}: {e}");
    }
    let e = refusal(&xml.replace("<name>d</name>", "<name>d</name><name>e</name>"));
    assert!(e.contains("<name> appears more than once"), "{e}");
    let e = refusal(&xml.replace("<name>d</name>", ""));
    assert!(
        e.starts_with("/domain (line 1, column 1): the domain has no <name>"),
        "{e}"
    );
    let e = refusal(&xml.replace("type='kvm'", "type='qemu'"));
    assert!(e.contains("domain type 'qemu'"), "{e}");
}

#[test]
fn memory_and_topology_cross_checks() {
    let xml = doc("  <currentMemory unit='GiB'>1</currentMemory>\n", "");
    let parsed = Domain::parse(&xml).unwrap();
    assert_eq!(parsed.domain.current_memory_kib, Some(65536));
    assert!(parsed.warnings[0].message.contains("lowered"));
    let xml = doc("  <vcpu>2</vcpu>\n  <cpu mode='host-model'><topology sockets='2' cores='2' threads='1'/></cpu>\n", "");
    let e = refusal(&xml);
    assert!(
        e.starts_with("/domain/cpu/topology (line 9, column 26)"),
        "{e}"
    );
    round_trip(&xml.replace("<vcpu>2</vcpu>", "<vcpu>4</vcpu>"));
}

#[test]
fn malformed_documents_give_line_and_column() {
    let e = Domain::parse("<domain type='kvm'>\n  <name>x</nam>\n</domain>").unwrap_err();
    assert!(matches!(e, Error::Malformed { line: 2, .. }), "{e}");
    let e = Domain::parse("<domain type='kvm'>\n  <name a='1>x</name>").unwrap_err();
    assert!(matches!(e, Error::Malformed { .. }), "{e}");
    let e = refusal("<network><name>n</name></network>");
    assert!(e.contains("not <domain>"), "{e}");
}

#[test]
fn network_interfaces_are_parsed_and_a_portgroup_warned_about() {
    let xml = doc("", "    <interface type='network'><source network='default'/><model type='virtio'/></interface>\n");
    let parsed = Domain::parse(&xml).unwrap();
    assert_eq!(
        parsed.domain.devices.interfaces[0].kind,
        InterfaceKind::Network {
            network: "default".into(),
            bridge: None
        }
    );
    assert!(parsed.warnings.is_empty());
    round_trip(&xml);
    // libvirt's live XML names the bridge; it reads back.
    let live = doc("", "    <interface type='network'><source network='default' portgroup='web' bridge='virbr0'/><model type='virtio'/></interface>\n");
    let parsed = Domain::parse(&live).unwrap();
    let iface = &parsed.domain.devices.interfaces[0];
    assert_eq!(iface.host_bridge(), Some("virbr0"));
    assert_eq!(parsed.warnings.len(), 1, "{:?}", parsed.warnings);
}

#[test]
fn serial_console_must_agree_with_serial() {
    let ok = doc(
        "",
        "    <serial type='pty'/>\n    <console type='pty'><target type='serial'/></console>\n",
    );
    round_trip(&ok);
    let bad = doc(
        "",
        "    <serial type='null'/>\n    <console type='pty'><target type='serial'/></console>\n",
    );
    assert!(refusal(&bad).contains("differs"));
    let bad = doc("", "    <console type='pty'/>\n    <serial type='null'/>\n");
    assert!(refusal(&bad).contains("differs"));
    let bad = doc("", "    <serial type='pty'/>\n    <serial type='pty'/>\n");
    assert!(refusal(&bad).contains("second serial"));
}

#[test]
fn unknown_attributes_are_warned_and_dropped() {
    let xml = doc("", "    <disk type='file'><driver type='raw' queues='4'/><source file='/a'/><target dev='vda'/></disk>\n");
    let parsed = Domain::parse(&xml).unwrap();
    assert_eq!(parsed.warnings.len(), 1);
    assert_eq!(
        parsed.warnings[0].to_string(),
        "/domain/devices/disk[1]/driver (line 9, column 23): attribute queues='4' is ignored"
    );
    assert!(!parsed.domain.to_xml().contains("queues"));
}

#[test]
fn text_elements_hold_no_elements() {
    let e = refusal(&doc("", "").replace("<name>d</name>", "<name>d<b/></name>"));
    assert_eq!(
        e,
        "/domain/name/b (line 2, column 10): <name> holds text only, not <b>"
    );
    let e = refusal(&doc("", "").replace("<kernel>/k</kernel>", "<kernel>/k<x/></kernel>"));
    assert!(e.starts_with("/domain/os/kernel/x"), "{e}");
}

#[test]
fn byte_order_mark_and_declaration_are_accepted() {
    let xml = format!(
        "\u{feff}<?xml version='1.0' encoding='UTF-8'?>\n{}",
        doc("", "")
    );
    Domain::parse(&xml).unwrap();
}

#[test]
fn two_interfaces_cannot_share_a_tap() {
    let nic = "    <interface type='ethernet'><target dev='tap0'/></interface>\n";
    let e = refusal(&doc("", &format!("{nic}{nic}")));
    assert!(e.starts_with("/domain/devices/interface[2] (line 10, column 5): a second interface has target 'tap0'"), "{e}");
}

#[test]
fn elements_inside_attribute_only_elements_are_refused() {
    let xml = doc("", "    <disk><driver type='raw'/><source file='/a'><seclabel model='dac'/></source><target dev='vda'/></disk>\n");
    assert_eq!(
        refusal(&xml),
        "/domain/devices/disk[1]/source/seclabel (line 9, column 49): <seclabel> inside <source> is not supported"
    );
    let xml = doc(
        "",
        "    <interface type='bridge'><source bridge='br0'><x/></source></interface>\n",
    );
    assert!(refusal(&xml).contains("<x> inside <source>"));
}

#[test]
fn messages_stay_one_line() {
    let xml = doc("", "").replace(
        "<memory>65536</memory>",
        "<memory unit='k&#10;b'>1</memory>",
    );
    let e = refusal(&xml);
    assert!(
        !e.contains('\n') && e.contains("unknown unit 'k\\nb'"),
        "{e}"
    );
    let xml = doc("", "    <disk type='file' x='a&#10;b'><driver type='raw'/><source file='/a'/><target dev='vda'/></disk>\n");
    let w = Domain::parse(&xml).unwrap().warnings[0].to_string();
    assert!(!w.contains('\n'), "{w}");
}

#[test]
fn placement_round_trips_and_checks_cells() {
    let top = "  <memoryBacking><hugepages><page size='2048' unit='KiB'/></hugepages><allocation mode='immediate' threads='2'/></memoryBacking>\n\
  <vcpu cpuset='0-1'>4</vcpu>\n\
  <cputune><vcpupin vcpu='0' cpuset='1'/><emulatorpin cpuset='0'/></cputune>\n\
  <numatune><memory mode='strict' nodeset='0'/><memnode cellid='1' mode='interleave' nodeset='0'/></numatune>\n\
  <cpu><topology sockets='2' cores='2' threads='1'/><numa><cell id='0' cpus='0-1' memory='32768'/><cell id='1' cpus='2-3' memory='32768'><distances><sibling id='0' value='15'/></distances></cell></numa></cpu>\n";
    let xml = doc(
        top,
        "    <memballoon model='virtio' freePageReporting='on'><stats period='5'/></memballoon>\n",
    );
    let d = round_trip(&xml);
    assert_eq!(d.vcpu.cpuset.as_ref().unwrap().to_string(), "0-1");
    assert_eq!(d.cpu.as_ref().unwrap().distance(0, 1), 15);
    assert_eq!(
        d.numatune
            .as_ref()
            .unwrap()
            .for_cell(0)
            .unwrap()
            .nodeset
            .to_string(),
        "0"
    );
    assert_eq!(d.devices.memballoon.as_ref().unwrap().stats_period, Some(5));

    // The cells' sum replaces <memory>, with a warning, as in libvirt.
    let more = top.replace("memory='32768'/><cell", "memory='65536'/><cell");
    let p = Domain::parse(&doc(&more, "")).unwrap();
    assert_eq!(p.domain.memory_kib, 98_304);
    assert!(p.warnings.iter().any(|w| w.message.contains("cells' sum")));

    let e = refusal(&doc(
        &top.replace("vcpu='0' cpuset='1'", "vcpu='4' cpuset='1'"),
        "",
    ));
    assert!(e.contains("vcpupin names vCPU 4"), "{e}");
    let e = refusal(&doc(&top.replace("cellid='1'", "cellid='2'"), ""));
    assert!(e.contains("memnode names guest NUMA cell 2"), "{e}");
    let e = refusal(&doc(
        &top.replace(
            "<page size='2048' unit='KiB'/>",
            "<page size='2048' unit='KiB' nodeset='3'/>",
        ),
        "",
    ));
    assert!(e.contains("cell 3, which does not exist"), "{e}");
}

#[test]
fn disk_error_policies_round_trip() {
    let disk = |attrs: &str| {
        format!("    <disk type='file'><driver name='qemu' type='raw' {attrs}/><source file='/a'/><target dev='vda'/></disk>\n")
    };
    let d = round_trip(&doc(
        "",
        &disk("error_policy='enospace' rerror_policy='stop'"),
    ));
    let k = &d.devices.disks[0];
    assert_eq!(k.error_policy, Some(crate::DiskErrorPolicy::Enospc));
    assert_eq!(k.rerror_policy, Some(crate::DiskErrorPolicy::Stop));
    assert!(d
        .to_xml()
        .contains("error_policy='enospace' rerror_policy='stop'"));
    let e = refusal(&doc("", &disk("rerror_policy='enospace'")));
    assert!(
        e.contains("rerror_policy='enospace' must be stop, report or ignore"),
        "{e}"
    );
    let e = refusal(&doc("", &disk("error_policy='retry'")));
    assert!(
        e.contains("must be stop, report, ignore or enospace"),
        "{e}"
    );
}

#[test]
fn disk_iotune_round_trips() {
    let disk = |inner: &str| {
        format!("    <disk type='file'><driver name='qemu' type='raw'/><source file='/a'/><target dev='vda'/><iotune>{inner}</iotune></disk>\n")
    };
    let d = round_trip(&doc(
        "",
        &disk("<total_iops_sec>400</total_iops_sec><write_bytes_sec>1048576</write_bytes_sec>"),
    ));
    let t = d.devices.disks[0].iotune.unwrap();
    assert_eq!(
        (t.total_iops_sec, t.write_bytes_sec),
        (Some(400), Some(1_048_576))
    );
    let e = refusal(&doc(
        "",
        &disk("<total_iops_sec>1</total_iops_sec><read_iops_sec>1</read_iops_sec>"),
    ));
    assert!(e.contains("cannot both be set"), "{e}");
    let e = refusal(&doc("", &disk("<colour>1</colour>")));
    assert!(e.contains("<colour> inside <iotune>"), "{e}");
}

#[test]
fn iothreads_their_pins_and_the_disks_on_them_round_trip_and_are_checked() {
    let disk = |iothread: &str| {
        format!("    <disk type='file'><driver name='qemu' type='raw'{iothread}/><source file='/a'/><target dev='vda'/></disk>\n")
    };
    let top =
        "  <iothreads>2</iothreads>\n  <cputune><iothreadpin iothread='2' cpuset='1'/></cputune>\n";
    let d = round_trip(&doc(top, &disk(" iothread='2'")));
    assert_eq!(d.iothreads, vec![1, 2]);
    assert_eq!(d.devices.disks[0].iothread, Some(2));
    let pin = d.cputune.as_ref().unwrap().iothread_pin(2).unwrap();
    assert_eq!(pin.to_string(), "1");
    assert!(
        !d.to_xml().contains("iothreadids"),
        "ids 1..=N need no list"
    );

    // Listed ids are kept; the count fills the rest from 1, as libvirt does.
    let top = "  <iothreads>3</iothreads>\n  <iothreadids><iothread id='5'/><iothread id='2'/></iothreadids>\n";
    let d = round_trip(&doc(top, &disk(" iothread='5'")));
    assert_eq!(d.iothreads, vec![1, 2, 5]);

    for (top, devices, why) in [
        (
            "  <iothreads>1</iothreads>\n",
            disk(" iothread='2'"),
            "disk vda names I/O thread 2",
        ),
        ("", disk(" iothread='1'"), "disk vda names I/O thread 1"),
        ("", disk(" iothread='0'"), "iothread='0' is not an I/O thread id"),
        (
            "  <iothreads>1</iothreads>\n  <cputune><iothreadpin iothread='3' cpuset='0'/></cputune>\n",
            String::new(),
            "iothreadpin names I/O thread 3",
        ),
        (
            "  <iothreads>1</iothreads>\n  <iothreadids><iothread id='1'/><iothread id='2'/></iothreadids>\n",
            String::new(),
            "iothreadids lists 2 I/O threads but <iothreads> is 1",
        ),
        (
            "  <iothreads>2</iothreads>\n  <iothreadids><iothread id='2'/><iothread id='2'/></iothreadids>\n",
            String::new(),
            "I/O thread id 2 is 0 or given twice",
        ),
        (
            "  <iothreads>2</iothreads>\n  <cputune><iothreadpin iothread='1' cpuset='0'/><iothreadpin iothread='1' cpuset='1'/></cputune>\n",
            String::new(),
            "I/O thread 1 is pinned twice",
        ),
        ("  <iothreads>100</iothreads>\n", String::new(), "more than the 64"),
    ] {
        let e = refusal(&doc(top, &devices));
        assert!(e.contains(why), "{top}: {e}");
    }
    // A list longer than any count allows is refused before it is read on.
    let ids: String = (1..=65).map(|i| format!("<iothread id='{i}'/>")).collect();
    let top = format!("  <iothreads>64</iothreads>\n  <iothreadids>{ids}</iothreadids>\n");
    let e = refusal(&doc(&top, ""));
    assert!(e.contains("iothreadids lists more than the 64"), "{e}");
}
