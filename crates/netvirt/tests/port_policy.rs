//! Per-port anti-spoofing (nftables bridge family) and rate limits (tc
//! HTB, IFB) applied for real on a bridge port in throwaway namespaces: a
//! "guest" namespace behind a veth on the host namespace's bridge plays
//! the guest, the veth's host end its TAP.

mod fixture;

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use fixture::Lan;
use netvirt::port_filter::{self, Checks, PortFilter};
use netvirt::shaping::{self, PortShaping, Rate};

/// The port: the bridge end of the guest's veth.
const PORT: &str = "vg";

fn guest_mac(lan: &Lan) -> [u8; 6] {
    let out = lan.guest.exec(&["cat", "/sys/class/net/eth0/address"]);
    let text = String::from_utf8_lossy(&out.stdout);
    let mut mac = [0u8; 6];
    for (b, p) in mac.iter_mut().zip(text.trim().split(':')) {
        *b = u8::from_str_radix(p, 16).unwrap();
    }
    mac
}

/// Whether the guest can open a TCP connection to the host's bridge
/// address and get one byte back.
fn reaches_host(lan: &Lan, port: u16) -> bool {
    let listener = lan
        .host
        .run(|| TcpListener::bind(("192.0.2.1", port)).expect("bind"));
    let server = std::thread::spawn(move || {
        listener.set_nonblocking(true).unwrap();
        let end = Instant::now() + Duration::from_secs(3);
        while Instant::now() < end {
            if let Ok((mut s, _)) = listener.accept() {
                let _ = s.set_nonblocking(false);
                let _ = s.write_all(b"x");
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    });
    let ok = lan.guest.run(move || {
        let to = SocketAddr::from(([192, 0, 2, 1], port));
        let Ok(mut s) = TcpStream::connect_timeout(&to, Duration::from_secs(2)) else {
            return false;
        };
        s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let mut b = [0u8; 1];
        s.read_exact(&mut b).is_ok()
    });
    server.join().unwrap();
    ok
}

fn nft_listing(lan: &Lan) -> String {
    let out = lan.host.exec(&["nft", "list", "ruleset"]);
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn clean_traffic_drops_spoofed_macs_and_addresses_and_goes_cleanly() {
    let lan = Lan::new(Some("192.0.2.10/24"));
    let mac = guest_mac(&lan);
    assert!(reaches_host(&lan, 7100), "no connectivity before any rule");
    let filter = PortFilter {
        port: PORT.into(),
        mac,
        ips: vec![Ipv4Addr::new(192, 0, 2, 10)],
        checks: Checks::CLEAN_TRAFFIC,
    };
    lan.host.run(|| port_filter::apply(&filter)).unwrap();
    assert!(reaches_host(&lan, 7101), "honest traffic was dropped");
    // Applying again replaces, never duplicates.
    lan.host.run(|| port_filter::apply(&filter)).unwrap();
    assert_eq!(nft_listing(&lan).matches("chain port_vg").count(), 1);

    // Another source address: nothing gets through (its ARP neither).
    lan.guest.ip(&["addr", "flush", "dev", "eth0"]);
    lan.guest
        .ip(&["addr", "add", "192.0.2.11/24", "dev", "eth0"]);
    lan.host.ip(&["neigh", "flush", "all"]);
    assert!(!reaches_host(&lan, 7102), "a spoofed address got through");

    // Back to its own address but another MAC: dropped too.
    lan.guest.ip(&["addr", "flush", "dev", "eth0"]);
    lan.guest
        .ip(&["addr", "add", "192.0.2.10/24", "dev", "eth0"]);
    lan.guest
        .ip(&["link", "set", "eth0", "address", "52:54:00:00:99:99"]);
    lan.host.ip(&["neigh", "flush", "all"]);
    assert!(!reaches_host(&lan, 7103), "a spoofed MAC got through");

    // Without any allowed address (no lease yet), no IPv4 passes.
    let mac_back = format!(
        "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
        mac[0], mac[1], mac[2], mac[3], mac[4], mac[5]
    );
    lan.guest.ip(&["link", "set", "eth0", "address", &mac_back]);
    lan.host.ip(&["neigh", "flush", "all"]);
    assert!(reaches_host(&lan, 7104));
    let unlearnt = PortFilter {
        ips: Vec::new(),
        ..filter.clone()
    };
    lan.host.run(|| port_filter::apply(&unlearnt)).unwrap();
    lan.host.ip(&["neigh", "flush", "all"]);
    assert!(
        !reaches_host(&lan, 7105),
        "traffic passed with no address allowed"
    );

    // Removal leaves no chain and no table; removing twice is fine.
    lan.host.run(|| port_filter::remove(PORT)).unwrap();
    lan.host.run(|| port_filter::remove(PORT)).unwrap();
    let listing = nft_listing(&lan);
    assert!(!listing.contains("vireo_ports"), "{listing}");
    assert!(reaches_host(&lan, 7106));
    assert_eq!(
        lan.host.run(port_filter::chains).unwrap(),
        Vec::<String>::new()
    );
}

/// Bytes per second the receiver saw for `total` bytes sent by `send_ns`
/// to a listener in `recv_ns` (timed from the first byte to the end).
fn measure(
    recv: &fixture::Netns,
    send: &fixture::Netns,
    bind: &str,
    port: u16,
    total: usize,
) -> f64 {
    let listener = recv.run(|| TcpListener::bind((bind, port)).expect("bind"));
    let server = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().expect("accept");
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let mut buf = vec![0u8; 65536];
        let mut got = 0usize;
        let n = s.read(&mut buf).expect("first read");
        let start = Instant::now();
        let first = n;
        got += n;
        while got < total {
            match s.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => got += n,
                Err(e) => panic!("read after {got} bytes: {e}"),
            }
        }
        assert_eq!(got, total);
        (got - first) as f64 / start.elapsed().as_secs_f64()
    });
    let to: SocketAddr = format!("{bind}:{port}").parse().unwrap();
    send.run(move || {
        let mut s = TcpStream::connect_timeout(&to, Duration::from_secs(3)).expect("connect");
        let chunk = vec![7u8; 16384];
        let mut sent = 0;
        while sent < total {
            let n = chunk.len().min(total - sent);
            s.write_all(&chunk[..n]).expect("write");
            sent += n;
        }
    });
    server.join().unwrap()
}

