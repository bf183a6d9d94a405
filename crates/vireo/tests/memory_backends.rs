//! End-to-end boots with `--memory-backend`: memfd, a file, threaded
//! prealloc and 2 MiB huge pages (reserved here and given back), and the
//! one-line shortfall error when the host's pool is too small.

mod common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::Stdio;
use std::sync::Mutex;
use std::time::Duration;

use common::{guest, is_root, run_vireo, vireo};

const T: Duration = Duration::from_secs(60);
const POOL_2M: &str = "/sys/kernel/mm/hugepages/hugepages-2048kB";

/// The huge page pool is host-wide: one test at a time changes it.
static POOL_LOCK: Mutex<()> = Mutex::new(());

fn read_count(path: &str) -> u64 {
    std::fs::read_to_string(path)
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

/// 2 MiB pages free and not reserved by some mapping.
fn available_2m() -> u64 {
    read_count(&format!("{POOL_2M}/free_hugepages"))
        - read_count(&format!("{POOL_2M}/resv_hugepages"))
}

/// Adds `pages` 2 MiB pages to the pool; gives them back on drop, even when
/// the test fails.
struct HugePages {
    before: u64,
}

impl HugePages {
    fn reserve(pages: u64) -> Self {
        let before = read_count(&format!("{POOL_2M}/nr_hugepages"));
        let guard = Self { before };
        std::fs::write(
            format!("{POOL_2M}/nr_hugepages"),
            (before + pages).to_string(),
        )
        .unwrap();
        assert_eq!(
            read_count(&format!("{POOL_2M}/nr_hugepages")),
            before + pages,
            "the host could not reserve {pages} huge pages"
        );
        guard
    }
}

impl Drop for HugePages {
    fn drop(&mut self) {
        let _ = std::fs::write(format!("{POOL_2M}/nr_hugepages"), self.before.to_string());
    }
}

fn hello(extra: &[&str]) -> common::RunResult {
    let path = guest("hello");
    let mut args = vec!["run", "--kernel", path.to_str().unwrap()];
    args.extend_from_slice(extra);
    run_vireo(&args, T)
}

fn assert_boots(extra: &[&str]) {
    let r = hello(extra);
    assert_eq!(r.code, Some(0), "{}", r.describe());
    assert!(
        r.stdout.contains("hello: vireo guest booted\n"),
        "{}",
        r.describe()
    );
    assert!(r.stderr.is_empty(), "{}", r.describe());
}

#[test]
fn memfd_backed_guest_boots() {
    assert_boots(&["--memory", "128M", "--memory-backend", "backend=memfd"]);
}

#[test]
fn file_backed_guest_boots_and_the_file_holds_its_ram() {
    let file = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("ram-{}", std::process::id()));
    let spec = format!("path={},shared=on", file.display());
    assert_boots(&["--memory", "128M", "--memory-backend", &spec]);
    let len = std::fs::metadata(&file).unwrap().len();
    std::fs::remove_file(&file).unwrap();
    assert_eq!(len, 128 << 20);
}

#[test]
fn prealloc_with_two_threads_boots() {
    assert_boots(&[
        "--memory",
        "256M",
        "--memory-backend",
        "prealloc=on,prealloc-threads=2,thp=on",
    ]);
}

