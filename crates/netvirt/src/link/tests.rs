//! Link tests; each runs in a fresh network namespace so nothing touches
//! the host's interfaces.

use super::msg;
use super::*;
use crate::netns::run_isolated;
use std::net::{Ipv4Addr, Ipv6Addr};

fn isolated<T: Send>(f: impl FnOnce(&mut Netlink) -> T + Send) -> T {
    run_isolated(|| {
        let mut nl = Netlink::open().expect("open netlink");
        f(&mut nl)
    })
    .expect("new network namespace")
}

const MAC: [u8; 6] = [0x52, 0x54, 0x00, 0x12, 0x34, 0x56];

#[test]
fn bridge_create_list_delete() {
    isolated(|nl| {
        let opts = BridgeOptions {
            stp: true,
            forward_delay_ms: 4000,
            mtu: Some(1400),
            mac: Some(MAC),
        };
        nl.create_bridge("vbr0", &opts).unwrap();
        let l = nl.link("vbr0").unwrap().expect("bridge exists");
        assert_eq!(l.kind.as_deref(), Some("bridge"));
        assert_eq!(l.mtu, 1400);
        assert_eq!(l.mac, Some(MAC));
        assert!(!l.up);
        assert_eq!(nl.index("vbr0").unwrap(), Some(l.index));
        let all = nl.links().unwrap();
        assert!(all.iter().any(|x| x == &l));
        assert!(all.iter().any(|x| x.name == "lo"));
        // The kernel's own view of the bridge settings (sysfs shows the
        // host's namespace, so ask rtnetlink).
        let data = nl.info_data("vbr0").unwrap();
        let get = |t| {
            data.iter()
                .find(|(ty, _)| *ty == t)
                .and_then(|(_, d)| msg::get_u32(d))
        };
        assert_eq!(get(IFLA_BR_STP_STATE), Some(1));
        assert_eq!(get(IFLA_BR_FORWARD_DELAY), Some(400));

        let e = nl.create_bridge("vbr0", &opts).unwrap_err();
        assert_eq!(e.errno(), Some(libc::EEXIST));
        assert_eq!(
            e.to_string(),
            "creating bridge vbr0: File exists (os error 17)"
        );

        nl.delete("vbr0").unwrap();
        assert_eq!(nl.link("vbr0").unwrap(), None);
        let e = nl.delete("vbr0").unwrap_err();
        assert!(matches!(e, LinkError::NotFound { .. }), "{e}");
        assert_eq!(e.to_string(), "deleting vbr0: no such interface \"vbr0\"");
    });
}

#[test]
fn veth_enslaved_to_bridge() {
    isolated(|nl| {
        nl.create_bridge("vbr1", &BridgeOptions::default()).unwrap();
        nl.create_veth("va", "vb").unwrap();
        assert_eq!(
            nl.link("vb").unwrap().unwrap().kind.as_deref(),
            Some("veth")
        );
        nl.set_master("va", Some("vbr1")).unwrap();
        nl.set_up("va", true).unwrap();
        nl.set_up("vbr1", true).unwrap();
        nl.set_mtu("va", 1300).unwrap();
        nl.set_mac("vb", MAC).unwrap();
        let br = nl.index("vbr1").unwrap().unwrap();
        let va = nl.link("va").unwrap().unwrap();
        assert_eq!(va.master, Some(br));
        assert!(va.up);
        assert_eq!(va.mtu, 1300);
        assert_eq!(nl.link("vb").unwrap().unwrap().mac, Some(MAC));
        nl.set_up("va", false).unwrap();
        nl.set_master("va", None).unwrap();
        let va = nl.link("va").unwrap().unwrap();
        assert_eq!((va.master, va.up), (None, false));

        let e = nl.set_master("va", Some("nobr")).unwrap_err();
        assert_eq!(
            e.to_string(),
            "attaching va to nobr: no such interface \"nobr\""
        );
        let e = nl.set_up("ghost", true).unwrap_err();
        assert!(matches!(e, LinkError::NotFound { .. }), "{e}");
        let e = nl.create_veth("vc", "va").unwrap_err();
        assert_eq!(e.errno(), Some(libc::EEXIST), "{e}");
    });
}

