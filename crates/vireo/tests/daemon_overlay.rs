//! Vireo's VXLAN overlay (`vireo:overlay` in a network definition): two
//! "hosts", each a daemon with its own state in its own network namespace,
//! joined by an underlay veth on 198.51.100.0/24. Each defines the same
//! overlay network (VNI 4242); a guest on each shares one layer-2 segment
//! (192.0.2.0/24) with the other, and guest A's TCP to guest B carries
//! every byte. Destroying the networks leaves no VXLAN device. Nothing
//! touches the root namespace.

mod daemon_harness;
mod net_lab;

use std::time::Duration;

use daemon_harness::{have_kvm, Daemon};
use net_lab::{can_make_namespaces, pattern, read_until, stream_hash, virtio_domain, Netns};
use serde_json::json;

const VNI: u32 = 4242;
const PORT: u16 = 7000;
const BYTES: usize = 100_000;

/// An open overlay network on bridge `vbr-ov` whose tunnel leaves through
/// `dev` towards `remote`.
fn overlay_network(dev: &str, remote: &str) -> String {
    format!(
        "<network xmlns:vireo='urn:x-vireo:network:1'><name>ov</name><forward mode='open'/>\
         <bridge name='vbr-ov' stp='off'/>\
         <vireo:overlay vni='{VNI}' dev='{dev}'><vireo:remote address='{remote}'/></vireo:overlay>\
         </network>"
    )
}

fn nic(mac: &str) -> String {
    format!(
        "<interface type='network'><source network='ov'/><mac address='{mac}'/>\
         <model type='virtio'/></interface>"
    )
}

/// Two namespaces (named after `tag`, unique per test) joined by underlay veth `ua` (198.51.100.1/24) - `ub`
/// (198.51.100.2/24). The underlay's MTU has room for VXLAN's 50 bytes, so
/// the tunnel carries the guests' 1500-byte frames whole.
fn hosts(tag: &str) -> Option<(tempfile::TempDir, tempfile::TempDir, Netns, Netns)> {
    if let Some(why) = can_make_namespaces() {
        testkit::skip(&why);
        return None;
    }
    let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = match Netns::new(&format!("{tag}a"), da.path()) {
        Ok(ns) => ns,
        Err(why) => {
            testkit::skip(&format!("cannot make a network namespace: {why}"));
            return None;
        }
    };
    let b = Netns::new(&format!("{tag}b"), db.path()).expect("a second namespace");
    a.veth_to("ua", &b, "ub", Some("198.51.100.2/24"));
    a.ip_ok(&["addr", "add", "198.51.100.1/24", "dev", "ua"]);
    a.ip_ok(&["link", "set", "ua", "mtu", "1550"]);
    b.ip_ok(&["link", "set", "ub", "mtu", "1550"]);
    Some((da, db, a, b))
}

#[test]
fn guests_on_two_hosts_share_an_overlay_segment() {
    if !have_kvm() {
        testkit::skip("no /dev/kvm");
        return;
    }
    let Some((da, db, a, b)) = hosts("ov1") else {
        return;
    };
    let mut host_a = Daemon::start_in(da.path(), &[], Some(&a.name));
    let host_b = Daemon::start_in(db.path(), &[], Some(&b.name));
    for (d, dev, remote) in [
        (&host_a, "ua", "198.51.100.2"),
        (&host_b, "ub", "198.51.100.1"),
    ] {
        d.ok(
            "POST",
            "/networks",
            Some(&json!({ "xml": overlay_network(dev, remote) })),
        );
        d.ok("POST", "/networks/ov/start", None);
    }
    let vx = format!("vrvx{VNI}");
    for (ns, dev, remote) in [(&a, "ua", "198.51.100.2"), (&b, "ub", "198.51.100.1")] {
        let shown = ns.ip_ok(&["-d", "-o", "link", "show", "dev", &vx]);
        assert!(
            shown.contains(&format!("vxlan id {VNI}"))
                && shown.contains(&format!("dev {dev}"))
                && shown.contains("master vbr-ov"),
            "{shown}"
        );
        let fdb = std::process::Command::new("bridge")
            .args(["-n", &ns.name, "fdb", "show", "dev", &vx])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default();
        assert!(
            fdb.contains(&format!("00:00:00:00:00:00 dst {remote}")),
            "{fdb}"
        );
    }

    // B serves; A connects across the tunnel.
    host_b.define(&virtio_domain(
        "gb",
        &format!("net.ip=192.0.2.20/24 net.serve={PORT} net.timeout-ms=60000"),
        &nic("52:54:00:00:0b:02"),
    ));
    host_b.ok("POST", "/domains/gb/start", Some(&json!({})));
    host_a.define(&virtio_domain(
        "ga",
        &format!(
            "net.ip=192.0.2.10/24 net.tcp=192.0.2.20:{PORT},bytes={BYTES} net.timeout-ms=30000"
        ),
        &nic("52:54:00:00:0a:01"),
    ));
    // Paused until its console is attached, so no line is missed.
    host_a.ok(
        "POST",
        "/domains/ga/start",
        Some(&json!({ "paused": true })),
    );
    let mut console =
        daemon_harness::console(&host_a.socket, "ga", false).expect("the console of ga");
    console
        .set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    host_a.ok("POST", "/domains/ga/resume", None);
    let out = read_until(&mut console, "virtio: done", Duration::from_secs(60));
    let hash = stream_hash(&pattern(BYTES));
    let line = format!(
        "virtio: tcp 192.0.2.20:{PORT} sent={BYTES} received={BYTES} sent-hash={hash} received-hash={hash}"
    );
    assert!(
        out.contains(&line),
        "want {line}\nguest A said:\n{out}\nhost A log:\n{}",
        host_a.log_text()
    );

    // Host A's daemon restarts; the next one finds the network and
    // removes its VXLAN device on destroy.
    host_a.kill9();
    host_a.spawn();
    for (d, dom) in [(&host_a, "ga"), (&host_b, "gb")] {
        let _ = d.http("POST", &format!("/domains/{dom}/destroy"), Some(&json!({})));
        d.wait_state(dom, "shut_off", Duration::from_secs(10));
        d.ok("POST", "/networks/ov/destroy", Some(&json!({})));
    }
    for ns in [&a, &b] {
        assert!(ns.links_of_kind("vxlan").is_empty(), "{}", ns.name);
        assert!(!ns.link_exists("vbr-ov"));
        assert!(ns.link_exists("ua") || ns.link_exists("ub"));
    }
}

