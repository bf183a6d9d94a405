//! How a running VM ends: guest reset (with and without `--reboot`), host
//! signals, and the serial backends other than stdout.

mod common;

use std::io::{BufRead, BufReader, Read};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::{Child, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::{guest, run_vireo, vireo};

const T: Duration = Duration::from_secs(30);

fn spawn(args: &[&str]) -> Child {
    vireo()
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn vireo")
}

/// Lines of a reader, delivered through a channel so tests can wait with a
/// deadline.
fn line_channel<R: Read + Send + 'static>(r: R) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(r).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// Wait until a line containing `needle` arrives; return all lines seen.
fn wait_for_line(rx: &mpsc::Receiver<String>, needle: &str, timeout: Duration) -> Vec<String> {
    let deadline = Instant::now() + timeout;
    let mut seen = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) => {
                let hit = line.contains(needle);
                seen.push(line);
                if hit {
                    return seen;
                }
            }
            Err(_) => panic!("no line containing {needle:?} within {timeout:?}; saw {seen:?}"),
        }
    }
}

/// Wait for `child` to exit within `timeout`; kill it and fail otherwise.
fn wait_exit(child: &mut Child, timeout: Duration) -> i32 {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status.code().expect("exited by signal");
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("vireo did not exit within {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn signal(child: &Child, sig: i32) {
    let pid = i32::try_from(child.id()).unwrap();
    // SAFETY: plain kill(2) on our own child's pid.
    assert_eq!(unsafe { libc::kill(pid, sig) }, 0);
}

fn stop_by_signal(sig: i32) {
    let idle = guest("idle");
    let mut child = spawn(&["run", "--kernel", idle.to_str().unwrap(), "--cpus", "2"]);
    let out = line_channel(child.stdout.take().unwrap());
    wait_for_line(&out, "idle: waiting", T);
    signal(&child, sig);
    assert_eq!(wait_exit(&mut child, Duration::from_secs(5)), 0);
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert!(
        err.contains(&format!("terminating on signal {sig}")),
        "stderr: {err}"
    );
}

#[test]
fn sigterm_stops_the_vm() {
    stop_by_signal(libc::SIGTERM);
}

#[test]
fn sigint_stops_the_vm() {
    stop_by_signal(libc::SIGINT);
}

#[test]
fn guest_reset_ends_the_run() {
    let reset = guest("reset");
    let k = reset.to_str().unwrap();
    let r = run_vireo(&["run", "--kernel", k], T);
    assert_eq!(r.code, Some(0), "{}", r.describe());
    assert_eq!(
        r.stdout,
        "reset: booted, resetting via acpi\n",
        "{}",
        r.describe()
    );
    let r = run_vireo(&["run", "--kernel", k, "--cmdline", "i8042"], T);
    assert_eq!(r.code, Some(0), "{}", r.describe());
    assert_eq!(
        r.stdout,
        "reset: booted, resetting via i8042\n",
        "{}",
        r.describe()
    );
}

#[test]
fn reboot_flag_boots_again_after_reset() {
    let reset = guest("reset");
    let mut child = spawn(&["run", "--kernel", reset.to_str().unwrap(), "--reboot"]);
    let out = line_channel(child.stdout.take().unwrap());
    let mut boots = 0;
    while boots < 3 {
        wait_for_line(&out, "reset: booted", T);
        boots += 1;
    }
    signal(&child, libc::SIGTERM);
    assert_eq!(wait_exit(&mut child, Duration::from_secs(5)), 0);
}

fn scratch(name: &str) -> std::path::PathBuf {
    let dir =
        Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("lifecycle-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

#[test]
fn serial_to_file_and_off() {
    let hello = guest("hello");
    let h = hello.to_str().unwrap();
    let path = scratch("console.log");
    std::fs::write(&path, "stale contents\n").unwrap();
    let spec = format!("file:{}", path.display());
    let r = run_vireo(&["run", "--kernel", h, "--serial", &spec], T);
    assert_eq!(r.code, Some(0), "{}", r.describe());
    assert!(r.stdout.is_empty(), "{}", r.describe());
    let log = std::fs::read_to_string(&path).unwrap();
    assert!(log.starts_with("hello: vireo guest booted\n"), "{log}");

    let r = run_vireo(&["run", "--kernel", h, "--serial", "off"], T);
    assert_eq!(r.code, Some(0), "{}", r.describe());
    assert!(r.stdout.is_empty(), "{}", r.describe());
}

#[test]
fn serial_on_a_unix_socket() {
    let path = scratch("console.sock");
    let spec = format!("unix:{}", path.display());
    let reset = guest("reset");
    // The guest resets and boots again and again, printing each time, so a
    // client that connects late still sees output.
    let mut child = spawn(&[
        "run",
        "--kernel",
        reset.to_str().unwrap(),
        "--reboot",
        "--serial",
        &spec,
    ]);
    let deadline = Instant::now() + T;
    let stream = loop {
        if let Ok(s) = UnixStream::connect(&path) {
            break s;
        }
        assert!(Instant::now() < deadline, "socket never appeared");
        std::thread::sleep(Duration::from_millis(10));
    };
    let lines = line_channel(stream);
    wait_for_line(&lines, "reset: booted, resetting via acpi", T);
    signal(&child, libc::SIGTERM);
    assert_eq!(wait_exit(&mut child, Duration::from_secs(5)), 0);
    assert!(!path.exists(), "the socket file is removed at exit");
}

#[test]
fn serial_on_a_pty() {
    let reset = guest("reset");
    let mut child = spawn(&[
        "run",
        "--kernel",
        reset.to_str().unwrap(),
        "--reboot",
        "--serial",
        "pty",
    ]);
    let err = line_channel(child.stderr.take().unwrap());
    let seen = wait_for_line(&err, "serial console on ", T);
    let pty = seen
        .last()
        .unwrap()
        .split("serial console on ")
        .nth(1)
        .unwrap()
        .trim()
        .to_string();
    let f = std::fs::File::open(&pty).unwrap();
    let lines = line_channel(f);
    wait_for_line(&lines, "reset: booted", T);
    signal(&child, libc::SIGTERM);
    assert_eq!(wait_exit(&mut child, Duration::from_secs(5)), 0);
}