#[test]
fn addresses_and_routes() {
    isolated(|nl| {
        nl.create_veth("a0", "a1").unwrap();
        nl.set_up("a0", true).unwrap();
        nl.set_up("a1", true).unwrap();
        let v4 = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1));
        let v6 = IpAddr::V6("2001:db8::1".parse::<Ipv6Addr>().unwrap());
        nl.add_address("a0", v4, 24).unwrap();
        nl.add_address("a0", v6, 64).unwrap();
        let got = nl.addresses("a0").unwrap();
        assert!(got.contains(&(v4, 24)), "{got:?}");
        assert!(got.contains(&(v6, 64)), "{got:?}");
        assert!(nl.addresses("a1").unwrap().iter().all(|(a, _)| a.is_ipv6()));
        let e = nl.add_address("a0", v4, 24).unwrap_err();
        assert_eq!(e.errno(), Some(libc::EEXIST), "{e}");
        // Removed again, one address only; a second removal is refused.
        nl.del_address("a0", v6, 64).unwrap();
        let got = nl.addresses("a0").unwrap();
        assert!(
            got.contains(&(v4, 24)) && !got.contains(&(v6, 64)),
            "{got:?}"
        );
        let e = nl.del_address("a0", v6, 64).unwrap_err();
        assert_eq!(e.errno(), Some(libc::EADDRNOTAVAIL), "{e}");
        nl.add_address("a0", v6, 64).unwrap();
        let e = nl.add_address("a0", v4, 33).unwrap_err();
        assert_eq!(
            e.to_string(),
            "adding address 192.0.2.1/33 to a0: prefix length 33 is over 32"
        );

        let net = IpAddr::V4(Ipv4Addr::new(198, 51, 100, 0));
        let gw = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 254));
        nl.add_route(net, 24, Some(gw), None).unwrap();
        let other = IpAddr::V4(Ipv4Addr::new(203, 0, 113, 0));
        nl.add_route(other, 24, None, Some("a0")).unwrap();
        let routes = std::fs::read_to_string("/proc/thread-self/net/route").unwrap();
        // /proc/net/route prints addresses as native-endian hex words.
        let hex = |a: [u8; 4]| format!("{:08X}", u32::from_ne_bytes(a));
        assert!(routes.contains(&hex([198, 51, 100, 0])), "{routes}");
        assert!(routes.contains(&hex([203, 0, 113, 0])), "{routes}");
        let e = nl.add_route(net, 24, Some(gw), None).unwrap_err();
        assert_eq!(e.errno(), Some(libc::EEXIST), "{e}");
        let e = nl
            .add_route(
                IpAddr::V4(Ipv4Addr::new(198, 51, 100, 7)),
                24,
                None,
                Some("a0"),
            )
            .unwrap_err();
        assert!(matches!(e, LinkError::InvalidArgument { .. }), "{e}");
        let e = nl.add_route(net, 25, None, None).unwrap_err();
        assert!(matches!(e, LinkError::InvalidArgument { .. }), "{e}");
        let e = nl.add_route(net, 25, Some(v6), None).unwrap_err();
        assert!(matches!(e, LinkError::InvalidArgument { .. }), "{e}");
        // An unreachable gateway: the kernel's refusal comes back whole.
        let far = IpAddr::V4(Ipv4Addr::new(203, 0, 113, 200));
        let e = nl
            .add_route(
                IpAddr::V4(Ipv4Addr::new(169, 254, 9, 0)),
                24,
                Some(far),
                Some("a1"),
            )
            .unwrap_err();
        assert!(e.errno().is_some(), "{e}");
    });
}

#[test]
fn vxlan_with_fdb_remote() {
    isolated(|nl| {
        nl.create_veth("u0", "u1").unwrap();
        let local = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 10));
        nl.add_address("u0", local, 24).unwrap();
        let opts = VxlanOptions {
            vni: 4242,
            port: 4789,
            local: Some(local),
            group: None,
            dev: Some("u0".into()),
            learning: false,
        };
        nl.create_vxlan("vx0", &opts).unwrap();
        let l = nl.link("vx0").unwrap().unwrap();
        assert_eq!(l.kind.as_deref(), Some("vxlan"));
        nl.add_fdb_remote("vx0", IpAddr::V4(Ipv4Addr::new(192, 0, 2, 20)))
            .unwrap();
        nl.add_fdb_remote("vx0", IpAddr::V4(Ipv4Addr::new(192, 0, 2, 21)))
            .unwrap();
        let mut peers = nl.fdb_remotes("vx0").unwrap();
        peers.sort();
        let want: Vec<IpAddr> = [20, 21]
            .map(|h| IpAddr::V4(Ipv4Addr::new(192, 0, 2, h)))
            .into();
        assert_eq!(peers, want);
        let e = nl.add_fdb_remote("vx9", local).unwrap_err();
        assert!(matches!(e, LinkError::NotFound { .. }), "{e}");
        let bad = VxlanOptions {
            vni: 1 << 24,
            ..opts.clone()
        };
        assert!(matches!(
            nl.create_vxlan("vx1", &bad),
            Err(LinkError::InvalidArgument { .. })
        ));
        let bad = VxlanOptions {
            group: Some(local),
            ..opts.clone()
        };
        assert!(matches!(
            nl.create_vxlan("vx1", &bad),
            Err(LinkError::InvalidArgument { .. })
        ));
        let e = nl.create_vxlan("vx0", &opts).unwrap_err();
        assert_eq!(e.errno(), Some(libc::EEXIST), "{e}");
    });
}

