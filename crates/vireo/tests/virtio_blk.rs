//! virtio-blk and virtio-rng end to end: the `virtio` test guest drives
//! Vireo's devices with the third-party virtio-drivers crate, at CPL 3, on
//! the real /dev/kvm; the test checks what the guest reports and what
//! landed in the host file.

mod common;

use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{guest, run_vireo, vireo, RunResult};

const TIMEOUT: Duration = Duration::from_secs(60);
const SECTOR: usize = 512;

/// A scratch image of `mib` MiB under the test's temporary directory.
fn image(name: &str, mib: u64) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("virtio-blk");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(format!("{name}.img"));
    let _ = std::fs::remove_file(&path);
    File::create(&path).unwrap().set_len(mib << 20).unwrap();
    path
}

/// The pattern the guest writes to sector `n` (guests/README.md).
fn guest_pattern(n: u64) -> Vec<u8> {
    let mut s = n.to_le_bytes().to_vec();
    s.extend((8..SECTOR as u64).map(|i| low_byte(n + i)));
    s
}

fn low_byte(v: u64) -> u8 {
    v.to_le_bytes()[0]
}

fn fnv1a32(data: &[u8]) -> u32 {
    data.iter().fold(0x811c_9dc5u32, |h, &b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    })
}

fn read_sector(path: &Path, n: u64) -> Vec<u8> {
    let mut f = File::open(path).unwrap();
    f.seek(SeekFrom::Start(n * SECTOR as u64)).unwrap();
    let mut buf = vec![0u8; SECTOR];
    f.read_exact(&mut buf).unwrap();
    buf
}

fn run_guest(disk: Option<&str>, extra: &[&str], cmdline: &str) -> RunResult {
    let kernel = guest("virtio");
    let mut args = vec![
        "run",
        "--kernel",
        kernel.to_str().unwrap(),
        "--cmdline",
        cmdline,
    ];
    if let Some(d) = disk {
        args.extend(["--disk", d]);
    }
    args.extend(extra);
    let r = run_vireo(&args, TIMEOUT);
    assert_eq!(r.code, Some(0), "{}", r.describe());
    assert!(r.stdout.contains("virtio: done"), "{}", r.describe());
    assert!(!r.stdout.contains("FAIL"), "{}", r.describe());
    assert!(!r.stdout.contains("virtio: panic"), "{}", r.describe());
    r
}

#[test]
fn guest_writes_reach_the_file_and_host_data_reaches_the_guest() {
    let path = image("rw", 8);
    // Something for the guest to read: sector 0 holds a known pattern.
    let host: Vec<u8> = (0..SECTOR as u64).map(|i| low_byte(i * 7 % 251)).collect();
    File::options()
        .write(true)
        .open(&path)
        .unwrap()
        .write_all(&host)
        .unwrap();
    let disk = format!("path={}", path.display());
    let r = run_guest(
        Some(&disk),
        &[],
        "blk blk-first=3 blk-count=16 blk-stride=5 blk-read=0",
    );
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
            .contains("virtio-blk: capacity=16384 ro=no serial=vireo-disk0"),
        "{}",
        r.describe()
    );
    assert!(
        r.stdout.contains("virtio-blk: ok capacity=16384 wrote=16"),
        "{}",
        r.describe()
    );
    for k in 0..16 {
        let n = 3 + 5 * k;
        assert_eq!(
            read_sector(&path, n),
            guest_pattern(n),
            "sector {n} in the host file"
        );
    }
    // Untouched sectors stay zero.
    assert_eq!(read_sector(&path, 4), vec![0; SECTOR]);
}

#[test]
fn one_large_request_spans_many_sectors() {
    let path = image("run", 4);
    let disk = format!(
        "path={},cache=none,queues=4,serial=run-disk",
        path.display()
    );
    let r = run_guest(Some(&disk), &[], "blk blk-first=100 blk-count=256");
    assert!(r.stdout.contains("serial=run-disk"), "{}", r.describe());
    assert!(
        r.stdout.contains("virtio-blk: ok capacity=8192 wrote=256"),
        "{}",
        r.describe()
    );
    for n in [100, 227, 355] {
        assert_eq!(read_sector(&path, n), guest_pattern(n));
    }
}

#[test]
fn a_read_only_disk_refuses_guest_writes() {
    let path = image("ro", 1);
    let disk = format!("path={},readonly=on", path.display());
    let r = run_guest(Some(&disk), &[], "blk blk-first=1");
    assert!(r.stdout.contains("ro=yes"), "{}", r.describe());
    assert!(
        r.stdout
            .contains("virtio-blk: ok capacity=2048 wrote=0 readonly"),
        "{}",
        r.describe()
    );
    assert_eq!(read_sector(&path, 1), vec![0; SECTOR]);
}

#[test]
fn rng_gives_the_guest_random_bytes() {
    let r = run_guest(None, &["--rng"], "rng");
    assert!(r.stdout.contains("virtio-rng: ok"), "{}", r.describe());
    assert!(r.stdout.contains("device 1044 rng"), "{}", r.describe());
}

#[test]
fn two_vms_cannot_open_one_writable_image() {
    let path = image("locked", 1);
    let disk = format!("path={}", path.display());
    let idle = guest("idle");
    let mut first = vireo()
        .args(["run", "--kernel", idle.to_str().unwrap(), "--disk", &disk])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Wait until the first VM runs (it has opened and locked the image).
    let mut out = first.stdout.take().unwrap();
    let mut seen = Vec::new();
    let mut byte = [0u8; 1];
    while !String::from_utf8_lossy(&seen).contains("idle: waiting") {
        if out.read(&mut byte).unwrap() == 0 {
            break;
        }
        seen.push(byte[0]);
    }
    let second = run_vireo(
        &["run", "--kernel", idle.to_str().unwrap(), "--disk", &disk],
        TIMEOUT,
    );
    let _ = Command::new("kill").arg(first.id().to_string()).status();
    let _ = first.wait();
    assert_eq!(second.code, Some(2), "{}", second.describe());
    assert!(second.stderr.contains("in use"), "{}", second.describe());
    assert_eq!(second.stderr.lines().count(), 1, "{}", second.describe());
}

