//! XML that `virt-install --print-xml` (Debian's virtinst) writes for a
//! direct-kernel-boot VM with a qcow2 disk, a bridge NIC and a pty console
//! defines and starts under `vireo daemon` without editing.
//!
//! The daemon runs in a network namespace the test makes, holding the
//! bridge the XML names; the driver makes the TAP there and attaches it.

mod daemon_harness;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use daemon_harness::{guest, have_kvm, Daemon};
use serde_json::json;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../virtxml/tests/fixtures")
}

/// The XML, from virt-install where it is installed, else the copy it
/// wrote (crates/virtxml/tests/fixtures/domain-virt-install.xml) with its
/// paths pointed at this test's kernel and image. Says which it used.
fn virt_install_xml(kernel: &Path, disk: &Path) -> (String, &'static str) {
    let generated = Command::new("virt-install")
        .arg("--connect")
        // virtinst's own test hook: libvirt's test driver presented as
        // qemu:///system with a KVM host's capabilities, so no libvirtd.
        .arg(format!(
            "__virtinst_test__test:///default,caps={},fakeuri=qemu:///system",
            fixtures().join("kvm-caps.xml").display()
        ))
        .args([
            "--print-xml",
            "--name",
            "vi",
            "--memory",
            "64",
            "--vcpus",
            "1",
        ])
        .args(["--import", "--disk"])
        .arg(format!(
            "path={},driver.type=qcow2,bus=virtio",
            disk.display()
        ))
        .args(["--network", "bridge=br0,model=virtio", "--graphics", "none"])
        .args([
            "--console",
            "pty,target_type=serial",
            "--osinfo",
            "debian11",
        ])
        .arg("--boot")
        .arg(format!(
            "kernel={},kernel_args=console=ttyS0",
            kernel.display()
        ))
        .output();
    if let Ok(out) = generated {
        if out.status.success() {
            return (String::from_utf8(out.stdout).unwrap(), "virt-install");
        }
    }
    let fixture = std::fs::read_to_string(fixtures().join("domain-virt-install.xml")).unwrap();
    let xml = fixture[fixture.find("<domain").unwrap()..]
        .replace("/tmp/xmlvi/vmlinuz", &kernel.display().to_string())
        .replace("    <initrd>/tmp/xmlvi/initrd.img</initrd>\n", "")
        .replace("/tmp/xmlvi/deb1.qcow2", &disk.display().to_string())
        .replace("<name>deb1</name>", "<name>vi</name>")
        .replace("<memory>1048576</memory>", "<memory>65536</memory>")
        .replace(
            "<currentMemory>1048576</currentMemory>",
            "<currentMemory>65536</currentMemory>",
        );
    (xml, "the fixture virt-install wrote")
}

/// A network namespace holding bridge `br0`, removed on drop.
struct BridgeNamespace(String);

impl BridgeNamespace {
    fn new() -> Result<BridgeNamespace, String> {
        let name = format!("vireo-vi-{}", std::process::id());
        let ip = |args: &[&str]| -> Result<(), String> {
            let out = Command::new("ip")
                .args(args)
                .output()
                .map_err(|e| format!("ip: {e}"))?;
            if out.status.success() {
                Ok(())
            } else {
                Err(format!(
                    "ip {}: {}",
                    args.join(" "),
                    String::from_utf8_lossy(&out.stderr).trim()
                ))
            }
        };
        ip(&["netns", "add", &name])?;
        let ns = BridgeNamespace(name);
        ip(&["-n", &ns.0, "link", "add", "br0", "type", "bridge"])?;
        ip(&["-n", &ns.0, "link", "set", "br0", "up"])?;
        Ok(ns)
    }

    /// The names of the links enslaved to br0.
    fn bridge_ports(&self) -> String {
        let out = Command::new("ip")
            .args(["-n", &self.0, "-o", "link", "show", "master", "br0"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for BridgeNamespace {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

#[test]
fn virt_install_xml_defines_and_starts_unedited() {
    if !have_kvm() {
        testkit::skip("no /dev/kvm");
        return;
    }
    let ns = match BridgeNamespace::new() {
        Ok(ns) => ns,
        Err(why) => {
            testkit::skip(&format!(
                "cannot make a network namespace with a bridge: {why}"
            ));
            return;
        }
    };
    let dir = tempfile::tempdir().unwrap();
    let disk = dir.path().join("vi.qcow2");
    let made = Command::new(env!("CARGO_BIN_EXE_vireo"))
        .args(["img", "create", "-q", "-f", "qcow2"])
        .arg(&disk)
        .arg("64M")
        .status()
        .unwrap();
    assert!(made.success());
    let (xml, source) = virt_install_xml(&guest("idle"), &disk);

    let d = Daemon::start_in(dir.path(), &[], Some(&ns.0));
    let defined = d.define(&xml);
    assert_eq!(defined["name"], "vi", "from {source}: {defined}");
    // What virt-install adds that needs nothing from Vireo is accepted,
    // one warning each (libosinfo metadata, clock, pm, controllers, ...).
    assert!(
        !defined["warnings"].as_array().unwrap().is_empty(),
        "{defined}"
    );
    d.ok("POST", "/domains/vi/start", Some(&json!({})));
    assert_eq!(d.state("vi"), ("running".into(), "booted".into()));

    // The bridge NIC got a TAP that the driver made and put on br0.
    let ifaces = d.ok("GET", "/domains/vi/interfaces", None);
    let tap = ifaces[0]["interface"].as_str().unwrap().to_string();
    assert_eq!(ifaces[0]["kind"], "bridge", "{ifaces}");
    assert_eq!(ifaces[0]["source"], "br0", "{ifaces}");
    assert!(
        ns.bridge_ports().contains(&format!(" {tap}:")),
        "{tap} not on br0: {}",
        ns.bridge_ports()
    );
    let disks = d.ok("GET", "/domains/vi/disks", None);
    assert_eq!(disks[0]["source"], disk.display().to_string(), "{disks}");

    d.ok("POST", "/domains/vi/destroy", Some(&json!({})));
    d.wait_state("vi", "shut_off", Duration::from_secs(10));
    // The TAP went with the VMM.
    assert!(!ns.bridge_ports().contains(&tap), "{}", ns.bridge_ports());
}