#[test]
fn macvtap_on_veth() {
    isolated(|nl| {
        nl.create_veth("m0", "m1").unwrap();
        let mac = [0x52, 0x54, 0, 0xab, 0xcd, 0xef];
        nl.create_macvtap("mvt0", "m0", MacvlanMode::Bridge, Some(mac))
            .unwrap();
        let l = nl.link("mvt0").unwrap().unwrap();
        assert_eq!(l.kind.as_deref(), Some("macvtap"));
        assert_eq!(l.mac, Some(mac));
        let dev = format!("/dev/tap{}", l.index);
        // devtmpfs makes the node asynchronously; wait for it, bounded.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while !std::path::Path::new(&dev).exists() && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        assert!(std::path::Path::new(&dev).exists(), "{dev} missing");
        let e = nl
            .create_macvtap("mvt1", "nope", MacvlanMode::Vepa, None)
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "creating macvtap mvt1: no such interface \"nope\""
        );
        nl.delete("mvt0").unwrap();
    });
}

/// Run a create that this host's kernel may lack; `Some(reason)` to skip.
fn unsupported(r: Result<(), LinkError>) -> Option<String> {
    match r {
        Err(e @ LinkError::Unsupported { .. }) => Some(e.to_string()),
        Err(e) => panic!("{e}"),
        Ok(()) => None,
    }
}

#[test]
fn vlan_on_veth() {
    let skip = isolated(|nl| {
        nl.create_veth("p0", "p1").unwrap();
        let e = nl.create_vlan("p0.5000", "p0", 5000).unwrap_err();
        assert!(matches!(e, LinkError::InvalidArgument { .. }), "{e}");
        if let Some(why) = unsupported(nl.create_vlan("p0.10", "p0", 10)) {
            assert_eq!(
                why,
                "creating vlan p0.10: this kernel has no support for vlan devices (module 8021q)"
            );
            return Some(why);
        }
        let l = nl.link("p0.10").unwrap().unwrap();
        assert_eq!(l.kind.as_deref(), Some("vlan"));
        None
    });
    if let Some(why) = skip {
        testkit::skip(&why);
    }
}

#[test]
fn a_bridge_port_in_one_vlan() {
    let skip = isolated(|nl| {
        nl.create_bridge("vfbr", &BridgeOptions::default()).unwrap();
        nl.create_veth("vf0", "vf1").unwrap();
        nl.set_master("vf0", Some("vfbr")).unwrap();
        assert!(!nl.bridge_vlan_filtering("vfbr").unwrap());
        let e = nl.bridge_vlan_filtering("vf1").unwrap_err();
        assert!(e.to_string().contains("not a bridge"), "{e}");
        let e = nl.set_port_access_vlan("vf0", 4095).unwrap_err();
        assert!(matches!(e, LinkError::InvalidArgument { .. }), "{e}");
        match nl.set_bridge_vlan_filtering("vfbr", true) {
            Err(e @ LinkError::NoFeature { .. }) => {
                assert_eq!(
                    e.to_string(),
                    "turning VLAN filtering of bridge vfbr on: this kernel has no VLAN filtering \
                     on bridges (CONFIG_BRIDGE_VLAN_FILTERING, which needs 802.1Q)"
                );
                return Some(e.to_string());
            }
            other => other.unwrap(),
        }
        assert!(nl.bridge_vlan_filtering("vfbr").unwrap());
        nl.set_port_access_vlan("vf0", 10).unwrap();
        let vlans = nl.port_vlans("vf0").unwrap();
        assert_eq!(
            vlans,
            vec![PortVlan {
                vid: 10,
                pvid: true,
                untagged: true
            }]
        );
        None
    });
    if let Some(why) = skip {
        testkit::skip(&why);
    }
}