#[test]
fn two_mib_huge_pages_back_the_running_guest() {
    if !is_root() {
        eprintln!("skipped: reserving huge pages needs root");
        return;
    }
    let _lock = POOL_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let _pages = HugePages::reserve(64);
    let before = available_2m();
    let idle = guest("idle");
    let mut child = vireo()
        .args([
            "run",
            "--kernel",
            idle.to_str().unwrap(),
            "--memory",
            "128M",
        ])
        .args(["--memory-backend", "backend=memfd,hugepages=2M"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let waiting = lines
        .by_ref()
        .map_while(Result::ok)
        .any(|l| l.contains("idle: waiting"));
    let during = available_2m();
    // SAFETY: plain kill(2) on our own child's pid.
    unsafe { libc::kill(i32::try_from(child.id()).unwrap(), libc::SIGTERM) };
    let status = child.wait().unwrap();
    assert!(
        waiting,
        "the guest never printed 'idle: waiting' ({status})"
    );
    assert_eq!(
        before - during,
        64,
        "128 MiB of guest RAM should take 64 huge pages"
    );
    assert_eq!(
        available_2m(),
        before,
        "the pages come back when vireo exits"
    );
}

#[test]
fn too_few_huge_pages_is_one_line_before_the_guest_runs() {
    if !is_root() {
        eprintln!("skipped: reserving huge pages needs root");
        return;
    }
    let _lock = POOL_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let _pages = HugePages::reserve(10);
    let free = available_2m();
    let r = hello(&["--memory", "128M", "--memory-backend", "hugepages=2M"]);
    assert_ne!(r.code, Some(0), "{}", r.describe());
    assert!(r.stdout.is_empty(), "{}", r.describe());
    let want = format!(
        "vireo: --memory 128 MiB with 2 MiB huge pages needs 64 pages; the host has {free} free \
         (echo 64 > /proc/sys/vm/nr_hugepages)\n"
    );
    assert_eq!(r.stderr, want, "{}", r.describe());
}

#[test]
fn one_gib_pages_the_host_lacks_are_named() {
    let free = read_count("/sys/kernel/mm/hugepages/hugepages-1048576kB/free_hugepages");
    if free > 0 {
        eprintln!("skipped: this host has 1 GiB pages free");
        return;
    }
    let r = hello(&[
        "--memory",
        "1G",
        "--memory-backend",
        "backend=memfd,hugepages=1G",
    ]);
    assert_ne!(r.code, Some(0), "{}", r.describe());
    assert!(r.stdout.is_empty(), "{}", r.describe());
    assert!(
        r.stderr
            .contains("--memory 1024 MiB with 1 GiB huge pages needs 1 pages; the host has 0 free"),
        "{}",
        r.describe()
    );
    let r = hello(&["--memory", "1536M", "--memory-backend", "hugepages=1G"]);
    assert!(
        r.stderr
            .contains("--memory 1536 MiB is not a multiple of the 1 GiB huge page size"),
        "{}",
        r.describe()
    );
}

/// A hugetlbfs mount for one test, unmounted on drop.
struct Hugetlbfs {
    dir: std::path::PathBuf,
}

impl Drop for Hugetlbfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(&self.dir).status();
        let _ = std::fs::remove_dir(&self.dir);
    }
}

#[test]
fn a_hugetlbfs_directory_gets_an_unlinked_file() {
    if !is_root() {
        eprintln!("skipped: mounting hugetlbfs needs root");
        return;
    }
    let _lock = POOL_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("htlb-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mount = Hugetlbfs { dir };
    let ok = std::process::Command::new("mount")
        .args(["-t", "hugetlbfs", "none"])
        .arg(&mount.dir)
        .status()
        .unwrap();
    assert!(ok.success(), "mount -t hugetlbfs failed");
    let _pages = HugePages::reserve(32);
    let spec = format!("path={},hugepages=2M", mount.dir.display());
    assert_boots(&["--memory", "64M", "--memory-backend", &spec]);
    assert_eq!(
        std::fs::read_dir(&mount.dir).unwrap().count(),
        0,
        "the RAM file is unlinked"
    );
    // Small pages from a plain directory would be a silent downgrade.
    let tmp = env!("CARGO_TARGET_TMPDIR");
    let r = hello(&[
        "--memory",
        "64M",
        "--memory-backend",
        &format!("path={tmp},hugepages=2M"),
    ]);
    assert!(
        r.stderr.contains("needs a hugetlbfs mount"),
        "{}",
        r.describe()
    );
}

#[test]
fn locked_guest_memory_is_all_in_ram() {
    let idle = guest("idle");
    let mut child = vireo()
        .args(["run", "--kernel", idle.to_str().unwrap(), "--memory", "64M"])
        .args(["--memory-backend", "lock=on"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let waiting = lines
        .by_ref()
        .map_while(Result::ok)
        .any(|l| l.contains("idle: waiting"));
    let status = std::fs::read_to_string(format!("/proc/{}/status", child.id())).unwrap();
    // SAFETY: plain kill(2) on our own child's pid.
    unsafe { libc::kill(i32::try_from(child.id()).unwrap(), libc::SIGTERM) };
    let _ = child.wait();
    assert!(waiting, "the guest never printed 'idle: waiting'");
    let locked_kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmLck:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("{status}"));
    assert!(
        locked_kib >= 64 * 1024,
        "VmLck {locked_kib} KiB of 64 MiB: {status}"
    );

    let r = run_vireo(
        &[
            "run",
            "--kernel",
            idle.to_str().unwrap(),
            "--memory-backend",
            "lock=on",
            "--balloon",
            "target=64M",
        ],
        Duration::from_secs(20),
    );
    assert_eq!(r.code, Some(2), "{}", r.describe());
    assert!(
        r.stderr
            .contains("locked guest memory cannot be given back"),
        "{}",
        r.describe()
    );
}
