//! Shared helpers for the end-to-end tests: build the test guests once, run
//! the real `vireo` binary against real `/dev/kvm`, and collect its output.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

/// The `vireo` binary under test.
pub fn vireo() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_vireo"));
    cmd.stdin(Stdio::null());
    cmd
}

/// Directory holding the built test guests (`<name>.elf`), built on first use.
pub fn guests_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join("guests");
        let status = Command::new(root.join("guests/build.sh"))
            .arg(&out)
            .status()
            .expect("run guests/build.sh");
        assert!(status.success(), "guests/build.sh failed");
        out
    })
}

/// Path of test guest `name`.
pub fn guest(name: &str) -> PathBuf {
    guests_dir().join(format!("{name}.elf"))
}

/// Run `cmd` with a deadline; kill it (and fail) if it hangs.
pub fn run_with_timeout(cmd: &mut Command, timeout: Duration) -> Output {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn vireo");
    let start = std::time::Instant::now();
    loop {
        if child.try_wait().expect("wait").is_some() {
            return child.wait_with_output().expect("collect output");
        }
        if start.elapsed() > timeout {
            let _ = child.kill();
            let out = child.wait_with_output().expect("collect output");
            panic!(
                "vireo did not finish within {timeout:?}\nstdout:\n{}\nstderr:\n{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Output of a finished run, as text.
pub struct RunResult {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl RunResult {
    pub fn describe(&self) -> String {
        format!(
            "exit code {:?}\nstdout:\n{}\nstderr:\n{}",
            self.code, self.stdout, self.stderr
        )
    }
}

/// Run `vireo` with `args`, at most `timeout`.
pub fn run_vireo(args: &[&str], timeout: Duration) -> RunResult {
    let out = run_with_timeout(vireo().args(args), timeout);
    RunResult {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// `vireo ARGS` inside network namespace `netns` (where a test's storage
/// server listens), stdin closed, within 90 s.
pub fn vireo_in_netns(netns: &str, args: &[&str]) -> RunResult {
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", netns, env!("CARGO_BIN_EXE_vireo")])
        .args(args)
        .stdin(Stdio::null());
    let out = run_with_timeout(&mut cmd, Duration::from_secs(90));
    RunResult {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Whether this host's KVM is kvm-pvm (guest CPL 0 emulated in software).
pub fn is_kvm_pvm() -> bool {
    Path::new("/sys/module/kvm_pvm").exists()
}

pub fn ip(args: &[&str]) -> Output {
    Command::new("ip").args(args).output().expect("run ip")
}

pub fn ip_ok(args: &[&str]) {
    let out = ip(args);
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A network namespace holding one TAP at 169.254.10.2/16; deleted on drop,
/// which also removes the TAP.
pub struct TapNamespace {
    pub ns: String,
    pub tap: String,
}

impl TapNamespace {
    /// `None` (with a SKIP line) where namespaces cannot be made: not root,
    /// or no iproute2.
    pub fn new(tag: &str, multi_queue: bool) -> Option<Self> {
        let root = is_root();
        if !root || Command::new("ip").arg("-V").output().is_err() {
            testkit::skip("network tests need root and iproute2");
            return None;
        }
        let ns = format!("vt{tag}{}", std::process::id());
        let tap = format!("vt{tag}{}", std::process::id() % 100_000);
        let _ = ip(&["netns", "del", &ns]);
        ip_ok(&["netns", "add", &ns]);
        let me = Self { ns, tap };
        let mut add = vec!["-n", &me.ns, "tuntap", "add", "dev", &me.tap, "mode", "tap"];
        if multi_queue {
            add.push("multi_queue");
        }
        ip_ok(&add);
        ip_ok(&[
            "-n",
            &me.ns,
            "addr",
            "add",
            "169.254.10.2/16",
            "dev",
            &me.tap,
        ]);
        ip_ok(&["-n", &me.ns, "link", "set", &me.tap, "up"]);
        ip_ok(&["-n", &me.ns, "link", "set", "lo", "up"]);
        Some(me)
    }

    /// `vireo run ARGS` inside the namespace.
    pub fn vireo(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args([
            "netns",
            "exec",
            &self.ns,
            env!("CARGO_BIN_EXE_vireo"),
            "run",
        ])
        .args(args)
        .stdin(Stdio::null());
        cmd
    }
}

impl Drop for TapNamespace {
    fn drop(&mut self) {
        let _ = ip(&["netns", "del", &self.ns]);
    }
}

/// Whether the effective UID is 0.
pub fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .map(|l| l.split_whitespace().nth(2) == Some("0"))
        })
        .unwrap_or(false)
}

/// A tmpfs of `kib` KiB mounted at `dir`, unmounted on drop.
pub struct SmallFs(pub PathBuf);

impl SmallFs {
    pub fn mount(dir: PathBuf, kib: u64) -> Self {
        std::fs::create_dir_all(&dir).unwrap();
        let status = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={kib}k"), "vireo-full"])
            .arg(&dir)
            .status()
            .unwrap();
        assert!(status.success(), "mount tmpfs on {}", dir.display());
        Self(dir)
    }

    /// Fill what is left with `filler`.
    pub fn fill(&self) -> PathBuf {
        let filler = self.0.join("filler");
        let mut f = std::fs::File::create(&filler).unwrap();
        let page = [0x5au8; 4096];
        while std::io::Write::write_all(&mut f, &page).is_ok() {}
        filler
    }
}

impl Drop for SmallFs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}
