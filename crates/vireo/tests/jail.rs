//! `vireo run --jail DIR --uid N --gid N`: the VMM runs unprivileged,
//! with no capabilities, no_new_privs and seccomp on every thread, in
//! namespaces of its own with a root that holds nothing of the host's;
//! its disks, reboots, API and descriptor hot-plug still work, and bad
//! input is one line and exit code 2 (docs/security.md, "Jail and
//! privileges").

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{guest, is_root, run_vireo, vireo};
use serde_json::Value;

const TIMEOUT: Duration = Duration::from_secs(60);
const SECTOR: usize = 512;

/// A scratch directory every uid can enter, with `jail/` (the jail's
/// mount point) and `run/` (sockets and exit status: writable by all, as
/// the keeper writes the exit status after it has dropped to the jail's
/// uid).
fn scratch(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("jail")
        .join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("jail")).unwrap();
    std::fs::create_dir_all(dir.join("run")).unwrap();
    std::fs::set_permissions(dir.join("run"), std::fs::Permissions::from_mode(0o777)).unwrap();
    dir
}

fn image(dir: &Path, name: &str, mib: u64) -> PathBuf {
    let path = dir.join(name);
    std::fs::File::create(&path)
        .unwrap()
        .set_len(mib << 20)
        .unwrap();
    path
}

/// Whether the jail can be tried here: root, and /dev/kvm.
fn can_jail() -> bool {
    if !is_root() || !Path::new("/dev/kvm").exists() {
        testkit::skip("needs root and /dev/kvm");
        return false;
    }
    true
}

/// A jailed `vireo run --api-socket`, killed on drop. `pid` is the
/// keeper's (the process started); `vmm` the VMM's, its only child.
struct JailedVm {
    child: Child,
    socket: PathBuf,
    stdout: Option<BufReader<std::process::ChildStdout>>,
    seen: String,
}

impl JailedVm {
    fn start(dir: &Path, uid: u32, args: &[&str]) -> Self {
        Self::start_in(None, dir, uid, args)
    }

    /// Started in network namespace `ns` (`ip netns exec` execs vireo in
    /// place: the pid is the keeper's), if given.
    fn start_in(ns: Option<&str>, dir: &Path, uid: u32, args: &[&str]) -> Self {
        let socket = dir.join("run/api.sock");
        let mut cmd = match ns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns, env!("CARGO_BIN_EXE_vireo")])
                    .stdin(Stdio::null());
                c
            }
            None => vireo(),
        };
        let mut child = cmd
            .arg("run")
            .arg("--jail")
            .arg(dir.join("jail"))
            .args(["--uid", &uid.to_string(), "--gid", &uid.to_string()])
            .arg("--api-socket")
            .arg(&socket)
            .arg("--exit-status")
            .arg(dir.join("run/exit.json"))
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + TIMEOUT;
        while !socket.exists() {
            if let Ok(Some(status)) = child.try_wait() {
                let mut err = String::new();
                child
                    .stderr
                    .take()
                    .unwrap()
                    .read_to_string(&mut err)
                    .unwrap();
                panic!("vireo exited early: {status}: {err}");
            }
            assert!(Instant::now() < deadline, "the API socket never appeared");
            std::thread::sleep(Duration::from_millis(10));
        }
        let stdout = child.stdout.take().map(BufReader::new);
        let vm = Self {
            child,
            socket,
            stdout,
            seen: String::new(),
        };
        vm.wait_running();
        vm
    }

    /// The VMM: the keeper's one child.
    fn vmm(&self) -> u32 {
        let pid = self.child.id();
        let children = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap();
        let kids: Vec<u32> = children
            .split_whitespace()
            .map(|p| p.parse().unwrap())
            .collect();
        assert_eq!(kids.len(), 1, "the keeper {pid} has children {kids:?}");
        kids[0]
    }

    fn call(&self, method: &str, path: &str, body: &str) -> (u16, Value) {
        let s = UnixStream::connect(&self.socket).unwrap();
        request(s, method, path, body, None)
    }

    fn ok(&self, method: &str, path: &str, body: &str) -> Value {
        let (status, value) = self.call(method, path, body);
        assert!(
            (200..300).contains(&status),
            "{method} {path}: {status} {value}"
        );
        value
    }

    fn wait_running(&self) {
        let deadline = Instant::now() + TIMEOUT;
        while self.ok("GET", "/vm", "")["state"] != "running" {
            assert!(Instant::now() < deadline, "the VM never ran");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Read guest output until a line contains `want`; returns what was
    /// read since the last call.
    fn wait_for_line(&mut self, want: &str) -> String {
        let out = self.stdout.as_mut().unwrap();
        let start = self.seen.len();
        loop {
            let mut line = String::new();
            if out.read_line(&mut line).unwrap() == 0 {
                panic!("output ended before {want:?}:\n{}", self.seen);
            }
            self.seen.push_str(&line);
            if line.contains(want) {
                return self.seen[start..].to_string();
            }
        }
    }

    /// SIGTERM to the keeper; its exit code.
    fn terminate(self) -> Option<i32> {
        // SAFETY: kill with a valid pid and signal.
        unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM) };
        self.wait_exit()
    }

    /// The keeper's exit code, once it has exited.
    fn wait_exit(mut self) -> Option<i32> {
        let deadline = Instant::now() + TIMEOUT;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code();
            }
            assert!(Instant::now() < deadline, "vireo did not exit");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for JailedVm {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One HTTP request on `s`, with `fd` sent alongside (SCM_RIGHTS) if
/// given.
fn request(
    mut s: UnixStream,
    method: &str,
    path: &str,
    body: &str,
    fd: Option<i32>,
) -> (u16, Value) {
    s.set_read_timeout(Some(TIMEOUT)).unwrap();
    let text = format!(
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    match fd {
        None => s.write_all(text.as_bytes()).unwrap(),
        Some(fd) => send_with_fd(&s, text.as_bytes(), fd),
    }
    let mut response = String::new();
    s.read_to_string(&mut response).unwrap();
    let status: u16 = response
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("bad response: {response:?}"));
    let text = response.split("\r\n\r\n").nth(1).unwrap_or("");
    let value = if text.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(text).unwrap_or_else(|e| panic!("{e}: {text}"))
    };
    (status, value)
}

