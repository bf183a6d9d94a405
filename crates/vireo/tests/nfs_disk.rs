//! `vireo run --disk nfs://...`: the `virtio` test guest reads and
//! writes a file on an export of a real nfs-ganesha in a network
//! namespace the test makes (vireo runs inside it), and the data is
//! checked in the exported file on the host side.

mod common;
mod guest_sectors;

use std::fs::File;
use std::io::{Read, Write};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::guest;
use guest_sectors::{fnv1a32, pattern, read_sector, SECTOR};
use nfs::test_server::{StartError, TestServer};

const MIB: u64 = 1 << 20;

/// A ganesha exporting `dir/export` (state in `dir/state`), or `None`
/// (the test skips) without root or without nfs-ganesha.
fn server(tag: &str, dir: &Path) -> Option<TestServer> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("SKIP: making a network namespace needs root");
        testkit::skip("nfs_disk: making a network namespace needs root");
        return None;
    }
    let (export, state) = (dir.join("export"), dir.join("state"));
    std::fs::create_dir_all(&export).unwrap();
    std::fs::create_dir_all(&state).unwrap();
    match TestServer::start(tag, &export, &state) {
        Ok(s) => Some(s),
        Err(StartError::NotInstalled(why)) => {
            eprintln!("SKIP: {why}");
            testkit::skip(&format!("nfs_disk: {why}"));
            None
        }
        Err(e) => panic!("{e}"),
    }
}

/// An exported file of `size` bytes, its host path.
fn image(s: &TestServer, name: &str, size: u64) -> std::path::PathBuf {
    let path = s.export().join(name);
    File::create(&path).unwrap().set_len(size).unwrap();
    path
}

#[test]
fn a_guest_reads_and_writes_a_file_on_an_nfs_export() {
    let dir = tempfile::tempdir().unwrap();
    let Some(s) = server("run", dir.path()) else {
        return;
    };
    let file = image(&s, "disk.img", 8 * MIB);
    // Sector 0 holds something for the guest to read.
    let host: Vec<u8> = (0..SECTOR)
        .map(|i| u8::try_from(i * 7 % 251).unwrap())
        .collect();
    File::options()
        .write(true)
        .open(&file)
        .unwrap()
        .write_all(&host)
        .unwrap();
    let kernel = guest("virtio");
    let disk = format!("{},format=raw,serial=nfs1", s.url("disk.img"));
    let r = common::vireo_in_netns(
        s.netns(),
        &[
            "run",
            "--kernel",
            kernel.to_str().unwrap(),
            "--cmdline",
            "blk blk-first=3 blk-count=64 blk-stride=5 blk-read=0",
            "--disk",
            &disk,
        ],
    );
    assert_eq!(r.code, Some(0), "{}", r.describe());
    let head: String = host[..16].iter().map(|b| format!("{b:02x}")).collect();
    let expect = format!(
        "virtio-blk: sector 0 head={head} fnv1a32={:08x}",
        fnv1a32(&host)
    );
    assert!(
        r.stdout.contains(&expect),
        "want {expect}\n{}",
        r.describe()
    );
    assert!(
        r.stdout
            .contains("virtio-blk: capacity=16384 ro=no serial=nfs1"),
        "{}",
        r.describe()
    );
    assert!(
        r.stdout.contains("virtio-blk: ok capacity=16384 wrote=64"),
        "{}",
        r.describe()
    );
    for k in 0..64 {
        let n = 3 + 5 * k;
        assert_eq!(read_sector(&file, n), pattern(n), "sector {n}");
    }
    assert_eq!(read_sector(&file, 4), vec![0; SECTOR]);
}

/// Run qemu-img (the oracle) in `dir`; its stdout, or `None` (a skip)
/// when it is not installed.
fn qemu_img(dir: &Path, args: &[&str]) -> Option<String> {
    match Command::new("qemu-img")
        .args(args)
        .current_dir(dir)
        .output()
    {
        Ok(out) => {
            let text = String::from_utf8_lossy(&out.stdout).into_owned();
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(out.status.success(), "qemu-img {args:?}: {text}{err}");
            Some(text)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            testkit::skip("nfs_disk: qemu-img (qemu-utils) is not installed");
            None
        }
        Err(e) => panic!("qemu-img: {e}"),
    }
}

