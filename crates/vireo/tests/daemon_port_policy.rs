//! Per-NIC filtering and bandwidth under `vireo daemon`, with the
//! project's `virtio` guest (smoltcp) on a NAT network: clean-traffic lets
//! the guest's DHCP and honest TCP through and none of its spoofed
//! traffic, `bandwidth/outbound` holds its measured send rate to the
//! limit, `domiftune` reads and changes limits, and a stopped domain
//! leaves no IFB, qdisc or nft rule behind.
//!
//! The daemon runs in a network namespace the test makes and removes; the
//! TCP server is the test itself, in that namespace, on the network's
//! bridge address. Addresses are from the documentation ranges.

mod common;
mod daemon_harness;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use daemon_harness::{have_kvm, processes_mentioning, sigkill, Daemon};
use serde_json::json;

/// A network namespace, removed (with every process the test's directory
/// names) on drop.
struct Netns {
    name: String,
    dir: PathBuf,
}

impl Netns {
    fn new(tag: &str, dir: &Path) -> Option<Netns> {
        let name = format!("vireo-{tag}-{}", std::process::id());
        let out = Command::new("ip").args(["netns", "add", &name]).output();
        match out {
            Ok(o) if o.status.success() => {}
            Ok(o) => {
                testkit::skip(&format!(
                    "cannot make a network namespace: {}",
                    String::from_utf8_lossy(&o.stderr).trim()
                ));
                return None;
            }
            Err(e) => {
                testkit::skip(&format!("cannot run ip: {e}"));
                return None;
            }
        }
        let ns = Netns {
            name,
            dir: dir.to_path_buf(),
        };
        ns.exec(&["ip", "link", "set", "lo", "up"]);
        Some(ns)
    }

    /// Runs `cmd` inside the namespace; its stdout and stderr.
    fn exec(&self, cmd: &[&str]) -> String {
        let out = Command::new("ip")
            .args(["netns", "exec", &self.name])
            .args(cmd)
            .output()
            .unwrap();
        let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
        text.push_str(&String::from_utf8_lossy(&out.stderr));
        text
    }

    /// What a port policy can leave behind: IFB links, non-default qdiscs
    /// and the port table.
    fn leftovers(&self) -> String {
        let mut left = String::new();
        for l in self.exec(&["ip", "-o", "link", "show"]).lines() {
            if l.contains("vifb") {
                left.push_str(l);
                left.push('\n');
            }
        }
        for l in self.exec(&["tc", "qdisc", "show"]).lines() {
            if l.contains("htb") || l.contains("ingress") {
                left.push_str(l);
                left.push('\n');
            }
        }
        let ruleset = self.exec(&["nft", "list", "ruleset"]);
        if ruleset.contains("vireo_ports") {
            left.push_str(&ruleset);
        }
        left
    }

