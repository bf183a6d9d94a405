//! The `virtio` guest's smoltcp stack against real services, natively: a
//! throwaway network namespace with a bridge (192.0.2.1/24), the guest's TAP
//! on it, Debian's dnsmasq for DHCP and DNS, and a TCP echo server run by
//! the test in the namespace. Also: no DHCP server means a timeout line and
//! a powered-off VM, never a hang.

mod common;
mod netlab;

use std::io::Read;
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use common::{guest, ip, ip_ok, is_root, run_with_timeout, RunResult};
use netlab::{field, pattern_hash};

const TIMEOUT: Duration = Duration::from_secs(60);
const BRIDGE_IP: &str = "192.0.2.1";
const ECHO_PORT: u16 = 7000;

/// A namespace with bridge `br0` at 192.0.2.1/24 and one TAP on it; deleted
/// (with everything in it) on drop, after dnsmasq is stopped.
struct Lab {
    ns: String,
    tap: String,
    dir: tempfile::TempDir,
    dnsmasq: Option<Child>,
}

impl Lab {
    fn new(tag: &str) -> Option<Self> {
        if !is_root() || Command::new("ip").arg("-V").output().is_err() {
            testkit::skip("guest network stack tests need root and iproute2");
            return None;
        }
        let ns = format!("gn{tag}{}", std::process::id());
        let tap = format!("gn{tag}{}", std::process::id() % 100_000);
        let _ = ip(&["netns", "del", &ns]);
        ip_ok(&["netns", "add", &ns]);
        let lab = Self {
            ns,
            tap,
            dir: tempfile::tempdir().unwrap(),
            dnsmasq: None,
        };
        let n = lab.ns.as_str();
        ip_ok(&["-n", n, "link", "set", "lo", "up"]);
        ip_ok(&["-n", n, "link", "add", "br0", "type", "bridge"]);
        ip_ok(&["-n", n, "addr", "add", "192.0.2.1/24", "dev", "br0"]);
        ip_ok(&["-n", n, "link", "set", "br0", "up"]);
        ip_ok(&["-n", n, "tuntap", "add", "dev", &lab.tap, "mode", "tap"]);
        ip_ok(&["-n", n, "link", "set", &lab.tap, "master", "br0"]);
        ip_ok(&["-n", n, "link", "set", &lab.tap, "up"]);
        Some(lab)
    }

    fn leases(&self) -> std::path::PathBuf {
        self.dir.path().join("leases")
    }

