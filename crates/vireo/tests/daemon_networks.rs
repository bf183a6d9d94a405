//! Virtual networks under `vireo daemon`: a network's bridge, addresses,
//! nftables table and dnsmasq come and go with `net-start` and
//! `net-destroy`, survive a daemon restart, and a domain's `type='network'`
//! NIC is plugged into the bridge.
//!
//! Every daemon here runs in a network namespace the test makes and
//! removes; nothing touches the root namespace. Addresses are from the
//! documentation ranges.

mod daemon_harness;
mod netlab;

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

/// The pids the dnsmasq pid files under `state` name.
fn pidfile_pids(state: &Path) -> Vec<u32> {
    let Ok(dirs) = std::fs::read_dir(state.join("network/private")) else {
        return Vec::new();
    };
    dirs.filter_map(|e| {
        let text = std::fs::read_to_string(e.ok()?.path().join("dnsmasq.pid")).ok()?;
        text.trim().parse().ok()
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
    // dnsmasq forks its server: the one to see is the one its pid file
    // names, not the parent on its way out.
    let restarted = wait_until(Duration::from_secs(10), || {
        let now = dnsmasq_pids(&d.state);
        now.len() == 1 && now != first && pidfile_pids(&d.state) == now
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

/// An "upstream" namespace (the world beyond the daemon's host) joined to
/// `host` by a veth: 198.51.100.1 on the host's end, 198.51.100.2 on its
/// own, where an echo server listens on port 7000. `routes` are routed
/// back through the host (a routed network's subnet).
fn upstream(host: &Netns, dir: &Path, routes: &[&str]) -> Netns {
    let up = Netns::new(&format!("{}-up", host.name), dir).expect("upstream namespace");
    let out = Command::new("ip")
        .args(["-n", &host.name, "link", "add", "upl0", "type", "veth"])
        .args(["peer", "name", "upl1", "netns", &up.name])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    host.ip(&["addr", "add", "198.51.100.1/24", "dev", "upl0"]);
    host.ip(&["link", "set", "upl0", "up"]);
    up.ip(&["addr", "add", "198.51.100.2/24", "dev", "upl1"]);
    up.ip(&["link", "set", "upl1", "up"]);
    for r in routes {
        up.ip(&["route", "add", r, "via", "198.51.100.1"]);
    }
    up
}

/// A domain running the `virtio` guest's network stack with `cmdline` on
/// network `net`; its debug-console lines go to `out` through a virtio
/// console.
fn stack_guest(name: &str, net: &str, mac: &str, cmdline: &str, out: &Path) -> String {
    domain_xml(name, "virtio", "")
        .replace(
            "<memory unit='MiB'>32</memory>",
            "<memory unit='MiB'>64</memory>",
        )
        .replace(
            "</os>",
            &format!("<cmdline>mirror net.timeout-ms=20000 {cmdline}</cmdline></os>"),
        )
        .replace(
            "<devices>",
            &format!(
                "<devices><interface type='network'><source network='{net}'/>\
                 <mac address='{mac}'/><model type='virtio'/></interface>\
                 <console type='file'><source path='{}'/><target type='virtio'/></console>",
                out.display()
            ),
        )
}

/// Waits (60 s at most) for a line of `out` starting with `prefix`; the
/// whole text, or a panic with what there was.
fn wait_line(out: &Path, prefix: &str) -> String {
    let mut text = String::new();
    let found = wait_until(Duration::from_secs(60), || {
        text = std::fs::read_to_string(out).unwrap_or_default();
        text.lines().any(|l| l.starts_with(prefix))
    });
    assert!(found, "no '{prefix}' line from the guest:\n{text}");
    text
}

/// The virsh verbs of `vireo` against daemon `d`; (exit code, stdout,
/// stderr).
fn virsh(d: &Daemon, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_vireo"))
        .env_remove("VIREO_DEFAULT_URI")
        .arg("-c")
        .arg(format!(
            "vireo+unix:///system?socket={}",
            d.socket.display()
        ))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn a_guest_on_a_nat_network_gets_a_lease_a_name_and_the_world_masqueraded() {
    if !have_kvm() {
        testkit::skip("no /dev/kvm");
        return;
    }
    let Some((dir, ns)) = setup("net4") else {
        return;
    };
    let up = upstream(&ns, dir.path(), &[]);
    let served = netlab::echo_server(&up.name, "198.51.100.2:7000".parse().unwrap(), 1);
    let d = Daemon::start_in(dir.path(), &[], Some(&ns.name));
    d.ok(
        "POST",
        "/networks",
        Some(&json!({ "xml": nat_network("lan") })),
    );
    d.ok("POST", "/networks/lan/start", None);

    let out = dir.path().join("g.out");
    let bytes = 100_000u64;
    d.define(&stack_guest(
        "g",
        "lan",
        "52:54:00:00:00:42",
        &format!(
            "net.dhcp net.resolve=seven.example net.tcp=198.51.100.2:7000,bytes={bytes} net.serve=7001"
        ),
        &out,
    ));
    d.ok("POST", "/domains/g/start", Some(&json!({})));
    let text = wait_line(&out, "virtio: serve listening");

    // The lease: from the range, the bridge as router and DNS server.
    let ip = netlab::field(&text, "virtio: dhcp ip=", "ip=").unwrap_or_else(|| panic!("{text}"));
    let (addr, prefix) = ip.split_once('/').unwrap();
    assert_eq!(prefix, "24", "{text}");
    let last: u8 = addr.strip_prefix("192.0.2.").unwrap().parse().unwrap();
    assert!((100..=150).contains(&last), "{text}");
    assert!(
        text.contains(&format!(
            "virtio: dhcp ip={addr}/24 router=192.0.2.1 dns=192.0.2.1"
        )),
        "{text}"
    );
    // A dns/host name, answered by the network's dnsmasq.
    assert!(
        text.contains("virtio: resolve seven.example=192.0.2.7"),
        "{text}"
    );
    // Upstream, through NAT: every byte back, from the host's address.
    let hash = netlab::pattern_hash(bytes);
    assert!(
        text.contains(&format!(
            "virtio: tcp 198.51.100.2:7000 sent={bytes} received={bytes} sent-hash={hash} received-hash={hash}"
        )),
        "{text}"
    );
    let (peer, got, _) = served.recv_timeout(Duration::from_secs(10)).unwrap();
    assert_eq!(got, bytes);
    assert_eq!(peer.ip().to_string(), "198.51.100.1", "not masqueraded");

    // The lease as virsh shows it.
    let leases = d.ok("GET", "/networks/lan/leases", None);
    let lease = leases
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["mac"] == "52:54:00:00:00:42")
        .unwrap_or_else(|| panic!("{leases}"));
    assert_eq!(lease["address"], addr, "{leases}");
    assert_eq!(lease["prefix"], 24, "{leases}");
    let (code, table, err) = virsh(&d, &["net-dhcp-leases", "lan"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        table.lines().any(|l| l.contains("52:54:00:00:00:42")
            && l.contains(&format!("{addr}/24"))
            && l.contains("ipv4")),
        "{table}"
    );
    let (code, table, err) = virsh(&d, &["domifaddr", "g"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        table
            .lines()
            .any(|l| l.contains("52:54:00:00:00:42") && l.contains(&format!("{addr}/24"))),
        "{table}"
    );

    // And in, from the host to the guest's leased address.
    let back = netlab::exchange(
        &ns.name,
        format!("{addr}:7001").parse().unwrap(),
        b"hello-guest",
    )
    .unwrap_or_else(|e| {
        panic!(
            "{e}\nguest:\n{}\nstats: {}",
            std::fs::read_to_string(&out).unwrap_or_default(),
            d.http("GET", "/domains/g/stats", None).body
        )
    });
    assert_eq!(back, b"hello-guest");
    let text = wait_line(&out, "virtio: serve port=7001");
    assert!(text.contains("received=11"), "{text}");
    d.wait_state("g", "shut_off", Duration::from_secs(30));
}

/// A network on 203.0.113.0/24 (or `subnet`.0/24) with DHCP from .100 to
/// .150 and `forward` (empty: isolated) and a fixed address for `fixed`.
fn dhcp_network(name: &str, subnet: &str, forward: &str, fixed: (&str, &str)) -> String {
    format!(
        "<network><name>{name}</name>{forward}\
         <ip address='{subnet}.1' prefix='24'>\
         <dhcp><range start='{subnet}.100' end='{subnet}.150'/>\
         <host mac='{}' ip='{subnet}.{}'/></dhcp></ip></network>",
        fixed.0, fixed.1
    )
}

#[test]
fn routed_networks_keep_the_guest_address_and_isolated_ones_only_join_guests() {
    if !have_kvm() {
        testkit::skip("no /dev/kvm");
        return;
    }
    let Some((dir, ns)) = setup("net5") else {
        return;
    };
    let up = upstream(&ns, dir.path(), &["203.0.113.0/24"]);
    // Two connections: the second stays open for one from the isolated
    // network, which must never come.
    let served = netlab::echo_server(&up.name, "198.51.100.2:7000".parse().unwrap(), 2);
    let d = Daemon::start_in(dir.path(), &[], Some(&ns.name));
    for xml in [
        dhcp_network(
            "routed",
            "203.0.113",
            "<forward mode='route'/>",
            ("52:54:00:00:01:01", "7"),
        ),
        dhcp_network("iso", "192.0.2", "", ("52:54:00:00:02:01", "51")),
    ] {
        let name = if xml.contains("routed") {
            "routed"
        } else {
            "iso"
        };
        d.ok("POST", "/networks", Some(&json!({ "xml": xml })));
        d.ok("POST", &format!("/networks/{name}/start"), None);
    }

    // Routed: upstream sees the guest's own (fixed) address.
    let out_r = dir.path().join("r.out");
    d.define(&stack_guest(
        "r",
        "routed",
        "52:54:00:00:01:01",
        "net.dhcp net.tcp=198.51.100.2:7000,bytes=3000",
        &out_r,
    ));
    d.ok("POST", "/domains/r/start", Some(&json!({})));
    let text = wait_line(&out_r, "virtio: tcp");
    assert!(
        text.contains("virtio: dhcp ip=203.0.113.7/24 router=203.0.113.1"),
        "{text}"
    );
    assert!(
        text.contains("virtio: tcp 198.51.100.2:7000 sent=3000 received=3000"),
        "{text}"
    );
    let (peer, got, _) = served.recv_timeout(Duration::from_secs(10)).unwrap();
    assert_eq!((peer.ip().to_string(), got), ("203.0.113.7".into(), 3000));

    // Isolated: two guests reach each other, no router is offered and
    // nothing gets out.
    let out_s = dir.path().join("s.out");
    let out_t = dir.path().join("t.out");
    d.define(&stack_guest(
        "s",
        "iso",
        "52:54:00:00:02:01",
        "net.dhcp net.serve=7001",
        &out_s,
    ));
    d.define(&stack_guest(
        "t",
        "iso",
        "52:54:00:00:02:02",
        "net.dhcp net.tcp=192.0.2.51:7001,bytes=20000",
        &out_t,
    ));
    d.ok("POST", "/domains/s/start", Some(&json!({})));
    wait_line(&out_s, "virtio: serve listening");
    d.ok("POST", "/domains/t/start", Some(&json!({})));
    let text = wait_line(&out_t, "virtio: tcp");
    let hash = netlab::pattern_hash(20_000);
    assert!(
        text.contains(&format!(
            "virtio: tcp 192.0.2.51:7001 sent=20000 received=20000 sent-hash={hash} received-hash={hash}"
        )),
        "{text}"
    );
    assert!(text.contains(" router=- "), "{text}");
    let text = wait_line(&out_s, "virtio: serve port=7001");
    assert!(text.contains("received=20000"), "{text}");
    d.wait_state("t", "shut_off", Duration::from_secs(30));

    // Even with a route forced into it, the host forwards nothing for an
    // isolated network.
    let out_u = dir.path().join("u.out");
    d.define(&stack_guest(
        "u",
        "iso",
        "52:54:00:00:02:03",
        "net.ip=192.0.2.60/24,gw=192.0.2.1 net.tcp=198.51.100.2:7000,bytes=100 net.timeout-ms=3000",
        &out_u,
    ));
    d.ok("POST", "/domains/u/start", Some(&json!({})));
    let text = wait_line(&out_u, "virtio: tcp");
    assert!(
        text.contains("virtio: tcp FAIL 198.51.100.2:7000"),
        "{text}"
    );
    assert!(
        served.recv_timeout(Duration::from_millis(100)).is_err(),
        "a connection from the isolated network reached upstream"
    );
}

/// A DHCPv6 client for the test (busybox has no udhcpc6 in Debian): sends
/// Solicit on IFACE until dnsmasq answers with an Advertise, then prints
/// the address its IA_NA offers. Exit 1: no answer; 2: no address in it.
const DHCPV6_SOLICIT: &str = r#"
import os, socket, struct, sys, time
ifname = sys.argv[1]
idx = socket.if_nametoindex(ifname)
mac = bytes.fromhex(open(f"/sys/class/net/{ifname}/address").read().strip().replace(":", ""))
def opt(code, data):
    return struct.pack("!HH", code, len(data)) + data
xid = os.urandom(3)
msg = (bytes([1]) + xid + opt(1, struct.pack("!HH", 3, 1) + mac)
       + opt(3, struct.pack("!III", 1, 0, 0)) + opt(8, b"\0\0"))
s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.setsockopt(socket.SOL_SOCKET, 25, ifname.encode())
s.bind(("::", 546))
s.settimeout(1)
deadline = time.time() + 30
while time.time() < deadline:
    try:
        s.sendto(msg, ("ff02::1:2", 547, 0, idx))
    except OSError:
        time.sleep(0.5)
        continue
    try:
        data, _ = s.recvfrom(4096)
    except socket.timeout:
        continue
    if data[0] != 2 or data[1:4] != xid:
        continue
    i = 4
    while i + 4 <= len(data):
        code, n = struct.unpack("!HH", data[i:i + 4])
        body = data[i + 4:i + 4 + n]
        i += 4 + n
        j = 12
        while code == 3 and j + 4 <= len(body):
            c, m = struct.unpack("!HH", body[j:j + 4])
            if c == 5:
                print(socket.inet_ntop(socket.AF_INET6, body[j + 4:j + 20]))
                sys.exit(0)
            j += 4 + m
    print("an Advertise with no address: " + data.hex())
    sys.exit(2)
print("no Advertise within 30 s")
sys.exit(1)
"#;

/// DHCPv6 on an IPv6 network: dnsmasq (with router advertisements) offers
/// a client on the network's bridge an address from the IPv6 range, and
/// the lease a client takes is listed by net-dhcp-leases under its MAC.
#[test]
fn an_ipv6_network_offers_addresses_from_its_dhcpv6_range() {
    let Some((dir, ns)) = setup("v6") else {
        return;
    };
    let client = match Netns::new("v6c", dir.path()) {
        Ok(c) => c,
        Err(why) => {
            testkit::skip(&format!("cannot make a network namespace: {why}"));
            return;
        }
    };
    let d = Daemon::start_in(dir.path(), &[], Some(&ns.name));
    let xml = "<network><name>six</name><bridge name='vbr6' stp='off'/>\
               <ip family='ipv6' address='2001:db8:6::1' prefix='64'>\
               <dhcp><range start='2001:db8:6::100' end='2001:db8:6::1ff'/></dhcp></ip></network>";
    d.ok("POST", "/networks", Some(&json!({ "xml": xml })));
    d.ok("POST", "/networks/six/start", None);
    let conf = std::fs::read_to_string(d.state.join("network/private/six/dnsmasq.conf"))
        .unwrap_or_default();
    ns.ip(&[
        "link",
        "add",
        "c6",
        "type",
        "veth",
        "peer",
        "name",
        "eth0",
        "netns",
        &client.name,
    ]);
    ns.ip(&["link", "set", "c6", "master", "vbr6", "up"]);
    client.ip(&["link", "set", "eth0", "up"]);
    let (ok, out) = client.exec(&["python3", "-c", DHCPV6_SOLICIT, "eth0"]);
    assert!(
        ok,
        "no DHCPv6 offer: {out}\ndnsmasq.conf:\n{conf}\n{}",
        d.log_text()
    );
    let offered: std::net::Ipv6Addr = out.trim().parse().expect("an IPv6 address");
    let (lo, hi): (std::net::Ipv6Addr, std::net::Ipv6Addr) = (
        "2001:db8:6::100".parse().unwrap(),
        "2001:db8:6::1ff".parse().unwrap(),
    );
    assert!(
        lo <= offered && offered <= hi,
        "{offered} is outside the range"
    );

    // A whole exchange (Solicit, Advertise, Request, Reply) by ISC's
    // dhclient leaves a lease that net-dhcp-leases lists under the
    // client's MAC, which dnsmasq knows only through the client's
    // link-layer DUID. `-sf /bin/true`: the lease is what is checked, and
    // dhclient's own script would rewrite the host's /etc/resolv.conf.
    if !Command::new("sh")
        .args(["-c", "command -v dhclient"])
        .output()
        .is_ok_and(|o| o.status.success())
    {
        testkit::skip("dhclient is not installed (scripts/test.sh installs isc-dhcp-client)");
        return;
    }
    let lf = dir.path().join("dhclient6.leases");
    let pf = dir.path().join("dhclient6.pid");
    let (ok, out) = client.exec(&[
        "timeout",
        "60",
        "dhclient",
        "-6",
        "-1",
        "-v",
        "-sf",
        "/bin/true",
        "-lf",
        lf.to_str().unwrap(),
        "-pf",
        pf.to_str().unwrap(),
        "eth0",
    ]);
    assert!(ok, "dhclient -6 got no lease: {out}\n{}", d.log_text());
    let mac = client.exec(&["cat", "/sys/class/net/eth0/address"]).1;
    let mac = mac.trim();
    let mut listed = String::new();
    let found = wait_until(Duration::from_secs(10), || {
        listed = virsh(&d, &["net-dhcp-leases", "six"]).1;
        listed
            .lines()
            .any(|l| l.contains(mac) && l.contains("ipv6"))
    });
    assert!(
        found,
        "no ipv6 lease for {mac} in:\n{listed}\ndhclient: {out}\ndnsmasq.conf:\n{conf}\nlease file: {}",
        std::fs::read_to_string(d.state.join("network/private/six/leases")).unwrap_or_default()
    );
    let line = listed.lines().find(|l| l.contains(mac)).unwrap();
    let addr = line
        .split_whitespace()
        .find_map(|w| w.split_once('/'))
        .map(|(a, p)| (a.parse::<std::net::Ipv6Addr>(), p))
        .unwrap_or_else(|| panic!("no address/prefix in {line}"));
    let (Ok(leased), "64") = addr else {
        panic!("not an IPv6 address with /64: {line}");
    };
    assert!(
        lo <= leased && leased <= hi,
        "{leased} is outside the range"
    );
    let (rc, json_out, _) = virsh(&d, &["net-dhcp-leases", "six", "--mac", mac, "--json"]);
    assert_eq!(rc, 0, "{json_out}");
    let v: Value = serde_json::from_str(&json_out).unwrap();
    assert_eq!(v[0]["protocol"], "ipv6", "{v}");
    assert_eq!(v[0]["address"], leased.to_string(), "{v}");

    d.ok("POST", "/networks/six/destroy", Some(&json!({})));
    assert!(!ns.link_exists("vbr6"), "{}", ns.ip(&["link"]));
}
