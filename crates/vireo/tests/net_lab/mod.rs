//! Network namespaces and the `virtio` guest for the daemon's host
//! network tests (direct NICs, overlays, VLANs): each namespace is made
//! by the test with iproute2 and removed on drop, with every process the
//! test's directory names.

#![allow(dead_code)]

use std::fs::File;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crate::daemon_harness::{processes_mentioning, sigkill};

/// A network namespace, removed on drop.
pub struct Netns {
    pub name: String,
    dir: PathBuf,
}

impl Netns {
    /// A new namespace `vireo-TAG-PID` with `lo` up; Err when iproute2 or
    /// the privilege is missing.
    pub fn new(tag: &str, dir: &Path) -> Result<Netns, String> {
        // The tag is unique per test: tests of one binary run in parallel.
        let name = format!("vireo-{tag}-{}", std::process::id());
        let out = Command::new("ip")
            .args(["netns", "add", &name])
            .output()
            .map_err(|e| format!("ip: {e}"))?;
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).trim().to_string());
        }
        let ns = Netns {
            name,
            dir: dir.to_path_buf(),
        };
        ns.ip_ok(&["link", "set", "lo", "up"]);
        Ok(ns)
    }

    /// `ip -n NS ARGS`; (success, stdout + stderr).
    pub fn ip(&self, args: &[&str]) -> (bool, String) {
        let out = Command::new("ip")
            .args(["-n", &self.name])
            .args(args)
            .output()
            .expect("run ip");
        let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
        text.push_str(&String::from_utf8_lossy(&out.stderr));
        (out.status.success(), text)
    }

    /// `ip -n NS ARGS`, which must succeed; its output.
    pub fn ip_ok(&self, args: &[&str]) -> String {
        let (ok, text) = self.ip(args);
        assert!(ok, "ip -n {} {args:?}: {text}", self.name);
        text
    }

    pub fn link_exists(&self, name: &str) -> bool {
        self.ip(&["-o", "link", "show", "dev", name]).0
    }

    /// The names of this namespace's links of `kind` (`macvtap`, `vxlan`).
    pub fn links_of_kind(&self, kind: &str) -> Vec<String> {
        self.ip_ok(&["-o", "link", "show", "type", kind])
            .lines()
            .filter_map(|l| l.split(": ").nth(1))
            .map(|n| n.split('@').next().unwrap_or(n).to_string())
            .collect()
    }

    /// A veth pair, `here` in this namespace and `there` in `other`, both
    /// up, `there` with `address` (CIDR) when given.
    pub fn veth_to(&self, here: &str, other: &Netns, there: &str, address: Option<&str>) {
        self.ip_ok(&[
            "link",
            "add",
            here,
            "type",
            "veth",
            "peer",
            "name",
            there,
            "netns",
            &other.name,
        ]);
        self.ip_ok(&["link", "set", here, "up"]);
        other.ip_ok(&["link", "set", there, "up"]);
        if let Some(a) = address {
            other.ip_ok(&["addr", "add", a, "dev", there]);
        }
    }

    /// Runs `f` on a thread inside this namespace.
    pub fn run<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        let path = format!("/run/netns/{}", self.name);
        std::thread::spawn(move || {
            let ns = File::open(&path).expect("open the namespace");
            // SAFETY: setns on an open namespace descriptor changes only
            // this thread's network namespace.
            let rc = unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(rc, 0, "setns: {}", std::io::Error::last_os_error());
            f()
        })
        .join()
        .expect("the namespace thread")
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

/// Whether the tests can make namespaces: root and iproute2.
pub fn can_make_namespaces() -> Option<String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Some("these tests need root".into());
    }
    if Command::new("ip").arg("-V").output().is_err() {
        return Some("iproute2 is not installed".into());
    }
    None
}