/// The size of one descriptor in a control message.
const FD_LEN: u32 = 4;

/// Send all of `bytes` in one sendmsg carrying `fd` as SCM_RIGHTS.
fn send_with_fd(s: &UnixStream, bytes: &[u8], fd: i32) {
    let mut iov = libc::iovec {
        iov_base: bytes.as_ptr() as *mut libc::c_void,
        iov_len: bytes.len(),
    };
    // SAFETY: CMSG_SPACE only computes a size.
    let space = unsafe { libc::CMSG_SPACE(FD_LEN) } as usize;
    let mut control = vec![0u8; space];
    // SAFETY: msghdr is plain data; every pointer set below outlives the
    // sendmsg call.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = space;
    // SAFETY: the control buffer has room for one header and one fd.
    unsafe {
        let cmsg = libc::CMSG_FIRSTHDR(&msg);
        (*cmsg).cmsg_level = libc::SOL_SOCKET;
        (*cmsg).cmsg_type = libc::SCM_RIGHTS;
        (*cmsg).cmsg_len = libc::CMSG_LEN(FD_LEN) as usize;
        std::ptr::write_unaligned(libc::CMSG_DATA(cmsg).cast::<i32>(), fd);
    }
    // SAFETY: a valid socket and message.
    let n = unsafe { libc::sendmsg(s.as_raw_fd(), &msg, 0) };
    assert_eq!(n, bytes.len() as isize, "sendmsg");
}

