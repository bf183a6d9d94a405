//! A VM's disk images are locked from the moment `vireo run` (or `PUT
//! /vm/config`) checks them until the VM ends, without a single moment in
//! between, across guest reboots and API resets too: `vireo img create`
//! (or another VM) can never take or replace an image a VM is about to
//! use or is using.
//!
//! A watcher thread asks the kernel, as fast as it can from the moment
//! the VMM is spawned, whether anyone holds a lock on QEMU's lock bytes
//! (F_OFD_GETLK takes nothing itself, so it never gets in the VMM's way);
//! once the image has been seen locked, it must never be seen free while
//! the VMM lives. Meanwhile `vireo img create` is tried over the image in
//! a loop, and must fail every time, leaving the file as it was.

mod common;

use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use common::{guest, vireo};

/// A fresh directory for one test; removed when the test ends.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Self {
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
            .join("disk-locks")
            .join(name);
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }

    fn join(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A qcow2 image made by `vireo img create`, its bytes and inode.
fn qcow2(path: &Path) -> (Vec<u8>, u64) {
    let out = vireo()
        .args(["img", "create", "-f", "qcow2"])
        .arg(path)
        .arg("64M")
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    snapshot(path)
}

fn snapshot(path: &Path) -> (Vec<u8>, u64) {
    (
        std::fs::read(path).unwrap(),
        std::fs::metadata(path).unwrap().ino(),
    )
}

/// What the watcher and the `img create` loop saw.
#[derive(Debug, Default)]
struct Report {
    probes: u64,
    /// The image was seen locked at least once.
    locked: bool,
    /// Times it was seen free again after that.
    freed: u64,
    /// `vireo img create` runs over the locked image, and how many
    /// succeeded (each a replaced image).
    creates: u64,
    created: u64,
    /// A failure other than "in use", if any.
    odd_failure: Option<String>,
}

/// The watcher thread and the `img create` loop, until [`Watch::finish`].
struct Watch {
    stop: Arc<AtomicBool>,
    watcher: JoinHandle<(u64, bool, u64)>,
    creator: JoinHandle<(u64, u64, Option<String>)>,
}

/// Whether some open file description holds a lock on QEMU's lock bytes
/// (100 to 201) of the file `fd` is open on.
fn locked(fd: &std::fs::File) -> bool {
    // SAFETY: flock is plain data; all-zero is a valid value.
    let mut fl: libc::flock = unsafe { std::mem::zeroed() };
    fl.l_type = i16::try_from(libc::F_WRLCK).unwrap();
    fl.l_whence = i16::try_from(libc::SEEK_SET).unwrap();
    fl.l_start = 100;
    fl.l_len = 102;
    // SAFETY: F_OFD_GETLK reads and updates the flock passed; fd is open.
    let r = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_OFD_GETLK, &mut fl) };
    assert_eq!(r, 0, "F_OFD_GETLK: {}", std::io::Error::last_os_error());
    i32::from(fl.l_type) != libc::F_UNLCK
}

impl Watch {
    /// Start watching `image` now.
    fn start(image: &Path) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let seen = Arc::new(AtomicBool::new(false));
        let file = std::fs::File::open(image).unwrap();
        let watcher = {
            let (stop, seen) = (stop.clone(), seen.clone());
            std::thread::spawn(move || {
                let (mut probes, mut freed) = (0u64, 0u64);
                let mut held = false;
                while !stop.load(Ordering::Relaxed) {
                    probes += 1;
                    let now = locked(&file);
                    if held && !now {
                        freed += 1;
                    }
                    held = now;
                    if now {
                        seen.store(true, Ordering::Relaxed);
                    }
                }
                (probes, seen.load(Ordering::Relaxed), freed)
            })
        };
        let creator = {
            let (stop, image) = (stop.clone(), image.to_path_buf());
            std::thread::spawn(move || {
                let (mut runs, mut created, mut odd) = (0u64, 0u64, None);
                // Before the VMM first locks the image, a create would be
                // right to succeed; from then on it never may.
                while !stop.load(Ordering::Relaxed) {
                    if !seen.load(Ordering::Relaxed) {
                        std::thread::yield_now();
                        continue;
                    }
                    let out = vireo()
                        .args(["img", "create", "-f", "qcow2"])
                        .arg(&image)
                        .arg("1M")
                        .output()
                        .unwrap();
                    runs += 1;
                    let err = String::from_utf8_lossy(&out.stderr);
                    if out.status.success() {
                        created += 1;
                    } else if !err.contains("in use") {
                        odd = Some(err.into_owned());
                    }
                }
                (runs, created, odd)
            })
        };
        Watch {
            stop,
            watcher,
            creator,
        }
    }

    fn finish(self) -> Report {
        self.stop.store(true, Ordering::Relaxed);
        let (probes, locked, freed) = self.watcher.join().unwrap();
        let (creates, created, odd_failure) = self.creator.join().unwrap();
        Report {
            probes,
            locked,
            freed,
            creates,
            created,
            odd_failure,
        }
    }
}

