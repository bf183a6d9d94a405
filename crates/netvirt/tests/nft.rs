//! nft rules applied for real, in throwaway namespaces: a guest behind a
//! bridge connects to an upstream server through the host namespace.

mod fixture;

use std::io::Read;
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::time::Duration;

use fixture::{Lan, Netns};
use netvirt::nft::{self, Forward, NetworkRules};

/// Host + guest + an upstream namespace on 198.51.100.0/24, forwarding on.
struct World {
    lan: Lan,
    up: Netns,
}

fn world() -> World {
    let lan = Lan::new(Some("192.0.2.10/24"));
    let up = Netns::new("u");
    lan.host.ip(&[
        "link", "add", "vu", "type", "veth", "peer", "name", "eth0", "netns", &up.name,
    ]);
    lan.host
        .ip(&["addr", "add", "198.51.100.1/24", "dev", "vu"]);
    lan.host.ip(&["link", "set", "vu", "up"]);
    up.ip(&["addr", "add", "198.51.100.2/24", "dev", "eth0"]);
    up.ip(&["link", "set", "eth0", "up"]);
    lan.host
        .run(|| std::fs::write("/proc/sys/net/ipv4/ip_forward", "1").expect("ip_forward"));
    World { lan, up }
}

fn rules(forward: Forward) -> NetworkRules {
    NetworkRules {
        network: "test-net".into(),
        bridge: "br0".into(),
        subnets: vec![
            ("192.0.2.0".parse().unwrap(), 24),
            ("2001:db8::".parse().unwrap(), 64),
        ],
        forward,
    }
}

/// The source address the upstream server sees for a guest connection,
/// or None if the connection fails.
fn connect(w: &World) -> Option<IpAddr> {
    let listener =
        w.up.run(|| TcpListener::bind("198.51.100.2:7000").expect("bind"));
    listener.set_nonblocking(true).unwrap();
    let ok = w.lan.guest.run(|| {
        let to: SocketAddr = "198.51.100.2:7000".parse().unwrap();
        TcpStream::connect_timeout(&to, Duration::from_secs(2)).is_ok()
    });
    if !ok {
        return None;
    }
    for _ in 0..50 {
        if let Ok((mut s, peer)) = listener.accept() {
            let _ = s.read(&mut [0; 1]);
            return Some(peer.ip());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    None
}

fn listing(w: &World) -> String {
    let out = w.lan.host.exec(&[
        "nft",
        "-j",
        "list",
        "table",
        "inet",
        &nft::table_name("test-net"),
    ]);
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn nat_masquerades_and_remove_cleans_up() {
    let w = world();
    w.lan
        .host
        .run(|| {
            nft::apply(&rules(Forward::Nat {
                out_dev: None,
                addresses: None,
                ports: None,
            }))
        })
        .unwrap();
    assert!(listing(&w).contains("masquerade"), "{}", listing(&w));
    assert_eq!(connect(&w), Some("198.51.100.1".parse().unwrap()));
    // Applying again replaces rather than duplicates.
    w.lan
        .host
        .run(|| {
            nft::apply(&rules(Forward::Nat {
                out_dev: Some("vu".into()),
                addresses: None,
                ports: Some((1024, 65535)),
            }))
        })
        .unwrap();
    assert_eq!(
        listing(&w).matches("masquerade").count(),
        3,
        "{}",
        listing(&w)
    );
    assert_eq!(connect(&w), Some("198.51.100.1".parse().unwrap()));
    assert_eq!(
        w.lan.host.run(nft::tables).unwrap(),
        vec![nft::table_name("test-net")]
    );
    w.lan.host.run(|| nft::remove("test-net")).unwrap();
    assert_eq!(w.lan.host.run(nft::tables).unwrap(), Vec::<String>::new());
    let out = fixture::sh(&[
        "ip",
        "netns",
        "exec",
        &w.lan.host.name,
        "nft",
        "list",
        "tables",
    ]);
    assert!(out.trim().is_empty(), "{out}");
    // Removing what is not there is fine.
    w.lan.host.run(|| nft::remove("test-net")).unwrap();
}

#[test]
fn nat_to_address_range() {
    let w = world();
    w.lan
        .host
        .ip(&["addr", "add", "198.51.100.9/24", "dev", "vu"]);
    let a = "198.51.100.9".parse().unwrap();
    w.lan
        .host
        .run(|| {
            nft::apply(&rules(Forward::Nat {
                out_dev: None,
                addresses: Some((a, a)),
                ports: None,
            }))
        })
        .unwrap();
    assert!(listing(&w).contains("snat"), "{}", listing(&w));
    assert_eq!(connect(&w), Some(IpAddr::V4(a)));
}

#[test]
fn route_keeps_guest_address() {
    let w = world();
    w.up.ip(&["route", "add", "192.0.2.0/24", "via", "198.51.100.1"]);
    w.lan
        .host
        .run(|| nft::apply(&rules(Forward::Route { out_dev: None })))
        .unwrap();
    assert!(!listing(&w).contains("masquerade"));
    assert_eq!(connect(&w), Some("192.0.2.10".parse().unwrap()));
}

#[test]
fn isolated_blocks_forwarding() {
    let w = world();
    // With a route back, only the rules can make the connection fail.
    w.up.ip(&["route", "add", "192.0.2.0/24", "via", "198.51.100.1"]);
    w.lan
        .host
        .run(|| nft::apply(&rules(Forward::Isolated)))
        .unwrap();
    assert_eq!(connect(&w), None);
    w.lan.host.run(|| nft::remove("test-net")).unwrap();
    assert_eq!(
        connect(&w),
        Some("192.0.2.10".parse().unwrap()),
        "removal restores forwarding"
    );
}

#[test]
fn open_adds_no_rules() {
    let w = world();
    w.lan
        .host
        .run(|| nft::apply(&rules(Forward::Open)))
        .unwrap();
    assert!(!listing(&w).contains("\"rule\""), "{}", listing(&w));
}

#[test]
fn bad_input_is_refused_with_one_line() {
    let ns = Netns::new("x");
    let mut r = rules(Forward::Route {
        out_dev: Some("bad/name".into()),
    });
    let e = ns.run(|| nft::apply(&r)).unwrap_err().to_string();
    assert!(e.contains("not a valid interface name"), "{e}");
    r.forward = Forward::Nat {
        out_dev: None,
        addresses: None,
        ports: Some((2000, 1000)),
    };
    assert!(ns.run(|| nft::apply(&r)).is_err());
    r.forward = Forward::Isolated;
    r.subnets = vec![("192.0.2.0".parse().unwrap(), 33)];
    assert!(ns.run(|| nft::apply(&r)).is_err());
}