/// The built `virtio` guest (guests/virtio, smoltcp).
pub fn virtio_guest() -> PathBuf {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join("guests-net");
        let status = Command::new(root.join("guests/build.sh"))
            .arg(&out)
            .arg("virtio")
            .status()
            .expect("run guests/build.sh");
        assert!(status.success(), "guests/build.sh virtio failed");
        out.join("virtio.elf")
    })
    .clone()
}

/// A domain running the `virtio` guest with `cmdline`, and `devices`.
pub fn virtio_domain(name: &str, cmdline: &str, devices: &str) -> String {
    format!(
        "<domain type='kvm'><name>{name}</name><memory unit='MiB'>64</memory><vcpu>1</vcpu>\
         <os><type arch='x86_64'>hvm</type><kernel>{}</kernel><cmdline>{cmdline}</cmdline></os>\
         <devices>{devices}<serial type='pty'/></devices></domain>",
        virtio_guest().display()
    )
}

/// The hash the `virtio` guest prints of a TCP stream (the guest network
/// tests' helpers compute it).
#[path = "../netlab/mod.rs"]
mod netlab;
pub use netlab::stream_hash;

/// The guest's pattern: byte i is i mod 251.
pub fn pattern(len: usize) -> Vec<u8> {
    (0..251u8).cycle().take(len).collect()
}

/// Connects to `addr` (retrying while the guest is not listening yet, up
/// to `limit`), sends `data`, closes the sending side and reads until
/// the peer closes; what came back.
pub fn echo_exchange(addr: SocketAddr, data: &[u8], limit: Duration) -> Result<Vec<u8>, String> {
    let deadline = Instant::now() + limit;
    let mut conn = loop {
        match TcpStream::connect_timeout(&addr, Duration::from_secs(2)) {
            Ok(c) => break c,
            Err(e) if Instant::now() >= deadline => return Err(format!("connect {addr}: {e}")),
            Err(_) => std::thread::sleep(Duration::from_millis(200)),
        }
    };
    conn.set_read_timeout(Some(Duration::from_secs(20)))
        .map_err(|e| e.to_string())?;
    conn.set_write_timeout(Some(Duration::from_secs(20)))
        .map_err(|e| e.to_string())?;
    // The guest echoes as it reads: read beside the writes, or both
    // sides' buffers fill.
    let mut reader = conn.try_clone().map_err(|e| e.to_string())?;
    let got = std::thread::spawn(move || {
        let mut back = Vec::new();
        reader.read_to_end(&mut back).map(|_| back)
    });
    conn.write_all(data).map_err(|e| format!("send: {e}"))?;
    conn.shutdown(std::net::Shutdown::Write)
        .map_err(|e| e.to_string())?;
    got.join()
        .map_err(|_| "the reader panicked".to_string())?
        .map_err(|e| format!("receive: {e}"))
}

/// Reads `stream` until `done` is seen in what came, or `limit` passes;
/// all of it as text.
pub fn read_until(stream: &mut impl Read, done: &str, limit: Duration) -> String {
    let deadline = Instant::now() + limit;
    let mut text = Vec::new();
    let mut buf = [0u8; 4096];
    while Instant::now() < deadline {
        match stream.read(&mut buf) {
            Ok(0) => {
                // Said in the text a failed check prints.
                text.extend_from_slice(b"\n[read_until: end of stream]");
                break;
            }
            Ok(n) => {
                text.extend_from_slice(&buf[..n]);
                if String::from_utf8_lossy(&text).contains(done) {
                    break;
                }
            }
            // A read a signal interrupted is tried again, like one that
            // timed out: only the end of the stream or a real error ends
            // the wait early.
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock
                        | std::io::ErrorKind::TimedOut
                        | std::io::ErrorKind::Interrupted
                ) => {}
            Err(e) => {
                text.extend_from_slice(format!("\n[read_until: {e}]").as_bytes());
                break;
            }
        }
    }
    String::from_utf8_lossy(&text).into_owned()
}
