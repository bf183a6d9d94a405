//! Seccomp confinement end to end: every thread of a running VMM is
//! filtered, and a thread that makes a forbidden system call stops the
//! VMM with a line naming the thread and the call, recorded in the exit
//! status file, and reported by the daemon as a crashed domain while its
//! other domains run on.
//!
//! The forbidden calls come from the test-only fault hook of debug builds
//! (`VIREO_TEST_SECCOMP_FAULT=KIND`: a thread of that kind calls getppid,
//! which no filter allows, just after installing its filter).

mod common;
mod daemon_harness;

use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use common::{guest, run_with_timeout, vireo, RunResult};
use daemon_harness::{domain_xml, have_kvm, Daemon};

const TIMEOUT: Duration = Duration::from_secs(60);

/// Exit status of a VMM stopped by its filter (`confine::EXIT_SECCOMP`).
const EXIT_SECCOMP: i32 = 3;

fn scratch(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("seccomp")
        .join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The virtio guest writing to a disk: the virtio-blk worker starts when
/// the guest's driver activates the device.
fn run_blk_guest(dir: &Path, fault: Option<&str>, mode: &str) -> (RunResult, PathBuf) {
    let disk = dir.join("disk.img");
    std::fs::File::create(&disk)
        .unwrap()
        .set_len(8 << 20)
        .unwrap();
    let exit = dir.join("exit.json");
    let kernel = guest("virtio");
    let mut cmd = vireo();
    cmd.args(["run", "--kernel"])
        .arg(&kernel)
        .arg("--disk")
        .arg(format!("path={},format=raw", disk.display()))
        .args([
            "--cmdline",
            "blk blk-first=3 blk-count=4 blk-stride=5 blk-read=0",
        ])
        .arg("--exit-status")
        .arg(&exit)
        .arg(format!("--seccomp={mode}"));
    if let Some(kind) = fault {
        cmd.env("VIREO_TEST_SECCOMP_FAULT", kind);
    }
    let out = run_with_timeout(&mut cmd, TIMEOUT);
    let r = RunResult {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    };
    (r, exit)
}

fn exit_status(path: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn assert_stopped_by(thread: &str, dir: &Path, fault: &str) {
    let (r, exit) = run_blk_guest(dir, Some(fault), "kill");
    let call = format!("thread \"{thread}\" made forbidden system call 110 (getppid)");
    assert_eq!(r.code, Some(EXIT_SECCOMP), "{}", r.describe());
    assert!(
        r.stderr
            .contains(&format!("vireo: seccomp: {call}; stopping\n")),
        "{}",
        r.describe()
    );
    assert!(!r.stdout.contains("virtio: done"), "{}", r.describe());
    let status = exit_status(&exit);
    assert_eq!(status["reason"], "seccomp", "{status}");
    assert_eq!(status["detail"], call.as_str(), "{status}");
}

#[test]
fn a_forbidden_call_on_a_vcpu_stops_the_vm_naming_thread_and_call() {
    if !have_kvm() {
        testkit::skip("no /dev/kvm");
        return;
    }
    assert_stopped_by("vcpu0", &scratch("vcpu"), "vcpu");
}

#[test]
fn a_forbidden_call_on_a_device_worker_stops_the_vm_naming_thread_and_call() {
    if !have_kvm() {
        testkit::skip("no /dev/kvm");
        return;
    }
    assert_stopped_by("virtio-blk", &scratch("virtio-blk"), "virtio-blk");
}

#[test]
fn log_mode_lets_a_forbidden_call_through() {
    if !have_kvm() {
        testkit::skip("no /dev/kvm");
        return;
    }
    let dir = scratch("mode-log");
    let (r, exit) = run_blk_guest(&dir, Some("virtio-blk"), "log");
    assert_eq!(r.code, Some(0), "{}", r.describe());
    assert!(r.stdout.contains("virtio: done"), "{}", r.describe());
    assert!(!r.stderr.contains("seccomp"), "{}", r.describe());
    assert_eq!(exit_status(&exit)["reason"], "poweroff");
}

/// `Seccomp:` of every thread of `pid`, by thread name.
fn seccomp_of_threads(pid: u32) -> Vec<(String, String)> {
    let mut threads = Vec::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
        let task = task.unwrap().path();
        let (Ok(comm), Ok(status)) = (
            std::fs::read_to_string(task.join("comm")),
            std::fs::read_to_string(task.join("status")),
        ) else {
            continue; // the thread just ended
        };
        let mode = status
            .lines()
            .find_map(|l| l.strip_prefix("Seccomp:"))
            .unwrap_or_default()
            .trim()
            .to_string();
        threads.push((comm.trim().to_string(), mode));
    }
    threads.sort();
    threads
}

struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A VM with two vCPUs, a disk and the API, running the idle guest under
/// `--seccomp=MODE`: its threads' `Seccomp:` once it is up and has served
/// an API request (so a connection thread has existed too).
fn threads_of_a_running_vm(mode: &str) -> Vec<(String, String)> {
    let dir = scratch(&format!("running-{mode}"));
    let socket = dir.join("api.sock");
    let disk = dir.join("disk.img");
    std::fs::File::create(&disk)
        .unwrap()
        .set_len(1 << 20)
        .unwrap();
    let vm = Running(
        vireo()
            .args(["run", "--cpus", "2", "--kernel"])
            .arg(guest("idle"))
            .arg("--disk")
            .arg(format!("path={},format=raw", disk.display()))
            .arg("--api-socket")
            .arg(&socket)
            .arg(format!("--seccomp={mode}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let pid = vm.0.id();
    let deadline = Instant::now() + TIMEOUT;
    let mut threads = loop {
        let threads = seccomp_of_threads(pid);
        let names: Vec<&str> = threads.iter().map(|(n, _)| n.as_str()).collect();
        if socket.exists() && names.contains(&"vcpu0") && names.contains(&"vcpu1") {
            break threads;
        }
        assert!(
            Instant::now() < deadline,
            "the VM did not come up: {names:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    let out = run_with_timeout(
        vireo().args(["vm", "--socket"]).arg(&socket).arg("info"),
        TIMEOUT,
    );
    assert!(out.status.success(), "{out:?}");
    threads.extend(seccomp_of_threads(pid));
    threads
}

#[test]
fn every_thread_of_a_running_vmm_is_filtered() {
    if !have_kvm() {
        testkit::skip("no /dev/kvm");
        return;
    }
    for mode in ["kill", "log"] {
        let threads = threads_of_a_running_vm(mode);
        for name in ["vireo", "vireo-launcher", "vireo-api", "vcpu0", "vcpu1"] {
            assert!(
                threads.iter().any(|(n, _)| n == name),
                "{mode}: no {name} thread in {threads:?}"
            );
        }
        for (name, seccomp) in &threads {
            assert_eq!(
                seccomp, "2",
                "{mode}: thread {name} is not filtered: {threads:?}"
            );
        }
    }
    let threads = threads_of_a_running_vm("off");
    assert!(
        threads.iter().all(|(_, seccomp)| seccomp == "0"),
        "off: {threads:?}"
    );
}

#[test]
fn the_daemon_reports_a_vmm_stopped_by_its_filter_as_crashed_and_runs_on() {
    if !have_kvm() {
        testkit::skip("no /dev/kvm");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    // Every VMM of this daemon faults in its virtio-blk worker: the
    // domain with a disk its guest drives stops, the idle one never
    // starts that worker.
    let d = Daemon::start_with(dir.path(), &[("VIREO_TEST_SECCOMP_FAULT", "virtio-blk")]);
    d.define(&domain_xml("calm", "idle", ""));
    let img = dir.path().join("disk.img");
    std::fs::File::create(&img)
        .unwrap()
        .set_len(8 << 20)
        .unwrap();
    let disk = format!(
        "<disk type='file' device='disk'><driver name='qemu' type='raw'/>\
         <source file='{}'/><target dev='vda' bus='virtio'/></disk>",
        img.display()
    );
    let faulty = domain_xml("faulty", "virtio", "")
        .replace(
            "</kernel>",
            "</kernel><cmdline>blk blk-first=3 blk-count=4 blk-stride=5 blk-read=0 serve-ms=60000</cmdline>",
        )
        .replace("<devices>", &format!("<devices>{disk}"));
    d.define(&faulty);
    d.ok("POST", "/domains/calm/start", None);
    let calm_pid = d.ok("GET", "/domains/calm", None)["pid"].clone();
    d.ok("POST", "/domains/faulty/start", None);
    let (state, reason) = d.wait_state("faulty", "shut_off", TIMEOUT);
    assert_eq!((state.as_str(), reason.as_str()), ("shut_off", "crashed"));
    let log = d.log_text();
    assert!(
        log.contains("seccomp: thread \\\"virtio-blk\\\" made forbidden system call 110 (getppid)")
            || log.contains(
                "seccomp: thread \"virtio-blk\" made forbidden system call 110 (getppid)"
            ),
        "the daemon's log does not say why:\n{log}"
    );
    // The other domain, and the daemon, go on.
    assert_eq!(d.state("calm"), ("running".into(), "booted".into()));
    assert_eq!(d.ok("GET", "/domains/calm", None)["pid"], calm_pid);
    d.ok("POST", "/domains/calm/destroy", None);
    // The faulty domain can be started again (and stops again the same way).
    d.ok("POST", "/domains/faulty/start", None);
    d.wait_state("faulty", "shut_off", TIMEOUT);
}

/// The kernel's log entries (`audit: type=1326`) for calls the filters of
/// process `pid` let through in log mode: `(thread, system call number)`.
/// None when the kernel log cannot be read here.
fn logged_calls(pid: u32) -> Option<Vec<(String, String)>> {
    let out = std::process::Command::new("dmesg").output().ok()?;
    if !out.status.success() {
        return None;
    }
    let field = |line: &str, key: &str| {
        line.split_whitespace()
            .find_map(|w| w.strip_prefix(key))
            .map(|v| v.trim_matches('"').to_string())
    };
    Some(
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| l.contains("type=1326"))
            .filter(|l| field(l, "pid=").as_deref() == Some(pid.to_string().as_str()))
            .map(|l| {
                (
                    field(l, "comm=").unwrap_or_default(),
                    field(l, "syscall=").unwrap_or_default(),
                )
            })
            .collect(),
    )
}

/// The allow lists are checked against what the threads really do: a run
/// that drives every device the test guest knows (console, rng, two disks
/// on both I/O engines, MSI-X, device resets), with the API up, in log
/// mode, leaves no kernel log entry of a call a filter lacks. (The net
/// card and the kill-mode runs of every other end-to-end test cover the
/// rest.)
#[test]
fn a_run_driving_every_device_needs_no_call_its_filters_lack() {
    if !have_kvm() {
        testkit::skip("no /dev/kvm");
        return;
    }
    if logged_calls(std::process::id()).is_none() {
        testkit::skip("the kernel log (dmesg) cannot be read here");
        return;
    }
    let dir = scratch("audit");
    let (a, b) = (dir.join("a.img"), dir.join("b.img"));
    for disk in [&a, &b] {
        std::fs::File::create(disk)
            .unwrap()
            .set_len(8 << 20)
            .unwrap();
    }
    let mut vm = vireo();
    vm.args(["run", "--cpus", "2", "--rng", "--seccomp=log", "--kernel"])
        .arg(guest("virtio"))
        .arg("--disk")
        .arg(format!("path={},format=raw", a.display()))
        .arg("--disk")
        .arg(format!("path={},format=raw,cache=none", b.display()))
        .arg("--console")
        .arg(format!("file:{}", dir.join("console.txt").display()))
        .arg("--api-socket")
        .arg(dir.join("api.sock"))
        .args([
            "--cmdline",
            "reinit msix blk-first=3 blk-count=4 blk-stride=5 blk-read=0",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = vm.spawn().unwrap();
    let pid = child.id();
    let deadline = Instant::now() + TIMEOUT;
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("the VM did not finish within {TIMEOUT:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("virtio: done") && !stdout.contains("FAIL"),
        "{out:?}"
    );
    for kind in ["virtio-console: ok", "virtio-rng: ok", "virtio-blk: ok"] {
        assert!(stdout.contains(kind), "no {kind}:\n{stdout}");
    }
    let calls = logged_calls(pid).unwrap_or_default();
    assert!(
        calls.is_empty(),
        "calls the filters lack (thread, number): {calls:?}"
    );
}