/// Stop watching while `vm` still runs (so whatever was seen, was seen
/// while it lived), check what was seen, then end the VM and check the
/// image is the file it was, byte for byte.
fn check(watch: Watch, mut vm: Child, image: &Path, before: &(Vec<u8>, u64)) {
    let report = watch.finish();
    let alive = vm.try_wait().unwrap().is_none();
    // SAFETY: kill(2) on the child's pid; it is not reaped yet.
    unsafe { libc::kill(vm.id() as i32, libc::SIGTERM) };
    let out = vm.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(alive, "the VM ended early: {stderr}");
    assert!(report.probes > 1000, "the watcher hardly ran: {report:?}");
    assert!(report.locked, "the image was never seen locked: {report:?}");
    assert_eq!(
        report.freed, 0,
        "the image was unlocked while the VM lived: {report:?}"
    );
    assert!(report.creates > 0, "img create never ran: {report:?}");
    assert_eq!(
        (report.created, report.odd_failure.as_deref()),
        (0, None),
        "img create over a VM's image: {report:?}"
    );
    assert!(out.status.success(), "{stderr}");
    assert!(&snapshot(image) == before, "the image changed");
}

#[test]
fn run_holds_its_disk_locked_from_the_check_to_the_end() {
    let dir = Scratch::new("run");
    let image = dir.join("live.qcow2");
    let before = qcow2(&image);
    // A gap would be at the start (between the check and the build), and
    // short: several starts give the watcher several chances to see it.
    for _ in 0..4 {
        let watch = Watch::start(&image);
        let vm = vireo()
            .args(["run", "--serial", "off", "--kernel"])
            .arg(guest("idle"))
            .arg("--disk")
            .arg(format!("path={},format=qcow2", image.display()))
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(600));
        check(watch, vm, &image, &before);
    }
}

#[test]
fn guest_reboots_keep_the_disk_locked() {
    let dir = Scratch::new("reboot");
    let image = dir.join("live.qcow2");
    let log = dir.join("serial.log");
    let before = qcow2(&image);
    let watch = Watch::start(&image);
    // The guest resets as soon as it boots: the VM is torn down and built
    // again over and over.
    let vm = vireo()
        .args(["run", "--reboot", "--kernel"])
        .arg(guest("reset"))
        .arg("--serial")
        .arg(format!("file:{}", log.display()))
        .arg("--disk")
        .arg(format!("path={},format=qcow2", image.display()))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let boots = || {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .matches("reset: booted")
            .count()
    };
    while boots() < 10 {
        assert!(Instant::now() < deadline, "only {} boots", boots());
        std::thread::sleep(Duration::from_millis(20));
    }
    check(watch, vm, &image, &before);
}

/// One HTTP request on the API socket; the status code.
fn call(socket: &Path, method: &str, path: &str, body: &str) -> u16 {
    call_body(socket, method, path, body).0
}

/// One HTTP request on the API socket; the status code and the body.
fn call_body(socket: &Path, method: &str, path: &str, body: &str) -> (u16, String) {
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
    let body = response.split("\r\n\r\n").nth(1).unwrap_or("").to_string();
    (status, body)
}

