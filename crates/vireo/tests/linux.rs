//! Boots of a stock Linux kernel (Debian's cloud kernel, a bzImage) with the
//! real `vireo` binary.
//!
//! - `linux_decompressor_prints_over_serial` runs everywhere, kvm-pvm
//!   included: the kernel's decompressor runs at CPL 0 in long mode on the
//!   boot_params, page tables and GDT vireo built, parses the command line and
//!   prints over the 16550 at 0x3f8.
//! - `linux_boots_to_init_and_powers_off` boots to `/init` and powers off.
//!   With VT-x/AMD-V it runs vireo here; on kvm-pvm (guest CPL 0 emulated) it
//!   runs the same vireo command inside an L1 Linux under QEMU's emulator
//!   with AMD SVM (`scripts/nested/run.sh`, scenario `linux-test`), and
//!   checks the same console lines and exit code.
//!
//! The kernel and a busybox initramfs come from `scripts/fetch-linux.sh` and
//! `scripts/make-initramfs.sh`, built once under `CARGO_TARGET_TMPDIR`.

mod common;
#[path = "nested/harness.rs"]
mod harness;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use common::{is_kvm_pvm, run_vireo};

/// What `/init` of the initramfs prints first.
const INIT_MARKER: &str = "vireo-linux: init reached";

/// What the decompressor of Debian's kernel prints first. Debian builds with
/// CONFIG_X86_VERBOSE_BOOTUP off, so "Decompressing Linux..." (a
/// `debug_putstr`) is never printed; `warn()` always is, and
/// `choose_random_location()` warns when the command line says `nokaslr`.
const DECOMPRESSOR_LINE: &str = "KASLR disabled: 'nokaslr' on cmdline.";

/// `earlyprintk=serial,ttyS0,115200` is what makes the decompressor's
/// `console_init()` program the UART at 0x3f8 and print through it
/// (arch/x86/boot/early_serial_console.c); `nokaslr` makes it print.
const DECOMPRESSOR_CMDLINE: &str = "earlyprintk=serial,ttyS0,115200 console=ttyS0 nokaslr";

/// Measured on kvm-pvm (CPL 0 emulated): the line appears about 2 s after
/// start. A generous bound, for slow or loaded machines.
const DECOMPRESSOR_DEADLINE: Duration = Duration::from_secs(60);

/// How long vireo may take to stop after SIGTERM (measured: ~20 ms).
const STOP_DEADLINE: Duration = Duration::from_secs(10);

/// A full boot to `/init` and power-off with hardware virtualization.
const BOOT_DEADLINE: Duration = Duration::from_secs(60);

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Run `scripts/<script> <dir>` and fail the test if it fails.
fn run_script(script: &str, dir: &Path) {
    let out = Command::new(repo_root().join("scripts").join(script))
        .arg(dir)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("run scripts/{script}: {e}"));
    assert!(
        out.status.success(),
        "scripts/{script} failed ({})\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    eprint!("{}", String::from_utf8_lossy(&out.stdout));
}

/// Directory with the kernel (`vmlinuz`), fetched once per test binary.
fn linux_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("linux");
        run_script("fetch-linux.sh", &dir);
        dir
    })
}

fn kernel() -> PathBuf {
    let path = linux_dir().join("vmlinuz");
    assert!(path.is_file(), "{} missing", path.display());
    path
}

/// The busybox initramfs, built once per test binary.
fn initramfs() -> PathBuf {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("linux");
        run_script("make-initramfs.sh", &dir);
        let path = dir.join("initramfs.cpio.gz");
        assert!(path.is_file(), "{} missing", path.display());
        path
    })
    .clone()
}

/// Why a direct Linux boot (no nesting) cannot be tested on this host, if it
/// cannot. kvm-pvm is handled before: it boots Linux through nesting.
fn full_boot_unsupported() -> Option<String> {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let hw_virt = cpuinfo
        .lines()
        .filter(|l| l.starts_with("flags"))
        .any(|l| l.split_whitespace().any(|f| f == "vmx" || f == "svm"));
    if !hw_virt {
        return Some(
            "the CPU shows no hardware virtualization (no vmx/svm flag in /proc/cpuinfo)".into(),
        );
    }
    if !Path::new("/dev/kvm").exists() {
        return Some("/dev/kvm does not exist".into());
    }
    None
}

#[test]
fn linux_boots_to_init_and_powers_off() {
    if is_kvm_pvm() {
        // The same boot, one level down: l1-init.sh's `linux-test` runs
        // `vireo run --kernel <this kernel> --initrd <this initramfs>
        // --memory 512M --cpus 2` in L1.
        let run = match harness::run("linux-test", &["linux-test"]) {
            Ok(run) => run,
            Err(why) => {
                testkit::skip(&format!("on kvm-pvm a Linux boot needs nesting, and {why}"));
                return;
            }
        };
        let s = run.scenario("linux-test");
        assert_booted(s.rc.as_deref() == Some("0"), &s.l2_console(), &s.describe());
        return;
    }
    if let Some(why) = full_boot_unsupported() {
        testkit::skip(&why);
        return;
    }
    let kernel = kernel();
    let initrd = initramfs();
    let r = run_vireo(
        &[
            "run",
            "--kernel",
            kernel.to_str().unwrap(),
            "--initrd",
            initrd.to_str().unwrap(),
            "--memory",
            "512M",
            "--cpus",
            "2",
        ],
        BOOT_DEADLINE,
    );
    assert_booted(r.code == Some(0), &r.stdout, &r.describe());
}