fn link_names(lan: &Lan) -> String {
    let out = lan.host.exec(&["ip", "-o", "link", "show"]);
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn rates_are_held_each_way_and_everything_goes_with_the_limits() {
    let lan = Lan::new(Some("192.0.2.10/24"));
    let kib: u32 = 2000;
    let shaping = PortShaping {
        inbound: Some(Rate {
            average_kib: u64::from(kib),
            peak_kib: None,
            burst_kib: None,
        }),
        outbound: Some(Rate {
            average_kib: u64::from(kib),
            peak_kib: None,
            burst_kib: Some(32),
        }),
    };
    lan.host.run(|| shaping::apply(PORT, &shaping)).unwrap();
    let ifb = shaping::ifb_name(PORT);
    assert!(link_names(&lan).contains(&format!(": {ifb}:")));
    let want = f64::from(kib * 1024);
    let total = usize::try_from(kib * 1024 * 3).unwrap();

    // From the guest: through the IFB.
    let up = measure(&lan.host, &lan.guest, "192.0.2.1", 7200, total);
    assert!(
        (up - want).abs() / want < 0.10,
        "guest-sent rate {up:.0} B/s, limit {want} B/s"
    );
    // To the guest: the port's root HTB.
    let down = measure(&lan.guest, &lan.host, "192.0.2.10", 7201, total);
    assert!(
        (down - want).abs() / want < 0.10,
        "guest-bound rate {down:.0} B/s, limit {want} B/s"
    );

    // Applying again replaces; then removal leaves the port as it was.
    lan.host.run(|| shaping::apply(PORT, &shaping)).unwrap();
    lan.host.run(|| shaping::remove(PORT)).unwrap();
    lan.host.run(|| shaping::remove(PORT)).unwrap();
    assert!(!link_names(&lan).contains("vifb"), "{}", link_names(&lan));
    let qdiscs = lan.host.exec(&["tc", "qdisc", "show", "dev", PORT]);
    let qdiscs = String::from_utf8_lossy(&qdiscs.stdout).into_owned();
    assert!(
        !qdiscs.contains("htb") && !qdiscs.contains("ingress"),
        "{qdiscs}"
    );
    // Unshaped, the same transfer runs far above the limit.
    let free = measure(&lan.host, &lan.guest, "192.0.2.1", 7202, total);
    assert!(free > want * 2.0, "unshaped rate {free:.0} B/s");

    // A port that does not exist is one clear error.
    let e = lan
        .host
        .run(|| shaping::apply("nosuch0", &shaping))
        .unwrap_err()
        .to_string();
    assert!(e.contains("nosuch0"), "{e}");
}
