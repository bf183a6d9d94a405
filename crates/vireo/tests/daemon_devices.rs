//! `vireo daemon` end to end, continued: devices (domblklist, domiflist,
//! attach and detach), host information, and drivers the daemon lacks.

mod daemon_harness;

use daemon_harness::{domain_xml, have_kvm, http, Daemon};
use std::time::{Duration, Instant};

use serde_json::json;

#[test]
fn disks_attached_and_detached_live_and_in_the_definition() {
    if !have_kvm() {
        testkit::skip("no /dev/kvm");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(dir.path());
    d.define(&domain_xml("dev", "idle", ""));
    let img = dir.path().join("extra.img");
    std::fs::write(&img, vec![0u8; 1 << 20]).unwrap();
    let disk = format!(
        "<disk type='file' device='disk'><driver name='qemu' type='raw'/>\
         <source file='{}'/><target dev='vdb' bus='virtio'/></disk>",
        img.display()
    );
    let targets = |path: &str| -> Vec<String> {
        d.ok("GET", path, None)
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["target"].as_str().unwrap().to_string())
            .collect()
    };

    // Inactive: neither flag means the definition.
    d.ok("POST", "/domains/dev/disks", Some(&json!({ "xml": disk })));
    assert_eq!(targets("/domains/dev/disks"), vec!["vdb"]);
    let file = std::fs::read_to_string(d.state.join("domains/dev.xml")).unwrap();
    assert!(file.contains("vdb"), "{file}");
    let a = d.http(
        "POST",
        "/domains/dev/disks",
        Some(&json!({ "xml": disk, "live": true })),
    );
    assert_eq!(a.status, 409, "{}", a.body);
    let dup = d.http("POST", "/domains/dev/disks", Some(&json!({ "xml": disk })));
    assert_eq!(dup.status, 422, "{}", dup.body);
    d.ok("DELETE", "/domains/dev/disks/vdb", None);
    assert!(targets("/domains/dev/disks").is_empty());

    // Running: live only leaves the definition alone, both change both.
    d.ok("POST", "/domains/dev/start", None);
    d.ok(
        "POST",
        "/domains/dev/disks",
        Some(&json!({ "xml": disk, "live": true })),
    );
    assert_eq!(targets("/domains/dev/disks"), vec!["vdb"]);
    let record = std::fs::read_to_string(d.state.join("run/dev.json")).unwrap();
    assert!(
        record.contains("vdb"),
        "the run record has the live XML: {record}"
    );
    let inactive = d.ok("GET", "/domains/dev/xml?inactive=true", None);
    assert!(!inactive["xml"].as_str().unwrap().contains("vdb"));
    d.ok("DELETE", "/domains/dev/disks/vdb?live=true", None);
    // The VMM unplugs vdb (and releases its image) once the guest ejects
    // it, which idle.elf never does: the request stays pending and the
    // live XML keeps what the guest still has. The next disk is another.
    assert_eq!(targets("/domains/dev/disks"), vec!["vdb"]);
    let img2 = dir.path().join("extra2.img");
    std::fs::write(&img2, vec![0u8; 1 << 20]).unwrap();
    let disk = disk
        .replace("vdb", "vdc")
        .replace(&img.display().to_string(), &img2.display().to_string());
    d.ok(
        "POST",
        "/domains/dev/disks",
        Some(&json!({ "xml": disk, "live": true, "config": true })),
    );
    let inactive = d.ok("GET", "/domains/dev/xml?inactive=true", None);
    assert!(inactive["xml"].as_str().unwrap().contains("vdc"));

    // NICs: an ethernet NIC in the definition, listed with its MAC.
    let nic = "<interface type='ethernet'><mac address='52:54:00:12:34:56'/>\
               <target dev='vrtest0'/><model type='virtio'/></interface>";
    d.ok(
        "POST",
        "/domains/dev/interfaces",
        Some(&json!({ "xml": nic, "config": true })),
    );
    d.ok("POST", "/domains/dev/destroy", None);
    let rows = d.ok("GET", "/domains/dev/interfaces", None);
    assert_eq!(rows[0]["mac"], "52:54:00:12:34:56");
    assert_eq!(rows[0]["interface"], "vrtest0");
    assert_eq!(rows[0]["kind"], "ethernet");
    d.ok("DELETE", "/domains/dev/interfaces/52:54:00:12:34:56", None);
    assert_eq!(d.ok("GET", "/domains/dev/interfaces", None), json!([]));
    // A device Vireo refuses (define would) is not saved.
    let before = d.ok("GET", "/domains/dev/xml?inactive=true", None);
    let e1000 = "<interface type='bridge'><source bridge='br0'/>\
                 <model type='e1000'/></interface>";
    let a = d.http(
        "POST",
        "/domains/dev/interfaces",
        Some(&json!({ "xml": e1000, "config": true })),
    );
    assert_eq!(a.status, 422, "{}", a.body);
    assert!(a.error().contains("e1000"), "{}", a.error());
    assert_eq!(d.ok("GET", "/domains/dev/xml?inactive=true", None), before);
    let file = std::fs::read_to_string(d.state.join("domains/dev.xml")).unwrap();
    assert_eq!(file, before["xml"].as_str().unwrap());
    assert_eq!(targets("/domains/dev/disks"), vec!["vdc"]);
}

