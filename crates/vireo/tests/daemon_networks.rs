//! Virtual networks under `vireo daemon`: a network's bridge, addresses,
//! nftables table and dnsmasq come and go with `net-start` and
//! `net-destroy`, survive a daemon restart, and a domain's `type='network'`
//! NIC is plugged into the bridge.
//!
//! Every daemon here runs in a network namespace the test makes and
//! removes; nothing touches the root namespace. Addresses are from the
//! documentation ranges.

mod daemon_harness;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use daemon_harness::{domain_xml, have_kvm, processes_mentioning, sigkill, Daemon};
use serde_json::{json, Value};

/// A network namespace, removed (with every process the test's directory
/// names, such as a daemon's dnsmasq) on drop.
struct Netns {
    name: String,
    dir: std::path::PathBuf,
}

impl Netns {
    fn new(tag: &str, dir: &Path) -> Result<Netns, String> {
        let name = format!("vireo-{tag}-{}", std::process::id());
        let out = Command::new("ip")
            .args(["netns", "add", &name])
            .output()
            .map_err(|e| format!("ip: {e}"))?;
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).trim().to_string());
        }
        let ns = Netns {
            name,
            dir: dir.to_path_buf(),
        };
        ns.ip(&["link", "set", "lo", "up"]);
        Ok(ns)
    }

    /// `ip -n NS ARGS`; its stdout.
    fn ip(&self, args: &[&str]) -> String {
        let out = Command::new("ip")
            .args(["-n", &self.name])
            .args(args)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Runs `cmd` inside the namespace; (success, stdout + stderr).
    fn exec(&self, cmd: &[&str]) -> (bool, String) {
        let out = Command::new("ip")
            .args(["netns", "exec", &self.name])
            .args(cmd)
            .output()
            .unwrap();
        let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
        text.push_str(&String::from_utf8_lossy(&out.stderr));
        (out.status.success(), text)
    }

    fn link_exists(&self, name: &str) -> bool {
        !self
            .ip(&["-o", "link", "show", "dev", name])
            .trim()
            .is_empty()
    }

    fn nft_tables(&self) -> String {
        self.exec(&["nft", "list", "tables"]).1
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        for pid in processes_mentioning(&self.dir) {
            sigkill(u64::from(pid));
        }
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

/// Whether this host has what the network tests need; the reason if not.
fn missing_tools() -> Option<String> {
    for tool in ["nft", "dnsmasq"] {
        let found = Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .output()
            .is_ok_and(|o| o.status.success());
        if !found {
            return Some(format!(
                "{tool} is not installed (scripts/test.sh installs it)"
            ));
        }
    }
    None
}

fn setup(tag: &str) -> Option<(tempfile::TempDir, Netns)> {
    if let Some(why) = missing_tools() {
        testkit::skip(&why);
        return None;
    }
    let dir = tempfile::tempdir().unwrap();
    match Netns::new(tag, dir.path()) {
        Ok(ns) => Some((dir, ns)),
        Err(why) => {
            testkit::skip(&format!("cannot make a network namespace: {why}"));
            None
        }
    }
}

/// A NAT network with DHCP on 192.0.2.0/24, its bridge left to the daemon.
fn nat_network(name: &str) -> String {
    format!(
        "<network><name>{name}</name><forward mode='nat'/>\
         <ip address='192.0.2.1' netmask='255.255.255.0'>\
         <dhcp><range start='192.0.2.100' end='192.0.2.150'/>\
         <host mac='52:54:00:00:00:07' name='seven' ip='192.0.2.7'/></dhcp></ip>\
         <dns><host ip='192.0.2.7'><hostname>seven.example</hostname></host></dns></network>"
    )
}

/// The pids of the dnsmasq processes whose command line names `dir`.
fn dnsmasq_pids(dir: &Path) -> Vec<u32> {
    processes_mentioning(dir)
        .into_iter()
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/comm"))
                .is_ok_and(|c| String::from_utf8_lossy(&c).trim() == "dnsmasq")
        })
        .collect()
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

fn network<'a>(list: &'a Value, name: &str) -> Option<&'a Value> {
    list.as_array()?.iter().find(|n| n["name"] == name)
}

