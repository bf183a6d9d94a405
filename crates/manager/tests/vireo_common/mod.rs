//! Shared by the Vireo driver's end-to-end tests: the VMM binary, the
//! test guests, run directories, and VMMs left as a previous daemon
//! leaves them.

#![allow(dead_code)]

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use manager::driver::process;
use manager::driver::vireo::VireoDriver;
use manager::driver::{Driver, ExitReason, Instance, RunRecord, StartContext};
use virtxml::Domain;

pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The VMM binary: the workspace's debug build of `vireo`.
pub fn vmm() -> PathBuf {
    let path = root().join("target/debug/vireo");
    assert!(
        path.exists(),
        "{} is missing: build it with `cargo build -p vireo`",
        path.display()
    );
    path
}

/// Test guest `name`, building the guests once if they are missing.
pub fn guest(name: &str) -> String {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    let dir = BUILT.get_or_init(|| {
        let dir = root().join("target/guests");
        if !dir.join("idle.elf").exists() || !dir.join("exit.elf").exists() {
            let status = Command::new(root().join("guests/build.sh"))
                .arg(&dir)
                .status()
                .expect("run guests/build.sh");
            assert!(status.success(), "guests/build.sh failed");
        }
        dir
    });
    let path = dir.join(format!("{name}.elf"));
    std::fs::canonicalize(&path)
        .unwrap_or(path)
        .display()
        .to_string()
}

pub fn driver() -> VireoDriver {
    VireoDriver::new(vmm())
}

/// A run directory and log, removed with it.
pub struct Run {
    pub dir: tempfile::TempDir,
}

impl Run {
    pub fn new() -> Run {
        Run {
            dir: tempfile::Builder::new()
                .prefix("vd")
                .tempdir_in("/tmp")
                .unwrap(),
        }
    }

    pub fn ctx(&self, paused: bool) -> StartContext {
        StartContext {
            run_dir: self.dir.path().to_path_buf(),
            log_path: self.dir.path().join("vmm.log"),
            paused,
            cgroup_procs: Vec::new(),
            disk_secrets: Default::default(),
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("vmm.log")).unwrap_or_default()
    }
}

pub fn domain(name: &str, kernel: &str, extra: &str) -> Domain {
    let xml = format!(
        "<domain type='kvm'><name>{name}</name><memory unit='MiB'>32</memory>\
         <os><type>hvm</type><kernel>{kernel}</kernel></os>{extra}</domain>"
    );
    Domain::parse(&xml).expect("test XML parses").domain
}

pub fn start(name: &str, kernel: &str, extra: &str, run: &Run, paused: bool) -> Box<dyn Instance> {
    let d = domain(name, kernel, extra);
    driver()
        .start(&d, 7, &run.ctx(paused))
        .unwrap_or_else(|e| panic!("start {name}: {e}; log: {}", run.log()))
}

/// wait_exit on a thread, bounded: a hang fails the test instead.
pub fn wait_exit_within(instance: &dyn Instance, limit: Duration) -> ExitReason {
    std::thread::scope(|s| {
        let waiter = s.spawn(|| instance.wait_exit());
        let deadline = Instant::now() + limit;
        while !waiter.is_finished() {
            assert!(
                Instant::now() < deadline,
                "wait_exit did not return within {limit:?}"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        waiter.join().unwrap()
    })
}

/// Reads from the console until `needle` shows up (or 10 s pass).
pub fn console_until(instance: &dyn Instance, needle: &str) -> String {
    let mut stream = instance.console().expect("console");
    stream
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    while Instant::now() < deadline {
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => seen.extend_from_slice(&buf[..n]),
            Err(_) => {}
        }
        if String::from_utf8_lossy(&seen).contains(needle) {
            break;
        }
    }
    String::from_utf8_lossy(&seen).into_owned()
}

pub fn gone(pid: u32, start_time: u64) -> bool {
    !process::is_alive(pid, start_time)
}

/// `ip ARGS` from the calling thread (so in its network namespace).
pub fn ip(args: &[&str]) -> (bool, String) {
    match Command::new("ip").args(args).output() {
        Ok(o) => (
            o.status.success(),
            String::from_utf8_lossy(&o.stdout).into_owned() + &String::from_utf8_lossy(&o.stderr),
        ),
        Err(e) => (false, e.to_string()),
    }
}

/// Starts `vireo run ARGS` as a previous daemon would have left it: not
/// this process's child (the shell that started it has exited), in a
/// session of its own. Returns its pid.
///
/// This test process is made a child subreaper first: this host's init
/// does not reap, so an orphan reparented to it would stay a zombie for
/// good; reparented to the test instead, [`reap_orphan`] collects it.
pub fn spawn_orphan(args: &[String]) -> u32 {
    static SUBREAPER: OnceLock<()> = OnceLock::new();
    SUBREAPER.get_or_init(|| {
        // SAFETY: prctl(PR_SET_CHILD_SUBREAPER, 1) only sets a flag of
        // this process; no memory is passed.
        let ret = unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
        assert_eq!(ret, 0, "PR_SET_CHILD_SUBREAPER");
    });
    let out = Command::new("sh")
        .arg("-c")
        .arg("setsid \"$0\" \"$@\" </dev/null >/dev/null 2>&1 & echo $!")
        .arg(vmm())
        .args(args)
        .output()
        .expect("run sh");
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .expect("sh printed the pid")
}

/// Collects an orphan that has ended (see [`spawn_orphan`]); the driver
/// never does, since for it the VMM is nobody's child.
pub fn reap_orphan(pid: u32) {
    let pid = libc::pid_t::try_from(pid).unwrap();
    // SAFETY: waitpid on a pid that is this process's (adopted) child; a
    // null status pointer is allowed.
    unsafe { libc::waitpid(pid, std::ptr::null_mut(), libc::WNOHANG) };
}

/// A record for an orphaned VMM, as the daemon would have persisted it.
pub fn orphan_record(name: &str, kernel: &str, extra: &str, run: &Run, paused: bool) -> RunRecord {
    let d = domain(name, kernel, extra);
    let dir = run.dir.path();
    let mut args: Vec<String> = vec![
        "run".into(),
        "--kernel".into(),
        kernel.into(),
        "--memory".into(),
        "32M".into(),
        "--serial".into(),
        format!("unix:{}", dir.join("console.sock").display()),
        "--exit-status".into(),
        dir.join("exit.json").display().to_string(),
        "--api-socket".into(),
        dir.join("api.sock").display().to_string(),
    ];
    if paused {
        args.push("--paused".into());
    }
    let pid = spawn_orphan(&args);
    let deadline = Instant::now() + Duration::from_secs(5);
    // Up, or (a guest that powers off at once) already gone.
    while !dir.join("api.sock").exists() && !dir.join("exit.json").exists() {
        assert!(Instant::now() < deadline, "the orphan's API never came up");
        std::thread::sleep(Duration::from_millis(5));
    }
    // A zombie still has its stat line; one reaped already gets a start
    // time no live process can have.
    let start_time = process::start_time(pid).unwrap_or(u64::MAX);
    RunRecord {
        driver: "vireo".into(),
        pid,
        start_time,
        id: 3,
        xml: d.to_xml(),
        extra: serde_json::json!({
            "api_socket": dir.join("api.sock"),
            "console_socket": dir.join("console.sock"),
            "exit_status": dir.join("exit.json"),
        }),
    }
}