#[test]
fn bad_overlays_are_refused_in_one_line_and_leave_nothing() {
    let Some((da, _db, a, _b)) = hosts("ov2") else {
        return;
    };
    let d = Daemon::start_in(da.path(), &[], Some(&a.name));
    for (overlay, want) in [
        ("vni='0'", "vni 0 is outside"),
        ("vni='16777216'", "outside"),
        ("vni='1' port='70000'", "port"),
    ] {
        let xml = format!(
            "<network xmlns:vireo='urn:x-vireo:network:1'><name>bad</name>\
             <vireo:overlay {overlay}><vireo:remote address='198.51.100.2'/></vireo:overlay></network>"
        );
        let r = d.http("POST", "/networks", Some(&json!({ "xml": xml })));
        assert_eq!(r.status, 422, "{}", r.body);
        assert!(
            r.error().contains(want) && !r.error().contains('\n'),
            "{}",
            r.error()
        );
    }
    let bad_remote = "<network xmlns:vireo='urn:x-vireo:network:1'><name>bad</name>\
         <vireo:overlay vni='5'><vireo:remote address='198.51.100.300'/></vireo:overlay></network>";
    let r = d.http("POST", "/networks", Some(&json!({ "xml": bad_remote })));
    assert_eq!(r.status, 422, "{}", r.body);
    assert!(r.error().contains("not an IP address"), "{}", r.error());

    // An underlay device that does not exist: the start is refused and
    // neither the bridge nor a VXLAN device is left.
    d.ok(
        "POST",
        "/networks",
        Some(&json!({ "xml": overlay_network("nosuch0", "198.51.100.2") })),
    );
    let r = d.http("POST", "/networks/ov/start", None);
    assert_eq!(r.status, 422, "{}", r.body);
    assert!(
        r.error().contains("overlay dev 'nosuch0' does not exist"),
        "{}",
        r.error()
    );
    assert!(!a.link_exists("vbr-ov"));
    assert!(a.links_of_kind("vxlan").is_empty());

    // Two networks on one VNI would be one segment: the second is refused.
    d.ok("DELETE", "/networks/ov", None);
    d.ok(
        "POST",
        "/networks",
        Some(&json!({ "xml": overlay_network("ua", "198.51.100.2") })),
    );
    d.ok("POST", "/networks/ov/start", None);
    let twin = overlay_network("ua", "198.51.100.3")
        .replace("<name>ov</name>", "<name>ov2</name>")
        .replace("vbr-ov", "vbr-ov2");
    d.ok("POST", "/networks", Some(&json!({ "xml": twin })));
    let r = d.http("POST", "/networks/ov2/start", None);
    assert_eq!(r.status, 422, "{}", r.body);
    assert!(
        r.error()
            .contains(&format!("VXLAN device 'vrvx{VNI}' exists already")),
        "{}",
        r.error()
    );
    assert!(!a.link_exists("vbr-ov2"));
    d.ok("POST", "/networks/ov/destroy", Some(&json!({})));
    assert!(a.links_of_kind("vxlan").is_empty());
}
