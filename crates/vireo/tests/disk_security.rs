//! What a guest (or a tenant's image) cannot do to the host through a
//! disk, end to end with the real `vireo` and the `virtio` test guest:
//! read a host file by planting a qcow2 header in its raw disk, write such
//! a header when the host probed the format, hang Vireo with a FIFO, or
//! exhaust it with a backing loop. docs/security.md states the rules.

mod common;

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{guest, run_vireo, RunResult};

const TIMEOUT: Duration = Duration::from_secs(60);

/// A fresh directory for one test, under the target's temporary
/// directory; removed when the test ends, so runs leave nothing behind.
struct Scratch(PathBuf);

impl Scratch {
    fn join(&self, name: impl AsRef<Path>) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn scratch(name: &str) -> Scratch {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("disk-security")
        .join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    Scratch(dir)
}

/// What a hostile guest leaves in its raw disk: an 8 MiB image whose
/// sector 0 is a qcow2 header (made by qemu-img) naming `host_file` as its
/// raw backing file.
fn plant_qcow2_header(image: &Path, host_file: &Path) {
    let hdr = image.with_extension("hdr.qcow2");
    qemu_img(&[
        "create",
        "-q",
        "-f",
        "qcow2",
        "-b",
        s(host_file),
        "-F",
        "raw",
        s(&hdr),
        "1M",
    ]);
    let mut bytes = vec![0u8; 8 << 20];
    let header = std::fs::read(&hdr).unwrap();
    bytes[..header.len()].copy_from_slice(&header);
    std::fs::write(image, &bytes).unwrap();
}

fn qemu_img(args: &[&str]) {
    let out = Command::new("qemu-img").args(args).output().unwrap();
    assert!(
        out.status.success(),
        "qemu-img {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Run the virtio guest on one disk.
fn run_blk(disk: &str, cmdline: &str) -> RunResult {
    let kernel = guest("virtio");
    run_vireo(
        &[
            "run",
            "--kernel",
            s(&kernel),
            "--cmdline",
            cmdline,
            "--disk",
            disk,
        ],
        TIMEOUT,
    )
}

fn assert_ran(r: &RunResult) {
    assert_eq!(r.code, Some(0), "{}", r.describe());
    assert!(r.stdout.contains("virtio: done"), "{}", r.describe());
    assert!(!r.stdout.contains("FAIL"), "{}", r.describe());
}

/// The `head=` hex the guest printed for sector 0.
fn sector0_head(r: &RunResult) -> String {
    let line = r
        .stdout
        .lines()
        .find(|l| l.starts_with("virtio-blk: sector 0 head="))
        .unwrap_or_else(|| panic!("no sector 0 line\n{}", r.describe()));
    line["virtio-blk: sector 0 head=".len()..]
        .split(' ')
        .next()
        .unwrap()
        .to_string()
}

/// Issue 9 item 4's recipe: a guest plants a qcow2 header naming a host
/// file as its backing file in sector 0 of its raw disk. Given format=raw
/// (what the daemon always passes), the next start shows the guest its own
/// bytes, not the host file.
#[test]
fn a_planted_qcow2_header_does_not_leak_a_host_file_with_format_raw() {
    let dir = scratch("planted");
    let secret = dir.join("secret");
    std::fs::write(&secret, b"TOP-SECRET-HOST-DATA".repeat(100)).unwrap();
    let guest_img = dir.join("guest-raw.img");
    plant_qcow2_header(&guest_img, &secret);

    let disk = format!("path={},format=raw,readonly=on", s(&guest_img));
    let r = run_blk(&disk, "blk");
    assert_ran(&r);
    // The whole 8 MiB file, byte for byte: capacity in sectors, and sector 0
    // is the planted header, not the secret's first bytes.
    assert!(
        r.stdout.contains("capacity=16384 ro=yes"),
        "{}",
        r.describe()
    );
    assert!(
        sector0_head(&r).starts_with("514649fb00000003"),
        "{}",
        r.describe()
    );
    let secret_hex: String = b"TOP-SECRET-HOST-"
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert!(!r.stdout.contains(&secret_hex), "{}", r.describe());
    // Format given: no probing warning.
    assert!(!r.stderr.contains("probed"), "{}", r.describe());

    // Probing (no format=) would open it as qcow2, as QEMU would; it says
    // so, and what to pass instead.
    let r = run_blk(&format!("path={},readonly=on", s(&guest_img)), "blk");
    assert_ran(&r);
    assert!(
        r.stderr.contains("format not given, probed as qcow2")
            && r.stderr.contains("pass format=qcow2"),
        "{}",
        r.describe()
    );
}

/// The other half: when the format of a raw disk was probed, the guest's
/// write of a qcow2 header into sector 0 fails (QEMU's rule), through the
/// worker threads and through io_uring (cache=none); given format=raw it
/// is the guest's disk to write as it likes.
#[test]
fn a_guest_cannot_write_an_image_header_into_a_probed_raw_disk() {
    let dir = scratch("header-write");
    for cache in ["writeback", "none"] {
        let img = dir.join(format!("probed-{cache}.img"));
        std::fs::write(&img, vec![0u8; 8 << 20]).unwrap();
        let r = run_blk(&format!("path={},cache={cache}", s(&img)), "blk blk-header");
        assert_ran(&r);
        assert!(
            r.stdout
                .contains("virtio-blk: header write refused sector0=other"),
            "cache={cache}\n{}",
            r.describe()
        );
        assert!(
            r.stderr.contains("probed as raw") && r.stderr.contains("pass format=raw"),
            "{}",
            r.describe()
        );
        // The guest's other writes landed; sector 0 did not change.
        let bytes = std::fs::read(&img).unwrap();
        assert!(bytes[..512].iter().all(|&b| b == 0), "cache={cache}");
        assert_eq!(&bytes[512..520], &1u64.to_le_bytes(), "cache={cache}");
        // So the next start still sees a raw disk, with no warning of a
        // header: the guest's disk was not turned into a qcow2.
        let again = run_blk(&format!("path={}", s(&img)), "blk blk-count=0");
        assert_ran(&again);
        assert!(
            again.stderr.contains("probed as raw"),
            "{}",
            again.describe()
        );
    }
    let img = dir.join("explicit.img");
    std::fs::write(&img, vec![0u8; 8 << 20]).unwrap();
    let r = run_blk(&format!("path={},format=raw", s(&img)), "blk blk-header");
    assert_ran(&r);
    assert!(
        r.stdout
            .contains("virtio-blk: header write accepted sector0=header"),
        "{}",
        r.describe()
    );
    assert!(!r.stderr.contains("probed"), "{}", r.describe());
    assert_eq!(&std::fs::read(&img).unwrap()[..4], b"QFI\xfb");
}

/// A disk, or a disk's backing file, that is a FIFO ends the run at once
/// with one line naming it, instead of blocking in open forever.
#[test]
fn a_fifo_disk_or_backing_file_fails_at_once() {
    let dir = scratch("fifo");
    let fifo = dir.join("fifo");
    assert!(Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap()
        .success());
    let evil = dir.join("evil.qcow2");
    qemu_img(&[
        "create",
        "-q",
        "-f",
        "qcow2",
        "-u",
        "-F",
        "raw",
        "-b",
        s(&fifo),
        s(&evil),
        "64M",
    ]);
    let hello = guest("hello");
    for (disk, needle) in [
        (
            format!("path={}", s(&fifo)),
            format!("{}: is a FIFO", s(&fifo)),
        ),
        (
            format!("path={},format=raw", s(&fifo)),
            format!("{}: is a FIFO", s(&fifo)),
        ),
        (
            format!("path={},readonly=on", s(&evil)),
            format!("{}: is a FIFO", s(&fifo)),
        ),
    ] {
        let start = Instant::now();
        let r = run_vireo(
            &["run", "--kernel", s(&hello), "--disk", &disk],
            Duration::from_secs(20),
        );
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "{:?}",
            start.elapsed()
        );
        assert_eq!(r.code, Some(2), "{}", r.describe());
        assert!(r.stderr.contains(&needle), "{needle}\n{}", r.describe());
        assert_eq!(r.stderr.trim_end().lines().count(), 1, "{}", r.describe());
    }
}

/// Backing loops are named as loops (not "in use"), and a chain too deep
/// names the image given, within seconds.
#[test]
fn backing_loops_and_deep_chains_are_named() {
    let dir = scratch("chains");
    let me = dir.join("self.qcow2");
    qemu_img(&[
        "create",
        "-q",
        "-f",
        "qcow2",
        "-u",
        "-F",
        "qcow2",
        "-b",
        "self.qcow2",
        s(&me),
        "64M",
    ]);
    let a = dir.join("a.qcow2");
    let b = dir.join("b.qcow2");
    qemu_img(&[
        "create",
        "-q",
        "-f",
        "qcow2",
        "-u",
        "-F",
        "qcow2",
        "-b",
        "b.qcow2",
        s(&a),
        "64M",
    ]);
    qemu_img(&[
        "create",
        "-q",
        "-f",
        "qcow2",
        "-u",
        "-F",
        "qcow2",
        "-b",
        "a.qcow2",
        s(&b),
        "64M",
    ]);
    std::fs::write(dir.join("l0.img"), vec![0u8; 4096]).unwrap();
    for i in 1..=100 {
        let (below, fmt) = if i == 1 {
            ("l0.img".to_string(), "raw")
        } else {
            (format!("l{}.qcow2", i - 1), "qcow2")
        };
        let top = dir.join(format!("l{i}.qcow2"));
        qemu_img(&[
            "create",
            "-q",
            "-f",
            "qcow2",
            "-u",
            "-F",
            fmt,
            "-b",
            &below,
            s(&top),
            "64M",
        ]);
    }
    let deep = dir.join("l100.qcow2");
    let hello = guest("hello");
    let cases = [
        (
            format!("path={},format=qcow2", s(&me)),
            format!(
                "backing chain loops: {} names {}, which is already in the chain",
                s(&me),
                s(&me)
            ),
        ),
        (
            format!("path={},format=qcow2", s(&a)),
            format!(
                "backing chain loops: {} names {}, which is already in the chain",
                s(&b),
                s(&a)
            ),
        ),
        (
            format!("path={},format=qcow2,readonly=on", s(&deep)),
            format!("backing chain of {} is deeper than 32 images", s(&deep)),
        ),
    ];
    for (disk, needle) in cases {
        let start = Instant::now();
        let r = run_vireo(
            &["run", "--kernel", s(&hello), "--disk", &disk],
            Duration::from_secs(30),
        );
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "{:?}",
            start.elapsed()
        );
        assert_eq!(r.code, Some(2), "{}", r.describe());
        assert!(r.stderr.contains(&needle), "{needle}\n{}", r.describe());
        assert!(!r.stderr.contains("in use"), "{}", r.describe());
    }
}

/// `--disk` takes a path with commas in it, written doubled as in QEMU.
#[test]
fn a_disk_path_may_contain_a_comma() {
    let dir = scratch("comma");
    let img = dir.join("a,b.img");
    std::fs::write(&img, vec![0u8; 1 << 20]).unwrap();
    let escaped = s(&img).replace(',', ",,");
    let r = run_blk(&format!("path={escaped},format=raw"), "blk");
    assert_ran(&r);
    assert!(r.stdout.contains("capacity=2048 ro=no"), "{}", r.describe());
    assert_eq!(&std::fs::read(&img).unwrap()[512..520], &1u64.to_le_bytes());
}

/// One HTTP request on the API socket: (status, body), and how long the
/// answer took.
fn api(socket: &Path, method: &str, path: &str, body: &str) -> (u16, String, Duration) {
    let start = Instant::now();
    let mut s = UnixStream::connect(socket).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut response = String::new();
    s.read_to_string(&mut response).unwrap();
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("bad response: {response:?}"));
    let text = response.split("\r\n\r\n").nth(1).unwrap_or("").to_string();
    (status, text, start.elapsed())
}

