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
fn sighup_stops_the_vm() {
    stop_by_signal(libc::SIGHUP);
}

/// SIGHUP (a closed terminal or SSH session) killed vireo outright and
/// left the API socket behind; now it is the same orderly stop as SIGTERM.
#[test]
fn sighup_removes_the_api_socket() {
    let dir = Scratch::new();
    let sock = dir.join("api.sock");
    let idle = guest("idle");
    let mut child = spawn(&[
        "run",
        "--kernel",
        idle.to_str().unwrap(),
        "--api-socket",
        sock.to_str().unwrap(),
    ]);
    let out = line_channel(child.stdout.take().unwrap());
    wait_for_line(&out, "idle: waiting", T);
    assert!(sock.exists(), "the API socket is there while the VM runs");
    signal(&child, libc::SIGHUP);
    assert_eq!(wait_exit(&mut child, Duration::from_secs(5)), 0);
    assert!(!sock.exists(), "the API socket is removed on SIGHUP");
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
    let mut child = spawn_rebooting("stdout");
    let out = line_channel(child.stdout.take().unwrap());
    let mut boots = 0;
    while boots < 3 {
        wait_for_line(&out, "reset: booted", T);
        boots += 1;
    }
    signal(&child, libc::SIGTERM);
    assert_eq!(wait_exit(&mut child, Duration::from_secs(5)), 0);
}

/// A directory for one test's files, removed with them when it ends.
struct Scratch(std::path::PathBuf);