#[test]
fn a_guest_reads_and_writes_a_qcow2_image_on_an_nfs_export() {
    let dir = tempfile::tempdir().unwrap();
    let Some(s) = server("runq2", dir.path()) else {
        return;
    };
    let export = s.export().to_owned();
    let made = qemu_img(
        &export,
        &["create", "-q", "-f", "qcow2", "disk.qcow2", "8M"],
    );
    if made.is_none() {
        return;
    }
    // Sector 0 holds something for the guest to read (written locally,
    // through the block layer's own qcow2).
    let host: Vec<u8> = (0..SECTOR)
        .map(|i| u8::try_from(i * 11 % 251).unwrap())
        .collect();
    let options = block::OpenOptions {
        format: Some(block::ImageFormat::Qcow2),
        ..Default::default()
    };
    block::open(&export.join("disk.qcow2"), &options)
        .unwrap()
        .write_at(0, &host)
        .unwrap();
    let kernel = guest("virtio");
    let disk = format!("{},format=qcow2,serial=nfsq", s.url("disk.qcow2"));
    // A stride of 200 sectors puts the writes in about a hundred clusters:
    // each allocates over nfs://.
    let r = common::vireo_in_netns(
        s.netns(),
        &[
            "run",
            "--kernel",
            kernel.to_str().unwrap(),
            "--cmdline",
            "blk blk-first=3 blk-count=64 blk-stride=200 blk-read=0",
            "--disk",
            &disk,
        ],
    );
    assert_eq!(r.code, Some(0), "{}", r.describe());
    let head: String = host[..16].iter().map(|b| format!("{b:02x}")).collect();
    let expect = format!(
        "virtio-blk: sector 0 head={head} fnv1a32={:08x}",
        fnv1a32(&host)
    );
    assert!(
        r.stdout.contains(&expect),
        "want {expect}\n{}",
        r.describe()
    );
    assert!(
        r.stdout.contains("virtio-blk: ok capacity=16384 wrote=64"),
        "{}",
        r.describe()
    );
    // qemu-img finds the image clean, and its contents are what the
    // guest wrote.
    let report = qemu_img(&export, &["check", "-f", "qcow2", "disk.qcow2"]).unwrap();
    assert!(report.contains("No errors were found"), "{report}");
    let raw = dir.path().join("disk.raw");
    let raw_arg = raw.to_str().unwrap();
    qemu_img(
        &export,
        &["convert", "-f", "qcow2", "-O", "raw", "disk.qcow2", raw_arg],
    )
    .unwrap();
    assert_eq!(read_sector(&raw, 0), host);
    for k in 0..64 {
        let n = 3 + 200 * k;
        assert_eq!(read_sector(&raw, n), pattern(n), "sector {n}");
    }
    assert_eq!(read_sector(&raw, 4), vec![0; SECTOR]);
}

#[test]
fn missing_exports_files_and_servers_are_refused_in_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let Some(mut s) = server("runbad", dir.path()) else {
        return;
    };
    image(&s, "disk.img", MIB);
    let mut q = b"QFI\xfb".to_vec();
    q.resize(4096, 0);
    std::fs::write(s.export().join("q.img"), &q).unwrap();
    let kernel = guest("virtio");
    let no_export = "nfs://169.254.78.1/no/such/export/disk.img".to_string();
    let no_file = s.url("nope.img");
    let raw = s.url("disk.img");
    let raw_as_qcow2 = format!("{raw},format=qcow2");
    let probed_qcow2 = s.url("q.img");
    for (disk, says) in [
        (no_export.as_str(), "mount"),
        (no_file.as_str(), "open"),
        (raw_as_qcow2.as_str(), "not a qcow2 image"),
        (probed_qcow2.as_str(), "give format=qcow2"),
        (
            "nfs://169.254.78.1/",
            "expected nfs://SERVER[:PORT]/EXPORT/PATH",
        ),
    ] {
        let r = common::vireo_in_netns(
            s.netns(),
            &["run", "--kernel", kernel.to_str().unwrap(), "--disk", disk],
        );
        assert_eq!(r.code, Some(2), "{disk}: {}", r.describe());
        assert_eq!(
            r.stderr.trim().lines().count(),
            1,
            "{disk}: {}",
            r.describe()
        );
        assert!(
            r.stderr.contains(says),
            "{disk}: want '{says}'\n{}",
            r.describe()
        );
        assert!(r.stderr.contains("nfs://"), "{disk}: {}", r.describe());
    }

    // No server listening any more: refused at once, in one line.
    s.kill();
    let start = std::time::Instant::now();
    let r = common::vireo_in_netns(
        s.netns(),
        &["run", "--kernel", kernel.to_str().unwrap(), "--disk", &raw],
    );
    assert_eq!(r.code, Some(2), "{}", r.describe());
    assert_eq!(r.stderr.trim().lines().count(), 1, "{}", r.describe());
    assert!(r.stderr.contains("mount"), "{}", r.describe());
    assert!(
        start.elapsed() < Duration::from_secs(10),
        "{:?}",
        start.elapsed()
    );
}

