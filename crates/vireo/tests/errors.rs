//! Every way `vireo run` can be given bad input ends with one line naming
//! the problem on stderr, exit code 2, and nothing left running or created.

mod common;

use std::io::Write;
use std::time::Duration;

use common::{guest, run_vireo, run_with_timeout, RunResult, TapNamespace};

const T: Duration = Duration::from_secs(30);

fn assert_usage_error(r: &RunResult, needle: &str) {
    assert_eq!(r.code, Some(2), "{}", r.describe());
    assert!(
        r.stderr.contains(needle),
        "stderr should mention {needle:?}\n{}",
        r.describe()
    );
    assert!(
        r.stdout.is_empty(),
        "nothing should reach the guest console\n{}",
        r.describe()
    );
}

/// Run the hello guest with `extra` flags.
fn run_hello(extra: &[&str]) -> RunResult {
    let hello = guest("hello");
    let mut args = vec!["run", "--kernel", hello.to_str().unwrap()];
    args.extend_from_slice(extra);
    run_vireo(&args, T)
}

fn assert_one_line(r: &RunResult) {
    assert_eq!(
        r.stderr.trim_end().lines().count(),
        1,
        "expected exactly one line on stderr\n{}",
        r.describe()
    );
}

#[test]
fn unknown_flag() {
    let r = run_vireo(&["run", "--kernel", "x", "--frobnicate"], T);
    assert_usage_error(&r, "--frobnicate");
    assert_one_line(&r);
    let r = run_vireo(&["run"], T);
    assert_usage_error(&r, "--kernel");
    assert_one_line(&r);
}

#[test]
fn missing_kernel_file() {
    let r = run_vireo(&["run", "--kernel", "/nonexistent/vmlinux"], T);
    assert_usage_error(&r, "cannot open kernel /nonexistent/vmlinux");
    assert_one_line(&r);
}

#[test]
fn corrupt_kernel() {
    let dir = tempdir();
    let path = dir.join("garbage");
    std::fs::write(&path, vec![0x5au8; 64 * 1024]).unwrap();
    let r = run_vireo(&["run", "--kernel", path.to_str().unwrap()], T);
    let named = format!("kernel {}: not a bzImage or ELF kernel", path.display());
    assert_usage_error(&r, &named);
    assert_one_line(&r);

    // An ELF header that lies about its program headers: the loader's
    // message, with the path it was about.
    let mut elf = std::fs::read(guest("hello")).unwrap();
    elf.truncate(200);
    let path = dir.join("truncated.elf");
    std::fs::write(&path, elf).unwrap();
    let r = run_vireo(&["run", "--kernel", path.to_str().unwrap()], T);
    assert_usage_error(&r, &format!("cannot load kernel {}", path.display()));
    assert_one_line(&r);
}

#[test]
fn initrd_that_does_not_fit() {
    let dir = tempdir();
    let path = dir.join("big.initrd");
    let mut f = std::fs::File::create(&path).unwrap();
    // Sparse 64 MiB file for a 16 MiB guest.
    f.set_len(64 << 20).unwrap();
    f.flush().unwrap();
    let r = run_hello(&["--initrd", path.to_str().unwrap(), "--memory", "16M"]);
    assert_usage_error(
        &r,
        &format!(
            "initrd {}: initrd of 67108864 bytes does not fit",
            path.display()
        ),
    );
    assert_one_line(&r);
}

#[test]
fn bad_input_leaves_no_console_socket_or_log_behind() {
    let dir = tempdir();
    let sock = dir.join("console.sock");
    let spec = format!("unix:{}", sock.display());
    let r = run_vireo(&["run", "--kernel", "/nonexistent/k", "--serial", &spec], T);
    assert_usage_error(&r, "cannot open kernel");
    assert!(!sock.exists(), "socket left behind");

    let log = dir.join("console.log");
    std::fs::write(&log, "kept\n").unwrap();
    let spec = format!("file:{}", log.display());
    let r = run_vireo(&["run", "--kernel", "/nonexistent/k", "--serial", &spec], T);
    assert_usage_error(&r, "cannot open kernel");
    assert_eq!(std::fs::read_to_string(&log).unwrap(), "kept\n");
}

