//! `vireo daemon` with its QEMU driver: a domain that selects QEMU in its
//! metadata runs under a real `qemu-system-x86_64` (the 7.2 that
//! `scripts/nested/fetch-qemu.sh target/nested/qemu` unpacks), through the
//! same API as a domain on Vireo's own VMM.

mod daemon_harness;

use std::path::{Path, PathBuf};
use std::time::Duration;

use daemon_harness::{guest, have_kvm, sigkill, Daemon, Events};
use serde_json::json;

/// A directory holding `qemu-system-x86_64`, a wrapper that runs the
/// unpacked QEMU with its module and firmware directories, or why not.
fn qemu_dir(dir: &Path) -> Result<PathBuf, String> {
    use std::os::unix::fs::PermissionsExt;
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/nested/qemu/root");
    let bin = root.join("usr/bin/qemu-system-x86_64");
    if !bin.exists() {
        return Err(format!(
            "no QEMU at {} (scripts/nested/fetch-qemu.sh target/nested/qemu puts it there)",
            bin.display()
        ));
    }
    let out = dir.join("qemu-bin");
    std::fs::create_dir_all(&out).map_err(|e| e.to_string())?;
    let wrapper = out.join("qemu-system-x86_64");
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\nQEMU_MODULE_DIR={r}/usr/lib/x86_64-linux-gnu/qemu exec {b} \
             -L {r}/usr/share/qemu -L {r}/usr/share/seabios \"$@\"\n",
            r = root.display(),
            b = bin.display()
        ),
    )
    .map_err(|e| e.to_string())?;
    std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755))
        .map_err(|e| e.to_string())?;
    Ok(out)
}

fn qemu_domain(name: &str) -> String {
    format!(
        "<domain type='kvm'><name>{name}</name><memory unit='MiB'>64</memory><vcpu>1</vcpu>\
         <metadata><vireo:driver xmlns:vireo='urn:x-vireo:domain:1' name='qemu'/></metadata>\
         <os><type arch='x86_64'>hvm</type><kernel>{}</kernel></os>\
         <features><acpi/></features><cpu mode='custom'><model>qemu64</model></cpu>\
         <devices><serial type='pty'/></devices></domain>",
        guest("idle").display()
    )
}

#[test]
fn a_qemu_domain_runs_through_the_daemon() {
    if !have_kvm() {
        testkit::skip("no /dev/kvm");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let bin = match qemu_dir(dir.path()) {
        Ok(b) => b,
        Err(why) => {
            testkit::skip(&why);
            return;
        }
    };
    // The daemon finds QEMU on its PATH, as it would Debian's.
    let path = format!("{}:/usr/sbin:/usr/bin:/sbin:/bin", bin.display());
    let d = Daemon::start_with(dir.path(), &[("PATH", &path)]);
    let drivers = d.ok("GET", "/version", None)["drivers"].clone();
    assert_eq!(drivers.as_array().unwrap().len(), 2, "{drivers}");
    assert!(
        drivers[1].as_str().unwrap().starts_with("qemu "),
        "{drivers}"
    );

    d.define(&qemu_domain("q"));
    let mut events = Events::open(&d.socket, Some("q"));
    d.ok("POST", "/domains/q/start", Some(&json!({})));
    assert_eq!(d.state("q"), ("running".into(), "booted".into()));
    let info = d.ok("GET", "/domains/q", None);
    assert_eq!(info["driver"], "qemu", "{info}");
    let pid = info["pid"].as_u64().unwrap();
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap();
    assert!(
        String::from_utf8_lossy(&cmdline).contains("qemu-system-x86_64"),
        "pid {pid} is not QEMU"
    );

    d.ok("POST", "/domains/q/suspend", None);
    assert_eq!(d.state("q"), ("paused".into(), "user".into()));
    d.ok("POST", "/domains/q/resume", None);
    assert_eq!(d.state("q"), ("running".into(), "unpaused".into()));
    d.ok("POST", "/domains/q/destroy", Some(&json!({})));
    assert_eq!(d.state("q"), ("shut_off".into(), "destroyed".into()));
    events.wait_for("stopped", "Destroyed", Duration::from_secs(20));

    // A QEMU killed behind the daemon's back failed, with its event.
    d.ok("POST", "/domains/q/start", Some(&json!({})));
    let pid = d.ok("GET", "/domains/q", None)["pid"].as_u64().unwrap();
    sigkill(pid);
    events.wait_for("stopped", "Failed", Duration::from_secs(20));
    assert_eq!(d.state("q"), ("shut_off".into(), "crashed".into()));
    assert!(d.vmm_pids().is_empty(), "{:?}", d.vmm_pids());
}
