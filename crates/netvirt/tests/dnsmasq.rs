//! dnsmasq started for real on a bridge in a throwaway namespace, with a
//! guest namespace behind it asking for a lease (busybox udhcpc) and
//! resolving names (busybox nslookup).

mod fixture;

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use fixture::{Lan, Netns};
use netvirt::dnsmasq::{self, Config, Dnsmasq, Forwarder, Host, Range};

/// A state directory; any dnsmasq still running on it is stopped, and the
/// directory removed, on drop.
struct Dir(PathBuf);

impl Dir {
    fn new(tag: &str) -> Dir {
        let p = std::env::temp_dir().join(format!("vfw-dnsmasq-{}-{tag}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        Dir(p)
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        if let Ok(Some(d)) = Dnsmasq::adopt(&self.0) {
            let _ = d.stop();
        }
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

const GUEST_MAC: [u8; 6] = [0x52, 0x54, 0, 0, 0, 0x42];

fn config(dir: &Dir) -> Config {
    Config {
        network: "test".into(),
        bridge: "br0".into(),
        dir: dir.0.clone(),
        domain: Some("vnet".into()),
        local_only_domain: true,
        listen: vec!["192.0.2.1".parse().unwrap()],
        ranges: vec![Range {
            start: "192.0.2.100".parse().unwrap(),
            end: "192.0.2.150".parse().unwrap(),
            prefix: 24,
            lease: Some(Duration::from_secs(3600)),
        }],
        hosts: vec![],
        dns_hosts: vec![("192.0.2.77".parse().unwrap(), vec!["web.example".into()])],
        forwarders: vec![],
        no_resolv: true,
        dns: true,
        router: true,
    }
}

/// Run udhcpc in the guest; the address it was given, which the script
/// also puts on the guest's interface.
fn dhcp(guest: &Netns, dir: &Dir) -> Option<String> {
    let out = dir.0.join("udhcpc.out");
    let script = dir.0.join("udhcpc.sh");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\ncase \"$1\" in bound|renew) ip addr flush dev \"$interface\"; ip addr add \"$ip/24\" dev \"$interface\"; echo \"$ip\" > {};; esac\n",
            out.display()
        ),
    )
    .unwrap();
    Command::new("chmod")
        .arg("+x")
        .arg(&script)
        .status()
        .unwrap();
    let _ = std::fs::remove_file(&out);
    let r = guest.exec(&[
        "/bin/busybox",
        "udhcpc",
        "-i",
        "eth0",
        "-n",
        "-q",
        "-f",
        "-t",
        "5",
        "-T",
        "1",
        "-s",
        script.to_str().unwrap(),
    ]);
    assert!(
        r.status.success(),
        "udhcpc: {}",
        String::from_utf8_lossy(&r.stderr)
    );
    std::fs::read_to_string(&out)
        .ok()
        .map(|s| s.trim().to_string())
}

fn resolve(guest: &Netns, name: &str) -> String {
    let r = guest.exec(&["/bin/busybox", "nslookup", name, "192.0.2.1"]);
    String::from_utf8_lossy(&r.stdout).into_owned()
}

#[test]
fn leases_names_hosts_reload_stop() {
    let dir = Dir::new("main");
    let lan = Lan::new(None);
    lan.guest
        .ip(&["link", "set", "eth0", "address", "52:54:00:00:00:42"]);
    let mut cfg = config(&dir);
    cfg.hosts.push(Host {
        mac: Some(GUEST_MAC),
        name: Some("vm1".into()),
        ip: Some("192.0.2.42".parse().unwrap()),
    });
    let d = lan.host.run(|| Dnsmasq::start(&cfg)).expect("start");
    assert!(d.alive());

    // The static host gets its fixed address, and the lease is recorded.
    assert_eq!(dhcp(&lan.guest, &dir).as_deref(), Some("192.0.2.42"));
    let leases = dnsmasq::leases(&dir.0).unwrap();
    assert_eq!(leases.len(), 1, "{leases:?}");
    assert_eq!(leases[0].mac, GUEST_MAC);
    assert_eq!(leases[0].ip.to_string(), "192.0.2.42");
    assert!(leases[0].expiry > 0);

    assert!(resolve(&lan.guest, "web.example").contains("192.0.2.77"));
    assert!(resolve(&lan.guest, "vm1.vnet").contains("192.0.2.42"));

    // adopt() finds the same process.
    let again = Dnsmasq::adopt(&dir.0).unwrap().expect("adopt");
    assert_eq!(again.pid(), d.pid());
    let e = lan
        .host
        .run(|| Dnsmasq::start(&cfg))
        .expect_err("started twice");
    assert!(e.to_string().contains("already running"), "{e}");

    // reload() adds a host: its name resolves without a restart.
    assert!(!resolve(&lan.guest, "vm2.vnet").contains("192.0.2.43"));
    cfg.hosts.push(Host {
        mac: Some([0x52, 0x54, 0, 0, 0, 0x43]),
        name: Some("vm2".into()),
        ip: Some("192.0.2.43".parse().unwrap()),
    });
    d.reload(&cfg).unwrap();
    let mut found = false;
    for _ in 0..50 {
        if resolve(&lan.guest, "vm2.vnet").contains("192.0.2.43") {
            found = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(found, "vm2 not resolvable after reload");
    assert_eq!(d.pid(), again.pid());

    let pid = d.pid();
    d.stop().unwrap();
    assert!(!again.alive());
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    assert!(cmdline.is_empty(), "pid {pid} still runs");
    assert!(Dnsmasq::adopt(&dir.0).unwrap().is_none());
}

#[test]
fn dynamic_range_lease() {
    let dir = Dir::new("range");
    let lan = Lan::new(None);
    let d = lan
        .host
        .run(|| Dnsmasq::start(&config(&dir)))
        .expect("start");
    let ip = dhcp(&lan.guest, &dir).expect("lease");
    let last: u8 = ip.rsplit('.').next().unwrap().parse().unwrap();
    assert!(
        ip.starts_with("192.0.2.") && (100..=150).contains(&last),
        "{ip}"
    );
    let leases = dnsmasq::leases(&dir.0).unwrap();
    assert_eq!(
        leases.iter().map(|l| l.ip.to_string()).collect::<Vec<_>>(),
        vec![ip]
    );
    d.stop().unwrap();
}

#[test]
fn adopt_refuses_other_processes() {
    let dir = Dir::new("adopt");
    assert!(Dnsmasq::adopt(&dir.0).unwrap().is_none(), "no pid file");
    let mut sleeper = Command::new("sleep").arg("30").spawn().unwrap();
    std::fs::write(dir.0.join("dnsmasq.pid"), format!("{}\n", sleeper.id())).unwrap();
    let adopted = Dnsmasq::adopt(&dir.0).unwrap();
    let _ = sleeper.kill();
    let _ = sleeper.wait();
    assert!(adopted.is_none(), "took a non-dnsmasq pid");
    std::fs::write(dir.0.join("dnsmasq.pid"), "garbage").unwrap();
    assert!(Dnsmasq::adopt(&dir.0).unwrap().is_none());
}

#[test]
fn startup_failure_is_reported() {
    // A second dnsmasq on the same bridge cannot bind port 53 there.
    let (a, b) = (Dir::new("first"), Dir::new("second"));
    let lan = Lan::new(None);
    let first = lan.host.run(|| Dnsmasq::start(&config(&a))).expect("start");
    let e = lan
        .host
        .run(|| Dnsmasq::start(&config(&b)))
        .expect_err("second started");
    let msg = e.to_string();
    assert!(
        msg.starts_with("dnsmasq failed to start: ") && !msg.contains('\n'),
        "{msg}"
    );
    assert!(msg.contains("192.0.2.1"), "{msg}");
    assert!(Dnsmasq::adopt(&b.0).unwrap().is_none());
    first.stop().unwrap();
}

#[test]
fn bad_strings_are_refused() {
    let dir = Dir::new("bad");
    let cases: Vec<fn(&mut Config)> = vec![
        |c| c.bridge = "br0\nport=5353".into(),
        |c| c.domain = Some("vnet\nserver=1.2.3.4".into()),
        |c| c.domain = Some("a/b".into()),
        |c| {
            c.hosts.push(Host {
                mac: None,
                name: Some("x,y".into()),
                ip: None,
            })
        },
        |c| {
            c.hosts.push(Host {
                mac: None,
                name: None,
                ip: None,
            })
        },
        |c| {
            c.dns_hosts
                .push(("192.0.2.5".parse().unwrap(), vec!["a b".into()]))
        },
        |c| c.dns_hosts.push(("192.0.2.5".parse().unwrap(), vec![])),
        |c| {
            c.forwarders.push(Forwarder {
                addr: None,
                domain: Some("#".into()),
            })
        },
        |c| {
            c.forwarders.push(Forwarder {
                addr: None,
                domain: None,
            })
        },
        |c| c.ranges[0].end = "192.0.3.1".parse().unwrap(),
        |c| c.ranges[0].lease = Some(Duration::from_secs(10)),
        |c| c.dir = PathBuf::from("relative"),
        |c| c.dir = PathBuf::from("/tmp/a,b"),
    ];
    for (i, f) in cases.iter().enumerate() {
        let mut cfg = config(&dir);
        f(&mut cfg);
        let e = dnsmasq::write_config(&cfg).expect_err(&format!("case {i} accepted"));
        assert!(
            e.to_string().starts_with("invalid dnsmasq configuration"),
            "case {i}: {e}"
        );
    }
    assert!(dnsmasq::write_config(&config(&dir)).is_ok());
}