#[test]
fn missing_initrd() {
    let r = run_hello(&["--initrd", "/nonexistent/initrd"]);
    assert_usage_error(&r, "cannot open initrd");
    assert_one_line(&r);
}

#[test]
fn more_memory_than_the_host_has() {
    let r = run_hello(&["--memory", "64T"]);
    assert_usage_error(&r, "more than this host can give");
    assert_one_line(&r);
}

#[test]
fn bad_memory_and_cpu_values() {
    for (flags, needle) in [
        (["--cpus", "0"], "--cpus 0"),
        (["--cpus", "100000"], "--cpus 100000"),
        (["--memory", "lots"], "invalid memory size"),
        (["--memory", "1M"], "too little"),
        (["--cpu-template", "fast"], "unknown CPU template"),
        (["--serial", "telnet:1234"], "serial"),
    ] {
        let r = run_hello(&flags);
        assert_usage_error(&r, needle);
        assert_one_line(&r);
    }
}

#[test]
fn command_line_too_long() {
    let long = "x".repeat(70_000);
    let r = run_hello(&["--cmdline", &long]);
    assert_usage_error(&r, "command line");
    assert_one_line(&r);
}

/// A fresh directory under the cargo target dir for this test's files,
/// removed with what it holds when the test ends.
struct TempDir(std::path::PathBuf);

impl std::ops::Deref for TempDir {
    type Target = std::path::Path;