    /// Runs `f` on a thread inside the namespace.
    fn run<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        let path = format!("/run/netns/{}", self.name);
        std::thread::spawn(move || {
            let ns = std::fs::File::open(&path).expect("open the namespace");
            // SAFETY: setns on a valid namespace descriptor changes only
            // this thread's network namespace.
            let rc = unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(rc, 0, "setns: {}", std::io::Error::last_os_error());
            f()
        })
        .join()
        .unwrap()
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

/// This file's tests run one at a time: the rate measured in one would
/// otherwise share the CPUs with another's busy-polling guests.
fn serial() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn setup(tag: &str) -> Option<(tempfile::TempDir, Netns)> {
    if !have_kvm() {
        testkit::skip("no /dev/kvm");
        return None;
    }
    for tool in ["nft", "dnsmasq", "tc"] {
        let found = Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .output()
            .is_ok_and(|o| o.status.success());
        if !found {
            testkit::skip(&format!(
                "{tool} is not installed (scripts/test.sh installs it)"
            ));
            return None;
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let ns = Netns::new(tag, dir.path())?;
    Some((dir, ns))
}

const NAT_NETWORK: &str = "<network><name>lan</name><forward mode='nat'/>\
    <ip address='192.0.2.1' netmask='255.255.255.0'>\
    <dhcp><range start='192.0.2.100' end='192.0.2.150'/></dhcp></ip></network>";

/// The `virtio` guest on network `lan` with `nic_extra` in its interface,
/// its debug-console lines mirrored to a virtio console file `log`.
fn guest_xml(name: &str, mac: &str, nic_extra: &str, cmdline: &str, log: &Path) -> String {
    format!(
        "<domain type='kvm'><name>{name}</name><memory unit='MiB'>128</memory><vcpu>1</vcpu>\
         <os><type arch='x86_64'>hvm</type><kernel>{}</kernel><cmdline>mirror {cmdline}</cmdline></os>\
         <devices><interface type='network'><source network='lan'/><mac address='{mac}'/>\
         <model type='virtio'/>{nic_extra}</interface>\
         <serial type='pty'/>\
         <console type='file'><source path='{}'/><target type='virtio'/></console>\
         </devices></domain>",
        common::guest("virtio").display(),
        log.display()
    )
}

/// A TCP server at 192.0.2.1:`port` in `ns`: each connection is read to
/// its end and closed; sends (peer, bytes, seconds from first to last byte).
fn server(ns: &Netns, port: u16) -> mpsc::Receiver<(SocketAddr, u64, f64)> {
    let listener = ns.run(move || TcpListener::bind(("192.0.2.1", port)).expect("bind"));
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || loop {
        let Ok((mut conn, peer)) = listener.accept() else {
            return;
        };
        conn.set_read_timeout(Some(Duration::from_secs(60)))
            .unwrap();
        let mut buf = vec![0u8; 65536];
        let mut total = 0u64;
        let mut first = None;
        let mut last = Instant::now();
        loop {
            match conn.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    last = Instant::now();
                    first.get_or_insert(last);
                    total += n as u64;
                }
            }
        }
        let secs = first.map_or(0.0, |f| last.duration_since(f).as_secs_f64());
        let _ = conn.write_all(b"");
        drop(conn);
        if tx.send((peer, total, secs)).is_err() {
            return;
        }
    });
    rx
}

fn start_network(d: &Daemon) {
    d.ok("POST", "/networks", Some(&json!({ "xml": NAT_NETWORK })));
    d.ok("POST", "/networks/lan/start", None);
}

/// One run of the guest with clean-traffic: honest DHCP and TCP, then the
/// same exchange spoofed (`spoof` is `net.spoof-mac=..` or `net.spoof-ip=..`).
fn clean_traffic_run(d: &Daemon, ns: &Netns, dir: &Path, tag: &str, spoof: &str, port: u16) {
    let log = dir.join(format!("{tag}.console"));
    let name = format!("guard-{tag}");
    let xml = guest_xml(
        &name,
        "52:54:00:00:00:21",
        "<filterref filter='clean-traffic'/>",
        &format!("net.dhcp net.tcp=192.0.2.1:{port},bytes=4096 {spoof} net.timeout-ms=12000"),
        &log,
    );
    d.define(&xml);
    let conns = server(ns, port);
    d.ok("POST", &format!("/domains/{name}/start"), Some(&json!({})));
    // The port is filtered from the start; no address is allowed yet.
    let ruleset = ns.exec(&["nft", "list", "table", "bridge", "vireo_ports"]);
    assert!(ruleset.contains("52:54:00:00:00:21"), "{ruleset}");
    d.wait_state(&name, "shut_off", Duration::from_secs(90));
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    let leased = text
        .lines()
        .find_map(|l| l.strip_prefix("virtio: dhcp ip="))
        .and_then(|r| r.split('/').next())
        .unwrap_or_else(|| panic!("no lease:\n{text}\n{}", d.log_text()))
        .to_string();
    assert!(
        text.contains(&format!(
            "virtio: tcp 192.0.2.1:{port} sent=4096 received=0"
        )),
        "honest TCP did not flow:\n{text}"
    );
    assert!(text.contains("virtio: spoof "), "{text}");
    let after_spoof = text.split("virtio: spoof ").nth(1).unwrap_or("");
    assert!(
        after_spoof.contains("virtio: tcp FAIL"),
        "the spoofed exchange succeeded:\n{text}"
    );
    // The server saw the honest connection only, from the leased address.
    let seen: Vec<_> = conns.try_iter().collect();
    assert_eq!(seen.len(), 1, "{seen:?}\n{text}");
    assert_eq!(seen[0].0.ip().to_string(), leased);
    assert_eq!(seen[0].1, 4096);
    let left = ns.leftovers();
    assert!(left.is_empty(), "left behind after {name} stopped:\n{left}");
    d.ok("DELETE", &format!("/domains/{name}"), None);
}