#[test]
fn bad_disk_options_are_usage_errors() {
    let kernel = guest("hello");
    for (disk, msg) in [
        ("path=/nonexistent/x.img", "/nonexistent/x.img"),
        ("readonly=on", "path=... is required"),
        ("path=a,cache=sometimes", "none or writeback"),
        ("path=a,queues=99", "1 to 16"),
    ] {
        let r = run_vireo(
            &["run", "--kernel", kernel.to_str().unwrap(), "--disk", disk],
            TIMEOUT,
        );
        assert_eq!(r.code, Some(2), "{disk}: {}", r.describe());
        assert!(r.stderr.contains(msg), "{disk}: {}", r.describe());
        assert!(r.stdout.is_empty(), "{disk}: {}", r.describe());
    }
}

/// A qcow2 image made by qemu-img, written by the guest through virtio-blk:
/// qemu-img must find it clean and read back what the guest wrote.
#[test]
fn guest_writes_to_a_qcow2_image_pass_qemu_img_check() {
    if Command::new("qemu-img").arg("--version").output().is_err() {
        testkit::skip("qemu-img not installed");
        return;
    }
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("virtio-blk");
    std::fs::create_dir_all(&dir).unwrap();
    let qcow2 = dir.join("guest.qcow2");
    let _ = std::fs::remove_file(&qcow2);
    let made = Command::new("qemu-img")
        .args([
            "create",
            "-q",
            "-f",
            "qcow2",
            qcow2.to_str().unwrap(),
            "64M",
        ])
        .status()
        .unwrap();
    assert!(made.success());
    let disk = format!("path={}", qcow2.display());
    // Sectors 70000 + 300 k reach across many 64 KiB clusters and L2 tables.
    let r = run_guest(
        Some(&disk),
        &[],
        "blk blk-first=7 blk-count=200 blk-stride=613 blk-read=5",
    );
    assert!(
        r.stdout
            .contains("virtio-blk: ok capacity=131072 wrote=200"),
        "{}",
        r.describe()
    );
    let check = Command::new("qemu-img")
        .args(["check", qcow2.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "qemu-img check: {}{}",
        String::from_utf8_lossy(&check.stdout),
        String::from_utf8_lossy(&check.stderr)
    );
    let raw = dir.join("guest-from-qcow2.raw");
    let converted = Command::new("qemu-img")
        .args([
            "convert",
            "-O",
            "raw",
            qcow2.to_str().unwrap(),
            raw.to_str().unwrap(),
        ])
        .status()
        .unwrap();
    assert!(converted.success());
    for k in [0u64, 1, 99, 199] {
        let n = 7 + 613 * k;
        assert_eq!(
            read_sector(&raw, n),
            guest_pattern(n),
            "sector {n} as qemu-img reads it"
        );
    }
    assert_eq!(read_sector(&raw, 8), vec![0; SECTOR]);
}

#[test]
fn one_image_cannot_back_two_disks() {
    let path = image("twice", 1);
    let kernel = guest("hello");
    let a = format!("path={}", path.display());
    let b = format!(
        "path={}/../virtio-blk/twice.img",
        path.parent().unwrap().display()
    );
    let r = run_vireo(
        &[
            "run",
            "--kernel",
            kernel.to_str().unwrap(),
            "--disk",
            &a,
            "--disk",
            &b,
        ],
        TIMEOUT,
    );
    assert_eq!(r.code, Some(2), "{}", r.describe());
    assert!(r.stderr.contains("is given twice"), "{}", r.describe());
}

#[test]
fn an_iops_limit_paces_the_guest_within_ten_percent() {
    use std::io::BufRead;
    let img = image("iotune", 64);
    let kernel = guest("virtio");
    let disk = format!("path={},format=raw,iops=400", img.display());
    let mut child = vireo()
        .args(["run", "--kernel", kernel.to_str().unwrap()])
        .args(["--cmdline", "blk blk-count=0 bench-rand-ops=1200"])
        .args(["--disk", &disk])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Host clock, not the guest's TSC guess: when each phase's line came.
    let mut reads_done = None;
    let mut writes_done = None;
    let mut seen = String::new();
    for line in std::io::BufReader::new(child.stdout.take().unwrap()).lines() {
        let line = line.unwrap();
        let now = std::time::Instant::now();
        if line.contains("bench: blk rand-read") {
            reads_done = Some(now);
        }
        if line.contains("bench: blk rand-write") {
            writes_done = Some(now);
        }
        seen.push_str(&line);
        seen.push('\n');
    }
    let status = child.wait().unwrap();
    assert!(status.success(), "{seen}");
    let (Some(r), Some(w)) = (reads_done, writes_done) else {
        panic!("no bench lines:\n{seen}");
    };
    // The reads emptied the bucket's burst; the writes (and their flush)
    // run at the limit.
    let secs = w.duration_since(r).as_secs_f64();
    let iops = 1201.0 / secs;
    eprintln!("guest write IOPS under iops=400: {iops:.0} ({secs:.2} s)");
    assert!((360.0..=440.0).contains(&iops), "{iops:.0} IOPS\n{seen}");
}
