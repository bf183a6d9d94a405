//! The network XML element family by family: what is read, what is
//! kept with a warning, and each refusal as one line with its path and
//! position.

use std::net::IpAddr;

use virtxml::{Error, ForwardMode, Network, ParsedNetwork};

fn net(body: &str) -> Result<ParsedNetwork, Error> {
    Network::parse(&format!("<network><name>n</name>{body}</network>"))
}

fn ok(body: &str) -> Network {
    net(body).unwrap_or_else(|e| panic!("{e}\n{body}")).network
}

/// The refusal's one line; it must name `path` and a position.
fn refused(body: &str, path: &str, says: &str) {
    let e = net(body).map(|p| p.network).expect_err(body).to_string();
    assert!(!e.contains('\n'), "{e}");
    assert!(
        e.starts_with(&format!("{path} (line 1, column ")),
        "{e}\nwanted path {path}"
    );
    assert!(e.contains(says), "{e}\nwanted '{says}'");
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

const V4: &str = "<ip address='192.0.2.1' prefix='24'>";

#[test]
fn name_and_uuid() {
    let n = ok("<uuid>6cb1ce313a484bf2ae46f04010761b37</uuid>");
    assert_eq!(n.uuid.to_string(), "6cb1ce31-3a48-4bf2-ae46-f04010761b37");
    let e = Network::parse("<network><name>a/b</name></network>").unwrap_err();
    assert_eq!(
        e.to_string(),
        "/network/name (line 1, column 10): name 'a/b' contains '/'"
    );
    let e = Network::parse("<network><uuid>zz</uuid></network>").unwrap_err();
    assert!(e.to_string().contains("is not a UUID"), "{e}");
    let e = Network::parse("<network/>").unwrap_err().to_string();
    assert_eq!(e, "/network (line 1, column 1): the network has no <name>");
    let e = Network::parse("<domain type='kvm'/>")
        .unwrap_err()
        .to_string();
    assert!(e.contains("not <network>"), "{e}");
    refused("<name>m</name>", "/network/name[2]", "more than once");
}

#[test]
fn forward_modes() {
    assert!(ok("").is_isolated());
    for (m, want) in [
        ("nat", ForwardMode::Nat),
        ("route", ForwardMode::Route),
        ("open", ForwardMode::Open),
    ] {
        let n = ok(&format!("<forward mode='{m}'/>"));
        assert_eq!(n.forward.unwrap().mode, want);
    }
    assert_eq!(ok("<forward/>").forward.unwrap().mode, ForwardMode::Nat);
    refused(
        "<forward mode='vepa'/>",
        "/network/forward",
        "not supported",
    );
    refused(
        "<forward mode='warp'/>",
        "/network/forward",
        "not a libvirt mode",
    );
    refused(
        "<forward mode='nat' dev='a/b'/>",
        "/network/forward",
        "dev: 'a/b' is not an interface name",
    );
    refused(
        "<forward mode='route'><nat/></forward>",
        "/network/forward/nat",
        "belongs to forward mode 'nat'",
    );
    refused(
        "<forward mode='nat'><interface dev='eth0'/></forward>",
        "/network/forward/interface",
        "not supported",
    );
}

#[test]
fn ipv6_switches_are_kept_not_dropped() {
    let n = Network::parse(
        "<network ipv6='no' trustGuestRxFilters='yes'><name>n</name><forward><nat ipv6='yes'/></forward></network>",
    )
    .unwrap();
    assert_eq!(n.warnings.len(), 1, "{:?}", n.warnings);
    assert!(n.warnings[0]
        .to_string()
        .contains("trustGuestRxFilters='yes' is ignored"));
    let n = n.network;
    assert_eq!(n.ipv6, Some(false));
    assert_eq!(
        n.forward.as_ref().unwrap().nat.as_ref().unwrap().ipv6,
        Some(true)
    );
    let xml = n.to_xml();
    assert!(xml.starts_with("<network ipv6='no'>"), "{xml}");
    assert!(xml.contains("<nat ipv6='yes'>"), "{xml}");
    assert_eq!(Network::parse(&xml).unwrap().network, n);
    let e = Network::parse("<network ipv6='maybe'><name>n</name></network>")
        .unwrap_err()
        .to_string();
    assert_eq!(
        e,
        "/network (line 1, column 1): ipv6='maybe' must be yes or no"
    );
    refused(
        "<forward><nat ipv6='2'/></forward>",
        "/network/forward/nat",
        "ipv6='2' must be yes or no",
    );
}

#[test]
fn nat_ranges() {
    let n = ok("<forward><nat><port start='1024' end='65535'/><address start='192.0.2.9'/></nat></forward>");
    let nat = n.forward.unwrap().nat.unwrap();
    assert_eq!(nat.ports, Some((1024, 65535)));
    let a = "192.0.2.9".parse().unwrap();
    assert_eq!(nat.addresses, Some((a, a)));
    refused(
        "<forward><nat><port start='2000' end='1000'/></nat></forward>",
        "/network/forward/nat/port",
        "start <= end",
    );
    refused(
        "<forward><nat><port start='0' end='10'/></nat></forward>",
        "/network/forward/nat/port",
        "1-65535",
    );
    refused(
        "<forward><nat><port start='1' end='70000'/></nat></forward>",
        "/network/forward/nat/port",
        "end '70000' is not a valid number",
    );
    refused(
        "<forward><nat><address start='192.0.2.9' end='192.0.2.1'/></nat></forward>",
        "/network/forward/nat/address",
        "start 192.0.2.9 is after end 192.0.2.1",
    );
    refused(
        "<forward><nat><address start='2001:db8::1'/></nat></forward>",
        "/network/forward/nat/address",
        "not an IPv4 address",
    );
}

#[test]
fn bridge_mac_mtu_domain() {
    let n = ok("<bridge name='virbr9' stp='off' delay='3'/><mac address='52:54:00:01:02:03'/><mtu size='9000'/><domain name='example.org' localOnly='no'/>");
    let b = n.bridge.unwrap();
    assert_eq!(
        (b.name.as_deref(), b.stp, b.delay),
        (Some("virbr9"), Some(false), Some(3))
    );
    assert_eq!(n.mac.unwrap().to_string(), "52:54:00:01:02:03");
    assert_eq!(n.mtu, Some(9000));
    assert_eq!(n.domain.unwrap().local_only, Some(false));
    // 15 bytes is Linux's limit; 16 is refused.
    ok("<bridge name='abcdefghijklmno'/>");
    refused(
        "<bridge name='abcdefghijklmnop'/>",
        "/network/bridge",
        "1 to 15 bytes",
    );
    refused(
        "<bridge name='a b'/>",
        "/network/bridge",
        "no '/', ':' or spaces",
    );
    refused(
        "<bridge name='a/b'/>",
        "/network/bridge",
        "not an interface name",
    );
    refused(
        "<bridge stp='maybe'/>",
        "/network/bridge",
        "must be on or off",
    );
    refused(
        "<bridge delay='x'/>",
        "/network/bridge",
        "not a valid number",
    );
    refused(
        "<mac address='01:00:5e:00:00:01'/>",
        "/network/mac",
        "multicast",
    );
    refused(
        "<mac address='52:54:00'/>",
        "/network/mac",
        "not a MAC address",
    );
    refused("<mtu size='67'/>", "/network/mtu", "outside 68-65535");
    refused("<mtu size='65536'/>", "/network/mtu", "outside 68-65535");
    refused(
        "<domain name='bad name.example'/>",
        "/network/domain",
        "not a DNS name",
    );
    refused("<domain/>", "/network/domain", "needs a name= attribute");
    refused(
        "<domain name='-a.example'/>",
        "/network/domain",
        "not a DNS name",
    );
    refused(
        "<domain name='a..example'/>",
        "/network/domain",
        "not a DNS name",
    );
    ok("<domain name='_sub.example'/>");
}

#[test]
fn ip_prefix_netmask_family() {
    let n = ok("<ip address='10.1.2.3' netmask='255.255.240.0'/><ip family='ipv6' address='2001:db8::1' prefix='48'/>");
    assert_eq!((n.ips[0].prefix, n.ips[1].prefix), (20, 48));
    // libvirt's defaults: the address class for IPv4, 64 for IPv6.
    let n = ok("<ip address='172.16.0.1'/><ip address='fd00::1'/>");
    assert_eq!((n.ips[0].prefix, n.ips[1].prefix), (16, 64));
    refused(
        "<ip address='192.0.2.1' netmask='255.0.255.0'/>",
        "/network/ip",
        "not a contiguous netmask",
    );
    refused(
        "<ip address='192.0.2.1' netmask='255.255.255.0' prefix='24'/>",
        "/network/ip",
        "not both",
    );
    refused(
        "<ip address='192.0.2.1' prefix='33'/>",
        "/network/ip",
        "outside 1-32",
    );
    refused(
        "<ip address='192.0.2.1' prefix='0'/>",
        "/network/ip",
        "outside 1-32",
    );
    refused(
        "<ip address='fd00::1' prefix='129'/>",
        "/network/ip",
        "outside 1-128",
    );
    refused(
        "<ip family='ipv6' address='192.0.2.1' prefix='24'/>",
        "/network/ip",
        "not of family 'ipv6'",
    );
    refused(
        "<ip address='fd00::1' netmask='255.255.255.0'/>",
        "/network/ip",
        "takes prefix=",
    );
    refused(
        "<ip address='300.1.1.1' prefix='8'/>",
        "/network/ip",
        "not an IP address",
    );
    refused(
        "<ip prefix='8'/>",
        "/network/ip",
        "needs a address= attribute",
    );
    refused(
        "<ip address='240.0.0.1'/>",
        "/network/ip",
        "no address class",
    );
    refused(
        "<ip address='192.0.2.0' prefix='24'/>",
        "/network/ip",
        "address 192.0.2.0 is the network address of 192.0.2.0/24",
    );
    refused(
        "<ip address='192.0.2.255' prefix='24'/>",
        "/network/ip",
        "the broadcast address",
    );
    // A /31 has neither, as on a point-to-point link.
    ok("<ip address='192.0.2.0' prefix='31'/>");
}

#[test]
fn dhcp_ranges() {
    let n = ok(&format!("{V4}<dhcp><range start='192.0.2.10' end='192.0.2.20'><lease expiry='0'/></range><range start='192.0.2.21' end='192.0.2.30'><lease expiry='2' unit='minutes'/></range></dhcp></ip>"));
    let d = n.ips[0].dhcp.as_ref().unwrap();
    assert_eq!(d.ranges[0].lease_seconds, Some(0));
    assert_eq!(d.ranges[1].lease_seconds, Some(120));
    let r = |body: &str, path: &str, says: &str| {
        refused(&format!("{V4}<dhcp>{body}</dhcp></ip>"), path, says)
    };
    r(
        "<range start='192.0.2.20' end='192.0.2.10'/>",
        "/network/ip/dhcp/range",
        "start 192.0.2.20 is after end 192.0.2.10",
    );
    r(
        "<range start='192.0.1.20' end='192.0.2.10'/>",
        "/network/ip/dhcp/range",
        "start 192.0.1.20 is outside the subnet 192.0.2.1/24",
    );
    r(
        "<range start='192.0.2.2' end='192.0.2.255'/>",
        "/network/ip/dhcp/range",
        "broadcast address",
    );
    r(
        "<range start='192.0.2.0' end='192.0.2.9'/>",
        "/network/ip/dhcp/range",
        "network address",
    );
    r(
        "<range start='192.0.2.2' end='192.0.2.50'/><range start='192.0.2.40' end='192.0.2.60'/>",
        "/network/ip/dhcp/range[2]",
        "overlaps range 192.0.2.2-192.0.2.50",
    );
    r(
        "<range start='192.0.2.2' end='192.0.2.50'><lease expiry='30' unit='seconds'/></range>",
        "/network/ip/dhcp/range/lease",
        "shorter than dnsmasq's minimum",
    );
    r(
        "<range start='192.0.2.2' end='192.0.2.50'><lease expiry='3' unit='days'/></range>",
        "/network/ip/dhcp/range/lease",
        "seconds, minutes or hours",
    );
    refused(
        "<ip address='fd00::1' prefix='64'><dhcp><range start='fd00::10' end='fd01::10'/></dhcp></ip>",
        "/network/ip/dhcp/range",
        "end fd01::10 is outside the subnet fd00::1/64",
    );
}

#[test]
fn dhcp_hosts() {
    let n = ok(&format!("{V4}<dhcp><host mac='52:54:00:00:00:01' name='a' ip='192.0.2.5'/><host name='b' ip='192.0.2.6'/></dhcp></ip>"));
    let h = &n.ips[0].dhcp.as_ref().unwrap().hosts;
    assert_eq!(h[0].ip, ip("192.0.2.5"));
    assert_eq!(h[1].mac, None);
    let r = |body: &str, path: &str, says: &str| {
        refused(&format!("{V4}<dhcp>{body}</dhcp></ip>"), path, says)
    };
    r(
        "<host mac='52:54:00:00:00:01' ip='192.0.2.5'/><host mac='52:54:00:00:00:02' ip='192.0.2.5'/>",
        "/network/ip/dhcp/host[2]",
        "ip 192.0.2.5 is given to another host already",
    );
    r(
        "<host mac='52:54:00:00:00:01' ip='192.0.2.5'/><host mac='52:54:00:00:00:01' ip='192.0.2.6'/>",
        "/network/ip/dhcp/host[2]",
        "mac 52:54:00:00:00:01 is given more than one host",
    );
    r(
        "<host mac='ff:ff:ff:ff:ff:ff' ip='192.0.2.5'/>",
        "/network/ip/dhcp/host",
        "multicast",
    );
    r(
        "<host mac='52:54:00:00:00:01' ip='198.51.100.5'/>",
        "/network/ip/dhcp/host",
        "outside the subnet",
    );
    r(
        "<host mac='52:54:00:00:00:01' ip='192.0.2.1'/>",
        "/network/ip/dhcp/host",
        "the network's own address",
    );
    r(
        "<host ip='192.0.2.5'/>",
        "/network/ip/dhcp/host",
        "needs a mac= or a name=",
    );
    r(
        "<host mac='52:54:00:00:00:01'/>",
        "/network/ip/dhcp/host",
        "needs a ip= attribute",
    );
    refused(
        "<ip address='fd00::1' prefix='64'><dhcp><host mac='52:54:00:00:00:01' ip='fd00::5'/></dhcp></ip>",
        "/network/ip/dhcp/host",
        "matched by id or name, not mac",
    );
}

#[test]
fn dhcpv6_hosts_by_duid() {
    let v6 = "<ip address='fd00::1' prefix='64'><dhcp>";
    let n = ok(&format!(
        "{v6}<host id='00:03:00:01:52:54:00:60:7D:5D' name='paul' ip='fd00::7:2'/><host id='00:03:00:01:52:54:00:69:eb:91' ip='fd00::7:4'/></dhcp></ip>"
    ));
    let h = &n.ips[0].dhcp.as_ref().unwrap().hosts;
    assert_eq!(h[0].id.as_deref(), Some("00:03:00:01:52:54:00:60:7d:5d"));
    assert_eq!(h[1].name, None);
    assert!(n.to_xml().contains("id='00:03:00:01:52:54:00:69:eb:91'"));
    refused(
        &format!("{v6}<host id='00:03:zz' ip='fd00::7:2'/></dhcp></ip>"),
        "/network/ip/dhcp/host",
        "is not a DUID",
    );
    refused(
        &format!("{v6}<host id='00:03:01' ip='fd00::7:2'/><host id='00:03:01' ip='fd00::7:3'/></dhcp></ip>"),
        "/network/ip/dhcp/host[2]",
        "id 00:03:01 is given more than one host",
    );
    refused(
        &format!("{v6}<host ip='fd00::7:2'/></dhcp></ip>"),
        "/network/ip/dhcp/host",
        "needs an id= or a name=",
    );
    refused(
        &format!("{V4}<dhcp><host id='00:03:01' ip='192.0.2.9'/></dhcp></ip>"),
        "/network/ip/dhcp/host",
        "is for IPv6 hosts",
    );
    // An ip with via= would be a route, not a bridge address: refused,
    // not dropped.
    refused(
        "<ip family='ipv6' address='fd00:beef:12::' prefix='48' via='fd00::2'/>",
        "/network/ip",
        "static routes are not installed",
    );
}

#[test]
fn dhcp_blocks_and_subnets_across_ips() {
    // One IPv4 and one IPv6 DHCP block is fine.
    ok("<ip address='192.0.2.1' prefix='24'><dhcp/></ip><ip address='fd00::1' prefix='64'><dhcp/></ip>");
    refused(
        "<ip address='192.0.2.1' prefix='24'><dhcp/></ip><ip address='198.51.100.1' prefix='24'><dhcp/></ip>",
        "/network/ip[2]",
        "a second <dhcp> for IPv4",
    );
    refused(
        "<ip address='192.0.2.1' prefix='24'/><ip address='192.0.2.129' prefix='25'/>",
        "/network/ip[2]",
        "overlaps 192.0.2.1/24",
    );
}

#[test]
fn dns_hosts_and_forwarders() {
    let n = ok("<dns enable='yes' forwardPlainNames='no'><forwarder addr='192.0.2.53'/><forwarder domain='example.com'/><host ip='192.0.2.7'><hostname>www</hostname></host></dns>");
    let d = n.dns.unwrap();
    assert_eq!((d.enable, d.forward_plain_names), (Some(true), Some(false)));
    assert_eq!(d.forwarders[0].addr, Some(ip("192.0.2.53")));
    assert_eq!(d.hosts[0].hostnames, ["www"]);
    refused(
        "<dns><host ip='192.0.2.7'/></dns>",
        "/network/dns/host",
        "at least one <hostname>",
    );
    refused(
        "<dns><host ip='x'><hostname>a</hostname></host></dns>",
        "/network/dns/host",
        "not an IP address",
    );
    refused(
        "<dns><host ip='192.0.2.7'><hostname>a b</hostname></host></dns>",
        "/network/dns/host/hostname",
        "not a DNS name",
    );
    refused(
        "<dns><host ip='192.0.2.7'><hostname>a</hostname></host><host ip='192.0.2.7'><hostname>b</hostname></host></dns>",
        "/network/dns/host[2]",
        "has another <host> already",
    );
    refused(
        "<dns><forwarder/></dns>",
        "/network/dns/forwarder",
        "needs an addr=",
    );
    refused(
        "<dns><txt name='a' value='b'/></dns>",
        "/network/dns/txt",
        "TXT records are not served yet",
    );
    refused(
        "<dns enable='perhaps'/>",
        "/network/dns",
        "enable='perhaps' must be yes or no",
    );
    refused(
        "<domain name='a.example' localOnly='2'/>",
        "/network/domain",
        "localOnly='2' must be yes or no",
    );
}

#[test]
fn bridge_mode_rules() {
    let n = ok("<forward mode='bridge' dev='eth0'/><bridge name='br0'/>");
    assert_eq!(n.forward.unwrap().dev.as_deref(), Some("eth0"));
    refused(
        "<forward mode='bridge'/>",
        "/network/forward",
        "needs <bridge name='...'/>",
    );
    refused(
        "<forward mode='bridge'/><bridge stp='on'/>",
        "/network/forward",
        "needs <bridge name='...'/>",
    );
    for (el, path) in [
        ("<dns/>", "/network/dns"),
        ("<domain name='x.example'/>", "/network/domain"),
        ("<mac address='52:54:00:00:00:09'/>", "/network/mac"),
    ] {
        refused(
            &format!("<forward mode='bridge'/><bridge name='br0'/>{el}"),
            path,
            "not allowed with forward mode 'bridge'",
        );
    }
}

#[test]
fn kept_elements_warn_and_write_back() {
    let body = format!(
        "<metadata><x:a xmlns:x='urn:x'>1</x:a></metadata><portgroup name='pg' default='yes'/><bandwidth><inbound average='1000'/></bandwidth>{V4}<tftp root='/srv'/><dhcp><range start='192.0.2.2' end='192.0.2.9'/><bootp file='pxe.0'/></dhcp></ip>"
    );
    let p = net(&body).unwrap();
    let warned: Vec<String> = p.warnings.iter().map(ToString::to_string).collect();
    assert_eq!(warned.len(), 5, "{warned:?}");
    assert!(
        warned[1].starts_with("/network/portgroup (line 1, column "),
        "{warned:?}"
    );
    assert!(
        warned[2].contains("<bandwidth> is kept but not acted on"),
        "{warned:?}"
    );
    assert!(warned[3].contains("/network/ip/tftp"), "{warned:?}");
    assert!(warned[4].contains("/network/ip/dhcp/bootp"), "{warned:?}");
    let n = p.network;
    let xml = n.to_xml();
    for s in [
        "<portgroup name='pg'",
        "<bandwidth>",
        "<tftp root='/srv'/>",
        "<bootp file='pxe.0'/>",
        "<x:a xmlns:x='urn:x'>1</x:a>",
    ] {
        assert!(xml.contains(s), "{s} missing from\n{xml}");
    }
    assert_eq!(Network::parse(&xml).unwrap().network, n);
    // Unknown attributes are dropped with a warning.
    let p = net("<bridge name='br1' foo='1'/>").unwrap();
    assert_eq!(p.warnings.len(), 1);
    assert!(p.warnings[0]
        .to_string()
        .contains("attribute foo='1' is ignored"));
    assert!(!p.network.to_xml().contains("foo"));
}

#[test]
fn portgroups_that_would_change_nics_are_refused() {
    let p = net("<portgroup name='a'><bandwidth><outbound average='10'/></bandwidth></portgroup>")
        .unwrap();
    assert_eq!(p.warnings.len(), 1);
    refused(
        "<portgroup name='a' default='yes'><vlan><tag id='42'/></vlan></portgroup>",
        "/network/portgroup/vlan",
        "VLAN tags are set per NIC",
    );
    refused(
        "<portgroup name='a'><virtualport type='openvswitch'/></portgroup>",
        "/network/portgroup/virtualport",
        "Open vSwitch",
    );
    refused(
        "<portgroup name='a'><frob/></portgroup>",
        "/network/portgroup/frob",
        "inside <portgroup> is not supported",
    );
}

#[test]
fn refused_top_level_elements() {
    refused(
        "<virtualport type='openvswitch'/>",
        "/network/virtualport",
        "Open vSwitch",
    );
    refused("<vlan><tag id='5'/></vlan>", "/network/vlan", "per NIC");
    refused(
        "<route address='10.0.0.0' prefix='8' gateway='192.0.2.2'/>",
        "/network/route",
        "static routes",
    );
    refused(
        "<frobnicate/>",
        "/network/frobnicate",
        "<frobnicate> is not supported",
    );
    refused(
        "<mac address='52:54:00:00:00:01'><x/></mac>",
        "/network/mac/x",
        "not supported",
    );
}

#[test]
fn positions_count_lines_and_columns() {
    let xml = "<network>\n  <name>n</name>\n  <ip address='192.0.2.1' prefix='24'/>\n  <ip address='fd00::1' prefix='64'>\n    <dhcp>\n      <host mac='52:54:00:00:00:01' ip='fd00::5'/>\n    </dhcp>\n  </ip>\n</network>\n";
    assert_eq!(
        Network::parse(xml).unwrap_err().to_string(),
        "/network/ip[2]/dhcp/host (line 6, column 7): a DHCPv6 host is matched by id or name, not mac"
    );
}