#[test]
fn clean_traffic_passes_dhcp_and_honest_tcp_and_drops_spoofed_macs_and_ips() {
    let _one_at_a_time = serial();
    let Some((dir, ns)) = setup("pf1") else {
        return;
    };
    let d = Daemon::start_in(dir.path(), &[], Some(&ns.name));
    start_network(&d);
    clean_traffic_run(&d, &ns, dir.path(), "ip", "net.spoof-ip=192.0.2.77", 7300);
    clean_traffic_run(
        &d,
        &ns,
        dir.path(),
        "mac",
        "net.spoof-mac=52:54:00:00:00:99",
        7301,
    );
    d.ok("POST", "/networks/lan/destroy", Some(&json!({})));
}

/// A UDP sink at 192.0.2.1:`port` in `ns`: sends (bytes after the first
/// datagram, seconds from the first datagram to the last) once the
/// datagrams stop for a second.
fn udp_sink(ns: &Netns, port: u16) -> mpsc::Receiver<(u64, f64)> {
    let sock = ns.run(move || UdpSocket::bind(("192.0.2.1", port)).expect("bind"));
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 2048];
        sock.set_read_timeout(Some(Duration::from_secs(90)))
            .unwrap();
        if sock.recv(&mut buf).is_err() {
            return;
        }
        let first = Instant::now();
        let mut last = first;
        let mut bytes = 0u64;
        sock.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
        while let Ok(n) = sock.recv(&mut buf) {
            last = Instant::now();
            bytes += n as u64;
        }
        let _ = tx.send((bytes, last.duration_since(first).as_secs_f64()));
    });
    rx
}

