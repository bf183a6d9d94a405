//! Every way `vireo run` can be given bad input ends with one line naming
//! the problem on stderr, exit code 2, and nothing left running or created.

mod common;

use std::io::Write;
use std::time::Duration;

use common::{guest, run_vireo, RunResult};

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
    assert_usage_error(&r, "kernel");
    assert_one_line(&r);

    // An ELF header that lies about its program headers.
    let mut elf = std::fs::read(guest("hello")).unwrap();
    elf.truncate(200);
    let path = dir.join("truncated.elf");
    std::fs::write(&path, elf).unwrap();
    let r = run_vireo(&["run", "--kernel", path.to_str().unwrap()], T);
    assert_usage_error(&r, "kernel");
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
    assert_usage_error(&r, "initrd");
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

/// A fresh directory under the cargo target dir for this test's files.
fn tempdir() -> std::path::PathBuf {
    static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("errors-{}-{n}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}
