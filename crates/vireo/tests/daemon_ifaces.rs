//! Host interfaces under `vireo daemon`, driven by `vireo virsh` over its
//! socket: `iface-start` makes a bridge with its port and address,
//! `iface-destroy` removes exactly what it made, bad input is one line and
//! changes nothing, and `start mode='onboot'` starts with the daemon.
//!
//! Every daemon here runs in a network namespace the test makes and
//! removes; its veth pairs are made there too, and nothing touches the
//! root namespace. This host's kernel has no VLAN or bonding support:
//! those starts are checked to fail cleanly, then skipped.

mod daemon_harness;
mod virsh_cli;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use daemon_harness::Daemon;
use serde_json::Value;
use virsh_cli::{vireo, Run};

/// A network namespace the test owns, deleted on drop (after the daemon,
/// which is declared after it and so dropped first).
struct Netns {
    name: String,
}

impl Netns {
    fn new(tag: &str) -> Result<Netns, String> {
        let name = format!("vireo-{tag}-{}", std::process::id());
        let out = Command::new("ip")
            .args(["netns", "add", &name])
            .output()
            .map_err(|e| format!("ip: {e}"))?;
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).trim().to_string());
        }
        let ns = Netns { name };
        ns.ip(&["link", "set", "lo", "up"]);
        Ok(ns)
    }

    /// `ip -n NS ARGS`, which must succeed; its stdout.
    fn ip(&self, args: &[&str]) -> String {
        let out = Command::new("ip")
            .args(["-n", &self.name])
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "ip {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The link's one-line description, or `None` when there is none.
    fn link(&self, name: &str) -> Option<String> {
        let out = Command::new("ip")
            .args(["-n", &self.name, "-o", "-d", "link", "show", "dev", name])
            .output()
            .unwrap();
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Whether the link is administratively up.
    fn up(&self, name: &str) -> bool {
        self.link(name).is_some_and(|l| {
            l.split_once('<')
                .and_then(|(_, r)| r.split_once('>'))
                .is_some_and(|(flags, _)| flags.split(',').any(|f| f == "UP"))
        })
    }

    fn master_of(&self, name: &str) -> Option<String> {
        let l = self.link(name)?;
        let mut words = l.split_whitespace();
        words.find(|w| *w == "master")?;
        words.next().map(str::to_string)
    }

    /// Every link, one line each, without the queueing discipline: a
    /// link once up keeps the kernel's default qdisc when it goes down,
    /// which is the kernel's doing, not the daemon's.
    fn links(&self) -> String {
        self.ip(&["-o", "link"])
            .lines()
            .map(without_qdisc)
            .collect::<Vec<_>>()
            .join("\n")
    }

    fn addresses(&self, name: &str) -> String {
        self.ip(&["-o", "addr", "show", "dev", name])
    }

    fn mac(&self, name: &str) -> String {
        let l = self.link(name).unwrap();
        let mut words = l.split_whitespace();
        words.find(|w| *w == "link/ether").unwrap();
        words.next().unwrap().to_string()
    }

    fn veth(&self, a: &str, b: &str) {
        self.ip(&["link", "add", a, "type", "veth", "peer", "name", b]);
    }
}

fn without_qdisc(line: &str) -> String {
    let mut out = Vec::new();
    let mut words = line.split_whitespace();
    while let Some(w) = words.next() {
        if w == "qdisc" {
            words.next();
        } else {
            out.push(w);
        }
    }
    out.join(" ")
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

fn setup(tag: &str) -> Option<(tempfile::TempDir, Netns)> {
    let dir = tempfile::tempdir().unwrap();
    match Netns::new(tag) {
        Ok(ns) => Some((dir, ns)),
        Err(why) => {
            testkit::skip(&format!("cannot make a network namespace: {why}"));
            None
        }
    }
}

fn uri(d: &Daemon) -> String {
    format!("vireo+unix:///system?socket={}", d.socket.display())
}

/// `vireo virsh` against `d`.
fn virsh(d: &Daemon, args: &[&str]) -> Run {
    vireo(&uri(d), args)
}

fn write_xml(dir: &Path, name: &str, xml: &str) -> String {
    let path = dir.join(format!("{name}.xml"));
    std::fs::write(&path, xml).unwrap();
    path.display().to_string()
}

/// Defines `xml`, checking virsh's message.
fn define(d: &Daemon, dir: &Path, name: &str, xml: &str) {
    let file = write_xml(dir, name, xml);
    assert_eq!(
        virsh(d, &["iface-define", &file]).ok(),
        format!("Interface {name} defined from {file}\n\n")
    );
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

const BRIDGE: &str = "<interface type='bridge' name='br-t'>\
    <start mode='none'/><mtu size='1400'/>\
    <protocol family='ipv4'><ip address='192.0.2.1' prefix='24'/></protocol>\
    <protocol family='ipv6'><ip address='2001:db8:7::1' prefix='64'/></protocol>\
    <bridge stp='off' delay='0'><interface type='ethernet' name='ve0'/></bridge></interface>";

#[test]
fn a_bridge_with_a_veth_port_starts_and_destroy_leaves_nothing() {
    let Some((dir, ns)) = setup("if1") else {
        return;
    };
    ns.veth("ve0", "ve1");
    let ve0_before = without_qdisc(&ns.link("ve0").unwrap());
    let mut d = Daemon::start_in(dir.path(), &[], Some(&ns.name));
    define(&d, dir.path(), "br-t", BRIDGE);

    // Defined, not active: listed with --all and --inactive only.
    assert_eq!(
        virsh(&d, &["iface-list", "--all"]).ok(),
        " Name   State      MAC Address\n\
         --------------------------------\n \
         br-t   inactive   \n\n"
    );
    assert!(!virsh(&d, &["iface-list"]).ok().contains("br-t"));
    let inactive: Value =
        serde_json::from_str(virsh(&d, &["iface-list", "--inactive", "--json"]).ok()).unwrap();
    assert_eq!(inactive[0]["name"], "br-t", "{inactive}");
    assert_eq!(inactive[0]["type"], "bridge", "{inactive}");

    assert_eq!(
        virsh(&d, &["iface-start", "br-t"]).ok(),
        "Interface br-t started\n\n"
    );
    let br = ns.link("br-t").expect("the bridge exists");
    assert!(br.contains("bridge"), "{br}");
    assert!(br.contains("mtu 1400"), "{br}");
    assert!(ns.up("br-t"), "{br}");
    let addrs = ns.addresses("br-t");
    assert!(addrs.contains("192.0.2.1/24"), "{addrs}");
    assert!(addrs.contains("2001:db8:7::1/64"), "{addrs}");
    assert_eq!(ns.master_of("ve0").as_deref(), Some("br-t"));
    assert!(ns.up("ve0"));

    // Listed as active with the link's own MAC, which names it back.
    let mac = ns.mac("br-t");
    let list = virsh(&d, &["iface-list"]).ok().to_string();
    assert!(
        list.contains(&format!(" br-t   active   {mac}\n")),
        "{list}"
    );
    assert_eq!(virsh(&d, &["iface-mac", "br-t"]).ok(), format!("{mac}\n\n"));
    assert_eq!(
        virsh(&d, &["iface-name", &mac.to_uppercase()]).ok(),
        "br-t\n\n"
    );
    let xml = virsh(&d, &["iface-dumpxml", "br-t"]).ok().to_string();
    assert!(
        xml.starts_with("<interface type='bridge' name='br-t'>\n"),
        "{xml}"
    );
    assert!(
        xml.contains("<interface type='ethernet' name='ve0'/>"),
        "{xml}"
    );
    assert!(
        xml.contains("<ip address='192.0.2.1' prefix='24'/>"),
        "{xml}"
    );
    let j: Value =
        serde_json::from_str(virsh(&d, &["iface-dumpxml", "br-t", "--json"]).ok()).unwrap();
    assert_eq!(
        j["xml"].as_str().unwrap(),
        xml.trim_end_matches('\n').to_owned() + "\n"
    );

    // Twice is refused, and changes nothing.
    let twice = virsh(&d, &["iface-start", "br-t"]).error();
    assert!(twice.contains("br-t is already active"), "{twice}");
    assert!(ns.up("br-t"));

    // The daemon dies; the next one finds what the start made.
    d.kill9();
    d.spawn();
    assert!(virsh(&d, &["iface-list"]).ok().contains(" br-t   active"));

    assert_eq!(
        virsh(&d, &["iface-destroy", "br-t"]).ok(),
        "Interface br-t destroyed\n\n"
    );
    assert!(ns.link("br-t").is_none(), "{}", ns.ip(&["link"]));
    // The port was the host's: released and as it was, not deleted.
    let ve0 = ns.link("ve0").expect("ve0 is kept");
    assert_eq!(ns.master_of("ve0"), None, "{ve0}");
    assert!(!ns.up("ve0"), "{ve0}");
    assert_eq!(without_qdisc(&ve0), ve0_before, "ve0 changed");
    assert!(!ns.addresses("ve0").contains("192.0.2.1"));

    let again = virsh(&d, &["iface-destroy", "br-t"]).error();
    assert!(again.contains("br-t is not active"), "{again}");
    assert!(virsh(&d, &["iface-list", "--all"])
        .ok()
        .contains(" br-t   inactive"));
    assert_eq!(
        virsh(&d, &["iface-undefine", "br-t"]).ok(),
        "Interface br-t undefined\n\n"
    );
    let gone = virsh(&d, &["iface-dumpxml", "br-t"]).error();
    assert_eq!(
        gone,
        "Interface not found: couldn't find interface named 'br-t'"
    );
    let list: Value =
        serde_json::from_str(virsh(&d, &["iface-list", "--all", "--json"]).ok()).unwrap();
    assert_eq!(list, serde_json::json!([]));
    let run = d.state.join("interface/run/br-t.json");
    assert!(!run.exists(), "{} left behind", run.display());
}

#[test]
fn bad_interface_input_is_one_line_and_changes_nothing() {
    let Some((dir, ns)) = setup("if2") else {
        return;
    };
    ns.veth("ve0", "ve1");
    ns.ip(&["link", "add", "other", "type", "bridge"]);
    ns.ip(&["link", "set", "ve1", "master", "other"]);
    let d = Daemon::start_in(dir.path(), &[], Some(&ns.name));
    let before = ns.links();

    // A port that does not exist: nothing made, not even the bridge.
    define(
        &d,
        dir.path(),
        "br-x",
        "<interface type='bridge' name='br-x'><bridge>\
         <interface type='ethernet' name='ve0'/><interface type='ethernet' name='nosuch0'/>\
         </bridge></interface>",
    );
    let e = virsh(&d, &["iface-start", "br-x"]).error();
    assert_eq!(e, "member nosuch0 of br-x does not exist on the host");

    // A name the host uses for another kind of link: defining is fine,
    // as in libvirt; starting is not.
    define(
        &d,
        dir.path(),
        "ve0",
        "<interface type='bridge' name='ve0'><bridge/></interface>",
    );
    let e = virsh(&d, &["iface-start", "ve0"]).error();
    assert_eq!(
        e,
        "interface ve0: a link named ve0 already exists as a veth device, not a bridge"
    );
    // The same when that link is up: it is not this interface active.
    ns.ip(&["link", "set", "ve0", "up"]);
    let e2 = virsh(&d, &["iface-start", "ve0"]).error();
    assert_eq!(e2, e);
    ns.ip(&["link", "set", "ve0", "down"]);
    define(
        &d,
        dir.path(),
        "other",
        "<interface type='ethernet' name='other'/>",
    );
    let e = virsh(&d, &["iface-start", "other"]).error();
    assert_eq!(
        e,
        "interface other exists as a bridge, not an ethernet device"
    );

    // A port enslaved to another bridge.
    define(
        &d,
        dir.path(),
        "br-y",
        "<interface type='bridge' name='br-y'><bridge><interface type='ethernet' name='ve1'/></bridge></interface>",
    );
    let e = virsh(&d, &["iface-start", "br-y"]).error();
    assert_eq!(e, "member ve1 of br-y is already enslaved to other");

    // A VLAN whose parent is missing (checked before the kernel is asked,
    // so the answer is the same with or without 8021q).
    define(
        &d,
        dir.path(),
        "nosuch2.5",
        "<interface type='vlan' name='nosuch2.5'><vlan tag='5'><interface name='nosuch2'/></vlan></interface>",
    );
    let e = virsh(&d, &["iface-start", "nosuch2.5"]).error();
    assert_eq!(
        e,
        "interface nosuch2.5: its VLAN parent nosuch2 does not exist on the host"
    );
    define(
        &d,
        dir.path(),
        "eth9",
        "<interface type='ethernet' name='eth9'/>",
    );
    let e = virsh(&d, &["iface-start", "eth9"]).error();
    assert_eq!(e, "interface eth9 does not exist on the host");

    // Two definitions may share a port, but only one can have it.
    define(
        &d,
        dir.path(),
        "br-z",
        "<interface type='bridge' name='br-z'><bridge><interface type='ethernet' name='ve0'/></bridge></interface>",
    );
    virsh(&d, &["iface-start", "br-z"]).ok();
    let e = virsh(&d, &["iface-start", "br-x"]).error();
    assert_eq!(e, "member ve0 of br-x is already enslaved to br-z");
    virsh(&d, &["iface-destroy", "br-z"]).ok();

    // Destroying what is not active; unknown names.
    let e = virsh(&d, &["iface-destroy", "br-x"]).error();
    assert!(e.contains("br-x is not active"), "{e}");
    let e = virsh(&d, &["iface-start", "nosuch"]).error();
    assert_eq!(
        e,
        "Interface not found: couldn't find interface named 'nosuch'"
    );
    let e = virsh(&d, &["iface-name", "52:54:00:aa:bb:cc"]).error();
    assert!(
        e.contains("couldn't find interface with MAC address"),
        "{e}"
    );

    // Untrusted XML: one line, with the element's path and position.
    let file = write_xml(
        dir.path(),
        "dhcp",
        "<interface type='ethernet' name='ve0'>\n  <protocol family='ipv4'>\n    <dhcp/>\n  </protocol>\n</interface>",
    );
    let e = virsh(&d, &["iface-define", &file]).error();
    assert!(
        e.starts_with("/interface/protocol/dhcp (line 3, column 5): <dhcp> is not supported"),
        "{e}"
    );
    let file = write_xml(
        dir.path(),
        "broken",
        "<interface type='bridge' name='b'><bridge>",
    );
    let e = virsh(&d, &["iface-define", &file]).error();
    assert!(e.contains("malformed XML"), "{e}");

    assert_eq!(ns.links(), before, "the host's links changed");
    let runs = std::fs::read_dir(d.state.join("interface/run"))
        .unwrap()
        .count();
    assert_eq!(runs, 0, "a run record was left");
}

/// Starts `name`; on a kernel without the device type, checks that the
/// refusal is one line and nothing was left, and returns the reason.
fn start_or_unsupported(
    d: &Daemon,
    ns: &Netns,
    name: &str,
    kind: &str,
    before: &str,
) -> Option<String> {
    let r = virsh(d, &["iface-start", name]);
    if r.code == Some(0) {
        return None;
    }
    let e = r.error();
    assert!(
        e.contains(&format!("this kernel has no support for {kind} devices")),
        "{e}"
    );
    assert_eq!(ns.links(), before, "a failed start left links");
    // What the start noted as it went was undone, and the notes removed.
    let records = std::fs::read_dir(d.state.join("interface/run"))
        .unwrap()
        .count();
    assert_eq!(records, 0, "a failed start left its run record");
    Some(e)
}

#[test]
fn a_vlan_on_a_veth_and_a_bridge_over_it() {
    let Some((dir, ns)) = setup("if3") else {
        return;
    };
    ns.veth("ve0", "ve1");
    ns.veth("ve2", "ve3");
    let d = Daemon::start_in(dir.path(), &[], Some(&ns.name));
    let before = ns.links();
    // A bridge whose second port is a VLAN: the bridge and its first
    // port are made before the VLAN fails, and must be undone.
    define(
        &d,
        dir.path(),
        "br-v",
        "<interface type='bridge' name='br-v'><bridge>\
         <interface type='ethernet' name='ve2'/>\
         <interface type='vlan' name='ve0.42'><vlan tag='42'><interface name='ve0'/></vlan></interface>\
         </bridge></interface>",
    );
    if let Some(why) = start_or_unsupported(&d, &ns, "br-v", "vlan", &before) {
        assert_eq!(ns.master_of("ve2"), None);
        define(
            &d,
            dir.path(),
            "ve0.7",
            "<interface type='vlan' name='ve0.7'><vlan tag='7'><interface name='ve0'/></vlan></interface>",
        );
        start_or_unsupported(&d, &ns, "ve0.7", "vlan", &before);
        testkit::skip(&why);
        return;
    }
    assert_eq!(ns.master_of("ve0.42").as_deref(), Some("br-v"));
    assert!(ns
        .link("ve0.42")
        .unwrap()
        .contains("vlan protocol 802.1Q id 42"));
    virsh(&d, &["iface-destroy", "br-v"]).ok();
    assert_eq!(ns.links(), before);

    define(
        &d,
        dir.path(),
        "ve0.7",
        "<interface type='vlan' name='ve0.7'>\
         <protocol family='ipv4'><ip address='198.51.100.7' prefix='24'/></protocol>\
         <vlan tag='7'><interface name='ve0'/></vlan></interface>",
    );
    virsh(&d, &["iface-start", "ve0.7"]).ok();
    assert!(ns.up("ve0.7"));
    assert!(ns.addresses("ve0.7").contains("198.51.100.7/24"));
    virsh(&d, &["iface-destroy", "ve0.7"]).ok();
    assert!(ns.link("ve0.7").is_none());
}

#[test]
fn a_bond_of_two_veths() {
    let Some((dir, ns)) = setup("if4") else {
        return;
    };
    ns.veth("ve0", "ve1");
    ns.veth("ve2", "ve3");
    ns.ip(&["link", "set", "ve0", "up"]);
    let d = Daemon::start_in(dir.path(), &[], Some(&ns.name));
    let before = ns.links();
    define(
        &d,
        dir.path(),
        "bond0",
        "<interface type='bond' name='bond0'>\
         <protocol family='ipv4'><ip address='203.0.113.5' prefix='24'/></protocol>\
         <bond mode='active-backup'><miimon freq='100'/>\
         <interface type='ethernet' name='ve0'/><interface type='ethernet' name='ve2'/>\
         </bond></interface>",
    );
    if let Some(why) = start_or_unsupported(&d, &ns, "bond0", "bond", &before) {
        assert!(ns.up("ve0"), "ve0 was up and must stay so");
        testkit::skip(&why);
        return;
    }
    assert_eq!(ns.master_of("ve0").as_deref(), Some("bond0"));
    assert_eq!(ns.master_of("ve2").as_deref(), Some("bond0"));
    assert!(ns.addresses("bond0").contains("203.0.113.5/24"));
    virsh(&d, &["iface-destroy", "bond0"]).ok();
    assert!(ns.link("bond0").is_none());
    assert_eq!(ns.master_of("ve0"), None);
    // Up before, up after; down before, down after.
    assert!(ns.up("ve0"));
    assert!(!ns.up("ve2"));
}

#[test]
fn onboot_interfaces_start_with_the_daemon() {
    let Some((dir, ns)) = setup("if5") else {
        return;
    };
    ns.veth("ve0", "ve1");
    let mut d = Daemon::start_in(dir.path(), &[], Some(&ns.name));
    define(
        &d,
        dir.path(),
        "ve0",
        "<interface type='ethernet' name='ve0'><start mode='onboot'/>\
         <mac address='52:54:00:00:00:42'/><mtu size='1300'/>\
         <protocol family='ipv4'><ip address='169.254.10.1' prefix='16'/></protocol></interface>",
    );
    assert!(!ns.up("ve0"), "define alone starts nothing");
    d.terminate();
    d.spawn();
    assert!(
        wait_until(Duration::from_secs(10), || ns.up("ve0")),
        "{}",
        d.log_text()
    );
    let l = ns.link("ve0").unwrap();
    assert!(
        l.contains("mtu 1300") && l.contains("52:54:00:00:00:42"),
        "{l}"
    );
    assert!(ns.addresses("ve0").contains("169.254.10.1/16"));
    assert_eq!(
        virsh(&d, &["iface-name", "52:54:00:00:00:42"]).ok(),
        "ve0\n\n"
    );
    // Undefined while up, it stays listed (not persistent) until it is
    // destroyed; a physical device is then taken down and put back as
    // it was.
    virsh(&d, &["iface-undefine", "ve0"]).ok();
    let list: Value = serde_json::from_str(virsh(&d, &["iface-list", "--json"]).ok()).unwrap();
    assert_eq!(list[0]["name"], "ve0", "{list}");
    assert_eq!(list[0]["persistent"], false, "{list}");
    assert_eq!(list[0]["active"], true, "{list}");
    virsh(&d, &["iface-destroy", "ve0"]).ok();
    assert!(!virsh(&d, &["iface-list", "--all"]).ok().contains("ve0"));
    let after = ns.link("ve0").expect("ve0 is not deleted");
    assert!(!ns.up("ve0"), "{after}");
    assert!(!after.contains("mtu 1300"), "{after}");
    assert!(!after.contains("52:54:00:00:00:42"), "{after}");
    assert!(!ns.addresses("ve0").contains("169.254.10.1"));
}

#[test]
fn a_record_from_an_earlier_boot_is_never_played_back() {
    let Some((dir, ns)) = setup("if6") else {
        return;
    };
    ns.veth("ve0", "ve1");
    let mut d = Daemon::start_in(dir.path(), &[], Some(&ns.name));
    define(&d, dir.path(), "br-t", BRIDGE);
    virsh(&d, &["iface-start", "br-t"]).ok();
    d.kill9();
    // As if the host had rebooted since: the links the record names
    // would be other links now.
    let path = d.state.join("interface/run/br-t.json");
    let mut record: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    assert!(record["boot_id"].as_str().is_some_and(|b| !b.is_empty()));
    record["boot_id"] = Value::from("00000000-0000-0000-0000-000000000000");
    std::fs::write(&path, serde_json::to_vec(&record).unwrap()).unwrap();
    d.spawn();
    assert!(!path.exists(), "the stale record was kept");
    // Active (it is up), but not the daemon's: destroy only takes it down.
    assert!(virsh(&d, &["iface-list"]).ok().contains(" br-t   active"));
    virsh(&d, &["iface-destroy", "br-t"]).ok();
    assert!(
        ns.link("br-t").is_some(),
        "a bridge it did not make was deleted"
    );
    assert!(!ns.up("br-t"));
    assert_eq!(ns.master_of("ve0").as_deref(), Some("br-t"));
}

/// `iface-edit` with `$VISUAL` set to `editor`.
fn edit_with(d: &Daemon, editor: &str) -> Run {
    let mut c = virsh_cli::vireo_command(&uri(d), &["iface-edit", "br-t"]);
    c.env("VISUAL", editor);
    virsh_cli::run_command(c, b"", virsh_cli::RUN_LIMIT)
}

#[test]
fn iface_edit_changes_the_definition_not_the_running_interface() {
    let Some((dir, ns)) = setup("if7") else {
        return;
    };
    ns.veth("ve0", "ve1");
    let d = Daemon::start_in(dir.path(), &[], Some(&ns.name));
    define(&d, dir.path(), "br-t", BRIDGE);
    virsh(&d, &["iface-start", "br-t"]).ok();

    assert_eq!(
        edit_with(&d, "true").ok(),
        "Interface br-t XML configuration not changed.\n\n"
    );
    assert_eq!(
        edit_with(&d, "sed -i s/1400/1300/").ok(),
        "Interface br-t XML configuration edited.\n\n"
    );
    let live = virsh(&d, &["iface-dumpxml", "br-t"]).ok().to_string();
    assert!(live.contains("<mtu size='1400'/>"), "{live}");
    let defined = virsh(&d, &["iface-dumpxml", "br-t", "--inactive"])
        .ok()
        .to_string();
    assert!(defined.contains("<mtu size='1300'/>"), "{defined}");

    // An edit the parser refuses leaves the definition as it was.
    let e = edit_with(&d, "sed -i s/ipv6/ipx/").error();
    assert!(
        e.contains("family 'ipx' must be ipv4 or ipv6")
            && e.ends_with("; interface br-t is unchanged"),
        "{e}"
    );
    let again = virsh(&d, &["iface-dumpxml", "br-t", "--inactive"])
        .ok()
        .to_string();
    assert_eq!(again, defined);

    virsh(&d, &["iface-destroy", "br-t"]).ok();
    assert!(ns.link("br-t").is_none());
    // Started again, it runs the edited definition.
    virsh(&d, &["iface-start", "br-t"]).ok();
    assert!(ns.link("br-t").unwrap().contains("mtu 1300"));
    virsh(&d, &["iface-destroy", "br-t"]).ok();
}
