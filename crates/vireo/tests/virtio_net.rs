//! virtio-net and virtio-console end to end: the `virtio` test guest
//! (virtio-drivers at CPL 3) exchanges ARP and ICMP with the host's kernel
//! through a real TAP in a throwaway network namespace, and writes to
//! virtio-console ports backed by a file and a unix socket.

mod common;

use std::io::Read;
use std::os::unix::net::UnixListener;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{guest, ip, run_with_timeout, vireo, RunResult, TapNamespace};

const TIMEOUT: Duration = Duration::from_secs(60);

fn finish(cmd: &mut Command) -> RunResult {
    let out = run_with_timeout(cmd, TIMEOUT);
    RunResult {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn assert_clean(r: &RunResult) {
    assert_eq!(r.code, Some(0), "{}", r.describe());
    assert!(r.stdout.contains("virtio: done"), "{}", r.describe());
    assert!(!r.stdout.contains("FAIL"), "{}", r.describe());
    assert!(!r.stdout.contains("panic"), "{}", r.describe());
}

/// The MAC the guest reports for its card.
fn device_mac(stdout: &str) -> String {
    stdout
        .lines()
        .find_map(|l| l.split("device-mac=").nth(1))
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_default()
        .to_string()
}

#[test]
fn guest_and_host_exchange_arp_and_icmp_through_a_tap() {
    let Some(net) = TapNamespace::new("a", false) else {
        return;
    };
    let kernel = guest("virtio");
    let tap = format!("tap={},mac=52:54:00:12:34:56", net.tap);
    let mut child = net
        .vireo(&[
            "--kernel",
            kernel.to_str().unwrap(),
            "--net",
            &tap,
            "--cmdline",
            "net pings=5 serve-ms=20000 serve-icmp=3",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Once the guest serves, the host pings it: the kernel's ICMP socket
    // in the namespace sends echo requests through the TAP.
    let mut stdout = child.stdout.take().unwrap();
    let mut seen = Vec::new();
    let mut buf = [0u8; 256];
    while !String::from_utf8_lossy(&seen).contains("virtio-net: serving") {
        let n = stdout.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        seen.extend_from_slice(&buf[..n]);
    }
    let pinged = host_pings(&net.ns, "169.254.10.15", 3);
    stdout.read_to_end(&mut seen).unwrap();
    let out = child.wait_with_output().unwrap();
    let r = RunResult {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&seen).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    };
    assert_clean(&r);
    // The TAP lives in the namespace; read its MAC there.
    let link = ip(&["-n", &net.ns, "-o", "link", "show", &net.tap]);
    let link = String::from_utf8_lossy(&link.stdout);
    let mac = link
        .split("link/ether ")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .unwrap_or_default();
    assert!(
        r.stdout
            .contains(&format!("virtio-net: ok arp {mac} icmp 5/5")),
        "host TAP MAC {mac}\n{}",
        r.describe()
    );
    assert_eq!(
        device_mac(&r.stdout),
        "52:54:00:12:34:56",
        "{}",
        r.describe()
    );
    if pinged {
        assert!(
            r.stdout.contains("served arp=") && r.stdout.contains("icmp=3"),
            "{}",
            r.describe()
        );
    }
}

/// Ping `addr` `count` times from namespace `ns`; false (with a SKIP line)
/// when no ping binary is installed.
fn host_pings(ns: &str, addr: &str, count: u32) -> bool {
    let out = Command::new("ip")
        .args([
            "netns",
            "exec",
            ns,
            "ping",
            "-c",
            &count.to_string(),
            "-W",
            "2",
            addr,
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stderr);
    if text.contains("exec of \"ping\" failed") {
        eprintln!("SKIP host-to-guest ping: no ping binary (apt-get install iputils-ping)");
        return false;
    }
    assert!(
        out.status.success(),
        "ping from the host: {}{}",
        String::from_utf8_lossy(&out.stdout),
        text
    );
    true
}

#[test]
fn multiqueue_card_on_a_multiqueue_tap() {
    let Some(net) = TapNamespace::new("m", true) else {
        return;
    };
    let kernel = guest("virtio");
    let tap = format!("tap={},queues=4", net.tap);
    let r = finish(&mut net.vireo(&[
        "--kernel",
        kernel.to_str().unwrap(),
        "--net",
        &tap,
        "--cmdline",
        "net pings=2",
    ]));
    assert_clean(&r);
    assert!(r.stdout.contains("icmp 2/2"), "{}", r.describe());
}

#[test]
fn a_mac_left_unset_differs_between_vms_started_alike() {
    // Issue 9 item 7: it was derived from the kernel's path, so two VMs
    // with the same kernel and `--net ""` collided on one bridge.
    let Some(net) = TapNamespace::new("s", false) else {
        return;
    };
    let kernel = guest("virtio");
    let run = || {
        let r = finish(&mut net.vireo(&[
            "--kernel",
            kernel.to_str().unwrap(),
            "--net",
            "",
            "--cmdline",
            "net pings=0 timeout-ms=10",
        ]));
        assert_eq!(r.code, Some(0), "{}", r.describe());
        device_mac(&r.stdout)
    };
    let first = run();
    assert_eq!(first.len(), 17, "{first}");
    assert!(
        first.starts_with("52:54:00:"),
        "QEMU/libvirt prefix: {first}"
    );
    let second = run();
    assert!(second.starts_with("52:54:00:"), "{second}");
    assert_ne!(first, second, "two VMs got the same MAC");
}

#[test]
fn vireo_creates_a_tap_when_none_is_named_and_removes_it() {
    let Some(net) = TapNamespace::new("c", false) else {
        return;
    };
    let idle = guest("idle");
    let mut child = net
        .vireo(&["--kernel", idle.to_str().unwrap(), "--net", "queues=1"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let mut seen = Vec::new();
    let mut byte = [0u8; 1];
    while !String::from_utf8_lossy(&seen).contains("idle: waiting") {
        if stdout.read(&mut byte).unwrap() == 0 {
            break;
        }
        seen.push(byte[0]);
    }
    let links = || String::from_utf8_lossy(&ip(&["-n", &net.ns, "-o", "link"]).stdout).into_owned();
    let during = links();
    let _ = Command::new("kill").arg(child.id().to_string()).status();
    let _ = child.wait();
    assert!(
        during.contains(": vireo0:"),
        "links while running:\n{during}"
    );
    assert!(
        !links().contains("vireo0"),
        "the TAP outlived the VM:\n{}",
        links()
    );
}

#[test]
fn bad_net_options_are_usage_errors() {
    let kernel = guest("hello");
    for (net, msg) in [
        ("mac=ff:ff:ff:ff:ff:ff", "unicast"),
        ("tap=x/y", "interface name"),
        ("queues=0", "1 to 16"),
        ("speed=10", "unknown option 'speed'"),
    ] {
        let r = finish(vireo().args(["run", "--kernel", kernel.to_str().unwrap(), "--net", net]));
        assert_eq!(r.code, Some(2), "{net}: {}", r.describe());
        assert!(r.stderr.contains(msg), "{net}: {}", r.describe());
    }
}

#[test]
fn console_ports_reach_a_file_and_a_unix_socket() {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("virtio-console");
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("console.log");
    let _ = std::fs::remove_file(&file);
    let sock = dir.join("console.sock");
    let _ = std::fs::remove_file(&sock);
    let listener = UnixListener::bind(&sock).unwrap();
    let reader = std::thread::spawn(move || {
        let (mut stream, _) = listener.accept().unwrap();
        let mut text = String::new();
        stream.read_to_string(&mut text).unwrap();
        text
    });
    let kernel = guest("virtio");
    let r = finish(vireo().args([
        "run",
        "--kernel",
        kernel.to_str().unwrap(),
        "--console",
        &format!("file:{}", file.display()),
        "--console",
        &format!("unix-connect:{}", sock.display()),
        "--cmdline",
        "console",
    ]));
    assert_clean(&r);
    assert_eq!(
        r.stdout.matches("virtio-console: ok").count(),
        2,
        "{}",
        r.describe()
    );
    let line = "virtio-console: hello from the guest\n";
    assert_eq!(std::fs::read_to_string(&file).unwrap(), line);
    assert_eq!(reader.join().unwrap(), line);
}

#[test]
fn console_errors_are_usage_errors() {
    let kernel = guest("hello");
    for (console, msg) in [
        ("unix:/nonexistent/sock", "/nonexistent/sock"),
        ("unix-connect:/nonexistent/sock", "/nonexistent/sock"),
        (
            "pty",
            "expected stdout, file:PATH, unix:PATH or unix-connect:PATH",
        ),
    ] {
        let r = finish(vireo().args([
            "run",
            "--kernel",
            kernel.to_str().unwrap(),
            "--console",
            console,
        ]));
        assert_eq!(r.code, Some(2), "{console}: {}", r.describe());
        assert!(r.stderr.contains(msg), "{console}: {}", r.describe());
    }
}