/// One request to a VMM's API socket: (status, body).
fn api(socket: &Path, method: &str, path: &str) -> (u16, serde_json::Value) {
    use std::io::Write as _;
    let mut s = std::os::unix::net::UnixStream::connect(socket).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text.split("\r\n\r\n").nth(1).unwrap_or("");
    let value = serde_json::from_str(body).unwrap_or(serde_json::Value::Null);
    (status, value)
}

/// The `virtio` guest writing sectors 3 to 10 of `disk`, in the server's
/// namespace, held before its first instruction (so the server can go
/// first); its output in `out`, its API on `socket`.
fn paused_guest(s: &TestServer, socket: &Path, out: &Path, disk: &str) -> std::process::Child {
    paused_guest_with(s, socket, out, disk, "blk blk-first=3 blk-count=8")
}

/// As [`paused_guest`], with the guest's command line `cmdline`.
fn paused_guest_with(
    s: &TestServer,
    socket: &Path,
    out: &Path,
    disk: &str,
    cmdline: &str,
) -> std::process::Child {
    let kernel = guest("virtio");
    let child = Command::new("ip")
        .args(["netns", "exec", s.netns(), env!("CARGO_BIN_EXE_vireo")])
        .args(["run", "--paused", "--api-socket"])
        .arg(socket)
        .args(["--kernel", kernel.to_str().unwrap()])
        .args(["--cmdline", cmdline])
        .args(["--disk", disk])
        .stdin(std::process::Stdio::null())
        .stdout(File::create(out).unwrap())
        .stderr(File::create(out.with_extension("err")).unwrap())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !socket.exists() {
        assert!(std::time::Instant::now() < deadline, "no API socket");
        std::thread::sleep(Duration::from_millis(20));
    }
    child
}

