//! `interface type='direct'` under `vireo daemon`: the daemon makes a
//! macvtap on a host device, the guest exchanges TCP through it with
//! another "host" beyond that device, hot-plug makes and removes one, and
//! nothing is left when the domain ends or is destroyed.
//!
//! The daemon runs in a namespace the test makes; the macvtap's parent is
//! one end of a veth pair whose other end is in a second namespace (the
//! peer, 203.0.113.1/24). Nothing touches the root namespace.

mod daemon_harness;
mod net_lab;

use std::time::{Duration, Instant};

use daemon_harness::{have_kvm, Daemon};
use net_lab::{can_make_namespaces, echo_exchange, pattern, stream_hash, virtio_domain, Netns};
use serde_json::json;

const GUEST_IP: &str = "203.0.113.2";
const PORT: u16 = 7000;

fn direct_nic(mac: &str, dev: &str, mode: &str) -> String {
    format!(
        "<interface type='direct'><source dev='{dev}' mode='{mode}'/>\
         <mac address='{mac}'/><model type='virtio'/></interface>"
    )
}

fn wait_until(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + limit;
    while Instant::now() < end {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    f()
}

/// The daemon's namespace and the peer's, joined by veth `dpar` (the
/// macvtap parent) - `dpeer` (203.0.113.1/24).
fn lab(tag: &str) -> Option<(tempfile::TempDir, Netns, Netns)> {
    if let Some(why) = can_make_namespaces() {
        testkit::skip(&why);
        return None;
    }
    let dir = tempfile::tempdir().unwrap();
    let host = match Netns::new(&format!("{tag}h"), dir.path()) {
        Ok(ns) => ns,
        Err(why) => {
            testkit::skip(&format!("cannot make a network namespace: {why}"));
            return None;
        }
    };
    let peer = Netns::new(&format!("{tag}p"), dir.path()).expect("a second namespace");
    host.veth_to("dpar", &peer, "dpeer", Some("203.0.113.1/24"));
    Some((dir, host, peer))
}

#[test]
fn a_direct_nic_carries_tcp_to_the_device_s_network_and_goes_with_the_domain() {
    if !have_kvm() {
        testkit::skip("no /dev/kvm");
        return;
    }
    let Some((dir, host, peer)) = lab("dir1") else {
        return;
    };
    let mut d = Daemon::start_in(dir.path(), &[], Some(&host.name));
    let cmdline = format!("net.ip={GUEST_IP}/24 net.serve={PORT} net.timeout-ms=30000");
    let xml = virtio_domain(
        "dg",
        &cmdline,
        &direct_nic("52:54:00:00:0d:01", "dpar", "bridge"),
    );
    d.define(&xml);
    // Paused until its console is read, so no line of the guest's is lost.
    d.ok(
        "POST",
        "/domains/dg/start",
        Some(&json!({ "paused": true })),
    );
    let mut console = daemon_harness::console(&d.socket, "dg", false).expect("the console");
    console
        .set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    d.ok("POST", "/domains/dg/resume", None);
    // The guest drives the cards it found at boot: hot-plug comes after.
    let booted = net_lab::read_until(&mut console, "serve listening", Duration::from_secs(30));
    assert!(booted.contains("serve listening"), "{booted}");
    let guest_said = std::thread::spawn(move || {
        net_lab::read_until(&mut console, "virtio: done", Duration::from_secs(90))
    });

    let ifaces = d.ok("GET", "/domains/dg/interfaces", None);
    assert_eq!(ifaces[0]["kind"], "direct", "{ifaces}");
    assert_eq!(ifaces[0]["source"], "dpar", "{ifaces}");
    let tap = ifaces[0]["interface"].as_str().unwrap().to_string();
    assert_eq!(host.links_of_kind("macvtap"), vec![tap.clone()]);
    let shown = host.ip_ok(&["-d", "-o", "link", "show", "dev", &tap]);
    assert!(
        shown.contains("macvtap mode bridge") && shown.contains("52:54:00:00:0d:01"),
        "{shown}"
    );
    // The live XML names the macvtap, as libvirt's does.
    let live = d.ok("GET", "/domains/dg/xml", None)["xml"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        live.contains("<source dev='dpar' mode='bridge'/>")
            && live.contains(&format!("<target dev='{tap}'/>")),
        "{live}"
    );

    // Hot-plug while the guest listens: a second macvtap. This guest
    // handles no hot-plug event, so the unplug stays pending and the
    // guest keeps the card (and its macvtap) until the domain ends.
    d.ok(
        "POST",
        "/domains/dg/interfaces",
        Some(&json!({ "xml": direct_nic("52:54:00:00:0d:02", "dpar", "vepa") })),
    );
    let two = host.links_of_kind("macvtap");
    assert_eq!(two.len(), 2, "{two:?}");
    let plugged = two.iter().find(|n| **n != tap).unwrap().clone();
    assert!(host
        .ip_ok(&["-d", "-o", "link", "show", "dev", &plugged])
        .contains("macvtap mode vepa"));
    d.ok("DELETE", "/domains/dg/interfaces/52:54:00:00:0d:02", None);
    assert_eq!(host.links_of_kind("macvtap").len(), 2);

    // The peer's TCP to the guest, through the macvtap and the veth.
    let data = pattern(200_000);
    let addr = format!("{GUEST_IP}:{PORT}").parse().unwrap();
    let sent = data.clone();
    let back = peer
        .run(move || echo_exchange(addr, &sent, Duration::from_secs(30)))
        .unwrap_or_else(|e| panic!("{e}\ndaemon log:\n{}", d.log_text()));
    assert_eq!(back.len(), data.len());
    let hash = stream_hash(&data);
    assert_eq!(stream_hash(&back), hash);
    // The guest saw the same bytes come from the peer.
    let said = guest_said.join().unwrap();
    assert!(
        said.contains(&format!("virtio: serve port={PORT} from=203.0.113.1:"))
            && said.contains(&format!("received={} hash={hash}", data.len())),
        "{said}"
    );

    // The guest powers off after serving: its macvtap goes with it.
    d.wait_state("dg", "shut_off", Duration::from_secs(30));
    assert!(
        wait_until(Duration::from_secs(5), || host
            .links_of_kind("macvtap")
            .is_empty()),
        "{:?}",
        host.links_of_kind("macvtap")
    );

    // Started again, the daemon restarted, then destroyed: the next
    // daemon knows the macvtap from the run record and deletes it.
    d.ok("POST", "/domains/dg/start", Some(&json!({})));
    assert_eq!(host.links_of_kind("macvtap").len(), 1);
    d.kill9();
    d.spawn();
    assert_eq!(d.state("dg").0, "running");
    d.ok("POST", "/domains/dg/destroy", Some(&json!({})));
    d.wait_state("dg", "shut_off", Duration::from_secs(10));
    assert!(
        wait_until(Duration::from_secs(5), || host
            .links_of_kind("macvtap")
            .is_empty()),
        "{:?}",
        host.links_of_kind("macvtap")
    );

    // A VMM that dies while no daemon runs: the next daemon, finding it
    // gone, deletes its macvtap.
    d.ok("POST", "/domains/dg/start", Some(&json!({})));
    let pids = d.vmm_pids();
    assert_eq!(pids.len(), 1, "{pids:?}");
    d.kill9();
    daemon_harness::sigkill(u64::from(pids[0]));
    assert!(wait_until(Duration::from_secs(5), || {
        !std::path::Path::new(&format!("/proc/{}", pids[0])).exists()
    }));
    d.spawn();
    assert_eq!(d.state("dg").0, "shut_off");
    assert!(
        wait_until(Duration::from_secs(5), || host
            .links_of_kind("macvtap")
            .is_empty()),
        "{:?}",
        host.links_of_kind("macvtap")
    );
    assert!(host.link_exists("dpar"), "the parent is left alone");
}

#[test]
fn bad_direct_input_is_refused_in_one_line_and_leaves_nothing() {
    let Some((dir, host, _peer)) = lab("dir2") else {
        return;
    };
    let d = Daemon::start_in(dir.path(), &[], Some(&host.name));
    for (xml, want) in [
        (
            "<interface type='direct'><model type='virtio'/></interface>",
            "needs <source dev=...>",
        ),
        (
            "<interface type='direct'><source mode='bridge'/></interface>",
            "dev",
        ),
        (
            "<interface type='direct'><source dev='dpar' mode='fast'/></interface>",
            "mode 'fast' is not supported",
        ),
    ] {
        let a = d.http(
            "POST",
            "/domains",
            Some(&json!({ "xml": virtio_domain("bad", "", xml) })),
        );
        assert_eq!(a.status, 422, "{}", a.body);
        let e = a.error();
        assert!(e.contains(want) && !e.contains('\n'), "{e}");
    }
    if !have_kvm() {
        testkit::skip("no /dev/kvm for the start half");
        return;
    }
    // A parent that does not exist: the start fails in one line naming
    // it, and no macvtap is left.
    d.define(&virtio_domain(
        "nodev",
        "",
        &format!(
            "{}{}",
            direct_nic("52:54:00:00:0d:03", "dpar", "bridge"),
            direct_nic("52:54:00:00:0d:04", "nosuch0", "private")
        ),
    ));
    let a = d.http("POST", "/domains/nodev/start", Some(&json!({})));
    assert!(a.status >= 400, "{}", a.body);
    let e = a.error();
    assert!(e.contains("nosuch0") && !e.contains('\n'), "{e}");
    assert!(host.links_of_kind("macvtap").is_empty());
    let (state, _) = d.state("nodev");
    assert_eq!(state, "shut_off");
}

/// A directory whose `qemu-system-x86_64` runs the QEMU 7.2 that
/// `scripts/nested/fetch-qemu.sh target/nested/qemu` unpacks, or why not.
fn qemu_bin(dir: &std::path::Path) -> Result<std::path::PathBuf, String> {
    use std::os::unix::fs::PermissionsExt;
    let root =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/nested/qemu/root");
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

#[test]
fn under_qemu_a_direct_nic_is_handed_over_and_deleted_with_the_domain() {
    if !have_kvm() {
        testkit::skip("no /dev/kvm");
        return;
    }
    let Some((dir, host, _peer)) = lab("dir3") else {
        return;
    };
    let bin = match qemu_bin(dir.path()) {
        Ok(b) => b,
        Err(why) => {
            testkit::skip(&why);
            return;
        }
    };
    let path = format!("{}:/usr/sbin:/usr/bin:/sbin:/bin", bin.display());
    let d = Daemon::start_in(dir.path(), &[("PATH", &path)], Some(&host.name));
    let xml = format!(
        "<domain type='kvm'><name>q</name><memory unit='MiB'>64</memory><vcpu>1</vcpu>\
         <metadata><vireo:driver xmlns:vireo='urn:x-vireo:domain:1' name='qemu'/></metadata>\
         <os><type arch='x86_64'>hvm</type><kernel>{}</kernel></os>\
         <features><acpi/></features><cpu mode='custom'><model>qemu64</model></cpu>\
         <devices>{}<serial type='pty'/></devices></domain>",
        daemon_harness::guest("idle").display(),
        direct_nic("52:54:00:00:0d:05", "dpar", "private")
    );
    d.define(&xml);
    d.ok("POST", "/domains/q/start", Some(&json!({})));
    let info = d.ok("GET", "/domains/q", None);
    assert_eq!(info["driver"], "qemu", "{info}");
    let links = host.links_of_kind("macvtap");
    assert_eq!(links.len(), 1, "{links:?}");
    let shown = host.ip_ok(&["-d", "-o", "link", "show", "dev", &links[0]]);
    assert!(shown.contains("macvtap mode private"), "{shown}");
    // QEMU holds the macvtap's character device.
    let pid = info["pid"].as_u64().unwrap();
    let index = shown.split(':').next().unwrap().trim().to_string();
    let held = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .any(|t| t.to_string_lossy().ends_with(&format!("tap{index}")));
    assert!(held, "QEMU holds no tap{index}");
    // Hot-plugged, its macvtap's descriptor goes over QMP (getfd).
    d.ok(
        "POST",
        "/domains/q/interfaces",
        Some(&json!({ "xml": direct_nic("52:54:00:00:0d:06", "dpar", "bridge") })),
    );
    let both = host.links_of_kind("macvtap");
    assert_eq!(both.len(), 2, "{both:?}");
    let hot = both.iter().find(|n| **n != links[0]).unwrap().clone();
    let shown = host.ip_ok(&["-d", "-o", "link", "show", "dev", &hot]);
    let index = shown.split(':').next().unwrap().trim().to_string();
    let held = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .any(|t| t.to_string_lossy().ends_with(&format!("tap{index}")));
    assert!(held, "QEMU holds no tap{index} for the hot-plugged card");

    d.ok("POST", "/domains/q/destroy", Some(&json!({})));
    d.wait_state("q", "shut_off", Duration::from_secs(20));
    assert!(
        wait_until(Duration::from_secs(5), || host
            .links_of_kind("macvtap")
            .is_empty()),
        "{:?}",
        host.links_of_kind("macvtap")
    );
}
