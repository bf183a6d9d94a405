//! Every network fixture parses, and writing it back and parsing again
//! gives the same model; each refused one fails with one line naming
//! its element and position.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use virtxml::{ForwardMode, Network};

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

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

#[test]
fn every_network_fixture_round_trips() {
    let all = fixtures("network-");
    assert!(all.len() >= 6, "{all:?}");
    for path in all {
        let xml = std::fs::read_to_string(&path).unwrap();
        let first = Network::parse(&xml)
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
            .network;
        let written = first.to_xml();
        let second = Network::parse(&written)
            .unwrap_or_else(|e| panic!("{}: rewritten: {e}\n{written}", path.display()));
        assert!(second.warnings.is_empty(), "{:?}", second.warnings);
        assert_eq!(first, second.network, "{}:\n{written}", path.display());
        assert_eq!(written, second.network.to_xml(), "{}", path.display());
    }
}

#[test]
fn libvirts_stock_default_network_is_accepted_as_it_is() {
    let parsed = Network::parse(&read("network-default.xml")).unwrap();
    assert!(parsed.warnings.is_empty(), "{:?}", parsed.warnings);
    let n = parsed.network;
    assert_eq!(n.name, "default");
    // `<forward/>` without a mode is NAT, as in libvirt.
    assert_eq!(n.forward.as_ref().unwrap().mode, ForwardMode::Nat);
    assert_eq!(n.bridge.as_ref().unwrap().name.as_deref(), Some("virbr0"));
    assert_eq!(n.ips.len(), 1);
    assert_eq!(n.ips[0].address, ip("192.168.122.1"));
    assert_eq!(n.ips[0].prefix, 24);
    let dhcp = n.ips[0].dhcp.as_ref().unwrap();
    assert_eq!(dhcp.ranges.len(), 1);
    assert_eq!(dhcp.ranges[0].start, ip("192.168.122.2"));
    assert_eq!(dhcp.ranges[0].end, ip("192.168.122.254"));
    // The UUID is generated, and differs between two parses.
    let again = Network::parse(&read("network-default.xml"))
        .unwrap()
        .network;
    assert_ne!(n.uuid, again.uuid);
    // What libvirt's net-dumpxml writes for it parses to the same network.
    let dumped = Network::parse(&read("network-default-dumpxml.xml"))
        .unwrap()
        .network;
    assert_eq!(dumped.ips, n.ips);
    assert_eq!(
        dumped.forward.unwrap().nat.unwrap().ports,
        Some((1024, 65535))
    );
    // The normalised form written back.
    let expected = format!(
        "<network>\n  <name>default</name>\n  <uuid>{}</uuid>\n  <forward mode='nat'/>\n  <bridge name='virbr0'/>\n  <ip family='ipv4' address='192.168.122.1' prefix='24'>\n    <dhcp>\n      <range start='192.168.122.2' end='192.168.122.254'/>\n    </dhcp>\n  </ip>\n</network>\n",
        n.uuid
    );
    assert_eq!(n.to_xml(), expected);
}

#[test]
fn routed_fixture_reads_every_family() {
    let n = Network::parse(&read("network-routed.xml")).unwrap().network;
    let f = n.forward.as_ref().unwrap();
    assert_eq!(f.mode, ForwardMode::Route);
    assert_eq!(f.dev.as_deref(), Some("eth0"));
    let b = n.bridge.as_ref().unwrap();
    assert_eq!((b.stp, b.delay), (Some(false), Some(0)));
    assert_eq!(n.mtu, Some(1500));
    let d = n.domain.as_ref().unwrap();
    assert_eq!((d.name.as_str(), d.local_only), ("lab.example", Some(true)));
    let dns = n.dns.as_ref().unwrap();
    assert_eq!(dns.forwarders.len(), 2);
    assert_eq!(dns.forwarders[1].domain.as_deref(), Some("corp.example"));
    assert_eq!(dns.hosts[0].hostnames, ["db", "db.lab.example"]);
    let dhcp = n.ips[0].dhcp.as_ref().unwrap();
    assert_eq!(dhcp.ranges[0].lease_seconds, Some(3600));
    assert_eq!(dhcp.hosts.len(), 2);
    assert_eq!(dhcp.hosts[0].name.as_deref(), Some("db"));
    assert_eq!(dhcp.hosts[1].mac.unwrap().to_string(), "52:54:00:aa:bb:02");
}

#[test]
fn isolated_ipv6_and_bridge_mode_fixtures() {
    let n = Network::parse(&read("network-isolated-ipv6.xml"))
        .unwrap()
        .network;
    assert!(n.is_isolated());
    assert_eq!(n.ips.len(), 2);
    assert!(n.ips[1].is_ipv6());
    assert_eq!(n.ips[1].prefix, 64);
    let h = &n.ips[1].dhcp.as_ref().unwrap().hosts[0];
    assert_eq!((h.name.as_deref(), h.mac), (Some("web"), None));

    let b = Network::parse(&read("network-bridge-mode.xml"))
        .unwrap()
        .network;
    assert_eq!(b.forward.unwrap().mode, ForwardMode::Bridge);
    assert_eq!(b.bridge.unwrap().name.as_deref(), Some("br0"));
    assert!(b.ips.is_empty());

    let n = Network::parse(&read("network-nat-ranges.xml"))
        .unwrap()
        .network;
    let nat = n.forward.clone().unwrap().nat.unwrap();
    assert_eq!(
        nat.addresses,
        Some(("192.0.2.10".parse().unwrap(), "192.0.2.20".parse().unwrap()))
    );
    assert_eq!(nat.ports, Some((20000, 30000)));
    assert_eq!(nat.ipv6, Some(true));
    assert_eq!(n.ipv6, Some(true));
}

#[test]
fn every_refused_network_fixture_fails_with_one_positioned_line() {
    let all = fixtures("netrefused-");
    assert!(all.len() >= 2);
    for path in all {
        let xml = std::fs::read_to_string(&path).unwrap();
        let e = Network::parse(&xml).unwrap_err().to_string();
        assert!(!e.contains('\n'), "{}: {e}", path.display());
        assert!(e.starts_with("/network/"), "{}: {e}", path.display());
        assert!(e.contains("(line "), "{}: {e}", path.display());
    }
    assert_eq!(
        Network::parse(&read("netrefused-bridge-mode-with-ip.xml"))
            .unwrap_err()
            .to_string(),
        "/network/ip (line 5, column 3): <ip> is not allowed with forward mode 'bridge': the host bridge is not Vireo's to address"
    );
    assert_eq!(
        Network::parse(&read("netrefused-range-outside.xml"))
            .unwrap_err()
            .to_string(),
        "/network/ip/dhcp/range (line 5, column 7): end 192.168.123.254 is outside the subnet 192.168.122.1/24"
    );
}