/// The API's add-disk (hot-plug) takes `format` too: a planted header is
/// the guest's bytes with "format":"raw", a qcow2 without it; an unknown
/// format is refused; a FIFO backing file is refused at once.
#[test]
fn the_api_add_disk_takes_a_format_and_refuses_a_fifo_at_once() {
    let dir = scratch("api");
    let secret = dir.join("secret");
    std::fs::write(&secret, vec![0x42u8; 4096]).unwrap();
    let planted = dir.join("planted.img");
    plant_qcow2_header(&planted, &secret);
    let fifo = dir.join("fifo");
    assert!(Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap()
        .success());
    let evil = dir.join("evil.qcow2");
    qemu_img(&[
        "create",
        "-q",
        "-f",
        "qcow2",
        "-u",
        "-F",
        "raw",
        "-b",
        s(&fifo),
        s(&evil),
        "64M",
    ]);

    let socket = dir.join("api.sock");
    let idle = guest("idle");
    let mut child = common::vireo()
        .args([
            "run",
            "--api-socket",
            s(&socket),
            "--kernel",
            s(&idle),
            "--serial",
            "off",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while api_state(&socket).as_deref() != Some("running") {
        assert!(Instant::now() < deadline, "the VM never ran");
        std::thread::sleep(Duration::from_millis(20));
    }
    let add = |body: serde_json::Value| api(&socket, "PUT", "/vm/add-disk", &body.to_string());

    let (status, body, took) = add(serde_json::json!({"path": evil, "readonly": true}));
    // Well formed, but the image cannot be opened here: 422.
    assert_eq!(status, 422, "{body}");
    assert!(body.contains("is a FIFO"), "{body}");
    assert!(took < Duration::from_secs(5), "{took:?}");
    let (status, body, _) = add(serde_json::json!({"path": planted, "format": "vmdk"}));
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("raw or qcow2"), "{body}");
    let (status, body, _) = add(serde_json::json!(
        {"path": planted, "format": "raw", "readonly": true, "id": "given"}
    ));
    assert_eq!(status, 200, "{body}");
    let (status, body, _) = add(serde_json::json!(
        {"path": planted, "readonly": true, "id": "probed"}
    ));
    assert_eq!(status, 200, "{body}");
    let (_, info, _) = api(&socket, "GET", "/vm", "");
    let info: serde_json::Value = serde_json::from_str(&info).unwrap();
    let details = |id: &str| {
        info["devices"]
            .as_array()
            .unwrap()
            .iter()
            .find(|d| d["id"] == id)
            .unwrap_or_else(|| panic!("no device {id}: {info}"))["details"]
            .clone()
    };
    // Given raw: the whole file. Probed: the planted qcow2, 1 MiB over the
    // "secret" (what format= exists to prevent).
    assert_eq!(details("given")["format"], "raw", "{info}");
    assert_eq!(
        details("given")["size_bytes"],
        (8u64 << 20).to_string(),
        "{info}"
    );
    assert_eq!(details("probed")["format"], "qcow2", "{info}");
    assert_eq!(
        details("probed")["size_bytes"],
        (1u64 << 20).to_string(),
        "{info}"
    );
    let _ = api(&socket, "PUT", "/vm/power-off", "");
    let deadline = Instant::now() + Duration::from_secs(20);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("vireo did not exit after power-off");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The VM's state, or `None` while the API does not answer yet.
fn api_state(socket: &Path) -> Option<String> {
    UnixStream::connect(socket).ok()?;
    let (status, body, _) = api(socket, "GET", "/vm", "");
    let v: serde_json::Value = serde_json::from_str(&body).ok()?;
    (status == 200).then(|| v["state"].as_str().unwrap_or("").to_string())
}