#[test]
fn bond_with_veth_slave() {
    let skip = isolated(|nl| {
        let opts = BondOptions {
            mode: BondMode::ActiveBackup,
            miimon_ms: 100,
        };
        if let Some(why) = unsupported(nl.create_bond("bond0", &opts)) {
            assert_eq!(
                why,
                "creating bond bond0: this kernel has no support for bond devices (module bonding)"
            );
            return Some(why);
        }
        nl.create_veth("s0", "s1").unwrap();
        nl.set_master("s0", Some("bond0")).unwrap();
        let b = nl.link("bond0").unwrap().unwrap();
        assert_eq!(b.kind.as_deref(), Some("bond"));
        assert_eq!(nl.link("s0").unwrap().unwrap().master, Some(b.index));
        None
    });
    if let Some(why) = skip {
        testkit::skip(&why);
    }
}

#[test]
fn invalid_names_are_refused_before_any_syscall() {
    for (name, why) in [
        ("", "empty"),
        ("abcdefghijklmnop", "longer than 15 bytes"),
        (".", "\".\" and \"..\" are reserved"),
        ("..", "\".\" and \"..\" are reserved"),
        ("a/b", "contains '/'"),
        ("a b", "contains whitespace or a control character"),
        ("a\tb", "contains whitespace or a control character"),
        ("eth0:1", "contains ':'"),
    ] {
        match valid_name(name) {
            Err(LinkError::InvalidName { why: w, .. }) => assert_eq!(w, why, "{name:?}"),
            other => panic!("{name:?}: {other:?}"),
        }
    }
    valid_name("abcdefghijklmno").unwrap();
    // No socket is needed to refuse them: a socket is opened here only to
    // call the methods; the refusals come from valid_name.
    isolated(|nl| {
        let e = nl
            .create_bridge("a/b", &BridgeOptions::default())
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "invalid interface name \"a/b\": contains '/'"
        );
        assert!(matches!(
            nl.create_veth("ok", ""),
            Err(LinkError::InvalidName { .. })
        ));
        assert!(matches!(
            nl.delete(".."),
            Err(LinkError::InvalidName { .. })
        ));
        assert!(matches!(nl.link("x y"), Err(LinkError::InvalidName { .. })));
        assert!(nl.links().unwrap().iter().all(|l| l.name != "a/b"));
    });
}

#[test]
fn sysctl_forwarding_in_netns() {
    run_isolated(|| {
        set_ipv4_forwarding(true).unwrap();
        let v = std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward").unwrap();
        assert_eq!(v.trim(), "1");
        set_ipv4_forwarding(false).unwrap();
        let v = std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward").unwrap();
        assert_eq!(v.trim(), "0");
        set_sysctl("ipv4/conf/lo/forwarding", "1").unwrap();
        for bad in [
            "../kernel/hostname",
            "/etc/passwd",
            "",
            "ipv4/../../x",
            "./ipv4/ip_forward",
        ] {
            let e = set_sysctl(bad, "1").unwrap_err();
            assert_eq!(e.kind(), std::io::ErrorKind::InvalidInput, "{bad}");
        }
        assert!(set_sysctl("ipv4/ip_forward", "1\n0").is_err());
        assert!(set_sysctl("ipv4/no_such_knob", "1").is_err());
    })
    .unwrap();
}

#[test]
fn an_unanswered_request_times_out() {
    isolated(|nl| {
        // A link change sent without NLM_F_ACK: on success the kernel
        // stays silent, so waiting for an acknowledgement must end at
        // the deadline with an error instead of hanging.
        let mut m = Msg::new(libc::RTM_NEWLINK, REQ);
        m.header(&ifinfomsg(1, libc::IFF_UP as u32, libc::IFF_UP as u32));
        let start = std::time::Instant::now();
        let e = nl.sock.exchange(m, Want::Ack).unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::TimedOut, "{e}");
        assert!(start.elapsed() >= sock::TIMEOUT);
        assert!(start.elapsed() < sock::TIMEOUT * 2);
        // The socket still works afterwards.
        assert!(nl.link("lo").unwrap().unwrap().up);
    });
}