#[test]
fn outbound_bandwidth_holds_the_guests_send_rate_and_goes_with_the_domain() {
    let _one_at_a_time = serial();
    let Some((dir, ns)) = setup("pf2") else {
        return;
    };
    let d = Daemon::start_in(dir.path(), &[], Some(&ns.name));
    start_network(&d);
    let kib: u64 = 1000;
    let want = (kib * 1024) as f64;
    let limit = format!("<bandwidth><outbound average='{kib}'/></bandwidth>");

    // A flood of UDP frames (what iperf -u measures): far more than the
    // limit is offered, and what reaches the server is the shaper's rate.
    let log = dir.path().join("udp.console");
    d.define(&guest_xml(
        "flood",
        "52:54:00:00:00:31",
        &limit,
        // The bridge port learns for a few seconds (STP): ARP waits longer.
        // The guest stays up after sending while the shaper's queue drains
        // (the queue is the IFB's, which goes with the domain).
        "net ip=192.0.2.60 peer=192.0.2.1 pings=1 timeout-ms=3000 bench-net-frames=6000 \
         wait-power-button=4000",
        &log,
    ));
    let sink = udp_sink(&ns, 9);
    d.ok("POST", "/domains/flood/start", Some(&json!({})));
    let (bytes, secs) = sink
        .recv_timeout(Duration::from_secs(40))
        .unwrap_or_else(|_| {
            panic!(
                "no datagrams:\n{}\n{}",
                std::fs::read_to_string(&log).unwrap_or_default(),
                std::fs::read_to_string(d.state.join("log/flood.log")).unwrap_or_default()
            )
        });
    let rate = bytes as f64 / secs;
    eprintln!("UDP from the guest: {bytes} bytes in {secs:.2} s = {rate:.0} B/s (limit {want})");
    assert!(
        secs > 1.0 && (rate - want).abs() / want < 0.10,
        "guest sent at {rate:.0} B/s, limit {want} B/s ({bytes} UDP bytes in {secs:.2} s)\n{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    d.wait_state("flood", "shut_off", Duration::from_secs(60));
    let left = ns.leftovers();
    assert!(left.is_empty(), "left behind:\n{left}");

    // TCP through the same limit completes and stays under it.
    let bytes: u64 = 1 << 20;
    let log = dir.path().join("tcp.console");
    d.define(&guest_xml(
        "sender",
        "52:54:00:00:00:32",
        &limit,
        &format!("net.dhcp net.tcp=192.0.2.1:7310,bytes={bytes} net.timeout-ms=30000"),
        &log,
    ));
    let conns = server(&ns, 7310);
    d.ok("POST", "/domains/sender/start", Some(&json!({})));
    let (peer, total, secs) = conns
        .recv_timeout(Duration::from_secs(90))
        .unwrap_or_else(|_| {
            panic!(
                "no transfer:\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            )
        });
    assert_eq!(total, bytes, "from {peer}");
    let rate = total as f64 / secs;
    assert!(
        rate < want * 1.10,
        "TCP went at {rate:.0} B/s, over the limit {want} B/s"
    );
    d.wait_state("sender", "shut_off", Duration::from_secs(60));
    let left = ns.leftovers();
    assert!(left.is_empty(), "left behind:\n{left}");
    d.ok("POST", "/networks/lan/destroy", Some(&json!({})));
}

/// `vireo -c URI ARGS...`: (exit code, stdout, stderr).
fn virsh(d: &Daemon, args: &[&str]) -> (Option<i32>, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_vireo"))
        .arg("-c")
        .arg(format!("vireo:///system?socket={}", d.socket.display()))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn domiftune_reads_and_changes_limits_live_and_in_the_definition() {
    let _one_at_a_time = serial();
    let Some((dir, ns)) = setup("pf3") else {
        return;
    };
    let mut d = Daemon::start_in(dir.path(), &[], Some(&ns.name));
    start_network(&d);
    let xml = daemon_harness::domain_xml("tuned", "idle", "").replace(
        "<devices>",
        "<devices><interface type='network'><source network='lan'/>\
         <mac address='52:54:00:00:00:41'/><model type='virtio'/>\
         <bandwidth><inbound average='1000' peak='2000' burst='64'/></bandwidth></interface>",
    );
    d.define(&xml);
    d.ok("POST", "/domains/tuned/start", Some(&json!({})));
    let tap = d.ok("GET", "/domains/tuned/interfaces", None)[0]["interface"]
        .as_str()
        .unwrap()
        .to_string();

    let (code, out, err) = virsh(&d, &["domiftune", "tuned", &tap]);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(
        out,
        "inbound.average: 1000\ninbound.peak   : 2000\ninbound.burst  : 64\n\
         inbound.floor  : 0\noutbound.average: 0\noutbound.peak  : 0\noutbound.burst : 0\n\n"
    );
    let classes = ns.exec(&["tc", "class", "show", "dev", &tap]);
    assert!(classes.contains("rate 8192Kbit"), "{classes}");

    // Live: an outbound limit appears (with its IFB), inbound goes.
    let (code, _, err) = virsh(
        &d,
        &[
            "domiftune",
            "tuned",
            "52:54:00:00:00:41",
            "--outbound",
            "500,800",
            "--inbound",
            "0",
            "--live",
        ],
    );
    assert_eq!(code, Some(0), "{err}");
    let ifb = ns
        .exec(&["ip", "-o", "link"])
        .lines()
        .find_map(|l| {
            l.split(": ")
                .nth(1)
                .filter(|n| n.starts_with("vifb"))
                .map(str::to_string)
        })
        .expect("an IFB for the outbound limit");
    let classes = ns.exec(&["tc", "class", "show", "dev", &ifb]);
    assert!(classes.contains("rate 4096Kbit ceil "), "{classes}");
    assert!(!ns
        .exec(&["tc", "qdisc", "show", "dev", &tap])
        .contains("htb"));
    let (_, out, _) = virsh(&d, &["domiftune", "tuned", &tap]);
    assert!(out.starts_with("inbound.average: 0\n"), "{out}");
    assert!(
        out.contains("outbound.average: 500\noutbound.peak  : 800\n"),
        "{out}"
    );
    // The definition kept its own.
    let (_, out, _) = virsh(&d, &["domiftune", "tuned", &tap, "--config"]);
    assert!(out.starts_with("inbound.average: 1000\n"), "{out}");
    assert!(out.contains("outbound.average: 0\n"), "{out}");
    // --config changes only the definition (matched by MAC there).
    let (code, _, err) = virsh(
        &d,
        &[
            "domiftune",
            "tuned",
            "52:54:00:00:00:41",
            "--outbound",
            "300",
            "--config",
        ],
    );
    assert_eq!(code, Some(0), "{err}");
    let def = d.ok("GET", "/domains/tuned/xml?inactive=true", None)["xml"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(def.contains("<outbound average='300'/>"), "{def}");

    // A hot-plugged NIC gets its filter and limits.
    let vifbs = || {
        ns.exec(&["ip", "-o", "link"])
            .lines()
            .filter(|l| l.contains("vifb"))
            .count()
    };
    assert_eq!(vifbs(), 1);
    let nic = "<interface type='network'><source network='lan'/>\
               <mac address='52:54:00:00:00:42'/><model type='virtio'/>\
               <filterref filter='clean-traffic'><parameter name='IP' value='192.0.2.99'/></filterref>\
               <bandwidth><outbound average='100'/></bandwidth></interface>";
    d.ok(
        "POST",
        "/domains/tuned/interfaces",
        Some(&json!({ "xml": nic, "live": true })),
    );
    let rows = d.ok("GET", "/domains/tuned/interfaces", None);
    let plugged = rows
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["mac"] == "52:54:00:00:00:42")
        .and_then(|r| r["interface"].as_str())
        .unwrap_or_else(|| panic!("{rows}"))
        .to_string();
    assert_ne!(plugged, "-", "{rows}");
    let rules = ns.exec(&["nft", "list", "table", "bridge", "vireo_ports"]);
    assert!(
        rules.contains(&format!("iifname != \"{plugged}\"")) && rules.contains("192.0.2.99"),
        "{rules}"
    );
    assert_eq!(vifbs(), 2);
    d.ok(
        "DELETE",
        "/domains/tuned/interfaces/52:54:00:00:00:42?live=true",
        None,
    );
    // This guest answers no eject request: the unplug stays pending and
    // the card, still the guest's, keeps its filter and limits (they go
    // once the guest lets it go, or with the domain).
    let rules = ns.exec(&["nft", "list", "table", "bridge", "vireo_ports"]);
    assert!(
        rules.contains(&format!("iifname != \"{plugged}\"")),
        "{rules}"
    );
    assert_eq!(vifbs(), 2);

    // A definition with a filter Vireo does not have is refused, naming it.
    let bad = xml
        .replace("<name>tuned</name>", "<name>other</name>")
        .replace(
            "<bandwidth>",
            "<filterref filter='no-other-rarp-traffic'/><bandwidth>",
        );
    let refused = d.http("POST", "/domains", Some(&json!({ "xml": bad })));
    assert_eq!(refused.status, 422, "{}", refused.body);
    assert!(
        refused
            .error()
            .contains("/domain/devices/interface[1]/filterref")
            && refused.error().contains("'no-other-rarp-traffic'"),
        "{}",
        refused.error()
    );

    // Bad input: one line each, exit 1.
    for (args, says) in [
        (
            vec!["domiftune", "tuned", &tap, "--inbound", "fast"],
            "inbound rate is malformed",
        ),
        (
            vec!["domiftune", "tuned", &tap, "--outbound", "100,50"],
            "peak 50 is below average 100",
        ),
        (
            vec!["domiftune", "tuned", "nosuch0"],
            "has no interface 'nosuch0'",
        ),
        (vec!["domiftune", "nosuch", &tap], "nosuch"),
        (
            vec![
                "domiftune",
                "tuned",
                &tap,
                "--live",
                "--current",
                "--inbound",
                "5",
            ],
            "--current",
        ),
    ] {
        let (code, _, err) = virsh(&d, &args);
        assert_eq!(code, Some(1), "{args:?}: {err}");
        assert_eq!(err.lines().count(), 1, "{args:?}: {err}");
        assert!(
            err.starts_with("error: ") && err.contains(says),
            "{args:?}: {err}"
        );
    }

    // A daemon that dies and comes back still takes the limits down with
    // the domain it re-adopts.
    d.kill9();
    // Both cards' (the pending unplug's card is still the guest's).
    assert_eq!(vifbs(), 2);
    d.spawn();
    d.ok("POST", "/domains/tuned/destroy", Some(&json!({})));
    d.wait_state("tuned", "shut_off", Duration::from_secs(10));
    let left = ns.leftovers();
    assert!(left.is_empty(), "left behind:\n{left}");
    d.ok("POST", "/networks/lan/destroy", Some(&json!({})));
}