/// What a boot of the busybox initramfs with 512 MiB and 2 vCPUs shows:
/// vireo exited 0, `/init` ran and saw 2 CPUs and a plausible MemTotal.
fn assert_booted(exited_0: bool, console: &str, describe: &str) {
    assert!(exited_0, "vireo should exit 0\n{describe}");
    assert!(console.contains(INIT_MARKER), "{describe}");
    assert!(
        console.contains("vireo-linux: cpus 2"),
        "the guest should see 2 CPUs\n{describe}"
    );
    // MemTotal is what is left of 512 MiB after the kernel's own reservations.
    let mem_kib: u64 = console
        .lines()
        .find_map(|l| l.trim_end().strip_prefix("vireo-linux: MemTotal: "))
        .and_then(|v| v.strip_suffix(" kB"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no MemTotal line\n{describe}"));
    assert!(
        (400 * 1024..=512 * 1024).contains(&mem_kib),
        "MemTotal {mem_kib} kB is not plausible for a 512 MiB guest\n{describe}"
    );
}

/// Everything a child wrote to one pipe so far, filled by a reader thread.
struct Captured {
    buf: Arc<Mutex<Vec<u8>>>,
    thread: JoinHandle<()>,
}

impl Captured {
    fn new(mut pipe: impl Read + Send + 'static) -> Self {
        let buf = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&buf);
        let thread = std::thread::spawn(move || {
            let mut chunk = [0u8; 4096];
            loop {
                match pipe.read(&mut chunk) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => sink.lock().unwrap().extend_from_slice(&chunk[..n]),
                }
            }
        });
        Captured { buf, thread }
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.buf.lock().unwrap()).into_owned()
    }

    /// Wait for EOF (the child has exited), then return everything.
    fn finish(self) -> String {
        self.thread.join().unwrap();
        String::from_utf8_lossy(&self.buf.lock().unwrap()).into_owned()
    }
}

/// Wait for `child` to exit, at most `timeout`.
fn wait_timeout(child: &mut Child, timeout: Duration) -> Option<std::process::ExitStatus> {
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().expect("wait for vireo") {
            return Some(status);
        }
        if start.elapsed() > timeout {
            return None;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn linux_decompressor_prints_over_serial() {
    let kernel = kernel();
    let start = Instant::now();
    let mut child = common::vireo()
        .args(["run", "--kernel"])
        .arg(&kernel)
        .args(["--memory", "512M", "--cmdline", DECOMPRESSOR_CMDLINE])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn vireo");
    let stdout = Captured::new(child.stdout.take().unwrap());
    let stderr = Captured::new(child.stderr.take().unwrap());

    // Poll the output until the line shows up, vireo exits, or time runs out.
    let outcome = loop {
        if stdout.text().contains(DECOMPRESSOR_LINE) {
            break Ok(start.elapsed());
        }
        if let Some(status) = child.try_wait().expect("wait for vireo") {
            break Err(format!(
                "vireo exited ({status}) before the decompressor printed"
            ));
        }
        if start.elapsed() > DECOMPRESSOR_DEADLINE {
            let _ = child.kill();
            break Err(format!(
                "no decompressor output within {DECOMPRESSOR_DEADLINE:?}; vireo killed"
            ));
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let elapsed = match outcome {
        Ok(elapsed) => elapsed,
        Err(why) => {
            let _ = child.wait();
            panic!(
                "{why}\nstdout:\n{}\nstderr:\n{}",
                stdout.finish(),
                stderr.finish()
            );
        }
    };
    eprintln!("decompressor line after {elapsed:?}");

    // SIGTERM is an orderly stop: vireo exits promptly, with status 0.
    let pid = libc::pid_t::try_from(child.id()).unwrap();
    // SAFETY: plain kill(2) on our own child, which has not been reaped yet.
    let rc = unsafe { libc::kill(pid, libc::SIGTERM) };
    assert_eq!(rc, 0, "kill(SIGTERM)");
    let stopped_at = Instant::now();
    let status = wait_timeout(&mut child, STOP_DEADLINE);
    if status.is_none() {
        let _ = child.kill();
        let _ = child.wait();
    }
    let out = stdout.finish();
    let err = stderr.finish();
    let status = status.unwrap_or_else(|| {
        panic!("vireo did not stop within {STOP_DEADLINE:?} of SIGTERM\nstdout:\n{out}\nstderr:\n{err}")
    });
    eprintln!("vireo stopped {:?} after SIGTERM", stopped_at.elapsed());
    assert_eq!(
        status.code(),
        Some(0),
        "orderly stop on SIGTERM should exit 0 ({status})\nstdout:\n{out}\nstderr:\n{err}"
    );
    // The decompressor frames its warning in blank lines, "\n" sent as "\r\n".
    assert!(
        out.contains(&format!("\r\n{DECOMPRESSOR_LINE}\r\n")),
        "stdout:\n{out:?}\nstderr:\n{err}"
    );
}