    /// dnsmasq on br0: leases from .50 to .99, and echo.test -> 192.0.2.1.
    fn start_dnsmasq(&mut self) {
        let leases = self.leases();
        let child = Command::new("ip")
            .args(["netns", "exec", &self.ns, "dnsmasq", "--keep-in-foreground"])
            .args([
                "--conf-file=/dev/null",
                "--no-resolv",
                "--no-hosts",
                "--bind-interfaces",
                "--interface=br0",
                "--except-interface=lo",
                "--user=root",
                "--pid-file",
                "--dhcp-authoritative",
                "--dhcp-range=192.0.2.50,192.0.2.99,255.255.255.0,1h",
                "--host-record=echo.test,192.0.2.1",
                // Answer for .test itself: other names there are NXDOMAIN.
                "--local=/test/",
            ])
            .arg(format!("--dhcp-leasefile={}", leases.display()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run dnsmasq (apt-get install dnsmasq-base)");
        self.dnsmasq = Some(child);
        // It binds within milliseconds; give it a bounded moment, then
        // make sure it did not exit on a bad option.
        std::thread::sleep(Duration::from_millis(300));
        let child = self.dnsmasq.as_mut().unwrap();
        if let Some(status) = child.try_wait().unwrap() {
            let mut err = String::new();
            child
                .stderr
                .take()
                .unwrap()
                .read_to_string(&mut err)
                .unwrap();
            panic!("dnsmasq exited at start ({status}): {err}");
        }
    }

    /// Another TAP on br0, named after the first with `suffix`.
    fn add_tap(&self, suffix: &str) -> String {
        let tap = format!("{}{suffix}", self.tap);
        ip_ok(&["-n", &self.ns, "tuntap", "add", "dev", &tap, "mode", "tap"]);
        ip_ok(&["-n", &self.ns, "link", "set", &tap, "master", "br0"]);
        ip_ok(&["-n", &self.ns, "link", "set", &tap, "up"]);
        tap
    }

    /// `vireo run` of the virtio guest on `tap` in the namespace.
    fn command(&self, tap: &str, mac: &str, cmdline: &str) -> Command {
        let kernel = guest("virtio");
        let net = format!("tap={tap},mac={mac}");
        let mut cmd = Command::new("ip");
        cmd.args([
            "netns",
            "exec",
            &self.ns,
            env!("CARGO_BIN_EXE_vireo"),
            "run",
        ])
        .args(["--kernel", kernel.to_str().unwrap(), "--net", &net])
        .args(["--cmdline", cmdline])
        .stdin(Stdio::null());
        cmd
    }

    fn vireo(&self, cmdline: &str) -> RunResult {
        let mut cmd = self.command(&self.tap, "52:54:00:00:12:01", cmdline);
        let out = run_with_timeout(&mut cmd, TIMEOUT);
        RunResult {
            code: out.status.code(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// A TCP echo server on the bridge's address in the namespace.
    fn echo_server(&self, connections: usize) -> mpsc::Receiver<(SocketAddr, u64, String)> {
        let bind = SocketAddr::from((BRIDGE_IP.parse::<std::net::Ipv4Addr>().unwrap(), ECHO_PORT));
        netlab::echo_server(&self.ns, bind, connections)
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        if let Some(mut child) = self.dnsmasq.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = ip(&["netns", "del", &self.ns]);
    }
}

#[test]
fn guest_gets_a_lease_resolves_a_name_and_its_bytes_come_back() {
    let Some(mut lab) = Lab::new("a") else {
        return;
    };
    lab.start_dnsmasq();
    let served = lab.echo_server(1);
    let bytes = 100_000u64;
    let r = lab.vireo(&format!(
        "net.dhcp net.resolve=echo.test net.tcp=echo.test:{ECHO_PORT},bytes={bytes}"
    ));
    assert_eq!(r.code, Some(0), "{}", r.describe());
    assert!(r.stdout.contains("virtio: done"), "{}", r.describe());
    assert!(!r.stdout.contains("FAIL"), "{}", r.describe());
    let ip = field(&r.stdout, "virtio: dhcp ", "ip=").expect("dhcp line");
    assert!(
        r.stdout.contains(&format!(
            "virtio: dhcp ip={ip} router={BRIDGE_IP} dns={BRIDGE_IP}"
        )),
        "{}",
        r.describe()
    );
    let addr = ip.strip_suffix("/24").expect("a /24 lease");
    let last: u8 = addr.rsplit('.').next().unwrap().parse().unwrap();
    assert!((50..=99).contains(&last), "{addr} outside the dhcp-range");
    assert!(
        r.stdout.contains("virtio: resolve echo.test=192.0.2.1"),
        "{}",
        r.describe()
    );
    let hash = pattern_hash(bytes);
    let line = format!(
        "virtio: tcp 192.0.2.1:{ECHO_PORT} sent={bytes} received={bytes} sent-hash={hash} received-hash={hash}"
    );
    assert!(r.stdout.contains(&line), "want {line}\n{}", r.describe());

    // The server side: the guest's leased address, and every byte.
    let (peer, got, got_hash) = served
        .recv_timeout(Duration::from_secs(10))
        .expect("the server saw the connection");
    assert_eq!(peer.ip().to_string(), addr);
    assert_eq!(got, bytes);
    assert_eq!(got_hash, hash);

    // dnsmasq's lease file: "<expiry> <mac> <ip> <hostname> <client id>".
    let leases = std::fs::read_to_string(lab.leases()).expect("lease file");
    assert!(
        leases
            .lines()
            .any(|l| l.contains(" 52:54:00:00:12:01 ") && l.contains(&format!(" {addr} "))),
        "lease file:\n{leases}"
    );
}

/// Runs the guest at `ip` (with `extra` command-line words) through a TCP
/// exchange of `bytes` each way with the host's echo server; checks that
/// every byte came back and that the server got them all. Returns the run
/// and the TCP line's frame counts (sent, received).
fn echo_exchange(lab: &Lab, ip: &str, extra: &str, bytes: u64) -> (RunResult, u64, u64) {
    let served = lab.echo_server(1);
    let r = lab.vireo(&format!(
        "net.ip={ip}/24 net.timeout-ms=50000 {extra} net.tcp=192.0.2.1:{ECHO_PORT},bytes={bytes}"
    ));
    assert_eq!(r.code, Some(0), "{}", r.describe());
    let hash = pattern_hash(bytes);
    let line = format!(
        "virtio: tcp 192.0.2.1:{ECHO_PORT} sent={bytes} received={bytes} sent-hash={hash} received-hash={hash}"
    );
    assert!(r.stdout.contains(&line), "want {line}\n{}", r.describe());
    let (_, got, got_hash) = served
        .recv_timeout(Duration::from_secs(10))
        .expect("the server saw the connection");
    assert_eq!((got, got_hash), (bytes, hash));
    let frames = |key: &str| -> u64 {
        field(&r.stdout, "virtio: tcp ", key)
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("{key} on the tcp line\n{}", r.describe()))
    };
    let (out, into) = (frames("frames-out="), frames("frames-in="));
    (r, out, into)
}

#[test]
fn an_exchange_outlasts_the_ring_indexes_wrapping() {
    // 100 MB each way is more than 65536 full segments: both queues'
    // available and used indexes wrap while the guest keeps its windows in
    // flight and rings doorbells only when the device asks. (Without
    // offloads: a 64 KiB segment a frame would take 4 GB to wrap them.)
    let Some(lab) = Lab::new("w") else {
        return;
    };
    let (r, sent, _) = echo_exchange(&lab, "192.0.2.21", "net.offloads=off", 100_000_000);
    assert!(r.stdout.contains("offloads=none"), "{}", r.describe());
    assert!(sent > 65_536, "{sent} frames sent: the rings did not wrap");
}

/// With the TAP's offloads, the guest sends and receives TCP 64 KiB to a
/// frame (GSO through the TAP, which cuts the segments where the echo
/// server's path needs it) and every byte still comes back.
#[test]
fn long_segments_go_whole_through_the_tap_and_come_back() {
    let Some(lab) = Lab::new("t") else {
        return;
    };
    let (r, sent, received) = echo_exchange(&lab, "192.0.2.22", "", 8 << 20);
    assert!(r.stdout.contains("offloads=csum,tso4"), "{}", r.describe());
    // 1460-byte segments would take 5746 data frames each way (and the
    // guest's ACKs on top of its own); long ones 128, and the host sends
    // what its TCP batches (seen: 100 to 1500 frames, ACKs included).
    for frames in [sent, received] {
        assert!(
            frames < 4000,
            "{frames} frames: segments were not long\n{}",
            r.describe()
        );
    }
}

#[test]
fn without_a_dhcp_server_the_guest_says_so_and_powers_off() {
    let Some(lab) = Lab::new("n") else {
        return;
    };
    let start = std::time::Instant::now();
    let r = lab.vireo("net.dhcp net.timeout-ms=2000 net.tcp=192.0.2.1:7000");
    assert_eq!(
        r.code,
        Some(0),
        "vireo exits once the guest powers off\n{}",
        r.describe()
    );
    assert!(
        r.stdout
            .contains("virtio: dhcp FAIL no lease within 2000 ms"),
        "{}",
        r.describe()
    );
    // No action after a failed one.
    assert!(!r.stdout.contains("virtio: tcp"), "{}", r.describe());
    assert!(r.stdout.contains("virtio: done"), "{}", r.describe());
    assert!(
        start.elapsed() < Duration::from_secs(30),
        "{:?}",
        start.elapsed()
    );
}

#[test]
fn a_spoofed_source_is_used_as_asked() {
    // Issue 12's anti-spoofing test needs a guest that really sends from
    // another MAC and IP; without a filter the server sees that address.
    let Some(lab) = Lab::new("s") else {
        return;
    };
    let served = lab.echo_server(2);
    let r = lab.vireo(&format!(
        "net.ip=192.0.2.20/24 net.tcp=192.0.2.1:{ECHO_PORT},bytes=3000 \
         net.spoof-mac=02:00:00:00:00:77 net.spoof-ip=192.0.2.77"
    ));
    assert_eq!(r.code, Some(0), "{}", r.describe());
    assert!(!r.stdout.contains("FAIL"), "{}", r.describe());
    assert!(
        r.stdout
            .contains("virtio: static ip=192.0.2.20/24 router=- dns=-"),
        "{}",
        r.describe()
    );
    assert!(
        r.stdout
            .contains("virtio: spoof mac=02:00:00:00:00:77 ip=192.0.2.77"),
        "{}",
        r.describe()
    );
    let mut peers = Vec::new();
    for _ in 0..2 {
        let (peer, got, _) = served
            .recv_timeout(Duration::from_secs(10))
            .expect("the server saw both connections");
        assert_eq!(got, 3000);
        peers.push(peer.ip().to_string());
    }
    assert_eq!(peers, ["192.0.2.20", "192.0.2.77"]);
    // The bridge learnt the spoofed MAC on the guest's port.
    let fdb = ip(&["-n", &lab.ns, "neigh", "show", "192.0.2.77"]);
    let fdb = String::from_utf8_lossy(&fdb.stdout);
    assert!(fdb.contains("02:00:00:00:00:77"), "neighbour table: {fdb}");
}

#[test]
fn two_guests_on_one_bridge_talk_tcp() {
    let Some(lab) = Lab::new("t") else {
        return;
    };
    let other = lab.add_tap("b");
    let mut server = lab
        .command(
            &lab.tap,
            "52:54:00:00:12:01",
            "net.ip=192.0.2.30/24 net.serve=7001 net.timeout-ms=20000",
        )
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Bounded: the guest prints `virtio: done` and powers off within its
    // 2 x 20 s, and the reader ends with vireo's exit.
    let mut stdout = server.stdout.take().unwrap();
    let mut seen = Vec::new();
    let mut buf = [0u8; 256];
    while !String::from_utf8_lossy(&seen).contains("virtio: serve listening port=7001") {
        let n = stdout.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        seen.extend_from_slice(&buf[..n]);
    }
    let mut client = lab.command(
        &other,
        "52:54:00:00:12:02",
        "net.ip=192.0.2.31/24 net.tcp=192.0.2.30:7001,bytes=50000",
    );
    let out = run_with_timeout(&mut client, TIMEOUT);
    let client_out = String::from_utf8_lossy(&out.stdout).into_owned();
    stdout.read_to_end(&mut seen).unwrap();
    let status = server.wait().unwrap();
    let server_out = String::from_utf8_lossy(&seen).into_owned();
    let both = format!("client:\n{client_out}\nserver:\n{server_out}");
    assert_eq!(status.code(), Some(0), "{both}");
    assert_eq!(out.status.code(), Some(0), "{both}");
    let hash = pattern_hash(50_000);
    assert!(
        client_out.contains(&format!(
            "virtio: tcp 192.0.2.30:7001 sent=50000 received=50000 sent-hash={hash} received-hash={hash}"
        )),
        "{both}"
    );
    assert!(
        server_out.contains("virtio: serve port=7001 from=192.0.2.31:")
            && server_out.contains(&format!("received=50000 hash={hash}")),
        "{both}"
    );
    assert!(!both.contains("FAIL"), "{both}");
}

#[test]
fn an_unknown_name_gives_a_failure_line_and_no_connection() {
    let Some(mut lab) = Lab::new("r") else {
        return;
    };
    lab.start_dnsmasq();
    let r = lab.vireo("net.dhcp net.tcp=missing.test:7000 net.timeout-ms=5000");
    assert_eq!(r.code, Some(0), "{}", r.describe());
    assert!(
        r.stdout.contains("virtio: dhcp ip=192.0.2."),
        "{}",
        r.describe()
    );
    assert!(
        r.stdout
            .contains("virtio: resolve FAIL missing.test: no A record"),
        "{}",
        r.describe()
    );
    assert!(!r.stdout.contains("virtio: tcp"), "{}", r.describe());
    assert!(r.stdout.contains("virtio: done"), "{}", r.describe());
}