/// Its exit code, waited for 60 s at most (then killed: `None`).
fn exit_code(child: &mut std::process::Child) -> Option<i32> {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            return s.code();
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn wait_paused(socket: &Path) -> serde_json::Value {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let (_, info) = api(socket, "GET", "/vm");
        if info["state"] == "paused" {
            return info;
        }
        assert!(std::time::Instant::now() < deadline, "never paused: {info}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_server_that_goes_away_stops_the_vm_and_its_return_finishes_the_io() {
    let dir = tempfile::tempdir().unwrap();
    let Some(mut s) = server("away", dir.path()) else {
        return;
    };
    let file = image(&s, "disk.img", 8 * MIB);
    let socket = dir.path().join("api.sock");
    let out = dir.path().join("out.txt");
    let disk = format!(
        "{},format=raw,werror=stop,rerror=stop,serial=nfs1",
        s.url("disk.img")
    );
    let mut child = paused_guest(&s, &socket, &out, &disk);
    wait_paused(&socket);

    // The server dies: the guest's first request fails, and the VM
    // stops instead of giving the guest an error.
    s.kill();
    assert_eq!(api(&socket, "PUT", "/vm/resume").0, 204);
    let info = wait_paused(&socket);
    assert!(
        info["io_error"]
            .as_str()
            .unwrap_or_default()
            .starts_with("disk disk0: "),
        "{info}"
    );
    let (_, counters) = api(&socket, "GET", "/vm/counters");
    assert!(
        counters["devices"]["disk0"]["held_requests"].as_u64() >= Some(1),
        "{counters}"
    );
    assert_eq!(counters["devices"]["disk0"]["errors"], 0, "{counters}");

    // It comes back: resume, the held request connects again and goes
    // through, and the guest finishes as if nothing had happened.
    s.restart().unwrap();
    assert_eq!(api(&socket, "PUT", "/vm/resume").0, 204);
    let status = exit_code(&mut child);
    let text = std::fs::read_to_string(&out).unwrap();
    let err = std::fs::read_to_string(out.with_extension("err")).unwrap_or_default();
    assert_eq!(status, Some(0), "{text}\n{err}");
    assert!(
        text.contains("virtio-blk: ok capacity=16384 wrote=8"),
        "{text}\n{err}"
    );
    assert!(!text.contains("FAIL"), "{text}");
    for n in 3..11 {
        assert_eq!(read_sector(&file, n), pattern(n), "sector {n}");
    }
}

#[test]
fn with_the_default_policy_a_lost_server_is_an_error_for_the_guest_not_a_hang() {
    let dir = tempfile::tempdir().unwrap();
    let Some(mut s) = server("lost", dir.path()) else {
        return;
    };
    image(&s, "disk.img", 8 * MIB);
    let socket = dir.path().join("api.sock");
    let out = dir.path().join("out.txt");
    let disk = format!("{},format=raw,serial=nfs1", s.url("disk.img"));
    let mut child = paused_guest(&s, &socket, &out, &disk);
    wait_paused(&socket);
    s.kill();
    assert_eq!(api(&socket, "PUT", "/vm/resume").0, 204);
    // The guest gets its error at once (a refused connection, each
    // attempt bounded), says so, and powers off: nothing waits forever.
    let status = exit_code(&mut child);
    let text = std::fs::read_to_string(&out).unwrap();
    let err = std::fs::read_to_string(out.with_extension("err")).unwrap_or_default();
    assert_eq!(status, Some(0), "{text}\n{err}");
    assert!(text.contains("virtio-blk: FAIL"), "{text}\n{err}");
}

#[test]
fn a_server_that_stops_answering_costs_a_bounded_wait_and_a_pause_not_a_hang() {
    let dir = tempfile::tempdir().unwrap();
    let Some(mut s) = server("frozen", dir.path()) else {
        return;
    };
    let file = image(&s, "disk.img", 8 * MIB);
    let socket = dir.path().join("api.sock");
    let out = dir.path().join("out.txt");
    let disk = format!(
        "{},format=raw,werror=stop,rerror=stop,serial=nfs1",
        s.url("disk.img")
    );
    // The guest waits up to 90 s for a request (its own 5 s would
    // declare the device stuck before the VMM's deadlines pass).
    let cmdline = "blk blk-first=3 blk-count=8 request-timeout-ms=90000";
    let mut child = paused_guest_with(&s, &socket, &out, &disk, cmdline);
    wait_paused(&socket);

    // The server keeps its connections but answers nothing: the first
    // request waits out its deadline, the reconnect waits out its own,
    // and the VM pauses; the API answers all along.
    s.freeze();
    let start = std::time::Instant::now();
    assert_eq!(api(&socket, "PUT", "/vm/resume").0, 204);
    std::thread::sleep(Duration::from_secs(2));
    let (status, info) = api(&socket, "GET", "/vm");
    assert_eq!(status, 200, "{info}");
    let info = wait_paused(&socket);
    let waited = start.elapsed();
    assert!(waited < Duration::from_secs(45), "{waited:?}");
    assert!(
        info["io_error"]
            .as_str()
            .unwrap_or_default()
            .starts_with("disk disk0: "),
        "{info}"
    );

    // Back (a new server process on the same export): resume finishes.
    s.restart().unwrap();
    assert_eq!(api(&socket, "PUT", "/vm/resume").0, 204);
    let status = exit_code(&mut child);
    let text = std::fs::read_to_string(&out).unwrap();
    let err = std::fs::read_to_string(out.with_extension("err")).unwrap_or_default();
    assert_eq!(status, Some(0), "{text}\n{err}");
    assert!(
        text.contains("virtio-blk: ok capacity=16384 wrote=8"),
        "{text}\n{err}"
    );
    for n in 3..11 {
        assert_eq!(read_sector(&file, n), pattern(n), "sector {n}");
    }
}