#[test]
fn a_nat_network_runs_survives_a_daemon_restart_and_leaves_nothing_behind() {
    let Some((dir, ns)) = setup("net1") else {
        return;
    };
    let mut d = Daemon::start_in(dir.path(), &[], Some(&ns.name));
    let defined = d.ok(
        "POST",
        "/networks",
        Some(&json!({ "xml": nat_network("lan") })),
    );
    assert_eq!(defined["name"], "lan", "{defined}");
    // The daemon chose the bridge's name and MAC, as libvirt's net-define.
    let xml = d.ok("GET", "/networks/lan/xml", None)["xml"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(xml.contains("<bridge name='virbr0'"), "{xml}");
    assert!(xml.contains("<mac address='52:54:00:"), "{xml}");
    let info = d.ok("GET", "/networks/lan", None);
    assert_eq!(info["active"], false, "{info}");

    d.ok("POST", "/networks/lan/start", None);
    assert!(ns.link_exists("virbr0"), "{}", ns.ip(&["link"]));
    let addrs = ns.ip(&["-o", "addr", "show", "dev", "virbr0"]);
    assert!(addrs.contains("192.0.2.1/24"), "{addrs}");
    assert!(ns.ip(&["-o", "link", "show", "virbr0"]).contains("UP"));
    assert!(ns.nft_tables().contains("vireo"), "{}", ns.nft_tables());
    let (_, forwarding) = ns.exec(&["cat", "/proc/sys/net/ipv4/ip_forward"]);
    assert_eq!(forwarding.trim(), "1");
    let first = dnsmasq_pids(&d.state);
    assert_eq!(first.len(), 1, "one dnsmasq: {first:?}");

    // A dnsmasq that dies is started again.
    sigkill(u64::from(first[0]));
    let restarted = wait_until(Duration::from_secs(10), || {
        let now = dnsmasq_pids(&d.state);
        now.len() == 1 && now != first
    });
    assert!(restarted, "dnsmasq not restarted: {}", d.log_text());

    // The daemon dies; the network lives on and the next daemon finds it.
    let before = dnsmasq_pids(&d.state);
    d.kill9();
    assert!(ns.link_exists("virbr0"));
    d.spawn();
    let list = d.ok("GET", "/networks?filter=all", None);
    let lan = network(&list, "lan").expect("lan listed");
    assert_eq!(lan["active"], true, "{list}");
    assert_eq!(lan["bridge"], "virbr0", "{list}");
    assert_eq!(dnsmasq_pids(&d.state), before, "dnsmasq was re-adopted");

    // Starting it again is refused; destroying it removes everything.
    let twice = d.http("POST", "/networks/lan/start", None);
    assert_eq!(twice.status, 409, "{}", twice.body);
    assert!(
        twice.error().contains("already active"),
        "{}",
        twice.error()
    );
    d.ok("POST", "/networks/lan/destroy", Some(&json!({})));
    assert!(!ns.link_exists("virbr0"), "{}", ns.ip(&["link"]));
    assert!(!ns.nft_tables().contains("vireo"), "{}", ns.nft_tables());
    assert!(
        wait_until(Duration::from_secs(5), || dnsmasq_pids(&d.state).is_empty()),
        "dnsmasq left running"
    );
    let private = d.state.join("network/private/lan");
    assert!(!private.exists(), "{} left behind", private.display());
    d.ok("DELETE", "/networks/lan", None);
    let list = d.ok("GET", "/networks?filter=all", None);
    assert_eq!(list, json!([]));
}

#[test]
fn bad_network_input_is_refused_and_leaves_nothing_half_made() {
    let Some((dir, ns)) = setup("net2") else {
        return;
    };
    let d = Daemon::start_in(dir.path(), &[], Some(&ns.name));
    d.ok(
        "POST",
        "/networks",
        Some(&json!({ "xml": nat_network("a") })),
    );
    d.ok("POST", "/networks/a/start", None);

    // Another network on an overlapping subnet cannot start.
    d.ok(
        "POST",
        "/networks",
        Some(
            &json!({ "xml": "<network><name>b</name><bridge name='vbr-b'/>\
            <ip address='192.0.2.129' prefix='25'/></network>" }),
        ),
    );
    let overlap = d.http("POST", "/networks/b/start", None);
    assert_eq!(overlap.status, 422, "{}", overlap.body);
    assert!(
        overlap.error().contains("overlaps") && overlap.error().contains("'a'"),
        "{}",
        overlap.error()
    );
    assert!(!ns.link_exists("vbr-b"), "half-made bridge left");

    // A bridge name another network has is refused at define.
    let taken = d.http(
        "POST",
        "/networks",
        Some(&json!({ "xml": "<network><name>c</name><bridge name='virbr0'/></network>" })),
    );
    assert_eq!(taken.status, 422, "{}", taken.body);
    assert!(taken.error().contains("virbr0"), "{}", taken.error());

    // A DHCP range outside its subnet is refused at define.
    let outside = d.http(
        "POST",
        "/networks",
        Some(
            &json!({ "xml": "<network><name>e</name><ip address='198.51.100.1' prefix='24'>\
            <dhcp><range start='203.0.113.2' end='203.0.113.9'/></dhcp></ip></network>" }),
        ),
    );
    assert_eq!(outside.status, 422, "{}", outside.body);

    // A forward device that does not exist.
    d.ok(
        "POST",
        "/networks",
        Some(
            &json!({ "xml": "<network><name>f</name><forward mode='route' dev='nosuch0'/>\
            <bridge name='vbr-f'/><ip address='198.51.100.1' prefix='24'/></network>" }),
        ),
    );
    let nodev = d.http("POST", "/networks/f/start", None);
    assert_eq!(nodev.status, 422, "{}", nodev.body);
    assert!(nodev.error().contains("nosuch0"), "{}", nodev.error());
    assert!(!ns.link_exists("vbr-f"));

    // Destroying an inactive network, and unknown networks.
    let inactive = d.http("POST", "/networks/f/destroy", Some(&json!({})));
    assert_eq!(inactive.status, 409, "{}", inactive.body);
    let missing = d.http("POST", "/networks/nosuch/start", None);
    assert_eq!(missing.status, 404, "{}", missing.body);

    d.ok("POST", "/networks/a/destroy", Some(&json!({})));
    assert!(!ns.link_exists("virbr0"));
}

#[test]
fn a_domain_is_plugged_into_its_network_which_cannot_go_while_it_runs() {
    if !have_kvm() {
        testkit::skip("no /dev/kvm");
        return;
    }
    let Some((dir, ns)) = setup("net3") else {
        return;
    };
    let d = Daemon::start_in(dir.path(), &[], Some(&ns.name));
    d.ok(
        "POST",
        "/networks",
        Some(&json!({ "xml": nat_network("lan") })),
    );
    let with_nic = domain_xml("web", "idle", "").replace(
        "<devices>",
        "<devices><interface type='network'><source network='lan'/>\
         <mac address='52:54:00:00:00:07'/><model type='virtio'/></interface>",
    );
    d.define(&with_nic);

    // Not while its network is down.
    let down = d.http("POST", "/domains/web/start", Some(&json!({})));
    assert_eq!(down.status, 409, "{}", down.body);
    assert!(
        down.error().contains("network 'lan' is not active"),
        "{}",
        down.error()
    );

    d.ok("POST", "/networks/lan/start", None);
    d.ok("POST", "/domains/web/start", Some(&json!({})));
    let ifaces = d.ok("GET", "/domains/web/interfaces", None);
    assert_eq!(ifaces[0]["kind"], "network", "{ifaces}");
    assert_eq!(ifaces[0]["source"], "lan", "{ifaces}");
    let tap = ifaces[0]["interface"].as_str().unwrap().to_string();
    let ports = ns.ip(&["-o", "link", "show", "master", "virbr0"]);
    assert!(
        ports.contains(&format!(" {tap}:")),
        "{tap} not on virbr0: {ports}"
    );
    // The live XML names the bridge, as libvirt's does.
    let live = d.ok("GET", "/domains/web/xml", None)["xml"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        live.contains("<source network='lan' bridge='virbr0'/>"),
        "{live}"
    );

    let busy = d.http("POST", "/networks/lan/destroy", Some(&json!({})));
    assert_eq!(busy.status, 409, "{}", busy.body);
    assert!(busy.error().contains("web"), "{}", busy.error());
    // No lease yet (the idle guest asks for none): an empty list.
    assert_eq!(d.ok("GET", "/domains/web/addresses", None), json!([]));

    d.ok("POST", "/domains/web/destroy", Some(&json!({})));
    d.wait_state("web", "shut_off", Duration::from_secs(10));
    d.ok("POST", "/networks/lan/destroy", Some(&json!({})));
    assert!(!ns.link_exists("virbr0"));
    assert!(!ns.link_exists(&tap));
}