    fn deref(&self) -> &std::path::Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn tempdir() -> TempDir {
    static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("errors-{}-{n}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    TempDir(dir)
}

fn mkfifo(path: &std::path::Path) {
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: mkfifo reads the NUL-terminated path only.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
}

/// Issue 9 item 7/8: a FIFO where a file is read or written hung `vireo
/// run` forever (and SIGTERM no longer ended it); a directory gave a
/// loader message without the path, or "initrd of 9223372036854775807
/// bytes". Each is one line naming the flag's path and what it is.
#[test]
fn what_is_not_a_regular_file_is_refused_by_name() {
    let dir = tempdir();
    let fifo = dir.join("fifo");
    mkfifo(&fifo);
    let f = fifo.to_str().unwrap();
    let d = dir.to_str().unwrap();
    let hello = guest("hello");
    let h = hello.to_str().unwrap();
    let serial = format!("file:{f}");
    let console = format!("file:{f}");
    let cases: [(&[&str], String); 8] = [
        (
            &["--kernel", f],
            format!("kernel {f} is a FIFO, not a regular file"),
        ),
        (
            &["--kernel", h, "--initrd", f],
            format!("initrd {f} is a FIFO, not a regular file"),
        ),
        (
            &["--kernel", h, "--serial", &serial],
            format!("{f} is a FIFO, not a regular file"),
        ),
        (
            &["--kernel", h, "--console", &console],
            format!("{f} is a FIFO, not a regular file"),
        ),
        (
            &["--kernel", d],
            format!("kernel {d} is a directory, not a regular file"),
        ),
        (
            &["--kernel", h, "--initrd", d],
            format!("initrd {d} is a directory, not a regular file"),
        ),
        (
            &["--kernel", "/dev/zero"],
            "kernel /dev/zero is a character device".to_string(),
        ),
        (
            &["--kernel", h, "--initrd", "/dev/null"],
            "initrd /dev/null is a character device".to_string(),
        ),
    ];
    for (flags, needle) in cases {
        let mut args = vec!["run"];
        args.extend_from_slice(flags);
        // Well under T: the old code never returned.
        let r = run_vireo(&args, Duration::from_secs(10));
        assert_usage_error(&r, &needle);
        assert_one_line(&r);
    }
    assert!(fifo.exists(), "the FIFO is left as it was");
}

#[test]
fn an_empty_initrd_is_named() {
    let dir = tempdir();
    let path = dir.join("empty.initrd");
    std::fs::write(&path, b"").unwrap();
    let r = run_hello(&["--initrd", path.to_str().unwrap()]);
    assert_usage_error(&r, &format!("initrd {} is empty", path.display()));
    assert_one_line(&r);
}

/// A socket path longer than sun_path was accepted, bound through a hard
/// link, and could never be connected to.
#[test]
fn socket_paths_longer_than_a_socket_address_are_refused() {
    let dir = tempdir();
    let long = dir.join("s".repeat(120));
    let l = long.to_str().unwrap();
    let hello = guest("hello");
    let serial = format!("unix:{l}");
    for flags in [
        vec!["run", "--api-socket", l],
        vec![
            "run",
            "--kernel",
            hello.to_str().unwrap(),
            "--serial",
            &serial,
        ],
        vec![
            "run",
            "--kernel",
            hello.to_str().unwrap(),
            "--console",
            &serial,
        ],
    ] {
        let r = run_vireo(&flags, T);
        assert_usage_error(&r, "a unix socket path can have at most 107");
        assert_one_line(&r);
        assert!(!long.exists(), "nothing created at {l}");
    }
}

/// `--memory 4097K` reached KVM and came back as
/// "KVM_SET_USER_MEMORY_REGION failed: Invalid argument".
#[test]
fn memory_that_is_not_whole_pages_is_refused_and_the_size_grammar_is_shared() {
    let r = run_hello(&["--memory", "4097K"]);
    assert_usage_error(&r, "memory size 4097 KiB is not a multiple of 4 KiB");
    assert_one_line(&r);
    // A fraction with a unit is one grammar for every size (was refused
    // here and accepted by `vireo img`).
    for ok in ["4100K", "0.25G", "64MiB"] {
        let r = run_hello(&["--memory", ok]);
        assert_eq!(r.code, Some(0), "--memory {ok}: {}", r.describe());
        assert!(
            r.stdout.contains("hello: vireo guest booted"),
            "{}",
            r.describe()
        );
    }
    let r = run_hello(&["--memory", "1.5"]);
    assert_usage_error(&r, "a fraction needs a unit");
    assert_one_line(&r);
}

/// `--net tap=eth0` said only "Invalid argument": TUNSETIFF's answer both
/// for an interface that is not a TAP and for a TAP opened with the wrong
/// queue setting.
#[test]
fn attaching_to_what_is_not_a_usable_tap_is_explained() {
    // Without root, TapNamespace::new records the skip.
    let Some(net) = TapNamespace::new("e", false) else {
        return;
    };
    let hello = guest("hello");
    let same_tap_two_queues = format!("tap={},queues=2", net.tap);
    for (spec, needle) in [
        ("tap=lo", "cannot attach to 'lo': it is not a TAP device"),
        (
            same_tap_two_queues.as_str(),
            "queues=2 needs a multi-queue TAP",
        ),
    ] {
        let out = run_with_timeout(
            &mut net.vireo(&["--kernel", hello.to_str().unwrap(), "--net", spec]),
            T,
        );
        let r = RunResult {
            code: out.status.code(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        };
        assert_usage_error(&r, needle);
        assert_one_line(&r);
    }
}

/// A distribution's kernel on kvm-pvm is emulated instruction by
/// instruction and printed nothing for minutes; now one warning says why.
/// The project's own guests get no warning, and neither does any kernel
/// on a host whose KVM runs guest kernels natively.
#[test]
fn a_linux_kernel_on_an_emulating_kvm_is_warned_about_once() {
    let dir = tempdir();
    // Enough of a bzImage to be recognised as one: the setup header's
    // magic. The loader then refuses it, which ends the run at once.
    let mut image = vec![0u8; 0x1000];
    image[0x202..0x206].copy_from_slice(b"HdrS");
    let path = dir.join("bzImage");
    std::fs::write(&path, image).unwrap();
    let r = run_vireo(&["run", "--kernel", path.to_str().unwrap()], T);
    assert_eq!(r.code, Some(2), "{}", r.describe());
    let warnings = r.stderr.matches("emulates guest kernel code").count();
    let expected = usize::from(common::is_kvm_pvm());
    assert_eq!(warnings, expected, "{}", r.describe());

    let r = run_hello(&[]);
    assert_eq!(r.code, Some(0), "{}", r.describe());
    assert!(!r.stderr.contains("emulates"), "{}", r.describe());
}

/// Log lines carried ANSI colour codes into files.
#[test]
fn logs_to_a_file_have_no_colour_codes() {
    let hello = guest("hello");
    let out = run_with_timeout(
        common::vireo()
            .args(["run", "--kernel", hello.to_str().unwrap()])
            .env("VIREO_LOG", "debug"),
        T,
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("INFO"), "no log lines to check: {stderr}");
    assert!(
        !stderr.contains('\x1b'),
        "colour codes in a piped log: {stderr:?}"
    );
}

/// A console socket at the API socket's path silently replaced it (the
/// serial backend removed any socket file it found); one path is now one
/// socket, and a socket something listens on is never taken over.
#[test]
fn one_path_cannot_be_two_sockets() {
    let dir = tempdir();
    let sock = dir.join("vm.sock");
    let s = sock.to_str().unwrap();
    let serial = format!("unix:{s}");
    let other_spelling = format!(
        "unix:{}/../{}/vm.sock",
        dir.display(),
        dir.file_name().unwrap().to_str().unwrap()
    );
    let r = run_hello(&["--api-socket", s, "--serial", &serial]);
    assert_usage_error(
        &r,
        &format!("--api-socket {s} and --serial {serial} name the same socket"),
    );
    assert_one_line(&r);
    let r = run_hello(&["--console", &serial, "--console", &other_spelling]);
    assert_usage_error(&r, "name the same socket");
    assert_one_line(&r);
    assert!(!sock.exists());

    // Someone else's live socket.
    let _live = std::os::unix::net::UnixListener::bind(&sock).unwrap();
    let r = run_hello(&["--serial", &serial]);
    assert_usage_error(&r, &format!("{s} is in use: something listens on it"));
    assert_one_line(&r);
    assert!(sock.exists(), "the live socket is left alone");
}

/// `--net fd=N` takes a TAP descriptor the caller left open: a number that
/// is not open, or not a TAP, is refused by name.
#[test]
fn net_fd_that_is_not_an_open_tap() {
    let r = run_hello(&["--net", "fd=99"]);
    assert_usage_error(
        &r,
        "net0: cannot open TAP 'descriptor 99': Bad file descriptor",
    );
    assert_one_line(&r);
    // Not inherited: checked before vireo opens anything, so the number
    // is not yet vireo's own descriptor (/dev/kvm, a socket) to take over.
    let r = run_hello(&["--net", "fd=3"]);
    assert_usage_error(
        &r,
        "net0: cannot open TAP 'descriptor 3': Bad file descriptor",
    );
    assert_one_line(&r);
    let r = run_hello(&["--net", "fd=2"]);
    assert_usage_error(&r, "fd=2 is not a descriptor number of 3 or more");
    let r = run_hello(&["--net", "fd=5,tap=t0"]);
    assert_usage_error(&r, "give tap= or fd=, not both");
    // Descriptor 5 open on /dev/null: open, but no TAP.
    let hello = guest("hello");
    let script = format!(
        "exec \"$0\" run --kernel {} --net fd=5 5</dev/null",
        hello.display()
    );
    let out = run_with_timeout(
        std::process::Command::new("bash")
            .arg("-c")
            .arg(&script)
            .arg(env!("CARGO_BIN_EXE_vireo")),
        T,
    );
    let r = RunResult {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    };
    assert_usage_error(
        &r,
        "net0: cannot attach to 'descriptor 5': it is not a TAP descriptor",
    );
    assert_one_line(&r);
}

/// `--exit-status` is checked before the VM runs: a directory, a symlink
/// or a path whose directory is missing is a usage error then, and is
/// left as it was, rather than a status lost (or written through a
/// symlink) when the run ends.
#[test]
fn exit_status_path_that_cannot_take_the_file_is_refused_at_start() {
    let dir = tempdir();
    let target = dir.join("target");
    std::fs::write(&target, "keep").unwrap();
    let link = dir.join("link");
    std::os::unix::fs::symlink(&target, &link).unwrap();
    let missing = dir.join("none/exit.json");
    for (path, why) in [
        (dir.to_path_buf(), "is a directory"),
        (link.clone(), "is a symbolic link"),
        (missing, "its directory does not exist"),
    ] {
        let r = run_hello(&["--exit-status", path.to_str().unwrap()]);
        assert_usage_error(&r, why);
        assert_one_line(&r);
    }
    assert_eq!(std::fs::read_to_string(&target).unwrap(), "keep");
    assert!(std::fs::symlink_metadata(&link).unwrap().is_symlink());
}