#[test]
fn host_information() {
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(dir.path());
    let node = d.ok("GET", "/host", None);
    assert_eq!(node["cpu_model"], "x86_64");
    assert!(node["cpus"].as_u64().unwrap() >= 1);
    assert!(node["memory_kib"].as_u64().unwrap() > 1024);
    let caps = d.ok("GET", "/host/capabilities", None);
    let xml = caps["xml"].as_str().unwrap();
    assert!(xml.contains("<arch name='x86_64'>"), "{xml}");
    assert!(xml.contains("<domain type='kvm'/>"), "{xml}");
    // The host's NUMA cells with their CPUs and page pools, as sysfs has
    // them (this host: one node).
    let nodes = std::fs::read_dir("/sys/devices/system/node")
        .map(|d| {
            d.filter_map(Result::ok)
                .filter(|e| {
                    let n = e.file_name();
                    let n = n.to_string_lossy();
                    n.starts_with("node") && n[4..].bytes().all(|b| b.is_ascii_digit())
                })
                .count()
        })
        .unwrap_or(0)
        .max(1);
    assert!(xml.contains(&format!("<cells num='{nodes}'>")), "{xml}");
    assert!(xml.contains("<pages unit='KiB' size='4'>"), "{xml}");
    assert!(xml.contains("<pages unit='KiB' size='2048'"), "{xml}");
    assert!(xml.contains("<sibling id='0' value='10'/>"), "{xml}");
    let cpus = xml.matches("<cpu id='").count();
    assert_eq!(cpus as u64, node["cpus"].as_u64().unwrap(), "{xml}");
    let ro = http(&d.ro_socket, "GET", "/host/capabilities", None);
    assert_eq!(ro.status, 200);
    let version = d.ok("GET", "/version", None);
    assert_eq!(version["daemon"], env!("CARGO_PKG_VERSION"));
    assert!(!version["kernel"].as_str().unwrap().is_empty());
}

#[test]
fn a_domain_for_a_driver_the_daemon_lacks_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    // No qemu-system-x86_64 on its PATH and no --qemu: no QEMU driver.
    let d = Daemon::start_with(dir.path(), &[("PATH", "/nonexistent")]);
    assert_eq!(
        d.ok("GET", "/version", None)["drivers"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    let qemu = domain_xml(
        "q",
        "idle",
        "<metadata><vireo:driver xmlns:vireo='urn:x-vireo:domain:1' name='qemu'/></metadata>",
    );
    for path in ["/domains", "/domains/create"] {
        let a = d.http("POST", path, Some(&json!({ "xml": qemu })));
        assert_eq!(a.status, 422, "{}", a.body);
        assert_eq!(
            a.error(),
            "domain 'q' selects the qemu driver, which this daemon does not run"
        );
    }
    assert_eq!(d.ok("GET", "/domains?filter=all", None), json!([]));

    // A --qemu that is not there stops the daemon with one line.
    let out = d
        .command()
        .arg("--qemu")
        .arg("/nonexistent/qemu")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "vireo: --qemu /nonexistent/qemu: not an executable file\n"
    );
}

/// A guest that cannot answer (paused) leaves a live detach pending, the
/// disk still in the live XML; once it runs and ejects the disk, the live
/// XML loses it without anyone asking again.
#[test]
fn a_pending_unplug_finishes_when_the_guest_lets_go() {
    if !have_kvm() {
        testkit::skip("no /dev/kvm");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(dir.path());
    let xml = domain_xml("ej", "virtio", "")
        .replace(
            "<memory unit='MiB'>32</memory>",
            "<memory unit='MiB'>64</memory>",
        )
        .replace(
            "</os>",
            "<cmdline>blk wait-hotplug=60000 hotplug-events=2</cmdline></os>",
        );
    d.define(&xml);
    d.ok("POST", "/domains/ej/start", None);
    let img = dir.path().join("ej.img");
    std::fs::write(&img, vec![0u8; 1 << 20]).unwrap();
    let disk = format!(
        "<disk type='file' device='disk'><driver name='qemu' type='raw'/>\
         <source file='{}'/><target dev='vdb' bus='virtio'/></disk>",
        img.display()
    );
    let targets = || -> Vec<String> {
        d.ok("GET", "/domains/ej/disks", None)
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["target"].as_str().unwrap().to_string())
            .collect()
    };
    d.ok(
        "POST",
        "/domains/ej/disks",
        Some(&json!({ "xml": disk, "live": true })),
    );
    // Give the guest its moment to take the new disk, then stop it.
    std::thread::sleep(Duration::from_secs(1));
    d.ok("POST", "/domains/ej/suspend", None);
    d.ok("DELETE", "/domains/ej/disks/vdb?live=true", None);
    assert_eq!(targets(), vec!["vdb"], "gone while the guest was paused");
    d.ok("POST", "/domains/ej/resume", None);
    let end = Instant::now() + Duration::from_secs(20);
    while !targets().is_empty() {
        assert!(Instant::now() < end, "the live XML still has vdb");
        std::thread::sleep(Duration::from_millis(100));
    }
    let live = d.ok("GET", "/domains/ej/xml", None);
    assert!(!live["xml"].as_str().unwrap().contains("vdb"), "{live}");
}