/// `name: value` of a /proc status file, tabs folded.
fn field(status: &str, name: &str) -> String {
    status
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
        .unwrap_or_default()
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

/// Each thread of `pid`: (name, status text).
fn threads(pid: u32) -> Vec<(String, String)> {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .filter_map(|e| {
            let dir = e.ok()?.path();
            let status = std::fs::read_to_string(dir.join("status")).ok()?;
            Some((field(&status, "Name"), status))
        })
        .collect()
}

#[test]
fn a_jailed_vmm_is_unprivileged_and_confined_on_every_thread() {
    if !can_jail() {
        return;
    }
    let dir = scratch("confined");
    let disk = image(&dir, "disk.img", 1);
    // An image on the host the VM was not given.
    let other = image(&dir, "other.img", 1);
    let vm = JailedVm::start(
        &dir,
        41001,
        &[
            "--kernel",
            guest("idle").to_str().unwrap(),
            "--cpus",
            "2",
            "--serial",
            "off",
            "--disk",
            &format!("path={},format=raw", disk.display()),
        ],
    );
    let vmm = vm.vmm();
    let all = threads(vmm);
    let names: Vec<&str> = all.iter().map(|(n, _)| n.as_str()).collect();
    for want in ["vireo", "vireo-launcher", "vireo-api", "vcpu0", "vcpu1"] {
        assert!(names.contains(&want), "no {want} thread in {names:?}");
    }
    for (name, status) in &all {
        let f = |n| field(status, n);
        assert_eq!(f("Uid"), "41001 41001 41001 41001", "{name}");
        assert_eq!(f("Gid"), "41001 41001 41001 41001", "{name}");
        assert_eq!(f("Groups"), "", "{name}");
        for caps in ["CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"] {
            assert_eq!(f(caps), "0000000000000000", "{name} {caps}");
        }
        assert_eq!(f("NoNewPrivs"), "1", "{name}");
        assert_eq!(f("Seccomp"), "2", "{name}");
        // PID 1 of its own namespace, and the host's ids first.
        assert_eq!(f("NSpid").split(' ').count(), 2, "{name}");
    }
    assert!(field(&all[0].1, "NSpid").ends_with(" 1"), "{}", all[0].1);
    // The keeper, outside, is unprivileged too.
    let keeper = std::fs::read_to_string(format!("/proc/{}/status", vm.child.id())).unwrap();
    assert_eq!(field(&keeper, "Uid"), "41001 41001 41001 41001");
    assert_eq!(field(&keeper, "CapEff"), "0000000000000000");
    assert_eq!(field(&keeper, "CapBnd"), "0000000000000000");
    assert_eq!(field(&keeper, "NoNewPrivs"), "1");

    // Its root is the jail: nothing of the host's.
    let root = PathBuf::from(format!("/proc/{vmm}/root"));
    let entries: Vec<String> = std::fs::read_dir(&root)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(entries, ["proc"], "the jail's root holds {entries:?}");
    assert!(!root.join("etc/shadow").exists());
    assert!(!root.join(other.strip_prefix("/").unwrap()).exists());
    assert!(!root.join(disk.strip_prefix("/").unwrap()).exists());
    // Namespaces of its own.
    for ns in ["mnt", "pid", "ipc", "uts", "net"] {
        let mine = std::fs::read_link(format!("/proc/self/ns/{ns}")).unwrap();
        let its = std::fs::read_link(format!("/proc/{vmm}/ns/{ns}")).unwrap();
        assert_ne!(mine, its, "{ns} namespace shared with the host");
    }
    // The network one is the empty namespace jailed VMMs share (pinned
    // by the first of them; crates/jail/src/netns.rs).
    use std::os::unix::fs::MetadataExt;
    let net = std::fs::metadata(format!("/proc/{vmm}/ns/net")).unwrap();
    let pinned = std::fs::metadata(jail::netns::SHARED).unwrap();
    assert_eq!((net.dev(), net.ino()), (pinned.dev(), pinned.ino()));
    // Its mount namespace is a copy of the pinned template, not the
    // template itself (crates/jail/src/mntns.rs).
    let mnt = std::fs::metadata(format!("/proc/{vmm}/ns/mnt")).unwrap();
    let template = std::fs::metadata(jail::mntns::TEMPLATE).unwrap();
    assert_ne!((mnt.dev(), mnt.ino()), (template.dev(), template.ino()));

    // The API, from outside, reports the host's thread ids.
    assert_eq!(vm.ok("GET", "/vm", "")["state"], "running");
    let vcpus = vm.ok("GET", "/vm/vcpus", "");
    for v in vcpus.as_array().unwrap() {
        let tid = v["tid"].as_u64().unwrap();
        let comm = std::fs::read_to_string(format!("/proc/{vmm}/task/{tid}/comm")).unwrap();
        assert_eq!(comm.trim(), format!("vcpu{}", v["id"]), "{vcpus}");
    }
    // Pinning by the API still works (the VMM pins by its own ids).
    vm.ok("PUT", "/vm/vcpu-pin", r#"{"vcpu":1,"cpus":[0]}"#);
    let tid1 = vcpus[1]["tid"].as_u64().unwrap();
    let status = std::fs::read_to_string(format!("/proc/{vmm}/task/{tid1}/status")).unwrap();
    assert_eq!(field(&status, "Cpus_allowed_list"), "0");

    // SIGTERM to the process started reaches the VMM; the keeper writes
    // the exit status and removes the socket.
    let socket = vm.socket.clone();
    assert_eq!(vm.terminate(), Some(0));
    let status = std::fs::read_to_string(dir.join("run/exit.json")).unwrap();
    assert!(status.contains(r#""reason":"signal""#), "{status}");
    assert!(!socket.exists(), "the API socket was left behind");
    assert!(!Path::new(&format!("/proc/{vmm}")).exists());
}

/// The pattern the virtio guest writes to sector `n` (guests/README.md).
fn guest_pattern(n: u64) -> Vec<u8> {
    let mut s = n.to_le_bytes().to_vec();
    s.extend((8..SECTOR as u64).map(|i| (n + i).to_le_bytes()[0]));
    s
}

fn read_sector(path: &Path, n: u64) -> Vec<u8> {
    use std::os::unix::fs::FileExt;
    let mut buf = vec![0u8; SECTOR];
    std::fs::File::open(path)
        .unwrap()
        .read_exact_at(&mut buf, n * SECTOR as u64)
        .unwrap();
    buf
}

fn zero_sectors(path: &Path, sectors: &[u64]) {
    use std::os::unix::fs::FileExt;
    let f = std::fs::File::options().write(true).open(path).unwrap();
    for &n in sectors {
        f.write_all_at(&[0u8; SECTOR], n * SECTOR as u64).unwrap();
    }
    f.sync_all().unwrap();
}

#[test]
fn a_jailed_guest_uses_its_disk_across_a_reboot_and_takes_a_disk_by_descriptor() {
    if !can_jail() {
        return;
    }
    let dir = scratch("disk");
    // Only root may read or write the images: the jailed VMM (uid 41002)
    // uses them through descriptors opened before the drop.
    let disk = image(&dir, "disk.img", 8);
    let hot = image(&dir, "hot.img", 8);
    for p in [&disk, &hot] {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    let written: Vec<u64> = (0..4).map(|k| 3 + 5 * k).collect();
    let mut vm = JailedVm::start(
        &dir,
        41002,
        &[
            "--kernel",
            guest("virtio").to_str().unwrap(),
            "--disk",
            &format!("path={},format=raw", disk.display()),
            "--cmdline",
            "blk blk-first=3 blk-count=4 blk-stride=5 wait-hotplug=30000 hotplug-events=1",
        ],
    );
    let out = vm.wait_for_line("virtio-blk: ok");
    assert!(
        out.contains("virtio-blk: ok capacity=16384 wrote=4"),
        "{out}"
    );
    for &n in &written {
        assert_eq!(read_sector(&disk, n), guest_pattern(n), "sector {n}");
    }
    // A reboot: the guest writes again, on the image held open, which no
    // path in the jail could reopen.
    zero_sectors(&disk, &written);
    vm.ok("PUT", "/vm/reset", "");
    let out = vm.wait_for_line("virtio-blk: ok");
    assert!(
        out.contains("virtio-blk: ok capacity=16384 wrote=4"),
        "{out}"
    );
    for &n in &written {
        assert_eq!(
            read_sector(&disk, n),
            guest_pattern(n),
            "sector {n} after the reboot"
        );
    }

    // Hot-plug by path: refused, naming the jail.
    let body = serde_json::json!({"path": hot, "id": "hot", "format": "raw"}).to_string();
    let (status, err) = vm.call("PUT", "/vm/add-disk", &body);
    assert_eq!(status, 422, "{err}");
    let message = err["error"].as_str().unwrap_or_default().to_string();
    assert!(
        message.contains("jailed") && message.contains(&dir.join("jail").display().to_string()),
        "{err}"
    );
    assert!(message.contains("image_fd"), "{err}");
    // So is a TAP by name.
    let (status, err) = vm.call("PUT", "/vm/add-net", r#"{"tap":"vjtap0"}"#);
    assert_eq!(status, 422, "{err}");
    assert!(
        err["error"].as_str().unwrap_or_default().contains("tap_fd"),
        "{err}"
    );
    // By descriptor: the guest finds it and writes to it.
    let file = std::fs::File::options()
        .read(true)
        .write(true)
        .open(&hot)
        .unwrap();
    let body = serde_json::json!({"path": hot, "id": "hot", "format": "raw", "image_fd": true})
        .to_string();
    let s = UnixStream::connect(&vm.socket).unwrap();
    let (status, added) = request(s, "PUT", "/vm/add-disk", &body, Some(file.as_raw_fd()));
    drop(file);
    assert_eq!(status, 200, "{added}");
    let out = vm.wait_for_line("virtio: done");
    assert!(out.contains("virtio: hotplug added"), "{out}");
    assert!(
        out.contains("virtio-blk: ok capacity=16384 wrote=4"),
        "{out}"
    );
    for &n in &written {
        assert_eq!(
            read_sector(&hot, n),
            guest_pattern(n),
            "hot-plugged sector {n}"
        );
    }
    // The guest powers off once it is done.
    assert_eq!(vm.wait_exit(), Some(0));
    let status = std::fs::read_to_string(dir.join("run/exit.json")).unwrap();
    assert!(status.contains(r#""reason":"poweroff""#), "{status}");
}

/// Run `sh -c script` as `uid`:`uid`; its stderr and whether it succeeded.
fn as_user(uid: u32, script: &str) -> (bool, String) {
    let out = Command::new("/bin/sh")
        .args(["-c", script])
        .uid(uid)
        .gid(uid)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn two_jailed_vmms_cannot_signal_or_inspect_each_other() {
    if !can_jail() {
        return;
    }
    let (a_dir, b_dir) = (scratch("pair-a"), scratch("pair-b"));
    let idle = guest("idle");
    let args = ["--kernel", idle.to_str().unwrap(), "--serial", "off"];
    let a = JailedVm::start(&a_dir, 41003, &args);
    let b = JailedVm::start(&b_dir, 41004, &args);
    let (a_vmm, b_vmm) = (a.vmm(), b.vmm());
    // A's uid may signal A (the kernel's rule: same uid) but not B.
    let (ok, err) = as_user(41003, &format!("kill -0 {a_vmm}"));
    assert!(ok, "uid 41003 cannot signal its own VMM: {err}");
    let (ok, err) = as_user(41003, &format!("kill -0 {b_vmm}"));
    assert!(!ok, "uid 41003 could signal the other VMM");
    assert!(err.contains("ermitted"), "{err}");
    let (ok, _) = as_user(41004, &format!("kill -0 {a_vmm}"));
    assert!(!ok, "uid 41004 could signal the other VMM");
    // ptrace's access check (what reading another's environ takes).
    let (ok, err) = as_user(41003, &format!("cat /proc/{b_vmm}/environ"));
    assert!(!ok, "uid 41003 could read the other VMM's environment");
    assert!(err.contains("ermission denied"), "{err}");
    // Their roots are distinct jails.
    let a_root = std::fs::read_link(format!("/proc/{a_vmm}/ns/mnt")).unwrap();
    let b_root = std::fs::read_link(format!("/proc/{b_vmm}/ns/mnt")).unwrap();
    assert_ne!(a_root, b_root);
    assert_eq!(a.terminate(), Some(0));
    assert_eq!(b.terminate(), Some(0));
}

#[test]
fn a_reboot_in_the_jail_boots_the_kernel_it_opened() {
    if !can_jail() {
        return;
    }
    let dir = scratch("reboot");
    let mut vm = JailedVm::start(
        &dir,
        41005,
        &["--kernel", guest("reset").to_str().unwrap(), "--reboot"],
    );
    for _ in 0..3 {
        vm.wait_for_line("reset: booted");
    }
    assert_eq!(vm.terminate(), Some(0));
}

/// `run --kernel KERNEL` and `extra`.
fn args_with<'a>(kernel: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut v = vec!["run", "--kernel", kernel];
    v.extend(extra);
    v
}

/// `vireo run` with `args`: exit code 2 and one line on stderr, with the
/// guest never started.
fn refused(args: &[&str], want: &str) {
    let r = run_vireo(args, TIMEOUT);
    assert_eq!(r.code, Some(2), "{args:?}: {}", r.describe());
    let lines: Vec<&str> = r.stderr.lines().collect();
    assert_eq!(lines.len(), 1, "{args:?}: {}", r.describe());
    assert!(lines[0].starts_with("vireo: "), "{}", r.describe());
    assert!(
        lines[0].contains(want),
        "{args:?}: want {want:?}: {}",
        r.describe()
    );
    assert!(
        !r.stdout.contains("hello: vireo guest booted"),
        "{}",
        r.describe()
    );
}

#[test]
fn bad_jail_input_is_one_line_and_exit_code_2() {
    if !can_jail() {
        return;
    }
    let dir = scratch("bad");
    let jail: &'static str = Box::leak(
        dir.join("jail")
            .to_str()
            .unwrap()
            .to_owned()
            .into_boxed_str(),
    );
    let kernel: &'static str =
        Box::leak(guest("hello").to_str().unwrap().to_owned().into_boxed_str());
    let file = image(&dir, "file.img", 1);
    let missing = dir.join("missing");
    refused(
        &args_with(kernel, &["--jail", missing.to_str().unwrap()]),
        "No such file or directory",
    );
    refused(
        &args_with(kernel, &["--jail", file.to_str().unwrap()]),
        "not a directory",
    );
    refused(
        &args_with(kernel, &["--jail", "/"]),
        "the host's root cannot be the jail",
    );
    refused(
        &args_with(kernel, &["--jail", jail, "--uid", "0"]),
        "--uid 0",
    );
    refused(
        &args_with(kernel, &["--jail", jail, "--gid", "0"]),
        "--gid 0",
    );
    refused(&args_with(kernel, &["--uid", "7"]), "--jail");
    refused(&args_with(kernel, &["--jail", jail, "--uid", "x"]), "--uid");
    refused(
        &[
            "run",
            "--jail",
            jail,
            "--api-socket",
            dir.join("run/a.sock").to_str().unwrap(),
        ],
        "--jail needs --kernel",
    );
    // The keeper writes the exit status as the jail's uid: a directory it
    // cannot write is refused before the guest runs.
    let closed = dir.join("closed");
    std::fs::create_dir(&closed).unwrap();
    std::fs::set_permissions(&closed, std::fs::Permissions::from_mode(0o755)).unwrap();
    let closed_status = closed.join("exit.json");
    refused(
        &args_with(
            kernel,
            &[
                "--jail",
                jail,
                "--exit-status",
                closed_status.to_str().unwrap(),
            ],
        ),
        "not writable by uid 65534",
    );
    // The keeper is forked before the arguments are parsed: a flag clap
    // refuses still ends in one line and code 2 (from the VMM, which the
    // keeper exits as), and --help still prints help and exits 0.
    refused(
        &args_with(kernel, &["--jail", jail, "--no-such-flag"]),
        "--no-such-flag",
    );
    let help = run_vireo(&["run", "--jail", jail, "--help"], TIMEOUT);
    assert_eq!(help.code, Some(0), "{}", help.describe());
    assert!(help.stdout.contains("--jail"), "{}", help.describe());
    // And the jail's directory is left as it was.
    assert_eq!(std::fs::read_dir(jail).unwrap().count(), 0);
}

#[test]
fn a_jailed_guest_reaches_a_peer_through_a_tap_opened_before_the_jail() {
    if !can_jail() {
        return;
    }
    let Some(net) = common::TapNamespace::new("j", false) else {
        return;
    };
    let dir = scratch("net");
    let kernel = guest("virtio");
    // The VMM opens the TAP in the test's namespace, then moves to a
    // network namespace of its own: the open TAP still carries the
    // guest's frames.
    let out = common::run_with_timeout(
        &mut net.vireo(&[
            "--jail",
            dir.join("jail").to_str().unwrap(),
            "--uid",
            "41006",
            "--gid",
            "41006",
            "--kernel",
            kernel.to_str().unwrap(),
            "--net",
            &format!("tap={}", net.tap),
            "--cmdline",
            "net pings=2",
        ]),
        TIMEOUT,
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    assert!(stdout.contains("virtio-net: ok arp"), "{stdout}\n{stderr}");
    assert!(stdout.contains("icmp 2/2"), "{stdout}\n{stderr}");
}

#[test]
fn a_jailed_vms_console_file_and_socket_last_across_a_reboot() {
    if !can_jail() {
        return;
    }
    let dir = scratch("console");
    let log = dir.join("run/console.log");
    let socket = dir.join("run/console.sock");
    let vm = JailedVm::start(
        &dir,
        41007,
        &[
            "--kernel",
            guest("virtio").to_str().unwrap(),
            "--serial",
            "off",
            "--console",
            &format!("file:{}", log.display()),
            "--console",
            &format!("unix:{}", socket.display()),
            "--cmdline",
            "console wait-power-button=30000",
        ],
    );
    let hello = "virtio-console: hello from the guest\n";
    let client = UnixStream::connect(&socket).unwrap();
    client.set_read_timeout(Some(TIMEOUT)).unwrap();
    let mut client = BufReader::new(client);
    let mut line = String::new();
    client.read_line(&mut line).unwrap();
    assert_eq!(line, hello);
    let wait_log = |lines: usize| {
        let deadline = Instant::now() + TIMEOUT;
        loop {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            if text == hello.repeat(lines) {
                return;
            }
            assert!(Instant::now() < deadline, "console log: {text:?}");
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    wait_log(1);
    // The second boot writes to the same file (continued, not truncated)
    // and the same socket, both opened before the jail.
    vm.ok("PUT", "/vm/reset", "");
    line.clear();
    client.read_line(&mut line).unwrap();
    assert_eq!(line, hello);
    wait_log(2);
    vm.ok("PUT", "/vm/power-off", "");
    assert_eq!(vm.wait_exit(), Some(0));
    assert!(!socket.exists(), "the console socket was left behind");
}

#[test]
fn a_jailed_qcow2_overlay_reads_its_backing_file_across_a_reboot() {
    if !can_jail() {
        return;
    }
    let dir = scratch("qcow2");
    // The base holds a known sector 0; the overlay names it by a relative
    // path, which the jail could never resolve: the chain is opened once,
    // before it.
    let base = image(&dir, "base.img", 8);
    let head: Vec<u8> = (0..SECTOR as u64).map(|i| (i * 7 % 251) as u8).collect();
    std::fs::write(&base, &head).unwrap();
    std::fs::File::options()
        .write(true)
        .open(&base)
        .unwrap()
        .set_len(8 << 20)
        .unwrap();
    let top = dir.join("top.qcow2");
    let out = common::run_with_timeout(
        vireo()
            .current_dir(&dir)
            .args([
                "img", "create", "-f", "qcow2", "-b", "base.img", "-F", "raw",
            ])
            .arg(&top),
        TIMEOUT,
    );
    assert!(out.status.success(), "{out:?}");
    let mut vm = JailedVm::start(
        &dir,
        41008,
        &[
            "--kernel",
            guest("virtio").to_str().unwrap(),
            "--disk",
            &format!("path={},format=qcow2", top.display()),
            "--cmdline",
            "blk blk-first=3 blk-count=2 blk-read=0 wait-hotplug=30000 hotplug-events=1",
        ],
    );
    let want: String = head[..16].iter().map(|b| format!("{b:02x}")).collect();
    let out = vm.wait_for_line("virtio-blk: ok");
    assert!(out.contains(&format!("sector 0 head={want}")), "{out}");
    vm.ok("PUT", "/vm/reset", "");
    let out = vm.wait_for_line("virtio-blk: ok");
    assert!(out.contains(&format!("sector 0 head={want}")), "{out}");
    // The guest's writes went to the overlay, never to the base.
    assert_eq!(std::fs::read(&base).unwrap()[..SECTOR], head[..]);
    assert_eq!(read_sector(&base, 3), vec![0; SECTOR]);
    vm.ok("PUT", "/vm/power-off", "");
    assert_eq!(vm.wait_exit(), Some(0));
}

#[test]
fn a_forbidden_call_in_a_jailed_vmm_is_reported_through_the_keeper() {
    if !can_jail() || !cfg!(debug_assertions) {
        return;
    }
    let dir = scratch("seccomp");
    let status = dir.join("run/exit.json");
    let out = common::run_with_timeout(
        vireo()
            .env("VIREO_TEST_SECCOMP_FAULT", "vcpu")
            .arg("run")
            .arg("--jail")
            .arg(dir.join("jail"))
            .args([
                "--kernel",
                guest("idle").to_str().unwrap(),
                "--serial",
                "off",
            ])
            .arg("--exit-status")
            .arg(&status),
        TIMEOUT,
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    assert!(
        stderr.contains(r#"thread "vcpu0" made forbidden system call"#),
        "{stderr}"
    );
    let text = std::fs::read_to_string(&status).unwrap();
    assert!(text.contains(r#""reason":"seccomp""#), "{text}");
}

#[test]
fn sigkill_to_the_keeper_ends_the_vmm_too() {
    if !can_jail() {
        return;
    }
    let dir = scratch("sigkill");
    let mut vm = JailedVm::start(
        &dir,
        41009,
        &[
            "--kernel",
            guest("idle").to_str().unwrap(),
            "--serial",
            "off",
        ],
    );
    let vmm = vm.vmm();
    vm.child.kill().unwrap();
    vm.child.wait().unwrap();
    // Its parent-death signal (armed again after the uid change): dead,
    // a zombie until init reaps it, or gone.
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let state = std::fs::read_to_string(format!("/proc/{vmm}/status"))
            .map(|s| field(&s, "State"))
            .unwrap_or_default();
        if state.is_empty() || state.starts_with('Z') || state.starts_with('X') {
            break;
        }
        assert!(Instant::now() < deadline, "the VMM lives on: {state}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The host's pool of 2 MiB pages.
const POOL_2M: &str = "/sys/kernel/mm/hugepages/hugepages-2048kB/nr_hugepages";

/// `pages` more 2 MiB pages in the pool, given back on drop.
struct HugePages(u64);

impl HugePages {
    fn reserve(pages: u64) -> Option<Self> {
        let before: u64 = std::fs::read_to_string(POOL_2M).ok()?.trim().parse().ok()?;
        std::fs::write(POOL_2M, (before + pages).to_string()).ok()?;
        Some(Self(before))
    }
}

impl Drop for HugePages {
    fn drop(&mut self) {
        let _ = std::fs::write(POOL_2M, self.0.to_string());
    }
}

#[test]
fn a_jailed_vm_on_huge_pages_reboots_without_seeing_the_pool() {
    if !can_jail() {
        return;
    }
    let Some(_pages) = HugePages::reserve(64) else {
        testkit::skip("cannot reserve 2 MiB huge pages");
        return;
    };
    let dir = scratch("hugepages");
    let mut vm = JailedVm::start(
        &dir,
        41010,
        &[
            "--kernel",
            guest("reset").to_str().unwrap(),
            "--memory",
            "128M",
            "--memory-backend",
            "backend=memfd,hugepages=2M",
            "--reboot",
        ],
    );
    for _ in 0..3 {
        vm.wait_for_line("reset: booted");
    }
    assert_eq!(vm.terminate(), Some(0));
}

#[test]
fn a_jailed_multi_queue_card_keeps_every_queue_across_a_reboot() {
    if !can_jail() {
        return;
    }
    let Some(net) = common::TapNamespace::new("q", true) else {
        return;
    };
    let dir = scratch("multiqueue");
    let vm = JailedVm::start_in(
        Some(&net.ns),
        &dir,
        41011,
        &[
            "--kernel",
            guest("idle").to_str().unwrap(),
            "--serial",
            "off",
            "--cpus",
            "2",
            "--net",
            &format!("tap={},queues=2,id=mq", net.tap),
        ],
    );
    let vmm = vm.vmm();
    // Both queues open in the VMM, which cannot reach /dev/net/tun.
    let tun_fds = || {
        std::fs::read_dir(format!("/proc/{vmm}/fdinfo"))
            .unwrap()
            .filter_map(|e| std::fs::read_to_string(e.ok()?.path()).ok())
            .filter(|info| info.contains(&format!("iff:\t{}", net.tap)))
            .count()
    };
    assert!(tun_fds() >= 2, "the VMM holds {} queues", tun_fds());
    let info = vm.ok("GET", "/vm", "");
    assert_eq!(
        info["devices"][0]["details"]["tap"],
        net.tap.as_str(),
        "{info}"
    );
    vm.ok("PUT", "/vm/reset", "");
    vm.wait_running();
    let info = vm.ok("GET", "/vm", "");
    assert_eq!(
        info["devices"][0]["details"]["tap"],
        net.tap.as_str(),
        "{info}"
    );
    assert_eq!(vm.terminate(), Some(0));
}

#[test]
fn a_jailed_vm_on_file_backed_memory_reboots_on_the_file_it_opened() {
    if !can_jail() {
        return;
    }
    for (name, backing) in [("memdir", None), ("memfile", Some("guest.ram"))] {
        let dir = scratch(name);
        let path = match backing {
            None => dir.join("run"),
            Some(file) => dir.join(file),
        };
        let mut vm = JailedVm::start(
            &dir,
            41012,
            &[
                "--kernel",
                guest("reset").to_str().unwrap(),
                "--memory",
                "64M",
                "--memory-backend",
                &format!("backend=file,path={},shared=on", path.display()),
                "--reboot",
            ],
        );
        for _ in 0..3 {
            vm.wait_for_line("reset: booted");
        }
        assert_eq!(vm.terminate(), Some(0));
        match backing {
            // A regular file keeps guest RAM, at its size.
            Some(_) => assert_eq!(std::fs::metadata(&path).unwrap().len(), 64 << 20),
            // In a directory, an unlinked file: nothing is left.
            None => {
                let left: Vec<_> = std::fs::read_dir(&path)
                    .unwrap()
                    .filter_map(|e| e.ok())
                    .map(|e| e.file_name())
                    .filter(|n| n.to_string_lossy().starts_with("vireo-ram"))
                    .collect();
                assert!(left.is_empty(), "{left:?}");
            }
        }
    }
}