#[test]
fn api_configuration_and_resets_keep_the_disk_locked() {
    let dir = Scratch::new("api");
    let image = dir.join("live.qcow2");
    let socket = dir.join("api.sock");
    let before = qcow2(&image);
    let vm = vireo()
        .args(["run", "--serial", "off", "--api-socket"])
        .arg(&socket)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !socket.exists() {
        assert!(Instant::now() < deadline, "the API socket never appeared");
        std::thread::sleep(Duration::from_millis(10));
    }
    let config = serde_json::json!({
        "kernel": guest("idle"),
        "disks": [{"path": image, "format": "qcow2"}],
    });
    let is_locked = || locked(&std::fs::File::open(&image).unwrap());
    // A configuration holds its disks; the one replacing it takes over
    // those it names too (not "in use" by its own predecessor) and lets
    // the others go.
    assert_eq!(call(&socket, "PUT", "/vm/config", &config.to_string()), 204);
    assert!(is_locked(), "a configured disk is not locked");
    // Other options need a new open, which the held lock refuses: said
    // as such, and the configuration stays as it was.
    let readonly = serde_json::json!({
        "kernel": guest("idle"),
        "disks": [{"path": image, "format": "qcow2", "readonly": true}],
    });
    let (status, body) = call_body(&socket, "PUT", "/vm/config", &readonly.to_string());
    assert_eq!(status, 422, "{body}");
    assert!(body.contains("with other options"), "{body}");
    assert!(is_locked(), "a configured disk is not locked");
    let bare = serde_json::json!({"kernel": guest("idle")});
    assert_eq!(call(&socket, "PUT", "/vm/config", &bare.to_string()), 204);
    assert!(!is_locked(), "a disk left out of the configuration is held");
    let watch = Watch::start(&image);
    assert_eq!(call(&socket, "PUT", "/vm/config", &config.to_string()), 204);
    assert!(is_locked(), "a configured disk is not locked");
    assert_eq!(call(&socket, "PUT", "/vm/config", &config.to_string()), 204);
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(call(&socket, "PUT", "/vm/boot", ""), 204);
    // A disk hot-plugged while the VM runs comes back after a reset, on
    // the image that stayed open.
    let hot = dir.join("hot.qcow2");
    let hot_before = qcow2(&hot);
    let hot_disk = serde_json::json!({"path": hot, "format": "qcow2", "id": "hot"});
    let (status, body) = call_body(&socket, "PUT", "/vm/add-disk", &hot_disk.to_string());
    assert_eq!(status, 200, "{body}");
    let hot_watch = Watch::start(&hot);
    for _ in 0..5 {
        let out = vireo()
            .args(["vm", "--socket"])
            .arg(&socket)
            .arg("reset")
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
    }
    let info = vireo()
        .args(["vm", "--json", "--socket"])
        .arg(&socket)
        .arg("info")
        .output()
        .unwrap();
    let info = String::from_utf8_lossy(&info.stdout);
    assert!(
        info.contains("\"hot\""),
        "the hot-plugged disk is gone: {info}"
    );
    let hot_report = hot_watch.finish();
    assert!(
        hot_report.locked && hot_report.freed == 0 && hot_report.created == 0,
        "the hot-plugged disk was let go: {hot_report:?}"
    );
    check(watch, vm, &image, &before);
    assert!(
        snapshot(&hot) == hot_before,
        "the hot-plugged image changed"
    );
}

/// Rounds of [`a_killed_vmm_lets_go_of_its_disk`]; `VIREO_KILL_ROUNDS`
/// raises it for a longer experiment (150 rounds take about 2 minutes).
fn kill_rounds() -> u32 {
    std::env::var("VIREO_KILL_ROUNDS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(6)
}

/// A VMM killed with io_uring requests in flight is reaped before the
/// kernel has torn its ring down: the requests still hold the image's
/// file, and so its lock, for a few milliseconds (3 of 150 kills here,
/// 4.7 to 7.8 ms). Whoever opens the image next (a new VMM, `img create`)
/// must get it all the same: block's opener waits for a conflicting lock
/// to go before calling the image in use. Each round kills a VMM in the
/// middle of O_DIRECT I/O, opens the image for writing the moment the
/// VMM is reaped, and records how long the old lock lingered.
#[test]
fn a_killed_vmm_lets_go_of_its_disk() {
    use std::io::BufRead;
    let dir = Scratch::new("kill");
    let image = dir.join("busy.img");
    std::fs::File::create(&image)
        .unwrap()
        .set_len(64 << 20)
        .unwrap();
    let file = std::fs::File::open(&image).unwrap();
    let mut lingered = Vec::new();
    let mut held_at_reap = 0;
    let rounds = kill_rounds();
    for round in 0..rounds {
        // Random 4 KiB writes with O_DIRECT go through io_uring: when the
        // VMM dies, some are in the kernel.
        let mut vm = vireo()
            .args(["run", "--kernel"])
            .arg(guest("virtio"))
            .args(["--cmdline", "blk bench-rand-ops=400"])
            .arg("--disk")
            .arg(format!("path={},format=raw,cache=none", image.display()))
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut out = std::io::BufReader::new(vm.stdout.take().unwrap());
        let mut line = String::new();
        while !line.contains("bench: blk rand-read") && !line.contains("virtio-blk: ok") {
            line.clear();
            assert!(
                out.read_line(&mut line).unwrap() > 0,
                "round {round}: no I/O"
            );
        }
        // Somewhere among the reads (the first ~0.5 s) or the writes.
        std::thread::sleep(Duration::from_millis(u64::from(round * 37 % 1000)));
        vm.kill().unwrap();
        vm.wait().unwrap();
        let reaped = Instant::now();
        let held = locked(&file);
        let writable = block::OpenOptions {
            format: Some(block::ImageFormat::Raw),
            ..block::OpenOptions::default()
        };
        let opened = block::open(&image, &writable);
        let took = reaped.elapsed();
        drop(opened.unwrap_or_else(|e| panic!("round {round}, after {took:?}: {e}")));
        if held {
            held_at_reap += 1;
            lingered.push(took);
        }
        eprintln!("round {round}: locked at the reap: {held}; opened after {took:?}");
    }
    lingered.sort();
    eprintln!(
        "{rounds} kills: still locked when reaped {held_at_reap}; those opened after {lingered:?}"
    );
}
