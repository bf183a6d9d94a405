use std::net::IpAddr;

use super::kinds::BondMode;
use super::protocol::Family;
use super::*;
use crate::Error;

fn parse(xml: &str) -> Result<ParsedHostInterface, Error> {
    HostInterface::parse(xml)
}

fn ok(xml: &str) -> HostInterface {
    let p = parse(xml).unwrap_or_else(|e| panic!("{e}\n{xml}"));
    // Writing back and reading again gives the same definition.
    let again = HostInterface::parse(&p.interface.to_xml())
        .unwrap_or_else(|e| panic!("{e}\n{}", p.interface.to_xml()));
    assert_eq!(again.interface, p.interface, "{}", p.interface.to_xml());
    p.interface
}

/// The refusal's one line; it must name `path` and a position.
fn refused(xml: &str, path: &str, says: &str) {
    let e = parse(xml).map(|p| p.interface).expect_err(xml).to_string();
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

#[test]
fn a_bridge_with_ports_and_addresses() {
    let i = ok("<interface type='bridge' name='br0'>\
         <start mode='onboot'/><mac address='52:54:00:12:34:56'/><mtu size='1400'/>\
         <protocol family='ipv4'><ip address='192.0.2.1' prefix='24'/><ip address='192.0.2.2' prefix='32'/></protocol>\
         <protocol family='ipv6'><ip address='2001:db8::1' prefix='64'/></protocol>\
         <bridge stp='off' delay='0.01'>\
           <interface type='ethernet' name='eth0'><mac address='52:54:00:00:00:01'/></interface>\
           <interface type='vlan' name='eth1.42'><vlan tag='42'><interface name='eth1'/></vlan></interface>\
         </bridge></interface>");
    assert_eq!(i.name, "br0");
    assert_eq!(i.start, Some(StartMode::Onboot));
    assert_eq!(i.mtu, Some(1400));
    assert_eq!(i.mac.unwrap().to_string(), "52:54:00:12:34:56");
    assert_eq!(i.protocols[0].family, Family::Ipv4);
    assert_eq!(
        i.protocols[0].addresses,
        vec![(ip("192.0.2.1"), 24), (ip("192.0.2.2"), 32)]
    );
    assert_eq!(i.protocols[1].addresses, vec![(ip("2001:db8::1"), 64)]);
    let HostInterfaceKind::Bridge(b) = &i.kind else {
        panic!("{:?}", i.kind)
    };
    assert_eq!((b.stp, b.delay_ms), (Some(false), Some(10)));
    assert_eq!(b.members.len(), 2);
    assert_eq!(b.members[0].kind, HostInterfaceKind::Ethernet);
    let HostInterfaceKind::Vlan(v) = &b.members[1].kind else {
        panic!()
    };
    assert_eq!((v.tag, v.parent.as_str()), (42, "eth1"));
    let names: Vec<_> = i.all().iter().map(|i| i.name.clone()).collect();
    assert_eq!(names, ["br0", "eth0", "eth1.42"]);
}

#[test]
fn vlan_bond_and_ethernet() {
    let v = ok("<interface type='vlan' name='eth0.7'><start mode='none'/>\
        <vlan tag='7'><interface name='eth0'/></vlan></interface>");
    assert_eq!(v.start_mode(), StartMode::None);
    let b = ok(
        "<interface type='bond' name='bond0'><bond mode='active-backup'>\
        <miimon freq='100' updelay='0' carrier='netif'/>\
        <interface type='ethernet' name='eth0'/><interface type='ethernet' name='eth1'/>\
        </bond></interface>",
    );
    let HostInterfaceKind::Bond(bd) = &b.kind else {
        panic!()
    };
    assert_eq!(bd.mode, Some(BondMode::ActiveBackup));
    assert_eq!(bd.miimon_ms, Some(100));
    assert_eq!(bd.members.len(), 2);
    let e = ok("<interface type='ethernet' name='veth0'><mtu size='9000'/></interface>");
    assert_eq!(e.kind, HostInterfaceKind::Ethernet);
    assert_eq!(e.start_mode(), StartMode::None);
    // A bridge of a bond of two NICs: the seed's uplink.
    let up = ok("<interface type='bridge' name='br-phy'><bridge>\
        <interface type='bond' name='bond0'><bond><interface type='ethernet' name='eth0'/>\
        <interface type='ethernet' name='eth1'/></bond></interface></bridge></interface>");
    assert_eq!(up.all().len(), 4);
}

#[test]
fn hints_are_warned_and_kept() {
    let p = parse(
        "<interface type='ethernet' name='eth0' foo='1'><start mode='hotplug'/>\
        <link speed='1000' state='up'/></interface>",
    )
    .unwrap();
    assert_eq!(p.warnings.len(), 3, "{:?}", p.warnings);
    assert!(p.warnings[0].to_string().contains("foo='1' is ignored"));
    assert!(p.warnings[1].to_string().contains("hotplug"));
    assert!(p.warnings[2].to_string().starts_with("/interface/link"));
    assert!(p
        .interface
        .to_xml()
        .contains("<link speed='1000' state='up'/>"));
}

#[test]
fn refusals_name_the_element() {
    let e = parse("<network/>").unwrap_err().to_string();
    assert!(e.contains("not <interface>"), "{e}");
    refused("<interface name='x'/>", "/interface", "needs a type=");
    refused("<interface type='bridge'/>", "/interface", "needs a name=");
    refused(
        "<interface type='ethernet' name='a/b'/>",
        "/interface",
        "not an interface name",
    );
    refused(
        "<interface type='macvlan' name='m0'/>",
        "/interface",
        "type 'macvlan' is not supported",
    );
    refused(
        "<interface type='bridge' name='br0'/>",
        "/interface",
        "needs a <bridge>",
    );
    refused(
        "<interface type='ethernet' name='e'><bridge/></interface>",
        "/interface/bridge",
        "only for type='bridge'",
    );
    refused(
        "<interface type='ethernet' name='e'><start mode='sometimes'/></interface>",
        "/interface/start",
        "must be onboot, none or hotplug",
    );
    refused(
        "<interface type='ethernet' name='e'><mtu size='40'/></interface>",
        "/interface/mtu",
        "outside 68-65535",
    );
    refused(
        "<interface type='ethernet' name='e'><mac address='01:00:5e:00:00:01'/></interface>",
        "/interface/mac",
        "multicast",
    );
    refused(
        "<interface type='ethernet' name='e'><frobnicate/></interface>",
        "/interface/frobnicate",
        "not supported",
    );
}

#[test]
fn protocol_refusals() {
    let p = |body: &str| format!("<interface type='ethernet' name='e'>{body}</interface>");
    refused(
        &p("<protocol family='ipv4'><dhcp/></protocol>"),
        "/interface/protocol/dhcp",
        "no DHCP client",
    );
    refused(
        &p("<protocol family='ipv6'><autoconf/></protocol>"),
        "/interface/protocol/autoconf",
        "SLAAC",
    );
    refused(
        &p("<protocol family='ipv4'><route gateway='192.0.2.254'/></protocol>"),
        "/interface/protocol/route",
        "static routes",
    );
    refused(
        &p("<protocol family='ipx'/>"),
        "/interface/protocol",
        "must be ipv4 or ipv6",
    );
    refused(
        &p("<protocol family='ipv4'><ip address='2001:db8::1' prefix='64'/></protocol>"),
        "/interface/protocol/ip",
        "not of family 'ipv4'",
    );
    refused(
        &p("<protocol family='ipv4'><ip address='192.0.2.1' prefix='33'/></protocol>"),
        "/interface/protocol/ip",
        "outside 1-32",
    );
    refused(
        &p("<protocol family='ipv4'><ip address='192.0.2.1'/></protocol>"),
        "/interface/protocol/ip",
        "needs a prefix=",
    );
    refused(
        &p("<protocol family='ipv4'><ip address='192.0.2.1' prefix='24'/><ip address='192.0.2.1' prefix='25'/></protocol>"),
        "/interface/protocol/ip[2]",
        "more than once",
    );
    refused(
        &p("<protocol family='ipv4'/><protocol family='ipv4'/>"),
        "/interface/protocol[2]",
        "a second <protocol family='ipv4'>",
    );
    refused(
        &p("<protocol family='ipv4'><ip address='224.0.0.1' prefix='24'/></protocol>"),
        "/interface/protocol/ip",
        "cannot be an interface's",
    );
}

#[test]
fn member_refusals() {
    refused(
        "<interface type='bridge' name='br0'><bridge><interface type='bridge' name='br1'><bridge/></interface></bridge></interface>",
        "/interface/bridge/interface",
        "do not nest",
    );
    refused(
        "<interface type='bridge' name='br0'><bridge><interface type='ethernet' name='e'><protocol family='ipv4'/></interface></bridge></interface>",
        "/interface/bridge/interface/protocol",
        "no address of its own",
    );
    refused(
        "<interface type='bridge' name='br0'><bridge><interface type='ethernet' name='e'><start mode='onboot'/></interface></bridge></interface>",
        "/interface/bridge/interface/start",
        "starts with its master",
    );
    refused(
        "<interface type='bridge' name='br0'><bridge><interface type='ethernet' name='e'/><interface type='ethernet' name='e'/></bridge></interface>",
        "/interface/bridge/interface[2]",
        "member more than once",
    );
    refused(
        "<interface type='bridge' name='br0'><bridge><interface type='ethernet' name='br0'/></bridge></interface>",
        "/interface/bridge/interface",
        "member of itself",
    );
    refused(
        "<interface type='bond' name='b0'><bond><interface type='vlan' name='v'><vlan tag='1'><interface name='e'/></vlan></interface></bond></interface>",
        "/interface/bond/interface",
        "must be type='ethernet'",
    );
    refused(
        "<interface type='bond' name='b0'><bond mode='balance-rr'/></interface>",
        "/interface/bond",
        "at least one slave",
    );
    refused(
        "<interface type='bond' name='b0'><bond mode='fastest'><interface type='ethernet' name='e'/></bond></interface>",
        "/interface/bond",
        "bond mode 'fastest'",
    );
    refused(
        "<interface type='bond' name='b0'><bond><arpmon interval='100' target='192.0.2.1'/><interface type='ethernet' name='e'/></bond></interface>",
        "/interface/bond/arpmon",
        "use <miimon>",
    );
    refused(
        "<interface type='bond' name='b0'><bond><miimon freq='100' updelay='200'/><interface type='ethernet' name='e'/></bond></interface>",
        "/interface/bond/miimon",
        "updelay='200' is not supported",
    );
    refused(
        "<interface type='bond' name='b0'><bond><miimon freq='100' carrier='ioctl'/><interface type='ethernet' name='e'/></bond></interface>",
        "/interface/bond/miimon",
        "carrier='ioctl'",
    );
    // A bridge's port cannot be a bond slave of a bond in the same tree.
    refused(
        "<interface type='bridge' name='br0'><bridge><interface type='ethernet' name='e'/>\
         <interface type='bond' name='b0'><bond><interface type='ethernet' name='e'/></bond></interface></bridge></interface>",
        "/interface/bridge/interface[2]",
        "'e' is a member more than once",
    );
}

#[test]
fn vlan_refusals() {
    refused(
        "<interface type='vlan' name='v'><vlan tag='4095'><interface name='e'/></vlan></interface>",
        "/interface/vlan",
        "outside 1-4094",
    );
    refused(
        "<interface type='vlan' name='v'><vlan tag='x'><interface name='e'/></vlan></interface>",
        "/interface/vlan",
        "not a valid number",
    );
    refused(
        "<interface type='vlan' name='v'><vlan tag='5'/></interface>",
        "/interface/vlan",
        "needs its parent",
    );
    refused(
        "<interface type='vlan' name='v'><vlan tag='5'><interface name='v'/></vlan></interface>",
        "/interface",
        "its own parent",
    );
    refused(
        "<interface type='vlan' name='v'><vlan tag='5'><interface name='a'/><interface name='b'/></vlan></interface>",
        "/interface/vlan/interface[2]",
        "more than once",
    );
}

#[test]
fn bridge_delays() {
    let d = |delay: &str| {
        let xml =
            format!("<interface type='bridge' name='b'><bridge delay='{delay}'/></interface>");
        parse(&xml).map(|p| match p.interface.kind {
            HostInterfaceKind::Bridge(b) => b.delay_ms,
            _ => None,
        })
    };
    assert_eq!(d("0").unwrap(), Some(0));
    assert_eq!(d("15").unwrap(), Some(15_000));
    assert_eq!(d("0.5").unwrap(), Some(500));
    assert_eq!(d("2.25").unwrap(), Some(2_250));
    for bad in ["", "-1", "1.2345", "x", "1e3", ".5", "3601", "99999999999"] {
        assert!(d(bad).is_err(), "{bad}");
    }
    refused(
        "<interface type='bridge' name='b'><bridge stp='maybe'/></interface>",
        "/interface/bridge",
        "must be on or off",
    );
}

#[test]
fn many_members_are_capped() {
    let ports: String = (0..=kinds::MAX_MEMBERS)
        .map(|i| format!("<interface type='ethernet' name='p{i}'/>"))
        .collect();
    let xml = format!("<interface type='bridge' name='b'><bridge>{ports}</bridge></interface>");
    let e = parse(&xml).unwrap_err().to_string();
    assert!(e.contains("at most 64 member"), "{e}");
}