impl Scratch {
    fn new() -> Self {
        static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("lifecycle-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }

    fn join(&self, name: &str) -> std::path::PathBuf {
        self.0.join(name)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn serial_to_file_and_off() {
    let hello = guest("hello");
    let h = hello.to_str().unwrap();
    let dir = Scratch::new();
    let path = dir.join("console.log");
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

/// The reset guest under `--reboot`: it prints a line on every boot, forever.
fn spawn_rebooting(serial: &str) -> Child {
    let reset = guest("reset");
    spawn(&[
        "run",
        "--kernel",
        reset.to_str().unwrap(),
        "--reboot",
        "--serial",
        serial,
    ])
}

#[test]
fn serial_on_a_unix_socket() {
    let dir = Scratch::new();
    let path = dir.join("console.sock");
    let spec = format!("unix:{}", path.display());
    // The guest resets and boots again and again, printing each time, so a
    // client that connects late still sees output.
    let mut child = spawn_rebooting(&spec);
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
    let mut child = spawn_rebooting("pty");
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

/// Connect to the unix socket at `path` once it exists.
fn connect_when_there(path: &Path) -> UnixStream {
    let deadline = Instant::now() + T;
    loop {
        if let Ok(s) = UnixStream::connect(path) {
            return s;
        }
        assert!(Instant::now() < deadline, "socket never appeared");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Output the guest wrote before anyone connected to `--serial unix:` was
/// lost; now the client that connects gets it first.
#[test]
fn serial_socket_replays_output_from_before_the_client_came() {
    let dir = Scratch::new();
    let path = dir.join("serial.sock");
    let idle = guest("idle");
    let spec = format!("unix:{}", path.display());
    let mut child = spawn(&["run", "--kernel", idle.to_str().unwrap(), "--serial", &spec]);
    while !path.exists() {
        assert!(child.try_wait().unwrap().is_none(), "vireo exited");
        std::thread::sleep(Duration::from_millis(10));
    }
    // The idle guest prints its one line within milliseconds of boot,
    // then waits: give it ample time, so the line is written with nobody
    // connected.
    std::thread::sleep(Duration::from_millis(1500));
    let lines = line_channel(connect_when_there(&path));
    wait_for_line(&lines, "idle: waiting", T);
    signal(&child, libc::SIGTERM);
    assert_eq!(wait_exit(&mut child, Duration::from_secs(5)), 0);
    assert!(!path.exists(), "the socket file is removed at exit");
}

/// `--console unix:` connected to someone else's socket while `--serial
/// unix:` listened; now both listen (and replay), and `unix-connect:`
/// connects.
#[test]
fn console_unix_listens_like_serial_unix() {
    // The virtio guest writes its console line first, then waits for an
    // ARP answer that never comes on a TAP with no peer: time to connect.
    // Without root, TapNamespace::new records the skip.
    let Some(net) = common::TapNamespace::new("l", false) else {
        return;
    };
    let dir = Scratch::new();
    let path = dir.join("console.sock");
    let virtio = guest("virtio");
    let spec = format!("unix:{}", path.display());
    let mut child = net
        .vireo(&[
            "--kernel",
            virtio.to_str().unwrap(),
            "--console",
            &spec,
            "--net",
            "",
            "--cmdline",
            "console net pings=1 timeout-ms=2000",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let lines = line_channel(connect_when_there(&path));
    wait_for_line(&lines, "virtio-console: hello from the guest", T);
    assert_eq!(wait_exit(&mut child, T), 0);
    assert!(!path.exists(), "the socket file is removed at exit");
}

/// The console device is made again on every boot; its socket was too, so
/// a reboot cut the client off. Now the socket lasts the whole run.
#[test]
fn console_socket_client_stays_connected_across_a_reboot() {
    // Without root, TapNamespace::new records the skip.
    let Some(net) = common::TapNamespace::new("r", false) else {
        return;
    };
    let dir = Scratch::new();
    let path = dir.join("console.sock");
    let api = dir.join("api.sock");
    let virtio = guest("virtio");
    let spec = format!("unix:{}", path.display());
    let mut child = net
        .vireo(&[
            "--kernel",
            virtio.to_str().unwrap(),
            "--api-socket",
            api.to_str().unwrap(),
            "--console",
            &spec,
            "--net",
            "",
            "--cmdline",
            "console net pings=1 timeout-ms=2000",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let lines = line_channel(connect_when_there(&path));
    wait_for_line(&lines, "virtio-console: hello from the guest", T);
    let out = vireo()
        .args(["vm", "--socket", api.to_str().unwrap(), "reset"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The second boot's line reaches the same connection.
    wait_for_line(&lines, "virtio-console: hello from the guest", T);
    assert_eq!(wait_exit(&mut child, T), 0);
    assert!(!path.exists(), "the socket file is removed at exit");
}

/// `file:` truncated for `--serial` and appended for `--console`; now it
/// truncates for both, as QEMU's file chardev does.
#[test]
fn console_file_is_truncated_like_serial_file() {
    let dir = Scratch::new();
    let path = dir.join("console.log");
    std::fs::write(&path, "stale contents from an earlier run\n").unwrap();
    let virtio = guest("virtio");
    let spec = format!("file:{}", path.display());
    let r = run_vireo(
        &[
            "run",
            "--kernel",
            virtio.to_str().unwrap(),
            "--console",
            &spec,
            "--cmdline",
            "console",
        ],
        T,
    );
    assert_eq!(r.code, Some(0), "{}", r.describe());
    assert_eq!(
        std::fs::read_to_string(&path).unwrap(),
        "virtio-console: hello from the guest\n"
    );
}

/// A pseudo-terminal pair: (master, slave).
fn open_pty() -> (std::fs::File, std::fs::File) {
    use std::os::fd::FromRawFd;
    // SAFETY: plain libc calls; each returned descriptor is checked and
    // owned by exactly one File.
    unsafe {
        let master = libc::posix_openpt(libc::O_RDWR | libc::O_NOCTTY);
        assert!(master >= 0);
        assert_eq!(libc::grantpt(master), 0);
        assert_eq!(libc::unlockpt(master), 0);
        let name = std::ffi::CStr::from_ptr(libc::ptsname(master)).to_owned();
        let slave = libc::open(name.as_ptr(), libc::O_RDWR | libc::O_NOCTTY);
        assert!(slave >= 0);
        (
            std::fs::File::from_raw_fd(master),
            std::fs::File::from_raw_fd(slave),
        )
    }
}

fn termios(f: &std::fs::File) -> libc::termios {
    use std::os::fd::AsRawFd;
    // SAFETY: zeroed termios is valid; tcgetattr fills it from a live fd.
    unsafe {
        let mut t: libc::termios = std::mem::zeroed();
        assert_eq!(libc::tcgetattr(f.as_raw_fd(), &mut t), 0);
        t
    }
}

#[test]
fn terminal_is_raw_while_running_and_restored_after_ctrl_a_x() {
    use std::io::Write;
    let (mut master, slave) = open_pty();
    let cooked = termios(&slave);
    assert_ne!(cooked.c_lflag & libc::ICANON, 0, "pty starts cooked");
    let idle = guest("idle");
    let mut child = vireo()
        .args(["run", "--kernel", idle.to_str().unwrap()])
        .stdin(slave.try_clone().unwrap())
        .stdout(slave.try_clone().unwrap())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let out = line_channel(master.try_clone().unwrap());
    wait_for_line(&out, "idle: waiting", T);
    let raw = termios(&slave);
    assert_eq!(
        raw.c_lflag & (libc::ICANON | libc::ECHO | libc::ISIG),
        0,
        "raw while running"
    );
    // Ctrl-C goes to the guest (no signal), then Ctrl-A x quits.
    master.write_all(b"\x03").unwrap();
    std::thread::sleep(Duration::from_millis(200));
    assert!(
        child.try_wait().unwrap().is_none(),
        "Ctrl-C must not stop the VMM"
    );
    master.write_all(b"\x01x").unwrap();
    assert_eq!(wait_exit(&mut child, Duration::from_secs(5)), 0);
    let after = termios(&slave);
    assert_eq!(after.c_lflag, cooked.c_lflag, "local modes restored");
    assert_eq!(after.c_iflag, cooked.c_iflag, "input modes restored");
}

/// The exit status file (`--exit-status`) after a run that ended as `args`
/// makes it end, or `None` when none was written.
fn exit_status_after(dir: &Scratch, args: &[&str]) -> Option<serde_json::Value> {
    let path = dir.join("exit.json");
    let _ = std::fs::remove_file(&path);
    let mut full: Vec<&str> = args.to_vec();
    let p = path.to_str().unwrap().to_string();
    full.extend(["--serial", "off", "--exit-status", &p]);
    let r = run_vireo(&full, T);
    assert!(r.code.is_some(), "{}", r.describe());
    let text = std::fs::read_to_string(&path).ok()?;
    Some(serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}")))
}

#[test]
fn exit_status_says_how_the_run_ended() {
    let dir = Scratch::new();
    let kernel = |name: &str| guest(name).to_str().unwrap().to_string();
    let (exit, reset, tf) = (kernel("exit"), kernel("reset"), kernel("triple-fault"));
    let s = exit_status_after(&dir, &["run", "--kernel", &exit]).unwrap();
    assert_eq!(s["reason"], "poweroff", "{s}");
    let s = exit_status_after(&dir, &["run", "--kernel", &reset]).unwrap();
    assert_eq!(s["reason"], "reset", "{s}");
    let s = exit_status_after(&dir, &["run", "--kernel", &tf]).unwrap();
    assert_eq!(s["reason"], "crashed", "{s}");
    assert_eq!(s["detail"], "guest stopped: vcpu0: triple fault", "{s}");
    // Nothing but the file is left beside it (the temporary is renamed).
    let names: Vec<_> = std::fs::read_dir(&dir.0)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, vec![std::ffi::OsString::from("exit.json")]);
}

#[test]
fn exit_status_after_a_signal_and_none_after_sigkill() {
    let dir = Scratch::new();
    let path = dir.join("exit.json");
    let idle = guest("idle");
    for (sig, written) in [(libc::SIGTERM, true), (libc::SIGKILL, false)] {
        let _ = std::fs::remove_file(&path);
        let mut child = spawn(&[
            "run",
            "--kernel",
            idle.to_str().unwrap(),
            "--exit-status",
            path.to_str().unwrap(),
        ]);
        let out = line_channel(child.stdout.take().unwrap());
        wait_for_line(&out, "idle: waiting", T);
        signal(&child, sig);
        let deadline = Instant::now() + Duration::from_secs(5);
        while child.try_wait().unwrap().is_none() {
            assert!(Instant::now() < deadline, "vireo did not end on {sig}");
            std::thread::sleep(Duration::from_millis(10));
        }
        match (written, std::fs::read_to_string(&path)) {
            (true, Ok(text)) => {
                let s: serde_json::Value = serde_json::from_str(&text).unwrap();
                assert_eq!(s["reason"], "signal", "{s}");
                assert_eq!(s["detail"], format!("terminating on signal {sig}"), "{s}");
            }
            (false, Err(e)) => assert_eq!(e.kind(), std::io::ErrorKind::NotFound),
            (w, r) => panic!("signal {sig}: expected written={w}, got {r:?}"),
        }
    }
}
